//! Settings: embedded defaults, overridden by an optional TOML file, overridden by
//! `CRYPTOBOT__SECTION__KEY` environment variables.

use std::net::IpAddr;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use cryptobot_access::auth::{JwtSecret, SCOPE_READ, SCOPE_TRADE};
use cryptobot_access::{Authenticator, StaticToken};
use cryptobot_services::alerts::AlertConfig;
use cryptobot_services::config::json_list;
use cryptobot_services::market::{MarketConfig, MarketSource};
use cryptobot_services::signals::SignalConfig;
use cryptobot_services::trading::TradingConfig;
use cryptobot_services::{BusBackend, BusConfig};
use cryptobot_ws_gateway::GatewayConfig;
use serde::Deserialize;

/// The defaults compiled into the binary, so it runs from any directory without files.
const DEFAULTS: &str = include_str!("../config/default.toml");
/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "CRYPTOBOT";

/// Everything the server can be configured with. Unknown keys are errors, so typos surface.
///
/// Every section but the server's own (`[server]`, `[auth]`, `[storage]`, `[log]`) is the
/// configuration type of the services it configures (`[market]` with `[market.binance]`,
/// `[trading]`, `[signals]`, `[alerts]`, `[bus]`, `[ws]`), which checks itself; the server adds
/// only the rules that span sections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[server]`: listening address and HTTP workers.
    pub server: ServerSettings,
    /// `[market]`: where prices come from; the simulator and the Binance connector read it.
    pub market: MarketConfig,
    /// `[trading]`: the paper account; the paper trading engine and the auto-trader read it.
    pub trading: TradingConfig,
    /// `[signals]`: the moving-average strategy.
    pub signals: SignalConfig,
    /// `[alerts]`: alert thresholds.
    pub alerts: AlertConfig,
    /// `[storage]`: the SQLite file or the PostgreSQL database.
    pub storage: StorageSettings,
    /// `[bus]`: the event bus, in-process or through Redis.
    pub bus: BusConfig,
    /// `[log]`: logging.
    pub log: LogSettings,
    /// `[ws]`: the WebSocket gateway's policies (documented in docs/protocol.md).
    #[serde(default)]
    pub ws: GatewayConfig,
    /// `[auth]`: who may use the REST API and the WebSocket (docs/security.md).
    #[serde(default)]
    pub auth: AuthSettings,
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Everyone has every scope; allowed only on a loopback `server.host` (or with
    /// `auth.allow_insecure`).
    #[default]
    None,
    /// Static bearer tokens from `auth.tokens`.
    Token,
    /// HS256 JSON Web Tokens signed with `auth.jwt_secret`.
    Jwt,
}

/// One entry of `auth.tokens`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// The secret clients present; at least 16 characters.
    pub token: String,
    /// Granted scopes: `read`, `trade` (which implies `read`).
    pub scopes: Vec<String>,
    /// Name shown in logs instead of the token.
    #[serde(default)]
    pub name: String,
}

impl std::fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSettings")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// `[auth]`.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `none`, `token` or `jwt`.
    pub mode: AuthMode,
    /// Static tokens of `mode = "token"`: a TOML array of tables, or (from the environment) the
    /// same as a JSON string.
    #[serde(deserialize_with = "json_list")]
    pub tokens: Vec<TokenSettings>,
    /// HS256 secret of `mode = "jwt"`, at least 32 bytes.
    pub jwt_secret: String,
    /// Allows `mode = "none"` on a non-loopback `server.host`. Only for a trusted network.
    pub allow_insecure: bool,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("mode", &self.mode)
            .field("tokens", &self.tokens)
            .field("jwt_secret", &"<redacted>")
            .field("allow_insecure", &self.allow_insecure)
            .finish()
    }
}

/// Shortest accepted static token, so a token cannot be guessed by brute force.
const MIN_TOKEN_LEN: usize = 16;
/// Shortest accepted HS256 secret (RFC 7518 §3.2: at least the hash size, 256 bits).
const MIN_JWT_SECRET_LEN: usize = 32;

impl AuthSettings {
    /// The authenticator of these settings.
    ///
    /// # Errors
    /// A message naming the offending key: an unusable token list, or `jwt` (not implemented).
    pub fn authenticator(&self) -> Result<Authenticator, String> {
        match self.mode {
            AuthMode::None => Ok(Authenticator::None),
            AuthMode::Jwt => {
                if self.jwt_secret.len() < MIN_JWT_SECRET_LEN {
                    return Err(format!(
                        "jwt_secret: mode \"jwt\" needs a secret of at least {MIN_JWT_SECRET_LEN} bytes"
                    ));
                }
                Ok(Authenticator::Jwt(JwtSecret(
                    self.jwt_secret.as_bytes().to_vec(),
                )))
            }
            AuthMode::Token => {
                if self.tokens.is_empty() {
                    return Err("tokens: mode \"token\" needs at least one token".into());
                }
                let mut tokens = Vec::with_capacity(self.tokens.len());
                for (index, entry) in self.tokens.iter().enumerate() {
                    let name = if entry.name.is_empty() {
                        format!("token-{index}")
                    } else {
                        entry.name.clone()
                    };
                    if entry.token.chars().count() < MIN_TOKEN_LEN {
                        return Err(format!(
                            "tokens: token {name:?} must be at least {MIN_TOKEN_LEN} characters"
                        ));
                    }
                    if entry.token.chars().any(|c| c.is_whitespace() || c == ',') {
                        return Err(format!(
                            "tokens: token {name:?} must not contain whitespace or commas"
                        ));
                    }
                    if entry.scopes.is_empty() {
                        return Err(format!("tokens: token {name:?} has no scopes"));
                    }
                    if let Some(bad) = entry
                        .scopes
                        .iter()
                        .find(|s| *s != SCOPE_READ && *s != SCOPE_TRADE)
                    {
                        return Err(format!(
                            "tokens: token {name:?} has unknown scope {bad:?} (read, trade)"
                        ));
                    }
                    tokens.push(StaticToken {
                        name,
                        token: entry.token.clone(),
                        scopes: entry.scopes.clone(),
                    });
                }
                Ok(Authenticator::Tokens(tokens))
            }
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub host: IpAddr,
    /// TCP port; 0 picks a free one (it is logged).
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Longest wait for open requests at shutdown, in seconds.
    pub shutdown_timeout_secs: u64,
    /// REST requests (`/api/v1/*` and `/metrics`) per second per client IP address (IPv6: per /64);
    /// over it HTTP 429 `rate_limited` with `Retry-After`. 0 = unlimited.
    pub rest_rate_per_ip: u32,
    /// Burst of REST requests allowed above `rest_rate_per_ip`.
    pub rest_burst_per_ip: u32,
    /// Longest wait for a request head (WebSocket upgrades included) on a new connection, in
    /// milliseconds; a slower client gets 408 and is disconnected. 0 disables the timeout.
    pub request_head_timeout_ms: u64,
    /// Longest an idle keep-alive HTTP connection stays open, in seconds. 0 = no keep-alive.
    pub keep_alive_secs: u64,
    /// What this node runs (docs/operations.md).
    pub role: Role,
}

/// What one `cryptobot` process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in one process (with `bus.backend = "redis"` it also publishes like `engine`).
    All,
    /// Market feed, trading engine, signals and alerts, publishing to Redis; it serves clients too.
    Engine,
    /// Clients only: follows the engine's events through Redis and forwards commands to it.
    Gateway,
}

impl Role {
    /// The name used in the configuration and reported by `/api/v1/health`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Engine => "engine",
            Self::Gateway => "gateway",
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Which database holds the books.
    pub backend: StorageKind,
    /// SQLite file (parent directories are created); `:memory:` keeps nothing. Used with
    /// `backend = "sqlite"`.
    pub path: String,
    /// PostgreSQL URL (`postgres://user[:password]@host[:port]/database`). Used with
    /// `backend = "postgres"`.
    pub url: String,
}

impl StorageSettings {
    /// Where the books are, for messages: the file or the URL without its password.
    #[must_use]
    pub fn location(&self) -> String {
        match self.backend {
            StorageKind::Sqlite => self.path.clone(),
            StorageKind::Postgres => redact_password(&self.url),
        }
    }
}

/// The URL with the password (between `user:` and `@`) replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// One embedded SQLite file (`storage.path`).
    Sqlite,
    /// A PostgreSQL database (`storage.url`), which engines on several machines can share.
    Postgres,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Default filter when `RUST_LOG` is unset, e.g. `info` or `cryptobot_server=debug,info`.
    pub level: String,
    /// How each line is written to stderr.
    pub format: LogFormat,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-01T10:00:00Z  INFO target: message key=value`, for people.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`), for log shippers.
    Json,
}

impl LogSettings {
    /// Checks that `level` is a filter of levels: each comma-separated directive is a level
    /// (`off`, `error`, `warn`, `info`, `debug`, `trace`) or `target=level`. tracing itself would
    /// take a bare word such as `verbose` as the name of a target and log nothing else.
    ///
    /// # Errors
    /// The directive that is not one of those.
    pub fn validate(&self) -> Result<(), String> {
        const HINT: &str = "expected a level (off, error, warn, info, debug, trace) or target=level, \
                            comma-separated, e.g. \"cryptobot_services=debug,info\"";
        for directive in self.level.split(',').map(str::trim) {
            let level = directive
                .rsplit_once('=')
                .map_or(directive, |(_, level)| level);
            if level
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
            {
                return Err(format!("{directive:?} is not valid: {HINT}"));
            }
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(&self.level)
            .map(drop)
            .map_err(|err| format!("{err}: {HINT}"))
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or parsed, or a key is unknown or mistyped.
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    /// The values were read but are not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The offending key or section, e.g. `bus.lease_ttl_ms` or `market`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Settings {
    /// Loads defaults, then `file` if given (it must exist), then the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment given explicitly (for tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let overrides = env
            .into_iter()
            .filter(|(key, _)| key.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides)),
        );
        let settings: Self = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every section (each service configuration checks itself), then the rules that
    /// span sections.
    fn validate(&self) -> Result<(), ConfigError> {
        self.market.validate().map_err(invalid("market"))?;
        if self.market.source == MarketSource::Binance {
            self.market
                .binance
                .validate()
                .map_err(invalid("market.binance"))?;
        }
        self.signals.validate().map_err(invalid("signals"))?;
        self.alerts.validate().map_err(invalid("alerts"))?;
        self.ws.validate().map_err(invalid("ws"))?;
        self.auth.authenticator().map_err(invalid("auth"))?;
        if self.auth.mode == AuthMode::None
            && !self.server.host.is_loopback()
            && !self.auth.allow_insecure
        {
            return Err(invalid("auth.mode")(format!(
                "refusing to listen on {} without authentication: set auth.mode = \"token\" (with auth.tokens), or auth.allow_insecure = true on a trusted network",
                self.server.host
            )));
        }
        self.trading.validate().map_err(invalid("trading"))?;
        self.bus
            .validate()
            .map_err(|problem| invalid(&format!("bus.{}", problem.key))(problem.message))?;
        if self.server.role != Role::All && self.bus.backend != BusBackend::Redis {
            return Err(invalid("server.role")(
                "engine and gateway need bus.backend = \"redis\"".into(),
            ));
        }
        if self.bus.standby
            && (self.server.role == Role::Gateway || self.bus.backend != BusBackend::Redis)
        {
            return Err(invalid("bus.standby")(
                "a standby is an engine (server.role = \"engine\" or \"all\") on bus.backend = \"redis\"".into(),
            ));
        }
        match self.storage.backend {
            StorageKind::Sqlite if self.storage.path.trim().is_empty() => {
                return Err(invalid("storage.path")("must not be empty".into()));
            }
            StorageKind::Sqlite => {}
            StorageKind::Postgres => {
                cryptobot_services::trading::storage::postgres::check_url(&self.storage.url)
                    .map_err(invalid("storage.url"))?;
            }
        }
        self.log.validate().map_err(invalid("log.level"))?;
        Ok(())
    }

    /// The WebSocket gateway's configuration, with the authenticator of `[auth]`.
    ///
    /// # Errors
    /// A message naming the offending `[auth]` key.
    pub fn gateway_config(&self) -> Result<GatewayConfig, String> {
        Ok(GatewayConfig {
            auth: self.auth.authenticator()?,
            ..self.ws.clone()
        })
    }
}

/// Turns a section's or service's message into [`ConfigError::Invalid`] naming `key`.
fn invalid(key: &str) -> impl Fn(String) -> ConfigError + '_ {
    move |message| ConfigError::Invalid {
        key: key.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use cryptobot_domain::Symbol;
    use cryptobot_services::market::BinanceStream;
    use rust_decimal::Decimal;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The error of loading `file` with the environment `pairs`, as the server prints it.
    fn load_error(file: Option<&Path>, pairs: &[(&str, &str)]) -> String {
        Settings::load_with_env(file, env(pairs))
            .unwrap_err()
            .to_string()
    }

    fn names(symbols: &[Symbol]) -> Vec<&str> {
        symbols.iter().map(Symbol::as_str).collect()
    }

    fn temp_toml(contents: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "cryptobot-config-{}-{}.toml",
            std::process::id(),
            contents.len()
        ));
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        path
    }

    #[test]
    fn log_level_and_format_are_checked_like_any_key() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(
            (s.log.level.as_str(), s.log.format),
            ("info", LogFormat::Text)
        );
        let s = Settings::load_with_env(
            None,
            env(&[
                ("CRYPTOBOT__LOG__LEVEL", "cryptobot_services=debug,info"),
                ("CRYPTOBOT__LOG__FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.log.level, "cryptobot_services=debug,info");
        // TC0: a level tracing does not know
        let err = load_error(None, &[("CRYPTOBOT__LOG__LEVEL", "loud")]);
        assert!(err.starts_with("log.level: "), "{err}");
        // TC1: a bare word, which tracing would take for a target
        let err = load_error(None, &[("CRYPTOBOT__LOG__LEVEL", "info,verbose")]);
        assert!(
            err.starts_with("log.level: \"verbose\" is not valid"),
            "{err}"
        );
        // TC2: a target with a level that is not one
        let err = load_error(
            None,
            &[("CRYPTOBOT__LOG__LEVEL", "cryptobot_server=chatty")],
        );
        assert!(
            err.starts_with("log.level: \"cryptobot_server=chatty\""),
            "{err}"
        );
        // TC3: a format that is not text or json
        let err = load_error(None, &[("CRYPTOBOT__LOG__FORMAT", "xml")]);
        assert!(err.contains("log.format") && err.contains("xml"), "{err}");
    }

    #[test]
    fn embedded_defaults_match_the_documented_ones() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.server.host.to_string(), "127.0.0.1");
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.server.workers, 0);
        assert_eq!(s.market.source, MarketSource::Simulated);
        assert_eq!(
            names(&s.market.symbols),
            ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
        );
        assert!((s.market.ticks_per_second - 1.0).abs() < f64::EPSILON);
        assert_eq!(s.trading.initial_cash, Decimal::from(10_000));
        assert_eq!(s.trading.fee_rate.to_string(), "0.001");
        assert!(s.trading.auto_trade);
        assert_eq!(s.storage.backend, StorageKind::Sqlite);
        assert_eq!(s.storage.path, "data/cryptobot.db");
        assert_eq!(
            s.storage.url,
            "postgres://postgres@127.0.0.1:5432/cryptobot"
        );
        assert_eq!(s.ws, GatewayConfig::default());
        assert_eq!(s.bus.lease_ttl_ms, 10_000);
        assert_eq!(
            Duration::from_millis(s.bus.lease_ttl_ms),
            cryptobot_services::scale::ENGINE_LEASE
        );
        assert_eq!(
            s.bus.read_timeout_ms, 750,
            "a partition is seen within a second"
        );
        // Each service section's defaults are the service's own.
        assert_eq!(s.market, MarketConfig::default());
        assert_eq!(s.trading, TradingConfig::default());
        assert_eq!(s.bus, BusConfig::default());
    }

    #[test]
    fn the_binance_source_is_configured_from_the_environment() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("CRYPTOBOT__MARKET__SOURCE", "binance"),
                ("CRYPTOBOT__MARKET__SYMBOLS", "BTCUSDT,ETHUSDT"),
                ("CRYPTOBOT__MARKET__BINANCE__WS_URL", "ws://127.0.0.1:9999"),
                ("CRYPTOBOT__MARKET__BINANCE__STREAM", "bookTicker"),
                ("CRYPTOBOT__MARKET__BINANCE__STALE_AFTER_SECS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.market.source, MarketSource::Binance);
        let binance = &s.market.binance;
        assert_eq!(binance.ws_url, "ws://127.0.0.1:9999");
        assert_eq!(binance.stream, BinanceStream::BookTicker);
        assert_eq!(binance.stale_after_secs, 3);
        assert_eq!(s.market.symbols.len(), 2);
        // TC1: a bad value is reported under market.binance, only when Binance is the source
        let bad = [
            ("CRYPTOBOT__MARKET__SOURCE", "binance"),
            ("CRYPTOBOT__MARKET__BINANCE__WS_URL", "http://example.com"),
        ];
        let err = load_error(None, &bad);
        assert!(err.starts_with("market.binance: ws_url"), "{err}");
        assert!(Settings::load_with_env(None, env(&bad[1..])).is_ok());
        // TC2: an unknown source or stream is refused
        for (key, value) in [
            ("CRYPTOBOT__MARKET__SOURCE", "kraken"),
            ("CRYPTOBOT__MARKET__BINANCE__STREAM", "trades"),
        ] {
            assert!(
                Settings::load_with_env(None, env(&[(key, value)])).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let file = temp_toml("[server]\nport = 9100\n[trading]\nfee_rate = \"0.002\"\n");
        let s = Settings::load_with_env(
            Some(&file),
            env(&[
                ("CRYPTOBOT__SERVER__PORT", "9000"),
                ("CRYPTOBOT__MARKET__SYMBOLS", "BTCUSDT, ETHBTC"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.port, 9000);
        assert_eq!(s.trading.fee_rate.to_string(), "0.002");
        assert_eq!(names(&s.market.symbols), ["BTCUSDT", "ETHBTC"]);
    }

    #[test]
    fn every_key_of_market_trading_and_bus_is_settable_from_the_environment() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("CRYPTOBOT__MARKET__SOURCE", "binance"),
                ("CRYPTOBOT__MARKET__SYMBOLS", "BTCUSDT,ETHBTC"),
                ("CRYPTOBOT__MARKET__QUOTE_ASSETS", "USDT,BTC"),
                ("CRYPTOBOT__MARKET__TICKS_PER_SECOND", "2.5"),
                ("CRYPTOBOT__MARKET__SEED", "7"),
                ("CRYPTOBOT__MARKET__VOLATILITY_BPS", "25"),
                ("CRYPTOBOT__MARKET__INITIAL_PRICES", r#"{"ETHBTC": "0.05"}"#),
                ("CRYPTOBOT__MARKET__BINANCE__RECONNECT_MAX_MS", "9000"),
                ("CRYPTOBOT__TRADING__INITIAL_CASH", "500"),
                ("CRYPTOBOT__TRADING__FEE_RATE", "0.002"),
                ("CRYPTOBOT__TRADING__MIN_NOTIONAL", "5"),
                ("CRYPTOBOT__TRADING__MAX_OPEN_ORDERS", "3"),
                ("CRYPTOBOT__TRADING__AUTO_TRADE", "false"),
                ("CRYPTOBOT__TRADING__AUTO_TRADE_AMOUNT", "12.5"),
                ("CRYPTOBOT__BUS__CAPACITY", "128"),
                ("CRYPTOBOT__BUS__HISTORY_SIZE", "0"),
                ("CRYPTOBOT__BUS__HISTORY_MAX_AGE_SECS", "60"),
                ("CRYPTOBOT__BUS__BACKEND", "redis"),
                ("CRYPTOBOT__BUS__REDIS_URL", "redis://10.0.0.5:6380/2"),
                ("CRYPTOBOT__BUS__REDIS_PREFIX", "blue:1"),
                ("CRYPTOBOT__BUS__PUBLISH_BUFFER", "10"),
                ("CRYPTOBOT__BUS__COMMAND_TIMEOUT_MS", "250"),
                ("CRYPTOBOT__BUS__LEASE_TTL_MS", "2000"),
                ("CRYPTOBOT__BUS__READ_TIMEOUT_MS", "900"),
            ]),
        )
        .unwrap();
        let market = &s.market;
        assert_eq!(market.source, MarketSource::Binance);
        assert_eq!(names(&market.symbols), ["BTCUSDT", "ETHBTC"]);
        assert_eq!(market.quote_assets, ["USDT", "BTC"]);
        assert!((market.ticks_per_second - 2.5).abs() < f64::EPSILON);
        assert_eq!((market.seed, market.volatility_bps), (7, 25));
        let eth_btc = Symbol::parse("ETHBTC").unwrap();
        assert_eq!(market.initial_prices[&eth_btc].to_string(), "0.05");
        assert_eq!(market.binance.reconnect_max_ms, 9000);
        let trading = &s.trading;
        assert_eq!(
            [
                trading.initial_cash,
                trading.fee_rate,
                trading.min_notional,
                trading.auto_trade_amount
            ]
            .map(|d| d.to_string()),
            ["500", "0.002", "5", "12.5"]
        );
        assert_eq!(trading.max_open_orders, 3);
        assert!(!trading.auto_trade);
        let bus = &s.bus;
        assert_eq!(
            (bus.capacity, bus.history_size, bus.publish_buffer),
            (128, 0, 10)
        );
        assert_eq!(bus.backend, BusBackend::Redis);
        assert_eq!(
            (
                bus.history_max_age_secs,
                bus.command_timeout_ms,
                bus.lease_ttl_ms
            ),
            (60, 250, 2000)
        );
        // What the services get from [bus] and [market]: the replay bounds and the Redis settings.
        assert_eq!(bus.history_limits().max_age_us, 60_000_000);
        let redis = bus.redis_settings(&market.symbols);
        assert_eq!(redis.url, "redis://10.0.0.5:6380/2");
        assert_eq!(redis.prefix, "blue:1");
        assert_eq!(redis.stream_len, 1, "a stream keeps at least one entry");
        assert_eq!(redis.command_timeout, Duration::from_millis(250));
        assert_eq!(redis.lease_ttl, Duration::from_secs(2));
        assert_eq!(redis.read_timeout, Duration::from_millis(900));
        // TC1: a bus key out of range or a bad Redis URL is named with its section
        for (key, value, expected) in [
            (
                "CRYPTOBOT__BUS__CAPACITY",
                "0",
                "bus.capacity: must be between 1 and",
            ),
            (
                "CRYPTOBOT__BUS__REDIS_PREFIX",
                "a b",
                "bus.redis_prefix: must be non-empty",
            ),
        ] {
            let err = load_error(None, &[(key, value)]);
            assert!(err.starts_with(expected), "{key}={value}: {err}");
        }
        let err = load_error(
            None,
            &[
                ("CRYPTOBOT__BUS__BACKEND", "redis"),
                ("CRYPTOBOT__BUS__REDIS_URL", "rediss://x"),
            ],
        );
        assert!(err.starts_with("bus.redis_url: must start with"), "{err}");
    }

    #[test]
    fn every_list_key_is_settable_from_the_environment_as_json() {
        let s = Settings::load_with_env(
            None,
            env(&[
                (
                    "CRYPTOBOT__WS__TRUSTED_PROXIES",
                    r#"["10.0.0.1", "::1", "10.8.0.0/16"]"#,
                ),
                (
                    "CRYPTOBOT__WS__ALLOWED_ORIGINS",
                    r#"["https://a.example", "https://b.example:8443"]"#,
                ),
                ("CRYPTOBOT__MARKET__SYMBOLS", r#"["BTCUSDT", "ETHBTC"]"#),
                ("CRYPTOBOT__MARKET__QUOTE_ASSETS", r#"["USDT", "BTC"]"#),
            ]),
        )
        .unwrap();
        let proxies: Vec<String> =
            s.ws.trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(proxies, ["10.0.0.1", "::1", "10.8.0.0/16"]);
        assert_eq!(
            s.ws.allowed_origins,
            ["https://a.example", "https://b.example:8443"]
        );
        assert_eq!(names(&s.market.symbols), ["BTCUSDT", "ETHBTC"]);
        assert_eq!(s.market.quote_assets, ["USDT", "BTC"]);
        // The gateway gets the lists as they were set.
        let gateway = s.gateway_config().unwrap();
        assert_eq!(gateway.trusted_proxies, s.ws.trusted_proxies);
        assert_eq!(gateway.allowed_origins.len(), 2);
        // TC1: comma-separated still works, an empty variable is an empty list
        let s = Settings::load_with_env(
            None,
            env(&[
                ("CRYPTOBOT__WS__TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2"),
                ("CRYPTOBOT__WS__ALLOWED_ORIGINS", ""),
            ]),
        )
        .unwrap();
        assert_eq!(s.ws.trusted_proxies.len(), 2);
        assert!(s.ws.allowed_origins.is_empty());
        // TC2: a bad item or bad JSON names the key
        for (key, value, expected) in [
            (
                "CRYPTOBOT__WS__TRUSTED_PROXIES",
                r#"["proxy"]"#,
                "ws.trusted_proxies",
            ),
            (
                "CRYPTOBOT__WS__ALLOWED_ORIGINS",
                r#"["https://a""#,
                "ws.allowed_origins",
            ),
            (
                "CRYPTOBOT__MARKET__SYMBOLS",
                r#"["btcusdt"]"#,
                "market.symbols",
            ),
            (
                "CRYPTOBOT__MARKET__QUOTE_ASSETS",
                "[1]",
                "market.quote_assets",
            ),
        ] {
            let err = load_error(None, &[(key, value)]);
            assert!(
                err.contains(&format!("for key `{expected}`")),
                "{key}={value}: {err}"
            );
        }
        // TC3: a range with host bits set says which range was meant
        let err = load_error(
            None,
            &[("CRYPTOBOT__WS__TRUSTED_PROXIES", r#"["10.0.0.1/8"]"#)],
        );
        assert!(
            err.contains("the range is 10.0.0.0/8") && err.contains("ws.trusted_proxies"),
            "{err}"
        );
    }

    #[test]
    fn market_checks_are_the_simulators_own() {
        // TC0: a symbol listed twice
        let err = load_error(None, &[("CRYPTOBOT__MARKET__SYMBOLS", "BTCUSDT,BTCUSDT")]);
        assert_eq!(err, "market: symbols: BTCUSDT is listed twice");
        // TC1: a starting price that is not positive, or of a symbol not traded
        for (prices, expected) in [
            (
                r#"{ BTCUSDT = "0" }"#,
                "market: initial_prices: BTCUSDT must be greater than zero",
            ),
            (
                r#"{ DOGEUSDT = "1" }"#,
                "market: initial_prices: DOGEUSDT is not in symbols",
            ),
            (
                r#"{ BTCUSDT = 1.5 }"#,
                "not a float for key `market.initial_prices.BTCUSDT`",
            ),
        ] {
            let file = temp_toml(&format!("[market]\ninitial_prices = {prices}\n"));
            let err = load_error(Some(&file), &[]);
            assert!(err.contains(expected), "{prices}: {err}");
        }
        // TC2: a symbol without a known quote asset
        let err = load_error(None, &[("CRYPTOBOT__MARKET__SYMBOLS", "BTCEUR")]);
        assert!(
            err.starts_with("market: symbols: BTCEUR does not end"),
            "{err}"
        );
        // TC3: initial prices are read as decimals, from a file or a JSON object in the
        // environment
        let btc = Symbol::parse("BTCUSDT").unwrap();
        let file = temp_toml("[market]\ninitial_prices = { BTCUSDT = \"65000.5\" }\n");
        let s = Settings::load_with_env(Some(&file), env(&[])).unwrap();
        assert_eq!(s.market.initial_prices[&btc].to_string(), "65000.5");
        let prices = [(
            "CRYPTOBOT__MARKET__INITIAL_PRICES",
            r#"{"BTCUSDT": "64000"}"#,
        )];
        let s = Settings::load_with_env(None, env(&prices)).unwrap();
        assert_eq!(s.market.initial_prices[&btc].to_string(), "64000");
        // TC4: a bad JSON object or price from the environment names the key
        for value in [r#"{"BTCUSDT": 1.5}"#, r#"{"BTCUSDT""#, r#"{"btc": "1"}"#] {
            let err = load_error(None, &[("CRYPTOBOT__MARKET__INITIAL_PRICES", value)]);
            assert!(
                err.contains("for key `market.initial_prices`"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn the_bench_profile_loads() {
        let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bench.toml");
        let s = Settings::load_with_env(Some(&bench), env(&[])).unwrap();
        assert_eq!(s.market.symbols.len(), 10);
        assert!(!s.signals.enabled);
        assert_eq!(s.ws.max_connections, 20_000);
        assert_eq!(s.ws.portfolio_interval_secs, 60);
    }

    #[test]
    fn unknown_keys_in_a_file_name_the_key() {
        let file = temp_toml("[server]\nprot = 1\n");
        let err = load_error(Some(&file), &[]);
        assert!(err.contains("prot"), "{err}");
        // TC1: in every section, also from the environment
        for section in [
            "SERVER",
            "MARKET",
            "MARKET__BINANCE",
            "TRADING",
            "SIGNALS",
            "ALERTS",
            "STORAGE",
            "BUS",
            "LOG",
            "WS",
            "AUTH",
        ] {
            let key = format!("CRYPTOBOT__{section}__TYPO");
            let err = Settings::load_with_env(None, vec![(key.clone(), "1".to_owned())])
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown field `typo`"), "{key}: {err}");
        }
    }

    #[test]
    fn storage_locations_hide_the_password() {
        let cases = [
            // TC0: a password
            (
                "postgres://bot:s3cret@db:5432/books",
                "postgres://bot:***@db:5432/books",
            ),
            // TC1: none
            ("postgres://bot@db/books", "postgres://bot@db/books"),
            ("postgres://db/books", "postgres://db/books"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_password(url), shown);
        }
    }

    #[test]
    fn rejects_bad_values_with_the_key() {
        // TC0: money as a float
        let file = temp_toml("[trading]\ninitial_cash = 10.5\n");
        let err = load_error(Some(&file), &[]);
        assert!(err.contains("decimal written as a string"), "{err}");
        // TC1: invalid symbol
        let err = load_error(None, &[("CRYPTOBOT__MARKET__SYMBOLS", "btc")]);
        assert!(err.contains("symbols"), "{err}");
        // TC2: fee rate out of range
        let err = load_error(None, &[("CRYPTOBOT__TRADING__FEE_RATE", "1.5")]);
        assert!(err.starts_with("trading: fee_rate"), "{err}");
        // TC3: decimals outside the grammar, in the file and from the environment
        for (key, value) in [
            ("CRYPTOBOT__TRADING__INITIAL_CASH", "1_000"),
            ("CRYPTOBOT__TRADING__FEE_RATE", "1e-3"),
            ("CRYPTOBOT__TRADING__MIN_NOTIONAL", " 1"),
            ("CRYPTOBOT__TRADING__AUTO_TRADE_AMOUNT", "+10"),
            ("CRYPTOBOT__TRADING__AUTO_TRADE_AMOUNT", ".5"),
            ("CRYPTOBOT__TRADING__INITIAL_CASH", "010"),
        ] {
            let err = load_error(None, &[(key, value)]);
            assert!(err.contains("invalid decimal"), "{key}={value}: {err}");
        }
        let file = temp_toml("[trading]\ninitial_cash = -5\n");
        let err = load_error(Some(&file), &[]);
        assert!(err.contains("no sign allowed"), "{err}");
        // TC4: port not a number
        let err = load_error(None, &[("CRYPTOBOT__SERVER__PORT", "lots")]);
        assert!(err.contains("port"), "{err}");
        // TC4: a missing --config file
        let err = load_error(Some(Path::new("/nonexistent/cryptobot.toml")), &[]);
        assert!(err.contains("nonexistent"), "{err}");
        // TC5: a PostgreSQL URL that is not one, or an unknown backend
        for url in ["", "mysql://db/x", "postgres://host:notaport/db"] {
            let err = load_error(
                None,
                &[
                    ("CRYPTOBOT__STORAGE__BACKEND", "postgres"),
                    ("CRYPTOBOT__STORAGE__URL", url),
                ],
            );
            assert!(err.starts_with("storage.url: "), "{url}: {err}");
        }
        let err = load_error(None, &[("CRYPTOBOT__STORAGE__BACKEND", "mysql")]);
        assert!(err.contains("storage.backend"), "{err}");
        // TC6: a lease shorter than a second (renewals would flood Redis) or longer than a minute
        for ttl in ["999", "60001"] {
            let err = load_error(None, &[("CRYPTOBOT__BUS__LEASE_TTL_MS", ttl)]);
            assert!(
                err.starts_with("bus.lease_ttl_ms: must be between"),
                "{err}"
            );
        }
        // TC6: a standby is an engine on Redis: not a gateway, not on the in-process bus
        for extra in [
            &[
                ("CRYPTOBOT__SERVER__ROLE", "gateway"),
                ("CRYPTOBOT__BUS__BACKEND", "redis"),
            ][..],
            &[("CRYPTOBOT__SERVER__ROLE", "all")][..],
        ] {
            let vars: Vec<_> = [("CRYPTOBOT__BUS__STANDBY", "true")]
                .into_iter()
                .chain(extra.iter().copied())
                .collect();
            let err = load_error(None, &vars);
            assert!(
                err.starts_with("bus.standby: a standby is an engine"),
                "{err}"
            );
        }
        let standby = Settings::load_with_env(
            None,
            env(&[
                ("CRYPTOBOT__BUS__STANDBY", "true"),
                ("CRYPTOBOT__SERVER__ROLE", "engine"),
                ("CRYPTOBOT__BUS__BACKEND", "redis"),
            ]),
        )
        .unwrap();
        assert!(standby.bus.standby);
    }

    #[test]
    fn auth_defaults_to_none_and_refuses_none_off_loopback() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.auth.mode, AuthMode::None);
        assert!(!s.auth.allow_insecure);
        assert_eq!(s.gateway_config().unwrap().auth, Authenticator::None);
        // TC0: a public address without authentication is refused, naming both keys
        let err = load_error(None, &[("CRYPTOBOT__SERVER__HOST", "0.0.0.0")]);
        assert!(err.starts_with("auth.mode:"), "{err}");
        assert!(err.contains("auth.allow_insecure"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        // TC1: unless explicitly allowed
        let insecure = [
            ("CRYPTOBOT__SERVER__HOST", "0.0.0.0"),
            ("CRYPTOBOT__AUTH__ALLOW_INSECURE", "true"),
        ];
        assert!(Settings::load_with_env(None, env(&insecure)).is_ok());
        // TC2: IPv6 loopback is fine
        assert!(Settings::load_with_env(None, env(&[("CRYPTOBOT__SERVER__HOST", "::1")])).is_ok());
        // TC3: a public address with tokens is fine
        let tokens = [
            ("CRYPTOBOT__SERVER__HOST", "0.0.0.0"),
            ("CRYPTOBOT__AUTH__MODE", "token"),
            (
                "CRYPTOBOT__AUTH__TOKENS",
                r#"[{"name":"ops","token":"0123456789abcdef","scopes":["read","trade"]}]"#,
            ),
        ];
        let s = Settings::load_with_env(None, env(&tokens)).unwrap();
        let Authenticator::Tokens(list) = s.gateway_config().unwrap().auth else {
            panic!("token mode");
        };
        assert_eq!(list[0].name, "ops");
        assert_eq!(list[0].scopes, ["read", "trade"]);
        assert!(
            !format!("{s:?}").contains("0123456789abcdef"),
            "tokens are redacted"
        );
    }

    #[test]
    fn auth_tokens_from_a_file_and_bad_token_lists() {
        let file = temp_toml(
            "[auth]\nmode = \"token\"\ntokens = [{ token = \"fedcba9876543210\", scopes = [\"read\"] }]\n",
        );
        let s = Settings::load_with_env(Some(&file), env(&[])).unwrap();
        let Authenticator::Tokens(list) = s.gateway_config().unwrap().auth else {
            panic!("token mode");
        };
        assert_eq!(list[0].name, "token-0");
        let bad = [
            // TC0: token mode without tokens
            ("[]", "needs at least one token"),
            // TC1: short token
            (r#"[{"token":"short","scopes":["read"]}]"#, "at least 16"),
            // TC2: unknown scope
            (
                r#"[{"token":"0123456789abcdef","scopes":["admin"]}]"#,
                "unknown scope",
            ),
            // TC3: no scopes
            (r#"[{"token":"0123456789abcdef","scopes":[]}]"#, "no scopes"),
            // TC4: not JSON
            ("tok", "not a JSON list"),
        ];
        for (tokens, expected) in bad {
            let err = load_error(
                None,
                &[
                    ("CRYPTOBOT__AUTH__MODE", "token"),
                    ("CRYPTOBOT__AUTH__TOKENS", tokens),
                ],
            );
            assert!(err.contains(expected), "{tokens}: {err}");
        }
        // TC5: jwt needs a secret of at least 32 bytes
        let err = load_error(None, &[("CRYPTOBOT__AUTH__MODE", "jwt")]);
        assert!(err.starts_with("auth: jwt_secret"), "{err}");
        let jwt = [
            ("CRYPTOBOT__AUTH__MODE", "jwt"),
            (
                "CRYPTOBOT__AUTH__JWT_SECRET",
                "0123456789abcdef0123456789abcdef",
            ),
        ];
        let s = Settings::load_with_env(None, env(&jwt)).unwrap();
        assert!(matches!(
            s.gateway_config().unwrap().auth,
            Authenticator::Jwt(_)
        ));
        assert!(
            !format!("{s:?}").contains("0123456789abcdef"),
            "secret is redacted"
        );
    }
}
