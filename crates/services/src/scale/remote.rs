use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cryptobot_domain::{
    Candle, DailyProfit, Event, Interval, LevelChange, Order, OrderPage, OrderQuery, OrderRef,
    OrderRequest, Performance, PortfolioSummary, Position, PositionUpdate, Symbol, Trade,
    TradePage, TradeQuery, TradeRequest,
};
use redis::aio::MultiplexedConnection;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use super::{BrokerMetrics, EngineLease, RedisSettings, link};
use crate::market::{LatestTickers, ServesLatestTickers};
use crate::{
    Clock, EventBus, Execution, OpenOrders, Placement, PortfolioService, ServiceError,
    Subscription, TradeService,
};

/// Seconds a `BLPOP` waits (also how fast shutdown is seen by the listeners).
const BLPOP_SECS: u64 = 1;
/// Forwarded commands the engine executes at once.
const SERVER_CONCURRENCY: usize = 64;
/// Longest the request list may grow while no engine consumes it.
const MAX_QUEUED_REQUESTS: isize = 10_000;
/// Seconds an unread reply is kept.
const REPLY_TTL_SECS: i64 = 60;

/// A command forwarded from a gateway to the engine.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    reply_to: String,
    /// Wall-clock deadline (µs): the engine does not start a command past it, since the gateway
    /// has already answered `unavailable`.
    deadline_us: i64,
    call: Call,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Call {
    Execute {
        request: TradeRequest,
    },
    /// The latest trades by count: served for gateway nodes that ask in this form.
    RecentTrades {
        limit: usize,
    },
    /// `GET /api/v1/trades` on a gateway node: the query forwarded as it is.
    Trades {
        query: TradeQuery,
    },
    Performance,
    DailyProfit {
        days: u32,
    },
    Summary,
    UpdatePosition {
        symbol: Symbol,
        stop_loss: Level,
        take_profit: Level,
    },
    PlaceOrder {
        request: OrderRequest,
    },
    CancelOrder {
        order: OrderRef,
    },
    CancelAllOrders {
        symbol: Option<Symbol>,
    },
    Orders {
        query: OrderQuery,
    },
    OpenOrders,
    Candles {
        query: crate::market::CandleQuery,
    },
    OpenCandle {
        symbol: Symbol,
        interval: Interval,
    },
}

/// [`LevelChange`] on the wire (the domain type only deserializes its client form).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Level {
    Keep,
    Clear,
    Set(#[serde(with = "rust_decimal::serde::str")] Decimal),
}

impl From<LevelChange> for Level {
    fn from(change: LevelChange) -> Self {
        match change {
            LevelChange::Keep => Self::Keep,
            LevelChange::Clear => Self::Clear,
            LevelChange::Set(level) => Self::Set(level),
        }
    }
}

impl From<Level> for LevelChange {
    fn from(level: Level) -> Self {
        match level {
            Level::Keep => Self::Keep,
            Level::Clear => Self::Clear,
            Level::Set(level) => Self::Set(level),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    id: u64,
    result: Result<Answer, WireError>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Execution { trade: Trade, replayed: bool },
    Trades(Vec<Trade>),
    TradePage(TradePage),
    Performance(Box<Performance>),
    DailyProfit(Vec<DailyProfit>),
    Summary(Box<PortfolioSummary>),
    Position(Position),
    Placement(Box<Placement>),
    Order(Box<Order>),
    OrderList(Vec<Order>),
    OrderPage(OrderPage),
    OpenOrders(OpenOrders),
    Candles(Vec<Candle>),
    OpenCandle(Option<Candle>),
}

#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    code: String,
    message: String,
    client_error: bool,
}

impl From<&ServiceError> for WireError {
    fn from(err: &ServiceError) -> Self {
        let message = if let ServiceError::Storage(detail) = err {
            // Storage details (paths, SQL) stay in the engine's log, as the REST API does.
            tracing::error!(%detail, "storage failure while serving a forwarded command");
            "storage failure; the command was not executed".to_owned()
        } else {
            err.to_string()
        };
        Self {
            code: err.code().to_owned(),
            message,
            client_error: err.is_client_error(),
        }
    }
}

impl From<WireError> for ServiceError {
    fn from(err: WireError) -> Self {
        Self::Remote {
            code: Self::known_code(&err.code),
            message: err.message,
            client_error: err.client_error,
        }
    }
}

/// The engine side: executes forwarded commands on the local services and replies to the
/// gateway that sent them. Idempotency is the engine's own (`client_order_id`).
///
/// A command is executed only while `lease` says this process is the engine; otherwise it goes
/// back to the head of the list, for the engine that holds the lease (or for this one, once its
/// lease is confirmed again), and the server stops for good once the lease is lost.
pub struct CommandServer {
    settings: RedisSettings,
    trade: Arc<dyn TradeService>,
    portfolio: Arc<dyn PortfolioService>,
    clock: Arc<dyn Clock>,
    metrics: Arc<BrokerMetrics>,
    lease: Arc<EngineLease>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for CommandServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandServer")
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

impl CommandServer {
    /// A server of the commands forwarded under `settings.prefix` to `trade` and `portfolio`,
    /// until `shutdown`.
    #[must_use]
    pub fn new(
        settings: RedisSettings,
        trade: Arc<dyn TradeService>,
        portfolio: Arc<dyn PortfolioService>,
        clock: Arc<dyn Clock>,
        metrics: Arc<BrokerMetrics>,
        lease: Arc<EngineLease>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            settings,
            trade,
            portfolio,
            clock,
            metrics,
            lease,
            shutdown,
        }
    }

    /// Runs the server on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Serves forwarded commands until the shutdown token is cancelled or the lease is lost.
    pub async fn run(self) {
        let Self {
            settings,
            trade,
            portfolio,
            clock,
            metrics,
            lease,
            shutdown,
        } = self;
        let Some(client) = link::client(&settings.url, "forwarded commands are not served") else {
            return;
        };
        let limit = Arc::new(Semaphore::new(SERVER_CONCURRENCY));
        let timeout = Duration::from_secs(BLPOP_SECS + 3);
        let mut backoff = link::backoff(&*clock);
        'connect: loop {
            let Some(mut conn) = link::connect(&client, timeout, &mut backoff, &shutdown).await
            else {
                return;
            };
            // Replies go out on their own connection: the listening one blocks in BLPOP.
            let Some(replies) = link::connect(&client, timeout, &mut backoff, &shutdown).await
            else {
                return;
            };
            loop {
                if shutdown.is_cancelled() || lease.is_lost() {
                    return;
                }
                let popped: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
                    .arg(settings.requests_key())
                    .arg(BLPOP_SECS)
                    .query_async(&mut conn)
                    .await;
                let raw = match popped {
                    Ok(Some((_, raw))) => raw,
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::warn!(%err, "redis: command listener failed; reconnecting");
                        if !link::pause(&mut backoff, &shutdown).await {
                            return;
                        }
                        continue 'connect;
                    }
                };
                if let Err(err) = lease.check() {
                    // Not ours to execute now: another engine may hold the lease (this process
                    // was paused), so the command goes back first in line, deadline unchanged.
                    tracing::warn!(%err, "forwarded command handed back: the engine lease is not confirmed");
                    let back: redis::RedisResult<()> = redis::cmd("LPUSH")
                        .arg(settings.requests_key())
                        .arg(&raw)
                        .query_async(&mut conn)
                        .await;
                    if let Err(err) = back {
                        tracing::warn!(%err, "redis: a handed-back command was lost (the gateway answers unavailable; a retry with the same client_order_id is idempotent)");
                    }
                    if !link::pause(&mut backoff, &shutdown).await {
                        return;
                    }
                    continue;
                }
                let request: Request = match serde_json::from_str(&raw) {
                    Ok(request) => request,
                    Err(err) => {
                        tracing::error!(%err, "redis: unreadable forwarded command skipped");
                        continue;
                    }
                };
                if clock.now_us() > request.deadline_us {
                    tracing::warn!(
                        id = request.id,
                        "forwarded command expired before it was read; not executed"
                    );
                    continue;
                }
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                    return;
                };
                metrics.commands.fetch_add(1, Relaxed);
                let (trade, portfolio, mut replies) =
                    (Arc::clone(&trade), Arc::clone(&portfolio), replies.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let result = serve(request.call, &*trade, &*portfolio).await;
                    let reply = Reply {
                        id: request.id,
                        result: result.map_err(|err| WireError::from(&err)),
                    };
                    let Ok(json) = serde_json::to_string(&reply) else {
                        return;
                    };
                    let sent: redis::RedisResult<()> = redis::pipe()
                        .rpush(&request.reply_to, json)
                        .ignore()
                        .expire(&request.reply_to, REPLY_TTL_SECS)
                        .ignore()
                        .query_async(&mut replies)
                        .await;
                    if let Err(err) = sent {
                        tracing::warn!(%err, id = request.id, "redis: reply lost (the gateway answers unavailable; a retry with the same client_order_id is idempotent)");
                    }
                });
            }
        }
    }
}

async fn serve(
    call: Call,
    trade: &dyn TradeService,
    portfolio: &dyn PortfolioService,
) -> Result<Answer, ServiceError> {
    Ok(match call {
        Call::Execute { request } => {
            let execution = trade.execute(request).await?;
            Answer::Execution {
                trade: execution.trade,
                replayed: execution.replayed,
            }
        }
        Call::RecentTrades { limit } => Answer::Trades(trade.recent_trades(limit).await?),
        Call::Trades { query } => Answer::TradePage(trade.trades(query).await?),
        Call::Performance => Answer::Performance(Box::new(trade.performance().await?)),
        Call::DailyProfit { days } => Answer::DailyProfit(trade.daily_profit(days).await?),
        Call::Summary => Answer::Summary(Box::new(portfolio.summary().await?)),
        Call::UpdatePosition {
            symbol,
            stop_loss,
            take_profit,
        } => Answer::Position(
            portfolio
                .update_position(
                    symbol,
                    PositionUpdate {
                        stop_loss: stop_loss.into(),
                        take_profit: take_profit.into(),
                    },
                )
                .await?,
        ),
        Call::PlaceOrder { request } => {
            Answer::Placement(Box::new(trade.place_order(request).await?))
        }
        Call::CancelOrder { order } => Answer::Order(Box::new(trade.cancel_order(order).await?)),
        Call::CancelAllOrders { symbol } => {
            Answer::OrderList(trade.cancel_all_orders(symbol).await?)
        }
        Call::Orders { query } => Answer::OrderPage(trade.orders(query).await?),
        Call::OpenOrders => Answer::OpenOrders(trade.open_orders().await?),
        Call::Candles { query } => Answer::Candles(trade.candles(query).await?),
        Call::OpenCandle { symbol, interval } => {
            Answer::OpenCandle(trade.open_candle(symbol, interval).await?)
        }
    })
}

/// The gateway side of trading: forwards each command to the engine and waits for its answer up
/// to `bus.command_timeout_ms`, then answers [`ServiceError::Unavailable`].
#[derive(Debug, Clone)]
pub struct RemoteTrading {
    inner: Arc<Client>,
}

#[derive(Debug)]
struct Client {
    settings: RedisSettings,
    client: redis::Client,
    node: String,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Answer, WireError>>>>,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<BrokerMetrics>,
}

impl RemoteTrading {
    /// Creates the proxy and spawns its reply listener; `node` names this gateway's reply list.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`] for a URL the client cannot parse.
    pub fn spawn(
        settings: RedisSettings,
        node: String,
        clock: Arc<dyn Clock>,
        metrics: Arc<BrokerMetrics>,
        shutdown: CancellationToken,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), ServiceError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|err| ServiceError::Unavailable(format!("bus.redis_url: {err}")))?;
        let inner = Arc::new(Client {
            settings,
            client,
            node,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            conn: tokio::sync::Mutex::new(None),
            clock,
            metrics,
        });
        let listener = ReplyListener {
            client: Arc::clone(&inner),
            shutdown,
        };
        let listener = tokio::spawn(listener.run());
        Ok((Self { inner }, listener))
    }

    async fn call(&self, call: Call) -> Result<Answer, ServiceError> {
        let inner = &self.inner;
        let timeout = inner.settings.command_timeout;
        let id = inner.next_id.fetch_add(1, Relaxed);
        let deadline_us = inner
            .clock
            .now_us()
            .saturating_add(i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX));
        let request = Request {
            id,
            reply_to: inner.settings.reply_key(&inner.node),
            deadline_us,
            call,
        };
        let json = serde_json::to_string(&request)
            .map_err(|err| ServiceError::Unavailable(format!("encode command: {err}")))?;
        let (tx, rx) = oneshot::channel();
        inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        inner.metrics.commands.fetch_add(1, Relaxed);
        let outcome = tokio::time::timeout(timeout, async {
            inner.push(json).await?;
            rx.await
                .map_err(|_| ServiceError::Unavailable("gateway stopping".into()))
        })
        .await;
        inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        match outcome {
            Ok(Ok(answer)) => answer.map_err(ServiceError::from),
            Ok(Err(err)) => Err(err),
            Err(_) => {
                inner.metrics.command_timeouts.fetch_add(1, Relaxed);
                Err(ServiceError::Unavailable(format!(
                    "the trading engine did not answer within {} ms",
                    timeout.as_millis()
                )))
            }
        }
    }
}

impl Client {
    async fn push(&self, json: String) -> Result<(), ServiceError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(2)));
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|err| ServiceError::Unavailable(format!("event broker: {err}")))?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(ServiceError::Unavailable("event broker".into()));
        };
        let sent: redis::RedisResult<()> = redis::pipe()
            .rpush(self.settings.requests_key(), json)
            .ignore()
            .ltrim(self.settings.requests_key(), -MAX_QUEUED_REQUESTS, -1)
            .ignore()
            .query_async(conn)
            .await;
        if let Err(err) = sent {
            *guard = None;
            return Err(ServiceError::Unavailable(format!("event broker: {err}")));
        }
        Ok(())
    }
}

/// Reads a gateway node's reply list and completes the calls waiting in its [`RemoteTrading`].
struct ReplyListener {
    client: Arc<Client>,
    shutdown: CancellationToken,
}

impl ReplyListener {
    async fn run(self) {
        let Self { client, shutdown } = self;
        let key = client.settings.reply_key(&client.node);
        let timeout = Duration::from_secs(BLPOP_SECS + 3);
        let mut backoff = link::backoff(&*client.clock);
        'connect: loop {
            let Some(mut conn) =
                link::connect(&client.client, timeout, &mut backoff, &shutdown).await
            else {
                return;
            };
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let popped: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
                    .arg(&key)
                    .arg(BLPOP_SECS)
                    .query_async(&mut conn)
                    .await;
                match popped {
                    Ok(Some((_, raw))) => match serde_json::from_str::<Reply>(&raw) {
                        Ok(reply) => {
                            let waiting = client
                                .pending
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&reply.id);
                            // None: the caller already timed out and answered `unavailable`.
                            if let Some(waiting) = waiting {
                                let _ = waiting.send(reply.result);
                            }
                        }
                        Err(err) => tracing::error!(%err, "redis: unreadable reply skipped"),
                    },
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(%err, "redis: reply listener failed; reconnecting");
                        if !link::pause(&mut backoff, &shutdown).await {
                            return;
                        }
                        continue 'connect;
                    }
                }
            }
        }
    }
}

fn unexpected() -> ServiceError {
    ServiceError::Unavailable("the trading engine sent an unexpected answer".into())
}

#[async_trait]
impl TradeService for RemoteTrading {
    async fn execute(&self, request: TradeRequest) -> Result<Execution, ServiceError> {
        match self.call(Call::Execute { request }).await? {
            Answer::Execution { trade, replayed } => Ok(Execution { trade, replayed }),
            _ => Err(unexpected()),
        }
    }

    async fn trades(&self, query: TradeQuery) -> Result<TradePage, ServiceError> {
        match self.call(Call::Trades { query }).await? {
            Answer::TradePage(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    async fn performance(&self) -> Result<Performance, ServiceError> {
        match self.call(Call::Performance).await? {
            Answer::Performance(performance) => Ok(*performance),
            _ => Err(unexpected()),
        }
    }

    async fn daily_profit(&self, days: u32) -> Result<Vec<DailyProfit>, ServiceError> {
        match self.call(Call::DailyProfit { days }).await? {
            Answer::DailyProfit(rows) => Ok(rows),
            _ => Err(unexpected()),
        }
    }

    async fn place_order(&self, request: OrderRequest) -> Result<Placement, ServiceError> {
        match self.call(Call::PlaceOrder { request }).await? {
            Answer::Placement(placement) => Ok(*placement),
            _ => Err(unexpected()),
        }
    }

    async fn cancel_order(&self, order: OrderRef) -> Result<Order, ServiceError> {
        match self.call(Call::CancelOrder { order }).await? {
            Answer::Order(order) => Ok(*order),
            _ => Err(unexpected()),
        }
    }

    async fn cancel_all_orders(&self, symbol: Option<Symbol>) -> Result<Vec<Order>, ServiceError> {
        match self.call(Call::CancelAllOrders { symbol }).await? {
            Answer::OrderList(orders) => Ok(orders),
            _ => Err(unexpected()),
        }
    }

    async fn orders(&self, query: OrderQuery) -> Result<OrderPage, ServiceError> {
        match self.call(Call::Orders { query }).await? {
            Answer::OrderPage(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    async fn open_orders(&self) -> Result<OpenOrders, ServiceError> {
        match self.call(Call::OpenOrders).await? {
            Answer::OpenOrders(open) => Ok(open),
            _ => Err(unexpected()),
        }
    }

    async fn candles(
        &self,
        query: crate::market::CandleQuery,
    ) -> Result<Vec<Candle>, ServiceError> {
        match self.call(Call::Candles { query }).await? {
            Answer::Candles(candles) => Ok(candles),
            _ => Err(unexpected()),
        }
    }

    async fn open_candle(
        &self,
        symbol: Symbol,
        interval: Interval,
    ) -> Result<Option<Candle>, ServiceError> {
        match self.call(Call::OpenCandle { symbol, interval }).await? {
            Answer::OpenCandle(candle) => Ok(candle),
            _ => Err(unexpected()),
        }
    }
}

#[async_trait]
impl PortfolioService for RemoteTrading {
    async fn summary(&self) -> Result<PortfolioSummary, ServiceError> {
        match self.call(Call::Summary).await? {
            Answer::Summary(summary) => Ok(*summary),
            _ => Err(unexpected()),
        }
    }

    async fn update_position(
        &self,
        symbol: Symbol,
        update: PositionUpdate,
    ) -> Result<Position, ServiceError> {
        let call = Call::UpdatePosition {
            symbol,
            stop_loss: update.stop_loss.into(),
            take_profit: update.take_profit.into(),
        };
        match self.call(call).await? {
            Answer::Position(position) => Ok(position),
            _ => Err(unexpected()),
        }
    }
}

/// The gateway side of market data: the latest ticker of each symbol as followed from the
/// engine's streams (the stream tails on startup, then every update).
#[derive(Debug, Clone)]
pub struct RemoteMarket {
    latest: LatestTickers,
}

impl RemoteMarket {
    /// Subscribes to `bus` (before it starts following) and keeps the latest tickers.
    #[must_use]
    pub fn spawn(
        symbols: Vec<Symbol>,
        bus: &dyn EventBus,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let latest = LatestTickers::new(symbols, []);
        let mirror = TickerMirror {
            latest: latest.clone(),
            events: Subscription::new(bus.subscribe(), "remote market"),
            shutdown,
        };
        (Self { latest }, tokio::spawn(mirror.run()))
    }
}

/// Copies the followed tickers into a [`RemoteMarket`]'s map. Tickers are latest-wins: the next
/// one repairs a lag.
struct TickerMirror {
    latest: LatestTickers,
    events: Subscription,
    shutdown: CancellationToken,
}

impl TickerMirror {
    async fn run(mut self) {
        while let Some(envelope) = self.events.next_until(&self.shutdown).await {
            if let Event::Ticker(ticker) = &envelope.event
                && self.latest.symbols().contains(&ticker.symbol)
            {
                self.latest
                    .write()
                    .insert(ticker.symbol.clone(), ticker.clone());
            }
        }
    }
}

impl ServesLatestTickers for RemoteMarket {
    fn latest(&self) -> &LatestTickers {
        &self.latest
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;

    use super::*;
    use crate::SystemClock;

    #[test]
    fn errors_keep_their_code_message_and_kind_across_nodes() {
        let original = ServiceError::InsufficientFunds {
            needed: fixtures::dec("10"),
            available: fixtures::dec("1"),
        };
        let wire: WireError =
            serde_json::from_str(&serde_json::to_string(&WireError::from(&original)).unwrap())
                .unwrap();
        let remote = ServiceError::from(wire);
        assert_eq!(remote.code(), "insufficient_funds");
        assert_eq!(remote.to_string(), original.to_string());
        assert!(remote.is_client_error());
        let unknown = ServiceError::from(WireError {
            code: "from_a_newer_engine".into(),
            message: "x".into(),
            client_error: false,
        });
        assert_eq!(unknown.code(), "internal");
        // TC1: storage details never leave the engine
        let wire = WireError::from(&ServiceError::Storage("/secret/db: disk I/O".into()));
        assert_eq!(wire.code, "storage_error");
        assert!(!wire.message.contains("secret"), "{}", wire.message);
    }

    #[test]
    fn position_updates_survive_the_trip() {
        for change in [
            LevelChange::Keep,
            LevelChange::Clear,
            LevelChange::Set(fixtures::dec("1.5")),
        ] {
            let json = serde_json::to_string(&Level::from(change)).unwrap();
            let back: Level = serde_json::from_str(&json).unwrap();
            assert_eq!(LevelChange::from(back), change);
        }
    }

    /// A gateway forwards `GET /trades` as its query: every filter and cursor survives the wire,
    /// and the engine answers with the page its own service returns.
    #[tokio::test]
    async fn trade_queries_are_forwarded_as_they_are() {
        let query = TradeQuery {
            symbol: Some(fixtures::symbol("ETHUSDT")),
            client_order_id: Some(cryptobot_domain::ClientOrderId::parse("c-1").unwrap()),
            from: Some(fixtures::instant()),
            to: Some(fixtures::instant() + chrono::Duration::microseconds(1_500_001)),
            before_id: Some(90),
            after_id: Some(10),
            limit: 7,
        };
        let wire = serde_json::to_string(&Call::Trades {
            query: query.clone(),
        })
        .unwrap();
        let Call::Trades { query: received } = serde_json::from_str(&wire).unwrap() else {
            panic!("not a trades call: {wire}")
        };
        assert_eq!(received, query);
        let page = TradePage {
            trades: vec![fixtures::trade(42, "ETHUSDT", "100", "1")],
            more: true,
        };
        let mut trade = crate::trading::MockTradeService::new();
        let (expected, answer) = (query.clone(), page.clone());
        trade
            .expect_trades()
            .withf(move |q| *q == expected)
            .returning(move |_| Ok(answer.clone()));
        let portfolio = crate::trading::MockPortfolioService::new();
        let answer = serve(Call::Trades { query: received }, &trade, &portfolio)
            .await
            .unwrap();
        let json = serde_json::to_string(&answer).unwrap();
        let Answer::TradePage(back) = serde_json::from_str(&json).unwrap() else {
            panic!("not a page: {json}")
        };
        assert_eq!(back, page);
    }

    /// Performance and daily profit cross the wire exactly: the day count goes to the engine's
    /// service, the decimals and the null win rate come back as they were.
    #[tokio::test]
    async fn performance_queries_are_forwarded_as_they_are() {
        use cryptobot_domain::{PerformanceStats, SymbolPerformance};
        let stats = PerformanceStats {
            trades: 3,
            realized_pnl: fixtures::dec("-1.2500"),
            fees: fixtures::dec("0.75"),
            win_rate: None,
            volume: fixtures::dec("300.10"),
        };
        let performance = Performance {
            symbols: vec![SymbolPerformance {
                symbol: fixtures::symbol("ETHUSDT"),
                stats: stats.clone(),
            }],
            total: PerformanceStats {
                win_rate: Some(fixtures::dec("0.3333")),
                ..stats
            },
        };
        let days = vec![DailyProfit {
            date: fixtures::instant().date_naive(),
            trades: 2,
            realized_pnl: fixtures::dec("4.5"),
            fees: fixtures::dec("0.1"),
        }];
        let mut trade = crate::trading::MockTradeService::new();
        let answer = performance.clone();
        trade
            .expect_performance()
            .returning(move || Ok(answer.clone()));
        let answer = days.clone();
        trade
            .expect_daily_profit()
            .withf(|days| *days == 7)
            .returning(move |_| Ok(answer.clone()));
        let portfolio = crate::trading::MockPortfolioService::new();
        let wire = |call: &Call| serde_json::from_str(&serde_json::to_string(call).unwrap());
        let answer = serve(wire(&Call::Performance).unwrap(), &trade, &portfolio)
            .await
            .unwrap();
        let json = serde_json::to_string(&answer).unwrap();
        let Answer::Performance(back) = serde_json::from_str(&json).unwrap() else {
            panic!("not a performance: {json}")
        };
        assert_eq!(*back, performance);
        let answer = serve(
            wire(&Call::DailyProfit { days: 7 }).unwrap(),
            &trade,
            &portfolio,
        )
        .await
        .unwrap();
        let json = serde_json::to_string(&answer).unwrap();
        let Answer::DailyProfit(back) = serde_json::from_str(&json).unwrap() else {
            panic!("not a daily profit: {json}")
        };
        assert_eq!(back, days);
    }

    /// Order commands cross the wire whole: every field of the request, and the engine's
    /// answers of each kind.
    #[tokio::test]
    async fn order_commands_are_forwarded_as_they_are() {
        use cryptobot_domain::{OrderInput, OrderStatus, OrderType, Side, StatusFilter};
        let request = OrderInput {
            symbol: "BTCUSDT".into(),
            side: Side::Sell,
            order_type: OrderType::StopLimit,
            quantity: Some("0.50".into()),
            amount: None,
            price: Some("99.5".into()),
            stop_price: Some("100".into()),
            time_in_force: None,
            post_only: None,
            client_order_id: Some("k-1".into()),
        }
        .into_request()
        .unwrap();
        let wire = serde_json::to_string(&Call::PlaceOrder {
            request: request.clone(),
        })
        .unwrap();
        let Call::PlaceOrder { request: received } = serde_json::from_str(&wire).unwrap() else {
            panic!("not a place call: {wire}")
        };
        assert_eq!(received, request);
        let query = OrderQuery {
            status: Some(StatusFilter::Is(OrderStatus::Canceled)),
            symbol: Some(fixtures::symbol("BTCUSDT")),
            client_order_id: None,
            before_id: Some(9),
            after_id: None,
            limit: 3,
        };
        for status in [Some(StatusFilter::Open), query.status, None] {
            let query = OrderQuery {
                status,
                ..query.clone()
            };
            let wire = serde_json::to_string(&Call::Orders {
                query: query.clone(),
            })
            .unwrap();
            let Call::Orders { query: back } = serde_json::from_str(&wire).unwrap() else {
                panic!("not an orders call: {wire}")
            };
            assert_eq!(back, query);
        }
        let mut trade = crate::trading::MockTradeService::new();
        trade.expect_cancel_all_orders().returning(|symbol| {
            assert_eq!(symbol, Some(fixtures::symbol("ETHUSDT")));
            Ok(Vec::new())
        });
        trade.expect_open_orders().returning(|| {
            Ok(OpenOrders {
                orders: Vec::new(),
                seq: 41,
            })
        });
        let portfolio = crate::trading::MockPortfolioService::new();
        let call = Call::CancelAllOrders {
            symbol: Some(fixtures::symbol("ETHUSDT")),
        };
        let answer = serve(call, &trade, &portfolio).await.unwrap();
        assert!(matches!(answer, Answer::OrderList(list) if list.is_empty()));
        let answer = serve(Call::OpenOrders, &trade, &portfolio).await.unwrap();
        let json = serde_json::to_string(&answer).unwrap();
        let Answer::OpenOrders(open) = serde_json::from_str(&json).unwrap() else {
            panic!("not open orders: {json}")
        };
        assert_eq!(open.seq, 41);
    }

    /// Needs a real Redis (`REDIS_URL`); no engine listens, so the command must time out cleanly.
    #[tokio::test]
    async fn without_an_engine_a_command_answers_unavailable() {
        let Some(url) =
            crate::scale::redis_url_or_skip("without_an_engine_a_command_answers_unavailable")
        else {
            return;
        };
        let prefix = format!(
            "cbtest-remote-{}-{}",
            std::process::id(),
            SystemClock.now_us()
        );
        let settings = RedisSettings {
            url: url.clone(),
            prefix: prefix.clone(),
            stream_len: 10,
            publish_buffer: 10,
            command_timeout: Duration::from_millis(300),
            lease_ttl: Duration::from_secs(10),
            read_timeout: Duration::from_millis(750),
            channels: vec![],
        };
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(BrokerMetrics::default());
        let (trading, task) = RemoteTrading::spawn(
            settings,
            "n1".into(),
            Arc::new(SystemClock),
            Arc::clone(&metrics),
            shutdown.clone(),
        )
        .unwrap();
        let err = trading.summary().await.unwrap_err();
        assert_eq!(err.code(), "unavailable");
        assert!(!err.is_client_error());
        assert_eq!(metrics.command_timeouts.load(Relaxed), 1);
        shutdown.cancel();
        task.await.unwrap();
        // The expired request stays queued for no one: clean it up.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}:rpc:requests"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
