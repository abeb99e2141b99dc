//! The auto-trader: follows the strategy's signals with paper trades while auto-trading runs.

use std::sync::Arc;

use cryptobot_domain::{
    ClientOrderId, Event, OrderSize, Side, Signal, SignalAction, TradeOrigin, TradeRequest,
};
use rust_decimal::Decimal;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::trading::TradingConfig;
use crate::{EventBus, PortfolioService, ServiceError, Subscription, TradeService};

/// The auto-trader: on a buy signal it buys `trading.auto_trade_amount` worth of the symbol, on a sell signal
/// it sells the whole position if there is one. Orders carry origin [`TradeOrigin::Auto`] and
/// client order id `auto-<SYMBOL>-<generated_at µs>-<seq>`, `seq` being the signal's sequence
/// number on the `signals` channel. The timestamp keeps ids unique across restarts (sequence
/// numbers start again at 1), so a new signal is never mistaken for a retry.
///
/// Rejections are logged and it carries on (the trading engine raises `trade_rejected` alerts
/// itself). Signals missed in a lag are stale by then and skipped. While the engine's
/// auto-trading state is `paused` (initially `trading.auto_trade`, then pause / resume at
/// runtime) a signal trades nothing: the state is asked before each trade, and the engine refuses
/// an auto-trade that still comes after a pause (`trading_paused`).
pub struct AutoTrader {
    /// `trading.auto_trade_amount`: the quote amount each buy spends.
    amount: Decimal,
    /// The subscription is all the auto-trader needs from the bus.
    events: Subscription,
    trade: Arc<dyn TradeService>,
    portfolio: Arc<dyn PortfolioService>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for AutoTrader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoTrader")
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl AutoTrader {
    /// Builds the auto-trader spending `trading.auto_trade_amount` per buy and subscribes it to
    /// `bus`; it stops when `shutdown` is cancelled.
    #[must_use]
    pub fn new(
        config: &TradingConfig,
        bus: &dyn EventBus,
        trade: Arc<dyn TradeService>,
        portfolio: Arc<dyn PortfolioService>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            amount: config.auto_trade_amount,
            events: Subscription::new(bus.subscribe(), "auto-trader"),
            trade,
            portfolio,
            shutdown,
        }
    }

    /// Runs the auto-trader on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Follows signals until the shutdown token is cancelled or the bus closes.
    pub async fn run(mut self) {
        while let Some(envelope) = self.events.next_until(&self.shutdown).await {
            let Event::Signal(signal) = &envelope.event else {
                continue;
            };
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                () = follow(signal, envelope.seq, self.amount, self.trade.as_ref(), self.portfolio.as_ref()) => {}
            }
        }
        tracing::debug!("auto-trader stopped");
    }
}

/// Acts on one signal; every failure is logged, none is fatal.
async fn follow(
    signal: &Signal,
    seq: u64,
    amount: Decimal,
    trade: &dyn TradeService,
    portfolio: &dyn PortfolioService,
) {
    let symbol = &signal.symbol;
    if signal.action == SignalAction::Hold {
        return;
    }
    match trade.bot_state().await {
        Ok(bot) if bot.is_running() => {}
        Ok(_) => {
            tracing::debug!(%symbol, seq, "signal not followed: auto-trading is paused");
            return;
        }
        Err(err) => {
            tracing::warn!(%symbol, seq, %err, "signal not followed: the auto-trading state is unknown");
            return;
        }
    }
    let (side, size) = match signal.action {
        SignalAction::Buy => (Side::Buy, OrderSize::Amount(amount)),
        SignalAction::Sell => match held_quantity(portfolio, signal).await {
            Some(quantity) => (Side::Sell, OrderSize::Quantity(quantity)),
            None => return,
        },
        SignalAction::Hold => return,
    };
    let generated_us = signal.generated_at.timestamp_micros();
    let client_order_id = match ClientOrderId::parse(&format!("auto-{symbol}-{generated_us}-{seq}"))
    {
        Ok(id) => id,
        Err(err) => {
            tracing::error!(%symbol, seq, %err, "auto-trade skipped: could not build a client order id");
            return;
        }
    };
    let request = match TradeRequest::new(
        symbol.clone(),
        side,
        size,
        Some(client_order_id),
        TradeOrigin::Auto,
    ) {
        Ok(request) => request,
        Err(err) => {
            tracing::error!(%symbol, seq, %err, "auto-trade skipped: not a valid trade");
            return;
        }
    };
    match trade.execute(request).await {
        Ok(execution) if execution.replayed => {
            tracing::warn!(%symbol, seq, trade_id = execution.trade.id, "auto-trade answered by an earlier trade with the same client order id");
        }
        Ok(execution) => {
            tracing::info!(%symbol, side = side.as_str(), trade_id = execution.trade.id, "auto-trade executed");
        }
        Err(err) => log_rejection(symbol.as_str(), side, &err),
    }
}

/// Returns the quantity held in the signal's symbol, `None` when there is no position or the
/// portfolio cannot be read (logged).
async fn held_quantity(portfolio: &dyn PortfolioService, signal: &Signal) -> Option<Decimal> {
    match portfolio.summary().await {
        Ok(summary) => summary
            .positions
            .into_iter()
            .find(|valuation| valuation.position.symbol == signal.symbol)
            .map(|valuation| valuation.position.quantity)
            .filter(|quantity| *quantity > Decimal::ZERO),
        Err(err) => {
            tracing::warn!(symbol = %signal.symbol, %err, "auto-trader could not read the portfolio");
            None
        }
    }
}

fn log_rejection(symbol: &str, side: Side, err: &ServiceError) {
    if matches!(err, ServiceError::TradingPaused) {
        tracing::debug!(
            symbol,
            side = side.as_str(),
            "auto-trade not taken: paused meanwhile"
        );
    } else if err.is_client_error() {
        tracing::info!(symbol, side = side.as_str(), code = err.code(), %err, "auto-trade rejected");
    } else {
        tracing::warn!(symbol, side = side.as_str(), code = err.code(), %err, "auto-trade failed");
    }
}
