//! The cloneable handle of the paper trading engine, implementing the trade and portfolio
//! services by sending commands to the engine actor.

use std::sync::Arc;

use async_trait::async_trait;
use cryptobot_domain::{
    BotState, Candle, DailyProfit, ForceExitRequest, Interval, Order, OrderPage, OrderQuery,
    OrderRef, OrderRequest, Performance, PortfolioSummary, Position, PositionUpdate, Symbol,
    TradePage, TradeQuery, TradeRequest, TradingState,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::TradingConfig;
use super::engine::{Command, PaperEngine};
use super::storage::Storage;
use super::{Execution, ForceExit, OpenOrders, Placement, PortfolioService, TradeService};
use crate::market::{CandleHistory, CandleQuery};
use crate::{Clock, EventBus, MarketService, ServiceError, ServiceMetrics};

/// Handle to the paper trading engine; clones share the one engine.
///
/// The engine stops when the shutdown token is cancelled or when every handle is dropped; calls
/// after that fail with [`ServiceError::Unavailable`].
#[derive(Debug, Clone)]
pub struct PaperTrading {
    commands: mpsc::Sender<Command>,
    /// The candle history served alongside (none until [`PaperTrading::with_candles`]).
    candles: Option<CandleHistory>,
    /// For `cryptobot_engine_command_seconds`.
    metrics: Arc<ServiceMetrics>,
}

impl PaperTrading {
    /// Loads the account from storage (initializing it with `initial_cash` on first start),
    /// checks that the books balance, and spawns the engine actor with `tokio::spawn`.
    ///
    /// Reads the storage synchronously: call it at startup, inside a tokio runtime. The engine
    /// subscribes to the bus before this returns, so it sees every ticker published afterwards.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`] when the configuration is out of range (see
    /// [`TradingConfig::validate`]); [`ServiceError::Storage`] when the storage cannot be
    /// read or its books do not agree with its trade log (`books do not balance: ...`).
    pub fn spawn(
        config: TradingConfig,
        storage: Storage,
        market: Arc<dyn MarketService>,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        metrics: Arc<ServiceMetrics>,
        shutdown: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), ServiceError> {
        let (engine, commands) = PaperEngine::load(
            config,
            storage,
            market,
            bus,
            clock,
            Arc::clone(&metrics),
            shutdown,
        )?;
        // A weak sender: the gauge must not keep the engine alive after its last handle.
        let queue = commands.downgrade();
        metrics.watch_engine_queue(move || {
            queue
                .upgrade()
                .map_or(0, |sender| sender.max_capacity() - sender.capacity())
        });
        let task = tokio::spawn(engine.run());
        Ok((
            Self {
                commands,
                candles: None,
                metrics,
            },
            task,
        ))
    }

    /// Serves `history` as this service's candles (`TradeService::candles`), so gateway nodes
    /// get it forwarded with the trading commands.
    #[must_use]
    pub fn with_candles(mut self, history: CandleHistory) -> Self {
        self.candles = Some(history);
        self
    }

    fn history(&self) -> Result<&CandleHistory, ServiceError> {
        self.candles
            .as_ref()
            .ok_or_else(|| ServiceError::Unavailable("no candle history on this node".to_owned()))
    }

    /// Sends a command and waits for its answer.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let command = command(reply);
        let name = command.name();
        let queued = std::time::Instant::now();
        self.commands.send(command).await.map_err(|_| stopped())?;
        let answered = answer.await.map_err(|_| stopped());
        self.metrics.engine_command(name, queued.elapsed());
        answered
    }
}

fn stopped() -> ServiceError {
    ServiceError::Unavailable("paper trading engine stopped".to_owned())
}

#[async_trait]
impl TradeService for PaperTrading {
    async fn execute(&self, request: TradeRequest) -> Result<Execution, ServiceError> {
        self.ask(|reply| Command::Execute { request, reply })
            .await?
    }

    async fn trades(&self, query: TradeQuery) -> Result<TradePage, ServiceError> {
        self.ask(|reply| Command::Trades { query, reply }).await?
    }

    async fn probe_storage(&self) -> Result<(), ServiceError> {
        self.ask(|reply| Command::ProbeStorage { reply }).await?
    }

    async fn performance(&self) -> Result<Performance, ServiceError> {
        self.ask(|reply| Command::Performance { reply }).await?
    }

    async fn daily_profit(&self, days: u32) -> Result<Vec<DailyProfit>, ServiceError> {
        self.ask(|reply| Command::DailyProfit { days, reply })
            .await?
    }

    async fn place_order(&self, request: OrderRequest) -> Result<Placement, ServiceError> {
        self.ask(|reply| Command::PlaceOrder { request, reply })
            .await?
    }

    async fn cancel_order(&self, order: OrderRef) -> Result<Order, ServiceError> {
        self.ask(|reply| Command::CancelOrder { order, reply })
            .await?
    }

    async fn cancel_all_orders(&self, symbol: Option<Symbol>) -> Result<Vec<Order>, ServiceError> {
        self.ask(|reply| Command::CancelAll { symbol, reply })
            .await?
    }

    async fn orders(&self, query: OrderQuery) -> Result<OrderPage, ServiceError> {
        self.ask(|reply| Command::Orders { query, reply }).await?
    }

    async fn open_orders(&self) -> Result<OpenOrders, ServiceError> {
        self.ask(|reply| Command::OpenOrders { reply }).await
    }

    async fn bot_state(&self) -> Result<BotState, ServiceError> {
        self.ask(|reply| Command::BotState { reply }).await
    }

    async fn set_trading_state(
        &self,
        state: TradingState,
        changed_by: Option<String>,
    ) -> Result<BotState, ServiceError> {
        self.ask(|reply| Command::SetTradingState {
            state,
            changed_by,
            reply,
        })
        .await?
    }

    async fn force_exit(&self, request: ForceExitRequest) -> Result<ForceExit, ServiceError> {
        self.ask(|reply| Command::ForceExit { request, reply })
            .await?
    }

    async fn candles(&self, query: CandleQuery) -> Result<Vec<Candle>, ServiceError> {
        self.history()?.candles(query).await
    }

    async fn open_candle(
        &self,
        symbol: Symbol,
        interval: Interval,
    ) -> Result<Option<Candle>, ServiceError> {
        Ok(self.history()?.open_candle(&symbol, interval))
    }
}

#[async_trait]
impl PortfolioService for PaperTrading {
    async fn summary(&self) -> Result<PortfolioSummary, ServiceError> {
        self.ask(|reply| Command::Summary { reply }).await
    }

    async fn update_position(
        &self,
        symbol: Symbol,
        update: PositionUpdate,
    ) -> Result<Position, ServiceError> {
        self.ask(|reply| Command::UpdatePosition {
            symbol,
            update,
            reply,
        })
        .await?
    }
}
