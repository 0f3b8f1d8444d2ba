//! GitLab's `X-Gitlab-Token`, or its Standard Webhooks signature
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
#![no_main]

use hookmesh_fuzz::{CLOCK, SECRET, STANDARD_SECRET, fields, headers};
use hookmesh_gateway::verify::sources::verify_gitlab;
use hookmesh_gateway::verify::{SecretToken, StandardWebhooksKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [token, id, timestamp, signature, body] = fields(data, 5)[..] else {
        return;
    };
    let secret = SecretToken::new(SECRET.as_bytes());
    let signing = StandardWebhooksKeys::parse(STANDARD_SECRET).expect("a valid secret");
    let headers = headers(
        &["x-gitlab-token", "webhook-id", "webhook-timestamp", "webhook-signature"],
        &[token, id, timestamp, signature],
    );
    let _ = verify_gitlab(Some(&secret), Some(&signing), &headers, body, CLOCK);
});
