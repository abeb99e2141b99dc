//! Pure simple-moving-average crossover strategy: prices in, buy/sell signals out.

use std::cmp::Ordering;
use std::collections::VecDeque;

use cryptobot_domain::SignalAction;
use rust_decimal::{Decimal, RoundingStrategy};

/// Name the strategy's signals carry.
pub const STRATEGY_NAME: &str = "sma_crossover";

/// Where the short average lies relative to the long one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Short average above the long one.
    Above,
    /// Short average below the long one.
    Below,
}

/// Short/long simple moving average crossover over the last prices of one symbol.
///
/// Emits [`SignalAction::Buy`] when the short average crosses above the long one and
/// [`SignalAction::Sell`] when it crosses below. Nothing is emitted until `long` prices have been
/// seen; the first strict relation after that only sets the baseline (a crossing needs a side to
/// cross from), and prices where both averages are equal leave the last relation unchanged.
///
/// Confidence is `min(1, |short - long| / long * 100)` rounded to 4 places: the gap between the
/// averages in percent of the long one, so a gap of 1 % or more is full confidence.
#[derive(Debug, Clone)]
pub struct SmaCrossover {
    short: usize,
    long: usize,
    window: VecDeque<Decimal>,
    /// Running sums, kept exactly (decimal addition does not drift).
    short_sum: Decimal,
    long_sum: Decimal,
    last_relation: Option<Relation>,
}

/// One crossing: action, confidence from 0 to 1, and a human-readable reason.
pub type Crossing = (SignalAction, Decimal, String);

impl SmaCrossover {
    /// Creates the strategy. Windows are expected to satisfy `1 <= short < long` (see
    /// `SignalConfig::validate`); zeros are raised to 1 and 2 so the averages stay defined.
    #[must_use]
    pub fn new(short: usize, long: usize) -> Self {
        let short = short.max(1);
        let long = long.max(short + 1);
        Self {
            short,
            long,
            window: VecDeque::with_capacity(long + 1),
            short_sum: Decimal::ZERO,
            long_sum: Decimal::ZERO,
            last_relation: None,
        }
    }

    /// Feeds the next price; returns a signal when the averages cross.
    pub fn on_price(&mut self, price: Decimal) -> Option<Crossing> {
        if self.push(price).is_none() {
            // A sum overflowed on absurd input: start over rather than report nonsense.
            self.reset();
            return None;
        }
        if self.window.len() < self.long {
            return None;
        }
        let short_sma = self.short_sum.checked_div(Decimal::from(self.short))?;
        let long_sma = self.long_sum.checked_div(Decimal::from(self.long))?;
        let relation = match short_sma.cmp(&long_sma) {
            Ordering::Greater => Relation::Above,
            Ordering::Less => Relation::Below,
            Ordering::Equal => return None,
        };
        let previous = self.last_relation.replace(relation);
        if previous.is_none_or(|previous| previous == relation) {
            return None;
        }
        let (action, direction) = match relation {
            Relation::Above => (SignalAction::Buy, "above"),
            Relation::Below => (SignalAction::Sell, "below"),
        };
        let confidence = confidence(short_sma, long_sma);
        let reason = format!(
            "SMA({}) {} crossed {direction} SMA({}) {}",
            self.short,
            display(short_sma),
            self.long,
            display(long_sma),
        );
        Some((action, confidence, reason))
    }

    /// Appends a price and updates the sums; `None` on overflow.
    fn push(&mut self, price: Decimal) -> Option<()> {
        self.window.push_back(price);
        self.short_sum = self.short_sum.checked_add(price)?;
        self.long_sum = self.long_sum.checked_add(price)?;
        if self.window.len() > self.short {
            let leaving = self.window[self.window.len() - 1 - self.short];
            self.short_sum = self.short_sum.checked_sub(leaving)?;
        }
        if self.window.len() > self.long
            && let Some(oldest) = self.window.pop_front()
        {
            self.long_sum = self.long_sum.checked_sub(oldest)?;
        }
        Some(())
    }

    fn reset(&mut self) {
        self.window.clear();
        self.short_sum = Decimal::ZERO;
        self.long_sum = Decimal::ZERO;
        self.last_relation = None;
    }
}

/// `min(1, |short - long| / long * 100)`, 4 places; 1 when the long average is zero.
fn confidence(short_sma: Decimal, long_sma: Decimal) -> Decimal {
    (short_sma - long_sma)
        .abs()
        .checked_div(long_sma.abs())
        .and_then(|ratio| ratio.checked_mul(Decimal::ONE_HUNDRED))
        .map_or(Decimal::ONE, |pct| pct.min(Decimal::ONE))
        .round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// Averages can have 28 digits; 8 places are plenty for a reason text.
fn display(value: Decimal) -> Decimal {
    value
        .round_dp_with_strategy(8, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures::dec;

    use super::*;

    fn run(short: usize, long: usize, prices: &[&str]) -> Vec<Option<(SignalAction, Decimal)>> {
        let mut sma = SmaCrossover::new(short, long);
        prices
            .iter()
            .map(|p| sma.on_price(dec(p)).map(|(action, conf, _)| (action, conf)))
            .collect()
    }

    #[test]
    fn emits_only_on_crossings() {
        use SignalAction::{Buy, Sell};
        type Case = (
            &'static str,
            usize,
            usize,
            Vec<&'static str>,
            Vec<Option<SignalAction>>,
        );
        let cases: Vec<Case> = vec![
            // TC0: too few prices: nothing, even though the short average is above
            ("warm-up", 2, 3, vec!["1", "2"], vec![None, None]),
            // TC1: falling then rising: baseline Below, then a Buy on the cross
            (
                "buy",
                2,
                3,
                vec!["10", "9", "8", "12"],
                vec![None, None, None, Some(Buy)],
            ),
            // TC2: rising then falling: baseline Above, then a Sell
            (
                "sell",
                2,
                3,
                vec!["8", "9", "10", "6"],
                vec![None, None, None, Some(Sell)],
            ),
            // TC3: staying above emits nothing more
            (
                "trend",
                2,
                3,
                vec!["10", "9", "8", "12", "13", "14"],
                vec![None, None, None, Some(Buy), None, None],
            ),
            // TC4: equal averages keep the last relation: flat after Below, then up is a Buy
            (
                "flat",
                1,
                2,
                vec!["5", "4", "4", "4", "6"],
                vec![None, None, None, None, Some(Buy)],
            ),
            // TC5: buy then sell then buy
            (
                "whipsaw",
                1,
                2,
                vec!["5", "4", "6", "3", "7"],
                vec![None, None, Some(Buy), Some(Sell), Some(Buy)],
            ),
        ];
        for (name, short, long, prices, expected) in cases {
            let got: Vec<Option<SignalAction>> = run(short, long, &prices)
                .into_iter()
                .map(|signal| signal.map(|(action, _)| action))
                .collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn confidence_is_the_gap_in_percent_capped_at_one() {
        let cases = [
            // TC0: short 1.002, long 1: 0.2 % gap
            ("1.002", "1", "0.2"),
            // TC1: a 5 % gap is capped at 1
            ("105", "100", "1"),
            // TC2: below works the same
            ("99.5", "100", "0.5"),
            // TC3: rounded to 4 places
            ("100.0012345", "100", "0.0012"),
            // TC4: a zero long average is full confidence, not a division error
            ("1", "0", "1"),
        ];
        for (short, long, expected) in cases {
            assert_eq!(
                confidence(dec(short), dec(long)),
                dec(expected),
                "{short}/{long}"
            );
        }
    }

    #[test]
    fn signal_carries_confidence_and_reason() {
        let mut sma = SmaCrossover::new(1, 2);
        assert!(sma.on_price(dec("100")).is_none());
        assert!(sma.on_price(dec("99")).is_none());
        // short 100.5 vs long (99 + 100.5) / 2 = 99.75: 0.7519 %
        let (action, confidence, reason) = sma.on_price(dec("100.5")).unwrap();
        assert_eq!(action, SignalAction::Buy);
        assert_eq!(confidence, dec("0.7519"));
        assert_eq!(reason, "SMA(1) 100.5 crossed above SMA(2) 99.75");
    }

    #[test]
    fn running_sums_match_a_fresh_average() {
        let mut sma = SmaCrossover::new(3, 7);
        for i in 0..100_i64 {
            let price = Decimal::new(1_000 + (i * 37) % 91, 1);
            let _ = sma.on_price(price);
            let tail: Vec<Decimal> = sma.window.iter().copied().collect();
            assert_eq!(sma.long_sum, tail.iter().sum::<Decimal>());
            let short: Decimal = tail.iter().rev().take(3).sum();
            assert_eq!(sma.short_sum, short);
            assert!(sma.window.len() <= 7);
        }
    }

    #[test]
    fn overflow_resets_instead_of_panicking() {
        let mut sma = SmaCrossover::new(1, 2);
        assert!(sma.on_price(Decimal::MAX).is_none());
        assert!(sma.on_price(Decimal::MAX).is_none());
        assert!(sma.window.is_empty());
        // TC1: zero windows are raised so the averages stay defined
        let fixed = SmaCrossover::new(0, 0);
        assert_eq!((fixed.short, fixed.long), (1, 2));
    }
}
