//! The batch-processor's CI family end to end: real-shaped webhooks from
//! all four platforms become runs, classified failures and one
//! `ci.failure.detected` each, well within seed 001's 30 seconds; events
//! out of order never move a run backwards.

use std::time::{Duration, Instant};

use hookmesh_contracts::ci::{
    CiMetadata, CiPipelineEvent, CiPlatform, FailureContext, PipelineEventType,
};
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::ci_pipeline;
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_tests::{
    StoredMessage, TestBatch, TestDb, TestGateway, TestNats, batch_settings, eventually,
    stream_messages, test_config,
};
use reqwest::StatusCode;

use crate::deliveries::{circleci, github, gitlab, jenkins};
use crate::fixture;

const REPOSITORY: &str = "acme/payments-api";

/// The `ci.failure.detected` events on the stream once there are at least
/// `count`: the outbox sends them after the commit, so they may trail the
/// settled count.
async fn at_least_announced(nats: &TestNats, count: usize) -> Vec<StoredMessage> {
    eventually(
        Duration::from_secs(30),
        &format!("{count} failure announcements"),
        || async {
            let announced = failures_announced(nats).await;
            (announced.len() >= count).then_some(announced)
        },
    )
    .await
}

async fn failures_announced(nats: &TestNats) -> Vec<StoredMessage> {
    let js = nats.jetstream().await;
    stream_messages(&js, "CI")
        .await
        .into_iter()
        .filter(|m| m.subject == "ci.failure.detected")
        .collect()
}

fn key(platform: &str, pipeline: &str, job: &str) -> (String, String, String, String) {
    (
        platform.to_owned(),
        REPOSITORY.to_owned(),
        pipeline.to_owned(),
        job.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_from_four_platforms_become_runs_classified_failures_and_one_announcement_each() {
    for db in TestDb::every_backend().await {
        let nats = TestNats::start().await;
        let gateway = TestGateway::start(nats.url(), test_config()).await;
        let processor = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
        let posted = Instant::now();
        // Each delivered twice, as platforms retry.
        for _ in 0..2 {
            for (event, delivery, name) in [
                ("workflow_run", "d-run-1", "workflow_run.in_progress"),
                ("workflow_run", "d-run-2", "workflow_run.completed.failure"),
                ("workflow_job", "d-job-1", "workflow_job.completed.failure"),
            ] {
                let body = fixture("github", name);
                let response = github(&gateway, event, delivery, &body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED, "{name}");
            }
            for (kind, key, name) in [
                ("Pipeline Hook", "gl-1", "pipeline.running"),
                ("Pipeline Hook", "gl-2", "pipeline.failed"),
                ("Job Hook", "gl-3", "job.failed"),
            ] {
                let body = fixture("gitlab", name);
                let response = gitlab(&gateway, kind, key, &body).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED, "{name}");
            }
            for name in ["started", "completed.failure"] {
                let body = fixture("jenkins", name);
                let response = jenkins(&gateway, &body).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED, "{name}");
            }
            for name in ["workflow-completed.failed", "job-completed.failed"] {
                let body = fixture("circleci", name);
                let response = circleci(&gateway, &body).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED, "{name}");
            }
        }

        // Seed 001: failures detected within 30 seconds of the webhook.
        let announced = at_least_announced(&nats, 7).await;
        let detected_within = posted.elapsed();
        assert_eq!(
            announced.len(),
            7,
            "one per failed run or job, duplicates included"
        );
        for message in &announced {
            let data = &message.envelope["data"];
            let received = Timestamp::parse_rfc3339(data["received_at"].as_str().unwrap()).unwrap();
            let detected = Timestamp::parse_rfc3339(data["detected_at"].as_str().unwrap()).unwrap();
            assert!(received.seconds_until(detected) < 30.0);
            assert!(
                !data["error_patterns"].as_array().unwrap().is_empty(),
                "every failure is classified"
            );
        }
        eprintln!(
            "{}: seven failures announced {detected_within:?} after the first webhook",
            db.backend()
        );

        let store = processor.service().ci_store();
        let run = |platform: &'static str, pipeline: &'static str, job: &'static str| async move {
            store
                .run(&key(platform, pipeline, job))
                .await
                .unwrap()
                .unwrap()
        };
        let failed = Some(PipelineEventType::Failed);
        let github_run = run("github", "9876543210", "").await;
        assert_eq!(github_run.status, failed);
        let github_job = run("github", "9876543210", "27011122233").await;
        assert_eq!(github_job.status, failed);
        assert!(
            github_job
                .error_patterns
                .iter()
                .any(|p| p.to_string() == "test_failure")
        );
        let gitlab_job = run("gitlab", "1203344", "6543210").await;
        assert_eq!(gitlab_job.failure_reason.as_deref(), Some("script_failure"));
        assert!(
            gitlab_job
                .error_patterns
                .iter()
                .any(|p| p.to_string() == "test_failure")
        );
        assert_eq!(run("gitlab", "1203344", "").await.status, failed);
        let jenkins_run = run("jenkins", "payments-api#142", "").await;
        assert_eq!(jenkins_run.status, failed);
        assert!(
            jenkins_run
                .error_patterns
                .iter()
                .any(|p| p.to_string() == "test_failure")
        );
        assert_eq!(
            run("circleci", "8f2e6a1c-4b3d-4f5e-a7c9-0b1d2e3f4a5b", "")
                .await
                .status,
            failed
        );
        assert_eq!(
            store
                .repository_failures("github", REPOSITORY)
                .await
                .unwrap(),
            (1, 1)
        );
        assert_eq!(
            store
                .repository_failures("gitlab", REPOSITORY)
                .await
                .unwrap(),
            (1, 1)
        );
        assert_eq!(
            store
                .repository_failures("jenkins", REPOSITORY)
                .await
                .unwrap(),
            (1, 0)
        );
        assert_eq!(
            store
                .repository_failures("circleci", REPOSITORY)
                .await
                .unwrap(),
            (1, 1)
        );
        processor.stop().await;
    }
}

fn settled_ci(processor: &TestBatch) -> f64 {
    ["applied", "duplicate"]
        .iter()
        .map(|status| {
            processor.metric(&format!(
                "webhooks_processed_total{{family=\"ci\",status=\"{status}\"}}"
            ))
        })
        .sum()
}

fn event(id: &str, pipeline: &str, event_type: PipelineEventType, second: i64) -> CiPipelineEvent {
    CiPipelineEvent {
        id: id.to_owned(),
        timestamp: Timestamp::from_unix_millis(1_736_935_800_000 + second * 1000).unwrap(),
        platform: CiPlatform::Github,
        event_type,
        repository: REPOSITORY.to_owned(),
        pipeline_id: pipeline.to_owned(),
        job_id: None,
        run_attempt: None,
        metadata: CiMetadata::default(),
        failure_context: (event_type == PipelineEventType::Failed).then(|| FailureContext {
            exit_code: Some(137),
            reason: Some("failure".to_owned()),
            ..FailureContext::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_out_of_order_never_move_a_run_backwards() {
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let processor = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
    use PipelineEventType::*;
    let events = [
        // A failure, then its own late start.
        event("x-failed", "run-x", Failed, 10),
        event("x-started", "run-x", Started, 1),
        // A success, then its late start.
        event("y-completed", "run-y", Completed, 20),
        event("y-started", "run-y", Started, 5),
        // A failure whose re-run then passed, and the failure delivered again.
        event("z-failed", "run-z", Failed, 10),
        event("z-completed", "run-z", Completed, 30),
        event("z-failed", "run-z", Failed, 10),
    ];
    for (index, event) in events.iter().enumerate() {
        let subject = ci_pipeline(event.platform, event.event_type);
        let envelope = Envelope::new(
            event.id.clone(),
            "/native/ci",
            event.timestamp,
            TenantId::default_tenant(),
            Some(event.repository.clone()),
            event.clone(),
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("native-{index}").as_str());
        js.publish_with_headers(subject, headers, envelope.to_json().into())
            .await
            .unwrap()
            .await
            .unwrap();
        // One at a time, so each arrives in a batch after the one before.
        eventually(Duration::from_secs(30), "the event settled", || async {
            (settled_ci(&processor) == (index + 1) as f64).then_some(())
        })
        .await;
    }
    let announced = at_least_announced(&nats, 2).await;
    let store = processor.service().ci_store();
    let status = |pipeline: &'static str| async move {
        store
            .run(&key("github", pipeline, ""))
            .await
            .unwrap()
            .unwrap()
            .status
    };
    assert_eq!(
        status("run-x").await,
        Some(Failed),
        "a late start never undoes a failure"
    );
    assert_eq!(status("run-y").await, Some(Completed));
    assert_eq!(
        status("run-z").await,
        Some(Completed),
        "the later re-run's success stands"
    );
    assert_eq!(
        announced.len(),
        2,
        "each failure announced once, duplicates not again"
    );
    let patterns = &announced[0].envelope["data"]["error_patterns"];
    assert_eq!(
        patterns,
        &serde_json::json!(["out_of_memory"]),
        "exit code 137"
    );
    processor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_reported_again_under_a_new_delivery_id_is_announced_once_and_a_new_attempt_again()
 {
    for db in TestDb::every_backend().await {
        let nats = TestNats::start().await;
        let gateway = TestGateway::start(nats.url(), test_config()).await;
        let processor = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
        let github_failure = fixture("github", "workflow_run.completed.failure");
        let gitlab_failure = fixture("gitlab", "pipeline.failed");
        // GitLab sends some pipeline events twice under new ids, and a
        // redelivery from a platform's UI can carry a new one.
        for delivery in ["d-1", "d-2"] {
            let response = github(&gateway, "workflow_run", delivery, &github_failure)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            assert_eq!(
                response.json::<serde_json::Value>().await.unwrap()["duplicate"],
                false
            );
            let response = gitlab(
                &gateway,
                "Pipeline Hook",
                &format!("gl-{delivery}"),
                &gitlab_failure,
            )
            .send()
            .await
            .unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        }
        eventually(Duration::from_secs(30), "four reports settled", || async {
            (settled_ci(&processor) >= 4.0).then_some(())
        })
        .await;
        let store = processor.service().ci_store();
        assert_eq!(
            store
                .repository_failures("github", REPOSITORY)
                .await
                .unwrap(),
            (1, 0)
        );
        assert_eq!(
            store
                .repository_failures("gitlab", REPOSITORY)
                .await
                .unwrap(),
            (1, 0)
        );
        // The re-run below shows that nothing more comes.
        let announced = at_least_announced(&nats, 2).await;
        assert_eq!(announced.len(), 2, "{}", db.backend());

        // A re-run of the same workflow run is a new run: announced again.
        let mut rerun: serde_json::Value = serde_json::from_slice(&github_failure).unwrap();
        rerun["workflow_run"]["run_attempt"] = 2.into();
        rerun["workflow_run"]["updated_at"] = "2030-01-01T00:00:00Z".into();
        let rerun = serde_json::to_vec(&rerun).unwrap();
        let response = github(&gateway, "workflow_run", "d-3", &rerun)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let announced = at_least_announced(&nats, 3).await;
        assert_eq!(announced.len(), 3);
        assert_eq!(
            store
                .repository_failures("github", REPOSITORY)
                .await
                .unwrap(),
            (2, 0)
        );
        processor.stop().await;
    }
}
