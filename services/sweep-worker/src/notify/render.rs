//! What a notification says: a subject, a plain-text body, an HTML body
//! (every interpolated value escaped) and Slack Block Kit blocks whose
//! `text` fallback carries the gist for Slack-compatible receivers
//! (Mattermost, Rocket.Chat) that ignore blocks.

use std::fmt::Write as _;

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::ci::CiFailureDetected;
use hookmesh_contracts::delivery::CampaignCompleted;
use hookmesh_contracts::notify::NotificationKind;
use hookmesh_contracts::sweep::SweepResult;
use hookmesh_contracts::sweep_jobs::{PipelineJob, SweepJobEvent};
use serde_json::{Value, json};

/// Rows of the results table in an email (a sweep's best first).
pub const EMAIL_RESULTS: usize = 10;
/// Rows of it in a Slack message, whose sections are short.
pub const SLACK_RESULTS: usize = 5;

/// A rendered notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub blocks: Vec<Value>,
}

/// `text` with `& < > " '` escaped, for HTML.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `text` with Slack mrkdwn's control characters escaped.
fn mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A finished sweep, from its event and, when the job could be read, its
/// stored results.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepView {
    pub job_id: String,
    pub tenant: String,
    pub kind: NotificationKind,
    pub ticker: String,
    pub strategy: String,
    pub duration_seconds: Option<f64>,
    pub combinations: Option<u64>,
    /// Best score first.
    pub results: Vec<SweepResult>,
    pub reason: Option<String>,
    pub finished_at: Timestamp,
}

impl SweepView {
    pub fn new(
        event: &SweepJobEvent,
        tenant: &str,
        kind: NotificationKind,
        job: Option<&PipelineJob>,
    ) -> Self {
        let mut results = job.and_then(|job| job.results.clone()).unwrap_or_default();
        if results.is_empty() {
            results.extend(event.best.clone());
        }
        Self {
            job_id: event.job_id.clone(),
            tenant: tenant.to_owned(),
            kind,
            ticker: event.ticker.clone(),
            strategy: event.strategy_type.to_string(),
            duration_seconds: event.metrics.map(|m| m.duration_seconds),
            combinations: event.metrics.map(|m| m.combinations_tested),
            results,
            reason: event
                .error_message
                .clone()
                .or_else(|| (!event.message.is_empty()).then(|| event.message.clone()))
                .filter(|_| kind != NotificationKind::SweepCompleted),
            finished_at: event.at,
        }
    }
}

/// Where a job is seen: its dashboard page and its API resource.
fn job_links(public_url: &str, job_id: &str) -> (String, String) {
    let base = public_url.trim_end_matches('/');
    (
        format!("{base}/ui/pipelines/{job_id}"),
        format!("{base}/api/pipelines/{job_id}"),
    )
}

fn seconds(value: f64) -> String {
    if value < 120.0 {
        format!("{value:.1} s")
    } else {
        format!("{:.0} min {:.0} s", (value / 60.0).floor(), value % 60.0)
    }
}

/// 003's metrics, the columns of the results table.
const COLUMNS: [&str; 13] = [
    "fast",
    "slow",
    "score",
    "Sharpe",
    "Sortino",
    "return %",
    "annualized %",
    "max DD %",
    "win rate %",
    "profit factor",
    "trades",
    "trades/month",
    "avg trade",
];

fn cells(result: &SweepResult) -> [String; 13] {
    [
        result.fast_period.to_string(),
        result.slow_period.to_string(),
        format!("{:.2}", result.score),
        format!("{:.2}", result.sharpe_ratio),
        format!("{:.2}", result.sortino_ratio),
        format!("{:.1}", result.total_return_pct),
        format!("{:.1}", result.annualized_return),
        format!("{:.1}", result.max_drawdown_pct),
        format!("{:.1}", result.win_rate_pct),
        format!("{:.2}", result.profit_factor),
        result.total_trades.to_string(),
        format!("{:.1}", result.trades_per_month),
        result.avg_trade_duration.clone(),
    ]
}

/// A fixed-width table for plain text.
fn text_table(results: &[SweepResult]) -> String {
    let rows: Vec<[String; 13]> = results.iter().map(cells).collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].len())
                .chain([COLUMNS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(value, &width)| format!("{value:>width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut table = line(COLUMNS.to_vec());
    for row in &rows {
        table.push('\n');
        table.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    table
}

fn html_table(results: &[SweepResult]) -> String {
    let mut html =
        String::from("<table style=\"border-collapse:collapse;font-family:monospace\"><thead><tr>");
    for column in COLUMNS {
        let _ = write!(
            html,
            "<th style=\"border:1px solid #ccc;padding:2px 6px\">{}</th>",
            escape(column)
        );
    }
    html.push_str("</tr></thead><tbody>");
    for result in results {
        html.push_str("<tr>");
        for cell in cells(result) {
            let _ = write!(
                html,
                "<td style=\"border:1px solid #ccc;padding:2px 6px;text-align:right\">{}</td>",
                escape(&cell)
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:sans-serif\">{body}</body></html>",
        escape(title)
    )
}

fn status_word(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::SweepCompleted => "COMPLETED",
        NotificationKind::SweepTimedOut => "TIMED OUT",
        _ => "FAILED",
    }
}

/// A finished, failed or timed-out sweep.
pub fn sweep(view: &SweepView, public_url: &str) -> Message {
    let status = status_word(view.kind);
    let (dashboard, api) = job_links(public_url, &view.job_id);
    let subject = format!(
        "[hookmesh] Sweep {status}: {} {} ({})",
        view.ticker, view.strategy, view.job_id
    );
    let best = view.results.first();
    let mut facts: Vec<(&str, String)> = vec![
        ("Status", status.to_owned()),
        ("Job", view.job_id.clone()),
        ("Tenant", view.tenant.clone()),
        ("Ticker", view.ticker.clone()),
        ("Strategy", view.strategy.clone()),
    ];
    if let Some(duration) = view.duration_seconds {
        facts.push(("Duration", seconds(duration)));
    }
    if let Some(combinations) = view.combinations {
        facts.push(("Combinations tested", combinations.to_string()));
    }
    if let Some(best) = best.filter(|_| view.kind == NotificationKind::SweepCompleted) {
        facts.push((
            "Best parameters",
            format!(
                "fast {} / slow {} (score {:.2}, Sharpe {:.2}, return {:.1} %)",
                best.fast_period,
                best.slow_period,
                best.score,
                best.sharpe_ratio,
                best.total_return_pct
            ),
        ));
    }
    if let Some(reason) = &view.reason {
        facts.push(("Reason", reason.clone()));
    }
    facts.push(("Finished", view.finished_at.to_rfc3339()));
    let shown = &view.results[..view.results.len().min(EMAIL_RESULTS)];
    let completed = view.kind == NotificationKind::SweepCompleted;

    let mut text = format!("Trading sweep {status}\n\n");
    for (name, value) in &facts {
        let _ = writeln!(text, "{name}: {value}");
    }
    if completed {
        if shown.is_empty() {
            text.push_str("\nNo combination reached min_trades.\n");
        } else {
            let _ = write!(
                text,
                "\nTop {} of {} results:\n{}\n",
                shown.len(),
                view.results.len(),
                text_table(shown)
            );
        }
    }
    let _ = write!(text, "\nDashboard: {dashboard}\nAPI: {api}\n");

    let mut body = format!("<h2>Trading sweep {}</h2><table>", escape(status));
    for (name, value) in &facts {
        let _ = write!(
            body,
            "<tr><th style=\"text-align:left;padding-right:12px\">{}</th><td>{}</td></tr>",
            escape(name),
            escape(value)
        );
    }
    body.push_str("</table>");
    if completed {
        if shown.is_empty() {
            body.push_str("<p>No combination reached min_trades.</p>");
        } else {
            let _ = write!(
                body,
                "<h3>Top {} of {} results</h3>{}",
                shown.len(),
                view.results.len(),
                html_table(shown)
            );
        }
    }
    let _ = write!(
        body,
        "<p><a href=\"{}\">Open the job in the dashboard</a> · <a href=\"{}\">API</a></p>",
        escape(&dashboard),
        escape(&api)
    );

    let icon = if completed {
        ":white_check_mark:"
    } else {
        ":x:"
    };
    let summary = match (completed, best) {
        (true, Some(best)) => format!(
            "{icon} Trading sweep `{}` ({} {}) {status}: best fast {} / slow {}, score {:.2}, Sharpe {:.2}, return {:.1} %",
            view.job_id,
            view.ticker,
            view.strategy,
            best.fast_period,
            best.slow_period,
            best.score,
            best.sharpe_ratio,
            best.total_return_pct
        ),
        (true, None) => format!(
            "{icon} Trading sweep `{}` ({} {}) {status}: no combination reached min_trades",
            view.job_id, view.ticker, view.strategy
        ),
        (false, _) => format!(
            "{icon} Trading sweep `{}` ({} {}) {status}: {}",
            view.job_id,
            view.ticker,
            view.strategy,
            view.reason.as_deref().unwrap_or("no reason given")
        ),
    };
    let fields: Vec<Value> = facts
        .iter()
        .filter(|(name, _)| !matches!(*name, "Reason" | "Best parameters" | "Finished"))
        .map(|(name, value)| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", mrkdwn(value))}))
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("Sweep {status}: {} {}", view.ticker, view.strategy)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(&summary)}, "fields": fields}),
    ];
    if completed && !view.results.is_empty() {
        let top = &view.results[..view.results.len().min(SLACK_RESULTS)];
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```\n{}\n```", text_table(top))}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("tenant {} · {} · <{}|dashboard> · <{}|API>", mrkdwn(&view.tenant), view.finished_at.to_rfc3339(), dashboard, api)}
    ]}));
    Message {
        subject,
        text: format!("{summary}\n\n{text}"),
        html: html_page(&format!("Sweep {status}"), &body),
        blocks,
    }
}

/// A CI run or job failed.
pub fn ci_failure(failure: &CiFailureDetected) -> Message {
    let classes: Vec<String> = failure
        .error_patterns
        .iter()
        .map(ToString::to_string)
        .collect();
    let what = match &failure.job_id {
        Some(job) => format!("job {job} of pipeline {}", failure.pipeline_id),
        None => format!("pipeline {}", failure.pipeline_id),
    };
    let subject = format!(
        "[hookmesh] CI failure: {} {} ({})",
        failure.platform,
        failure.repository,
        classes.join(", ")
    );
    let facts = [
        ("Platform", failure.platform.to_string()),
        ("Repository", failure.repository.clone()),
        ("Failed", what.clone()),
        ("Classified as", classes.join(", ")),
        ("Failed at", failure.failed_at.to_rfc3339()),
        ("Detected at", failure.detected_at.to_rfc3339()),
    ];
    let summary = format!(
        ":rotating_light: CI failure on {} `{}`: {what} ({})",
        failure.platform,
        failure.repository,
        classes.join(", ")
    );
    facts_message(subject, summary, "CI failure", &facts)
}

/// Every recipient of a campaign has an outcome.
pub fn campaign(completed: &CampaignCompleted) -> Message {
    let counts = completed.counts;
    let subject = format!(
        "[hookmesh] Campaign completed: {} ({} recipients)",
        completed.campaign_id, completed.size
    );
    let facts = [
        ("Campaign", completed.campaign_id.clone()),
        ("Tenant", completed.tenant_id.to_string()),
        ("Recipients", completed.size.to_string()),
        ("Delivered", counts.delivered.to_string()),
        ("Opened", counts.opened.to_string()),
        ("Clicked", counts.clicked.to_string()),
        ("Bounced", counts.bounced.to_string()),
        ("Complained", counts.complained.to_string()),
        ("Failed", counts.failed.to_string()),
        ("Completed at", completed.completed_at.to_rfc3339()),
    ];
    let summary = format!(
        ":mailbox_with_mail: Campaign `{}` completed: {} of {} delivered, {} bounced, {} failed",
        completed.campaign_id, counts.delivered, completed.size, counts.bounced, counts.failed
    );
    facts_message(subject, summary, "Campaign completed", &facts)
}

/// A dead-letter threshold was crossed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterAlert {
    pub rule: String,
    pub threshold: u64,
    pub window_secs: u64,
    pub window_start: Timestamp,
    /// The dead letter that crossed it: its original subject and reason.
    pub subject: String,
    pub reason: String,
}

pub fn dead_letters(alert: &DeadLetterAlert) -> Message {
    let subject = format!(
        "[hookmesh] More than {} dead letters within {} s",
        alert.threshold, alert.window_secs
    );
    let facts = [
        ("Rule", alert.rule.clone()),
        (
            "Threshold",
            format!(
                "more than {} within {} s",
                alert.threshold, alert.window_secs
            ),
        ),
        ("Window from", alert.window_start.to_rfc3339()),
        ("Latest subject", alert.subject.clone()),
        ("Latest reason", alert.reason.clone()),
        (
            "Inspect",
            "hookmesh dlq list; replay with hookmesh dlq replay".to_owned(),
        ),
    ];
    let summary = format!(
        ":warning: More than {} dead letters within {} s (latest on {}: {})",
        alert.threshold, alert.window_secs, alert.subject, alert.reason
    );
    facts_message(subject, summary, "Dead letters", &facts)
}

/// A message that is a title and a list of facts.
fn facts_message(
    subject: String,
    summary: String,
    title: &str,
    facts: &[(&str, String)],
) -> Message {
    let mut text = format!("{summary}\n\n");
    let mut body = format!("<h2>{}</h2><table>", escape(title));
    for (name, value) in facts {
        let _ = writeln!(text, "{name}: {value}");
        let _ = write!(
            body,
            "<tr><th style=\"text-align:left;padding-right:12px\">{}</th><td>{}</td></tr>",
            escape(name),
            escape(value)
        );
    }
    body.push_str("</table>");
    let fields: Vec<Value> = facts
        .iter()
        .take(10) // Block Kit's limit per section
        .map(|(name, value)| json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", mrkdwn(value))}))
        .collect();
    Message {
        subject,
        text,
        html: html_page(title, &body),
        blocks: vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": title}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(&summary)}, "fields": fields}),
        ],
    }
}

#[cfg(test)]
mod tests {
    use hookmesh_contracts::sweep::StrategyType;

    use super::*;

    fn result(fast: u32, slow: u32, score: f64) -> SweepResult {
        SweepResult {
            ticker: "BTC-USD".to_owned(),
            strategy_type: StrategyType::Sma,
            fast_period: fast,
            slow_period: slow,
            score,
            sharpe_ratio: 1.5,
            sortino_ratio: 2.1,
            total_return_pct: 42.0,
            annualized_return: 12.5,
            max_drawdown_pct: -8.2,
            win_rate_pct: 55.0,
            profit_factor: 1.8,
            total_trades: 64,
            trades_per_month: 5.3,
            avg_trade_duration: "5.2 days".to_owned(),
        }
    }

    fn view(kind: NotificationKind) -> SweepView {
        SweepView {
            job_id: "job_1".to_owned(),
            tenant: "acme".to_owned(),
            kind,
            ticker: "BTC-USD".to_owned(),
            strategy: "SMA".to_owned(),
            duration_seconds: Some(127.0),
            combinations: Some(8),
            results: (0..12)
                .map(|i| result(10 + i, 30 + i, 3.0 - f64::from(i) / 10.0))
                .collect(),
            reason: None,
            finished_at: Timestamp::parse_rfc3339("2025-01-27T10:32:52Z").unwrap(),
        }
    }

    #[test]
    fn a_completed_sweep_shows_its_facts_best_parameters_and_top_results() {
        let message = sweep(
            &view(NotificationKind::SweepCompleted),
            "https://mesh.example.com/",
        );
        assert_eq!(
            message.subject,
            "[hookmesh] Sweep COMPLETED: BTC-USD SMA (job_1)"
        );
        for part in [&message.text, &message.html] {
            assert!(part.contains("Best parameters"), "{part}");
            assert!(part.contains("fast 10 / slow 30"), "{part}");
            assert!(part.contains("2 min 7 s"), "{part}");
            assert!(
                part.contains("https://mesh.example.com/ui/pipelines/job_1"),
                "{part}"
            );
            assert!(
                part.contains("https://mesh.example.com/api/pipelines/job_1"),
                "{part}"
            );
            assert!(part.contains("Top 10 of 12 results"), "{part}");
            assert!(part.contains("5.2 days"), "{part}");
        }
        // Ten rows: fast 10-19 shown, 20 and 21 not.
        assert!(message.text.contains("\n  19  "), "{}", message.text);
        assert!(!message.text.contains("\n  20  "), "{}", message.text);
        assert_eq!(message.html.matches("<tr><td").count(), 10);
        assert_eq!(message.blocks[0]["type"], "header");
        assert!(
            message.blocks[2]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with("```")
        );
    }

    #[test]
    fn a_failed_or_timed_out_sweep_shows_its_reason_escaped() {
        let mut failed = view(NotificationKind::SweepFailed);
        failed.reason = Some("Insufficient <historical> data & more".to_owned());
        let message = sweep(&failed, "http://127.0.0.1:8080");
        assert!(
            message
                .text
                .contains("Reason: Insufficient <historical> data & more")
        );
        assert!(
            message
                .html
                .contains("Insufficient &lt;historical&gt; data &amp; more")
        );
        assert!(!message.html.contains("<historical>"));
        assert!(!message.text.contains("Top "));
        let mut timed_out = failed;
        timed_out.kind = NotificationKind::SweepTimedOut;
        assert!(sweep(&timed_out, "http://x").subject.contains("TIMED OUT"));
    }

    #[test]
    fn html_escaping_covers_every_special_character() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
