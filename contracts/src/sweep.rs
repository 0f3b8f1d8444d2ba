//! The trading sweep pipeline (seeds 000 and 003): the trigger a user posts,
//! the callback the Trading API posts when a sweep ends, and the best-results
//! rows it returns.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{EventData, SchemaId};
use crate::str_enum;
use crate::timestamp::Timestamp;
use crate::validation::{
    Object, StrEnum as _, ValidationErrors, any_number, array_of, index_path, integer, number,
    parse_object, read_object, string, text, timestamp, variant,
};

str_enum! {
    /// The moving-average crossover family a sweep backtests.
    pub enum StrategyType {
        /// Simple moving averages.
        Sma = "SMA",
        /// Exponential moving averages.
        Ema = "EMA",
        /// MACD line over its signal line.
        Macd = "MACD",
    }
}

str_enum! {
    /// A Trading API configuration preset.
    pub enum ConfigPath {
        Minimum = "minimum",
        Standard = "standard",
    }
}

/// `[min, max]` of a moving-average period. 003 bounds the first element
/// below by 1 and the second above by 500; hookmesh also requires
/// `min <= max`, which guarantees at least one combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodRange(pub u32, pub u32);

impl PeriodRange {
    pub fn min(self) -> u32 {
        self.0
    }

    pub fn max(self) -> u32 {
        self.1
    }

    /// The periods `min, min+step, …` not beyond `max`.
    pub fn periods(self, step: u32) -> impl Iterator<Item = u32> {
        (self.0..=self.1).step_by(step.max(1) as usize)
    }

    fn parse(value: &Value, path: &str, errors: &mut ValidationErrors) -> Option<Self> {
        let Some(items) = value.as_array().filter(|items| items.len() == 2) else {
            errors.push(path, "must be a [min, max] pair of integers");
            return None;
        };
        let mut read = |index: usize, min: i64, max: i64| {
            integer::<u32>(min, max)(&items[index])
                .map_err(|message| errors.push(index_path(path, index), message))
                .ok()
        };
        let (low, high) = (read(0, 1, i64::from(u32::MAX)), read(1, 0, 500));
        let (low, high) = (low?, high?);
        if low > high {
            errors.push(
                path,
                format!("min ({low}) must not be greater than max ({high})"),
            );
            return None;
        }
        Some(Self(low, high))
    }
}

impl JsonSchema for PeriodRange {
    fn schema_name() -> Cow<'static, str> {
        "PeriodRange".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "[min, max] of a moving-average period; min >= 1, max <= 500, min <= max",
            "type": "array",
            "prefixItems": [
                {"type": "integer", "minimum": 1},
                {"type": "integer", "maximum": 500}
            ],
            "items": false,
            "minItems": 2,
            "maxItems": 2
        })
    }
}

/// Body of `POST /api/pipelines/trigger` (003's TradingSweepTriggerSchema)
/// and payload of `sweeps.trigger`, with defaults applied.
///
/// Refinements: `fast_range[0] < slow_range[0]` and
/// `fast_range[1] < slow_range[1]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SweepTrigger {
    /// Trading pair symbol, e.g. `BTC-USD`.
    #[schemars(length(min = 3, max = 20))]
    pub ticker: String,
    /// Fast moving-average periods to test.
    pub fast_range: PeriodRange,
    /// Slow moving-average periods to test.
    pub slow_range: PeriodRange,
    /// Step between tested periods.
    #[schemars(range(min = 1, max = 50))]
    pub step: u32,
    /// Minimum trades for a backtest to count (default 50).
    #[schemars(range(min = 10, max = 1000))]
    #[serde(default = "default_min_trades")]
    pub min_trades: u32,
    /// Strategy family (default SMA).
    #[serde(default = "default_strategy")]
    pub strategy_type: StrategyType,
    /// Trading API configuration preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_path: Option<ConfigPath>,
}

fn default_min_trades() -> u32 {
    50
}

fn default_strategy() -> StrategyType {
    StrategyType::Sma
}

impl SweepTrigger {
    /// Every (fast, slow) pair the sweep tests: fast must be below slow.
    pub fn combinations(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.fast_range.periods(self.step).flat_map(move |fast| {
            self.slow_range
                .periods(self.step)
                .filter(move |slow| fast < *slow)
                .map(move |slow| (fast, slow))
        })
    }

    pub fn combination_count(&self) -> usize {
        self.combinations().count()
    }
}

impl EventData for SweepTrigger {
    const SCHEMA: SchemaId = SchemaId::new("sweep.trigger", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let ticker = o.required("ticker", string(3, 20));
            let fast_range = o.required_with("fast_range", PeriodRange::parse);
            let slow_range = o.required_with("slow_range", PeriodRange::parse);
            let step = o.required("step", integer(1, 50));
            let min_trades = o.optional("min_trades", integer(10, 1000));
            let strategy_type = o.optional("strategy_type", variant);
            let config_path = o.optional("config_path", variant);
            if let (Some(fast), Some(slow)) = (fast_range, slow_range) {
                o.refine(
                    "fast_range",
                    fast.min() < slow.min(),
                    "Fast range min must be less than slow range min",
                );
                o.refine(
                    "fast_range",
                    fast.max() < slow.max(),
                    "Fast range max must be less than slow range max",
                );
            }
            Some(SweepTrigger {
                ticker: ticker?,
                fast_range: fast_range?,
                slow_range: slow_range?,
                step: step?,
                min_trades: min_trades?.unwrap_or_else(default_min_trades),
                strategy_type: strategy_type?.unwrap_or_else(default_strategy),
                config_path: config_path?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        "sweep.triggered"
    }
}

str_enum! {
    /// The callback's `event_type`.
    pub enum SweepCallbackEvent {
        Completed = "sweep.completed",
        Failed = "sweep.failed",
    }
}

str_enum! {
    /// How a sweep ended.
    pub enum SweepOutcome {
        Completed = "completed",
        Failed = "failed",
    }
}

/// `result_data` of a completion callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SweepResultData {
    pub sweep_run_id: String,
    /// Combinations the Trading API tested.
    pub total_combinations: u64,
    pub execution_time_seconds: f64,
    pub completed_at: Timestamp,
}

/// The token that makes a sweep's callback URL unguessable:
/// lowercase hex HMAC-SHA256, keyed with the callback secret
/// (`HOOKMESH_CALLBACK_SECRET`), of `sweep-callback:<job id>`. The
/// sweep-worker puts it in the URL it gives the Trading API
/// (`/webhook/sweep-callback?job_id=<job>&token=<token>`); the gateway
/// recomputes and compares it in constant time.
pub fn callback_token(secret: &[u8], job_id: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, format!("sweep-callback:{job_id}").as_bytes());
    crate::hex::encode(tag.as_ref())
}

/// Body the Trading API posts to a sweep's callback URL (003's
/// TradingSweepCallbackSchema, a superset of 000's webhook schema), and
/// payload of `sweeps.callback`; the envelope's `subject` is the hookmesh job.
///
/// Beyond 003: a `completed` callback must name its `sweep_run_id` (top level
/// or in `result_data`), since the results cannot be fetched without it.
/// 003's schema requires `ticker`, but its own failure example has none; a
/// failure names its job, which knows its ticker, so only `completed`
/// callbacks must carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SweepCallback {
    pub event_type: SweepCallbackEvent,
    /// The Trading API's own job id.
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_run_id: Option<String>,
    pub status: SweepOutcome,
    /// Required when `status` is `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_data: Option<SweepResultData>,
    pub timestamp: Timestamp,
}

impl SweepCallback {
    /// The run whose results to fetch, from the top level or `result_data`.
    pub fn sweep_run_id(&self) -> Option<&str> {
        self.sweep_run_id
            .as_deref()
            .or_else(|| self.result_data.as_ref().map(|d| d.sweep_run_id.as_str()))
    }
}

impl EventData for SweepCallback {
    const SCHEMA: SchemaId = SchemaId::new("sweep.callback", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let event_type = o.required("event_type", variant);
            let job_id = o.required("job_id", string(1, 256));
            let sweep_run_id = o.optional("sweep_run_id", string(1, 256));
            let status = o.required("status", variant);
            let ticker = o.optional("ticker", string(1, 64));
            let error_message = o.optional("error_message", text(10_000));
            let result_data = o.optional_with("result_data", |value, path, errors| {
                read_object(value, path, errors, |d| {
                    let sweep_run_id = d.required("sweep_run_id", string(1, 256));
                    let total_combinations = d.required("total_combinations", integer(0, i64::MAX));
                    let execution_time_seconds =
                        d.required("execution_time_seconds", number(0.0, f64::MAX));
                    let completed_at = d.required("completed_at", timestamp);
                    Some(SweepResultData {
                        sweep_run_id: sweep_run_id?,
                        total_combinations: total_combinations?,
                        execution_time_seconds: execution_time_seconds?,
                        completed_at: completed_at?,
                    })
                })
            });
            let timestamp = o.required("timestamp", timestamp);
            if status == Some(SweepOutcome::Completed)
                && matches!(sweep_run_id, Some(None))
                && matches!(result_data, Some(None))
            {
                o.refine(
                    "sweep_run_id",
                    false,
                    "is required when status is \"completed\" (top level or in result_data)",
                );
            }
            if status == Some(SweepOutcome::Completed) && matches!(ticker, Some(None)) {
                o.refine("ticker", false, "is required when status is \"completed\"");
            }
            Some(SweepCallback {
                event_type: event_type?,
                job_id: job_id?,
                sweep_run_id: sweep_run_id?,
                status: status?,
                ticker: ticker?,
                error_message: error_message?,
                result_data: result_data?,
                timestamp: timestamp?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        match self.status {
            SweepOutcome::Completed => SweepCallbackEvent::Completed.as_str(),
            SweepOutcome::Failed => SweepCallbackEvent::Failed.as_str(),
        }
    }
}

/// One backtest of a sweep, as `GET /api/v1/sweeps/{id}/best` returns it
/// (003's TradingSweepResult fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SweepResult {
    pub ticker: String,
    pub strategy_type: StrategyType,
    pub fast_period: u32,
    pub slow_period: u32,
    /// Composite ranking metric; results are sorted by it, descending.
    pub score: f64,
    pub sharpe_ratio: f64,
    pub sortino_ratio: f64,
    pub total_return_pct: f64,
    pub annualized_return: f64,
    /// Worst peak-to-trough loss, as a negative percentage.
    pub max_drawdown_pct: f64,
    pub win_rate_pct: f64,
    pub profit_factor: f64,
    pub total_trades: u32,
    pub trades_per_month: f64,
    /// Mean holding time, e.g. `5.2 days`.
    pub avg_trade_duration: String,
}

impl SweepResult {
    pub(crate) fn read(o: &mut Object<'_>) -> Option<Self> {
        let ticker = o.required("ticker", string(1, 64));
        let strategy_type = o.required("strategy_type", variant);
        let fast_period = o.required("fast_period", integer(1, 100_000));
        let slow_period = o.required("slow_period", integer(1, 100_000));
        let mut metric = |key: &str| o.required(key, any_number);
        let (score, sharpe, sortino, total_return, annualized, drawdown, win_rate, profit_factor) = (
            metric("score"),
            metric("sharpe_ratio"),
            metric("sortino_ratio"),
            metric("total_return_pct"),
            metric("annualized_return"),
            metric("max_drawdown_pct"),
            metric("win_rate_pct"),
            metric("profit_factor"),
        );
        let total_trades = o.required("total_trades", integer(0, i64::from(u32::MAX)));
        let trades_per_month = o.required("trades_per_month", any_number);
        let avg_trade_duration = o.required("avg_trade_duration", string(0, 64));
        Some(SweepResult {
            ticker: ticker?,
            strategy_type: strategy_type?,
            fast_period: fast_period?,
            slow_period: slow_period?,
            score: score?,
            sharpe_ratio: sharpe?,
            sortino_ratio: sortino?,
            total_return_pct: total_return?,
            annualized_return: annualized?,
            max_drawdown_pct: drawdown?,
            win_rate_pct: win_rate?,
            profit_factor: profit_factor?,
            total_trades: total_trades?,
            trades_per_month: trades_per_month?,
            avg_trade_duration: avg_trade_duration?,
        })
    }
}

/// Response of `GET /api/v1/sweeps/{sweep_run_id}/best?ticker=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BestResults {
    pub sweep_run_id: String,
    pub ticker: String,
    /// Sorted by `score`, best first.
    pub results: Vec<SweepResult>,
    pub total_results: u32,
    pub returned: u32,
    pub query_timestamp: Timestamp,
}

impl BestResults {
    pub const SCHEMA: SchemaId = SchemaId::new("sweep.best-results", 1);

    /// Reads a Trading API response, reporting every invalid field.
    pub fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let sweep_run_id = o.required("sweep_run_id", string(1, 256));
            let ticker = o.required("ticker", string(1, 64));
            let results = o.required_with("results", |value, path, errors| {
                array_of(value, path, errors, 0, 1_000_000, |value, path, errors| {
                    read_object(value, path, errors, SweepResult::read)
                })
            });
            let total_results = o.required("total_results", integer(0, i64::from(u32::MAX)));
            let returned = o.required("returned", integer(0, i64::from(u32::MAX)));
            let query_timestamp = o.required("query_timestamp", timestamp);
            Some(BestResults {
                sweep_run_id: sweep_run_id?,
                ticker: ticker?,
                results: results?,
                total_results: total_results?,
                returned: returned?,
                query_timestamp: query_timestamp?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn example() -> Value {
        json!({
            "ticker": "BTC-USD",
            "fast_range": [10, 20],
            "slow_range": [20, 30],
            "step": 5,
            "min_trades": 50,
            "strategy_type": "SMA"
        })
    }

    fn fields_of(errors: &ValidationErrors) -> Vec<&str> {
        errors.errors().iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn the_003_example_has_eight_combinations() {
        let trigger = SweepTrigger::parse(&example()).unwrap();
        let pairs: Vec<_> = trigger.combinations().collect();
        assert_eq!(
            pairs,
            [
                (10, 20),
                (10, 25),
                (10, 30),
                (15, 20),
                (15, 25),
                (15, 30),
                (20, 25),
                (20, 30)
            ]
        );
        assert_eq!(trigger.combination_count(), 8);
    }

    #[test]
    fn defaults_apply_when_optional_fields_are_absent() {
        let trigger = SweepTrigger::parse(&json!({
            "ticker": "ETH-USD", "fast_range": [5, 10], "slow_range": [20, 40], "step": 5
        }))
        .unwrap();
        assert_eq!(trigger.min_trades, 50);
        assert_eq!(trigger.strategy_type, StrategyType::Sma);
        assert_eq!(trigger.config_path, None);
    }

    #[test]
    fn every_bound_is_enforced_and_named() {
        let cases = [
            ("ticker", json!("BT")),
            ("ticker", json!("X".repeat(21))),
            ("ticker", json!(42)),
            ("step", json!(0)),
            ("step", json!(51)),
            ("step", json!(2.5)),
            ("min_trades", json!(9)),
            ("min_trades", json!(1001)),
            ("strategy_type", json!("RSI")),
            ("config_path", json!("maximum")),
        ];
        for (field, value) in cases {
            let mut body = example();
            body[field] = value.clone();
            let errors = SweepTrigger::parse(&body).unwrap_err();
            assert_eq!(fields_of(&errors), [field], "{field} = {value}");
        }
    }

    #[test]
    fn tuple_elements_are_bounded_individually() {
        let mut body = example();
        body["fast_range"] = json!([0, 20]);
        body["slow_range"] = json!([20, 501]);
        let errors = SweepTrigger::parse(&body).unwrap_err();
        assert_eq!(fields_of(&errors), ["fast_range[0]", "slow_range[1]"]);
    }

    #[test]
    fn both_refinements_are_enforced() {
        let mut body = example();
        body["fast_range"] = json!([20, 25]);
        body["slow_range"] = json!([20, 30]);
        let errors = SweepTrigger::parse(&body).unwrap_err();
        assert_eq!(
            errors.errors()[0].message,
            "Fast range min must be less than slow range min"
        );

        let mut body = example();
        body["fast_range"] = json!([10, 30]);
        body["slow_range"] = json!([20, 30]);
        let errors = SweepTrigger::parse(&body).unwrap_err();
        assert_eq!(
            errors.errors()[0].message,
            "Fast range max must be less than slow range max"
        );
    }

    #[test]
    fn a_reversed_range_is_refused() {
        let mut body = example();
        body["slow_range"] = json!([40, 30]);
        let errors = SweepTrigger::parse(&body).unwrap_err();
        assert_eq!(fields_of(&errors), ["slow_range"]);
    }

    #[test]
    fn many_faults_are_reported_together() {
        let errors = SweepTrigger::parse(&json!({"ticker": 1, "step": "x"})).unwrap_err();
        assert_eq!(
            fields_of(&errors),
            ["ticker", "fast_range", "slow_range", "step"]
        );
    }

    #[test]
    fn the_003_callbacks_parse() {
        let completed = SweepCallback::parse(&json!({
            "event_type": "sweep.completed",
            "job_id": "sweep_20250127_103045_btcusd",
            "sweep_run_id": "run_abc123xyz789",
            "status": "completed",
            "ticker": "BTC-USD",
            "result_data": {
                "sweep_run_id": "run_abc123xyz789",
                "total_combinations": 8,
                "execution_time_seconds": 127,
                "completed_at": "2025-01-27T10:32:52Z"
            },
            "timestamp": "2025-01-27T10:32:52Z"
        }))
        .unwrap();
        assert_eq!(completed.sweep_run_id(), Some("run_abc123xyz789"));
        assert_eq!(completed.event_type(), "sweep.completed");

        // 003's failure example, as written: no ticker.
        let failed = SweepCallback::parse(&json!({
            "event_type": "sweep.failed",
            "job_id": "sweep_20250127_103045_btcusd",
            "status": "failed",
            "error_message": "Insufficient historical data for ticker BTC-USD",
            "timestamp": "2025-01-27T10:31:30Z"
        }))
        .unwrap();
        assert_eq!(failed.status, SweepOutcome::Failed);
        assert_eq!(failed.sweep_run_id(), None);
        assert_eq!(failed.ticker, None);
    }

    #[test]
    fn a_completed_callback_without_a_ticker_is_refused() {
        let errors = SweepCallback::parse(&json!({
            "event_type": "sweep.completed",
            "job_id": "j",
            "sweep_run_id": "run_abc123xyz789",
            "status": "completed",
            "timestamp": "2025-01-27T10:32:52Z"
        }))
        .unwrap_err();
        assert_eq!(fields_of(&errors), ["ticker"]);
    }

    #[test]
    fn a_completed_callback_without_a_run_id_is_refused() {
        let errors = SweepCallback::parse(&json!({
            "event_type": "sweep.completed",
            "job_id": "j",
            "status": "completed",
            "ticker": "BTC-USD",
            "timestamp": "2025-01-27T10:32:52Z"
        }))
        .unwrap_err();
        assert_eq!(fields_of(&errors), ["sweep_run_id"]);
    }

    #[test]
    fn callback_tokens_depend_on_secret_and_job() {
        let token = callback_token(b"secret", "job_1");
        assert_eq!(token.len(), 64);
        assert_eq!(token, callback_token(b"secret", "job_1"));
        assert_ne!(token, callback_token(b"secret", "job_2"));
        assert_ne!(token, callback_token(b"other", "job_1"));
    }

    #[test]
    fn best_results_parse_the_003_response() {
        let row = json!({
            "ticker": "BTC-USD", "strategy_type": "SMA", "fast_period": 15, "slow_period": 30,
            "score": 2.47, "sharpe_ratio": 1.82, "sortino_ratio": 2.15, "total_return_pct": 145.3,
            "annualized_return": 32.4, "max_drawdown_pct": -18.7, "win_rate_pct": 58.3,
            "profit_factor": 2.1, "total_trades": 87, "trades_per_month": 4.2,
            "avg_trade_duration": "5.2 days"
        });
        let best = BestResults::parse(&json!({
            "sweep_run_id": "run_abc123xyz789", "ticker": "BTC-USD", "results": [row],
            "total_results": 8, "returned": 1, "query_timestamp": "2025-01-27T10:33:15Z"
        }))
        .unwrap();
        assert_eq!(best.results[0].fast_period, 15);
        assert_eq!(best.results[0].avg_trade_duration, "5.2 days");
    }
}
