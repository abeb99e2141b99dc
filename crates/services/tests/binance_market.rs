//! The Binance connector against a fake exchange on 127.0.0.1 speaking the combined-stream
//! format: updates, malformed messages, dropped connections, pings, closes, silence.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cryptobot_domain::{AlertType, Event, Symbol, Ticker};
use cryptobot_services::bus::Envelope;
use cryptobot_services::market::{
    BinanceConfig, BinanceMarket, BinanceStream, FeedState, MarketConfig, MarketSource,
};
use cryptobot_services::{EventBus, InMemoryBus, MarketService, ServiceMetrics, SystemClock};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;

/// Hang guard for every wait; never a performance assertion.
const LIMIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

/// The fake exchange: accepts WebSocket connections and hands each to the test with its path.
struct Exchange {
    addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<(String, Ws)>,
}

impl Exchange {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let mut path = String::new();
                // The signature is tungstenite's; its error type is not ours to shrink.
                #[allow(clippy::result_large_err)]
                let callback = |request: &Request, response: Response| {
                    path = request.uri().path().to_owned();
                    Ok(response)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await
                    && tx.send((path, ws)).is_err()
                {
                    break;
                }
            }
        });
        Self { addr, accepted }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The next connection, with its subscriptions read and acknowledged.
    async fn next_subscribed(&mut self) -> (Ws, Vec<String>) {
        let (path, mut ws) = tokio::time::timeout(LIMIT, self.accepted.recv())
            .await
            .expect("the connector connects within the limit")
            .expect("exchange running");
        assert_eq!(path, "/stream", "the combined-stream endpoint");
        let streams = read_subscribe(&mut ws).await;
        (ws, streams)
    }
}

/// Reads one SUBSCRIBE request, acknowledges it and returns its streams.
async fn read_subscribe(ws: &mut Ws) -> Vec<String> {
    loop {
        let message = tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("a subscribe request within the limit")
            .expect("connection open")
            .expect("readable");
        let Message::Text(text) = message else {
            continue;
        };
        let request: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(request["method"], "SUBSCRIBE", "{request}");
        let id = request["id"].as_u64().expect("numeric id");
        ws.send(Message::text(format!(r#"{{"result":null,"id":{id}}}"#)))
            .await
            .unwrap();
        return request["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
    }
}

fn ticker_frame(symbol: &str, last: &str) -> Message {
    let stream = format!("{}@ticker", symbol.to_ascii_lowercase());
    Message::text(format!(
        r#"{{"stream":"{stream}","data":{{"e":"24hrTicker","E":1700000000123,"s":"{symbol}","p":"1.0","P":"-2.50","c":"{last}","Q":"0.1","b":"{last}","B":"1","a":"{last}","A":"1","v":"1234.56780000","q":"1","O":0,"C":1,"n":1}}}}"#
    ))
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

struct Connector {
    market: BinanceMarket,
    state: FeedState,
    events: broadcast::Receiver<Arc<Envelope>>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// The market of `symbols` and its connector with `binance`, started; the token stops it.
fn spawn_feed(
    symbols: &[&str],
    binance: BinanceConfig,
    bus: Arc<InMemoryBus>,
    clock: Arc<SystemClock>,
) -> (
    BinanceMarket,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let config = MarketConfig {
        source: MarketSource::Binance,
        symbols: symbols.iter().map(|s| Symbol::parse(s).unwrap()).collect(),
        binance,
        ..MarketConfig::default()
    };
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.binance.validate(), Ok(()));
    let shutdown = CancellationToken::new();
    let (market, feed) = BinanceMarket::new(
        &config,
        7,
        bus,
        clock,
        Arc::new(ServiceMetrics::default()),
        shutdown.clone(),
    );
    (market, shutdown, feed.spawn())
}

impl Connector {
    fn start(exchange: &Exchange, symbols: &[&str], tune: impl FnOnce(&mut BinanceConfig)) -> Self {
        let clock = Arc::new(SystemClock);
        let bus = Arc::new(InMemoryBus::new(1024, clock.clone()));
        let mut config = BinanceConfig {
            ws_url: exchange.url(),
            reconnect_min_ms: 10,
            reconnect_max_ms: 50,
            stale_after_secs: 3_600,
            subscribe_rate_per_sec: 100,
            ..BinanceConfig::default()
        };
        tune(&mut config);
        let events = bus.subscribe();
        let (market, shutdown, task) = spawn_feed(symbols, config, bus, clock);
        Self {
            state: market.feed_state(),
            market,
            events,
            shutdown,
            task,
        }
    }

    /// The next event on the bus matching `pick`.
    async fn next_event<T>(&mut self, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        tokio::time::timeout(LIMIT, async {
            loop {
                let envelope = self.events.recv().await.expect("bus open");
                if let Some(found) = pick(&envelope.event) {
                    return found;
                }
            }
        })
        .await
        .expect("the expected event within the limit")
    }

    async fn next_ticker(&mut self) -> Ticker {
        self.next_event(|event| match event {
            Event::Ticker(ticker) => Some(ticker.clone()),
            _ => None,
        })
        .await
    }

    async fn next_alert(&mut self) -> AlertType {
        self.next_event(|event| match event {
            Event::Alert(alert) => Some(alert.alert_type),
            _ => None,
        })
        .await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the connector stops within the limit")
            .expect("the connector did not panic");
    }
}

#[tokio::test]
async fn updates_arrive_on_the_bus_as_tickers_with_exact_decimals() {
    let mut exchange = Exchange::start().await;
    let mut connector = Connector::start(&exchange, &["BTCUSDT", "ETHUSDT"], |_| {});
    let (mut ws, streams) = exchange.next_subscribed().await;
    assert_eq!(streams, ["btcusdt@ticker", "ethusdt@ticker"]);
    ws.send(ticker_frame("ETHUSDT", "3500.12345678"))
        .await
        .unwrap();
    let ticker = connector.next_ticker().await;
    assert_eq!(ticker.symbol.as_str(), "ETHUSDT");
    assert_eq!(ticker.price.to_string(), "3500.12345678");
    assert_eq!(ticker.volume_24h, dec("1234.5678"));
    assert_eq!(ticker.change_24h_pct, dec("-2.5"));
    assert_eq!(ticker.updated_at.timestamp_millis(), 1_700_000_000_123);
    // The handle serves it; the other symbol has no price yet.
    let eth = Symbol::parse("ETHUSDT").unwrap();
    assert_eq!(connector.market.ticker(&eth).await.unwrap(), ticker);
    let btc = Symbol::parse("BTCUSDT").unwrap();
    assert_eq!(
        connector.market.ticker(&btc).await.unwrap_err().code(),
        "no_price"
    );
    assert_eq!(connector.market.tickers().await, [ticker]);
    let status = connector.state.status();
    assert!(status.connected);
    assert!(status.last_update_age_ms.is_some());
    assert_eq!((status.reconnects, status.malformed_messages), (0, 0));
    connector.stop().await;
}

#[tokio::test]
async fn book_ticker_updates_use_the_mid_price() {
    let mut exchange = Exchange::start().await;
    let mut connector = Connector::start(&exchange, &["BNBUSDT"], |c| {
        c.stream = BinanceStream::BookTicker;
    });
    let (mut ws, streams) = exchange.next_subscribed().await;
    assert_eq!(streams, ["bnbusdt@bookTicker"]);
    ws.send(Message::text(
        r#"{"stream":"bnbusdt@bookTicker","data":{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21","a":"25.36520000","A":"40.66"}}"#,
    ))
    .await
    .unwrap();
    let ticker = connector.next_ticker().await;
    assert_eq!(ticker.price, dec("25.35855"));
    assert_eq!(ticker.bid.to_string(), "25.35190000");
    connector.stop().await;
}

#[tokio::test]
async fn malformed_messages_are_skipped_and_counted() {
    let mut exchange = Exchange::start().await;
    let mut connector = Connector::start(&exchange, &["BTCUSDT"], |_| {});
    let (mut ws, _) = exchange.next_subscribed().await;
    let malformed = [
        // TC0: not JSON
        Message::text("{not json"),
        // TC1: a price that is not a decimal
        Message::text(
            r#"{"stream":"btcusdt@ticker","data":{"s":"BTCUSDT","c":"lots","b":"1","a":"1"}}"#,
        ),
        // TC2: a price as a float
        Message::text(
            r#"{"stream":"btcusdt@ticker","data":{"s":"BTCUSDT","c":65000.5,"b":"1","a":"1"}}"#,
        ),
        // TC3: binary
        Message::binary(Bytes::from_static(b"\x00\x01")),
    ];
    for message in malformed {
        ws.send(message).await.unwrap();
    }
    ws.send(ticker_frame("BTCUSDT", "65000.5")).await.unwrap();
    // The first ticker published is the valid one: nothing malformed got through.
    assert_eq!(connector.next_ticker().await.price, dec("65000.5"));
    let status = connector.state.status();
    assert_eq!(status.malformed_messages, 4);
    assert!(
        status.connected,
        "malformed messages do not drop the connection"
    );
    connector.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_reconnects_and_resubscribes() {
    let mut exchange = Exchange::start().await;
    let mut connector = Connector::start(&exchange, &["BTCUSDT"], |_| {});
    let (mut ws, _) = exchange.next_subscribed().await;
    ws.send(ticker_frame("BTCUSDT", "1.5")).await.unwrap();
    assert_eq!(connector.next_ticker().await.price, dec("1.5"));
    drop(ws);
    let (mut ws, streams) = exchange.next_subscribed().await;
    assert_eq!(streams, ["btcusdt@ticker"]);
    ws.send(ticker_frame("BTCUSDT", "2.5")).await.unwrap();
    assert_eq!(connector.next_ticker().await.price, dec("2.5"));
    assert_eq!(connector.state.status().reconnects, 1);
    connector.stop().await;
}

#[tokio::test]
async fn a_close_with_1008_leads_to_a_reconnect() {
    let mut exchange = Exchange::start().await;
    let mut connector = Connector::start(&exchange, &["BTCUSDT"], |_| {});
    let (mut ws, _) = exchange.next_subscribed().await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Policy,
        reason: "Too many requests".into(),
    })))
    .await
    .unwrap();
    let (mut ws, streams) = exchange.next_subscribed().await;
    assert_eq!(streams, ["btcusdt@ticker"]);
    ws.send(ticker_frame("BTCUSDT", "3")).await.unwrap();
    assert_eq!(connector.next_ticker().await.price, dec("3"));
    assert_eq!(connector.state.status().reconnects, 1);
    connector.stop().await;
}

#[tokio::test]
async fn a_server_ping_is_answered_with_a_pong() {
    let mut exchange = Exchange::start().await;
    let connector = Connector::start(&exchange, &["BTCUSDT"], |_| {});
    let (mut ws, _) = exchange.next_subscribed().await;
    ws.send(Message::Ping(Bytes::from_static(b"are-you-there")))
        .await
        .unwrap();
    let pong = tokio::time::timeout(LIMIT, async {
        loop {
            match ws.next().await.expect("open").expect("readable") {
                Message::Pong(payload) => return payload,
                _ => continue,
            }
        }
    })
    .await
    .expect("a pong within the limit");
    assert_eq!(pong.as_ref(), b"are-you-there");
    connector.stop().await;
}

#[tokio::test]
async fn a_silent_feed_raises_a_stale_alert_then_a_resumed_alert() {
    let mut exchange = Exchange::start().await;
    let mut connector = Connector::start(&exchange, &["BTCUSDT"], |c| {
        c.stale_after_secs = 1;
    });
    let (mut ws, _) = exchange.next_subscribed().await;
    ws.send(ticker_frame("BTCUSDT", "10")).await.unwrap();
    assert_eq!(connector.next_ticker().await.price, dec("10"));
    // Silence: the alert comes once, the state says stale.
    assert_eq!(connector.next_alert().await, AlertType::FeedStalled);
    assert!(connector.state.status().stale);
    ws.send(ticker_frame("BTCUSDT", "11")).await.unwrap();
    assert_eq!(connector.next_alert().await, AlertType::FeedResumed);
    assert_eq!(connector.next_ticker().await.price, dec("11"));
    assert!(!connector.state.status().stale);
    connector.stop().await;
}

#[tokio::test]
async fn many_symbols_are_subscribed_in_paced_batches() {
    let mut exchange = Exchange::start().await;
    let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"];
    let connector = Connector::start(&exchange, &symbols, |c| {
        c.streams_per_subscribe = 2;
        c.subscribe_rate_per_sec = 20;
    });
    let (mut ws, first) = exchange.next_subscribed().await;
    let second = read_subscribe(&mut ws).await;
    let third = read_subscribe(&mut ws).await;
    assert_eq!(first, ["btcusdt@ticker", "ethusdt@ticker"]);
    assert_eq!(second, ["solusdt@ticker", "bnbusdt@ticker"]);
    assert_eq!(third, ["xrpusdt@ticker"]);
    connector.stop().await;
}

#[tokio::test]
async fn the_connection_is_renewed_before_its_maximum_age() {
    let mut exchange = Exchange::start().await;
    let mut connector = Connector::start(&exchange, &["BTCUSDT"], |c| {
        c.max_connection_age_secs = 1;
    });
    let (_first, _) = exchange.next_subscribed().await;
    // The exchange keeps the first connection open; the connector opens a new one by itself.
    let (mut ws, streams) = exchange.next_subscribed().await;
    assert_eq!(streams, ["btcusdt@ticker"]);
    ws.send(ticker_frame("BTCUSDT", "4")).await.unwrap();
    assert_eq!(connector.next_ticker().await.price, dec("4"));
    assert!(connector.state.status().reconnects >= 1);
    connector.stop().await;
}

#[tokio::test]
async fn a_connection_silent_past_the_idle_timeout_is_replaced() {
    let mut exchange = Exchange::start().await;
    let connector = Connector::start(&exchange, &["BTCUSDT"], |c| {
        c.idle_timeout_secs = 1;
    });
    let (_silent, _) = exchange.next_subscribed().await;
    let (_next, streams) = exchange.next_subscribed().await;
    assert_eq!(streams, ["btcusdt@ticker"]);
    connector.stop().await;
}

#[tokio::test]
async fn an_unreachable_exchange_is_retried_until_shutdown() {
    // A port that was free a moment ago: connections are refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let clock = Arc::new(SystemClock);
    let bus = Arc::new(InMemoryBus::new(16, clock.clone()));
    let config = BinanceConfig {
        ws_url: format!("ws://{addr}"),
        reconnect_min_ms: 5,
        reconnect_max_ms: 10,
        ..BinanceConfig::default()
    };
    let (market, shutdown, task) = spawn_feed(&["BTCUSDT"], config, bus, clock);
    let state = market.feed_state();
    tokio::time::timeout(LIMIT, async {
        while state.status().reconnects < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("retries within the limit");
    assert!(!state.status().connected);
    shutdown.cancel();
    tokio::time::timeout(LIMIT, task)
        .await
        .expect("stops within the limit")
        .unwrap();
}
