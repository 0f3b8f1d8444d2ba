//! Per-source rate limits (429 with `Retry-After`).
//!
//! One generic cell rate algorithm (GCRA) cell per source, created at start
//! for every source the configuration names, so a request costs one atomic
//! compare-and-swap and no lock. A source may burst one second's worth.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Cell {
    /// Nanoseconds between requests at the sustained rate.
    interval: u64,
    /// How far ahead of now the theoretical arrival time may run (the burst).
    tolerance: u64,
    /// Theoretical arrival time, nanoseconds since `RateLimiter::epoch`.
    tat: AtomicU64,
}

/// Rate limits keyed by source (`buddy`, `github`, `api:<tenant>`,
/// `providers:<name>`); sources without a limit are unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    epoch: Instant,
    cells: HashMap<String, Cell>,
}

impl RateLimiter {
    /// `limits`: requests per second per source; 0 means unlimited.
    pub fn new(limits: impl IntoIterator<Item = (String, u32)>) -> Self {
        let cells = limits
            .into_iter()
            .filter(|(_, per_second)| *per_second > 0)
            .map(|(source, per_second)| {
                let interval = 1_000_000_000 / u64::from(per_second);
                let cell = Cell {
                    interval,
                    tolerance: interval * (u64::from(per_second) - 1),
                    tat: AtomicU64::new(0),
                };
                (source, cell)
            })
            .collect();
        Self {
            epoch: Instant::now(),
            cells,
        }
    }

    /// Admits one request from `source`, or says how long until one would be.
    pub fn check(&self, source: &str) -> Result<(), Duration> {
        self.check_at(source, self.epoch.elapsed().as_nanos() as u64)
    }

    fn check_at(&self, source: &str, now: u64) -> Result<(), Duration> {
        let Some(cell) = self.cells.get(source) else {
            return Ok(());
        };
        let mut tat = cell.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > cell.tolerance {
                return Err(Duration::from_nanos(start - now - cell.tolerance));
            }
            match cell.tat.compare_exchange_weak(
                tat,
                start + cell.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_seconds_worth_passes_then_the_rate_holds() {
        let limiter = RateLimiter::new([("buddy".to_owned(), 10)]);
        for _ in 0..10 {
            assert_eq!(limiter.check_at("buddy", 0), Ok(()));
        }
        let wait = limiter.check_at("buddy", 0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // 100 ms later exactly one more request fits.
        assert_eq!(limiter.check_at("buddy", 100_000_000), Ok(()));
        assert!(limiter.check_at("buddy", 100_000_000).is_err());
    }

    #[test]
    fn unlisted_and_zero_rate_sources_are_unlimited() {
        let limiter = RateLimiter::new([("api:acme".to_owned(), 0)]);
        for _ in 0..10_000 {
            assert_eq!(limiter.check_at("api:acme", 0), Ok(()));
            assert_eq!(limiter.check_at("github", 0), Ok(()));
        }
    }
}
