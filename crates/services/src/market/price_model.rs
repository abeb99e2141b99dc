//! Pure, seeded random walk that produces the simulated tickers: no async, no clock of its own.

use chrono::{DateTime, Utc};
use cryptobot_domain::money::floor_quantity;
use cryptobot_domain::{Symbol, Ticker};
use rust_decimal::{Decimal, RoundingStrategy};

/// Lowest price the walk can reach; it never touches zero or goes negative.
pub const PRICE_FLOOR: Decimal = Decimal::from_parts(1, 0, 0, false, 6);

/// Tenths of a basis point in one unit (1 = 100_000 tenths of a basis point).
const TENTHS_OF_BP_PER_UNIT: i64 = 100_000;

/// Returns the built-in starting price of a symbol: BTCUSDT 65000, ETHUSDT 3500, SOLUSDT 150,
/// BNBUSDT 600, XRPUSDT 0.6, and 100 for any other symbol.
#[must_use]
pub fn default_initial_price(symbol: &Symbol) -> Decimal {
    match symbol.as_str() {
        "BTCUSDT" => Decimal::from(65_000),
        "ETHUSDT" => Decimal::from(3_500),
        "SOLUSDT" => Decimal::from(150),
        "BNBUSDT" => Decimal::from(600),
        "XRPUSDT" => Decimal::new(6, 1),
        _ => Decimal::from(100),
    }
}

/// Returns the number of decimal places a price is quoted with: 2 from 1000 up, 4 from 1 up,
/// 6 below 1 (like exchange tick sizes, so cheap coins still move visibly).
#[must_use]
pub fn price_scale(price: Decimal) -> u32 {
    if price >= Decimal::ONE_THOUSAND {
        2
    } else if price >= Decimal::ONE {
        4
    } else {
        6
    }
}

/// Rounds a price to its [`price_scale`], half away from zero, and keeps it at or above
/// [`PRICE_FLOOR`].
#[must_use]
pub fn round_price(price: Decimal) -> Decimal {
    price
        .round_dp_with_strategy(price_scale(price), RoundingStrategy::MidpointAwayFromZero)
        .max(PRICE_FLOOR)
        .normalize()
}

/// SplitMix64: a tiny, fast, seedable generator. Not cryptographic; it only has to make the
/// simulated walk reproducible without pulling in the `rand` crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Starts the generator at `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Returns the next 64 random bits.
    pub const fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a number in `0..bound` (0 when `bound` is 0). Uses the high half of a 128-bit
    /// product; the bias is below `bound / 2^64`, irrelevant for a simulation.
    pub const fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}

/// Derives the seed of one symbol's stream, so that every symbol walks differently but
/// reproducibly: FNV-1a of the symbol mixed into the market seed.
#[must_use]
pub fn symbol_seed(seed: u64, symbol: &Symbol) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in symbol.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    seed ^ hash
}

/// The random walk of one symbol.
///
/// Each [`PriceModel::step`] moves the price by a uniformly drawn whole number of tenths of a basis
/// point within `±volatility_bps`, rounds it with [`round_price`], and adds a random traded quantity
/// (1 to 10 000 quote units' worth) to the volume. `volume_24h` and `change_24h_pct` count since the
/// model was created (the simulator has no 24-hour history).
#[derive(Debug, Clone)]
pub struct PriceModel {
    symbol: Symbol,
    rng: SplitMix64,
    price: Decimal,
    first_price: Decimal,
    volume: Decimal,
    volatility_bps: u32,
}

impl PriceModel {
    /// Creates the walk of `symbol` starting at `initial_price` (rounded, and raised to
    /// [`PRICE_FLOOR`] if lower), with its stream derived from the market `seed`.
    #[must_use]
    pub fn new(symbol: Symbol, initial_price: Decimal, seed: u64, volatility_bps: u32) -> Self {
        let price = round_price(initial_price);
        Self {
            rng: SplitMix64::new(symbol_seed(seed, &symbol)),
            symbol,
            price,
            first_price: price,
            volume: Decimal::ZERO,
            volatility_bps,
        }
    }

    /// Returns the current price.
    #[must_use]
    pub const fn price(&self) -> Decimal {
        self.price
    }

    /// Returns the symbol this model walks.
    #[must_use]
    pub const fn symbol(&self) -> &Symbol {
        &self.symbol
    }

    /// Moves the walk one step and returns the new ticker, stamped `now`.
    pub fn step(&mut self, now: DateTime<Utc>) -> Ticker {
        let max_tenths = u64::from(self.volatility_bps) * 10;
        let drawn = self.rng.below(2 * max_tenths + 1);
        // Both fit in i64: volatility_bps is a u32, so max_tenths < 2^36.
        let tenths = drawn as i64 - max_tenths as i64;
        let factor = Decimal::ONE + Decimal::from(tenths) / Decimal::from(TENTHS_OF_BP_PER_UNIT);
        if let Some(moved) = self.price.checked_mul(factor) {
            self.price = round_price(moved);
        }

        // 1.00 to 10 000.00 quote units traded in this tick.
        let cents = self.rng.below(1_000_000) + 1;
        let notional = Decimal::new(cents as i64, 2);
        let quantity = notional
            .checked_div(self.price)
            .map_or(Decimal::ZERO, floor_quantity);
        self.volume = self.volume.checked_add(quantity).unwrap_or(self.volume);
        self.ticker(now)
    }

    /// Returns the current state as a ticker stamped `now`.
    #[must_use]
    pub fn ticker(&self, now: DateTime<Utc>) -> Ticker {
        let scale = price_scale(self.price);
        let unit = Decimal::new(1, scale);
        // One basis point each side, at least one price unit, and the bid stays above zero.
        let half_spread = (self.price / Decimal::from(10_000))
            .round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero)
            .max(unit);
        let change_pct = ((self.price - self.first_price) / self.first_price
            * Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
            .normalize();
        Ticker {
            symbol: self.symbol.clone(),
            price: self.price,
            bid: (self.price - half_spread).max(PRICE_FLOOR).normalize(),
            ask: (self.price + half_spread).normalize(),
            volume_24h: self.volume,
            change_24h_pct: change_pct,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures::{dec, instant, symbol};

    use super::*;

    fn walk(symbol_text: &str, start: &str, seed: u64, bps: u32, steps: usize) -> Vec<Decimal> {
        let mut model = PriceModel::new(symbol(symbol_text), dec(start), seed, bps);
        (0..steps).map(|_| model.step(instant()).price).collect()
    }

    #[test]
    fn splitmix_matches_reference_values() {
        // TC0: reference outputs of SplitMix64 seeded with 0
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        // TC1: below() stays in range, and 0 and 1 are degenerate bounds
        for _ in 0..1000 {
            assert!(rng.below(21) < 21);
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn same_seed_gives_same_walk_and_symbols_get_different_streams() {
        let a = walk("BTCUSDT", "65000", 42, 10, 200);
        assert_eq!(a, walk("BTCUSDT", "65000", 42, 10, 200));
        assert_ne!(a, walk("BTCUSDT", "65000", 43, 10, 200), "seed matters");
        assert_ne!(a, walk("BTCUSD", "65000", 42, 10, 200), "symbol matters");
    }

    #[test]
    fn steps_stay_within_volatility_and_on_the_price_scale() {
        let cases = [
            // TC0: BTC-like price, 2 dp
            ("BTCUSDT", "65000", 10_u32, 2_u32),
            // TC1: mid price, 4 dp
            ("SOLUSDT", "150", 25, 4),
            // TC2: below one, 6 dp
            ("XRPUSDT", "0.6", 50, 6),
        ];
        for (name, start, bps, scale) in cases {
            let mut model = PriceModel::new(symbol(name), dec(start), 7, bps);
            let mut previous = model.price();
            for _ in 0..500 {
                let ticker = model.step(instant());
                let max_move =
                    previous * Decimal::from(bps) / Decimal::from(10_000) + Decimal::new(1, scale);
                assert!(
                    (ticker.price - previous).abs() <= max_move,
                    "{name}: {previous} -> {}",
                    ticker.price
                );
                assert!(ticker.price.scale() <= price_scale(ticker.price));
                assert!(ticker.bid < ticker.price && ticker.price < ticker.ask);
                previous = ticker.price;
            }
        }
    }

    #[test]
    fn zero_volatility_keeps_the_price_and_accumulates_volume() {
        let mut model = PriceModel::new(symbol("ETHUSDT"), dec("3500"), 1, 0);
        let first = model.step(instant());
        let second = model.step(instant());
        assert_eq!((first.price, second.price), (dec("3500"), dec("3500")));
        assert_eq!(second.change_24h_pct, Decimal::ZERO);
        assert!(first.volume_24h > Decimal::ZERO);
        assert!(second.volume_24h > first.volume_24h);
    }

    #[test]
    fn price_never_reaches_zero() {
        // TC0: the largest moves from a tiny price stay at or above the floor
        let mut model = PriceModel::new(symbol("DUSTUSDT"), dec("0.000002"), 3, 10_000);
        for _ in 0..1000 {
            let ticker = model.step(instant());
            assert!(ticker.price >= PRICE_FLOOR);
            assert!(ticker.bid >= PRICE_FLOOR);
        }
        // TC1: a non-positive start is raised to the floor
        assert_eq!(
            PriceModel::new(symbol("DUSTUSDT"), dec("-5"), 3, 10).price(),
            PRICE_FLOOR
        );
    }

    #[test]
    fn initial_ticker_has_spread_and_no_change() {
        let model = PriceModel::new(symbol("BTCUSDT"), dec("65000"), 42, 10);
        let ticker = model.ticker(instant());
        // TC0: 1 bp of 65000 is 6.5 on each side
        assert_eq!((ticker.bid, ticker.ask), (dec("64993.5"), dec("65006.5")));
        assert_eq!(ticker.change_24h_pct, Decimal::ZERO);
        assert_eq!(ticker.volume_24h, Decimal::ZERO);
        // TC1: a cheap coin gets at least one price unit of spread
        let cheap = PriceModel::new(symbol("XRPUSDT"), dec("0.001"), 42, 10).ticker(instant());
        assert_eq!((cheap.bid, cheap.ask), (dec("0.000999"), dec("0.001001")));
    }

    #[test]
    fn change_is_measured_from_the_first_price() {
        let mut model = PriceModel::new(symbol("SOLUSDT"), dec("150"), 9, 100);
        let mut ticker = model.step(instant());
        for _ in 0..50 {
            ticker = model.step(instant());
        }
        let expected = ((ticker.price - dec("150")) / dec("150") * Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        assert_eq!(ticker.change_24h_pct, expected);
    }

    #[test]
    fn built_in_prices_and_scales() {
        let cases = [
            ("BTCUSDT", "65000"),
            ("ETHUSDT", "3500"),
            ("SOLUSDT", "150"),
            ("BNBUSDT", "600"),
            ("XRPUSDT", "0.6"),
            ("DOGEUSDT", "100"),
        ];
        for (name, price) in cases {
            assert_eq!(default_initial_price(&symbol(name)), dec(price), "{name}");
        }
        assert_eq!(price_scale(dec("1000")), 2);
        assert_eq!(price_scale(dec("999.99")), 4);
        assert_eq!(price_scale(dec("1")), 4);
        assert_eq!(price_scale(dec("0.99")), 6);
        assert_eq!(round_price(dec("1.23456")), dec("1.2346"));
    }
}
