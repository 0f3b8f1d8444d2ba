//! Moving-average crossover backtests and 003's metrics.
//!
//! Long-only: the strategy holds the asset while its fast line is above its
//! slow line (SMA, EMA) or while the MACD line (fast EMA − slow EMA) is
//! above its 9-bar signal line, and is flat otherwise. A position decided
//! at a bar's close earns the next bar's return. Each entry and each exit
//! costs [`FEE`] of equity.

use hookmesh_contracts::sweep::{StrategyType, SweepResult};

use crate::prices::{BAR_HOURS, BARS_PER_YEAR};

/// Cost of one entry or exit, as a fraction of equity (10 basis points).
pub const FEE: f64 = 0.001;
/// Period of the MACD signal line.
pub const MACD_SIGNAL: usize = 9;
/// Largest profit factor reported (a sweep without a losing trade).
pub const PROFIT_FACTOR_CAP: f64 = 99.99;

/// Simple moving average; `None` until `period` closes are known.
pub fn sma(values: &[f64], period: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; values.len()];
    let mut sum = 0.0;
    for (i, value) in values.iter().enumerate() {
        sum += value;
        if i >= period {
            sum -= values[i - period];
        }
        if i + 1 >= period {
            out[i] = Some(sum / period as f64);
        }
    }
    out
}

/// Exponential moving average (α = 2 / (period + 1)), seeded with the SMA
/// of the first `period` values.
pub fn ema(values: &[f64], period: usize) -> Vec<Option<f64>> {
    let alpha = 2.0 / (period as f64 + 1.0);
    let mut out = vec![None; values.len()];
    if period == 0 || values.len() < period {
        return out;
    }
    let mut current = values[..period].iter().sum::<f64>() / period as f64;
    out[period - 1] = Some(current);
    for i in period..values.len() {
        current += alpha * (values[i] - current);
        out[i] = Some(current);
    }
    out
}

/// Whether the strategy is long after each bar's close (`None` while its
/// lines are still warming up).
pub fn positions(
    strategy: StrategyType,
    fast: usize,
    slow: usize,
    closes: &[f64],
) -> Vec<Option<bool>> {
    let above = |a: &[Option<f64>], b: &[Option<f64>]| -> Vec<Option<bool>> {
        a.iter()
            .zip(b)
            .map(|(a, b)| Some(a.as_ref()? > b.as_ref()?))
            .collect()
    };
    match strategy {
        StrategyType::Sma => above(&sma(closes, fast), &sma(closes, slow)),
        StrategyType::Ema => above(&ema(closes, fast), &ema(closes, slow)),
        StrategyType::Macd => {
            let (fast, slow) = (ema(closes, fast), ema(closes, slow));
            let start = slow
                .iter()
                .position(Option::is_some)
                .unwrap_or(closes.len());
            let line: Vec<f64> = fast[start..]
                .iter()
                .zip(&slow[start..])
                .map(|(f, s)| f.unwrap_or_default() - s.unwrap_or_default())
                .collect();
            let signal = ema(&line, MACD_SIGNAL);
            let mut out = vec![None; start];
            out.extend(
                line.iter()
                    .zip(signal)
                    .map(|(macd, signal)| signal.map(|signal| *macd > signal)),
            );
            out
        }
    }
}

/// What a backtest measured, before rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct Performance {
    pub score: f64,
    pub sharpe_ratio: f64,
    pub sortino_ratio: f64,
    pub total_return_pct: f64,
    pub annualized_return: f64,
    pub max_drawdown_pct: f64,
    pub win_rate_pct: f64,
    pub profit_factor: f64,
    pub total_trades: u32,
    pub trades_per_month: f64,
    /// Mean bars a trade was held.
    pub avg_trade_bars: f64,
}

/// Runs the strategy over `closes` and measures it.
pub fn backtest(strategy: StrategyType, fast: usize, slow: usize, closes: &[f64]) -> Performance {
    let positions = positions(strategy, fast, slow, closes);
    let start = positions
        .iter()
        .position(Option::is_some)
        .unwrap_or(closes.len());
    let mut returns = Vec::with_capacity(closes.len());
    let mut trades: Vec<(f64, usize)> = Vec::new();
    // (growth of the open trade, bars held)
    let mut open: Option<(f64, usize)> = None;
    let mut long = false;
    for i in start.max(1)..closes.len() {
        let mut growth = 1.0;
        if long {
            growth *= closes[i] / closes[i - 1];
        }
        let want = positions[i].unwrap_or(false);
        if want != long {
            growth *= 1.0 - FEE;
            if want {
                open = Some((1.0, 0));
            }
        }
        if let Some((trade, bars)) = &mut open {
            *trade *= growth;
            if long {
                *bars += 1;
            }
        }
        if long
            && !want
            && let Some(trade) = open.take()
        {
            trades.push(trade);
        }
        long = want;
        returns.push(growth - 1.0);
    }
    if let Some((growth, bars)) = open {
        // Closed at the last close, paying the exit fee.
        trades.push((growth * (1.0 - FEE), bars));
        if let Some(last) = returns.last_mut() {
            *last = (1.0 + *last) * (1.0 - FEE) - 1.0;
        }
    }
    measure(&returns, &trades)
}

fn measure(returns: &[f64], trades: &[(f64, usize)]) -> Performance {
    let n = returns.len().max(1) as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let std = (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    let downside = (returns.iter().map(|r| r.min(0.0).powi(2)).sum::<f64>() / n).sqrt();
    let ratio = |deviation: f64| {
        if deviation > 0.0 {
            mean / deviation * BARS_PER_YEAR.sqrt()
        } else {
            0.0
        }
    };
    let (mut equity, mut peak, mut max_drawdown) = (1.0f64, 1.0f64, 0.0f64);
    for r in returns {
        equity *= 1.0 + r;
        peak = peak.max(equity);
        max_drawdown = max_drawdown.min(equity / peak - 1.0);
    }
    let years = n / BARS_PER_YEAR;
    let annualized = equity.powf(1.0 / years) - 1.0;
    let wins: f64 = trades
        .iter()
        .map(|(g, _)| g - 1.0)
        .filter(|r| *r > 0.0)
        .sum();
    let losses: f64 = -trades
        .iter()
        .map(|(g, _)| g - 1.0)
        .filter(|r| *r < 0.0)
        .sum::<f64>();
    let winners = trades.iter().filter(|(g, _)| *g > 1.0).count();
    let profit_factor = if losses > 0.0 {
        (wins / losses).min(PROFIT_FACTOR_CAP)
    } else if wins > 0.0 {
        PROFIT_FACTOR_CAP
    } else {
        0.0
    };
    let count = trades.len();
    let months = years * 12.0;
    let (sharpe, sortino) = (ratio(std), ratio(downside));
    let calmar = if max_drawdown < 0.0 {
        (annualized / -max_drawdown).min(10.0)
    } else {
        10.0
    };
    Performance {
        score: 0.5 * sharpe + 0.3 * sortino + 0.2 * calmar,
        sharpe_ratio: sharpe,
        sortino_ratio: sortino,
        total_return_pct: (equity - 1.0) * 100.0,
        annualized_return: annualized * 100.0,
        max_drawdown_pct: max_drawdown * 100.0,
        win_rate_pct: if count > 0 {
            winners as f64 / count as f64 * 100.0
        } else {
            0.0
        },
        profit_factor,
        total_trades: u32::try_from(count).unwrap_or(u32::MAX),
        trades_per_month: if months > 0.0 {
            count as f64 / months
        } else {
            0.0
        },
        avg_trade_bars: if count > 0 {
            trades.iter().map(|(_, bars)| *bars as f64).sum::<f64>() / count as f64
        } else {
            0.0
        },
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

impl Performance {
    /// 003's result row, every figure rounded to two decimals (003 stores
    /// them as `Decimal(10, 2)`).
    pub fn into_result(
        self,
        ticker: &str,
        strategy: StrategyType,
        fast: u32,
        slow: u32,
    ) -> SweepResult {
        let days = self.avg_trade_bars * BAR_HOURS / 24.0;
        SweepResult {
            ticker: ticker.to_owned(),
            strategy_type: strategy,
            fast_period: fast,
            slow_period: slow,
            score: round2(self.score),
            sharpe_ratio: round2(self.sharpe_ratio),
            sortino_ratio: round2(self.sortino_ratio),
            total_return_pct: round2(self.total_return_pct),
            annualized_return: round2(self.annualized_return),
            max_drawdown_pct: round2(self.max_drawdown_pct),
            win_rate_pct: round2(self.win_rate_pct),
            profit_factor: round2(self.profit_factor),
            total_trades: self.total_trades,
            trades_per_month: round2(self.trades_per_month),
            avg_trade_duration: format!("{days:.1} days"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices;

    #[test]
    fn moving_averages_match_hand_computed_values() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(
            sma(&values, 3),
            [None, None, Some(2.0), Some(3.0), Some(4.0)]
        );
        // α = 0.5; seeded with the mean of the first three (2.0).
        assert_eq!(
            ema(&values, 3),
            [None, None, Some(2.0), Some(3.0), Some(4.0)]
        );
        let ema2 = ema(&[2.0, 4.0, 10.0], 2);
        assert_eq!(ema2[1], Some(3.0));
        assert!((ema2[2].unwrap() - (3.0 + 2.0 / 3.0 * 7.0)).abs() < 1e-12);
    }

    #[test]
    fn a_steady_rise_is_held_once_and_never_draws_down() {
        let closes: Vec<f64> = (0..400).map(|i| 100.0 * 1.001f64.powi(i)).collect();
        let performance = backtest(StrategyType::Sma, 5, 20, &closes);
        assert_eq!(performance.total_trades, 1);
        assert_eq!(performance.win_rate_pct, 100.0);
        assert_eq!(performance.profit_factor, PROFIT_FACTOR_CAP);
        // Only the two fees ever lower the equity.
        assert!(performance.max_drawdown_pct > -0.2, "{performance:?}");
        let expected = (closes[399] / closes[19]) * (1.0 - FEE).powi(2) - 1.0;
        assert!((performance.total_return_pct / 100.0 - expected).abs() < 1e-9);
    }

    #[test]
    fn a_steady_fall_is_never_entered() {
        let closes: Vec<f64> = (0..400).map(|i| 100.0 * 0.999f64.powi(i)).collect();
        for strategy in [StrategyType::Sma, StrategyType::Ema] {
            let performance = backtest(strategy, 5, 20, &closes);
            assert_eq!(performance.total_trades, 0, "{strategy}");
            assert_eq!(performance.total_return_pct, 0.0);
        }
    }

    #[test]
    fn a_zigzag_trades_on_every_swing() {
        // Up 30 bars, down 30 bars, ten times.
        let mut closes = vec![100.0];
        for i in 0..600 {
            let step = if (i / 30) % 2 == 0 { 1.01 } else { 0.99 };
            closes.push(closes.last().unwrap() * step);
        }
        let performance = backtest(StrategyType::Sma, 3, 10, &closes);
        assert!(
            (9..=10).contains(&performance.total_trades),
            "{performance:?}"
        );
        assert!(performance.max_drawdown_pct < 0.0);
        assert!(performance.win_rate_pct > 0.0);
    }

    #[test]
    fn every_strategy_trades_the_bundled_history() {
        let closes = prices::closes(prices::find("BTC-USD").unwrap());
        for strategy in [StrategyType::Sma, StrategyType::Ema, StrategyType::Macd] {
            let performance = backtest(strategy, 12, 26, &closes);
            assert!(
                performance.total_trades >= 50,
                "{strategy}: {performance:?}"
            );
            assert!(performance.sharpe_ratio.is_finite());
            assert!(performance.max_drawdown_pct <= 0.0);
            let row = performance.into_result("BTC-USD", strategy, 12, 26);
            assert!(row.avg_trade_duration.ends_with(" days"));
        }
    }
}
