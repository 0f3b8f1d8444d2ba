//! CircleCI's `circleci-signature: v1=<hex>[,v1=<hex>…]` over the body.
#![no_main]

use hookmesh_fuzz::{SECRET, fields, headers};
use hookmesh_gateway::verify::HmacKey;
use hookmesh_gateway::verify::sources::verify_circleci;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [signature, body] = fields(data, 2)[..] else {
        return;
    };
    let key = HmacKey::new(SECRET.as_bytes());
    let headers = headers(&["circleci-signature"], &[signature]);
    let _ = verify_circleci(Some(&key), &headers, body);
});
