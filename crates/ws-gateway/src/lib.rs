//! WebSocket gateway of cryptobot: streams the services' events to clients and takes their
//! commands, speaking the seed-compatible protocol of docs/protocol.md.
//!
//! One hub task reads the event bus and serializes each event once; one actor per connection owns
//! its session, subscriptions and policies (heartbeat, send timeout, size and rate limits, slow
//! consumer closes, graceful shutdown). The public API is small: [`GatewayConfig`], [`Gateway::new`]
//! with the [`GatewayServices`], [`Gateway::configure`] to mount `GET {path}` on an actix-web app,
//! [`Gateway::on_connect`] for socket tuning, [`Gateway::render_metrics`] and [`Gateway::closed`].
//!
//! May depend on: the domain and services crates (traits only), actix-web, actix-ws, tokio.
//! Must not depend on: the server crate or any concrete service implementation.

/// Bearer-token authentication shared with the REST API.
pub mod auth;
/// `[ws]` settings.
pub mod config;
/// The per-connection actor.
pub mod connection;
/// Request handling without a socket.
pub mod dispatch;
/// The long-lived event stream of a connection.
mod events;
/// The fan-out hub.
mod hub;
/// The inbound size guard: frame headers read off the raw stream.
mod inbound;
/// Per-address request rates (connection attempts here, REST requests in the server).
pub mod limits;
/// Gateway counters.
pub mod metrics;
/// Wire messages and error codes.
pub mod protocol;
/// The tickers one connection watches.
mod tickers;

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use cryptobot_services::{
    Clock, EventBus, MarketService, PortfolioService, SystemClock, TradeService,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use auth::{AuthError, Authenticator, Principal, StaticToken};
pub use config::GatewayConfig;
pub use connection::End;
pub use hub::frame_bytes;
pub use metrics::GatewayMetrics;
pub use protocol::{ClientMessage, ClientRequest, ServerMessage};

use connection::{ActiveGuard, Behaviour, Connection};
use dispatch::{Dispatcher, Subscriptions};
use hub::HubShared;
use inbound::{GuardedPayload, InboundBudget};
use limits::{IpRateLimiter, retry_after_secs};

/// Sub-protocol the gateway accepts (offer it when you also offer `bearer.<token>`).
pub const SUBPROTOCOL: &str = "cryptobot.v1";

/// The services the gateway calls; trait objects only.
#[derive(Clone)]
pub struct GatewayServices {
    /// Symbols and ticker snapshots.
    pub market: Arc<dyn MarketService>,
    /// `manual_trade`.
    pub trade: Arc<dyn TradeService>,
    /// `update_position` and the periodic portfolio summary.
    pub portfolio: Arc<dyn PortfolioService>,
    /// Every event pushed to clients.
    pub bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for GatewayServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayServices")
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

/// The gateway: cheap to clone (one shared state), mountable on any number of actix workers.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<GatewayConfig>,
    behaviour: Behaviour,
    metrics: Arc<GatewayMetrics>,
    /// Running connection actors plus the hub.
    active: Arc<watch::Sender<usize>>,
    shutdown: CancellationToken,
    next_id: AtomicU64,
    /// Open connections per client IP address (entries at zero are removed).
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Upgrade attempts per client address; `None` when unlimited.
    attempts: Option<IpRateLimiter>,
}

impl Gateway {
    /// Creates the gateway and spawns its fan-out hub (subscribed to the bus before this returns).
    ///
    /// Must be called inside a tokio runtime (it spawns the hub with `tokio::spawn`). The hub and
    /// every connection end when `shutdown` is cancelled; connections then get a 1001 close.
    #[must_use]
    pub fn new(
        config: GatewayConfig,
        services: GatewayServices,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_clock(config, services, Arc::new(SystemClock), shutdown)
    }

    /// Like [`Gateway::new`] with an injected clock (timestamps of pongs and snapshots).
    #[must_use]
    pub fn with_clock(
        config: GatewayConfig,
        services: GatewayServices,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = Arc::new(GatewayMetrics::default());
        let hub = Arc::new(HubShared::new(config.event_buffer));
        let active = Arc::new(watch::Sender::new(0_usize));
        let interval = (config.portfolio_interval_secs > 0)
            .then(|| Duration::from_secs(config.portfolio_interval_secs));
        let hub_guard = ActiveGuardHub::new(Arc::clone(&active));
        let task = hub::spawn(
            Arc::clone(&hub),
            services.bus.as_ref(),
            Arc::clone(&services.portfolio),
            interval,
            Arc::clone(&clock),
            Arc::clone(&metrics),
            shutdown.clone(),
        );
        // Count the hub as running until its task ends, so `closed()` also waits for it.
        tokio::spawn(async move {
            let _ = task.await;
            drop(hub_guard);
        });
        let behaviour = Behaviour::Services {
            dispatcher: Dispatcher {
                market: services.market,
                trade: services.trade,
                portfolio: services.portfolio,
                clock,
                bus: services.bus,
                limits: protocol::ConnectionLimits::from_config(&config),
            },
            hub,
        };
        Self::build(config, behaviour, metrics, active, shutdown)
    }

    /// A gateway whose connections echo every text and binary message back, with all the
    /// connection policies of the real one (for WebSocket conformance suites, see
    /// `examples/echo.rs`). Needs no runtime.
    #[must_use]
    pub fn echo(config: GatewayConfig, shutdown: CancellationToken) -> Self {
        Self::build(
            config,
            Behaviour::Echo,
            Arc::new(GatewayMetrics::default()),
            Arc::new(watch::Sender::new(0)),
            shutdown,
        )
    }

    fn build(
        config: GatewayConfig,
        behaviour: Behaviour,
        metrics: Arc<GatewayMetrics>,
        active: Arc<watch::Sender<usize>>,
        shutdown: CancellationToken,
    ) -> Self {
        let attempts = IpRateLimiter::new(config.connect_rate_per_ip, config.connect_burst_per_ip);
        Self {
            inner: Arc::new(Inner {
                attempts,
                config: Arc::new(config),
                behaviour,
                metrics,
                active,
                shutdown,
                next_id: AtomicU64::new(1),
                per_ip: Arc::new(Mutex::new(HashMap::new())),
            }),
        }
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The gateway's counters.
    #[must_use]
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    /// Mounts `GET {config.path}` on an actix-web app (as a resource, so other methods get 405).
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        let gateway = self.clone();
        cfg.service(web::resource(&self.inner.config.path).route(web::get().to(
            move |req: HttpRequest, body: web::Payload| {
                let gateway = gateway.clone();
                async move { gateway.upgrade(req, body).await }
            },
        )));
    }

    /// Socket tuning for `HttpServer::on_connect` (`SO_SNDBUF`, `TCP_USER_TIMEOUT`, `TCP_NODELAY`),
    /// so a client that stops reading cannot hold its socket and kernel memory for long.
    pub fn on_connect(&self) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
        let send_buffer = self.inner.config.tcp_send_buffer_bytes;
        let user_timeout = self.inner.config.tcp_user_timeout_secs;
        let nodelay = self.inner.config.tcp_nodelay;
        move |conn: &dyn Any, _: &mut Extensions| {
            let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
                return;
            };
            let socket = socket2::SockRef::from(tcp);
            if send_buffer > 0
                && let Err(err) = socket.set_send_buffer_size(send_buffer)
            {
                tracing::debug!(%err, "SO_SNDBUF not set");
            }
            #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
            if user_timeout > 0
                && let Err(err) =
                    socket.set_tcp_user_timeout(Some(Duration::from_secs(user_timeout)))
            {
                tracing::debug!(%err, "TCP_USER_TIMEOUT not set");
            }
            #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
            let _ = user_timeout;
            if nodelay && let Err(err) = socket.set_tcp_nodelay(true) {
                tracing::debug!(%err, "TCP_NODELAY not set");
            }
        }
    }

    /// Appends the gateway metrics in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        self.inner.metrics.render(out);
    }

    /// Number of connection actors running now.
    #[must_use]
    pub fn open_connections(&self) -> u64 {
        self.inner.metrics.connections_open.load(Ordering::Relaxed)
    }

    /// Resolves when every connection actor and the hub have ended.
    ///
    /// Meant for shutdown ordering: cancel the token first (actors then close with 1001 and end
    /// within `close_timeout_ms`). Without a cancelled token it waits while connections are open.
    pub async fn closed(&self) {
        let mut receiver = self.inner.active.subscribe();
        let _ = receiver.wait_for(|running| *running == 0).await;
    }

    /// Checks the request, upgrades it and spawns the connection actor.
    async fn upgrade(
        &self,
        req: HttpRequest,
        body: web::Payload,
    ) -> Result<HttpResponse, actix_web::Error> {
        let inner = &self.inner;
        let (principal, ip_slot) = match self.refuse(&req) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                GatewayMetrics::incr(&inner.metrics.upgrades_rejected);
                return Ok(*refusal);
            }
        };
        let budget = Rc::new(InboundBudget::default());
        let guarded = GuardedPayload::new(
            body.into_inner(),
            Rc::clone(&budget),
            inner.config.max_message_bytes,
        );
        let boxed: std::pin::Pin<
            Box<
                dyn futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>,
            >,
        > = Box::pin(guarded);
        let mut payload = actix_web::dev::Payload::from(boxed);
        let body = web::Payload::from_request(&req, &mut payload).await?;
        let (response, session, stream) =
            actix_ws::handle_with_protocols(&req, body, &[SUBPROTOCOL])?;
        let inbound = stream
            .max_frame_size(inner.config.max_message_bytes)
            .aggregate_continuations()
            .max_continuation_size(inner.config.max_message_bytes);
        let (events, behaviour) = match &inner.behaviour {
            Behaviour::Services { hub, .. } => {
                (Some(hub.event_receiver()), inner.behaviour.clone())
            }
            Behaviour::Echo => (None, Behaviour::Echo),
        };
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let welcome = matches!(inner.behaviour, Behaviour::Services { .. })
            && req
                .query_string()
                .split('&')
                .any(|pair| pair == "welcome=1" || pair == "welcome=true");
        let connection = Connection {
            id,
            session,
            inbound,
            budget,
            config: Arc::clone(&inner.config),
            behaviour,
            subs: Subscriptions::new(inner.config.max_subscriptions),
            events,
            tickers: tickers::TickerStreams::new(),
            delivered_seq: std::collections::HashMap::new(),
            event_seq: std::collections::HashMap::new(),
            // `?welcome=1`: announce the epoch first and hold pushes until the first message, so
            // a resume takes effect before any live event of the default channels.
            held: welcome,
            principal,
            _ip_slot: ip_slot,
            last_seen: Instant::now(),
            metrics: Arc::clone(&inner.metrics),
            shutdown: inner.shutdown.clone(),
            _active: ActiveGuard::new(Arc::clone(&inner.active), Arc::clone(&inner.metrics)),
        };
        let span = tracing::info_span!("ws", conn = id, peer = ?req.peer_addr(), principal = %connection.principal.name);
        tracing::info!(parent: &span, "websocket connection opened");
        // MessageStream is !Send: the actor stays on this worker's LocalSet.
        actix_web::rt::spawn(connection.run().instrument(span));
        Ok(response)
    }

    /// Returns the caller, or the response refusing the upgrade. Checks run cheapest first; the
    /// attempt rate comes before authentication so that guessing tokens is rate limited too.
    fn refuse(&self, req: &HttpRequest) -> Result<(Principal, Option<IpSlot>), Box<HttpResponse>> {
        let config = &self.inner.config;
        let ip = client_ip(req, &config.trusted_proxies);
        let over_rate = self
            .inner
            .attempts
            .as_ref()
            .zip(ip)
            .and_then(|(limiter, ip)| limiter.check(ip).err());
        if let Some(wait) = over_rate {
            return Err(refusal(
                HttpResponse::TooManyRequests()
                    .insert_header((header::RETRY_AFTER, retry_after_secs(wait).to_string())),
                "rate_limited",
                "too many connection attempts from this address",
            ));
        }
        if self.open_connections() >= config.max_connections as u64 {
            return Err(refusal(
                HttpResponse::ServiceUnavailable().insert_header((header::RETRY_AFTER, "5")),
                "too_many_connections",
                "too many connections",
            ));
        }
        if !origin_allowed(req, config) {
            return Err(refusal(
                &mut HttpResponse::Forbidden(),
                "origin_not_allowed",
                "origin not allowed",
            ));
        }
        subprotocol_offer_ok(req)?;
        let principal = config.auth.authenticate(req).map_err(|err| {
            tracing::info!(peer = ?req.peer_addr(), %err, "websocket upgrade refused");
            refusal(
                HttpResponse::Unauthorized().insert_header((header::WWW_AUTHENTICATE, "Bearer")),
                "unauthorized",
                &err.to_string(),
            )
        })?;
        if !principal.can_read() {
            return Err(refusal(
                &mut HttpResponse::Forbidden(),
                "forbidden",
                "token lacks the read scope",
            ));
        }
        let slot = match ip {
            Some(ip) if config.max_connections_per_ip > 0 => Some(
                IpSlot::acquire(&self.inner.per_ip, ip, config.max_connections_per_ip).ok_or_else(
                    || {
                        refusal(
                            HttpResponse::TooManyRequests()
                                .insert_header((header::RETRY_AFTER, "5")),
                            "too_many_connections_from_address",
                            "too many connections from this address",
                        )
                    },
                )?,
            ),
            _ => None,
        };
        Ok((principal, slot))
    }
}

/// Refuses an upgrade that offers sub-protocols without [`SUBPROTOCOL`] (e.g. `bearer.<token>`
/// alone): the server could select none, which browsers and most clients treat as a failed
/// handshake after the upgrade, and selecting `bearer.<token>` would echo the token in a header.
/// 400 `subprotocol_required` says what to offer instead.
fn subprotocol_offer_ok(req: &HttpRequest) -> Result<(), Box<HttpResponse>> {
    let mut offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .peekable();
    if offered.peek().is_none() || offered.any(|name| name == SUBPROTOCOL) {
        return Ok(());
    }
    Err(refusal(
        &mut HttpResponse::BadRequest(),
        "subprotocol_required",
        "offer the sub-protocol cryptobot.v1 (together with bearer.<token> when the token goes there)",
    ))
}

/// A refused upgrade: the REST API's error body, `{"error": "..", "code": ".."}`.
fn refusal(
    response: &mut actix_web::HttpResponseBuilder,
    code: &str,
    message: &str,
) -> Box<HttpResponse> {
    Box::new(response.json(serde_json::json!({ "error": message, "code": code })))
}

/// The client's IP address: the TCP peer, or the last `X-Forwarded-For` entry when the peer is a
/// trusted proxy (earlier entries could be forged by the client). Shared with the REST API's
/// per-address limits.
#[must_use]
pub fn client_ip(req: &HttpRequest, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .and_then(|last| last.trim().parse().ok());
    Some(forwarded.unwrap_or(peer))
}

/// One connection counted against its client IP address; released on drop.
#[derive(Debug)]
pub(crate) struct IpSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    /// Counts one more connection from `ip`, or `None` when it already has `limit`.
    fn acquire(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, limit: usize) -> Option<Self> {
        // A poisoned lock only means another thread panicked mid-update; the counts stay usable.
        let mut counts = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self {
            map: Arc::clone(map),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Decrements the running count when the hub task ends.
struct ActiveGuardHub(Arc<watch::Sender<usize>>);

impl ActiveGuardHub {
    fn new(active: Arc<watch::Sender<usize>>) -> Self {
        active.send_modify(|n| *n += 1);
        Self(active)
    }
}

impl Drop for ActiveGuardHub {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Browsers always send `Origin`; other clients usually do not. Cross-site WebSocket hijacking is
/// prevented by accepting only the listed origins, or the page's own origin when none is listed.
fn origin_allowed(req: &HttpRequest, config: &GatewayConfig) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    (!host.is_empty() && origin_host.eq_ignore_ascii_case(host))
        || (config.allow_localhost_origins && is_localhost(origin_host))
        || config
            .allowed_origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// Whether `host[:port]` names the local machine: `localhost`, `127.0.0.0/8` or `[::1]`.
fn is_localhost(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split_once(']').map_or("", |(inside, _)| inside)
    } else {
        host_port
            .split_once(':')
            .map_or(host_port, |(host, _)| host)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn origin_policy() {
        let request = |origin: Option<&str>| {
            let mut req = TestRequest::default().insert_header((header::HOST, "bot.example:8080"));
            if let Some(origin) = origin {
                req = req.insert_header((header::ORIGIN, origin));
            }
            req.to_http_request()
        };
        let config = |list: &[&str], localhost: bool| GatewayConfig {
            allowed_origins: list.iter().map(|o| (*o).to_owned()).collect(),
            allow_localhost_origins: localhost,
            ..GatewayConfig::default()
        };
        let defaults = GatewayConfig::default();
        let cases: [(&str, Option<&str>, GatewayConfig, bool); 14] = [
            // TC0: defaults: own origin, localhost pages and non-browser clients only
            (
                "same",
                Some("http://bot.example:8080"),
                defaults.clone(),
                true,
            ),
            (
                "same, other case",
                Some("http://BOT.example:8080"),
                defaults.clone(),
                true,
            ),
            (
                "cross",
                Some("https://evil.example"),
                defaults.clone(),
                false,
            ),
            (
                "same host, other port",
                Some("http://bot.example:9999"),
                defaults.clone(),
                false,
            ),
            ("no origin", None, defaults.clone(), true),
            (
                "localhost",
                Some("http://localhost:3000"),
                defaults.clone(),
                true,
            ),
            (
                "127.0.0.1",
                Some("http://127.0.0.1:5173"),
                defaults.clone(),
                true,
            ),
            ("[::1]", Some("http://[::1]:8000"), defaults.clone(), true),
            (
                "localhost lookalike",
                Some("http://localhost.evil.example"),
                defaults.clone(),
                false,
            ),
            ("null origin", Some("null"), defaults, false),
            // TC1: localhost off
            (
                "localhost off",
                Some("http://localhost:3000"),
                config(&[], false),
                false,
            ),
            // TC2: allow-list adds to the own origin
            (
                "listed",
                Some("https://evil.example"),
                config(&["https://evil.example"], false),
                true,
            ),
            (
                "same with a list",
                Some("http://bot.example:8080"),
                config(&["https://x.example"], false),
                true,
            ),
            // TC3: wildcard
            (
                "wildcard",
                Some("https://evil.example"),
                config(&["*"], false),
                true,
            ),
        ];
        for (name, origin, config, allowed) in cases {
            assert_eq!(origin_allowed(&request(origin), &config), allowed, "{name}");
        }
    }

    #[test]
    fn subprotocol_offers_must_include_cryptobot_v1() {
        let offer = |protocols: &[&str]| {
            let mut req = TestRequest::default();
            for protocol in protocols {
                req = req.append_header((header::SEC_WEBSOCKET_PROTOCOL, *protocol));
            }
            subprotocol_offer_ok(&req.to_http_request()).is_ok()
        };
        // TC0: nothing offered, or cryptobot.v1 among the offers (one header or several)
        assert!(offer(&[]));
        assert!(offer(&["cryptobot.v1"]));
        assert!(offer(&["bearer.abc, cryptobot.v1"]));
        assert!(offer(&["bearer.abc", "cryptobot.v1"]));
        // TC1: offers without it
        assert!(!offer(&["bearer.abc"]));
        assert!(!offer(&["graphql-ws"]));
        assert!(!offer(&["cryptobot.v2, bearer.abc"]));
    }

    #[test]
    fn client_ip_trusts_forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let request = |peer: &str| {
            TestRequest::default()
                .peer_addr(format!("{peer}:40000").parse().unwrap())
                .insert_header(("X-Forwarded-For", "6.6.6.6, 203.0.113.7"))
                .to_http_request()
        };
        // TC0: an untrusted peer is the client, whatever it claims
        assert_eq!(
            client_ip(&request("198.51.100.2"), &[proxy]),
            "198.51.100.2".parse().ok()
        );
        // TC1: a trusted proxy: the last forwarded address (the one the proxy saw)
        assert_eq!(
            client_ip(&request("10.0.0.1"), &[proxy]),
            "203.0.113.7".parse().ok()
        );
        // TC2: no trusted proxies configured
        assert_eq!(
            client_ip(&request("10.0.0.1"), &[]),
            "10.0.0.1".parse().ok()
        );
    }

    #[test]
    fn ip_slots_count_and_release() {
        let map = Arc::new(Mutex::new(HashMap::new()));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = IpSlot::acquire(&map, ip, 2).unwrap();
        let second = IpSlot::acquire(&map, ip, 2).unwrap();
        assert!(
            IpSlot::acquire(&map, ip, 2).is_none(),
            "third over the limit"
        );
        assert!(
            IpSlot::acquire(&map, "192.0.2.2".parse().unwrap(), 2).is_some(),
            "other IPs unaffected"
        );
        drop(first);
        let third = IpSlot::acquire(&map, ip, 2).unwrap();
        drop((second, third));
        assert!(map.lock().unwrap().is_empty(), "no entry left behind");
    }
}
