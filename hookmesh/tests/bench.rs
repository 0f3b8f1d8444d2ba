//! The benchmarks run end to end, briefly, and report what they promise.
//! No figure is judged here (figures come from full runs, not from tests):
//! each phase must have carried messages without errors, so a benchmark that
//! stopped working is noticed before someone needs its numbers.

use hookmesh_tests::TestNats;
use serde_json::Value;

/// Runs `hookmesh bench <args> --json` against `nats` and returns its report.
fn bench(nats: &TestNats, args: &[&str]) -> Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookmesh"))
        .env("NATS_URL", nats.url())
        .env("HOOKMESH_LOG", "warn")
        .env_remove("HOOKMESH_BENCH_POSTGRES_URL")
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("the hookmesh binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "hookmesh bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON report in:\n{stdout}"));
    serde_json::from_str(report).expect("the report is JSON")
}

fn number(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_bench_runs_its_four_phases() {
    let nats = TestNats::start().await;
    let report = bench(
        &nats,
        &[
            "gateway",
            "--duration-secs",
            "1",
            "--warmup-secs",
            "0",
            "--concurrency",
            "4",
        ],
    );
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "raw JetStream (before)",
            "gateway (HTTP 202)",
            "raw JetStream (after)",
            "raw, gateway's messages"
        ]
    );
    for phase in phases {
        assert!(number(phase, "completed") > 0.0, "{phase}");
        assert_eq!(number(phase, "errors"), 0.0, "{phase}");
    }
    assert!(number(&report, "ratio") > 0.0);
    assert!(number(&report, "ratio_to_gateway_messages") > 0.0);
    // The gateway's stored message is the envelope around the webhook.
    assert!(number(&report, "envelope_bytes") > number(&report, "payload_bytes"));
    assert!(number(&report, "gateway_rss_peak_mib") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_bench_measures_throughput_lag_memory_and_ci_detection() {
    let nats = TestNats::start().await;
    let report = bench(
        &nats,
        &[
            "batch",
            "--events",
            "1000",
            "--batch-sizes",
            "100",
            "--rate",
            "200",
            "--duration-secs",
            "1",
        ],
    );
    assert!(number(&report, "raw_consume_per_second") > 0.0);
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{report}");
    assert_eq!(runs[0]["database"], "sqlite");
    assert_eq!(number(&runs[0], "events"), 1000.0);
    assert!(number(&runs[0], "events_per_second") > 0.0);
    assert!(number(&runs[0], "lag_p99_ms") >= number(&runs[0], "lag_p50_ms"));
    assert!(number(&report, "memory_mib_per_10k_buffered") > 0.0);
    assert!(number(&report, "ci_failures") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csr_bench_measures_sustained_lag_and_backlog_drain() {
    let nats = TestNats::start().await;
    let report = bench(
        &nats,
        &[
            "csr",
            "--rate",
            "50",
            "--duration-secs",
            "1",
            "--backlog",
            "100",
        ],
    );
    assert_eq!(report["database"], "sqlite");
    assert_eq!(number(&report, "sustained_events"), 50.0);
    assert_eq!(number(&report, "backlog_events"), 100.0);
    assert!(number(&report, "backlog_applied_per_second") > 0.0);
    assert!(number(&report, "lag_p99_ms") >= number(&report, "lag_p50_ms"));
}
