//! The dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, over WebDriver) against a real mesh (`hookmesh up`
//! with its Trading API simulator). Every page visited is checked with
//! axe-core (no serious or critical violation) and photographed at 1280 and
//! 375 px wide under `<target>/dashboard-screenshots/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hookmesh_tests::up::{self, Up, local_secret, stop_gracefully};
use hookmesh_tests::webdriver::Browser;
use hookmesh_tests::{
    TestDir, buddy_request, eventually, free_port, sign, stream_messages, unix_now,
};
use serde_json::{Value, json};

const ACME_KEY: &str = "acme-dashboard-key-0001";
const GLOBEX_KEY: &str = "globex-dashboard-key-0001";
const ADMIN_KEY: &str = "ops-dashboard-admin-key-0001";
const READONLY_KEY: &str = "viewer-dashboard-readonly-0001";

/// The cargo target directory this test binary was built in.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/dashboard-<hash>
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// axe-core, installed by `.ci/run` with npm under the target directory.
fn axe_source() -> String {
    let path = std::env::var_os("HOOKMESH_AXE_JS").map_or_else(
        || target_dir().join("npm/node_modules/axe-core/axe.min.js"),
        PathBuf::from,
    );
    std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "axe-core is needed at {} ({error}): npm install --prefix {} axe-core@4",
            path.display(),
            target_dir().join("npm").display()
        )
    })
}

async fn start_mesh(data_dir: &Path) -> Up {
    up::start_up_with(
        Path::new(env!("CARGO_BIN_EXE_hookmesh")),
        data_dir,
        free_port(),
        |command| {
            command
                .env(
                    "HOOKMESH_API_KEYS",
                    format!("acme:{ACME_KEY},globex:{GLOBEX_KEY}"),
                )
                .env("HOOKMESH_ADMIN_KEYS", format!("ops:{ADMIN_KEY}"))
                .env(
                    "HOOKMESH_ADMIN_READONLY_KEYS",
                    format!("viewer:{READONLY_KEY}"),
                )
                .env("HOOKMESH_SIM_RUN_TIME_SECS", "1")
                .env("HOOKMESH_LOG", "warn");
        },
    )
    .await
}

/// Runs axe-core in the page and photographs it at both widths.
async fn check_page(browser: &Browser, axe: &str, name: &str) {
    let title = browser.title().await;
    assert!(
        title.ends_with("· hookmesh"),
        "{name} has a title: {title:?}"
    );
    browser
        .execute(
            "if (!window.axe) { const s = document.createElement('script'); s.textContent = arguments[0]; document.head.appendChild(s); }",
            json!([axe]),
        )
        .await;
    let violations = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']}).then((r) => done(
               r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
                 .map((v) => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                   v.nodes.map((n) => n.target.join(' ')).join(', '))));",
            json!([]),
        )
        .await;
    assert_eq!(
        violations,
        json!([]),
        "axe finds serious or critical violations on {name}"
    );
    let shots = target_dir().join("dashboard-screenshots");
    browser.set_size(1280, 900).await;
    browser
        .screenshot(&shots.join(format!("{name}-1280.png")))
        .await;
    browser.set_size(375, 812).await;
    browser
        .screenshot(&shots.join(format!("{name}-375.png")))
        .await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().unwrap_or(0) <= 1,
        "{name} scrolls sideways at 375 px ({overflow} px too wide)"
    );
    browser.set_size(1280, 900).await;
}

async fn sign_in(browser: &Browser, dashboard: &str, key: &str) {
    browser.goto(&format!("{dashboard}/sign-in")).await;
    let field = browser.find("#key").await;
    browser.fill(&field, key).await;
    browser
        .click(&browser.find("form.stack button").await)
        .await;
    eventually(Duration::from_secs(10), "the signed-in page", || async {
        (!browser.current_url().await.contains("/sign-in")).then_some(())
    })
    .await;
}

async fn sign_out(browser: &Browser) {
    browser.click(&browser.find(".sign-out button").await).await;
    browser.find("#key").await;
}

async fn texts(browser: &Browser, css: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for element in browser.find_all(css).await {
        texts.push(browser.text(&element).await);
    }
    texts
}

async fn heading(browser: &Browser) -> String {
    browser.text(&browser.find("h1").await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_starts_a_sweep_from_the_form_and_watches_it_finish_without_a_reload() {
    let axe = axe_source();
    let scratch = TestDir::new("dashboard-sweep");
    let mesh = start_mesh(&scratch.path().join("data")).await;
    let dashboard = mesh.dashboard.clone();
    let js = async_nats::jetstream::new(async_nats::connect(&mesh.broker).await.unwrap());
    let browser = Browser::start().await;

    // Signing in returns to the page asked for.
    browser
        .goto(&format!("{dashboard}/pipelines?status=COMPLETED"))
        .await;
    assert!(browser.current_url().await.contains("/ui/sign-in"));
    check_page(&browser, &axe, "sign-in").await;
    let field = browser.find("#key").await;
    browser.fill(&field, "not-a-key-of-this-mesh").await;
    browser
        .click(&browser.find("form.stack button").await)
        .await;
    browser.find("#sign-in-error").await;
    browser.fill(&browser.find("#key").await, ACME_KEY).await;
    browser
        .click(&browser.find("form.stack button").await)
        .await;
    eventually(Duration::from_secs(10), "the page asked for", || async {
        browser
            .current_url()
            .await
            .ends_with("/ui/pipelines?status=COMPLETED")
            .then_some(())
    })
    .await;
    browser.find("#no-jobs").await;
    check_page(&browser, &axe, "pipelines-empty").await;

    // The refinement error appears next to its field; nothing is published.
    browser.goto(&format!("{dashboard}/pipelines/new")).await;
    check_page(&browser, &axe, "sweep-form").await;
    browser.fill(&browser.find("#fast_max").await, "30").await;
    browser.click(&browser.find("#start-sweep").await).await;
    let error = browser.find(".field-error[data-field=fast_range]").await;
    assert!(
        browser
            .text(&error)
            .await
            .contains("Fast range max must be less than slow range max"),
        "the API's message, next to the fast range"
    );
    assert_eq!(
        browser
            .attribute(&browser.find("#fast_max").await, "value")
            .await
            .as_deref(),
        Some("30"),
        "the form keeps what was typed"
    );
    check_page(&browser, &axe, "sweep-form-error").await;
    let triggers = stream_messages(&js, "SWEEPS")
        .await
        .into_iter()
        .filter(|m| m.subject == "sweeps.trigger")
        .count();
    assert_eq!(triggers, 0, "a refused form publishes nothing");

    // 003's example sweep, watched live.
    browser.fill(&browser.find("#fast_max").await, "20").await;
    browser.click(&browser.find("#start-sweep").await).await;
    let section = browser.find("#job").await;
    let job_id = browser.attribute(&section, "data-job").await.unwrap();
    browser
        .execute("window.__sameDocument = 'yes';", json!([]))
        .await;
    eventually(Duration::from_secs(60), "the job to complete", || async {
        let status = browser.text(&browser.find("#status").await).await;
        (status == "COMPLETED").then_some(())
    })
    .await;
    let rows = browser
        .wait_for("#results-table tbody tr", Duration::from_secs(10))
        .await;
    drop(rows);
    assert_eq!(
        browser
            .execute("return window.__sameDocument || null;", json!([]))
            .await,
        "yes",
        "the page was not reloaded"
    );
    let scores: Vec<f64> = texts(&browser, "#results-table tbody td.score")
        .await
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(scores.len(), 8, "003's example has 8 combinations");
    assert!(
        scores.windows(2).all(|pair| pair[0] >= pair[1]),
        "sorted by score: {scores:?}"
    );
    assert_eq!(
        browser.find_all("svg.heatmap rect.cell.filled").await.len(),
        8
    );
    let csv = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(document.getElementById('csv').href).then((r) => r.text()).then(done);",
            json!([]),
        )
        .await;
    let lines: Vec<&str> = csv
        .as_str()
        .unwrap()
        .lines()
        .filter(|line| !line.is_empty())
        .collect();
    assert!(lines[0].starts_with("ticker,strategy_type,fast_period,slow_period,score"));
    assert_eq!(lines.len() - 1, 8, "8 result rows in the CSV");
    check_page(&browser, &axe, "job").await;

    browser.goto(&format!("{dashboard}/pipelines")).await;
    assert_eq!(
        browser
            .find_all(&format!("#jobs tr[data-job='{job_id}']"))
            .await
            .len(),
        1
    );
    browser
        .goto(&format!("{dashboard}/pipelines?ticker=ETH-USD"))
        .await;
    browser.find("#no-jobs").await;
    browser
        .goto(&format!("{dashboard}/pipelines?ticker=BTC-USD"))
        .await;
    check_page(&browser, &axe, "pipelines").await;
    assert_eq!(browser.find_all("#jobs tbody tr").await.len(), 1);

    // A tenant sees no operator page, and the admin API refuses its key.
    browser.goto(&format!("{dashboard}/streams")).await;
    assert!(heading(&browser).await.starts_with("403"));
    let refused = hookmesh_runtime::http::client_builder()
        .build()
        .unwrap()
        .get(format!("{}/api/admin/streams", mesh.gateway))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);

    // Another tenant's job is not found.
    browser.goto(&format!("{dashboard}/pipelines")).await;
    sign_out(&browser).await;
    sign_in(&browser, &dashboard, GLOBEX_KEY).await;
    browser
        .goto(&format!("{dashboard}/pipelines/{job_id}"))
        .await;
    assert!(heading(&browser).await.starts_with("404"));
    check_page(&browser, &axe, "not-found").await;
    browser.goto(&format!("{dashboard}/pipelines")).await;
    browser.find("#no-jobs").await;

    browser.quit().await;
    stop_gracefully(mesh).await;
}

/// A signed buddy webhook, as seed 002's platform sends it.
async fn send_buddy_webhook(gateway: &str, secret: &str, id: &str, match_id: &str) {
    let body = format!(
        r#"{{"id":"{id}","type":"buddy.match.created","timestamp":"2025-11-14T10:30:00Z","data":{{"tenant_id":"acme","program_id":"ukraine-2025","match_id":"{match_id}","buddy_id":"p-7","newcomer_id":"p-1042"}}}}"#
    );
    let http = hookmesh_runtime::http::client_builder().build().unwrap();
    let answer = buddy_request(&http, gateway, secret, id, body.into_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_tails_a_webhook_and_replays_a_dead_letter_from_the_browser() {
    let axe = axe_source();
    let scratch = TestDir::new("dashboard-operator");
    let data_dir = scratch.path().join("data");
    let mesh = start_mesh(&data_dir).await;
    let dashboard = mesh.dashboard.clone();
    let buddy_secret = local_secret(&data_dir, "HOOKMESH_SECRET_BUDDY");
    let client = async_nats::connect(&mesh.broker).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let browser = Browser::start().await;

    sign_in(&browser, &dashboard, ADMIN_KEY).await;
    assert!(browser.current_url().await.ends_with("/ui/overview"));
    browser.find("#services tr[data-service=gateway]").await;
    check_page(&browser, &axe, "overview").await;

    // An invalid native event: the csr-consumer can never process it.
    js.publish("buddy.match.created", r#"{"not":"an envelope"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let letter: u64 = eventually(Duration::from_secs(30), "the dead letter", || {
        let gateway = mesh.gateway.clone();
        async move {
            let page: Value = hookmesh_runtime::http::client_builder()
                .build()
                .unwrap()
                .get(format!("{gateway}/api/admin/dead-letters?subject=buddy.>"))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            page["dead_letters"][0]["sequence"].as_u64()
        }
    })
    .await;

    // Streams and consumers.
    browser.goto(&format!("{dashboard}/streams")).await;
    browser.find("#stream-BUDDY").await;
    check_page(&browser, &axe, "streams").await;

    // The tail shows a webhook within 2 s, and the JSON filter narrows it.
    browser
        .goto(&format!("{dashboard}/tail?stream=BUDDY"))
        .await;
    check_page(&browser, &axe, "tail").await;
    let sent = Instant::now();
    send_buddy_webhook(&mesh.gateway, &buddy_secret, "evt-dash-1", "m-dash").await;
    eventually(
        Duration::from_secs(2),
        "the webhook in the tail",
        || async {
            let shown = browser
                .execute(
                    "return [...document.querySelectorAll('#tail tbody tr.message')]
                   .some((row) => row.textContent.includes('m-dash'));",
                    json!([]),
                )
                .await;
            (shown == true).then_some(())
        },
    )
    .await;
    assert!(sent.elapsed() < Duration::from_secs(2));
    let unfiltered = browser.find_all("#tail tbody tr.message").await.len();
    assert!(unfiltered >= 2, "the webhook and the invalid event");
    let filter = r#"{"data":{"match_id":"m-dash"}}"#;
    browser
        .goto(&format!(
            "{dashboard}/tail?stream=BUDDY&payload={}",
            hookmesh_gateway::ui::query_escape(filter)
        ))
        .await;
    browser.find("#tail tbody tr").await;
    assert_eq!(
        browser.find_all("#tail tbody tr.message").await.len(),
        1,
        "the partial-JSON filter keeps only the webhook"
    );

    // Dead letters: list, filter, count, replay.
    browser
        .goto(&format!("{dashboard}/dead-letters?subject=buddy.>"))
        .await;
    check_page(&browser, &axe, "dead-letters").await;
    let count = browser.text(&browser.find("#count strong").await).await;
    assert_eq!(count, "1");
    browser
        .goto(&format!(
            "{dashboard}/dead-letters?subject=buddy.>&payload={}",
            hookmesh_gateway::ui::query_escape(r#"{"not":"an"}"#)
        ))
        .await;
    assert_eq!(
        browser.text(&browser.find("#count strong").await).await,
        "1"
    );
    browser
        .goto(&format!("{dashboard}/dead-letters?subject=ci.>"))
        .await;
    assert_eq!(
        browser.text(&browser.find("#count strong").await).await,
        "0"
    );
    browser
        .goto(&format!("{dashboard}/dead-letters/{letter}"))
        .await;
    assert!(
        browser
            .text(&browser.find("#payload").await)
            .await
            .contains("an envelope")
    );
    check_page(&browser, &axe, "dead-letter").await;
    browser
        .goto(&format!("{dashboard}/dead-letters?subject=buddy.>"))
        .await;
    browser
        .click(&browser.find(&format!("#pick-{letter}")).await)
        .await;
    browser
        .click(&browser.find("button[value=replay-selected]").await)
        .await;
    let stated = browser.text(&browser.find("#confirm-count").await).await;
    assert!(stated.contains("replay 1 dead letter"), "{stated}");
    check_page(&browser, &axe, "confirm").await;
    browser.click(&browser.find("#confirm").await).await;
    let summary = browser.text(&browser.find("#summary").await).await;
    assert_eq!(summary, "1 of 1 dead letters replayed, 0 failed.");
    check_page(&browser, &axe, "replay-outcome").await;
    // Back on its original subject, read with a NATS client.
    let replayed = stream_messages(&js, "BUDDY")
        .await
        .into_iter()
        .filter(|m| {
            m.subject == "buddy.match.created"
                && m.header("Nats-Msg-Id")
                    .is_some_and(|id| id.starts_with(&format!("replay:{letter}:")))
        })
        .count();
    assert_eq!(replayed, 1, "the replay landed on buddy.match.created");

    // The read-only admin sees, and cannot replay.
    sign_out(&browser).await;
    sign_in(&browser, &dashboard, READONLY_KEY).await;
    let again: u64 = eventually(
        Duration::from_secs(30),
        "the replayed letter to die again",
        || {
            let gateway = mesh.gateway.clone();
            async move {
                let page: Value = hookmesh_runtime::http::client_builder()
                    .build()
                    .unwrap()
                    .get(format!("{gateway}/api/admin/dead-letters?subject=buddy.>"))
                    .bearer_auth(READONLY_KEY)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                page["dead_letters"][0]["sequence"].as_u64()
            }
        },
    )
    .await;
    browser
        .goto(&format!("{dashboard}/dead-letters?subject=buddy.>"))
        .await;
    browser.find("#letters").await;
    assert!(
        browser
            .find_all("button[value=replay-selected]")
            .await
            .is_empty()
    );
    let status = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const csrf = document.querySelector('input[name=csrf]').value;
             fetch('/ui/dead-letters/replay', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'},
                   body: 'csrf=' + encodeURIComponent(csrf) + '&sequence=' + arguments[0]}).then((r) => done(r.status));",
            json!([again]),
        )
        .await;
    assert_eq!(status, 403, "the read-only admin cannot replay");
    let refused = hookmesh_runtime::http::client_builder()
        .build()
        .unwrap()
        .post(format!("{}/api/admin/dead-letters/replay", mesh.gateway))
        .bearer_auth(READONLY_KEY)
        .json(&json!({"sequences": [again]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);

    browser.quit().await;
    stop_gracefully(mesh).await;
}

/// Posts `body` to the gateway with `headers`, expecting 202.
async fn accepted(gateway: &str, path: &str, headers: &[(&str, String)], body: Vec<u8>) {
    let mut request = hookmesh_runtime::http::client_builder()
        .build()
        .unwrap()
        .post(format!("{gateway}{path}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let answer = request.body(body).send().await.unwrap();
    let status = answer.status();
    assert_eq!(
        status,
        reqwest::StatusCode::ACCEPTED,
        "{path}: {}",
        answer.text().await.unwrap_or_default()
    );
}

/// Seed 002's buddy event of `kind` for acme's program `dash-prog`, signed.
async fn buddy_event(gateway: &str, secret: &str, kind: &str, data: Value) {
    let id = format!("evt-{}", hookmesh_contracts::hex::random::<6>());
    let mut data = data;
    data["tenant_id"] = json!("acme");
    data["program_id"] = json!("dash-prog");
    let body = serde_json::to_vec(&json!({
        "id": id,
        "type": kind,
        "timestamp": hookmesh_contracts::Timestamp::now().to_rfc3339(),
        "data": data,
    }))
    .unwrap();
    let http = hookmesh_runtime::http::client_builder().build().unwrap();
    let answer = buddy_request(&http, gateway, secret, &id, body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
}

/// GET `path` of the API with `key`, as JSON, when it answers 200.
async fn api_json(gateway: &str, path: &str, key: &str) -> Option<Value> {
    let answer = hookmesh_runtime::http::client_builder()
        .build()
        .unwrap()
        .get(format!("{gateway}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_charts_campaigns_and_ci_failures_show_what_was_sent() {
    let axe = axe_source();
    let scratch = TestDir::new("dashboard-insights");
    let data_dir = scratch.path().join("data");
    let mesh = start_mesh(&data_dir).await;
    let (dashboard, gateway) = (mesh.dashboard.clone(), mesh.gateway.clone());
    let today = hookmesh_contracts::Timestamp::now()
        .as_offset_date_time()
        .date()
        .to_string();

    // Seed 002: a newcomer enrolled, matched and checked in twice.
    let buddy = local_secret(&data_dir, "HOOKMESH_SECRET_BUDDY");
    buddy_event(
        &gateway,
        &buddy,
        "buddy.participant.enrolled",
        json!({"participant_id": "p-1", "role": "newcomer"}),
    )
    .await;
    buddy_event(
        &gateway,
        &buddy,
        "buddy.participant.enrolled",
        json!({"participant_id": "p-7", "role": "buddy"}),
    )
    .await;
    buddy_event(
        &gateway,
        &buddy,
        "buddy.match.created",
        json!({"match_id": "m-1", "buddy_id": "p-7", "newcomer_id": "p-1"}),
    )
    .await;
    for checkin in ["c-1", "c-2"] {
        buddy_event(
            &gateway,
            &buddy,
            "buddy.checkin.completed",
            json!({"match_id": "m-1", "checkin_id": checkin, "buddy_id": "p-7", "newcomer_id": "p-1",
                   "duration_minutes": 30, "channel": "video"}),
        )
        .await;
    }
    // Seed 004: a campaign of two messages, one delivered.
    let register = serde_json::to_vec(&json!({
        "campaign_id": "dash-camp",
        "size": 2,
        "recipients": [
            {"provider": "sendgrid", "message_id": "msg-dash-1", "address": "a@example.com"},
            {"provider": "sendgrid", "message_id": "msg-dash-2", "address": "b@example.com"}
        ]
    }))
    .unwrap();
    accepted(
        &gateway,
        "/api/campaigns",
        &[("Authorization", format!("Bearer {ACME_KEY}"))],
        register,
    )
    .await;
    eventually(Duration::from_secs(30), "the campaign registered", || {
        let gateway = gateway.clone();
        async move {
            let campaign = api_json(&gateway, "/api/campaigns/dash-camp", ACME_KEY).await?;
            (campaign["registered"] == 2).then_some(())
        }
    })
    .await;
    let delivered = serde_json::to_vec(&json!({
        "event_type": "delivered", "message_id": "msg-dash-1",
        "timestamp": hookmesh_contracts::Timestamp::now().to_rfc3339(),
        "recipient": "a@example.com"
    }))
    .unwrap();
    let providers = local_secret(&data_dir, "HOOKMESH_SECRET_PROVIDERS");
    let (id, at) = ("msg_dash_delivery_1".to_owned(), unix_now());
    let headers = [
        ("webhook-id", id.clone()),
        ("webhook-timestamp", at.to_string()),
        (
            "webhook-signature",
            sign::standard(&providers, &id, at, &delivered),
        ),
    ];
    accepted(
        &gateway,
        "/webhooks/providers/sendgrid",
        &headers,
        delivered,
    )
    .await;
    // Seed 001: a GitHub Actions run that failed.
    let run = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/ci/github/workflow_run.completed.failure.json"),
    )
    .unwrap();
    let github = local_secret(&data_dir, "HOOKMESH_SECRET_GITHUB");
    let headers = [
        ("X-GitHub-Event", "workflow_run".to_owned()),
        ("X-GitHub-Delivery", "dash-delivery-1".to_owned()),
        ("X-Hub-Signature-256", sign::sha256_header(&github, &run)),
    ];
    accepted(&gateway, "/webhooks/ci/github", &headers, run).await;

    let browser = Browser::start().await;
    sign_in(&browser, &dashboard, ACME_KEY).await;

    // The CSR chart of the program, once the csr-consumer has the check-ins.
    eventually(Duration::from_secs(30), "the check-ins counted", || {
        let gateway = gateway.clone();
        async move {
            let report = api_json(&gateway, "/api/csr/metrics?program=dash-prog", ACME_KEY).await?;
            let days = report["days"].as_array()?;
            (days.last()?["checkins"] == 2).then_some(())
        }
    })
    .await;
    browser.goto(&format!("{dashboard}/csr")).await;
    check_page(&browser, &axe, "csr-empty").await;
    browser
        .fill(&browser.find("#program").await, "dash-prog")
        .await;
    browser
        .click(&browser.find("form[action='/ui/csr'] button").await)
        .await;
    let row = browser
        .find(&format!("#csr-days tr[data-day='{today}']"))
        .await;
    let cells: Vec<String> = {
        let mut cells = Vec::new();
        for cell in browser
            .find_all(&format!("#csr-days tr[data-day='{today}'] td"))
            .await
        {
            cells.push(browser.text(&cell).await);
        }
        cells
    };
    drop(row);
    assert_eq!(
        cells[1..4],
        ["1", "2", "0"],
        "active matches, check-ins, attendance today"
    );
    assert_eq!(
        browser
            .find_all("#csr-counts g.series[data-series='Check-ins'] circle.point")
            .await
            .len(),
        30,
        "a point per day of the default 30"
    );
    let point = browser
        .execute(
            "const points = document.querySelectorAll(\"#csr-counts g.series[data-series='Check-ins'] circle.point\");
             return points[points.length - 1].querySelector('title').textContent;",
            json!([]),
        )
        .await;
    assert_eq!(point, format!("{today}: Check-ins 2"));
    browser.find("#csr-engagement").await;
    check_page(&browser, &axe, "csr").await;
    // A bad range is shown next to its field.
    browser
        .goto(&format!(
            "{dashboard}/csr?program=dash-prog&from=2026-02-30"
        ))
        .await;
    let error = browser.find(".field-error[data-field=from]").await;
    assert!(
        browser
            .text(&error)
            .await
            .contains("must be a YYYY-MM-DD day")
    );
    check_page(&browser, &axe, "csr-error").await;

    // The participant's journey.
    browser.goto(&format!("{dashboard}/csr")).await;
    browser
        .fill(&browser.find("#participant").await, "p-1")
        .await;
    browser
        .click(&browser.find("form[action='/ui/csr/journey'] button").await)
        .await;
    browser
        .find("section.journey[data-program='dash-prog']")
        .await;
    let stages: Vec<String> = {
        let mut stages = Vec::new();
        for step in browser.find_all("ol.timeline li.step").await {
            stages.push(browser.attribute(&step, "data-stage").await.unwrap());
        }
        stages
    };
    assert_eq!(stages, ["enrolled", "matched", "active"]);
    check_page(&browser, &axe, "journey").await;
    browser
        .goto(&format!("{dashboard}/csr/participants/nobody"))
        .await;
    assert!(heading(&browser).await.starts_with("404"));

    // The campaign, its counters and completion.
    eventually(Duration::from_secs(30), "the delivery counted", || {
        let gateway = gateway.clone();
        async move {
            let campaign = api_json(&gateway, "/api/campaigns/dash-camp", ACME_KEY).await?;
            (campaign["counts"]["delivered"] == 1).then_some(())
        }
    })
    .await;
    browser.goto(&format!("{dashboard}/campaigns")).await;
    let row = "#campaigns tr[data-campaign='dash-camp']";
    let cells = texts(&browser, &format!("{row} td")).await;
    assert!(cells[1].contains("1 / 2"), "half settled: {cells:?}");
    assert_eq!(cells[2..5], ["2", "2", "1"], "size, registered, delivered");
    check_page(&browser, &axe, "campaigns").await;
    browser
        .click(&browser.find(&format!("{row} a")).await)
        .await;
    assert!(
        browser
            .text(&browser.find("#completion").await)
            .await
            .contains("1 of 2 recipients have an outcome")
    );
    check_page(&browser, &axe, "campaign").await;

    // A tenant has no CI page; an operator sees the failure and its class.
    browser.goto(&format!("{dashboard}/ci")).await;
    assert!(heading(&browser).await.starts_with("403"));
    let refused = hookmesh_runtime::http::client_builder()
        .build()
        .unwrap()
        .get(format!("{gateway}/api/admin/ci/failures"))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    browser.goto(&format!("{dashboard}/campaigns")).await;
    sign_out(&browser).await;
    sign_in(&browser, &dashboard, READONLY_KEY).await;
    eventually(Duration::from_secs(30), "the CI failure announced", || {
        let gateway = gateway.clone();
        async move {
            let page = api_json(&gateway, "/api/admin/ci/failures", READONLY_KEY).await?;
            (page["failures"].as_array()?.len() == 1).then_some(())
        }
    })
    .await;
    browser.goto(&format!("{dashboard}/ci")).await;
    let failure = "#failures tr[data-platform=github][data-repository='acme/payments-api']";
    let cells = texts(&browser, &format!("{failure} td")).await;
    assert!(!cells[5].trim().is_empty(), "classified: {cells:?}");
    let link = browser
        .attribute(&browser.find(&format!("{failure} a")).await, "href")
        .await;
    assert_eq!(
        link.as_deref(),
        Some("https://github.com/acme/payments-api/actions/runs/9876543210")
    );
    let bars = browser
        .execute(
            "return [...document.querySelectorAll('#ci-per-platform rect.bar')]
               .map((bar) => [bar.dataset.series, bar.dataset.day, bar.dataset.value]);",
            json!([]),
        )
        .await;
    assert_eq!(bars, json!([["github", today, "1"]]));
    check_page(&browser, &axe, "ci-failures").await;
    // The filter form as a person submits it (every field sent, some empty).
    browser
        .execute(
            "document.getElementById('platform').value = 'jenkins';",
            json!([]),
        )
        .await;
    browser
        .click(&browser.find("form[action='/ui/ci'] button").await)
        .await;
    browser.find("#no-failures").await;
    assert!(
        browser
            .current_url()
            .await
            .contains("platform=jenkins&repository=&days=")
    );
    browser
        .goto(&format!("{dashboard}/ci?platform=bitbucket"))
        .await;
    let error = browser.find(".field-error[data-field=platform]").await;
    assert!(
        browser
            .text(&error)
            .await
            .contains("github, gitlab, jenkins or circleci")
    );

    browser.quit().await;
    stop_gracefully(mesh).await;
}

/// Navigation timing of the page now in the browser: (time to first byte,
/// time until loaded and drawn), in milliseconds.
async fn page_timing(browser: &Browser) -> (f64, f64) {
    let timing = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             requestAnimationFrame(() => requestAnimationFrame(() => {
               const n = performance.getEntriesByType('navigation')[0];
               done([n.responseStart - n.requestStart, performance.now() - n.startTime]);
             }));",
            json!([]),
        )
        .await;
    (timing[0].as_f64().unwrap(), timing[1].as_f64().unwrap())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The figures of the dashboard with 10,000 jobs of a tenant and 10,000
/// dead letters: time to first byte and to a drawn page in Chromium,
/// median of 7 loads, of the binary built with the test or the one
/// `HOOKMESH_BINARY` names (a release build). Run on its own:
/// `cargo nextest run -p hookmesh --test dashboard -E 'test(measure_pages)' --run-ignored only --no-capture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: prints its figures"]
async fn measure_pages_with_ten_thousand_jobs_and_dead_letters() {
    const ROWS: usize = 10_000;
    let scratch = TestDir::new("dashboard-measure");
    let data_dir = scratch.path().join("data");
    let database = hookmesh_runtime::db::sqlite_url(&scratch.path().join("mesh.db"));
    let binary = std::env::var("HOOKMESH_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_hookmesh").to_owned());
    let mesh = up::start_up_with(Path::new(&binary), &data_dir, free_port(), |command| {
        command
            .env("DATABASE_URL", &database)
            .env("HOOKMESH_API_KEYS", format!("acme:{ACME_KEY}"))
            .env("HOOKMESH_ADMIN_KEYS", format!("ops:{ADMIN_KEY}"))
            .env("HOOKMESH_LOG", "warn");
    })
    .await;

    // 10,000 jobs of acme, as the sweep-worker records them.
    let pool = hookmesh_tests::query_pool(&database).await;
    let parameters = json!({"ticker": "BTC-USD", "fast_range": [10, 20], "slow_range": [20, 30],
                            "step": 5, "min_trades": 50, "strategy_type": "SMA", "config_path": "minimum"})
    .to_string();
    let now = hookmesh_contracts::Timestamp::now().unix_millis();
    let mut tx = pool.begin().await.unwrap();
    for n in 0..ROWS {
        sqlx::query(
            "INSERT INTO pipeline_jobs (id, tenant_id, job_type, status, parameters, created_at, updated_at) \
             VALUES ($1, 'acme', 'trading_sweep', 'COMPLETED', $2, $3, $3)",
        )
        .bind(format!("job_measure{n:05}"))
        .bind(&parameters)
        .bind(now - n as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    // 10,000 dead letters: native events the csr-consumer can never process.
    let js = async_nats::jetstream::new(async_nats::connect(&mesh.broker).await.unwrap());
    // Acknowledgements awaited a thousand at a time: the client holds only
    // so many in flight.
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for n in chunk {
            let body = format!(r#"{{"not":"an envelope","n":{n}}}"#);
            acks.push(
                js.publish("buddy.match.created", body.into())
                    .await
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    eventually(Duration::from_secs(300), "10,000 dead letters", || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("DEAD_LETTERS").await.ok()?;
            (stream.info().await.ok()?.state.messages >= ROWS as u64).then_some(())
        }
    })
    .await;

    let browser = Browser::start().await;
    let mut figures = Vec::new();
    for (key, page, check) in [
        (ACME_KEY, "pipelines", "#jobs tbody tr"),
        (ADMIN_KEY, "dead-letters", "#letters tbody tr"),
    ] {
        sign_in(&browser, &mesh.dashboard, key).await;
        let (mut first_byte, mut drawn) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            browser.goto(&format!("{}/{page}", mesh.dashboard)).await;
            browser.find(check).await;
            let (ttfb, total) = page_timing(&browser).await;
            first_byte.push(ttfb);
            drawn.push(total);
        }
        if page == "dead-letters" {
            let count = browser.text(&browser.find("#count strong").await).await;
            assert_eq!(count, ROWS.to_string(), "every dead letter is counted");
        }
        figures.push(format!(
            "{page}: time to first byte {:.0} ms, drawn {:.0} ms (median of 7; each load {:?} ms)",
            median(first_byte),
            median(drawn.clone()),
            drawn.iter().map(|ms| ms.round()).collect::<Vec<_>>()
        ));
        browser.goto(&format!("{}/pipelines", mesh.dashboard)).await;
        if page == "pipelines" {
            sign_out(&browser).await;
        }
    }
    for line in &figures {
        println!("{line}");
    }
    browser.quit().await;
    stop_gracefully(mesh).await;
}
