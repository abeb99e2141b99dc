//! A bot that follows the gateway's `signals` channel and trades on it.
//!
//! ```sh
//! make run                                                      # the server, in another terminal
//! cargo run -p cryptobot-client --example signal_bot            # ws://127.0.0.1:8080/api/v1/ws
//! CRYPTOBOT_URL=ws://host:port/api/v1/ws CRYPTOBOT_TOKEN=... cargo run -p cryptobot-client --example signal_bot
//! ```
//!
//! On a `buy` signal it buys for `CRYPTOBOT_BOT_AMOUNT` (default 100) of the quote asset; on a
//! `sell` signal it sells what it bought of that symbol. It prints every trade of the account
//! (its own and others'), exactly once, across reconnects and server restarts.

use std::collections::HashMap;

use cryptobot_client::{Client, ClientConfig, ErrorCode, TradeRequest, Update};
use cryptobot_domain::{Channel, Event, SignalAction};
use rust_decimal::Decimal;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("CRYPTOBOT_URL").unwrap_or_else(|_| "ws://127.0.0.1:8080/api/v1/ws".into());
    let amount: Decimal = std::env::var("CRYPTOBOT_BOT_AMOUNT")
        .unwrap_or_else(|_| "100".into())
        .parse()?;
    let mut config = ClientConfig::new(url).channels([Channel::Signals, Channel::Trades]);
    if let Ok(token) = std::env::var("CRYPTOBOT_TOKEN") {
        config = config.token(token);
    }
    let (client, mut updates) = Client::connect(config).await?;
    // What this bot bought and still holds, per symbol.
    let mut held: HashMap<String, Decimal> = HashMap::new();
    while let Some(update) = updates.recv().await {
        match update {
            Update::Event(received) => match received.event {
                Event::Signal(signal) => {
                    let order = match signal.action {
                        SignalAction::Buy => {
                            TradeRequest::buy_amount(signal.symbol.clone(), amount)
                        }
                        SignalAction::Sell => match held.get(signal.symbol.as_str()) {
                            Some(quantity) if !quantity.is_zero() => {
                                TradeRequest::sell_quantity(signal.symbol.clone(), *quantity)
                            }
                            _ => continue,
                        },
                        SignalAction::Hold => continue,
                    };
                    match client.manual_trade(&order).await {
                        Ok(done) => {
                            let entry = held
                                .entry(done.trade.symbol.as_str().to_owned())
                                .or_default();
                            match order.side {
                                cryptobot_domain::Side::Buy => *entry += done.trade.quantity,
                                cryptobot_domain::Side::Sell => *entry -= done.trade.quantity,
                            }
                            println!(
                                "{:?} on {}: {}",
                                signal.action, signal.symbol, signal.reason
                            );
                        }
                        // Refusals are typed: no cash left is not worth a retry, a busy engine is.
                        Err(err) if err.code() == Some(&ErrorCode::InsufficientFunds) => {
                            eprintln!("no cash left for {}", signal.symbol);
                        }
                        Err(err) if err.code().is_some_and(ErrorCode::is_retryable) => {
                            eprintln!("retry later: {err}");
                        }
                        Err(err) => eprintln!("refused: {err}"),
                    }
                }
                Event::TradeExecuted(trade) => println!(
                    "trade #{} {} {} {} at {} ({:?})",
                    trade.id,
                    trade.side.as_str(),
                    trade.quantity,
                    trade.symbol,
                    trade.price,
                    trade.origin
                ),
                _ => {}
            },
            Update::Connected { epoch, recovered } => {
                eprintln!("connected (epoch {epoch}, resumed {recovered:?})")
            }
            Update::Disconnected { reason } => eprintln!("disconnected: {reason}; reconnecting"),
            // Only with the `orders` channel, which this bot does not follow.
            Update::OpenOrders { .. } => {}
            Update::Stopped(err) => return Err(err.into()),
        }
    }
    Ok(())
}
