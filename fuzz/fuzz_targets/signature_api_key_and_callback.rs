//! The API key (`Authorization: Bearer …` or `X-API-Key`) and a sweep
//! callback's signed URL (`?job_id=…&token=…`).
#![no_main]

use hookmesh_fuzz::{SECRET, fields, headers};
use hookmesh_gateway::config::parse_api_keys;
use hookmesh_gateway::verify::HmacKey;
use hookmesh_gateway::verify::sources::{verify_api_key, verify_callback};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [authorization, api_key, job_id, token] = fields(data, 4)[..] else {
        return;
    };
    let keys = parse_api_keys("acme:0123456789abcdef0123").expect("valid keys");
    let headers = headers(&["authorization", "x-api-key"], &[authorization, api_key]);
    let _ = verify_api_key(&keys, &headers);
    let key = HmacKey::new(SECRET.as_bytes());
    let job_id = std::str::from_utf8(job_id).ok();
    let token = std::str::from_utf8(token).ok();
    let _ = verify_callback(Some(&key), job_id, token);
    // The configuration parser takes operator text.
    if let Some(text) = job_id {
        let _ = parse_api_keys(text);
    }
});
