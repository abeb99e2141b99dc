//! Test harness: a real actix HttpServer on 127.0.0.1:0 with the gateway mounted over mocked
//! services and the real in-memory bus, plus a tokio-tungstenite client.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{App, HttpServer};
use cryptobot_domain::{Event, PortfolioSummary, fixtures};
use cryptobot_services::market::MockMarketService;
use cryptobot_services::trading::{MockPortfolioService, MockTradeService};
use cryptobot_services::{EventBus, InMemoryBus, ServiceError, SystemClock};
use cryptobot_ws_gateway::{Gateway, GatewayConfig, GatewayServices};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type RawWs = WebSocketStream<TcpStream>;

/// Hang guard for every read.
pub const READ_GUARD: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub bus: Arc<InMemoryBus>,
    pub gateway: Gateway,
    pub shutdown: CancellationToken,
    pub summary_calls: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.addr)
    }

    pub async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.url()).await.unwrap();
        ws
    }

    /// A client whose kernel receive buffer is tiny, so it fills fast when it stops reading.
    pub async fn connect_small_buffer(&self) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(self.url(), stream)
            .await
            .unwrap();
        ws
    }

    pub fn publish(&self, event: Event) {
        self.bus.publish(event);
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.stop(true).await;
    }
}

pub fn summary() -> PortfolioSummary {
    PortfolioSummary::new(
        fixtures::dec("10000"),
        vec![],
        fixtures::dec("0"),
        fixtures::dec("0"),
        0,
        fixtures::instant(),
    )
}

/// Market knows BTCUSDT and ETHUSDT, priced 100.
pub fn market() -> MockMarketService {
    let mut market = MockMarketService::new();
    market
        .expect_symbols()
        .returning(|| vec![fixtures::symbol("BTCUSDT"), fixtures::symbol("ETHUSDT")]);
    market.expect_ticker().returning(|symbol| {
        if symbol.as_str() == "BTCUSDT" || symbol.as_str() == "ETHUSDT" {
            Ok(fixtures::ticker(symbol.as_str(), "100"))
        } else {
            Err(ServiceError::UnknownSymbol(symbol.clone()))
        }
    });
    market.expect_tickers().returning(Vec::new);
    market
}

pub fn test_config() -> GatewayConfig {
    GatewayConfig::default()
}

pub async fn start(config: GatewayConfig) -> TestServer {
    start_with(
        config,
        |_| MockTradeService::new(),
        MockPortfolioService::new(),
    )
    .await
}

/// Starts a server; `trade` gets the bus so mocked executions can publish like the real engine.
pub async fn start_with(
    config: GatewayConfig,
    trade: impl FnOnce(Arc<InMemoryBus>) -> MockTradeService,
    mut portfolio: MockPortfolioService,
) -> TestServer {
    let bus = Arc::new(InMemoryBus::new(65_536, Arc::new(SystemClock)));
    let summary_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&summary_calls);
    portfolio.expect_summary().returning(move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(summary())
    });
    let shutdown = CancellationToken::new();
    let gateway = Gateway::new(
        config,
        GatewayServices {
            market: Arc::new(market()),
            trade: Arc::new(trade(Arc::clone(&bus))),
            portfolio: Arc::new(portfolio),
            bus: Arc::clone(&bus) as Arc<dyn EventBus>,
        },
        shutdown.clone(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app_gateway = gateway.clone();
    let server = HttpServer::new(move || {
        let gateway = app_gateway.clone();
        App::new().configure(move |cfg| gateway.configure(cfg))
    })
    .on_connect(gateway.on_connect())
    .workers(2)
    .disable_signals()
    .shutdown_signal(shutdown.clone().cancelled_owned())
    .shutdown_timeout(2)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    TestServer {
        addr,
        bus,
        gateway,
        shutdown,
        summary_calls,
        handle,
    }
}

pub async fn send_json<S>(ws: &mut WebSocketStream<S>, value: Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// What the client saw next, with pings and pongs skipped.
#[derive(Debug)]
pub enum Seen {
    Json(Value),
    Close(Option<CloseFrame>),
    /// The connection ended without a close frame (or errored).
    Ended,
}

pub async fn next_seen<S>(ws: &mut WebSocketStream<S>) -> Seen
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let next = tokio::time::timeout(READ_GUARD, ws.next())
            .await
            .expect("hang guard: no frame within 10 s");
        match next {
            Some(Ok(Message::Text(text))) => {
                return Seen::Json(serde_json::from_str(&text).expect("every frame is JSON"));
            }
            Some(Ok(Message::Close(frame))) => return Seen::Close(frame),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(_)) | None => return Seen::Ended,
        }
    }
}

pub async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match next_seen(ws).await {
        Seen::Json(value) => value,
        other => panic!("expected a JSON frame, got {other:?}"),
    }
}

/// Reads frames until one of `kind`, returning it (frames of other types are skipped).
pub async fn next_of_type<S>(ws: &mut WebSocketStream<S>, kind: &str) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for _ in 0..10_000 {
        let value = next_json(ws).await;
        if value["type"] == kind {
            return value;
        }
    }
    panic!("no {kind} frame");
}

/// Reads until the close frame and returns its code (panics if the connection just ended).
pub async fn close_code<S>(ws: &mut WebSocketStream<S>) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match next_seen(ws).await {
            Seen::Json(_) => {}
            Seen::Close(Some(frame)) => return u16::from(frame.code),
            Seen::Close(None) => panic!("close frame without a code"),
            Seen::Ended => panic!("connection ended without a close frame"),
        }
    }
}
