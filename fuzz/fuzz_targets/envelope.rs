//! The envelope a native publisher sends straight to JetStream.
#![no_main]

use hookmesh_contracts::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Envelope::<serde_json::Value>::parse(data);
});
