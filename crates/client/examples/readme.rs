//! The example of README.md ("From another Rust bot"), compiled so that it cannot rot: a unit test
//! of the crate checks that README.md shows exactly the lines between the markers.
use cryptobot_client::{Client, ClientConfig, Order};
use cryptobot_domain::{Channel, Event, SignalAction};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // README begin
    let config = ClientConfig::new("ws://127.0.0.1:8080/api/v1/ws")
        .token("my-token") // when auth.mode is not "none"
        .channels([Channel::Signals, Channel::Trades]);
    let (client, mut updates) = Client::connect(config).await?;
    while let Some(received) = updates.next_event().await {
        // reconnects, resumes and refills happen inside
        match received.event {
            Event::Signal(s) if s.action == SignalAction::Buy => {
                let order = Order::buy_amount(s.symbol, "100".parse()?);
                let done = client.manual_trade(&order).await?;
                println!("bought {} at {}", done.trade.quantity, done.trade.price);
            }
            Event::TradeExecuted(trade) => println!("trade #{}", trade.id), // once, in order
            _ => {}
        }
    }
    // README end
    Ok(())
}
