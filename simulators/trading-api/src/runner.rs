//! Running an accepted sweep: the backtests, progress events, the stored
//! results and the callback.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::sweep::{ConfigPath, StrategyType, SweepResult};
use serde_json::{Value, json};

use crate::backtest::backtest;
use crate::prices;
use crate::{Knobs, Run, SimEvent, State};

/// A validated sweep submission.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRequest {
    pub ticker: String,
    pub fast_range: (u32, u32),
    pub slow_range: (u32, u32),
    pub step: u32,
    pub min_trades: u32,
    pub strategy: StrategyType,
    pub config_path: Option<ConfigPath>,
    pub webhook_url: String,
}

impl SweepRequest {
    fn periods((low, high): (u32, u32), step: u32) -> impl Iterator<Item = u32> + Clone {
        (low..=high).step_by(step.max(1) as usize)
    }

    /// Every (fast, slow) pair, valid or not: 003's `parameters.combinations`.
    pub fn grid_size(&self) -> usize {
        Self::periods(self.fast_range, self.step).count()
            * Self::periods(self.slow_range, self.step).count()
    }

    /// The pairs backtested: fast below slow.
    pub fn combinations(&self) -> Vec<(u32, u32)> {
        let slow = Self::periods(self.slow_range, self.step);
        Self::periods(self.fast_range, self.step)
            .flat_map(|fast| {
                slow.clone()
                    .filter(move |slow| fast < *slow)
                    .map(move |slow| (fast, slow))
            })
            .collect()
    }
}

/// `count` random bytes as lowercase hex.
pub fn random_token(count: usize) -> String {
    let mut bytes = vec![0u8; count];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source works");
    hookmesh_contracts::hex::encode(&bytes)
}

/// 003's job id shape, `sweep_20250127_103045_btcusd`, with a random
/// suffix so that two sweeps in one second differ.
pub fn job_id(ticker: &str, at: Timestamp) -> String {
    let time = at.as_offset_date_time();
    let ticker: String = ticker
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!(
        "sweep_{:04}{:02}{:02}_{:02}{:02}{:02}_{ticker}_{}",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        random_token(3)
    )
}

/// How a sweep ended.
enum Ending {
    Completed { sweep_run_id: String, tested: usize },
    Failed(String),
}

/// Runs the sweep, then calls back (unless the knobs drop callbacks).
pub(crate) async fn run(state: Arc<State>, job_id: String, request: SweepRequest, knobs: Knobs) {
    let started = Timestamp::now();
    let ending = execute(&state, &job_id, &request, &knobs).await;
    let now = Timestamp::now();
    let callback = match &ending {
        Ending::Completed {
            sweep_run_id,
            tested,
        } => {
            state.emit(
                &job_id,
                SimEvent::Done {
                    done: true,
                    status: "completed",
                    sweep_run_id: sweep_run_id.clone(),
                },
            );
            json!({
                "event_type": "sweep.completed",
                "job_id": job_id,
                "sweep_run_id": sweep_run_id,
                "status": "completed",
                "ticker": request.ticker,
                "result_data": {
                    "sweep_run_id": sweep_run_id,
                    "total_combinations": tested,
                    "execution_time_seconds": (started.seconds_until(now) * 100.0).round() / 100.0,
                    "completed_at": now.to_rfc3339(),
                },
                "timestamp": now.to_rfc3339(),
            })
        }
        Ending::Failed(message) => {
            state.emit(
                &job_id,
                SimEvent::Error {
                    error: true,
                    message: message.clone(),
                    timestamp: now.to_rfc3339(),
                },
            );
            // 003's failure example, field for field: it carries no ticker.
            json!({
                "event_type": "sweep.failed",
                "job_id": job_id,
                "status": "failed",
                "error_message": message,
                "timestamp": now.to_rfc3339(),
            })
        }
    };
    if knobs.drop_callbacks {
        tracing::info!(job_id, "Sweep finished; its callback is dropped (knob).");
        return;
    }
    call_back(&state, &job_id, &request.webhook_url, &callback).await;
}

async fn execute(state: &State, job_id: &str, request: &SweepRequest, knobs: &Knobs) -> Ending {
    let run_time = Duration::from_millis(knobs.run_time_ms);
    let Some(listing) = prices::find(&request.ticker) else {
        tokio::time::sleep(run_time).await;
        return Ending::Failed(format!(
            "Insufficient historical data for ticker {}",
            request.ticker
        ));
    };
    let closes = prices::closes(listing);
    let combinations = request.combinations();
    let pause = run_time / u32::try_from(combinations.len().max(1)).unwrap_or(u32::MAX);
    let mut results: Vec<SweepResult> = Vec::with_capacity(combinations.len());
    for (done, (fast, slow)) in combinations.iter().enumerate() {
        let performance = backtest(request.strategy, *fast as usize, *slow as usize, &closes);
        if performance.total_trades >= request.min_trades {
            results.push(performance.into_result(listing.ticker, request.strategy, *fast, *slow));
        }
        tokio::time::sleep(pause).await;
        let done = done + 1;
        state.emit(
            job_id,
            SimEvent::Progress {
                percent: (done * 100 / combinations.len()) as u32,
                message: format!("Processing {done}/{}", combinations.len()),
                timestamp: Timestamp::now().to_rfc3339(),
            },
        );
    }
    if let Some(message) = &knobs.fail_with {
        return Ending::Failed(message.clone());
    }
    if results.is_empty() {
        return Ending::Failed(format!(
            "No parameter combination of {} reached min_trades ({})",
            request.ticker, request.min_trades
        ));
    }
    results.sort_by(|a, b| b.score.total_cmp(&a.score));
    let sweep_run_id = format!("run_{}", random_token(6));
    state.runs.lock().expect("runs lock").insert(
        sweep_run_id.clone(),
        Run {
            ticker: listing.ticker.to_owned(),
            results,
        },
    );
    Ending::Completed {
        sweep_run_id,
        tested: combinations.len(),
    }
}

/// Pauses between callback attempts, as webhook senders commonly retry.
const CALLBACK_RETRIES: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(15),
];

/// POSTs the callback, retrying on connection errors and 5xx/429 for about
/// half a minute; a refusal (4xx) is final.
async fn call_back(state: &State, job_id: &str, url: &str, body: &Value) {
    for attempt in 0..=CALLBACK_RETRIES.len() {
        match state.http.post(url).json(body).send().await {
            Ok(response) if response.status().is_success() => {
                state.callbacks.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    job_id,
                    status = response.status().as_u16(),
                    "Callback delivered."
                );
                return;
            }
            Ok(response)
                if response.status().is_client_error() && response.status().as_u16() != 429 =>
            {
                tracing::warn!(
                    job_id,
                    status = response.status().as_u16(),
                    "Callback refused; not retrying."
                );
                return;
            }
            Ok(response) => {
                tracing::warn!(
                    job_id,
                    status = response.status().as_u16(),
                    attempt,
                    "Callback failed."
                );
            }
            Err(error) => tracing::warn!(job_id, %error, attempt, "Callback failed."),
        }
        match CALLBACK_RETRIES.get(attempt) {
            Some(pause) => tokio::time::sleep(*pause).await,
            None => tracing::error!(job_id, "Callback given up after every attempt."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_have_003s_shape_and_differ() {
        let at = Timestamp::parse_rfc3339("2025-01-27T10:30:45Z").unwrap();
        let id = job_id("BTC-USD", at);
        assert!(id.starts_with("sweep_20250127_103045_btcusd_"), "{id}");
        assert_ne!(id, job_id("BTC-USD", at));
    }
}
