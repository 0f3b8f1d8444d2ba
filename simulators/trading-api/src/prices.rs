//! Deterministic price history: the same ticker always gets the same
//! series, so a sweep's results can be checked against a second run.
//!
//! Each series is [`BARS`] four-hour closes (about 27 months), a geometric
//! random walk whose drift switches between bull, bear and sideways
//! regimes. Regimes give moving-average crossovers something to find;
//! without them every strategy would only pay fees.

/// Bars per series.
pub const BARS: usize = 5000;
/// Length of one bar, in hours.
pub const BAR_HOURS: f64 = 4.0;
/// Bars in a year of round-the-clock trading.
pub const BARS_PER_YEAR: f64 = 365.0 * 24.0 / BAR_HOURS;

/// A ticker the simulator has history for: its first close and its
/// annualised volatility.
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    pub ticker: &'static str,
    pub first_close: f64,
    pub volatility: f64,
}

/// Every ticker with history. A sweep of any other ticker fails the way
/// seed 003's failure callback shows: "Insufficient historical data".
pub const LISTINGS: &[Listing] = &[
    listing("BTC-USD", 20_000.0, 0.60),
    listing("ETH-USD", 1_500.0, 0.75),
    listing("SOL-USD", 30.0, 0.95),
    listing("ADA-USD", 0.40, 0.90),
    listing("XRP-USD", 0.50, 0.85),
    listing("DOGE-USD", 0.07, 1.10),
    listing("SPY", 400.0, 0.18),
    listing("QQQ", 300.0, 0.24),
    listing("AAPL", 150.0, 0.28),
    listing("MSFT", 280.0, 0.27),
    listing("NVDA", 150.0, 0.50),
    listing("TSLA", 200.0, 0.55),
    listing("GLD", 170.0, 0.15),
    listing("EUR-USD", 1.05, 0.08),
];

const fn listing(ticker: &'static str, first_close: f64, volatility: f64) -> Listing {
    Listing {
        ticker,
        first_close,
        volatility,
    }
}

/// The listing of `ticker` (case-insensitive).
pub fn find(ticker: &str) -> Option<&'static Listing> {
    LISTINGS
        .iter()
        .find(|listing| listing.ticker.eq_ignore_ascii_case(ticker))
}

/// SplitMix64: small, fast and good enough for synthetic prices.
struct Random(u64);

impl Random {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// FNV-1a of the ticker: the series' seed.
fn seed(ticker: &str) -> u64 {
    ticker.bytes().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte.to_ascii_uppercase())).wrapping_mul(0x0100_0000_01B3)
    })
}

/// The closes of `listing`, oldest first.
pub fn closes(listing: &Listing) -> Vec<f64> {
    let mut random = Random(seed(listing.ticker));
    let bar_volatility = listing.volatility / BARS_PER_YEAR.sqrt();
    // Annual drifts of the three regimes, as multiples of the volatility.
    let drifts = [1.2, -1.0, 0.0];
    let mut regime = 0usize;
    let mut close = listing.first_close;
    let mut closes = Vec::with_capacity(BARS);
    for _ in 0..BARS {
        // Regimes last about 250 bars (six weeks) on average.
        if random.unit() < 1.0 / 250.0 {
            regime = (random.next_u64() % 3) as usize;
        }
        let drift = drifts[regime] * listing.volatility / BARS_PER_YEAR;
        let log_return =
            drift - bar_volatility * bar_volatility / 2.0 + bar_volatility * random.normal();
        close *= log_return.exp();
        closes.push(close);
    }
    closes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticker_always_gets_the_same_series() {
        let btc = find("btc-usd").unwrap();
        assert_eq!(closes(btc), closes(btc));
        assert_ne!(closes(btc)[100], closes(find("ETH-USD").unwrap())[100]);
        assert_eq!(closes(btc).len(), BARS);
        assert!(
            closes(btc)
                .iter()
                .all(|close| *close > 0.0 && close.is_finite())
        );
    }

    #[test]
    fn volatility_is_close_to_the_listing() {
        let spy = find("SPY").unwrap();
        let closes = closes(spy);
        let returns: Vec<f64> = closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        let mean = returns.iter().sum::<f64>() / returns.len() as f64;
        let variance =
            returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / returns.len() as f64;
        let annualised = (variance * BARS_PER_YEAR).sqrt();
        assert!((annualised - spy.volatility).abs() < 0.03, "{annualised}");
    }

    #[test]
    fn unknown_tickers_have_no_history() {
        assert!(find("NOPE-USD").is_none());
    }
}
