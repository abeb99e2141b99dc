//! The node's Prometheus registry: what `/metrics` serves, assembled once at startup from the
//! parts this node's role owns.

use std::sync::Arc;
use std::time::Instant;

use cryptobot_domain::PortfolioSummary;
use cryptobot_services::ServiceMetrics;
use cryptobot_services::market::FeedState;
use cryptobot_services::metrics::{ReadAtScrape, latency_histogram};
use cryptobot_services::scale::{BrokerMetrics, LinkEnd};
use cryptobot_ws_gateway::Gateway;
use prometheus::{HistogramVec, Registry};
use rust_decimal::prelude::ToPrimitive;

use crate::config::Role;

/// What a node exports, by role.
#[derive(Debug)]
pub struct NodeMetrics<'a> {
    /// What this node runs.
    pub role: Role,
    /// The engine's counters (exported by `all` and `engine` only).
    pub services: &'a ServiceMetrics,
    /// The market feed's state (exported by `all` and `engine` only).
    pub feed: &'a FeedState,
    /// The WebSocket gateway (every role).
    pub gateway: &'a Gateway,
    /// The broker link, with Redis.
    pub broker: Option<&'a Arc<BrokerMetrics>>,
    /// REST request durations (every role).
    pub http: &'a HistogramVec,
}

/// The histogram of REST request durations the access log middleware feeds.
#[must_use]
pub fn http_request_seconds() -> HistogramVec {
    latency_histogram(
        "cryptobot_http_request_seconds",
        "REST request durations by matched route pattern, method and status.",
        &["route", "method", "status"],
    )
}

impl NodeMetrics<'_> {
    /// A registry of this node's own series. A gateway exports only what it owns (connections,
    /// its broker link, REST): the engine's counters, its feed and its portfolio come from the
    /// engine node alone, so a sum over nodes counts each once.
    ///
    /// # Errors
    /// A [`prometheus::Error`] when two parts export a series of the same name (a programming
    /// error, caught by every test that starts a server).
    pub fn registry(&self) -> prometheus::Result<Registry> {
        let registry = Registry::new();
        let started = Instant::now();
        ReadAtScrape::new()
            .labelled_gauge(
                "cryptobot_build_info",
                "The running build; the value is always 1.",
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("role", self.role.as_str()),
                ],
                || Some(1.0),
            )
            .gauge(
                "cryptobot_uptime_seconds",
                "Seconds since the server started.",
                // Whole seconds, as before: an uptime needs no more.
                #[allow(clippy::cast_precision_loss)]
                move || Some(started.elapsed().as_secs() as f64),
            )
            .register(&registry)?;
        crate::process_metrics::collector().register(&registry)?;
        let runs_engine = self.role != Role::Gateway;
        if runs_engine {
            self.services.register(&registry)?;
            self.feed.collector().register(&registry)?;
        }
        self.gateway.register_metrics(&registry)?;
        if let Some(broker) = self.broker {
            let end = if runs_engine {
                LinkEnd::Publisher
            } else {
                LinkEnd::Follower
            };
            broker.collector(end).register(&registry)?;
        }
        registry.register(Box::new(self.http.clone()))?;
        Ok(registry)
    }
}

/// The node's series, with the portfolio gauges of `summary` (the engine's, read for this
/// scrape; `None` leaves them out), in the Prometheus text format.
#[must_use]
pub fn encode(registry: &Registry, summary: Option<&PortfolioSummary>) -> String {
    let mut families = registry.gather();
    if let Some(summary) = summary {
        // A registry of this scrape only: the values are read per scrape, never stored.
        let portfolio = Registry::new();
        let gauge = |value: rust_decimal::Decimal| {
            let value = value.to_f64();
            move || value
        };
        let registered = ReadAtScrape::new()
            .gauge(
                "cryptobot_portfolio_cash",
                "Free cash of the paper account.",
                gauge(summary.cash),
            )
            .gauge(
                "cryptobot_portfolio_total_value",
                "Cash plus positions at market value.",
                gauge(summary.total_value),
            )
            .gauge(
                "cryptobot_portfolio_realized_pnl",
                "Realized profit, fees included.",
                gauge(summary.realized_pnl),
            )
            .register(&portfolio);
        if registered.is_ok() {
            families.extend(portfolio.gather());
            families.sort_by(|a, b| a.name().cmp(b.name()));
        }
    }
    let mut out = String::with_capacity(16 * 1024);
    // An error only comes from a family without samples, which gather() never returns.
    let _ = prometheus::TextEncoder::new().encode_utf8(&families, &mut out);
    out
}
