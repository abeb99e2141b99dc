//! Gateway metrics: plain atomics read at scrape time, labelled Prometheus counters, and the
//! latency histograms (delivery per channel kind, commands by type), which the hot paths feed
//! through worker-local accumulators (`LocalWire`) instead of a shared atomic per frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptobot_domain::Channel;
use cryptobot_services::metrics::{ReadAtScrape, latency_histogram};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{HistogramVec, IntCounterVec, Opts, Registry};

/// Channel kinds, the `channel` label of `cryptobot_ws_delivery_seconds` (never a symbol).
pub const CHANNEL_KINDS: [&str; 8] = [
    "ticker",
    "trades",
    "portfolio",
    "signals",
    "alerts",
    "orders",
    "candles",
    "bot",
];

/// Index of a channel's kind in [`CHANNEL_KINDS`].
pub(crate) const fn channel_kind(channel: &Channel) -> u8 {
    match channel {
        Channel::Ticker(_) => 0,
        Channel::Trades => 1,
        Channel::Portfolio => 2,
        Channel::Signals => 3,
        Channel::Alerts => 4,
        Channel::Orders => 5,
        Channel::Candles(..) => 6,
        Channel::Bot => 7,
    }
}

/// Server message types (`type` of the JSON frames), the `type` label of
/// `cryptobot_ws_frames_sent_total`; then the WebSocket control and binary frames, and `other`.
pub const FRAME_TYPES: [&str; 31] = [
    "ticker_update",
    "trade_notification",
    "portfolio_update",
    "signal",
    "alert",
    "candle",
    "order_update",
    "subscription_success",
    "unsubscription_success",
    "subscribed",
    "unsubscribed",
    "subscriptions",
    "resumed",
    "welcome",
    "trade_executed",
    "order_placed",
    "order_canceled",
    "orders_canceled",
    "orders",
    "open_orders",
    "position_updated",
    "bot_state",
    "bot_state_update",
    "position_exited",
    "server_shutdown",
    "pong",
    "error",
    "ws_ping",
    "ws_pong",
    "binary",
    "other",
];

/// Index in [`FRAME_TYPES`] of the control, binary and unknown frames.
const WS_PING: usize = 27;
const WS_PONG: usize = 28;
const BINARY: usize = 29;
const OTHER: usize = 30;

/// The frame type of a JSON text frame: serde writes the `type` tag first, so the prefix
/// `{"type":"` and a short scan find it without parsing.
pub(crate) fn text_frame_type(bytes: &[u8]) -> usize {
    const PREFIX: &[u8] = br#"{"type":""#;
    let Some(rest) = bytes.strip_prefix(PREFIX) else {
        return OTHER;
    };
    let Some(end) = rest.iter().take(32).position(|b| *b == b'"') else {
        return OTHER;
    };
    let name = &rest[..end];
    FRAME_TYPES[..WS_PING]
        .iter()
        .position(|known| known.as_bytes() == name)
        .unwrap_or(OTHER)
}

/// The frame type of a control or binary frame.
pub(crate) const fn control_frame_type(ping: bool, pong: bool) -> usize {
    if ping {
        WS_PING
    } else if pong {
        WS_PONG
    } else {
        BINARY
    }
}

/// Commands of the protocol, the `command` label of `cryptobot_command_seconds` (`unknown`
/// for a message that could not be parsed).
pub const COMMANDS: [&str; 17] = [
    "subscribe_ticker",
    "unsubscribe_ticker",
    "subscribe",
    "unsubscribe",
    "list_subscriptions",
    "manual_trade",
    "update_position",
    "place_order",
    "cancel_order",
    "cancel_all_orders",
    "list_orders",
    "ping",
    "pause_trading",
    "resume_trading",
    "force_exit",
    "resume",
    "unknown",
];

/// Refusal codes of the upgrade handshake, the `reason` label of
/// `cryptobot_ws_upgrades_rejected_total` (all exist from the start, at zero).
pub const UPGRADE_REFUSALS: [&str; 7] = [
    "rate_limited",
    "too_many_connections",
    "origin_not_allowed",
    "subprotocol_required",
    "unauthorized",
    "forbidden",
    "too_many_connections_from_address",
];

/// Error codes of the gateway itself whose `cryptobot_ws_error_frames_total` series exist from
/// the start; service codes (`insufficient_funds`, ...) appear when first sent.
const GATEWAY_ERROR_CODES: [&str; 9] = [
    crate::protocol::codes::INVALID_MESSAGE,
    crate::protocol::codes::UNKNOWN_TYPE,
    crate::protocol::codes::INVALID_PAYLOAD,
    crate::protocol::codes::UNKNOWN_CHANNEL,
    crate::protocol::codes::UNKNOWN_SYMBOL,
    crate::protocol::codes::TOO_MANY_SUBSCRIPTIONS,
    crate::protocol::codes::INTERNAL,
    crate::protocol::codes::FORBIDDEN,
    crate::protocol::codes::RATE_LIMITED,
];

/// Counters, gauges and histograms of the gateway. Unlabelled series are relaxed atomics read
/// at scrape time; labelled ones are Prometheus vectors, registered by
/// [`GatewayMetrics::register`] into the server's own registry.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// Connection actors running now.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Upgrades refused, by `reason` (the refusal's `code`).
    pub upgrades_rejected: IntCounterVec,
    /// Frames written to clients, by message `type` (counted per worker, flushed about once a
    /// second).
    pub frames_sent: IntCounterVec,
    /// Inbound messages received.
    pub messages_received: AtomicU64,
    /// Ticker updates a client skipped because a newer price replaced them (conflation).
    pub tickers_conflated: AtomicU64,
    /// Connections closed because the client fell behind or blocked a send.
    pub slow_consumer_closes: AtomicU64,
    /// Connections closed because the peer was silent too long.
    pub idle_closes: AtomicU64,
    /// Connections closed for an oversized message.
    pub oversized_closes: AtomicU64,
    /// Connections closed for a binary frame, a protocol violation or the rate limit.
    pub protocol_closes: AtomicU64,
    /// `error` frames sent in reply to requests, by `code`.
    pub error_frames: IntCounterVec,
    /// Bus events the hub missed because it fell behind the bus.
    pub hub_lagged_events: AtomicU64,
    /// Periodic portfolio fetches that failed.
    pub portfolio_fetch_errors: AtomicU64,
    /// Hub received the event to its frame handed to the socket, by channel kind.
    pub delivery_seconds: HistogramVec,
    /// Text request received to its replies queued, by command.
    pub command_seconds: HistogramVec,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter_vec(name: &str, help: &str, label: &str, preset: &[&str]) -> IntCounterVec {
    // expect: the names and help texts are constants that satisfy Prometheus' rules.
    let vec = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    for value in preset {
        vec.with_label_values(&[value]);
    }
    vec
}

impl GatewayMetrics {
    /// Every series at zero, unregistered.
    #[must_use]
    pub fn new() -> Self {
        let delivery_seconds = latency_histogram(
            "cryptobot_ws_delivery_seconds",
            "Seconds from the gateway hub receiving an event to its frame being handed to the socket, by channel kind.",
            &["channel"],
        );
        for kind in CHANNEL_KINDS {
            delivery_seconds.with_label_values(&[kind]);
        }
        let command_seconds = latency_histogram(
            "cryptobot_command_seconds",
            "Seconds from a WebSocket request received to its replies queued, by command.",
            &["command"],
        );
        for command in COMMANDS {
            command_seconds.with_label_values(&[command]);
        }
        Self {
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            upgrades_rejected: counter_vec(
                "cryptobot_ws_upgrades_rejected_total",
                "WebSocket upgrades refused, by reason (the refusal's code).",
                "reason",
                &UPGRADE_REFUSALS,
            ),
            frames_sent: counter_vec(
                "cryptobot_ws_frames_sent_total",
                "Frames written to WebSocket clients, by message type.",
                "type",
                &FRAME_TYPES,
            ),
            messages_received: AtomicU64::new(0),
            tickers_conflated: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            idle_closes: AtomicU64::new(0),
            oversized_closes: AtomicU64::new(0),
            protocol_closes: AtomicU64::new(0),
            error_frames: counter_vec(
                "cryptobot_ws_error_frames_total",
                "Error frames sent in reply to requests, by code.",
                "code",
                &GATEWAY_ERROR_CODES,
            ),
            hub_lagged_events: AtomicU64::new(0),
            portfolio_fetch_errors: AtomicU64::new(0),
            delivery_seconds,
            command_seconds,
        }
    }

    /// Adds one.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a refused upgrade by its refusal code.
    pub fn upgrade_rejected(&self, reason: &str) {
        self.upgrades_rejected.with_label_values(&[reason]).inc();
    }

    /// Upgrades refused, all reasons.
    #[must_use]
    pub fn upgrades_rejected_total(&self) -> u64 {
        UPGRADE_REFUSALS
            .iter()
            .map(|reason| self.upgrades_rejected.with_label_values(&[reason]).get())
            .sum()
    }

    /// Records one handled request.
    pub fn command(&self, command: &str, took: Duration) {
        self.command_seconds
            .with_label_values(&[command])
            .observe(took.as_secs_f64());
    }

    /// Adds every gateway series to `registry`.
    ///
    /// # Errors
    /// A [`prometheus::Error`] when a series of the same name is registered already.
    pub fn register(self: &Arc<Self>, registry: &Registry) -> prometheus::Result<()> {
        type Field = fn(&GatewayMetrics) -> &AtomicU64;
        let rows: [(&str, bool, &str, Field); 10] = [
            (
                "cryptobot_ws_connections_open",
                false,
                "WebSocket connections open now.",
                |m| &m.connections_open,
            ),
            (
                "cryptobot_ws_connections_total",
                true,
                "WebSocket connections accepted.",
                |m| &m.connections_total,
            ),
            (
                "cryptobot_ws_messages_received_total",
                true,
                "Messages received from WebSocket clients.",
                |m| &m.messages_received,
            ),
            (
                "cryptobot_ws_tickers_conflated_total",
                true,
                "Ticker updates skipped for a slow client because a newer price replaced them.",
                |m| &m.tickers_conflated,
            ),
            (
                "cryptobot_ws_slow_consumer_closes_total",
                true,
                "Connections closed because the client fell behind.",
                |m| &m.slow_consumer_closes,
            ),
            (
                "cryptobot_ws_idle_closes_total",
                true,
                "Connections closed because the peer was silent too long.",
                |m| &m.idle_closes,
            ),
            (
                "cryptobot_ws_oversized_closes_total",
                true,
                "Connections closed for an oversized message.",
                |m| &m.oversized_closes,
            ),
            (
                "cryptobot_ws_protocol_closes_total",
                true,
                "Connections closed for binary frames, protocol errors or the rate limit.",
                |m| &m.protocol_closes,
            ),
            (
                "cryptobot_ws_hub_lagged_events_total",
                true,
                "Bus events the gateway hub missed by falling behind the bus.",
                |m| &m.hub_lagged_events,
            ),
            (
                "cryptobot_ws_portfolio_fetch_errors_total",
                true,
                "Periodic portfolio fetches that failed.",
                |m| &m.portfolio_fetch_errors,
            ),
        ];
        let mut atomics = ReadAtScrape::new();
        for (name, counter, help, field) in rows {
            let metrics = Arc::clone(self);
            // Counts stay far below 2^53.
            #[allow(clippy::cast_precision_loss)]
            let read = move || Some(field(&metrics).load(Ordering::Relaxed) as f64);
            atomics = if counter {
                atomics.counter(name, help, read)
            } else {
                atomics.gauge(name, help, read)
            };
        }
        atomics.register(registry)?;
        registry.register(Box::new(self.upgrades_rejected.clone()))?;
        registry.register(Box::new(self.frames_sent.clone()))?;
        registry.register(Box::new(self.error_frames.clone()))?;
        registry.register(Box::new(self.delivery_seconds.clone()))?;
        registry.register(Box::new(self.command_seconds.clone()))
    }
}

/// How often a worker's local counts reach the shared series.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One worker's unflushed counts of written frames and delivery times: plain (non-atomic)
/// local metrics, so writing a frame touches no cache line shared with other workers. The
/// worker's fan-out task flushes them about once a second ([`FLUSH_EVERY`]) and when it stops.
#[derive(Debug)]
pub(crate) struct LocalWire {
    frames: Vec<LocalIntCounter>,
    delivery: Vec<LocalHistogram>,
}

impl LocalWire {
    /// Local views of `metrics`' frame counters and delivery histograms.
    pub(crate) fn new(metrics: &GatewayMetrics) -> Self {
        Self {
            frames: FRAME_TYPES
                .iter()
                .map(|kind| metrics.frames_sent.with_label_values(&[kind]).local())
                .collect(),
            delivery: CHANNEL_KINDS
                .iter()
                .map(|kind| metrics.delivery_seconds.with_label_values(&[kind]).local())
                .collect(),
        }
    }

    /// Counts one written frame of type `kind` (an index in [`FRAME_TYPES`]).
    pub(crate) fn frame(&self, kind: usize) {
        if let Some(counter) = self.frames.get(kind) {
            counter.inc();
        }
    }

    /// Records the delivery time of a live event of channel kind `kind` written at `now`.
    pub(crate) fn delivered(&self, kind: u8, entered: Instant, now: Instant) {
        if let Some(histogram) = self.delivery.get(usize::from(kind)) {
            histogram.observe(now.saturating_duration_since(entered).as_secs_f64());
        }
    }

    /// Adds the local counts to the shared series and starts again from zero.
    pub(crate) fn flush(&self) {
        for counter in &self.frames {
            counter.flush();
        }
        for histogram in &self.delivery {
            histogram.flush();
        }
    }
}

impl Drop for LocalWire {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(metrics: &Arc<GatewayMetrics>) -> String {
        let registry = Registry::new();
        metrics.register(&registry).unwrap();
        cryptobot_services::metrics::encode(&registry)
    }

    #[test]
    fn renders_counters_gauges_and_labelled_series() {
        let metrics = Arc::new(GatewayMetrics::default());
        GatewayMetrics::incr(&metrics.connections_total);
        metrics.upgrade_rejected("origin_not_allowed");
        let out = scrape(&metrics);
        assert!(out.contains("# TYPE cryptobot_ws_connections_open gauge\n"));
        assert!(out.contains("cryptobot_ws_connections_total 1\n"));
        assert!(
            out.contains("cryptobot_ws_upgrades_rejected_total{reason=\"origin_not_allowed\"} 1\n")
        );
        assert!(out.contains("cryptobot_ws_upgrades_rejected_total{reason=\"unauthorized\"} 0\n"));
        assert!(out.contains("cryptobot_ws_frames_sent_total{type=\"ticker_update\"} 0\n"));
        assert!(out.contains("cryptobot_ws_delivery_seconds_count{channel=\"candles\"} 0\n"));
        assert!(out.contains("cryptobot_command_seconds_count{command=\"unknown\"} 0\n"));
        assert_eq!(metrics.upgrades_rejected_total(), 1);
    }

    #[test]
    fn local_counts_reach_the_shared_series_only_when_flushed() {
        let metrics = Arc::new(GatewayMetrics::default());
        let local = LocalWire::new(&metrics);
        let entered = Instant::now();
        local.frame(text_frame_type(
            br#"{"type":"trade_notification","payload":{}}"#,
        ));
        local.delivered(1, entered, entered + Duration::from_millis(3));
        let shared = || {
            metrics
                .delivery_seconds
                .with_label_values(&["trades"])
                .get_sample_count()
        };
        assert_eq!(shared(), 0);
        local.flush();
        assert_eq!(shared(), 1);
        let out = scrape(&metrics);
        assert!(out.contains("cryptobot_ws_frames_sent_total{type=\"trade_notification\"} 1\n"));
        assert!(out.contains(
            "cryptobot_ws_delivery_seconds_bucket{channel=\"trades\",le=\"0.0025\"} 0\n"
        ));
        assert!(
            out.contains(
                "cryptobot_ws_delivery_seconds_bucket{channel=\"trades\",le=\"0.005\"} 1\n"
            )
        );
    }

    #[test]
    fn frame_types_are_read_from_the_json_tag() {
        // TC0: known types
        assert_eq!(
            FRAME_TYPES[text_frame_type(br#"{"type":"ticker_update","x":1}"#)],
            "ticker_update"
        );
        assert_eq!(
            FRAME_TYPES[text_frame_type(br#"{"type":"error","code":"x"}"#)],
            "error"
        );
        // TC1: an unknown type, no tag first, an unterminated tag, not JSON
        assert_eq!(FRAME_TYPES[text_frame_type(br#"{"type":"zzz"}"#)], "other");
        assert_eq!(
            FRAME_TYPES[text_frame_type(br#"{"id":1,"type":"pong"}"#)],
            "other"
        );
        assert_eq!(FRAME_TYPES[text_frame_type(br#"{"type":"pong"#)], "other");
        assert_eq!(FRAME_TYPES[text_frame_type(b"hello")], "other");
        // TC2: control and binary frames
        assert_eq!(FRAME_TYPES[control_frame_type(true, false)], "ws_ping");
        assert_eq!(FRAME_TYPES[control_frame_type(false, true)], "ws_pong");
        assert_eq!(FRAME_TYPES[control_frame_type(false, false)], "binary");
    }

    #[test]
    fn every_server_message_type_has_a_label() {
        use crate::protocol::ServerMessage;
        let message = ServerMessage::error(None, "x", "y".to_owned());
        let json = message.to_json();
        assert_ne!(
            FRAME_TYPES[text_frame_type(json.as_bytes())],
            "other",
            "{json}"
        );
    }
}
