//! Seed 002's scheme: `X-Webhook-Signature: sha256=<hex>` over the body and
//! `X-Webhook-Timestamp` (ISO 8601 or Unix seconds). Half the inputs carry a
//! valid signature, so that the timestamp's parsing is reached.
#![no_main]

use hookmesh_fuzz::{CLOCK, SECRET, fields, headers};
use hookmesh_gateway::verify::HmacKey;
use hookmesh_gateway::verify::sources::verify_buddy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, signature, timestamp, body] = fields(data, 4)[..] else {
        return;
    };
    let key = HmacKey::new(SECRET.as_bytes());
    let signed = format!("sha256={}", key.sign_hex(body));
    let signature = if mode.first().is_some_and(|m| m % 2 == 1) {
        signed.as_bytes()
    } else {
        signature
    };
    let headers = headers(
        &["x-webhook-signature", "x-webhook-timestamp"],
        &[signature, timestamp],
    );
    let _ = verify_buddy(Some(&key), &headers, body, CLOCK);
});
