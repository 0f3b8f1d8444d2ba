//! A job's rules, free of I/O: what each message leads to given the job as
//! stored, when to try again, and what to record. The handlers only carry
//! these decisions out.

use std::time::Duration;

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::sweep::{SweepCallback, SweepOutcome};
use hookmesh_contracts::sweep_jobs::{JobMetrics, JobStatus};

/// The delay before the next attempt, when the `delivered`-th attempt
/// failed; `None` once every attempt `delays` allows has been made
/// (`delays.len() + 1` in all). With 000's `[2 s, 4 s, 8 s]`: 2 s after the
/// first failure, 4 s, 8 s, then give up.
pub fn next_attempt(delays: &[Duration], delivered: u64) -> Option<Duration> {
    let index = usize::try_from(delivered.max(1) - 1).ok()?;
    delays.get(index).copied()
}

/// What a sweep request leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerStep {
    /// The sweep was submitted already, or the job is over: nothing to do.
    Settled,
    /// Health-check the Trading API and submit the sweep.
    Submit,
}

pub fn trigger_step(status: JobStatus, trading_job_id: Option<&str>) -> TriggerStep {
    if status.is_final() || trading_job_id.is_some() {
        TriggerStep::Settled
    } else {
        TriggerStep::Submit
    }
}

/// What a callback leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackStep {
    /// The job is over: a repeated or late callback changes nothing.
    Ignore,
    /// Fetch the results of this run, store them, complete the job.
    Complete { sweep_run_id: String },
    /// Fail the job with this message.
    Fail { message: String },
}

/// A job that is still QUEUED may complete: a fast sweep's callback can
/// arrive before the worker has recorded the submission.
pub fn callback_step(status: JobStatus, callback: &SweepCallback) -> CallbackStep {
    if status.is_final() {
        return CallbackStep::Ignore;
    }
    match (callback.status, callback.sweep_run_id()) {
        (SweepOutcome::Completed, Some(run)) => CallbackStep::Complete {
            sweep_run_id: run.to_owned(),
        },
        (SweepOutcome::Completed, None) => CallbackStep::Fail {
            message: "The Trading API reported completion without a sweep_run_id".to_owned(),
        },
        (SweepOutcome::Failed, _) => CallbackStep::Fail {
            message: callback
                .error_message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| {
                    "The Trading API reported the sweep failed, without a message".to_owned()
                }),
        },
    }
}

/// What a deadline reminder leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadlineStep {
    /// The job is over (its callback came): forget the reminder.
    Ignore,
    /// Not due yet: look again after this long.
    Wait(Duration),
    /// Due, and still no outcome: ask the Trading API.
    Poll,
}

pub fn deadline_step(status: JobStatus, deadline: Timestamp, now: Timestamp) -> DeadlineStep {
    if status.is_final() {
        return DeadlineStep::Ignore;
    }
    let remaining = now.seconds_until(deadline);
    if remaining > 0.0 {
        DeadlineStep::Wait(Duration::from_secs_f64(remaining))
    } else {
        DeadlineStep::Poll
    }
}

/// A sweep's state as the Trading API reports it (the first event of its
/// SSE stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteState {
    Running { percent: Option<u32> },
    Completed { sweep_run_id: String },
    Failed { message: String },
}

/// How the reason of a job that timed out begins (the notifier tells
/// timeouts from other failures by it).
pub const NO_CALLBACK: &str = "No callback within";

/// What a poll after the deadline leads to: the callback that never came is
/// replaced by what the Trading API says now.
pub fn after_poll(remote: RemoteState, timeout: Duration) -> CallbackStep {
    let waited = humanize(timeout);
    match remote {
        RemoteState::Completed { sweep_run_id } => CallbackStep::Complete { sweep_run_id },
        RemoteState::Failed { message } => CallbackStep::Fail { message },
        RemoteState::Running { percent } => CallbackStep::Fail {
            message: match percent {
                Some(percent) => format!(
                    "{NO_CALLBACK} {waited}; the Trading API reports the sweep still running ({percent}% done)"
                ),
                None => format!(
                    "{NO_CALLBACK} {waited}; the Trading API reports the sweep still running"
                ),
            },
        },
    }
}

/// 003's metrics: the Trading API's own figures when the callback has them,
/// else the time since submission and the rows returned.
pub fn job_metrics(
    callback: Option<&SweepCallback>,
    started: Option<Timestamp>,
    now: Timestamp,
    results: usize,
) -> JobMetrics {
    let reported = callback.and_then(|c| c.result_data.as_ref());
    JobMetrics {
        duration_seconds: reported
            .map(|d| d.execution_time_seconds)
            .or_else(|| started.map(|s| (s.seconds_until(now) * 100.0).round() / 100.0))
            .unwrap_or(0.0),
        combinations_tested: reported.map_or(results as u64, |d| d.total_combinations),
    }
}

/// `1h`, `90s`, `2m30s`: a duration as people write it.
pub fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if s > 0 {
        text.push_str(&format!("{s}s"));
    }
    text
}

#[cfg(test)]
mod tests {
    use hookmesh_contracts::EventData as _;
    use serde_json::json;

    use super::*;

    fn callback(body: serde_json::Value) -> SweepCallback {
        SweepCallback::parse(&body).unwrap()
    }

    fn completed() -> SweepCallback {
        callback(json!({
            "event_type": "sweep.completed", "job_id": "sweep_1", "sweep_run_id": "run_abc",
            "status": "completed", "ticker": "BTC-USD",
            "result_data": {"sweep_run_id": "run_abc", "total_combinations": 8,
                            "execution_time_seconds": 127, "completed_at": "2025-01-27T10:32:52Z"},
            "timestamp": "2025-01-27T10:32:52Z"
        }))
    }

    #[test]
    fn attempts_follow_the_000_schedule_then_stop() {
        let delays = [2, 4, 8].map(Duration::from_secs);
        let schedule: Vec<_> = (1..=5).map(|n| next_attempt(&delays, n)).collect();
        assert_eq!(
            schedule,
            [
                Some(delays[0]),
                Some(delays[1]),
                Some(delays[2]),
                None,
                None
            ]
        );
        assert_eq!(next_attempt(&[], 1), None);
    }

    #[test]
    fn a_request_is_submitted_once() {
        assert_eq!(trigger_step(JobStatus::Queued, None), TriggerStep::Submit);
        assert_eq!(
            trigger_step(JobStatus::Queued, Some("sweep_1")),
            TriggerStep::Settled
        );
        assert_eq!(
            trigger_step(JobStatus::Completed, None),
            TriggerStep::Settled
        );
        assert_eq!(trigger_step(JobStatus::Failed, None), TriggerStep::Settled);
    }

    #[test]
    fn callbacks_apply_until_the_job_is_over() {
        let done = completed();
        let complete = CallbackStep::Complete {
            sweep_run_id: "run_abc".to_owned(),
        };
        assert_eq!(callback_step(JobStatus::Running, &done), complete);
        // Before the submission was recorded: still applied, never lost.
        assert_eq!(callback_step(JobStatus::Queued, &done), complete);
        assert_eq!(
            callback_step(JobStatus::Completed, &done),
            CallbackStep::Ignore
        );
        assert_eq!(
            callback_step(JobStatus::Failed, &done),
            CallbackStep::Ignore
        );

        let failed = callback(json!({
            "event_type": "sweep.failed", "job_id": "sweep_1", "status": "failed",
            "ticker": "BTC-USD", "error_message": "Insufficient historical data for ticker BTC-USD",
            "timestamp": "2025-01-27T10:31:30Z"
        }));
        assert_eq!(
            callback_step(JobStatus::Running, &failed),
            CallbackStep::Fail {
                message: "Insufficient historical data for ticker BTC-USD".to_owned()
            }
        );
    }

    #[test]
    fn deadlines_wait_then_poll_unless_the_job_is_over() {
        let deadline = Timestamp::parse_rfc3339("2025-01-27T11:30:00Z").unwrap();
        let before = Timestamp::parse_rfc3339("2025-01-27T11:29:00Z").unwrap();
        let after = Timestamp::parse_rfc3339("2025-01-27T11:30:01Z").unwrap();
        assert_eq!(
            deadline_step(JobStatus::Running, deadline, before),
            DeadlineStep::Wait(Duration::from_secs(60))
        );
        assert_eq!(
            deadline_step(JobStatus::Running, deadline, after),
            DeadlineStep::Poll
        );
        assert_eq!(
            deadline_step(JobStatus::Completed, deadline, after),
            DeadlineStep::Ignore
        );
    }

    #[test]
    fn a_poll_completes_fails_or_times_the_job_out() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            after_poll(
                RemoteState::Completed {
                    sweep_run_id: "run_1".to_owned()
                },
                hour
            ),
            CallbackStep::Complete {
                sweep_run_id: "run_1".to_owned()
            }
        );
        assert_eq!(
            after_poll(RemoteState::Running { percent: Some(40) }, hour),
            CallbackStep::Fail {
                message: "No callback within 1h; the Trading API reports the sweep still running (40% done)".to_owned()
            }
        );
    }

    #[test]
    fn metrics_prefer_the_trading_apis_figures() {
        let now = Timestamp::parse_rfc3339("2025-01-27T10:33:00Z").unwrap();
        let started = Timestamp::parse_rfc3339("2025-01-27T10:30:00Z").unwrap();
        let metrics = job_metrics(Some(&completed()), Some(started), now, 5);
        assert_eq!(
            metrics,
            JobMetrics {
                duration_seconds: 127.0,
                combinations_tested: 8
            }
        );
        let polled = job_metrics(None, Some(started), now, 5);
        assert_eq!(
            polled,
            JobMetrics {
                duration_seconds: 180.0,
                combinations_tested: 5
            }
        );
        assert_eq!(humanize(Duration::from_secs(5400)), "1h30m");
        assert_eq!(humanize(Duration::from_millis(300)), "300ms");
    }
}

/// A job's messages — its request, its callback (redelivered any number of
/// times) and deadline reminders — in any order end in the same state, and
/// the sweep is submitted at most once.
#[cfg(test)]
mod properties {
    use hookmesh_contracts::EventData as _;
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Message {
        Request,
        Callback(SweepCallback),
        /// A reminder arriving after the deadline, when the Trading API
        /// reports `remote`.
        LateReminder(RemoteState),
    }

    /// The job as the store keeps it, moved by the step functions as the
    /// handlers move it.
    #[derive(Debug, Clone, PartialEq)]
    struct Job {
        status: JobStatus,
        trading_job_id: Option<String>,
        submissions: u32,
        outcome: Option<CallbackStep>,
    }

    impl Job {
        fn settle(&mut self, step: CallbackStep) {
            match &step {
                CallbackStep::Ignore => return,
                CallbackStep::Complete { .. } => self.status = JobStatus::Completed,
                CallbackStep::Fail { .. } => self.status = JobStatus::Failed,
            }
            self.outcome = Some(step);
        }

        fn receive(&mut self, message: &Message) {
            match message {
                Message::Request => {
                    if trigger_step(self.status, self.trading_job_id.as_deref())
                        == TriggerStep::Submit
                    {
                        self.submissions += 1;
                        self.trading_job_id = Some("sweep_1".to_owned());
                        self.status = JobStatus::Running;
                    }
                }
                Message::Callback(callback) => self.settle(callback_step(self.status, callback)),
                Message::LateReminder(remote) => {
                    let deadline = Timestamp::from_unix_millis(1_700_000_000_000).unwrap();
                    let now = Timestamp::from_unix_millis(1_700_000_100_000).unwrap();
                    if deadline_step(self.status, deadline, now) == DeadlineStep::Poll {
                        self.settle(after_poll(remote.clone(), Duration::from_secs(60)));
                    }
                }
            }
        }
    }

    fn callback(completed: bool) -> SweepCallback {
        let body = if completed {
            serde_json::json!({
                "event_type": "sweep.completed", "job_id": "sweep_1", "sweep_run_id": "run_abc",
                "status": "completed", "ticker": "BTC-USD", "timestamp": "2025-01-27T10:32:52Z"
            })
        } else {
            serde_json::json!({
                "event_type": "sweep.failed", "job_id": "sweep_1", "status": "failed",
                "error_message": "no data", "timestamp": "2025-01-27T10:32:52Z"
            })
        };
        SweepCallback::parse(&body).unwrap()
    }

    /// The request and one callback, redelivered and shuffled; reminders
    /// only after the callback (the worker schedules one per submission,
    /// and one that polls first settles the job with what the Trading API
    /// says, which is the callback's outcome).
    fn messages() -> impl Strategy<Value = (bool, Vec<Message>)> {
        (any::<bool>(), 1usize..4, 1usize..4).prop_flat_map(|(completed, requests, callbacks)| {
            let mut all = vec![Message::Request; requests];
            all.extend(std::iter::repeat_n(
                Message::Callback(callback(completed)),
                callbacks,
            ));
            (Just(completed), Just(all).prop_shuffle())
        })
    }

    proptest! {
        #[test]
        fn any_order_and_duplication_ends_in_the_same_state((completed, mut messages) in messages()) {
            let remote = if completed {
                RemoteState::Completed { sweep_run_id: "run_abc".to_owned() }
            } else {
                RemoteState::Failed { message: "no data".to_owned() }
            };
            messages.push(Message::LateReminder(remote));
            let mut job = Job { status: JobStatus::Queued, trading_job_id: None, submissions: 0, outcome: None };
            for message in &messages {
                job.receive(message);
            }
            let expected = if completed { JobStatus::Completed } else { JobStatus::Failed };
            prop_assert_eq!(job.status, expected);
            prop_assert!(job.submissions <= 1, "submitted {} times", job.submissions);
            prop_assert_eq!(job.outcome, Some(callback_step(JobStatus::Running, &callback(completed))));
        }
    }
}
