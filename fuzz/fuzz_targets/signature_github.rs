//! GitHub's `X-Hub-Signature-256: sha256=<hex>` over the body.
#![no_main]

use hookmesh_fuzz::{SECRET, fields, headers};
use hookmesh_gateway::verify::HmacKey;
use hookmesh_gateway::verify::sources::verify_github;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [signature, body] = fields(data, 2)[..] else {
        return;
    };
    let key = HmacKey::new(SECRET.as_bytes());
    let headers = headers(&["x-hub-signature-256"], &[signature]);
    let _ = verify_github(Some(&key), &headers, body);
});
