//! The composition root: builds the services, the gateway and the HTTP server from settings, and
//! owns their shutdown.
//!
//! Shutdown order (one [`CancellationToken`](tokio_util::sync::CancellationToken) fans out to everything):
//! 1. SIGTERM / Ctrl-C (or [`Application::shutdown_token`]) cancels the token.
//! 2. Every WebSocket actor sends Close 1001 and ends; the HTTP server stops accepting and waits up
//!    to `server.shutdown_timeout_secs` for requests in flight.
//! 3. The market feed, signal engine, auto-trader and alert monitor end; the trading engine finishes
//!    the command it is executing (a trade is acknowledged only once committed) and ends.
//! 4. The last handle to the SQLite connection is dropped, which checkpoints the write-ahead log.
//!
//! An engine that finds its Redis lease taken by another engine cancels the same token at once
//! (after its writes were already fenced) and [`Application::run_until_stopped`] returns
//! [`StartupError::LeaseLost`] (exit code 3).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::http::KeepAlive;
use actix_web::{App, HttpServer, web};
use cryptobot_access::IpRange;
use cryptobot_domain::{Channel, TradeQuery};
use cryptobot_services::alerts::AlertMonitor;
use cryptobot_services::market::{
    BinanceFeed, BinanceMarket, CandleAggregator, FeedState, MarketSource, SimulatedFeed,
    SimulatedMarket,
};
use cryptobot_services::scale::{
    BrokerMetrics, CommandServer, Continuity, EngineLease, LeaseKeeper, LeaseOutcome,
    RedisFollowerBus, RedisPublishingBus, RedisSettings, RemoteMarket, RemoteTrading, StoredMarks,
    acquire_engine_lease, read_streams, wait_for_engine_lease,
};
use cryptobot_services::signals::{AutoTrader, SignalEngine};
use cryptobot_services::trading::{PaperTrading, Storage};
use cryptobot_services::{
    BusBackend, Clock, EventBus, HistoryLimits, InMemoryBus, MarketService, PortfolioService,
    ServiceError, ServiceMetrics, SystemClock, TradeService,
};
use cryptobot_ws_gateway::{Gateway, GatewayServices};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access_log;
use crate::config::{Role, Settings, StorageKind};
use crate::rate_limit::RestRateLimit;
use crate::routes;
use crate::state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listening socket could not be opened (port in use, no permission, bad address).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The settings were read but cannot be used.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The storage could not be opened or its books do not balance.
    #[error("storage {path}: {source}")]
    Storage {
        /// `storage.path`, or `storage.url` without its password.
        path: String,
        /// What failed.
        source: ServiceError,
    },
    /// The HTTP server failed while running.
    #[error("server: {0}")]
    Server(std::io::Error),
    /// Another engine keeps the lease on the same Redis key prefix.
    #[error(
        "another engine is running on bus.redis_prefix = \"{prefix}\" (it kept renewing its lease {prefix}:engine); stop it or use another prefix"
    )]
    EngineRunning {
        /// `bus.redis_prefix`.
        prefix: String,
    },
    /// While running, this engine found its lease held by another engine (it was paused or cut
    /// off longer than `bus.lease_ttl_ms` and was replaced): it stopped committing and publishing
    /// at once and stopped.
    #[error(
        "lost the engine lease on bus.redis_prefix = \"{prefix}\" to another engine (this one was paused or cut off longer than bus.lease_ttl_ms); stopped without committing or publishing anything more"
    )]
    LeaseLost {
        /// `bus.redis_prefix`.
        prefix: String,
    },
}

/// The market feed actor of the configured source, spawned once every subscriber is in place.
enum MarketFeed {
    Simulated(SimulatedFeed),
    Binance(Box<BinanceFeed>),
}

/// What a node runs below the gateway, by role.
struct Core {
    bus: Arc<dyn EventBus>,
    market: Arc<dyn MarketService>,
    trade: Arc<dyn TradeService>,
    portfolio: Arc<dyn PortfolioService>,
    feed_state: FeedState,
    feed: Option<MarketFeed>,
    tasks: Vec<JoinHandle<()>>,
    broker: Option<Arc<BrokerMetrics>>,
    lease: Option<Arc<EngineLease>>,
}

/// A built, listening server with its background tasks.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    gateway: Gateway,
    /// The engine's lease and `bus.redis_prefix` (an engine on Redis only).
    lease: Option<(Arc<EngineLease>, String)>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens storage, starts every service and binds the listening socket (port 0 picks a free
    /// one). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`StartupError`] for an unusable setting, storage that cannot be opened, or a socket that
    /// cannot be bound.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let shutdown = CancellationToken::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics = Arc::new(ServiceMetrics::default());
        let history = settings.bus.history_limits();

        let addr = SocketAddr::new(settings.server.host, settings.server.port);
        // Bind before starting anything, so a port in use fails fast and leaves nothing running.
        let listener =
            TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;

        let core = if settings.server.role == Role::Gateway {
            Self::gateway_node(&settings, history, &clock, &shutdown)?
        } else {
            Self::engine_node(&settings, history, &clock, &metrics, &shutdown, &listener).await?
        };
        let Core {
            bus,
            market,
            trade,
            portfolio,
            feed_state,
            feed,
            mut tasks,
            broker,
            lease,
        } = core;
        if let Some(lease) = &lease {
            // Losing the lease stops the whole node: its writes are already fenced.
            let (lost, stop) = (lease.lost(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    () = lost.cancelled() => stop.cancel(),
                    () = stop.cancelled() => {}
                }
            }));
        }

        let gateway_config = settings.gateway_config().map_err(StartupError::Config)?;
        let authenticator = Arc::new(gateway_config.auth.clone());
        let gateway = Gateway::new(
            gateway_config,
            GatewayServices {
                market: Arc::clone(&market),
                trade: Arc::clone(&trade),
                portfolio: Arc::clone(&portfolio),
                bus: Arc::clone(&bus),
            },
            shutdown.clone(),
        );
        // The feed starts last, so every subscriber above sees the first tickers.
        match feed {
            Some(MarketFeed::Simulated(feed)) => tasks.push(feed.spawn()),
            Some(MarketFeed::Binance(feed)) => tasks.push(feed.spawn()),
            None => {}
        }

        metrics.preset_symbols(&settings.market.symbols);
        let http_seconds = crate::exposition::http_request_seconds();
        let registry = crate::exposition::NodeMetrics {
            role: settings.server.role,
            services: &metrics,
            feed: &feed_state,
            gateway: &gateway,
            broker: broker.as_ref(),
            http: &http_seconds,
        }
        .registry()
        .map_err(|err| StartupError::Config(format!("metrics: {err}")))?;
        let state = web::Data::new(AppState {
            market,
            trade,
            portfolio,
            metrics,
            registry,
            gateway: gateway.clone(),
            started_at: Instant::now(),
            market_source: settings.market.source.as_str(),
            feed: feed_state,
            broker,
            role: settings.server.role,
        });
        let access = routes::RestAccess::new(
            authenticator,
            RestRateLimit::new(
                settings.server.rest_rate_per_ip,
                settings.server.rest_burst_per_ip,
                settings.ws.trusted_proxies.clone(),
            ),
        );
        let trusted_proxies: Arc<[IpRange]> = settings.ws.trusted_proxies.clone().into();
        let app_gateway = gateway.clone();
        let mut server = HttpServer::new(move || {
            let gateway = app_gateway.clone();
            App::new()
                .app_data(state.clone())
                // Before the REST scope: a matched `/api/v1` scope does not fall through to
                // services registered after it, so the WebSocket route must come first.
                .configure(move |cfg| gateway.configure(cfg))
                .configure(|cfg| routes::configure(cfg, &access))
                .default_service(web::to(routes::not_found))
                .wrap(actix_web::middleware::from_fn(routes::json_bodiless_errors))
                .wrap(actix_web::middleware::from_fn(access_log::log_requests(
                    Arc::clone(&trusted_proxies),
                    http_seconds.clone(),
                )))
        })
        .on_connect(gateway.on_connect())
        // Small: what a WebSocket's socket has not taken waits in its outbox (docs/protocol.md).
        .h1_write_buffer_size(gateway.write_buffer_bytes())
        .client_request_timeout(request_head_timeout(
            settings.server.request_head_timeout_ms,
        ))
        .keep_alive(match settings.server.keep_alive_secs {
            0 => KeepAlive::Disabled,
            secs => KeepAlive::Timeout(Duration::from_secs(secs)),
        })
        .disable_signals()
        .shutdown_signal(shutdown.clone().cancelled_owned())
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind { addr, source })?
            .run();
        tracing::info!(%addr, "listening on http://{addr}");
        Ok(Self {
            addr,
            server,
            shutdown,
            tasks,
            gateway,
            lease: lease.map(|lease| (lease, settings.bus.redis_prefix.clone())),
        })
    }

    /// The services of a node that runs the engine (`all` or `engine`), with the bus of
    /// `bus.backend`.
    async fn engine_node(
        settings: &Settings,
        history: HistoryLimits,
        clock: &Arc<dyn Clock>,
        metrics: &Arc<ServiceMetrics>,
        shutdown: &CancellationToken,
        listener: &TcpListener,
    ) -> Result<Core, StartupError> {
        let mut tasks = Vec::new();
        let (bus, broker, lease, storage): (Arc<dyn EventBus>, _, _, _) = match settings.bus.backend
        {
            BusBackend::Memory => {
                let local =
                    InMemoryBus::with_history(settings.bus.capacity, history, Arc::clone(clock));
                let storage = open_storage(settings).await?;
                (Arc::new(local), None, None, storage)
            }
            BusBackend::Redis => {
                // One engine per prefix: a second one would replace the first one's streams.
                let redis = settings.bus.redis_settings(&settings.market.symbols);
                // The token names this process run; the epoch (decided below, once the lease is
                // ours) goes into the liveness mark that gateways compare.
                let lease = Arc::new(EngineLease::new(
                    EngineLease::run_token(clock.now_us(), std::process::id()),
                    redis.lease_ttl,
                ));
                let standby = Standby::start(listener, settings);
                let outcome = if settings.bus.standby {
                    let waiting = std::time::Instant::now();
                    wait_for_engine_lease(&redis, &lease).await;
                    tracing::info!(
                        prefix = %redis.prefix,
                        waited_ms = u64::try_from(waiting.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "took the engine lease: this engine is now the active one"
                    );
                    LeaseOutcome::Held
                } else {
                    let wait = redis.lease_ttl + redis.lease_ttl / 2;
                    acquire_engine_lease(&redis, &lease, wait).await
                };
                standby.stop().await;
                match &outcome {
                    LeaseOutcome::Held => {}
                    LeaseOutcome::Unreachable(why) => tracing::warn!(
                        %why,
                        "redis unreachable at start: publishing is buffered and the engine lease is taken when it is back"
                    ),
                    LeaseOutcome::TakenByAnother => {
                        return Err(StartupError::EngineRunning {
                            prefix: redis.prefix,
                        });
                    }
                }
                let storage = open_storage(settings).await?;
                let continuity = if outcome == LeaseOutcome::Held {
                    continuity(&redis, settings.bus.history_size, &storage).await
                } else {
                    Continuity::NewEpoch("Redis was unreachable at start".into())
                };
                let (local, inherited) = match continuity {
                    Continuity::Continue {
                        epoch,
                        channels,
                        inherited,
                    } => {
                        let trades_seq = channels.get(&Channel::Trades).map_or(0, |t| t.last_seq);
                        tracing::info!(
                            epoch,
                            trades_seq,
                            last_published_trade = inherited.last_trade,
                            "continuing the epoch in Redis: the storage holds every trade its streams name, so clients keep their seq"
                        );
                        let local = InMemoryBus::continuing(
                            settings.bus.capacity,
                            history,
                            Arc::clone(clock),
                            epoch,
                            channels
                                .into_iter()
                                .map(|(channel, tail)| (channel, tail.last_seq, tail.history)),
                        );
                        (local, Some(inherited))
                    }
                    Continuity::NewEpoch(why) => {
                        let local = InMemoryBus::with_history(
                            settings.bus.capacity,
                            history,
                            Arc::clone(clock),
                        );
                        tracing::warn!(
                            epoch = local.epoch(),
                            %why,
                            "starting a new epoch: gateways close their clients with 1012 and resumes answer recovered:false"
                        );
                        (local, None)
                    }
                };
                lease.set_epoch(local.epoch());
                tasks.push(LeaseKeeper::new(redis, Arc::clone(&lease), shutdown.clone()).spawn());
                let broker = Arc::new(BrokerMetrics::default());
                let mut bus = RedisPublishingBus::new(
                    local,
                    settings.bus.publish_buffer,
                    Arc::clone(&broker),
                    Arc::clone(&lease),
                );
                if let Some(inherited) = inherited {
                    bus = bus.continuing(inherited);
                }
                let bus = Arc::new(bus);
                tasks.push(
                    bus.writer(
                        settings.bus.redis_settings(&settings.market.symbols),
                        Arc::clone(clock),
                        shutdown.clone(),
                    )
                    .spawn(),
                );
                (bus as Arc<dyn EventBus>, Some(broker), Some(lease), storage)
            }
        };

        settings.market.validate().map_err(StartupError::Config)?;
        let symbols = settings.market.symbols.clone();
        let (market, feed_state, feed): (Arc<dyn MarketService>, FeedState, MarketFeed) =
            match settings.market.source {
                MarketSource::Simulated => {
                    let (market, feed) = SimulatedMarket::new(
                        &settings.market,
                        Arc::clone(&bus),
                        Arc::clone(clock),
                        Arc::clone(metrics),
                        shutdown.clone(),
                    );
                    let state = FeedState::always_connected("simulated", Arc::clone(clock));
                    (Arc::new(market), state, MarketFeed::Simulated(feed))
                }
                MarketSource::Binance => {
                    let config = &settings.market.binance;
                    tracing::info!(ws_url = %config.ws_url, stream = config.stream.suffix(), "market data from Binance");
                    let (market, feed) = BinanceMarket::new(
                        &settings.market,
                        jitter_seed(),
                        Arc::clone(&bus),
                        Arc::clone(clock),
                        Arc::clone(metrics),
                        shutdown.clone(),
                    );
                    let state = market.feed_state();
                    (Arc::new(market), state, MarketFeed::Binance(Box::new(feed)))
                }
            };

        // Subscribed before the feed starts, like every consumer of tickers.
        let (candles, aggregator) = CandleAggregator::new(
            Arc::clone(&bus),
            storage.clone(),
            Arc::clone(clock),
            shutdown.clone(),
        );
        tasks.push(aggregator.spawn());
        let (trading, engine_task) = PaperTrading::spawn(
            settings.trading.clone(),
            storage,
            Arc::clone(&market),
            Arc::clone(&bus),
            Arc::clone(clock),
            Arc::clone(metrics),
            shutdown.clone(),
        )
        .map_err(|source| StartupError::Storage {
            path: settings.storage.location(),
            source,
        })?;
        let trading = trading.with_candles(candles);
        let trade: Arc<dyn TradeService> = Arc::new(trading.clone());
        let portfolio: Arc<dyn PortfolioService> = Arc::new(trading);

        tasks.push(engine_task);
        if let (Some(broker), Some(lease)) = (&broker, &lease) {
            tasks.push(
                CommandServer::new(
                    settings.bus.redis_settings(&settings.market.symbols),
                    Arc::clone(&trade),
                    Arc::clone(&portfolio),
                    Arc::clone(clock),
                    Arc::clone(broker),
                    Arc::clone(lease),
                    shutdown.clone(),
                )
                .spawn(),
            );
        }
        tasks.push(
            SignalEngine::new(
                settings.signals,
                Arc::clone(&bus),
                Arc::clone(clock),
                Arc::clone(metrics),
                shutdown.clone(),
            )
            .spawn(),
        );
        tasks.push(
            AutoTrader::new(
                &settings.trading,
                &*bus,
                Arc::clone(&trade),
                Arc::clone(&portfolio),
                shutdown.clone(),
            )
            .spawn(),
        );
        tasks.push(
            AlertMonitor::new(
                settings.alerts,
                symbols,
                Arc::clone(&bus),
                Arc::clone(clock),
                Arc::clone(metrics),
                shutdown.clone(),
            )
            .spawn(),
        );
        Ok(Core {
            bus,
            market,
            trade,
            portfolio,
            feed_state,
            feed: Some(feed),
            tasks,
            broker,
            lease,
        })
    }

    /// The services of a gateway node: a bus following the engine through Redis, market data
    /// from it, and trading commands forwarded to it. No storage, feed or strategy runs here.
    fn gateway_node(
        settings: &Settings,
        history: HistoryLimits,
        clock: &Arc<dyn Clock>,
        shutdown: &CancellationToken,
    ) -> Result<Core, StartupError> {
        let redis = settings.bus.redis_settings(&settings.market.symbols);
        settings.market.validate().map_err(StartupError::Config)?;
        let symbols = settings.market.symbols.clone();
        let broker = Arc::new(BrokerMetrics::default());
        let bus = Arc::new(RedisFollowerBus::new(
            settings.bus.capacity,
            history,
            Arc::clone(clock),
            Arc::clone(&broker),
        ));
        // Subscribed before the follower starts, so the stream tails reach the latest tickers.
        let (market, market_task) = RemoteMarket::spawn(symbols, &*bus, shutdown.clone());
        let node = format!("{}-{}", std::process::id(), clock.now_us());
        let (trading, replies_task) = RemoteTrading::spawn(
            redis.clone(),
            node,
            Arc::clone(clock),
            Arc::clone(&broker),
            shutdown.clone(),
        )
        .map_err(|err| StartupError::Config(err.to_string()))?;
        let tasks = vec![
            market_task,
            replies_task,
            bus.reader(redis, shutdown.clone()).spawn(),
        ];
        Ok(Core {
            bus,
            market: Arc::new(market),
            trade: Arc::new(trading.clone()),
            portfolio: Arc::new(trading),
            feed_state: FeedState::always_connected("redis", Arc::clone(clock)),
            feed: None,
            tasks,
            broker: Some(broker),
            lease: None,
        })
    }

    /// Returns the bound address (useful with port 0).
    #[must_use]
    pub const fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the bound port.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Returns the token that stops everything when cancelled.
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the shutdown token is cancelled, then stops everything in order.
    ///
    /// # Errors
    /// [`StartupError::Server`] when the HTTP server fails.
    /// [`StartupError::LeaseLost`] when another engine took this engine's lease.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let result = self.server.await.map_err(StartupError::Server);
        // The server also ends on its own only through the token; make sure the rest follows.
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.gateway.closed()).await;
        for task in self.tasks {
            if let Err(err) = task.await {
                tracing::error!(%err, "a background task failed during shutdown");
            }
        }
        tracing::info!("stopped");
        match self.lease {
            Some((lease, prefix)) if lease.is_lost() => Err(StartupError::LeaseLost { prefix }),
            _ => result,
        }
    }
}

/// Opens the storage of `[storage]`.
async fn open_storage(settings: &Settings) -> Result<Storage, StartupError> {
    let storage_settings = settings.storage.clone();
    tokio::task::spawn_blocking(move || match storage_settings.backend {
        StorageKind::Sqlite => Storage::open(&storage_settings.path),
        StorageKind::Postgres => Storage::open_postgres(&storage_settings.url),
    })
    .await
    .map_err(|join| StartupError::Config(format!("storage open panicked: {join}")))?
    .map_err(|source| StartupError::Storage {
        path: settings.storage.location(),
        source,
    })
}

/// Whether this engine, holding the lease, continues the epoch in Redis: reads the streams'
/// tails and the storage's last trade and order (see [`Continuity::decide`]).
async fn continuity(redis: &RedisSettings, history_size: usize, storage: &Storage) -> Continuity {
    let state = match read_streams(redis, history_size).await {
        Ok(state) => state,
        Err(err) => return Continuity::NewEpoch(format!("the streams could not be read: {err}")),
    };
    let streamed = state
        .channels
        .get(&Channel::Trades)
        .and_then(|tail| tail.last_trade.as_ref())
        .map(|trade| trade.id);
    let storage = storage.clone();
    let stored = tokio::task::spawn_blocking(move || -> Result<StoredMarks, ServiceError> {
        let last_trade = storage
            .recent_trades(1)?
            .first()
            .map_or(0, |trade| trade.id);
        let trade_at_streamed = match streamed {
            Some(id) if id > 0 => storage
                .trades(&TradeQuery {
                    after_id: Some(id - 1),
                    ..TradeQuery::latest(1)
                })?
                .trades
                .into_iter()
                .find(|trade| trade.id == id),
            _ => None,
        };
        Ok(StoredMarks {
            last_trade,
            trade_at_streamed,
            last_order: storage.last_order_id()?,
        })
    })
    .await;
    match stored {
        Ok(Ok(stored)) => Continuity::decide(state, &stored),
        Ok(Err(err)) => Continuity::NewEpoch(format!("the storage could not be read: {err}")),
        Err(err) => Continuity::NewEpoch(format!("the storage read failed: {err}")),
    }
}

/// The standby answerer of an engine that waits for the lease: started before the wait, stopped
/// (and awaited) after it, so the real server takes the socket over.
struct Standby {
    /// Ends the answerer.
    stop: CancellationToken,
    /// The answerer's task; `None` when the socket could not be shared with it.
    task: Option<JoinHandle<()>>,
}

impl Standby {
    fn start(listener: &TcpListener, settings: &Settings) -> Self {
        let stop = CancellationToken::new();
        let task =
            StandbyAnswerer::new(listener, settings, stop.clone()).map(StandbyAnswerer::spawn);
        Self { stop, task }
    }

    /// Stops answering; connections not yet accepted wait for the real server.
    async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// Answers every HTTP request with 503 `{"status": "standby"}` while an engine waits for the
/// lease, so health checks get an answer instead of a connection that hangs.
struct StandbyAnswerer {
    /// A clone of the server's listening socket.
    listener: tokio::net::TcpListener,
    /// The whole HTTP response, the same for every request.
    response: Arc<str>,
    /// Ends the answerer (connections already accepted still get their answer).
    shutdown: CancellationToken,
}

impl StandbyAnswerer {
    /// Longest a standby answer waits for the request head, and then for the client to take it.
    const READ_TIMEOUT: Duration = Duration::from_secs(2);

    /// An answerer on a clone of `listener`, or `None` (logged) when the socket cannot be cloned:
    /// the engine then waits without answering.
    fn new(
        listener: &TcpListener,
        settings: &Settings,
        shutdown: CancellationToken,
    ) -> Option<Self> {
        let listener = listener
            .try_clone()
            .and_then(|clone| {
                clone.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(clone)
            })
            .inspect_err(
                |err| tracing::warn!(%err, "no standby answers while waiting for the lease"),
            )
            .ok()?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "standby on http://{addr}: waiting for the engine lease (every request answers 503)");
        }
        let body = serde_json::json!({
            "status": "standby",
            "role": settings.server.role.as_str(),
            "reason": format!(
                "waiting for the engine lease on bus.redis_prefix = \"{}\"",
                settings.bus.redis_prefix
            ),
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into();
        Some(Self {
            listener,
            response,
            shutdown,
        })
    }

    /// Runs the answerer on the tokio runtime.
    fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Accepts until the shutdown token is cancelled; each connection is answered by a task of
    /// its own, so a client that sends nothing holds up no other.
    async fn run(self) {
        loop {
            let (stream, _) = tokio::select! {
                () = self.shutdown.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::debug!(%err, "standby accept failed");
                        continue;
                    }
                },
            };
            tokio::spawn(Self::answer(stream, Arc::clone(&self.response)));
        }
    }

    /// Reads (some of) the request first, so the client sees the answer, not a reset.
    async fn answer(mut stream: tokio::net::TcpStream, response: Arc<str>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut head = [0_u8; 4096];
        let _ = tokio::time::timeout(Self::READ_TIMEOUT, stream.read(&mut head)).await;
        let _ =
            tokio::time::timeout(Self::READ_TIMEOUT, stream.write_all(response.as_bytes())).await;
        let _ = stream.shutdown().await;
    }
}

/// How often actix-http refreshes the clock its request-head timer is set from.
const ACTIX_CLOCK_GRANULARITY: Duration = Duration::from_millis(500);

/// The timer given to actix-http for `server.request_head_timeout_ms`. actix sets the deadline
/// from a clock refreshed every 500 ms, so a timer of T fires after T - 0.5 s to T; adding the
/// granularity makes the configured value a guaranteed minimum (the cut comes after T to
/// T + 0.5 s). 0 stays 0, which actix reads as no limit.
fn request_head_timeout(ms: u64) -> Duration {
    match ms {
        0 => Duration::ZERO,
        ms => Duration::from_millis(ms) + ACTIX_CLOCK_GRANULARITY,
    }
}

/// A seed of the Binance connector's reconnect jitter that differs between runs and processes, so
/// several bots do not reconnect in lockstep.
fn jitter_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id())
}
