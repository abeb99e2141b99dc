//! Gateway counters, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters and gauges of the gateway; plain relaxed atomics, cheap on the send path.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// Connection actors running now.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Upgrades refused (origin, authentication, connection limit).
    pub upgrades_rejected: AtomicU64,
    /// Frames queued to clients.
    pub frames_sent: AtomicU64,
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
    /// `error` frames sent in reply to requests.
    pub error_frames: AtomicU64,
    /// Bus events the hub missed because it fell behind the bus.
    pub hub_lagged_events: AtomicU64,
    /// Periodic portfolio fetches that failed.
    pub portfolio_fetch_errors: AtomicU64,
}

impl GatewayMetrics {
    /// Adds one.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Appends every metric in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let rows: [(&str, &str, &str, &AtomicU64); 13] = [
            (
                "cryptobot_ws_connections_open",
                "gauge",
                "WebSocket connections open now.",
                &self.connections_open,
            ),
            (
                "cryptobot_ws_connections_total",
                "counter",
                "WebSocket connections accepted.",
                &self.connections_total,
            ),
            (
                "cryptobot_ws_upgrades_rejected_total",
                "counter",
                "WebSocket upgrades refused (origin, authentication, connection limit).",
                &self.upgrades_rejected,
            ),
            (
                "cryptobot_ws_frames_sent_total",
                "counter",
                "Frames queued to WebSocket clients.",
                &self.frames_sent,
            ),
            (
                "cryptobot_ws_messages_received_total",
                "counter",
                "Messages received from WebSocket clients.",
                &self.messages_received,
            ),
            (
                "cryptobot_ws_tickers_conflated_total",
                "counter",
                "Ticker updates skipped for a slow client because a newer price replaced them.",
                &self.tickers_conflated,
            ),
            (
                "cryptobot_ws_slow_consumer_closes_total",
                "counter",
                "Connections closed because the client fell behind.",
                &self.slow_consumer_closes,
            ),
            (
                "cryptobot_ws_idle_closes_total",
                "counter",
                "Connections closed because the peer was silent too long.",
                &self.idle_closes,
            ),
            (
                "cryptobot_ws_oversized_closes_total",
                "counter",
                "Connections closed for an oversized message.",
                &self.oversized_closes,
            ),
            (
                "cryptobot_ws_protocol_closes_total",
                "counter",
                "Connections closed for binary frames, protocol errors or the rate limit.",
                &self.protocol_closes,
            ),
            (
                "cryptobot_ws_error_frames_total",
                "counter",
                "Error frames sent in reply to requests.",
                &self.error_frames,
            ),
            (
                "cryptobot_ws_hub_lagged_events_total",
                "counter",
                "Bus events the gateway hub missed by falling behind the bus.",
                &self.hub_lagged_events,
            ),
            (
                "cryptobot_ws_portfolio_fetch_errors_total",
                "counter",
                "Periodic portfolio fetches that failed.",
                &self.portfolio_fetch_errors,
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let metrics = GatewayMetrics::default();
        GatewayMetrics::incr(&metrics.connections_total);
        GatewayMetrics::add(&metrics.frames_sent, 3);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("# TYPE cryptobot_ws_connections_open gauge\n"));
        assert!(out.contains("cryptobot_ws_connections_total 1\n"));
        assert!(out.contains("cryptobot_ws_frames_sent_total 3\n"));
    }
}
