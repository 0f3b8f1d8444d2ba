//! Notifications of finished jobs (seed 000's step 9): a Slack-compatible
//! incoming-webhook POST (`{"text", "blocks"}`, which Slack, Mattermost and
//! Rocket.Chat accept). They have their own durable consumer on the
//! COMPLETED and FAILED events, so a notification that cannot be sent is
//! retried apart from the job, and never fails it.

use hookmesh_contracts::sweep_jobs::{JobStatus, SweepJobEvent};
use serde_json::{Value, json};

/// The message announcing a finished job.
pub fn slack_message(event: &SweepJobEvent, tenant: &str) -> Value {
    let job = format!(
        "`{}` ({} {})",
        event.job_id, event.ticker, event.strategy_type
    );
    let text = match event.status {
        JobStatus::Completed => {
            let mut text = format!(":white_check_mark: Trading sweep {job} completed");
            if let Some(metrics) = &event.metrics {
                text.push_str(&format!(
                    " in {:.0} s: {} combinations tested",
                    metrics.duration_seconds, metrics.combinations_tested
                ));
            }
            match &event.best {
                Some(best) => text.push_str(&format!(
                    ". Best: fast {} / slow {}, score {:.2}, Sharpe {:.2}, return {:.1} %, max drawdown {:.1} %, {} trades.",
                    best.fast_period,
                    best.slow_period,
                    best.score,
                    best.sharpe_ratio,
                    best.total_return_pct,
                    best.max_drawdown_pct,
                    best.total_trades
                )),
                None => text.push_str(". No combination reached min_trades."),
            }
            text
        }
        _ => format!(
            ":x: Trading sweep {job} failed: {}",
            event.error_message.as_deref().unwrap_or(&event.message)
        ),
    };
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("tenant {tenant} · {}", event.at.to_rfc3339())}
            ]}
        ]
    })
}

#[cfg(test)]
mod tests {
    use hookmesh_contracts::Timestamp;
    use hookmesh_contracts::sweep::StrategyType;
    use hookmesh_contracts::sweep_jobs::{JobEventName, JobMetrics};

    use super::*;

    #[test]
    fn messages_say_what_happened() {
        let mut event = SweepJobEvent {
            job_id: "job_1".to_owned(),
            event: JobEventName::Completed,
            status: JobStatus::Completed,
            done: true,
            ticker: "BTC-USD".to_owned(),
            strategy_type: StrategyType::Sma,
            percent: None,
            message: String::new(),
            metrics: Some(JobMetrics {
                duration_seconds: 127.0,
                combinations_tested: 8,
            }),
            best: None,
            error_message: None,
            at: Timestamp::parse_rfc3339("2025-01-27T10:32:52Z").unwrap(),
        };
        let text = slack_message(&event, "acme")["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            text.contains("completed in 127 s: 8 combinations tested"),
            "{text}"
        );
        event.status = JobStatus::Failed;
        event.error_message = Some("Insufficient historical data for ticker BTC-USD".to_owned());
        let message = slack_message(&event, "acme");
        assert!(
            message["text"]
                .as_str()
                .unwrap()
                .ends_with("failed: Insufficient historical data for ticker BTC-USD")
        );
        assert!(
            message["blocks"][1]["elements"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("tenant acme")
        );
    }
}
