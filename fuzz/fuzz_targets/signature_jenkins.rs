//! Jenkins' HTTP Basic credentials (`Authorization: Basic base64(user:password)`).
#![no_main]

use hookmesh_fuzz::{SECRET, headers};
use hookmesh_gateway::verify::SecretToken;
use hookmesh_gateway::verify::sources::verify_jenkins;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = SecretToken::new(SECRET.as_bytes());
    let _ = verify_jenkins(Some(&secret), &headers(&["authorization"], &[data]));
});
