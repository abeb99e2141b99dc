//! The example of README.md ("From another Rust bot"), compiled so that it cannot rot: a unit test
//! of the crate checks that README.md shows exactly the lines between the markers.
use cryptobot_client::{Client, ClientConfig, NewOrder, TradeRequest};
use cryptobot_domain::{Channel, Event, OrderRequest, Side, SignalAction};
use rust_decimal::Decimal;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // README begin
    let config = ClientConfig::new("ws://127.0.0.1:8080/api/v1/ws")
        .token("my-token") // when auth.mode is not "none"
        .channels([Channel::Signals, Channel::Trades, Channel::Orders]);
    let (client, mut updates) = Client::connect(config).await?;
    while let Some(received) = updates.next_event().await {
        // reconnects, resumes and refills happen inside
        match received.event {
            Event::Signal(s) if s.action == SignalAction::Buy => {
                let order = TradeRequest::buy_amount(s.symbol.clone(), "100".parse()?);
                let done = client.manual_trade(&order).await?;
                // and a resting sell 2% higher, with its own idempotency key
                let price = (done.trade.price * Decimal::new(102, 2)).round_dp(2);
                let sell = OrderRequest::limit(s.symbol, Side::Sell, done.trade.quantity, price)?;
                client.place_order(&sell).await?;
            }
            Event::TradeExecuted(trade) => println!("trade #{}", trade.id), // once, in order
            Event::OrderUpdated(u) => println!("order #{} {:?}", u.order.id, u.event),
            _ => {}
        }
    }
    // README end
    Ok(())
}
