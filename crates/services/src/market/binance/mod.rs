//! The Binance market: a connector actor reading Binance spot's public combined streams over
//! WebSocket (TLS with rustls) and a cloneable handle serving the latest tickers.
//!
//! The connector keeps the exchange's rules: it answers server pings, subscribes at most
//! `subscribe_rate_per_sec` requests per second (Binance counts every incoming message against
//! 5/s), reconnects with exponential backoff and jitter and subscribes again, reconnects on its
//! own before the 24-hour connection limit, and raises `feed_stalled` / `feed_resumed` alerts when
//! no update arrives for `stale_after_secs` and when updates flow again.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cryptobot_domain::{Alert, AlertType, Event, Severity, Symbol};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::config::{BinanceConfig, MAX_SECS, MarketConfig};
use super::feed_state::FeedState;
use super::{LatestTickers, ServesLatestTickers};
use crate::backoff::Backoff;
use crate::{Clock, EventBus, ServiceMetrics};

/// The combined-stream wire format.
mod wire;

use wire::Frame;

impl BinanceConfig {
    /// The subscribe requests' stream lists, in order: every symbol's stream, in batches of
    /// `streams_per_subscribe`.
    fn subscription_batches(&self, symbols: &[Symbol]) -> VecDeque<Vec<String>> {
        let names: Vec<String> = symbols
            .iter()
            .map(|symbol| wire::stream_name(symbol, self.stream))
            .collect();
        names
            .chunks(self.streams_per_subscribe.max(1))
            .map(<[String]>::to_vec)
            .collect()
    }

    /// The URL connected to: the combined-stream endpoint under `ws_url`.
    fn stream_url(&self) -> String {
        format!("{}/stream", self.ws_url.trim().trim_end_matches('/'))
    }
}

/// Cloneable handle of the Binance market: serves the latest ticker of each symbol.
#[derive(Debug, Clone)]
pub struct BinanceMarket {
    latest: LatestTickers,
    state: FeedState,
}

impl BinanceMarket {
    /// Builds the handle (no prices until the first update arrives) and the connector actor that
    /// drives it until `shutdown` is cancelled: it subscribes to `config.symbols` with the
    /// settings of `config.binance`, and `jitter_seed` seeds its reconnect jitter (give every
    /// process its own, so several bots do not reconnect in lockstep). The configuration should
    /// have passed [`MarketConfig::validate`] and [`BinanceConfig::validate`]; a symbol listed
    /// twice is subscribed once rather than panicking.
    #[must_use]
    pub fn new(
        config: &MarketConfig,
        jitter_seed: u64,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        metrics: Arc<ServiceMetrics>,
        shutdown: CancellationToken,
    ) -> (Self, BinanceFeed) {
        let latest = LatestTickers::new(config.symbols.clone(), []);
        let config = config.binance.clone();
        let state = FeedState::new("binance", Arc::clone(&clock));
        let market = Self {
            latest: latest.clone(),
            state: state.clone(),
        };
        let backoff = Backoff::new(
            Duration::from_millis(config.reconnect_min_ms),
            Duration::from_millis(config.reconnect_max_ms),
            jitter_seed,
        );
        let feed = BinanceFeed {
            known: latest.symbols().iter().cloned().collect(),
            tls: tls_config(),
            latest,
            state,
            bus,
            clock,
            metrics,
            backoff,
            stale_after: Duration::from_secs(config.stale_after_secs.clamp(1, MAX_SECS)),
            last_update: Instant::now(),
            stalled: false,
            next_request_id: 1,
            config,
            shutdown,
        };
        (market, feed)
    }

    /// The feed's observable state, for health and metrics.
    #[must_use]
    pub fn feed_state(&self) -> FeedState {
        self.state.clone()
    }
}

impl ServesLatestTickers for BinanceMarket {
    fn latest(&self) -> &LatestTickers {
        &self.latest
    }
}

/// rustls with the `ring` provider and the Mozilla roots compiled in (no system store, no
/// OpenSSL). `None` only if the provider offers no safe protocol version, which would make
/// `wss://` connections fail with a logged error instead of a panic.
fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => Some(Arc::new(
            builder.with_root_certificates(roots).with_no_client_auth(),
        )),
        Err(err) => {
            tracing::error!(%err, "TLS setup failed; wss:// connections will fail");
            None
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// Shutdown was requested.
    Shutdown,
    /// The connection reached `max_connection_age_secs`; reconnect at once.
    Aged,
    /// The connection failed or was closed; reconnect after a backoff. `delivered` tells whether
    /// it carried any update (then the backoff starts over).
    Lost {
        /// At least one update arrived on it.
        delivered: bool,
    },
}

/// The connector actor: keeps a connection to the exchange, writes the latest tickers into the
/// [`BinanceMarket`] handles and publishes [`Event::Ticker`] and feed alerts on the bus.
#[derive(Debug)]
pub struct BinanceFeed {
    config: BinanceConfig,
    known: HashSet<Symbol>,
    tls: Option<Arc<rustls::ClientConfig>>,
    latest: LatestTickers,
    state: FeedState,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    metrics: Arc<ServiceMetrics>,
    backoff: Backoff,
    stale_after: Duration,
    /// Tokio time of the last update (or of the start), for stale detection.
    last_update: Instant,
    stalled: bool,
    next_request_id: u64,
    shutdown: CancellationToken,
}

impl BinanceFeed {
    /// Runs the connector on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Connects, subscribes and relays updates until the shutdown token is cancelled,
    /// reconnecting whenever the connection ends.
    pub async fn run(mut self) {
        let shutdown = self.shutdown.clone();
        self.last_update = Instant::now();
        let period =
            (self.stale_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut stale_checks = tokio::time::interval_at(Instant::now() + period, period);
        stale_checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let end = self.session(&shutdown, &mut stale_checks).await;
            self.state.set_connected(false);
            match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Aged => {
                    tracing::info!("market feed connection reached its maximum age; reconnecting");
                    self.backoff.reset();
                }
                SessionEnd::Lost { delivered } => {
                    if delivered {
                        self.backoff.reset();
                    }
                    let delay = self.backoff.next_delay();
                    tracing::info!(?delay, "market feed reconnecting after a pause");
                    let pause = tokio::time::sleep(delay);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            biased;
                            () = shutdown.cancelled() => return,
                            () = &mut pause => break,
                            _ = stale_checks.tick() => self.check_stale(),
                        }
                    }
                }
            }
            self.state.record_reconnect();
        }
        tracing::debug!("binance feed stopped");
    }

    /// One connection: connect, subscribe, relay until it ends.
    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        stale_checks: &mut Interval,
    ) -> SessionEnd {
        let url = self.config.stream_url();
        let connect_timeout = Duration::from_secs(self.config.connect_timeout_secs);
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            None,
            false,
            self.tls.clone().map(Connector::Rustls),
        );
        let connect = tokio::time::timeout(connect_timeout, connect);
        tokio::pin!(connect);
        let mut socket: Socket = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return SessionEnd::Shutdown,
                _ = stale_checks.tick() => self.check_stale(),
                connected = &mut connect => match connected {
                    Ok(Ok((socket, _response))) => break socket,
                    Ok(Err(err)) => {
                        tracing::warn!(%url, %err, "market feed connection failed");
                        return SessionEnd::Lost { delivered: false };
                    }
                    Err(_) => {
                        tracing::warn!(%url, ?connect_timeout, "market feed connection timed out");
                        return SessionEnd::Lost { delivered: false };
                    }
                },
            }
        };
        tracing::info!(%url, "market feed connected");
        self.state.set_connected(true);

        let mut pending = self.config.subscription_batches(self.latest.symbols());
        let rate = self.config.subscribe_rate_per_sec.max(1);
        let mut subscribe_slots = tokio::time::interval(Duration::from_secs(1) / rate);
        subscribe_slots.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let max_age = Duration::from_secs(self.config.max_connection_age_secs.clamp(1, MAX_SECS));
        let aged = tokio::time::sleep(max_age);
        tokio::pin!(aged);
        let idle_timeout = Duration::from_secs(self.config.idle_timeout_secs.clamp(1, MAX_SECS));
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        let mut delivered = false;

        let end = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break SessionEnd::Shutdown,
                () = &mut aged => break SessionEnd::Aged,
                () = &mut idle => {
                    tracing::warn!(?idle_timeout, "market feed connection silent; dropping it");
                    break SessionEnd::Lost { delivered };
                }
                _ = stale_checks.tick() => self.check_stale(),
                _ = subscribe_slots.tick(), if !pending.is_empty() => {
                    let Some(streams) = pending.pop_front() else { continue };
                    let id = self.next_request_id;
                    self.next_request_id += 1;
                    let request = wire::subscribe_request(&streams, id);
                    tracing::debug!(id, streams = streams.len(), "subscribing");
                    if let Err(err) = socket.send(Message::text(request)).await {
                        tracing::warn!(%err, "market feed subscribe failed");
                        break SessionEnd::Lost { delivered };
                    }
                }
                received = socket.next() => {
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    match received {
                        Some(Ok(Message::Text(text))) => delivered |= self.handle_text(text.as_str()),
                        Some(Ok(Message::Ping(_))) => {
                            // tungstenite queued the pong; flushing sends it now rather than
                            // with the next outgoing message.
                            if let Err(err) = socket.flush().await {
                                tracing::warn!(%err, "market feed pong failed");
                                break SessionEnd::Lost { delivered };
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            tracing::warn!(?frame, "market feed closed by the exchange");
                            break SessionEnd::Lost { delivered };
                        }
                        Some(Ok(Message::Binary(_))) => {
                            tracing::warn!("market feed sent a binary message; skipped");
                            self.state.record_malformed();
                        }
                        Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Err(err)) => {
                            tracing::warn!(%err, "market feed connection failed");
                            break SessionEnd::Lost { delivered };
                        }
                        None => {
                            tracing::warn!("market feed connection ended");
                            break SessionEnd::Lost { delivered };
                        }
                    }
                }
            }
        };
        if matches!(end, SessionEnd::Shutdown | SessionEnd::Aged) {
            // A polite close; a peer that does not answer must not hold up shutdown.
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
        }
        end
    }

    /// Handles one text frame; returns whether it was a market update that was published.
    fn handle_text(&mut self, text: &str) -> bool {
        match wire::parse_frame(text) {
            Ok(Frame::Update(update)) => {
                let Some(symbol) = Symbol::parse(&update.symbol)
                    .ok()
                    .filter(|symbol| self.known.contains(symbol))
                else {
                    tracing::debug!(symbol = %update.symbol, "update for an unsubscribed symbol; skipped");
                    return false;
                };
                let now = self.clock.now();
                let ticker = {
                    let mut latest = self.latest.write();
                    let previous = latest.get(&symbol);
                    let Some(ticker) = update.into_ticker(symbol.clone(), previous, now) else {
                        return false;
                    };
                    latest.insert(ticker.symbol.clone(), ticker.clone());
                    ticker
                };
                self.state.record_update();
                self.last_update = Instant::now();
                if self.stalled {
                    self.stalled = false;
                    self.state.set_stale(false);
                    self.raise(
                        AlertType::FeedResumed,
                        Severity::Info,
                        "market feed resumed".to_owned(),
                    );
                }
                self.bus.publish(Event::Ticker(ticker));
                ServiceMetrics::incr(&self.metrics.ticks_published);
                true
            }
            Ok(Frame::Reply { id }) => {
                tracing::debug!(?id, "market feed request acknowledged");
                false
            }
            Ok(Frame::Error { message }) => {
                tracing::warn!(%message, "market feed request refused by the exchange");
                false
            }
            Err(reason) => {
                tracing::warn!(%reason, "malformed market feed message skipped");
                self.state.record_malformed();
                false
            }
        }
    }

    /// Raises `feed_stalled` once when no update arrived for `stale_after`.
    fn check_stale(&mut self) {
        if self.stalled || self.last_update.elapsed() < self.stale_after {
            return;
        }
        self.stalled = true;
        self.state.set_stale(true);
        self.raise(
            AlertType::FeedStalled,
            Severity::Warning,
            format!(
                "market feed delivered no update for {} s",
                self.stale_after.as_secs()
            ),
        );
    }

    fn raise(&self, alert_type: AlertType, severity: Severity, message: String) {
        tracing::info!(?alert_type, %message, "alert");
        self.bus.publish(Event::Alert(Alert {
            alert_type,
            severity,
            message,
            symbol: None,
            raised_at: self.clock.now(),
        }));
        ServiceMetrics::incr(&self.metrics.alerts_raised);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols(names: &[&str]) -> Vec<Symbol> {
        names.iter().map(|n| Symbol::parse(n).unwrap()).collect()
    }

    #[test]
    fn the_defaults_stay_within_binance_limits() {
        let config = BinanceConfig::default();
        // TC0: below 5 incoming messages per second, below the 24 h connection limit
        assert!(config.subscribe_rate_per_sec < 5);
        assert!(config.max_connection_age_secs < 86_400);
        // TC1: the combined-stream endpoint, with or without a trailing slash or blanks
        assert_eq!(config.stream_url(), "wss://stream.binance.com:9443/stream");
        for url in ["ws://127.0.0.1:1/", " ws://127.0.0.1:1 "] {
            let other = BinanceConfig {
                ws_url: url.into(),
                ..config.clone()
            };
            assert_eq!(other.validate(), Ok(()), "{url:?}");
            assert_eq!(other.stream_url(), "ws://127.0.0.1:1/stream", "{url:?}");
        }
    }

    #[test]
    fn subscriptions_are_split_into_batches() {
        let config = BinanceConfig {
            streams_per_subscribe: 2,
            ..BinanceConfig::default()
        };
        assert_eq!(
            config.subscription_batches(&symbols(&["BTCUSDT", "ETHUSDT", "SOLUSDT"])),
            [
                vec!["btcusdt@ticker".to_owned(), "ethusdt@ticker".to_owned()],
                vec!["solusdt@ticker".to_owned()]
            ]
        );
    }

    #[test]
    fn tls_is_set_up_with_ring() {
        assert!(tls_config().is_some());
    }
}
