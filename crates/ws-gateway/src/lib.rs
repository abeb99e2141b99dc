//! WebSocket gateway of cryptobot: streams the services' events to clients and takes their
//! commands, speaking the seed-compatible protocol of docs/protocol.md.
//!
//! One hub task reads the event bus and serializes each event once; one actor per connection owns
//! its subscriptions and policies (heartbeat, send timeout, size and rate limits, slow
//! consumer closes, graceful shutdown). The public API is small: [`GatewayConfig`], [`Gateway::new`]
//! with the [`GatewayServices`], [`Gateway::configure`] to mount `GET {path}` on an actix-web app,
//! [`Gateway::on_connect`] for socket tuning, [`Gateway::register_metrics`] and [`Gateway::closed`].
//!
//! Who may connect is decided by the access crate's rules (tokens, client address, per-address
//! rates), the same ones the REST API applies.
//!
//! May depend on: the domain, access and services crates (services: traits only), actix-web,
//! actix-ws, tokio.
//! Must not depend on: the server crate or any concrete service implementation. It takes
//! `cryptobot-services` with `default-features = false`, so an embedder compiles no SQLite, Redis,
//! rustls, ring or tungstenite: `cargo tree -p cryptobot-ws-gateway -e normal --prefix none |
//! sort -u | wc -l` counts 179 lines (140 distinct crates; 270 and 205 before the services'
//! features), and a clean debug build takes 31 s instead of 52 s (docs/architecture.md).

/// `[ws]` settings.
pub mod config;
/// The per-connection actor.
pub mod connection;
/// Request handling without a socket.
pub mod dispatch;
/// Worker-local fan-out: each worker thread hands the hub's frames to its own connections.
mod fanout;
/// The properties the fuzz targets check (`fuzzing` feature; fuzz/, `make fuzz`).
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
/// Drop guards of the running-actor count and the per-address connection count.
mod guards;
/// The upgrade handshake and its checks.
mod handshake;
/// The fan-out hub.
mod hub;
/// The inbound size guard: frame headers read off the raw stream.
mod inbound;
/// Gateway counters.
pub mod metrics;
/// The delivery core of one connection: order, dedupe, holding and conflation (public for the
/// benches and for embedders who want to reason about delivery; the gateway owns its outboxes).
pub mod outbox;
/// Wire messages and error codes.
pub mod protocol;
/// Requests encoded as a client writes them, for tests, fuzz targets and benches
/// (`test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
/// The socket writer: the upgraded response's body, encoding each outbox at write time.
mod wire;

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::{HttpRequest, web};
use cryptobot_services::{
    Clock, EventBus, MarketService, PortfolioService, SystemClock, TradeService,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;
pub use connection::End;
/// The access rules the upgrade applies (the `auth` of [`GatewayConfig`]), re-exported so that
/// an embedder configures the gateway with this crate alone.
pub use cryptobot_access::auth;
pub use cryptobot_access::{AuthError, Authenticator, Principal, StaticToken};
pub use hub::frame_bytes;
pub use metrics::GatewayMetrics;
pub use protocol::{ClientMessage, ClientRequest, ServerMessage};

use connection::Behaviour;
use cryptobot_access::IpRateLimiter;
use dispatch::Dispatcher;
use guards::HubGuard;
use hub::HubShared;

/// Distinguishes gateways in one process (each has its own fan-out on every worker).
static NEXT_GATEWAY_ID: AtomicU64 = AtomicU64::new(1);

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
    /// Process-unique id, the key of this gateway's fan-out on each worker thread.
    id: u64,
    config: Arc<GatewayConfig>,
    behaviour: Behaviour,
    metrics: Arc<GatewayMetrics>,
    /// Running connection actors plus the hub.
    active: Arc<watch::Sender<usize>>,
    shutdown: CancellationToken,
    next_id: AtomicU64,
    /// Open connections per client IP address (entries at zero are removed).
    per_ip: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
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
        let hub = Arc::new(HubShared::new());
        let active = Arc::new(watch::Sender::new(0_usize));
        let interval = (config.portfolio_interval_secs > 0)
            .then(|| Duration::from_secs(config.portfolio_interval_secs));
        let hub_guard = HubGuard::new(Arc::clone(&active));
        let task = hub::Hub::new(
            Arc::clone(&hub),
            services.bus.as_ref(),
            Arc::clone(&services.portfolio),
            interval,
            Arc::clone(&clock),
            Arc::clone(&metrics),
            shutdown.clone(),
        )
        .spawn();
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
                id: NEXT_GATEWAY_ID.fetch_add(1, Ordering::Relaxed),
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
        let preflight = self.clone();
        cfg.service(
            web::resource(&self.inner.config.path)
                .route(web::get().to(move |req: HttpRequest, body: web::Payload| {
                    let gateway = gateway.clone();
                    async move { gateway.upgrade(req, body).await }
                }))
                // A browser cannot read a refused upgrade's answer; this one it can.
                .route(web::post().to(move |req: HttpRequest| {
                    let gateway = preflight.clone();
                    async move { gateway.preflight(&req) }
                })),
        );
    }

    /// The HTTP/1 write buffer to give `HttpServer::h1_write_buffer_size` (`ws.write_buffer_bytes`):
    /// what a connection's socket has not taken waits in its outbox, not in a larger buffer.
    #[must_use]
    pub fn write_buffer_bytes(&self) -> usize {
        self.inner.config.write_buffer_bytes
    }

    /// Socket tuning for `HttpServer::on_connect` (`SO_SNDBUF`, `TCP_NOTSENT_LOWAT`,
    /// `TCP_USER_TIMEOUT`, `TCP_NODELAY`), so a client that stops reading cannot hold its socket
    /// and kernel memory for long, and unsent frames wait where tickers are still conflated.
    pub fn on_connect(&self) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
        let send_buffer = self.inner.config.tcp_send_buffer_bytes;
        let notsent_lowat = self.inner.config.tcp_notsent_lowat_bytes;
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
            #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
            if notsent_lowat > 0
                && let Err(err) = socket.set_tcp_notsent_lowat(notsent_lowat)
            {
                tracing::debug!(%err, "TCP_NOTSENT_LOWAT not set");
            }
            #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
            let _ = notsent_lowat;
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

    /// Adds the gateway's series to `registry`: the server's own, so several gateways (tests,
    /// a bot mounting two) never share one.
    ///
    /// # Errors
    /// A [`prometheus::Error`] when a series of the same name is registered already.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.inner.metrics.register(registry)
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
}
