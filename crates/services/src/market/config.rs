//! `[market]`: where prices come from, which symbols are traded, and the settings of the
//! simulator and of the Binance connector, read and checked in one place.

use std::collections::{BTreeMap, HashSet};

use cryptobot_domain::Symbol;
use rust_decimal::Decimal;
use serde::Deserialize;

/// Lowest accepted `ticks_per_second`.
pub const MIN_TICKS_PER_SECOND: f64 = 0.01;
/// Highest accepted `ticks_per_second`.
pub const MAX_TICKS_PER_SECOND: f64 = 100_000.0;
/// Highest accepted `volatility_bps` (a move of up to 100 % per tick).
pub const MAX_VOLATILITY_BPS: u32 = 10_000;

/// Source of market data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarketSource {
    /// The embedded random-walk simulator.
    #[default]
    Simulated,
    /// Binance spot's public market streams (`[market.binance]`).
    Binance,
}

impl MarketSource {
    /// The name used in the configuration and reported by `/api/v1/health`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Simulated => "simulated",
            Self::Binance => "binance",
        }
    }
}

/// Settings of the market (`[market]`), which both the simulator and the Binance connector take;
/// missing keys take the defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarketConfig {
    /// Where prices come from. Default `simulated`.
    pub source: MarketSource,
    /// Traded symbols, in the order the market lists them (a TOML list; from the environment a
    /// JSON array or comma-separated).
    #[serde(deserialize_with = "crate::config::list")]
    pub symbols: Vec<Symbol>,
    /// Quote assets that split symbols into base and quote; every symbol ends in one.
    #[serde(deserialize_with = "crate::config::list")]
    pub quote_assets: Vec<String>,
    /// Simulated ticker updates per second, per symbol; 0.01 to 100 000.
    pub ticks_per_second: f64,
    /// Seed of the simulator's random walk: the same seed gives the same prices.
    pub seed: u64,
    /// Largest simulated move per tick, in basis points; at most 10 000.
    pub volatility_bps: u32,
    /// Starting prices of the simulator overriding the built-in table
    /// ([`super::price_model::default_initial_price`]), e.g. `{ BTCUSDT = "65000" }`.
    #[serde(deserialize_with = "crate::config::decimal_map")]
    pub initial_prices: BTreeMap<Symbol, Decimal>,
    /// `[market.binance]`: the live exchange connector, used when `source = "binance"`.
    pub binance: BinanceConfig,
}

impl Default for MarketConfig {
    fn default() -> Self {
        let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
            .into_iter()
            .filter_map(|name| Symbol::parse(name).ok())
            .collect();
        Self {
            source: MarketSource::Simulated,
            symbols,
            quote_assets: ["USDT", "USDC", "BTC", "ETH"].map(str::to_owned).to_vec(),
            ticks_per_second: 1.0,
            seed: 42,
            volatility_bps: 10,
            initial_prices: BTreeMap::new(),
            binance: BinanceConfig::default(),
        }
    }
}

impl MarketConfig {
    /// Checks the keys of `[market]` itself; `[market.binance]` is checked by
    /// [`BinanceConfig::validate`], which matters only when Binance is the source.
    ///
    /// # Errors
    /// A message naming the key: no symbols, a symbol listed twice or not ending in one of
    /// `quote_assets`, more than 1024 symbols from Binance, a rate outside 0.01..=100000 (or not
    /// a number), a volatility above 10 000 bps, or an initial price that is not positive or names
    /// a symbol that is not traded.
    pub fn validate(&self) -> Result<(), String> {
        let quotes: Vec<&str> = self.quote_assets.iter().map(String::as_str).collect();
        if let Some(symbol) = self.symbols.iter().find(|s| s.split(&quotes).is_none()) {
            return Err(format!(
                "symbols: {symbol} does not end in one of the quote assets {quotes:?} (market.quote_assets)"
            ));
        }
        if self.symbols.is_empty() {
            return Err("symbols: at least one symbol is required".to_owned());
        }
        let mut seen = HashSet::with_capacity(self.symbols.len());
        if let Some(duplicate) = self.symbols.iter().find(|s| !seen.insert(*s)) {
            return Err(format!("symbols: {duplicate} is listed twice"));
        }
        if self.source == MarketSource::Binance && self.symbols.len() > MAX_STREAMS {
            return Err(format!(
                "symbols: Binance serves at most {MAX_STREAMS} symbols on one connection, got {}",
                self.symbols.len()
            ));
        }
        if !(MIN_TICKS_PER_SECOND..=MAX_TICKS_PER_SECOND).contains(&self.ticks_per_second) {
            return Err(format!(
                "ticks_per_second must be between {MIN_TICKS_PER_SECOND} and {MAX_TICKS_PER_SECOND}, got {}",
                self.ticks_per_second
            ));
        }
        if self.volatility_bps > MAX_VOLATILITY_BPS {
            return Err(format!(
                "volatility_bps must be at most {MAX_VOLATILITY_BPS}, got {}",
                self.volatility_bps
            ));
        }
        for (symbol, price) in &self.initial_prices {
            if !self.symbols.contains(symbol) {
                return Err(format!("initial_prices: {symbol} is not in symbols"));
            }
            if *price <= Decimal::ZERO {
                return Err(format!(
                    "initial_prices: {symbol} must be greater than zero, got {price}"
                ));
            }
        }
        Ok(())
    }
}

/// Most streams Binance allows on one connection.
pub const MAX_STREAMS: usize = 1024;
/// Longest accepted duration setting, in seconds: one day (also Binance's connection limit).
pub const MAX_SECS: u64 = 86_400;

/// Which Binance stream each symbol is subscribed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum BinanceStream {
    /// `<symbol>@ticker`: rolling 24-hour statistics with last price, bid, ask, volume and change,
    /// once a second.
    #[default]
    #[serde(rename = "ticker")]
    Ticker,
    /// `<symbol>@bookTicker`: best bid and ask in real time; the price is their mid, volume and
    /// change stay zero.
    #[serde(rename = "bookTicker")]
    BookTicker,
}

impl BinanceStream {
    /// The stream name's suffix, e.g. `ticker`.
    #[must_use]
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Ticker => "ticker",
            Self::BookTicker => "bookTicker",
        }
    }
}

/// Settings of the Binance connector (`[market.binance]`, used when `source = "binance"`; its
/// symbols are [`MarketConfig::symbols`]); missing keys take the defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BinanceConfig {
    /// Base URL (surrounding blanks ignored); the connector opens `<ws_url>/stream`. Default
    /// `wss://stream.binance.com:9443`.
    pub ws_url: String,
    /// Stream subscribed per symbol. Default `ticker`.
    pub stream: BinanceStream,
    /// First reconnect delay, in milliseconds. Default 500.
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay, in milliseconds. Default 30 000.
    pub reconnect_max_ms: u64,
    /// No update for this long raises `feed_stalled`. Default 10.
    pub stale_after_secs: u64,
    /// No frame at all (not even a ping) for this long drops the connection as dead. Default 60.
    pub idle_timeout_secs: u64,
    /// Reconnect proactively after this long; Binance closes connections after 24 h. Default 23 h.
    pub max_connection_age_secs: u64,
    /// Subscribe requests sent per second at most (Binance accepts 5 incoming messages/s,
    /// pongs included). Default 4.
    pub subscribe_rate_per_sec: u32,
    /// Streams named in one subscribe request. Default 100.
    pub streams_per_subscribe: usize,
    /// Longest wait for a connection (TCP, TLS and WebSocket handshake). Default 10.
    pub connect_timeout_secs: u64,
}

impl Default for BinanceConfig {
    fn default() -> Self {
        Self {
            ws_url: "wss://stream.binance.com:9443".to_owned(),
            stream: BinanceStream::Ticker,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            stale_after_secs: 10,
            idle_timeout_secs: 60,
            max_connection_age_secs: 23 * 3_600,
            subscribe_rate_per_sec: 4,
            streams_per_subscribe: 100,
            connect_timeout_secs: 10,
        }
    }
}

impl BinanceConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// A message naming the field: a URL that is not `ws://` or `wss://`, a reconnect delay of 0
    /// or a maximum below the minimum (at most an hour), a duration outside 1..=86400 s, a rate
    /// outside 1..=100 or a batch outside 1..=1024.
    pub fn validate(&self) -> Result<(), String> {
        // Surrounding blanks (easily picked up from an environment variable) are not part of it.
        let url = self.ws_url.trim();
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(format!(
                "ws_url must start with ws:// or wss://, got {:?}",
                self.ws_url
            ));
        }
        if !(1..=3_600_000).contains(&self.reconnect_min_ms)
            || !(self.reconnect_min_ms..=3_600_000).contains(&self.reconnect_max_ms)
        {
            return Err(format!(
                "reconnect_min_ms and reconnect_max_ms must satisfy 1 <= min <= max <= 3600000, got {} and {}",
                self.reconnect_min_ms, self.reconnect_max_ms
            ));
        }
        for (field, value) in [
            ("stale_after_secs", self.stale_after_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("max_connection_age_secs", self.max_connection_age_secs),
            ("connect_timeout_secs", self.connect_timeout_secs),
        ] {
            if !(1..=MAX_SECS).contains(&value) {
                return Err(format!(
                    "{field} must be between 1 and {MAX_SECS}, got {value}"
                ));
            }
        }
        if !(1..=100).contains(&self.subscribe_rate_per_sec) {
            return Err(format!(
                "subscribe_rate_per_sec must be between 1 and 100, got {}",
                self.subscribe_rate_per_sec
            ));
        }
        if !(1..=MAX_STREAMS).contains(&self.streams_per_subscribe) {
            return Err(format!(
                "streams_per_subscribe must be between 1 and {MAX_STREAMS}, got {}",
                self.streams_per_subscribe
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_validation_names_the_problem() {
        let ok = MarketConfig::default();
        let btc = ok.symbols[0].clone();
        assert_eq!(ok.validate(), Ok(()));
        let cases: Vec<(MarketConfig, &str)> = vec![
            // TC0: no symbols
            (
                MarketConfig {
                    symbols: vec![],
                    ..ok.clone()
                },
                "at least one symbol",
            ),
            // TC1: duplicate symbol
            (
                MarketConfig {
                    symbols: vec![btc.clone(), btc.clone()],
                    ..ok.clone()
                },
                "listed twice",
            ),
            // TC2: rates out of range, and NaN
            (
                MarketConfig {
                    ticks_per_second: 0.001,
                    ..ok.clone()
                },
                "ticks_per_second",
            ),
            (
                MarketConfig {
                    ticks_per_second: 100_001.0,
                    ..ok.clone()
                },
                "ticks_per_second",
            ),
            (
                MarketConfig {
                    ticks_per_second: f64::NAN,
                    ..ok.clone()
                },
                "ticks_per_second",
            ),
            // TC3: volatility too large
            (
                MarketConfig {
                    volatility_bps: 10_001,
                    ..ok.clone()
                },
                "volatility_bps",
            ),
            // TC4: initial price not positive, or for a symbol not simulated
            (
                MarketConfig {
                    initial_prices: BTreeMap::from([(btc, Decimal::ZERO)]),
                    ..ok.clone()
                },
                "greater than zero",
            ),
            (
                MarketConfig {
                    initial_prices: BTreeMap::from([(
                        Symbol::parse("DOGEUSDT").unwrap(),
                        Decimal::ONE,
                    )]),
                    ..ok.clone()
                },
                "not in symbols",
            ),
        ];
        for (config, expected) in cases {
            let err = config.validate().unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
        // TC5: a symbol without a known quote asset; too many symbols for one Binance connection
        let eur = MarketConfig {
            symbols: vec![Symbol::parse("BTCEUR").unwrap()],
            ..ok.clone()
        };
        assert!(
            eur.validate()
                .unwrap_err()
                .contains("does not end in one of")
        );
        let many: Vec<Symbol> = (0..=MAX_STREAMS)
            .map(|n| Symbol::parse(&format!("C{n}USDT")).unwrap())
            .collect();
        let simulated = MarketConfig {
            symbols: many,
            ..ok.clone()
        };
        assert_eq!(simulated.validate(), Ok(()));
        let binance = MarketConfig {
            source: MarketSource::Binance,
            ..simulated
        };
        assert!(binance.validate().unwrap_err().contains("at most 1024"));
        // TC6: the bounds themselves are accepted
        for rate in [MIN_TICKS_PER_SECOND, MAX_TICKS_PER_SECOND] {
            let config = MarketConfig {
                ticks_per_second: rate,
                ..ok.clone()
            };
            assert_eq!(config.validate(), Ok(()));
        }
    }

    #[test]
    fn binance_validation_names_the_problem() {
        let ok = BinanceConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let cases: Vec<(BinanceConfig, &str)> = vec![
            // TC0: URL scheme
            (
                BinanceConfig {
                    ws_url: "https://x".into(),
                    ..ok.clone()
                },
                "ws_url",
            ),
            // TC1: backoff bounds
            (
                BinanceConfig {
                    reconnect_min_ms: 0,
                    ..ok.clone()
                },
                "reconnect_min_ms",
            ),
            (
                BinanceConfig {
                    reconnect_min_ms: 100,
                    reconnect_max_ms: 50,
                    ..ok.clone()
                },
                "reconnect_min_ms",
            ),
            // TC2: durations
            (
                BinanceConfig {
                    stale_after_secs: 0,
                    ..ok.clone()
                },
                "stale_after_secs",
            ),
            (
                BinanceConfig {
                    max_connection_age_secs: 86_401,
                    ..ok.clone()
                },
                "max_connection_age_secs",
            ),
            // TC3: rate and batch
            (
                BinanceConfig {
                    subscribe_rate_per_sec: 0,
                    ..ok.clone()
                },
                "subscribe_rate_per_sec",
            ),
            (
                BinanceConfig {
                    streams_per_subscribe: 0,
                    ..ok
                },
                "streams_per_subscribe",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
