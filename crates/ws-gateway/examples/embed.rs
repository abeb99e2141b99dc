//! Embeds the gateway in a plain actix-web app with toy in-file services.
//!
//! Run: `cargo run -p cryptobot-ws-gateway --example embed -- 8080` (port optional, default 8080,
//! 0 picks one; the address is printed). Then connect to `ws://127.0.0.1:8080/api/v1/ws`.
//! BTCUSDT and ETHUSDT tick twice a second; `manual_trade` fills at the last price.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::{App, HttpServer};
use async_trait::async_trait;
use cryptobot_domain::{
    Event, OrderSize, PortfolioSummary, Position, PositionUpdate, Side, Symbol, Ticker, Trade,
    TradePage, TradeQuery, TradeRequest,
};
use cryptobot_services::{
    Clock, EventBus, Execution, InMemoryBus, MarketService, PortfolioService, ServiceError,
    SystemClock, TradeService,
};
use cryptobot_ws_gateway::{Gateway, GatewayConfig, GatewayServices};
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

/// Prices kept in a map, moved by a background task.
#[derive(Debug, Default)]
struct ToyMarket {
    prices: Mutex<HashMap<Symbol, Ticker>>,
}

#[async_trait]
impl MarketService for ToyMarket {
    fn symbols(&self) -> Vec<Symbol> {
        ["BTCUSDT", "ETHUSDT"]
            .iter()
            .filter_map(|s| Symbol::parse(s).ok())
            .collect()
    }

    async fn ticker(&self, symbol: &Symbol) -> Result<Ticker, ServiceError> {
        if !self.symbols().contains(symbol) {
            return Err(ServiceError::UnknownSymbol(symbol.clone()));
        }
        let prices = self.prices.lock().unwrap_or_else(PoisonError::into_inner);
        prices
            .get(symbol)
            .cloned()
            .ok_or_else(|| ServiceError::NoPrice(symbol.clone()))
    }

    async fn tickers(&self) -> Vec<Ticker> {
        let prices = self.prices.lock().unwrap_or_else(PoisonError::into_inner);
        prices.values().cloned().collect()
    }
}

/// Fills every order at the last price, with no fee and unlimited cash.
#[derive(Debug)]
struct ToyTrading {
    market: Arc<ToyMarket>,
    bus: Arc<InMemoryBus>,
    trades: Mutex<Vec<Trade>>,
}

#[async_trait]
impl TradeService for ToyTrading {
    async fn execute(&self, request: TradeRequest) -> Result<Execution, ServiceError> {
        let price = self.market.ticker(request.symbol()).await?.price;
        let quantity = match request.size() {
            OrderSize::Quantity(q) => q,
            OrderSize::Amount(a) => (a / price).round_dp(8),
        };
        let trade = {
            let mut trades = self.trades.lock().unwrap_or_else(PoisonError::into_inner);
            let trade = Trade {
                id: trades.len() as u64 + 1,
                symbol: request.symbol().clone(),
                side: request.side(),
                price,
                quantity,
                fee: Decimal::ZERO,
                notional: price * quantity,
                realized_pnl: Decimal::ZERO,
                executed_at: SystemClock.now(),
                client_order_id: request.client_order_id().cloned(),
                origin: request.origin(),
            };
            trades.push(trade.clone());
            trade
        };
        self.bus.publish(Event::TradeExecuted(trade.clone()));
        Ok(Execution {
            trade,
            replayed: false,
        })
    }

    async fn trades(&self, query: TradeQuery) -> Result<TradePage, ServiceError> {
        let trades = self.trades.lock().unwrap_or_else(PoisonError::into_inner);
        let matching: Vec<Trade> = if query.ascending() {
            trades
                .iter()
                .filter(|t| query.matches(t))
                .cloned()
                .collect()
        } else {
            trades
                .iter()
                .rev()
                .filter(|t| query.matches(t))
                .cloned()
                .collect()
        };
        Ok(TradePage {
            more: matching.len() > query.limit,
            trades: matching.into_iter().take(query.limit).collect(),
        })
    }
}

#[async_trait]
impl PortfolioService for ToyTrading {
    async fn summary(&self) -> Result<PortfolioSummary, ServiceError> {
        let trades = self.trades.lock().unwrap_or_else(PoisonError::into_inner);
        let spent: Decimal = trades
            .iter()
            .map(|t| match t.side {
                Side::Buy => t.notional,
                Side::Sell => -t.notional,
            })
            .sum();
        Ok(PortfolioSummary::new(
            Decimal::from(10_000) - spent,
            Vec::new(),
            Decimal::ZERO,
            Decimal::ZERO,
            trades.len() as u64,
            SystemClock.now(),
        ))
    }

    async fn update_position(
        &self,
        symbol: Symbol,
        _update: PositionUpdate,
    ) -> Result<Position, ServiceError> {
        Err(ServiceError::NoPosition(symbol))
    }
}

/// Moves each price by a deterministic wiggle twice a second and publishes it.
async fn feed(market: Arc<ToyMarket>, bus: Arc<InMemoryBus>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut n: i64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        for (symbol, base) in [("BTCUSDT", 42_000_i64), ("ETHUSDT", 2_500)] {
            let Ok(symbol) = Symbol::parse(symbol) else {
                continue;
            };
            let price = Decimal::from(base) + Decimal::new((n * 37) % 200 - 100, 1);
            let ticker = Ticker {
                symbol: symbol.clone(),
                price,
                bid: price - Decimal::new(1, 2),
                ask: price + Decimal::new(1, 2),
                volume_24h: Decimal::from(n),
                change_24h_pct: Decimal::ZERO,
                updated_at: SystemClock.now(),
            };
            market
                .prices
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(symbol, ticker.clone());
            bus.publish(Event::Ticker(ticker));
        }
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let shutdown = CancellationToken::new();
    let bus = Arc::new(InMemoryBus::new(4096, Arc::new(SystemClock)));
    let market = Arc::new(ToyMarket::default());
    let trading = Arc::new(ToyTrading {
        market: Arc::clone(&market),
        bus: Arc::clone(&bus),
        trades: Mutex::new(Vec::new()),
    });
    let gateway = Gateway::new(
        GatewayConfig {
            allowed_origins: vec!["*".to_owned()],
            ..GatewayConfig::default()
        },
        GatewayServices {
            market: Arc::clone(&market) as Arc<dyn MarketService>,
            trade: Arc::clone(&trading) as Arc<dyn TradeService>,
            portfolio: trading as Arc<dyn PortfolioService>,
            bus: Arc::clone(&bus) as Arc<dyn EventBus>,
        },
        shutdown.clone(),
    );
    tokio::spawn(feed(market, bus, shutdown.clone()));
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal_token.cancel();
    });
    let app_gateway = gateway.clone();
    let server = HttpServer::new(move || {
        let gateway = app_gateway.clone();
        App::new().configure(move |cfg| gateway.configure(cfg))
    })
    .on_connect(gateway.on_connect())
    .disable_signals()
    .shutdown_signal(shutdown.clone().cancelled_owned())
    .shutdown_timeout(2)
    .bind(("127.0.0.1", port))?;
    for addr in server.addrs() {
        println!("listening on ws://{addr}/api/v1/ws");
    }
    server.run().await?;
    gateway.closed().await;
    Ok(())
}
