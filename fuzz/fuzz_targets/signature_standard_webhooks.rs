//! Standard Webhooks (the providers' scheme): `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64> …`. Half the
//! inputs carry a valid signature of their own id, timestamp and body.
#![no_main]

use hookmesh_fuzz::{CLOCK, STANDARD_SECRET, fields, headers};
use hookmesh_gateway::verify::StandardWebhooksKeys;
use hookmesh_gateway::verify::sources::verify_provider;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, id, timestamp, signature, body] = fields(data, 5)[..] else {
        return;
    };
    let keys = StandardWebhooksKeys::parse(STANDARD_SECRET).expect("a valid secret");
    let signed;
    let signature = match (mode.first(), std::str::from_utf8(id), std::str::from_utf8(timestamp)) {
        (Some(m), Ok(id), Ok(timestamp)) if m % 2 == 1 => {
            let at = timestamp.trim().parse::<i64>().unwrap_or(CLOCK.now);
            signed = keys.sign(id, at, body);
            signed.as_bytes()
        }
        _ => signature,
    };
    let headers = headers(
        &["webhook-id", "webhook-timestamp", "webhook-signature"],
        &[id, timestamp, signature],
    );
    let _ = verify_provider(Some(&keys), &headers, body, CLOCK);
    // The secret's own parser takes configuration text.
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = StandardWebhooksKeys::parse(text);
    }
});
