//! The paper trading engine: an actor owning the books, executing commands one at a time and
//! selling positions whose stop-loss or take-profit the market crosses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cryptobot_domain::{
    Alert, AlertType, BotState, Channel, DailyProfit, Event, ForceExitRequest, Order, OrderPage,
    OrderQuery, OrderRef, OrderRequest, OrderSize, OrderStatus, OrderType, OrderUpdate,
    Performance, PortfolioSummary, Position, PositionUpdate, PositionValuation, Reserved,
    ReservedQuantity, Severity, Side, Symbol, Ticker, TimeInForce, Trade, TradeOrigin, TradePage,
    TradeQuery, TradeRequest, TradingState,
};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::book::{self, Step};
use super::config::TradingConfig;
use super::ledger::{Account, Ledger};
use super::matching::{self, Available};
use super::storage::Storage;
use super::{Execution, ForceExit, OpenOrders, Placement};
use crate::{
    Clock, Envelope, EventBus, Inherited, MarketService, ServiceError, ServiceMetrics, Subscription,
};

/// Reads of the storage a takeover retries before it gives up republishing (500 ms apart).
const REPUBLISH_ATTEMPTS: u32 = 5;

/// Commands that may wait for the engine before callers wait to send.
const COMMAND_CAPACITY: usize = 256;

/// The `engine_settings` key of the auto-trading state (a JSON [`BotState`]).
const AUTO_TRADING_KEY: &str = "auto_trading";

/// A request to the engine, with the channel its answer goes back on.
#[derive(Debug)]
pub(crate) enum Command {
    /// Execute (or replay) a market order.
    Execute {
        request: TradeRequest,
        reply: oneshot::Sender<Result<Execution, ServiceError>>,
    },
    /// Read a page of the trade history.
    Trades {
        query: TradeQuery,
        reply: oneshot::Sender<Result<TradePage, ServiceError>>,
    },
    /// Sum the trade log per symbol.
    Performance {
        reply: oneshot::Sender<Result<Performance, ServiceError>>,
    },
    /// Sum the trades of the last `days` UTC days per day.
    DailyProfit {
        days: u32,
        reply: oneshot::Sender<Result<Vec<DailyProfit>, ServiceError>>,
    },
    /// Commit a small write to the storage (readiness).
    ProbeStorage {
        reply: oneshot::Sender<Result<(), ServiceError>>,
    },
    /// Value the account.
    Summary {
        reply: oneshot::Sender<PortfolioSummary>,
    },
    /// Change a position's stop-loss / take-profit.
    UpdatePosition {
        symbol: Symbol,
        update: PositionUpdate,
        reply: oneshot::Sender<Result<Position, ServiceError>>,
    },
    /// Place (or replay) an order.
    PlaceOrder {
        request: OrderRequest,
        reply: oneshot::Sender<Result<Placement, ServiceError>>,
    },
    /// Cancel one open order.
    CancelOrder {
        order: OrderRef,
        reply: oneshot::Sender<Result<Order, ServiceError>>,
    },
    /// Cancel every open order, or those of one symbol.
    CancelAll {
        symbol: Option<Symbol>,
        reply: oneshot::Sender<Result<Vec<Order>, ServiceError>>,
    },
    /// Read a page of orders.
    Orders {
        query: OrderQuery,
        reply: oneshot::Sender<Result<OrderPage, ServiceError>>,
    },
    /// The open orders and the `orders` seq they are current at.
    OpenOrders { reply: oneshot::Sender<OpenOrders> },
    /// The auto-trading state.
    BotState { reply: oneshot::Sender<BotState> },
    /// Pause or resume auto-trading.
    SetTradingState {
        state: TradingState,
        changed_by: Option<String>,
        reply: oneshot::Sender<Result<BotState, ServiceError>>,
    },
    /// Sell a whole position.
    ForceExit {
        request: ForceExitRequest,
        reply: oneshot::Sender<Result<ForceExit, ServiceError>>,
    },
}

impl Command {
    /// The `command` label of `cryptobot_engine_command_seconds`.
    pub(crate) const fn name(&self) -> &'static str {
        match self {
            Self::Execute { .. } => "execute",
            Self::Trades { .. } => "trades",
            Self::Performance { .. } => "performance",
            Self::DailyProfit { .. } => "daily_profit",
            Self::ProbeStorage { .. } => "probe_storage",
            Self::Summary { .. } => "summary",
            Self::UpdatePosition { .. } => "update_position",
            Self::PlaceOrder { .. } => "place_order",
            Self::CancelOrder { .. } => "cancel_order",
            Self::CancelAll { .. } => "cancel_all_orders",
            Self::Orders { .. } => "orders",
            Self::OpenOrders { .. } => "open_orders",
            Self::BotState { .. } => "bot_state",
            Self::SetTradingState { .. } => "set_trading_state",
            Self::ForceExit { .. } => "force_exit",
        }
    }
}

/// What woke the engine up.
enum Wake {
    Stop,
    Command(Command),
    Envelope(Arc<Envelope>),
}

/// The actor: owns the books and is the only writer of the storage.
///
/// Commands run one at a time to completion (a shutdown never interrupts a trade between its
/// commit and its reply), which is also what makes idempotency checks race-free.
pub(crate) struct PaperEngine {
    /// The books, equal to what the storage holds.
    ledger: Ledger,
    /// Id of the next trade: the trade log's last id plus one.
    next_trade_id: u64,
    /// The open orders by id, equal to the storage's `new` and `triggered` rows; what they hold
    /// back is derived from them, never stored apart.
    open: BTreeMap<u64, Order>,
    /// Id of the next order.
    next_order_id: u64,
    /// Whether the auto-trader's trades are taken, equal to the storage's `auto_trading` setting
    /// (or `trading.auto_trade` while none is stored). Checked here, with the trade, so no
    /// signal trade slips through after a pause was answered.
    bot: BotState,
    storage: Storage,
    market: Arc<dyn MarketService>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    metrics: Arc<ServiceMetrics>,
    config: TradingConfig,
    commands: mpsc::Receiver<Command>,
    /// Every bus envelope; only tickers matter (for stop-loss / take-profit). Tickers are
    /// latest-wins and execution prices come from the market, so tickers skipped in a lag only
    /// delay a stop-loss to the next one.
    ticks: Subscription,
    /// Stops the engine between two commands.
    shutdown: CancellationToken,
    /// What the previous run of a continued epoch published of the books; what it committed
    /// beyond that is published before anything else ([`PaperEngine::republish`]).
    inherited: Option<Inherited>,
    /// A write failed: the database may have committed it before its answer was lost (a broken
    /// PostgreSQL connection), so memory may be behind the storage. The books are read again
    /// before the next command or ticker ([`PaperEngine::resync`]).
    books_stale: bool,
}

impl std::fmt::Debug for PaperEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The market trait is not Debug; the books are what matters when debugging.
        f.debug_struct("PaperEngine")
            .field("ledger", &self.ledger)
            .field("next_trade_id", &self.next_trade_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PaperEngine {
    /// Loads the books from storage (initializing a new account), checks them against the
    /// trade log and subscribes to the bus; returns the engine and the sender of its commands
    /// ([`COMMAND_CAPACITY`] may wait). Blocks on the storage.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`] for a configuration out of range; [`ServiceError::Storage`]
    /// when the storage cannot be read or its books do not balance, or its fence cannot be
    /// taken.
    pub(crate) fn load(
        config: TradingConfig,
        storage: Storage,
        market: Arc<dyn MarketService>,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        metrics: Arc<ServiceMetrics>,
        shutdown: CancellationToken,
    ) -> Result<(Self, mpsc::Sender<Command>), ServiceError> {
        config.validate().map_err(|why| {
            ServiceError::Unavailable(format!("invalid paper trading config: {why}"))
        })?;
        // Taken before reading the books: a former engine on the same database commits nothing
        // from here on, so the books read below stay the latest.
        let epoch = storage.acquire_fence()?;
        tracing::info!(fence_epoch = epoch, "storage fence acquired");
        let Books {
            ledger,
            next_trade_id,
            open,
            next_order_id,
            bot,
        } = read_books(&storage, &config)?;
        // A zero capacity would panic in tokio; one slot still works, just with more waiting.
        let (sender, commands) = mpsc::channel(COMMAND_CAPACITY);
        let lagged = Arc::clone(&metrics);
        let ticks =
            Subscription::new(bus.subscribe(), "paper trading engine").on_lag(move |missed| {
                lagged.bus_lagged_events.inc_by(missed);
            });
        let engine = Self {
            ledger,
            next_trade_id,
            open,
            next_order_id,
            bot,
            storage,
            market,
            ticks,
            inherited: bus.inherited(),
            books_stale: false,
            bus,
            clock,
            metrics,
            config,
            commands,
            shutdown,
        };
        Ok((engine, sender))
    }

    /// Serves commands and watches tickers until the shutdown token is cancelled or every handle
    /// is dropped; a closed bus only ends the ticker watch.
    pub(crate) async fn run(mut self) {
        if let Some(inherited) = self.inherited.take() {
            self.republish(&inherited).await;
        }
        let mut bus_open = true;
        loop {
            let wake = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => Wake::Stop,
                command = self.commands.recv() => command.map_or(Wake::Stop, Wake::Command),
                received = self.ticks.next(), if bus_open => match received {
                    Some(envelope) => Wake::Envelope(envelope),
                    None => {
                        bus_open = false;
                        continue;
                    }
                },
            };
            match wake {
                Wake::Stop => break,
                Wake::Command(command) => self.handle(command).await,
                Wake::Envelope(envelope) => {
                    if let Event::Ticker(ticker) = &envelope.event {
                        self.on_ticker(ticker).await;
                    }
                }
            }
        }
        tracing::debug!("paper trading engine stopped");
    }

    /// Publishes what the previous engine run of this epoch committed but never got to Redis
    /// (its publish queue died with it): the stored trades after the last one it published, in
    /// id order; each order whose stored status is not the last one published (the orders it
    /// published, the open ones, and those placed after its last published one); and a fresh
    /// portfolio. Runs before the engine serves anything, so nothing comes between.
    async fn republish(&self, inherited: &Inherited) {
        let storage = self.storage.clone();
        let after = inherited.last_trade;
        let mut candidates: BTreeSet<u64> = inherited.orders.keys().copied().collect();
        candidates.extend(self.open.keys().copied());
        if inherited.last_order > 0 {
            candidates.extend(inherited.last_order + 1..self.next_order_id);
        }
        let read = move || {
            let mut trades: Vec<Trade> = storage
                .load_trades()?
                .into_iter()
                .filter(|trade| trade.id > after)
                .collect();
            trades.sort_by_key(|trade| trade.id);
            let mut orders = Vec::new();
            for id in candidates {
                if let Some(order) = storage.find_order(id)? {
                    orders.push(order);
                }
            }
            Ok((trades, orders))
        };
        let mut attempt = 0;
        let (trades, orders) = loop {
            let read = read.clone();
            match blocking(read).await {
                Ok(read) => break read,
                Err(err) if attempt < REPUBLISH_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(%err, attempt, "takeover: the storage could not be read; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(err) => {
                    // Not silent: clients on `alerts` are told to refill.
                    tracing::error!(%err, "takeover: the storage could not be read; what the previous engine did not publish is not published");
                    self.bus.publish(Event::Alert(Alert {
                        alert_type: AlertType::FeedStalled,
                        severity: Severity::Critical,
                        message: format!(
                            "engine takeover: trades after {after} and order changes the previous engine committed may not have been published ({err}); refill trades and orders over REST"
                        ),
                        symbol: None,
                        raised_at: self.clock.now(),
                    }));
                    break (Vec::new(), Vec::new());
                }
            }
        };
        for trade in &trades {
            self.bus.publish(Event::TradeExecuted(trade.clone()));
        }
        let mut changed = 0;
        for order in orders {
            if inherited.orders.get(&order.id) != Some(&order.status) {
                changed += 1;
                self.publish_order(order.status, order);
            }
        }
        self.publish_portfolio().await;
        tracing::info!(
            trades = trades.len(),
            after_trade = after,
            orders = changed,
            "takeover: published what the previous engine committed but had not published"
        );
    }

    /// Runs a write of the storage; a storage error marks the books stale (its outcome is
    /// unknown), a fence or a refusal does not.
    async fn write<T: Send + 'static>(
        &mut self,
        call: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let result = blocking(call).await;
        if matches!(result, Err(ServiceError::Storage(_))) {
            self.books_stale = true;
        }
        result
    }

    /// After a failed write, reads the books again so memory equals the storage: a trade whose
    /// commit landed though its answer was lost is then in the books (the next trade gets the
    /// next id, its retry is replayed), and an order row is never overwritten with an older
    /// state. While the storage cannot be read the books stay stale and the next command tries
    /// again (its own storage access fails meanwhile).
    async fn resync(&mut self) {
        if !self.books_stale {
            return;
        }
        let (storage, config) = (self.storage.clone(), self.config.clone());
        match blocking(move || read_books(&storage, &config)).await {
            Ok(books) => {
                let changed = books.next_trade_id != self.next_trade_id
                    || books.next_order_id != self.next_order_id;
                self.ledger = books.ledger;
                self.next_trade_id = books.next_trade_id;
                self.open = books.open;
                self.next_order_id = books.next_order_id;
                self.bot = books.bot;
                self.books_stale = false;
                tracing::warn!(
                    changed,
                    next_trade_id = self.next_trade_id,
                    "books read again from storage after a failed write"
                );
                if changed {
                    self.publish_portfolio().await;
                }
            }
            Err(err) => tracing::warn!(%err, "books still stale: the storage cannot be read"),
        }
    }

    async fn handle(&mut self, command: Command) {
        self.resync().await;
        // A caller that gave up waiting dropped its receiver; the outcome stands regardless.
        match command {
            Command::Execute { request, reply } => {
                let result = self.execute(&request).await;
                if let Err(err) = &result {
                    self.rejected(request.symbol(), request.side(), err);
                }
                let _ = reply.send(result);
            }
            Command::Trades { mut query, reply } => {
                let storage = self.storage.clone();
                query.limit = query.limit.clamp(1, 1000);
                let _ = reply.send(blocking(move || storage.trades(&query)).await);
            }
            Command::Performance { reply } => {
                let storage = self.storage.clone();
                let _ = reply.send(blocking(move || storage.performance()).await);
            }
            Command::DailyProfit { days, reply } => {
                let storage = self.storage.clone();
                let today = self.clock.now().date_naive();
                let since = today
                    .checked_sub_days(chrono::Days::new(u64::from(days.saturating_sub(1))))
                    .unwrap_or(chrono::NaiveDate::MIN);
                let _ = reply.send(blocking(move || storage.daily_profit(since)).await);
            }
            Command::ProbeStorage { reply } => {
                let storage = self.storage.clone();
                let now = self.clock.now();
                let _ = reply.send(blocking(move || storage.probe_write(now)).await);
            }
            Command::Summary { reply } => {
                let _ = reply.send(self.summary().await);
            }
            Command::UpdatePosition {
                symbol,
                update,
                reply,
            } => {
                let _ = reply.send(self.update_position(&symbol, update).await);
            }
            Command::PlaceOrder { request, reply } => {
                let result = self.place(&request).await;
                if let Err(err) = &result {
                    self.refused(&request, err);
                }
                let _ = reply.send(result);
            }
            Command::CancelOrder { order, reply } => {
                let _ = reply.send(self.cancel(&order).await);
            }
            Command::CancelAll { symbol, reply } => {
                let _ = reply.send(self.cancel_all(symbol.as_ref()).await);
            }
            Command::Orders { mut query, reply } => {
                let storage = self.storage.clone();
                query.limit = query.limit.clamp(1, 1000);
                let _ = reply.send(blocking(move || storage.orders(&query)).await);
            }
            Command::OpenOrders { reply } => {
                let _ = reply.send(OpenOrders {
                    orders: self.open.values().cloned().collect(),
                    seq: self.bus.last_seq(&Channel::Orders),
                });
            }
            Command::BotState { reply } => {
                let _ = reply.send(self.bot.clone());
            }
            Command::SetTradingState {
                state,
                changed_by,
                reply,
            } => {
                let _ = reply.send(self.set_trading_state(state, changed_by).await);
            }
            Command::ForceExit { request, reply } => {
                let result = self.force_exit(&request).await;
                if let Err(err) = &result {
                    self.rejected(&request.symbol, Side::Sell, err);
                }
                let _ = reply.send(result);
            }
        }
    }

    /// Pauses or resumes auto-trading: committed, then logged and published on `bot`. The state
    /// it already has is answered as it is (nothing stored, nothing published).
    async fn set_trading_state(
        &mut self,
        state: TradingState,
        changed_by: Option<String>,
    ) -> Result<BotState, ServiceError> {
        if self.bot.state == state {
            return Ok(self.bot.clone());
        }
        let changed = BotState {
            state,
            changed_at: Some(self.clock.now()),
            changed_by,
        };
        let value = serde_json::to_string(&changed)
            .map_err(|err| ServiceError::Storage(format!("cannot encode the bot state: {err}")))?;
        let storage = self.storage.clone();
        self.bus.check_fence()?;
        self.write(move || storage.save_setting(AUTO_TRADING_KEY, &value))
            .await?;
        self.bot = changed.clone();
        tracing::info!(
            state = state.as_str(),
            principal = changed.changed_by.as_deref().unwrap_or("-"),
            "auto-trading {}",
            if state == TradingState::Paused {
                "paused"
            } else {
                "resumed"
            }
        );
        self.bus.publish(Event::BotStateChanged(changed.clone()));
        Ok(changed)
    }

    /// Sells the whole held quantity of a symbol at market as one trade: the resting sell
    /// orders of the symbol are canceled first (their quantity is part of it), once the sell is
    /// known to go through at the current price. A repeated `client_order_id` answers the first
    /// exit's trade.
    async fn force_exit(&mut self, request: &ForceExitRequest) -> Result<ForceExit, ServiceError> {
        let symbol = &request.symbol;
        if !self.market.symbols().contains(symbol) {
            return Err(ServiceError::UnknownSymbol(symbol.clone()));
        }
        if let Some(id) = request.client_order_id.clone() {
            let storage = self.storage.clone();
            let lookup = id.clone();
            if blocking(move || storage.find_order_by_client_order_id(&lookup))
                .await?
                .is_some()
            {
                return Err(ServiceError::DuplicateClientOrderId(id));
            }
            let storage = self.storage.clone();
            let lookup = id.clone();
            if let Some(stored) = blocking(move || storage.find_by_client_order_id(&lookup)).await?
            {
                let same =
                    stored.trade.symbol == *symbol && stored.trade.origin == TradeOrigin::ForceExit;
                if !same {
                    return Err(ServiceError::DuplicateClientOrderId(id));
                }
                ServiceMetrics::incr(&self.metrics.trades_replayed);
                return Ok(ForceExit {
                    trade: stored.trade,
                    canceled_orders: Vec::new(),
                    replayed: true,
                });
            }
        }
        let held = self.ledger.held(symbol);
        if held <= Decimal::ZERO {
            return Err(ServiceError::NoPosition(symbol.clone()));
        }
        let mut trade_request = TradeRequest::new(
            symbol.clone(),
            Side::Sell,
            OrderSize::Quantity(held),
            request.client_order_id.clone(),
            TradeOrigin::ForceExit,
        )?;
        if let Some(name) = &request.requested_by {
            trade_request = trade_request.requested_by_principal(name.clone());
        }
        let ticker = self.market.ticker(symbol).await?;
        // As if the sells were canceled already: their quantity is freed for this one.
        let mut available = self.available(symbol);
        available.quantity = held;
        let (trade, books) = self.prepare(&trade_request, &ticker, available)?;
        let canceled: Vec<Order> = self
            .open
            .values()
            .filter(|order| order.symbol == *symbol && order.side == Side::Sell)
            .map(|order| self.closed(order, OrderStatus::Canceled, Some("force exit")))
            .collect();
        // Two commits: should the trade's fail after the cancels (storage, fencing), the orders
        // stay canceled and the error is the reply; the position is still there for a retry.
        if !canceled.is_empty() {
            self.save(&canceled).await?;
            for order in &canceled {
                self.open.remove(&order.id);
                tracing::info!(order_id = order.id, "order canceled for a force exit");
                self.publish_order(OrderStatus::Canceled, order.clone());
            }
        }
        let trade = self
            .commit(
                trade,
                books,
                trade_request.size(),
                None,
                trade_request.requested_by(),
            )
            .await?;
        Ok(ForceExit {
            trade,
            canceled_orders: canceled,
            replayed: false,
        })
    }

    /// Executes an order, or answers a repeated `client_order_id` with the original trade.
    async fn execute(&mut self, request: &TradeRequest) -> Result<Execution, ServiceError> {
        if request.origin() == TradeOrigin::Auto && !self.bot.is_running() {
            return Err(ServiceError::TradingPaused);
        }
        if let Some(id) = request.client_order_id().cloned() {
            let storage = self.storage.clone();
            let lookup = id.clone();
            // One namespace for trades and orders: a key an order was placed under is taken.
            if blocking(move || storage.find_order_by_client_order_id(&lookup))
                .await?
                .is_some()
            {
                return Err(ServiceError::DuplicateClientOrderId(id));
            }
            let storage = self.storage.clone();
            let lookup = id.clone();
            if let Some(stored) = blocking(move || storage.find_by_client_order_id(&lookup)).await?
            {
                let same = stored.trade.symbol == *request.symbol()
                    && stored.trade.side == request.side()
                    && stored.size == request.size();
                if !same {
                    return Err(ServiceError::DuplicateClientOrderId(id));
                }
                ServiceMetrics::incr(&self.metrics.trades_replayed);
                return Ok(Execution {
                    trade: stored.trade,
                    replayed: true,
                });
            }
        }
        let trade = self.trade(request).await?;
        Ok(Execution {
            trade,
            replayed: false,
        })
    }

    /// Fills, commits, applies and publishes one trade. The books in memory change only after
    /// the storage committed; on any error nothing changed.
    async fn trade(&mut self, request: &TradeRequest) -> Result<Trade, ServiceError> {
        if !self.market.symbols().contains(request.symbol()) {
            return Err(ServiceError::UnknownSymbol(request.symbol().clone()));
        }
        let ticker = self.market.ticker(request.symbol()).await?;
        let available = self.available(request.symbol());
        let (trade, books) = self.prepare(request, &ticker, available)?;
        self.commit(trade, books, request.size(), None, request.requested_by())
            .await
    }

    /// The trade a request fills at `ticker.price` against `available` funds, and the books it
    /// leads to; nothing is committed or changed.
    fn prepare(
        &self,
        request: &TradeRequest,
        ticker: &Ticker,
        available: Available,
    ) -> Result<(Trade, Ledger), ServiceError> {
        let rules = self.config.match_rules();
        let fill = matching::match_with(request, ticker, &self.ledger, rules, available)?;
        let trade = fill.into_trade(self.next_trade_id, request, self.clock.now());
        let mut books = self.ledger.clone();
        books.apply(&trade)?;
        Ok((trade, books))
    }

    /// Commits a prepared trade (with the filled order, when it fills one) in one transaction,
    /// then applies it and publishes the trade, the order update and the portfolio.
    /// `requested_by` is the principal that sent the command, for the log line.
    async fn commit(
        &mut self,
        trade: Trade,
        books: Ledger,
        size: OrderSize,
        order: Option<Order>,
        requested_by: Option<&str>,
    ) -> Result<Trade, ServiceError> {
        let storage = self.storage.clone();
        let record = trade.clone();
        let position = books.position(&trade.symbol).cloned();
        let account: Account = books.account().clone();
        let filled = order.clone();
        // Last thing before the commit: an engine that was replaced must not commit (fencing).
        self.bus.check_fence()?;
        self.write(move || {
            storage.commit_fill(&record, size, position.as_ref(), &account, filled.as_ref())
        })
        .await?;

        self.ledger = books;
        self.next_trade_id = self.next_trade_id.saturating_add(1);
        if let Some(order) = &order {
            self.open.remove(&order.id);
        }
        self.metrics
            .trade_executed(&trade.symbol, trade.side, trade.origin);
        tracing::info!(
            trade_id = trade.id,
            symbol = %trade.symbol,
            side = trade.side.as_str(),
            quantity = %trade.quantity,
            price = %trade.price,
            origin = trade.origin.as_str(),
            client_order_id = trade.client_order_id.as_ref().map_or("-", cryptobot_domain::ClientOrderId::as_str),
            principal = requested_by.unwrap_or("-"),
            "trade executed"
        );
        self.bus.publish(Event::TradeExecuted(trade.clone()));
        if let Some(order) = order {
            self.publish_order(OrderStatus::Filled, order);
        }
        self.publish_portfolio().await;
        Ok(trade)
    }

    /// Cash not held back by open buys, and the symbol's quantity not held back by open sells.
    fn available(&self, symbol: &Symbol) -> Available {
        let mut available = Available {
            cash: self.ledger.cash(),
            quantity: self.ledger.held(symbol),
        };
        for order in self.open.values() {
            available.cash -= order.reserved_cash;
            if order.symbol == *symbol {
                available.quantity -= order.reserved_quantity;
            }
        }
        available
    }

    fn publish_order(&self, event: OrderStatus, order: Order) {
        self.bus
            .publish(Event::OrderUpdated(Box::new(OrderUpdate { event, order })));
    }

    /// Places an order: checks, reserves and commits it, then lets the current ticker act on it
    /// (a limit that crosses fills at once, a stop already reached triggers), and expires an
    /// IOC / FOK order that did not fill. A market order fills at once with its order row
    /// committed together with the trade.
    async fn place(&mut self, request: &OrderRequest) -> Result<Placement, ServiceError> {
        // The market before the engine's own checks, as for every command (docs: order of checks).
        if !self.market.symbols().contains(&request.symbol) {
            return Err(ServiceError::UnknownSymbol(request.symbol.clone()));
        }
        if let Some(id) = request.client_order_id.clone() {
            let storage = self.storage.clone();
            let lookup = id.clone();
            if let Some(order) =
                blocking(move || storage.find_order_by_client_order_id(&lookup)).await?
            {
                if !order.same_request(request) {
                    return Err(ServiceError::DuplicateClientOrderId(id));
                }
                ServiceMetrics::incr(&self.metrics.trades_replayed);
                // The order's current state: it may have filled or been canceled since.
                let order = self.open.get(&order.id).cloned().unwrap_or(order);
                return Ok(Placement {
                    order,
                    replayed: true,
                });
            }
            let storage = self.storage.clone();
            let lookup = id.clone();
            if blocking(move || storage.find_by_client_order_id(&lookup))
                .await?
                .is_some()
            {
                return Err(ServiceError::DuplicateClientOrderId(id));
            }
        }
        let ticker = self.market.ticker(&request.symbol).await?;
        if ticker.price <= Decimal::ZERO {
            return Err(ServiceError::NoPrice(request.symbol.clone()));
        }
        let now = self.clock.now();
        let (quantity, amount) = match request.size {
            OrderSize::Quantity(quantity) => (Some(quantity), None),
            OrderSize::Amount(amount) => (None, Some(amount)),
        };
        let mut order = Order {
            id: self.next_order_id,
            client_order_id: request.client_order_id.clone(),
            symbol: request.symbol.clone(),
            side: request.side,
            order_type: request.order_type,
            quantity,
            amount,
            price: request.price,
            stop_price: request.stop_price,
            time_in_force: request.time_in_force,
            post_only: request.post_only,
            status: OrderStatus::New,
            reserved_cash: Decimal::ZERO,
            reserved_quantity: Decimal::ZERO,
            trade_id: None,
            reason: None,
            created_at: now,
            updated_at: now,
        };
        if request.order_type == OrderType::Market {
            let trade_request = trade_request(&order)?;
            let (trade, books) =
                self.prepare(&trade_request, &ticker, self.available(&request.symbol))?;
            order.status = OrderStatus::Filled;
            order.trade_id = Some(trade.id);
            self.commit(trade, books, request.size, Some(order.clone()), None)
                .await?;
            self.next_order_id = self.next_order_id.saturating_add(1);
            return Ok(Placement {
                order,
                replayed: false,
            });
        }
        let quantity = quantity.ok_or_else(|| {
            ServiceError::Domain(cryptobot_domain::DomainError::InvalidOrder(
                "amount is only for market buys; give quantity".to_owned(),
            ))
        })?;
        if self.open.len() >= self.config.max_open_orders {
            return Err(ServiceError::TooManyOrders {
                max: self.config.max_open_orders,
            });
        }
        let reference =
            book::reference_price(request.order_type, request.price, request.stop_price)
                .unwrap_or(ticker.price);
        let available = self.available(&request.symbol);
        let too_large = || match request.side {
            Side::Buy => ServiceError::InsufficientFunds {
                needed: Decimal::MAX,
                available: available.cash,
            },
            Side::Sell => ServiceError::InsufficientPosition {
                requested: quantity,
                held: available.quantity,
            },
        };
        let notional = reference
            .checked_mul(quantity)
            .map(cryptobot_domain::money::round_money)
            .ok_or_else(too_large)?;
        if cryptobot_domain::money::floor_quantity(quantity) != quantity
            || notional < self.config.min_notional
        {
            return Err(ServiceError::OrderTooSmall {
                notional,
                minimum: self.config.min_notional,
            });
        }
        let (reserved_cash, reserved_quantity) =
            book::reservation(request.side, reference, quantity, self.config.fee_rate)
                .ok_or_else(too_large)?;
        if reserved_cash > available.cash {
            return Err(ServiceError::InsufficientFunds {
                needed: reserved_cash,
                available: available.cash,
            });
        }
        if reserved_quantity > available.quantity {
            return Err(ServiceError::InsufficientPosition {
                requested: reserved_quantity,
                held: available.quantity,
            });
        }
        if request.post_only
            && let Some(limit) = request.price
            && let Some(against) = book::crossing_price(request.side, limit, &ticker)
        {
            return Err(ServiceError::PostOnlyWouldCross {
                side: request.side.as_str(),
                price: limit,
                against,
            });
        }
        order.reserved_cash = reserved_cash;
        order.reserved_quantity = reserved_quantity;
        self.save(std::slice::from_ref(&order)).await?;
        self.next_order_id = self.next_order_id.saturating_add(1);
        self.open.insert(order.id, order.clone());
        tracing::info!(order_id = order.id, symbol = %order.symbol, side = order.side.as_str(),
            order_type = order.order_type.as_str(), "order placed");
        self.publish_order(OrderStatus::New, order.clone());
        self.publish_portfolio().await;

        let mut current = self.advance(order.id, &ticker).await.unwrap_or(order);
        if current.status.is_open() && current.time_in_force != TimeInForce::Gtc {
            current = self
                .close(
                    &current,
                    OrderStatus::Expired,
                    Some("could not fill at once"),
                )
                .await
                .unwrap_or(current);
        }
        Ok(Placement {
            order: current,
            replayed: false,
        })
    }

    /// Lets `ticker` act on one open order until it rests: triggers, fills, or rejects it when a
    /// fill it is due cannot be made (funds or size no longer sufficient). Returns its state.
    /// A storage failure leaves the order as it was (it is tried again on the next ticker).
    async fn advance(&mut self, id: u64, ticker: &Ticker) -> Option<Order> {
        // At most trigger then fill: two steps; the bound keeps a logic error from looping.
        for _ in 0..3 {
            let order = self.open.get(&id).cloned()?;
            match book::evaluate(&order, ticker) {
                Step::Wait => return Some(order),
                Step::Trigger => {
                    let mut triggered = order.clone();
                    triggered.status = OrderStatus::Triggered;
                    triggered.updated_at = self.clock.now();
                    if let Err(err) = self.save(std::slice::from_ref(&triggered)).await {
                        tracing::error!(order_id = id, %err, "could not store a trigger");
                        return Some(order);
                    }
                    self.open.insert(id, triggered.clone());
                    self.publish_order(OrderStatus::Triggered, triggered);
                }
                Step::Fill(price) => return Some(self.fill(order, price, ticker).await),
            }
        }
        self.open.get(&id).cloned()
    }

    /// Fills an open order at `price`, against the funds it reserved plus the free ones.
    async fn fill(&mut self, order: Order, price: Decimal, ticker: &Ticker) -> Order {
        let mut available = self.available(&order.symbol);
        available.cash += order.reserved_cash;
        available.quantity += order.reserved_quantity;
        let at = Ticker {
            price,
            ..ticker.clone()
        };
        let prepared =
            trade_request(&order).and_then(|request| self.prepare(&request, &at, available));
        let (trade, books) = match prepared {
            Ok(prepared) => prepared,
            Err(err) => {
                let reason = err.to_string();
                return self
                    .close(&order, OrderStatus::Rejected, Some(&reason))
                    .await
                    .unwrap_or(order);
            }
        };
        let mut filled = order.clone();
        filled.status = OrderStatus::Filled;
        filled.trade_id = Some(trade.id);
        filled.reserved_cash = Decimal::ZERO;
        filled.reserved_quantity = Decimal::ZERO;
        filled.updated_at = self.clock.now();
        match self
            .commit(trade, books, order.size(), Some(filled.clone()), None)
            .await
        {
            Ok(_) => filled,
            Err(err) => {
                tracing::error!(order_id = order.id, %err, "could not commit a fill; the order stays open");
                order
            }
        }
    }

    /// Ends an open order without a fill (canceled, rejected, expired): commits, releases its
    /// reservation, publishes.
    async fn close(
        &mut self,
        order: &Order,
        status: OrderStatus,
        reason: Option<&str>,
    ) -> Result<Order, ServiceError> {
        let closed = self.closed(order, status, reason);
        self.save(std::slice::from_ref(&closed)).await?;
        self.open.remove(&order.id);
        tracing::info!(
            order_id = order.id,
            status = status.as_str(),
            "order closed"
        );
        self.publish_order(status, closed.clone());
        self.publish_portfolio().await;
        Ok(closed)
    }

    fn closed(&self, order: &Order, status: OrderStatus, reason: Option<&str>) -> Order {
        let mut closed = order.clone();
        closed.status = status;
        closed.reason = reason.map(str::to_owned);
        closed.reserved_cash = Decimal::ZERO;
        closed.reserved_quantity = Decimal::ZERO;
        closed.updated_at = self.clock.now();
        closed
    }

    /// Commits orders' new states in one transaction, fenced like every commit.
    async fn save(&mut self, orders: &[Order]) -> Result<(), ServiceError> {
        let storage = self.storage.clone();
        let records = orders.to_vec();
        self.bus.check_fence()?;
        self.write(move || storage.save_orders(&records)).await
    }

    async fn cancel(&mut self, reference: &OrderRef) -> Result<Order, ServiceError> {
        let open = match reference {
            OrderRef::Id(id) => self.open.get(id).cloned(),
            OrderRef::ClientOrderId(cid) => self
                .open
                .values()
                .find(|order| order.client_order_id.as_ref() == Some(cid))
                .cloned(),
        };
        if let Some(order) = open {
            return self.close(&order, OrderStatus::Canceled, None).await;
        }
        let storage = self.storage.clone();
        let lookup = reference.clone();
        let stored = blocking(move || match &lookup {
            OrderRef::Id(id) => storage.find_order(*id),
            OrderRef::ClientOrderId(cid) => storage.find_order_by_client_order_id(cid),
        })
        .await?;
        match stored {
            Some(order) => Err(ServiceError::OrderNotOpen {
                id: order.id,
                status: order.status,
            }),
            None => Err(ServiceError::UnknownOrder(reference.clone())),
        }
    }

    async fn cancel_all(&mut self, symbol: Option<&Symbol>) -> Result<Vec<Order>, ServiceError> {
        let canceled: Vec<Order> = self
            .open
            .values()
            .filter(|order| symbol.is_none_or(|s| *s == order.symbol))
            .map(|order| self.closed(order, OrderStatus::Canceled, None))
            .collect();
        if canceled.is_empty() {
            return Ok(canceled);
        }
        self.save(&canceled).await?;
        for order in &canceled {
            self.open.remove(&order.id);
            self.publish_order(OrderStatus::Canceled, order.clone());
        }
        self.publish_portfolio().await;
        Ok(canceled)
    }

    /// Counts a refused order and raises a `trade_rejected` alert, as for trades.
    fn refused(&self, request: &OrderRequest, err: &ServiceError) {
        self.rejected(&request.symbol, request.side, err);
    }

    /// Counts a rejected trade or order and raises a `trade_rejected` alert.
    fn rejected(&self, symbol: &Symbol, side: Side, err: &ServiceError) {
        // A paused bot's signal is not a rejected trade: nothing was asked of the market.
        if matches!(
            err,
            ServiceError::Unavailable(_) | ServiceError::TradingPaused
        ) {
            return;
        }
        self.metrics.trade_rejected(err.code());
        tracing::info!(%symbol, side = side.as_str(), code = err.code(), %err, "trade rejected");
        self.alert(
            AlertType::TradeRejected,
            Severity::Warning,
            format!("{} {symbol} rejected: {err}", side.as_str()),
            symbol,
        );
    }

    fn alert(&self, alert_type: AlertType, severity: Severity, message: String, symbol: &Symbol) {
        self.bus.publish(Event::Alert(Alert {
            alert_type,
            severity,
            message,
            symbol: Some(symbol.clone()),
            raised_at: self.clock.now(),
        }));
        ServiceMetrics::incr(&self.metrics.alerts_raised);
    }

    /// Sells the whole position when the ticker crosses its stop-loss or take-profit.
    async fn on_ticker(&mut self, ticker: &Ticker) {
        self.resync().await;
        let resting: Vec<u64> = self
            .open
            .values()
            .filter(|order| order.symbol == ticker.symbol)
            .map(|order| order.id)
            .collect();
        if !resting.is_empty() && self.bus.check_fence().is_ok() {
            for id in resting {
                self.advance(id, ticker).await;
            }
        }
        self.on_levels(ticker).await;
    }

    /// Sells the unreserved part of a position when the ticker crosses its stop-loss or
    /// take-profit (what open sell orders hold back stays theirs).
    async fn on_levels(&mut self, ticker: &Ticker) {
        let Some(position) = self.ledger.position(&ticker.symbol) else {
            return;
        };
        let Some(origin) = position.triggered_level(ticker.price) else {
            return;
        };
        if self.bus.check_fence().is_err() {
            // Not this process's to sell (it may have been replaced): the level stays for the
            // engine that holds the lease.
            return;
        }
        let position = position.clone();
        let (name, alert_type, level) = match origin {
            TradeOrigin::StopLoss => (
                "stop-loss",
                AlertType::StopLossTriggered,
                position.stop_loss,
            ),
            _ => (
                "take-profit",
                AlertType::TakeProfitTriggered,
                position.take_profit,
            ),
        };
        let level = level.map_or_else(String::new, |level| level.to_string());
        let free = self.available(&position.symbol).quantity;
        if free <= Decimal::ZERO {
            // All of it is held by open sell orders; they sell it.
            return;
        }
        let request = TradeRequest::new(
            position.symbol.clone(),
            Side::Sell,
            OrderSize::Quantity(free),
            None,
            origin,
        );
        let traded = match request {
            Ok(request) => self.trade(&request).await,
            Err(err) => Err(err.into()),
        };
        match traded {
            Ok(trade) => self.alert(
                alert_type,
                Severity::Warning,
                format!(
                    "{name} {level} of {} crossed at price {}: sold {} at {}",
                    position.symbol, ticker.price, trade.quantity, trade.price
                ),
                &position.symbol,
            ),
            Err(err) => {
                self.metrics.trade_rejected(err.code());
                tracing::error!(symbol = %position.symbol, %err, "{name} sell failed; level cleared");
                self.alert(
                    alert_type,
                    Severity::Critical,
                    format!(
                        "{name} {level} of {} crossed at price {} but selling {} failed: {err}; \
                         the level is cleared",
                        position.symbol, ticker.price, position.quantity
                    ),
                    &position.symbol,
                );
                self.clear_level(position, origin).await;
            }
        }
    }

    /// Removes a level whose sell failed, so it is not retried on every ticker.
    async fn clear_level(&mut self, mut position: Position, origin: TradeOrigin) {
        match origin {
            TradeOrigin::StopLoss => position.stop_loss = None,
            _ => position.take_profit = None,
        }
        let storage = self.storage.clone();
        let record = position.clone();
        let saved = match self.bus.check_fence() {
            Ok(()) => self.write(move || storage.save_levels(&record)).await,
            Err(err) => Err(err),
        };
        if let Err(err) = saved {
            // Memory is cleared anyway: retrying every tick is worse than a level that may come
            // back after a restart.
            tracing::error!(symbol = %position.symbol, %err, "could not store the cleared level");
        }
        if self.ledger.set_levels(&position).is_ok() {
            self.publish_portfolio().await;
        }
    }

    async fn update_position(
        &mut self,
        symbol: &Symbol,
        update: PositionUpdate,
    ) -> Result<Position, ServiceError> {
        let current = self
            .ledger
            .position(symbol)
            .ok_or_else(|| ServiceError::NoPosition(symbol.clone()))?;
        let updated = update.apply_to(current)?;
        let storage = self.storage.clone();
        let record = updated.clone();
        self.bus.check_fence()?;
        self.write(move || storage.save_levels(&record)).await?;
        let position = self.ledger.set_levels(&updated)?.clone();
        self.publish_portfolio().await;
        Ok(position)
    }

    async fn publish_portfolio(&self) {
        let summary = self.summary().await;
        self.bus.publish(Event::PortfolioChanged(summary));
    }

    /// Values every position at the market's latest price, or at its entry price when the
    /// market has none.
    async fn summary(&self) -> PortfolioSummary {
        let mut valuations = Vec::with_capacity(self.ledger.positions().len());
        for position in self.ledger.positions().values() {
            let price = match self.market.ticker(&position.symbol).await {
                Ok(ticker) if ticker.price > Decimal::ZERO => ticker.price,
                _ => position.avg_entry_price,
            };
            valuations.push(PositionValuation::new(position.clone(), price));
        }
        let account = self.ledger.account();
        let mut summary = PortfolioSummary::new(
            account.cash,
            valuations,
            account.realized_pnl,
            account.fees_paid,
            account.trade_count,
            self.clock.now(),
        );
        let mut reserved = Reserved::default();
        for order in self.open.values() {
            reserved.cash += order.reserved_cash;
            if order.reserved_quantity > Decimal::ZERO {
                reserved
                    .quantities
                    .entry(order.symbol.clone())
                    .or_insert(ReservedQuantity(Decimal::ZERO))
                    .0 += order.reserved_quantity;
            }
        }
        reserved.available_cash = account.cash - reserved.cash;
        summary.reserved = reserved;
        summary
    }
}

/// The market order a fill of `order` is: its quantity (or amount), under its key.
///
/// # Errors
/// [`ServiceError::Domain`] for a stored order whose size is not positive.
fn trade_request(order: &Order) -> Result<TradeRequest, ServiceError> {
    Ok(TradeRequest::new(
        order.symbol.clone(),
        order.side,
        order.size(),
        order.client_order_id.clone(),
        TradeOrigin::Manual,
    )?)
}

/// Reads the open orders and checks that what they reserve is covered by the books: their cash
/// by the cash, their quantities by the positions.
/// Everything the engine keeps in memory, as the storage holds it.
struct Books {
    ledger: Ledger,
    next_trade_id: u64,
    open: BTreeMap<u64, Order>,
    next_order_id: u64,
    bot: BotState,
}

fn read_books(storage: &Storage, config: &TradingConfig) -> Result<Books, ServiceError> {
    let (ledger, next_trade_id) = load_books(storage, config)?;
    let open = load_open_orders(storage, &ledger)?;
    let next_order_id = storage
        .last_order_id()?
        .checked_add(1)
        .ok_or_else(|| ServiceError::Storage("order ids exhausted".into()))?;
    let bot = load_bot_state(storage, config)?;
    Ok(Books {
        ledger,
        next_trade_id,
        open,
        next_order_id,
        bot,
    })
}

fn load_open_orders(
    storage: &Storage,
    ledger: &Ledger,
) -> Result<BTreeMap<u64, Order>, ServiceError> {
    let orders = storage.load_open_orders()?;
    let mut cash = Decimal::ZERO;
    let mut quantities: BTreeMap<Symbol, Decimal> = BTreeMap::new();
    for order in &orders {
        cash += order.reserved_cash;
        *quantities.entry(order.symbol.clone()).or_default() += order.reserved_quantity;
    }
    if cash > ledger.cash() {
        return Err(ServiceError::Storage(format!(
            "books do not balance: open orders reserve {cash} cash, the account holds {}",
            ledger.cash()
        )));
    }
    for (symbol, quantity) in quantities {
        if quantity > ledger.held(&symbol) {
            return Err(ServiceError::Storage(format!(
                "books do not balance: open orders reserve {quantity} {symbol}, the account holds {}",
                ledger.held(&symbol)
            )));
        }
    }
    if !orders.is_empty() {
        tracing::info!(open_orders = orders.len(), reserved_cash = %cash, "open orders loaded");
    }
    Ok(orders.into_iter().map(|order| (order.id, order)).collect())
}

/// Reads the stored auto-trading state, or starts from `trading.auto_trade` when none is stored.
/// An unreadable value starts paused (the safe side), with an error in the log.
fn load_bot_state(storage: &Storage, config: &TradingConfig) -> Result<BotState, ServiceError> {
    let Some(value) = storage.load_setting(AUTO_TRADING_KEY)? else {
        let state = TradingState::from_auto_trade(config.auto_trade);
        tracing::info!(
            state = state.as_str(),
            "auto-trading as configured (trading.auto_trade)"
        );
        return Ok(BotState::initial(state));
    };
    match serde_json::from_str::<BotState>(&value) {
        Ok(bot) => {
            tracing::info!(
                state = bot.state.as_str(),
                changed_by = bot.changed_by.as_deref().unwrap_or("-"),
                "auto-trading state loaded"
            );
            Ok(bot)
        }
        Err(err) => {
            tracing::error!(%err, "unreadable stored auto-trading state; starting paused");
            Ok(BotState::initial(TradingState::Paused))
        }
    }
}

/// Reads the books and checks them against the trade log; returns them with the next trade id.
fn load_books(storage: &Storage, config: &TradingConfig) -> Result<(Ledger, u64), ServiceError> {
    let trades = storage.load_trades()?;
    let positions = storage.load_positions()?;
    let account = match storage.load_account()? {
        Some(account) => account,
        None if trades.is_empty() && positions.is_empty() => {
            let account = Account::new(config.initial_cash);
            storage.init_account(&account)?;
            tracing::info!(initial_cash = %account.initial_cash, "new paper account");
            account
        }
        None => {
            return Err(ServiceError::Storage(
                "books do not balance: trades or positions are stored without an account".into(),
            ));
        }
    };
    if account.initial_cash != config.initial_cash {
        tracing::warn!(
            stored = %account.initial_cash,
            configured = %config.initial_cash,
            "trading.initial_cash differs from the stored account's; keeping the stored one"
        );
    }
    let replayed = Ledger::replay(account.initial_cash, &trades)?;
    let stored = Ledger::from_parts(account, positions);
    stored
        .check_matches(&replayed)
        .map_err(|why| ServiceError::Storage(format!("books do not balance: {why}")))?;
    let next_trade_id = trades
        .last()
        .map_or(Some(1), |last| last.id.checked_add(1))
        .ok_or_else(|| ServiceError::Storage("trade ids exhausted".into()))?;
    tracing::info!(
        trades = trades.len(),
        positions = stored.positions().len(),
        cash = %stored.cash(),
        "paper account loaded"
    );
    Ok((stored, next_trade_id))
}

/// Runs a storage call on the blocking pool, so disk I/O never stalls the runtime.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|err| ServiceError::Storage(format!("storage task failed: {err}")))?
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures::{dec, trade};

    use super::*;

    #[test]
    fn new_storage_gets_an_account_with_the_configured_cash() {
        let storage = Storage::open(":memory:").unwrap();
        let (ledger, next) = load_books(&storage, &TradingConfig::default()).unwrap();
        assert_eq!(ledger, Ledger::new(dec("10000")));
        assert_eq!(next, 1);
        assert_eq!(
            storage.load_account().unwrap(),
            Some(Account::new(dec("10000")))
        );
    }

    #[test]
    fn stored_books_that_disagree_with_the_trade_log_are_refused() {
        let storage = Storage::open(":memory:").unwrap();
        load_books(&storage, &TradingConfig::default()).unwrap();
        let buy = trade(1, "BTCUSDT", "10", "1");
        let mut books = Ledger::new(dec("10000"));
        books.apply(&buy).unwrap();
        // The position is committed, but the account row claims the cash was never spent.
        storage
            .commit_trade(
                &buy,
                OrderSize::Quantity(dec("1")),
                books.positions().values().next(),
                &Account {
                    trade_count: 1,
                    ..Account::new(dec("10000"))
                },
            )
            .unwrap();
        let err = load_books(&storage, &TradingConfig::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("books do not balance: stored cash"),
            "{err}"
        );
    }

    #[test]
    fn stored_initial_cash_wins_over_the_configured_one() {
        let storage = Storage::open(":memory:").unwrap();
        load_books(&storage, &TradingConfig::default()).unwrap();
        let config = TradingConfig {
            initial_cash: dec("5"),
            ..TradingConfig::default()
        };
        let (ledger, _) = load_books(&storage, &config).unwrap();
        assert_eq!(ledger.account().initial_cash, dec("10000"));
        assert_eq!(ledger.cash(), dec("10000"));
    }
}
