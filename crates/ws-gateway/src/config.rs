//! `[ws]` settings: every policy of the gateway, with the defaults documented in docs/protocol.md.

use std::time::Duration;

use serde::Deserialize;

use crate::auth::Authenticator;

/// Every policy knob of the gateway (the `[ws]` section of the server's settings).
///
/// Durations are integers with their unit in the name. Each key and its default is documented in
/// docs/protocol.md ("Configuration"); [`GatewayConfig::validate`] rejects values that cannot work.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Route of the WebSocket endpoint.
    pub path: String,
    /// Seconds between periodic `portfolio_update` pushes; 0 disables them (changes are still pushed).
    pub portfolio_interval_secs: u64,
    /// Seconds between server pings.
    pub heartbeat_interval_secs: u64,
    /// A peer that sent nothing (not even a pong) for this many seconds is closed (must exceed
    /// `heartbeat_interval_secs`).
    pub client_timeout_secs: u64,
    /// Longest time a connection's socket may take nothing while frames wait for it; a client
    /// slower than that is closed as a slow consumer.
    pub send_timeout_ms: u64,
    /// Longest wait for the close frame to be queued when the server ends a connection.
    pub close_timeout_ms: u64,
    /// Largest inbound message (after reassembling fragments), in bytes.
    pub max_message_bytes: usize,
    /// Most channels one connection may be subscribed to at once (default channels included).
    pub max_subscriptions: usize,
    /// Most inbound messages per second per connection (a burst of the same size is allowed);
    /// 0 disables the limit.
    pub max_messages_per_sec: u32,
    /// `rate_limited` error frames (each for a dropped message) a client over
    /// `max_messages_per_sec` gets before it is closed with `close_code_rate_limited`; the count
    /// restarts once the client has stayed under the rate for a whole burst.
    pub rate_limit_warnings: u32,
    /// Most concurrently open connections of this gateway; further upgrades get HTTP 503.
    pub max_connections: usize,
    /// Most concurrently open connections from one client IP address; further upgrades from it get
    /// HTTP 429. 0 disables the limit.
    pub max_connections_per_ip: usize,
    /// Connection attempts (upgrade requests, accepted or not) per second per client IP address
    /// (IPv6: per /64); over it HTTP 429 with `Retry-After`. 0 = unlimited.
    pub connect_rate_per_ip: u32,
    /// Burst of connection attempts allowed above `connect_rate_per_ip`.
    pub connect_burst_per_ip: u32,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is trusted for the
    /// client's IP address ([`cryptobot_access::client_ip`]). Empty: the TCP peer is the client.
    /// From the environment: a JSON array or comma-separated entries.
    #[serde(deserialize_with = "cryptobot_services::config::list")]
    pub trusted_proxies: Vec<cryptobot_access::IpRange>,
    /// Frames (never-dropped events and replies, held ones included) that may wait for one
    /// connection before it is closed as a slow consumer; tickers are conflated and never count.
    pub event_buffer: usize,
    /// Ticker updates of one symbol younger than the newest waiting one by at most this much wait
    /// with it (up to 32), so a busy server writes them together instead of skipping them; older
    /// ones are skipped. 0: only the newest waits.
    pub ticker_window_ms: u64,
    /// Most bytes the socket writer encodes per turn; the `cryptobot` server also uses it as its
    /// HTTP/1 write buffer ([`crate::Gateway::write_buffer_bytes`]). What waits beyond it stays in
    /// the outbox, where tickers are still conflated.
    pub write_buffer_bytes: usize,
    /// Browser origins allowed to connect besides the server's own (exact `scheme://host[:port]`),
    /// `"*"` for any. Requests without `Origin` (non-browser clients) and requests whose `Origin`
    /// host equals the `Host` header are always allowed. From the environment: a JSON array or
    /// comma-separated origins.
    #[serde(deserialize_with = "cryptobot_services::config::list")]
    pub allowed_origins: Vec<String>,
    /// Also allow browser pages served from `localhost`, `127.0.0.0/8` or `[::1]` on any port (a
    /// developer's own machine). Turn off on a public deployment.
    pub allow_localhost_origins: bool,
    /// Who may connect and with which scopes. Not a `[ws]` key: the server builds it from its
    /// `[auth]` section (docs/security.md). Default: no authentication.
    #[serde(skip)]
    pub auth: Authenticator,
    /// `SO_SNDBUF` of accepted sockets, in bytes; 0 keeps the OS default.
    pub tcp_send_buffer_bytes: usize,
    /// `TCP_NOTSENT_LOWAT` of accepted sockets (Linux, macOS): the socket takes more only while
    /// fewer bytes than this wait unsent in it, so frames wait in the outbox (where tickers are
    /// conflated) instead of the kernel; 0 keeps the OS default.
    pub tcp_notsent_lowat_bytes: u32,
    /// `TCP_USER_TIMEOUT` of accepted sockets (Linux): unacknowledged data for this long drops the
    /// connection; 0 keeps the OS default.
    pub tcp_user_timeout_secs: u64,
    /// Sets `TCP_NODELAY` on accepted sockets.
    pub tcp_nodelay: bool,
    /// Close code sent at server shutdown.
    pub close_code_shutdown: u16,
    /// Close code for a client that falls too far behind or blocks a send.
    pub close_code_slow_consumer: u16,
    /// Close code for a client silent for `client_timeout_secs`.
    pub close_code_idle: u16,
    /// Close code for an inbound message above `max_message_bytes`.
    pub close_code_too_big: u16,
    /// Close code for a binary frame.
    pub close_code_binary: u16,
    /// Close code for a WebSocket protocol violation.
    pub close_code_protocol: u16,
    /// Close code for staying over `max_messages_per_sec` after `rate_limit_warnings` warnings.
    pub close_code_rate_limited: u16,
    /// Close code when the connection's JWT expires.
    pub close_code_token_expired: u16,
    /// Close code when the engine restarted (a new epoch): the client reconnects and resumes.
    pub close_code_new_epoch: u16,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            path: "/api/v1/ws".to_owned(),
            portfolio_interval_secs: 5,
            heartbeat_interval_secs: 15,
            client_timeout_secs: 45,
            send_timeout_ms: 15_000,
            close_timeout_ms: 500,
            max_message_bytes: 64 * 1024,
            max_subscriptions: 64,
            max_messages_per_sec: 50,
            rate_limit_warnings: 10,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            connect_rate_per_ip: 10,
            connect_burst_per_ip: 30,
            trusted_proxies: Vec::new(),
            event_buffer: 1_024,
            ticker_window_ms: 50,
            write_buffer_bytes: 2 * 1024,
            allowed_origins: Vec::new(),
            allow_localhost_origins: true,
            auth: Authenticator::None,
            tcp_send_buffer_bytes: 64 * 1024,
            tcp_notsent_lowat_bytes: 2 * 1024,
            tcp_user_timeout_secs: 30,
            tcp_nodelay: true,
            close_code_shutdown: 1001,
            close_code_slow_consumer: 1008,
            close_code_idle: 4000,
            close_code_too_big: 1009,
            close_code_binary: 1003,
            close_code_protocol: 1002,
            close_code_rate_limited: 1008,
            close_code_token_expired: 4401,
            close_code_new_epoch: 1012,
        }
    }
}

impl GatewayConfig {
    /// Checks that every value can work.
    ///
    /// # Errors
    /// A message naming the first offending key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!("path must start with '/', got {:?}", self.path));
        }
        if self.heartbeat_interval_secs == 0 {
            return Err("heartbeat_interval_secs must be at least 1".to_owned());
        }
        // Equal values would race the pong of the previous ping against the next check.
        if self.client_timeout_secs <= self.heartbeat_interval_secs {
            return Err(format!(
                "client_timeout_secs ({}) must be greater than heartbeat_interval_secs ({})",
                self.client_timeout_secs, self.heartbeat_interval_secs
            ));
        }
        let positive = [
            ("send_timeout_ms", self.send_timeout_ms),
            ("close_timeout_ms", self.close_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if self.close_timeout_ms > 1_000 {
            return Err(format!(
                "close_timeout_ms must be at most 1000 (shutdown promises a close within a second), got {}",
                self.close_timeout_ms
            ));
        }
        if !(128..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(format!(
                "max_message_bytes must be between 128 and 67108864, got {}",
                self.max_message_bytes
            ));
        }
        let counts = [
            ("max_subscriptions", self.max_subscriptions, 3, 10_000),
            ("max_connections", self.max_connections, 1, 10_000_000),
            ("event_buffer", self.event_buffer, 16, 1 << 20),
            (
                "write_buffer_bytes",
                self.write_buffer_bytes,
                1_024,
                1 << 20,
            ),
        ];
        for (key, value, min, max) in counts {
            if !(min..=max).contains(&value) {
                return Err(format!(
                    "{key} must be between {min} and {max}, got {value}"
                ));
            }
        }
        if self.ticker_window_ms > 1_000 {
            return Err(format!(
                "ticker_window_ms must be at most 1000, got {}",
                self.ticker_window_ms
            ));
        }
        if self.rate_limit_warnings > 1_000 {
            return Err(format!(
                "rate_limit_warnings must be at most 1000, got {}",
                self.rate_limit_warnings
            ));
        }
        let codes = [
            ("close_code_shutdown", self.close_code_shutdown),
            ("close_code_slow_consumer", self.close_code_slow_consumer),
            ("close_code_idle", self.close_code_idle),
            ("close_code_too_big", self.close_code_too_big),
            ("close_code_binary", self.close_code_binary),
            ("close_code_protocol", self.close_code_protocol),
            ("close_code_rate_limited", self.close_code_rate_limited),
            ("close_code_token_expired", self.close_code_token_expired),
            ("close_code_new_epoch", self.close_code_new_epoch),
        ];
        for (key, code) in codes {
            if !is_sendable_close_code(code) {
                return Err(format!(
                    "{key} must be 1000-1003, 1007-1014 or 3000-4999, got {code}"
                ));
            }
        }
        Ok(())
    }

    /// Heartbeat period.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs)
    }

    /// Silence after which a peer is closed.
    pub(crate) fn client_timeout(&self) -> Duration {
        Duration::from_secs(self.client_timeout_secs)
    }

    /// Longest wait to queue one outbound frame.
    pub(crate) fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    /// Longest wait to queue the close frame.
    pub(crate) fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_timeout_ms)
    }
}

/// True for codes an endpoint may put in a close frame (RFC 6455 §7.4).
const fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_documented_values() {
        let config = GatewayConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.path, "/api/v1/ws");
        assert_eq!(config.portfolio_interval_secs, 5);
        assert_eq!(config.ticker_window_ms, 50);
        assert_eq!(config.write_buffer_bytes, 2_048);
        assert_eq!(config.tcp_notsent_lowat_bytes, 2_048);
    }

    #[test]
    fn rejects_values_that_cannot_work() {
        type Mutation = fn(&mut GatewayConfig);
        let cases: [(&str, Mutation); 10] = [
            // TC0: relative path
            ("path", |c| c.path = "ws".to_owned()),
            // TC1: no heartbeat
            ("heartbeat_interval_secs", |c| c.heartbeat_interval_secs = 0),
            // TC2: timeout shorter than the heartbeat would close healthy peers
            ("client_timeout_secs", |c| c.client_timeout_secs = 1),
            // TC3: a close slower than the shutdown promise
            ("close_timeout_ms", |c| c.close_timeout_ms = 5_000),
            // TC4: reserved close code
            ("close_code_idle", |c| c.close_code_idle = 1006),
            // TC5: no room for the default channels
            ("max_subscriptions", |c| c.max_subscriptions = 2),
            // TC6: tiny messages
            ("max_message_bytes", |c| c.max_message_bytes = 10),
            // TC7: a ticker window over a second
            ("ticker_window_ms", |c| c.ticker_window_ms = 1_001),
            // TC8: a write buffer too small for one ticker frame with its header
            ("write_buffer_bytes", |c| c.write_buffer_bytes = 512),
            // TC9: and one no socket needs
            ("write_buffer_bytes", |c| c.write_buffer_bytes = 2 << 20),
        ];
        for (key, mutate) in cases {
            let mut config = GatewayConfig::default();
            mutate(&mut config);
            let err = config.validate().unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn deserializes_partial_sections_and_rejects_unknown_keys() {
        let config: GatewayConfig =
            serde_json::from_str(r#"{"portfolio_interval_secs": 10}"#).unwrap();
        assert_eq!(config.portfolio_interval_secs, 10);
        assert_eq!(config.heartbeat_interval_secs, 15);
        assert!(serde_json::from_str::<GatewayConfig>(r#"{"heartbeat": 1}"#).is_err());
    }

    #[test]
    fn lists_deserialize_from_sequences_and_from_strings() {
        // TC0: sequences (TOML)
        let config: GatewayConfig = serde_json::from_str(
            r#"{"trusted_proxies": ["10.0.0.1"], "allowed_origins": ["https://a.example"]}"#,
        )
        .unwrap();
        assert_eq!(
            config.trusted_proxies,
            ["10.0.0.1".parse::<cryptobot_access::IpRange>().unwrap()]
        );
        assert_eq!(config.allowed_origins, ["https://a.example"]);
        // TC1: strings holding a JSON array, as an environment variable does
        let config: GatewayConfig = serde_json::from_str(
            r#"{"trusted_proxies": "[\"10.0.0.1\", \"::1\"]", "allowed_origins": "[\"*\"]"}"#,
        )
        .unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.allowed_origins, ["*"]);
        // TC2: an address that is not one is refused
        assert!(serde_json::from_str::<GatewayConfig>(r#"{"trusted_proxies": "proxy"}"#).is_err());
    }
}
