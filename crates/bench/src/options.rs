//! Command-line options, parsed by hand to keep the dependency tree small.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Shown on a bad command line.
pub(crate) const USAGE: &str = "usage: cryptobot-load --url ws://127.0.0.1:PORT/api/v1/ws [options]
  --connections N          reading connections (default 100)
  --symbols A,B,..         connection i subscribes to ticker:<symbol i mod K> (default BTCUSDT)
  --channels X,Y           extra channels for every connection, e.g. trades,signals (default none)
  --duration SECS          measuring window (default 5)
  --warmup SECS            wait between the last subscription and the window (default 1)
  --connect-concurrency N  handshakes in flight at most (default 256)
  --connect-timeout SECS   bound on the whole connect phase and each handshake (default 60)
  --source-ips K           spread source addresses over 127.0.0.1..127.0.0.K (default 1)
  --stall N                extra connections that subscribe and never read (default 0)
  --slow-readers N         extra connections that subscribe to ticker:<every symbol> plus
                           --channels and read at most --slow-rate frames/s (default 0)
  --slow-rate F            frames per second a slow reader reads at most (default 40)
  --slow-rcvbuf BYTES      SO_RCVBUF of the slow readers (default: the system's, autotuned)
  --trades N               POST N trades to /api/v1/trades during the window (default 0); with
                           --slow-readers and --channels trades, checks that each reached them
  --trade-rate F           trades per second at most (default 4)
  --trade-symbol S         symbol of the trades (default the first of --symbols)
  --trade-amount A         quote amount of each buy, a decimal string (default 10)
  --drain SECS             after the window, wait at most this long for the slow readers to
                           receive every trade (default 30)
  --offered-per-sec F      the offered load, copied into the report
  --server-pid PID         record the server's CPU time and RSS from /proc
  --label TEXT             copied into the report
  --min-messages M         exit 1 unless at least M messages arrived and no connection failed";

/// Parsed options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) url: String,
    pub(crate) target: SocketAddr,
    pub(crate) connections: usize,
    pub(crate) symbols: Vec<String>,
    pub(crate) channels: Vec<String>,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) connect_concurrency: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) source_ips: usize,
    pub(crate) stall: usize,
    pub(crate) slow_readers: usize,
    pub(crate) slow_rate: f64,
    pub(crate) slow_rcvbuf: Option<usize>,
    pub(crate) trades: u64,
    pub(crate) trade_rate: f64,
    pub(crate) trade_symbol: String,
    pub(crate) trade_amount: String,
    pub(crate) drain: Duration,
    pub(crate) offered_per_sec: Option<f64>,
    pub(crate) server_pid: Option<u32>,
    pub(crate) label: String,
    pub(crate) min_messages: u64,
}

/// Longest measuring window accepted, so a run always ends by itself.
const MAX_SECS: f64 = 600.0;

impl Options {
    /// Parses `--key value` pairs.
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut url = None;
        let mut options = Self {
            url: String::new(),
            target: SocketAddr::from(([127, 0, 0, 1], 0)),
            connections: 100,
            symbols: vec!["BTCUSDT".to_owned()],
            channels: Vec::new(),
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            connect_concurrency: 256,
            connect_timeout: Duration::from_secs(60),
            source_ips: 1,
            stall: 0,
            slow_readers: 0,
            slow_rate: 40.0,
            slow_rcvbuf: None,
            trades: 0,
            trade_rate: 4.0,
            trade_symbol: String::new(),
            trade_amount: "10".to_owned(),
            drain: Duration::from_secs(30),
            offered_per_sec: None,
            server_pid: None,
            label: String::new(),
            min_messages: 0,
        };
        let mut args = args.into_iter();
        while let Some(key) = args.next() {
            let value = args.next().ok_or_else(|| format!("{key} needs a value"))?;
            match key.as_str() {
                "--url" => url = Some(value),
                "--connections" => options.connections = count(&key, &value, 0, 1_000_000)?,
                "--symbols" => options.symbols = list(&value),
                "--channels" => options.channels = list(&value),
                "--duration" => options.duration = secs(&key, &value)?,
                "--warmup" => options.warmup = secs(&key, &value)?,
                "--connect-concurrency" => {
                    options.connect_concurrency = count(&key, &value, 1, 100_000)?;
                }
                "--connect-timeout" => options.connect_timeout = secs(&key, &value)?,
                "--source-ips" => options.source_ips = count(&key, &value, 1, 254)?,
                "--stall" => options.stall = count(&key, &value, 0, 1_000_000)?,
                "--slow-readers" => options.slow_readers = count(&key, &value, 0, 10_000)?,
                "--slow-rate" => options.slow_rate = rate(&key, &value, 100_000.0)?,
                "--slow-rcvbuf" => {
                    options.slow_rcvbuf = Some(count(&key, &value, 1024, 64 * 1024 * 1024)?);
                }
                "--trades" => {
                    options.trades = u64::try_from(count(&key, &value, 0, 100_000)?)
                        .map_err(|_| format!("{key}: too large"))?;
                }
                "--trade-rate" => options.trade_rate = rate(&key, &value, 1000.0)?,
                "--trade-symbol" => options.trade_symbol = value,
                "--trade-amount" => options.trade_amount = decimal(&key, &value)?,
                "--drain" => options.drain = secs(&key, &value)?,
                "--offered-per-sec" => {
                    options.offered_per_sec = Some(rate(&key, &value, 1e9)?);
                }
                "--server-pid" => {
                    options.server_pid = Some(
                        value
                            .parse()
                            .map_err(|_| format!("--server-pid: not a pid: {value}"))?,
                    );
                }
                "--label" => options.label = value,
                "--min-messages" => {
                    options.min_messages = value
                        .parse()
                        .map_err(|_| format!("--min-messages: not a count: {value}"))?;
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        if options.symbols.is_empty() {
            return Err("--symbols: at least one symbol".to_owned());
        }
        if options.trade_symbol.is_empty() {
            options.trade_symbol.clone_from(&options.symbols[0]);
        }
        if options.trades > 0
            && options.slow_readers > 0
            && !options.channels.iter().any(|c| c == "trades")
        {
            return Err("--trades with --slow-readers needs --channels trades".to_owned());
        }
        let url = url.ok_or("--url is required")?;
        options.target = loopback_target(&url)?;
        options.url = url;
        Ok(options)
    }

    /// The source address of connection `index`.
    pub(crate) fn source_address(&self, index: usize) -> Ipv4Addr {
        super::loopback_source(index, self.source_ips)
    }
}

fn count(key: &str, value: &str, min: usize, max: usize) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{key}: expected a whole number from {min} to {max}, got {value}"))
}

fn secs(key: &str, value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && (0.0..=MAX_SECS).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{key}: expected seconds from 0 to {MAX_SECS}, got {value}"))
}

/// A rate above zero and at most `max`.
fn rate(key: &str, value: &str, max: f64) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0 && *r <= max)
        .ok_or_else(|| format!("{key}: expected a number above 0 and at most {max}, got {value}"))
}

/// A positive decimal string such as `10` or `2.5` (the API takes money as strings).
fn decimal(key: &str, value: &str) -> Result<String, String> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let positive = value.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if digits(whole) && digits(fraction) && positive && value.len() <= 32 {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{key}: expected a positive decimal such as 10 or 2.5, got {value}"
        ))
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The server's address; only loopback targets are accepted (this tool must never load a network).
fn loopback_target(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url must start with ws:// (loopback, no TLS): {url}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let target = authority
        .to_socket_addrs()
        .map_err(|e| format!("--url: cannot resolve {authority}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("--url: {authority} has no IPv4 address"))?;
    if !target.ip().is_loopback() {
        return Err(format!("--url must point at loopback, not {}", target.ip()));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn accepts_loopback_urls_and_refuses_anything_else() {
        // TC0: loopback by address and by name
        let options = parse(&["--url", "ws://127.0.0.1:8080/api/v1/ws"]).unwrap();
        assert_eq!(options.target, "127.0.0.1:8080".parse().unwrap());
        assert!(parse(&["--url", "ws://localhost:8080/api/v1/ws"]).is_ok());
        // TC1: other hosts, TLS and missing URL
        assert!(parse(&["--url", "ws://10.0.0.1:8080/"]).is_err());
        assert!(parse(&["--url", "wss://127.0.0.1:8080/"]).is_err());
        assert!(parse(&["--connections", "5"]).is_err());
    }

    #[test]
    fn parses_counts_lists_and_bounds() {
        let options = parse(&[
            "--url",
            "ws://127.0.0.1:1/x",
            "--connections",
            "1000",
            "--symbols",
            "A,B, C",
            "--duration",
            "2.5",
            "--source-ips",
            "4",
        ])
        .unwrap();
        assert_eq!(options.connections, 1000);
        assert_eq!(options.symbols, ["A", "B", "C"]);
        assert_eq!(options.duration, Duration::from_millis(2500));
        assert_eq!(options.source_address(5), Ipv4Addr::new(127, 0, 0, 2));
        // TC1: out of range and unknown
        assert!(parse(&["--url", "ws://127.0.0.1:1/x", "--duration", "601"]).is_err());
        assert!(parse(&["--url", "ws://127.0.0.1:1/x", "--source-ips", "0"]).is_err());
        assert!(parse(&["--url", "ws://127.0.0.1:1/x", "--bogus", "1"]).is_err());
        assert!(parse(&["--url"]).is_err());
    }

    #[test]
    fn slow_readers_and_trades_have_defaults_and_bounds() {
        let url = ["--url", "ws://127.0.0.1:1/x"];
        let options = parse(&url).unwrap();
        assert_eq!(options.slow_readers, 0);
        assert!((options.slow_rate - 40.0).abs() < f64::EPSILON);
        assert_eq!(options.slow_rcvbuf, None);
        assert_eq!(options.trades, 0);
        assert_eq!(options.trade_symbol, "BTCUSDT");
        assert_eq!(options.trade_amount, "10");
        assert_eq!(options.drain, Duration::from_secs(30));

        let with = |extra: &[&str]| parse(&[&url[..], extra].concat());
        let options = with(&[
            "--symbols",
            "ETHUSDT,SOLUSDT",
            "--slow-readers",
            "2",
            "--slow-rate",
            "12.5",
            "--slow-rcvbuf",
            "65536",
            "--channels",
            "trades",
            "--trades",
            "40",
            "--trade-rate",
            "4",
            "--trade-amount",
            "2.5",
            "--drain",
            "10",
            "--offered-per-sec",
            "110",
        ])
        .unwrap();
        assert_eq!(options.slow_readers, 2);
        assert!((options.slow_rate - 12.5).abs() < f64::EPSILON);
        assert_eq!(options.slow_rcvbuf, Some(65536));
        assert_eq!(options.trades, 40);
        // The trade symbol defaults to the first of --symbols.
        assert_eq!(options.trade_symbol, "ETHUSDT");
        assert_eq!(options.trade_amount, "2.5");
        assert_eq!(options.drain, Duration::from_secs(10));
        assert_eq!(options.offered_per_sec, Some(110.0));
        assert_eq!(
            with(&["--trade-symbol", "SOLUSDT"]).unwrap().trade_symbol,
            "SOLUSDT"
        );

        // TC1: rates must be above zero, finite and bounded
        for bad in ["0", "-1", "nan", "inf", "100001", "x"] {
            assert!(with(&["--slow-rate", bad]).is_err(), "--slow-rate {bad}");
        }
        assert!(with(&["--trade-rate", "1001"]).is_err());
        assert!(with(&["--slow-readers", "10001"]).is_err());
        assert!(with(&["--slow-rcvbuf", "512"]).is_err());
        // TC2: amounts are positive decimal strings, as the API takes them
        for bad in ["0", "0.0", "-5", "1e3", "1.", ".5", "1.2.3", ""] {
            assert!(
                with(&["--trade-amount", bad]).is_err(),
                "--trade-amount {bad}"
            );
        }
        // TC3: trades checked by slow readers need the trades channel
        let err = with(&["--slow-readers", "1", "--trades", "5"]).unwrap_err();
        assert!(err.contains("--channels trades"), "{err}");
        assert!(with(&["--trades", "5"]).is_ok());
    }
}
