//! `hookmesh send` and `hookmesh sign`: a correctly signed webhook of any
//! kind the mesh accepts, sent to the running gateway or printed as headers
//! for curl. The secrets are the local mesh's (`<data dir>/secrets.env`),
//! unless the environment sets them; signatures come from the gateway's own
//! signers ([`hookmesh_gateway::verify::sign`]).

mod examples;

use std::path::Path;
use std::time::Duration;

use hookmesh_contracts::hex;
use hookmesh_gateway::trace::PUBLISHED;
use hookmesh_gateway::verify::sign;

use crate::AnyError;
use crate::cli::{SendArgs, SendSource, SignArgs, TargetArgs};
use crate::local_secrets;

/// A request ready to send: everything a producer would put on the wire.
#[derive(Debug, Clone)]
struct SignedRequest {
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Which header identifies the delivery, and its value, for the log line.
    delivery: (&'static str, String),
}

/// The secrets a request needs, looked up when first needed.
struct Secrets<'a> {
    data_dir: &'a Path,
}

impl Secrets<'_> {
    fn get(&self, variable: &str) -> Result<String, AnyError> {
        local_secrets::lookup(self.data_dir, variable)
    }

    /// The first `tenant:key` of `HOOKMESH_API_KEYS`.
    fn api_key(&self) -> Result<(String, String), AnyError> {
        let keys = self.get("HOOKMESH_API_KEYS")?;
        let first = keys.split(',').next().unwrap_or_default();
        let (tenant, key) = first
            .split_once(':')
            .ok_or("HOOKMESH_API_KEYS is not tenant:key,…")?;
        Ok((tenant.trim().to_owned(), key.trim().to_owned()))
    }
}

/// The platform's own event header value for an example or `--event` name:
/// its first dot-separated part (`workflow_run.completed.failure` →
/// `workflow_run`, `pipeline.failed` → `Pipeline Hook`).
fn platform_event(source: SendSource, event: &str) -> String {
    let kind = event.split('.').next().unwrap_or(event);
    match source {
        SendSource::Gitlab => {
            let mut chars = kind.chars();
            let capitalised: String = chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
                .collect();
            format!("{capitalised} Hook")
        }
        _ => kind.to_owned(),
    }
}

fn unix_now() -> i64 {
    hookmesh_contracts::Timestamp::now().unix_seconds()
}

/// Signs `body` as `source`'s producer does, with fresh delivery ids.
fn sign_request(
    source: SendSource,
    event: &str,
    provider: &str,
    body: Vec<u8>,
    secrets: &Secrets<'_>,
) -> Result<SignedRequest, AnyError> {
    let json = ("Content-Type", "application/json".to_owned());
    let uuid = examples::uuid();
    let request = match source {
        SendSource::Buddy => {
            let id = format!("wh_{uuid}");
            let signature = sign::sha256_header(&secrets.get("HOOKMESH_SECRET_BUDDY")?, &body);
            SignedRequest {
                path: "/webhooks/buddy-events".to_owned(),
                headers: vec![
                    json,
                    ("X-Webhook-Id", id.clone()),
                    ("X-Webhook-Timestamp", unix_now().to_string()),
                    ("X-Webhook-Signature", signature),
                ],
                delivery: ("X-Webhook-Id", id),
                body,
            }
        }
        SendSource::Github => {
            let signature = sign::sha256_header(&secrets.get("HOOKMESH_SECRET_GITHUB")?, &body);
            SignedRequest {
                path: "/webhooks/ci/github".to_owned(),
                headers: vec![
                    json,
                    ("X-GitHub-Event", platform_event(source, event)),
                    ("X-GitHub-Delivery", uuid.clone()),
                    ("X-Hub-Signature-256", signature),
                ],
                delivery: ("X-GitHub-Delivery", uuid),
                body,
            }
        }
        SendSource::Gitlab => SignedRequest {
            path: "/webhooks/ci/gitlab".to_owned(),
            headers: vec![
                json,
                ("X-Gitlab-Event", platform_event(source, event)),
                ("X-Gitlab-Token", secrets.get("HOOKMESH_SECRET_GITLAB")?),
                ("Idempotency-Key", uuid.clone()),
            ],
            delivery: ("Idempotency-Key", uuid),
            body,
        },
        SendSource::Circleci => {
            let signature = sign::circleci(&secrets.get("HOOKMESH_SECRET_CIRCLECI")?, &body);
            SignedRequest {
                path: "/webhooks/ci/circleci".to_owned(),
                headers: vec![
                    json,
                    ("circleci-event-type", platform_event(source, event)),
                    ("circleci-signature", signature),
                ],
                delivery: ("payload id", payload_field(&body, &["id"])),
                body,
            }
        }
        SendSource::Jenkins => SignedRequest {
            path: "/webhooks/ci/jenkins".to_owned(),
            headers: vec![
                json,
                (
                    "Authorization",
                    sign::basic("jenkins", &secrets.get("HOOKMESH_SECRET_JENKINS")?),
                ),
            ],
            delivery: ("build", payload_field(&body, &["build", "number"])),
            body,
        },
        SendSource::Providers => {
            let id = format!("msg_{}", hex::random::<12>());
            let timestamp = unix_now();
            let signature = sign::standard(
                &secrets.get("HOOKMESH_SECRET_PROVIDERS")?,
                &id,
                timestamp,
                &body,
            )
            .map_err(|error| format!("HOOKMESH_SECRET_PROVIDERS: {error}"))?;
            SignedRequest {
                path: format!("/webhooks/providers/{provider}"),
                headers: vec![
                    json,
                    ("webhook-id", id.clone()),
                    ("webhook-timestamp", timestamp.to_string()),
                    ("webhook-signature", signature),
                ],
                delivery: ("webhook-id", id),
                body,
            }
        }
        SendSource::Sweep => {
            let (_, key) = secrets.api_key()?;
            SignedRequest {
                path: "/api/pipelines/trigger".to_owned(),
                headers: vec![
                    json,
                    ("Authorization", format!("Bearer {key}")),
                    ("Idempotency-Key", uuid.clone()),
                ],
                delivery: ("Idempotency-Key", uuid),
                body,
            }
        }
        SendSource::Campaign => {
            let (_, key) = secrets.api_key()?;
            SignedRequest {
                path: "/api/campaigns".to_owned(),
                headers: vec![json, ("Authorization", format!("Bearer {key}"))],
                delivery: ("campaign_id", payload_field(&body, &["campaign_id"])),
                body,
            }
        }
    };
    Ok(request)
}

/// A field of a JSON body as text, for the log line ("?" when absent).
fn payload_field(body: &[u8], path: &[&str]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = path.iter().fold(&value, |value, key| &value[key]);
    match field {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => "?".to_owned(),
        other => other.to_string(),
    }
}

/// The event name and body of one send: `--file` as it is, or a fresh example.
fn prepare(
    source: SendSource,
    event: Option<&str>,
    file: Option<&[u8]>,
    secrets: &Secrets<'_>,
) -> Result<(String, Vec<u8>), AnyError> {
    match file {
        // A body of one's own: the event only names the platform's header.
        Some(body) => Ok((
            event
                .map(str::to_owned)
                .unwrap_or_else(|| examples::resolve(source, None).unwrap_or("").to_owned()),
            body.to_vec(),
        )),
        None => {
            let event = examples::resolve(source, event)?;
            // Buddy events belong to the API key's tenant, so that its reads show them.
            let tenant = if source == SendSource::Buddy {
                secrets
                    .api_key()
                    .map_or_else(|_| "local".to_owned(), |(tenant, _)| tenant)
            } else {
                String::new()
            };
            Ok((event.to_owned(), examples::body(source, event, &tenant)))
        }
    }
}

/// The gateway's base URL: the flag or variable, else the URL of the
/// `hookmesh up` running on the data directory, else the default address.
fn gateway_url(target: &TargetArgs) -> String {
    if let Some(url) = &target.gateway_url {
        return url.trim_end_matches('/').to_owned();
    }
    std::fs::read_to_string(target.data_dir.join(crate::up::GATEWAY_URL_FILE))
        .ok()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
}

/// One answer, as printed: `<status> <body>`, then where its events landed.
fn print_answer(status: u16, body: &str, published: Option<&str>) {
    println!("{status} {}", body.trim());
    for landed in published.into_iter().flat_map(|value| value.split(',')) {
        if let Some((subject, sequence)) = landed.split_once('=') {
            let stream =
                hookmesh_nats::definitions::stream_of(subject).unwrap_or_else(|| "?".to_owned());
            println!("  stored: {subject} in stream {stream} at sequence {sequence}");
        }
    }
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    request: &SignedRequest,
) -> Result<bool, AnyError> {
    let mut call = http.post(format!("{base}{}", request.path));
    for (name, value) in &request.headers {
        call = call.header(*name, value);
    }
    let response = call
        .body(request.body.clone())
        .send()
        .await
        .map_err(|error| {
            format!("cannot reach the gateway at {base} ({error}); is `hookmesh up` running?")
        })?;
    let status = response.status();
    let published = response
        .headers()
        .get(PUBLISHED)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    print_answer(status.as_u16(), &body, published.as_deref());
    Ok(status.is_success())
}

pub async fn send(args: SendArgs) -> Result<(), AnyError> {
    let secrets = Secrets {
        data_dir: &args.target.data_dir,
    };
    let file = match &args.file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
        ),
        None => None,
    };
    let base = gateway_url(&args.target);
    let http = hookmesh_runtime::http::client_builder().build()?;
    let pause = args
        .rate
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(1.0 / rate));
    let mut ticks = pause.map(|pause| {
        let mut ticks = tokio::time::interval(pause);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let (mut sent, mut refused) = (0u32, 0u32);
    for _ in 0..args.count {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        let (event, body) = prepare(
            args.source,
            args.event.as_deref(),
            file.as_deref(),
            &secrets,
        )?;
        let request = sign_request(args.source, &event, &args.provider, body, &secrets)?;
        let (header, id) = &request.delivery;
        println!("POST {base}{}  {event}  {header}: {id}", request.path);
        let attempts = if args.duplicate { 2 } else { 1 };
        for attempt in 0..attempts {
            if attempt > 0 {
                println!("POST {base}{}  the same delivery again", request.path);
            }
            sent += 1;
            if !post(&http, &base, &request).await? {
                refused += 1;
            }
        }
    }
    if refused > 0 {
        return Err(format!("the gateway refused {refused} of {sent} requests").into());
    }
    Ok(())
}

/// Prints the headers that sign `--file` as the source's producer does,
/// one `Name: value` a line, for curl's `-H`.
pub async fn sign(args: SignArgs) -> Result<(), AnyError> {
    let secrets = Secrets {
        data_dir: &args.target.data_dir,
    };
    let body = std::fs::read(&args.file)
        .map_err(|error| format!("cannot read {}: {error}", args.file.display()))?;
    let (event, body) = prepare(args.source, args.event.as_deref(), Some(&body), &secrets)?;
    let request = sign_request(args.source, &event, &args.provider, body, &secrets)?;
    for (name, value) in &request.headers {
        println!("{name}: {value}");
    }
    eprintln!(
        "# POST {}{} with these headers and the file's exact bytes",
        gateway_url(&args.target),
        request.path
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_event_headers_come_from_the_event_names() {
        assert_eq!(
            platform_event(SendSource::Github, "workflow_run.completed.failure"),
            "workflow_run"
        );
        assert_eq!(
            platform_event(SendSource::Gitlab, "pipeline.failed"),
            "Pipeline Hook"
        );
        assert_eq!(
            platform_event(SendSource::Gitlab, "job.running"),
            "Job Hook"
        );
        assert_eq!(
            platform_event(SendSource::Circleci, "workflow-completed.failed"),
            "workflow-completed"
        );
    }
}
