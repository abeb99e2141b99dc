//! Pure alert detectors: large price moves within a window, and symbols whose feed went silent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cryptobot_domain::{Alert, AlertType, Severity, Symbol};
use rust_decimal::{Decimal, RoundingStrategy};
use tokio::time::Instant;

/// A window keeps at most about this many samples, however fast the ticks come.
const SAMPLES_PER_WINDOW: i32 = 256;

/// Detects a price that moved at least `threshold_pct` percent from the oldest price seen within
/// the window.
///
/// Every price is compared with the oldest sample still inside the window. To keep memory bounded
/// at high tick rates, a price is only kept as a sample when at least 1/256 of the window has
/// passed since the previous sample, so "oldest" is exact to that granularity. After an alert the
/// symbol's window restarts from the alerting price, so the same move is not reported again.
#[derive(Debug, Clone)]
pub struct PriceMoveDetector {
    threshold_pct: Decimal,
    window: TimeDelta,
    sample_spacing: TimeDelta,
    samples: HashMap<Symbol, VecDeque<(DateTime<Utc>, Decimal)>>,
}

impl PriceMoveDetector {
    /// Creates a detector for moves of at least `threshold_pct` percent within `window`.
    #[must_use]
    pub fn new(threshold_pct: Decimal, window: Duration) -> Self {
        let window = TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
        Self {
            threshold_pct,
            window,
            sample_spacing: window / SAMPLES_PER_WINDOW,
            samples: HashMap::new(),
        }
    }

    /// Records `price` of `symbol` seen at `at`; returns a [`AlertType::PriceMove`] alert (raised
    /// at `at`) when it moved enough. Severity is warning from twice the threshold, info below.
    pub fn observe(&mut self, symbol: &Symbol, price: Decimal, at: DateTime<Utc>) -> Option<Alert> {
        let threshold_pct = self.threshold_pct;
        let samples = self.samples.entry(symbol.clone()).or_default();
        let horizon = at.checked_sub_signed(self.window);
        while let Some(&(seen_at, _)) = samples.front() {
            if horizon.is_some_and(|horizon| seen_at < horizon) {
                samples.pop_front();
            } else {
                break;
            }
        }
        let alert = samples.front().and_then(|&(since, from)| {
            price_move(threshold_pct, symbol, from, price, at - since, at)
        });
        if alert.is_some() {
            samples.clear();
        }
        let spaced = samples
            .back()
            .is_none_or(|&(last, _)| at - last >= self.sample_spacing);
        if spaced {
            samples.push_back((at, price));
        }
        alert
    }
}

/// Builds the price-move alert when `from -> to` moved at least `threshold_pct` percent.
fn price_move(
    threshold_pct: Decimal,
    symbol: &Symbol,
    from: Decimal,
    to: Decimal,
    over: TimeDelta,
    at: DateTime<Utc>,
) -> Option<Alert> {
    if from <= Decimal::ZERO {
        return None;
    }
    let change_pct = (to - from)
        .checked_div(from)?
        .checked_mul(Decimal::ONE_HUNDRED)?;
    let size = change_pct.abs();
    if size < threshold_pct {
        return None;
    }
    let severity = if size >= threshold_pct * Decimal::TWO {
        Severity::Warning
    } else {
        Severity::Info
    };
    let verb = if change_pct > Decimal::ZERO {
        "rose"
    } else {
        "fell"
    };
    let shown = size.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    Some(Alert {
        alert_type: AlertType::PriceMove,
        severity,
        message: format!(
            "{symbol} {verb} {shown:.2}% in {}s ({from} -> {to})",
            over.num_seconds()
        ),
        symbol: Some(symbol.clone()),
        raised_at: at,
    })
}

/// Per-symbol silence bookkeeping of the [`StallTracker`].
#[derive(Debug, Clone, Copy)]
struct Silence {
    last_update: Instant,
    stalled: bool,
}

/// Tracks when each symbol last updated; reports a symbol once when it has been silent longer
/// than the limit, and reports it resumed on its next update.
#[derive(Debug, Clone)]
pub struct StallTracker {
    stall_after: Duration,
    symbols: BTreeMap<Symbol, Silence>,
}

impl StallTracker {
    /// Starts tracking `symbols`, each counted as silent since `started`.
    #[must_use]
    pub fn new(
        symbols: impl IntoIterator<Item = Symbol>,
        started: Instant,
        stall_after: Duration,
    ) -> Self {
        let silence = Silence {
            last_update: started,
            stalled: false,
        };
        Self {
            stall_after,
            symbols: symbols.into_iter().map(|s| (s, silence)).collect(),
        }
    }

    /// Records an update of `symbol` at `now`; returns a [`AlertType::FeedResumed`] alert (info,
    /// raised at `raised_at`) when the symbol had been reported stalled. Unknown symbols start
    /// being tracked.
    pub fn observe(
        &mut self,
        symbol: &Symbol,
        now: Instant,
        raised_at: DateTime<Utc>,
    ) -> Option<Alert> {
        let fresh = Silence {
            last_update: now,
            stalled: false,
        };
        let previous = self.symbols.insert(symbol.clone(), fresh)?;
        previous.stalled.then(|| Alert {
            alert_type: AlertType::FeedResumed,
            severity: Severity::Info,
            message: format!(
                "{symbol} feed resumed after {:.1}s without updates",
                now.saturating_duration_since(previous.last_update)
                    .as_secs_f64()
            ),
            symbol: Some(symbol.clone()),
            raised_at,
        })
    }

    /// Returns a [`AlertType::FeedStalled`] alert (warning, raised at `raised_at`) for each symbol
    /// silent for longer than the limit at `now` and not reported yet, in symbol order.
    pub fn check(&mut self, now: Instant, raised_at: DateTime<Utc>) -> Vec<Alert> {
        let limit = self.stall_after;
        self.symbols
            .iter_mut()
            .filter_map(|(symbol, silence)| {
                let silent_for = now.saturating_duration_since(silence.last_update);
                if silence.stalled || silent_for <= limit {
                    return None;
                }
                silence.stalled = true;
                Some(Alert {
                    alert_type: AlertType::FeedStalled,
                    severity: Severity::Warning,
                    message: format!(
                        "{symbol} feed stalled: no update for {}s (limit {}s)",
                        silent_for.as_secs(),
                        limit.as_secs()
                    ),
                    symbol: Some(symbol.clone()),
                    raised_at,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures::{dec, instant, symbol};

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        instant() + TimeDelta::seconds(secs)
    }

    #[test]
    fn price_move_detector_table() {
        type Case = (
            &'static str,
            Vec<(i64, &'static str)>,
            Vec<Option<Severity>>,
        );
        let cases: Vec<Case> = vec![
            // TC0: 6 % up within the window: info (below twice the 5 % threshold)
            (
                "jump",
                vec![(0, "100"), (1, "106")],
                vec![None, Some(Severity::Info)],
            ),
            // TC1: exactly the threshold counts
            (
                "exact",
                vec![(0, "100"), (1, "95")],
                vec![None, Some(Severity::Info)],
            ),
            // TC2: 4.99 % is not enough
            ("small", vec![(0, "100"), (30, "104.99")], vec![None, None]),
            // TC3: 10 % or more is a warning
            (
                "crash",
                vec![(0, "100"), (5, "90")],
                vec![None, Some(Severity::Warning)],
            ),
            // TC4: the old price left the 60 s window, so the move is measured from 103
            (
                "expired",
                vec![(0, "100"), (30, "103"), (61, "106")],
                vec![None, None, None],
            ),
            // TC5: a sample exactly one window old still counts
            (
                "edge",
                vec![(0, "100"), (60, "106")],
                vec![None, Some(Severity::Info)],
            ),
            // TC6: after an alert the window restarts: staying up is not reported again
            (
                "reset",
                vec![(0, "100"), (1, "106"), (2, "107"), (3, "110")],
                vec![None, Some(Severity::Info), None, None],
            ),
            // TC7: ... but a further 5 % from the alerting price is
            (
                "again",
                vec![(0, "100"), (1, "106"), (2, "111.3")],
                vec![None, Some(Severity::Info), Some(Severity::Info)],
            ),
        ];
        for (name, ticks, expected) in cases {
            let mut detector = PriceMoveDetector::new(dec("5"), Duration::from_secs(60));
            let got: Vec<Option<Severity>> = ticks
                .iter()
                .map(|&(secs, price)| {
                    detector
                        .observe(&symbol("BTCUSDT"), dec(price), at(secs))
                        .map(|alert| alert.severity)
                })
                .collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn price_move_alert_describes_the_move() {
        let mut detector = PriceMoveDetector::new(dec("5"), Duration::from_secs(60));
        let btc = symbol("BTCUSDT");
        assert!(detector.observe(&btc, dec("100"), at(0)).is_none());
        let alert = detector.observe(&btc, dec("93.5"), at(12)).unwrap();
        assert_eq!(alert.alert_type, AlertType::PriceMove);
        assert_eq!(alert.symbol, Some(btc));
        assert_eq!(alert.raised_at, at(12));
        assert_eq!(alert.message, "BTCUSDT fell 6.50% in 12s (100 -> 93.5)");
        // TC1: symbols have separate windows
        let mut detector = PriceMoveDetector::new(dec("5"), Duration::from_secs(60));
        assert!(
            detector
                .observe(&symbol("BTCUSDT"), dec("100"), at(0))
                .is_none()
        );
        assert!(
            detector
                .observe(&symbol("ETHUSDT"), dec("106"), at(1))
                .is_none()
        );
    }

    #[test]
    fn price_move_window_stays_bounded() {
        let mut detector = PriceMoveDetector::new(dec("50"), Duration::from_secs(60));
        let btc = symbol("BTCUSDT");
        for ms in 0..120_000 {
            let _ = detector.observe(&btc, dec("100"), instant() + TimeDelta::milliseconds(ms));
        }
        assert!(detector.samples[&btc].len() <= 257);
    }

    #[test]
    fn stall_tracker_reports_once_and_resumes() {
        let start = Instant::now();
        let secs = |s: u64| start + Duration::from_secs(s);
        let (btc, eth) = (symbol("BTCUSDT"), symbol("ETHUSDT"));
        let mut tracker =
            StallTracker::new([btc.clone(), eth.clone()], start, Duration::from_secs(10));
        let kinds = |alerts: Vec<Alert>| -> Vec<(AlertType, Option<Symbol>)> {
            alerts
                .into_iter()
                .map(|a| (a.alert_type, a.symbol))
                .collect()
        };
        // TC0: exactly at the limit nobody is stalled yet
        assert!(tracker.check(secs(10), at(10)).is_empty());
        // TC1: BTC updates, ETH never: only ETH stalls (silent since the start)
        assert!(tracker.observe(&btc, secs(8), at(8)).is_none());
        assert_eq!(
            kinds(tracker.check(secs(11), at(11))),
            [(AlertType::FeedStalled, Some(eth.clone()))]
        );
        // TC2: reported once only
        assert!(tracker.check(secs(15), at(15)).is_empty());
        // TC3: BTC stalls later
        assert_eq!(
            kinds(tracker.check(secs(19), at(19))),
            [(AlertType::FeedStalled, Some(btc.clone()))]
        );
        // TC4: ETH updates: resumed, with the silence in the message
        let resumed = tracker.observe(&eth, secs(20), at(20)).unwrap();
        assert_eq!(resumed.alert_type, AlertType::FeedResumed);
        assert_eq!(resumed.severity, Severity::Info);
        assert_eq!(
            resumed.message,
            "ETHUSDT feed resumed after 20.0s without updates"
        );
        // TC5: a second update is not another resume; it can stall again later
        assert!(tracker.observe(&eth, secs(21), at(21)).is_none());
        assert_eq!(
            kinds(tracker.check(secs(32), at(32))),
            [(AlertType::FeedStalled, Some(eth))]
        );
        // TC6: an unknown symbol starts being tracked on its first update
        let sol = symbol("SOLUSDT");
        assert!(tracker.observe(&sol, secs(32), at(32)).is_none());
        assert_eq!(
            kinds(tracker.check(secs(43), at(43))),
            [(AlertType::FeedStalled, Some(sol))]
        );
    }
}
