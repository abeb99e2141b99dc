//! The auto-trader: follows the strategy's signals with paper trades when `trading.auto_trade` is on.

use std::sync::Arc;

use cryptobot_domain::{
    ClientOrderId, Event, OrderSize, Side, Signal, SignalAction, TradeOrigin, TradeRequest,
};
use rust_decimal::Decimal;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{EventBus, PortfolioService, ServiceError, TradeService};

/// Settings of the auto-trader (`trading.auto_trade`, `trading.auto_trade_amount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoTraderConfig {
    /// Trade on signals at all. Default false.
    pub enabled: bool,
    /// Quote amount each buy spends. Default 100.
    pub amount: Decimal,
}

impl Default for AutoTraderConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            amount: Decimal::ONE_HUNDRED,
        }
    }
}

/// Spawns the auto-trader: on a buy signal it buys `config.amount` worth of the symbol, on a sell
/// signal it sells the whole position if there is one. Orders carry origin
/// [`TradeOrigin::Auto`] and client order id `auto-<SYMBOL>-<generated_at µs>-<seq>`, `seq` being
/// the signal's sequence number on the `signals` channel. The timestamp keeps ids unique across
/// restarts (sequence numbers start again at 1), so a new signal is never mistaken for a retry.
///
/// Rejections are logged and the loop carries on (the trading engine raises `trade_rejected`
/// alerts itself). When disabled the task only waits for `shutdown`.
pub fn spawn_auto_trader(
    config: AutoTraderConfig,
    bus: Arc<dyn EventBus>,
    trade: Arc<dyn TradeService>,
    portfolio: Arc<dyn PortfolioService>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    if !config.enabled {
        return tokio::spawn(async move { shutdown.cancelled().await });
    }
    let mut events = bus.subscribe();
    // The subscription is all the auto-trader needs from the bus.
    drop(bus);
    tokio::spawn(async move {
        loop {
            let envelope = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                received = events.recv() => match received {
                    Ok(envelope) => envelope,
                    Err(RecvError::Lagged(missed)) => {
                        // Missed signals are stale by now; acting on later ones is the right thing.
                        tracing::warn!(missed, "auto-trader lagged behind the bus; signals skipped");
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                },
            };
            let Event::Signal(signal) = &envelope.event else {
                continue;
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = follow(signal, envelope.seq, config.amount, trade.as_ref(), portfolio.as_ref()) => {}
            }
        }
        tracing::debug!("auto-trader stopped");
    })
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
    if err.is_client_error() {
        tracing::info!(symbol, side = side.as_str(), code = err.code(), %err, "auto-trade rejected");
    } else {
        tracing::warn!(symbol, side = side.as_str(), code = err.code(), %err, "auto-trade failed");
    }
}
