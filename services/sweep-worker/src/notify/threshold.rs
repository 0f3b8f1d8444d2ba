//! Dead-letter threshold rules (seed 001's "DLQ > 10"): count dead letters
//! per rule in windows aligned to the epoch, and fire once when a
//! window's count first exceeds the threshold. Aligned windows make every
//! replica, and a restarted one recounting from the stream, name the same
//! window, so the firing's notification id is the same and JetStream's
//! duplicate window keeps one.

use std::time::Duration;

use hookmesh_contracts::Timestamp;

use super::rules::Threshold;

/// One rule's count in its current window.
#[derive(Debug, Clone)]
struct Window {
    rule: String,
    threshold: Threshold,
    start_ms: i64,
    count: u64,
}

/// A rule's threshold was crossed in the window starting at `window_start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub rule: String,
    pub threshold: Threshold,
    pub window_start: Timestamp,
}

/// The counts of every threshold rule.
#[derive(Debug, Clone)]
pub struct DeadLetterCounter {
    windows: Vec<Window>,
}

fn window_ms(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1)
}

impl DeadLetterCounter {
    pub fn new<'a>(rules: impl IntoIterator<Item = (&'a str, Threshold)>) -> Self {
        Self {
            windows: rules
                .into_iter()
                .map(|(rule, threshold)| Window {
                    rule: rule.to_owned(),
                    threshold,
                    start_ms: i64::MIN,
                    count: 0,
                })
                .collect(),
        }
    }

    /// Where counting must start to see all of every rule's current
    /// window: the earliest window start at `now`.
    pub fn replay_from(&self, now: Timestamp) -> Timestamp {
        let now_ms = now.unix_millis();
        let start = self
            .windows
            .iter()
            .map(|w| now_ms - now_ms.rem_euclid(window_ms(w.threshold.window)))
            .min()
            .unwrap_or(now_ms);
        Timestamp::from_unix_millis(start).unwrap_or(now)
    }

    /// Counts a dead letter stored at `at`; the rules it made fire.
    pub fn observe(&mut self, at: Timestamp) -> Vec<Firing> {
        let at_ms = at.unix_millis();
        let mut fired = Vec::new();
        for window in &mut self.windows {
            let length = window_ms(window.threshold.window);
            let start = at_ms - at_ms.rem_euclid(length);
            if start > window.start_ms {
                window.start_ms = start;
                window.count = 0;
            } else if start < window.start_ms {
                continue; // a window that is over
            }
            window.count += 1;
            if window.count == window.threshold.threshold + 1 {
                fired.push(Firing {
                    rule: window.rule.clone(),
                    threshold: window.threshold,
                    window_start: Timestamp::from_unix_millis(start).unwrap_or(at),
                });
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms).unwrap()
    }

    #[test]
    fn a_threshold_fires_once_per_window() {
        let threshold = Threshold {
            threshold: 3,
            window: Duration::from_secs(60),
        };
        let mut counter = DeadLetterCounter::new([("dlq", threshold)]);
        let base = 1_700_000_040_000; // a window starts here, the next 60 s on
        let fired: Vec<usize> = (0..10)
            .map(|i| counter.observe(at(base + i * 100)).len())
            .collect();
        // The fourth (more than 3) fires; none after it in the same window.
        assert_eq!(fired, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        // The next window counts afresh.
        let next = base + 60_000;
        let fired: Vec<Vec<Firing>> = (0..4).map(|i| counter.observe(at(next + i))).collect();
        assert_eq!(fired[3].len(), 1);
        assert_eq!(fired[3][0].window_start, at(next));
        // A straggler from the window before counts nowhere.
        assert!(counter.observe(at(base)).is_empty());
    }

    #[test]
    fn replay_starts_at_the_earliest_current_window() {
        let counter = DeadLetterCounter::new([
            (
                "a",
                Threshold {
                    threshold: 1,
                    window: Duration::from_secs(60),
                },
            ),
            (
                "b",
                Threshold {
                    threshold: 1,
                    window: Duration::from_secs(300),
                },
            ),
        ]);
        assert_eq!(
            counter.replay_from(at(1_700_000_123_456)),
            at(1_700_000_100_000)
        );
    }
}
