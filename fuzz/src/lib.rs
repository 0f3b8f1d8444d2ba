//! What hookmesh's fuzz targets share: cutting one fuzz input into the
//! fields a request carries, and the secrets the checks are keyed with.
//!
//! Every target must only return (a refusal is fine); a panic, an overflow
//! (debug assertions are on) or a hang is a finding. Each finding becomes a
//! regression test in the crate that owns the parser.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hookmesh_gateway::verify::sources::Clock;

/// The secret every HMAC and token check is keyed with.
pub const SECRET: &str = "fuzz-secret-0123456789";
/// A Standard Webhooks secret (`whsec_` and base64).
pub const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The time the targets check timestamps against.
pub const CLOCK: Clock = Clock {
    now: 1_764_000_000,
    tolerance_seconds: 300,
};

/// `data` cut at each 0xff byte into `count` fields (missing ones empty;
/// the last takes the rest).
pub fn fields(data: &[u8], count: usize) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = data.splitn(count, |byte| *byte == 0xff).collect();
    fields.resize(count, &[]);
    fields
}

/// Headers `names` with the values in `values`, each left out when it is
/// not a valid header value (as the HTTP layer would refuse it).
pub fn headers(names: &[&'static str], values: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in names.iter().zip(values) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

/// The bytes as JSON, when they are.
pub fn json(data: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(data).ok()
}

/// A CI normaliser's target: the JSON body first (so that the fixtures in
/// tests/fixtures/ci seed it), then the event kind header.
pub fn normalise(platform: hookmesh_contracts::ci::CiPlatform, data: &[u8]) {
    let [body, event] = fields(data, 2)[..] else {
        return;
    };
    let Some(body) = json(body) else {
        return;
    };
    let headers = headers(&["x-github-event", "x-gitlab-event"], &[event, event]);
    let _ = hookmesh_gateway::normalize::normalize(platform, &headers, &body);
}
