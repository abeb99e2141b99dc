//! Client layer of cryptobot: what another Rust bot uses to consume the gateway.
//!
//! It provides [`Client`], which connects to `ws://HOST:PORT/api/v1/ws` with a token, delivers the
//! domain's typed [`Event`]s, and sends commands (`manual_trade` with a [`TradeRequest`] and
//! `place_order` with an [`OrderRequest`] built by [`NewOrder`], each with an idempotency key made
//! for the caller; `cancel_order`, `cancel_all_orders`, `list_orders`, `update_position`,
//! `pause_trading` / `resume_trading` and `force_exit`, subscribe and unsubscribe) whose refusals
//! are typed [`ErrorCode`]s. The `bot` channel comes as [`Event::BotStateChanged`] events, its
//! snapshot on subscribing included. The `orders` channel comes
//! as [`Event::OrderUpdated`] events plus an [`Update::OpenOrders`] snapshot on subscribing (and
//! after a resume the server could not replay). It reconnects by itself (exponential backoff with jitter), resumes with the
//! epoch and the `seq` of every channel, drops repeats, and refills trades over REST when the
//! server cannot replay them, so a consumer of `trades` sees every trade exactly once and in order,
//! across server restarts (docs/protocol.md, "Client reconnect recipe").
//!
//! May depend on: the domain, tokio, tokio-tungstenite (plain `ws://`, no TLS stack), serde_json.
//! Must not depend on: the services, the gateway, the server, actix.
//!
//! ```no_run
//! use cryptobot_client::{Client, ClientConfig, TradeRequest, Update};
//! use cryptobot_domain::{Channel, Event, SignalAction};
//! use rust_decimal::Decimal;
//!
//! # async fn bot() -> Result<(), cryptobot_client::ClientError> {
//! let config = ClientConfig::new("ws://127.0.0.1:8080/api/v1/ws")
//!     .token("my-token")
//!     .channels([Channel::Trades, Channel::Signals]);
//! let (client, mut updates) = Client::connect(config).await?;
//! while let Some(update) = updates.recv().await {
//!     if let Update::Event(received) = update
//!         && let Event::Signal(signal) = received.event
//!         && signal.action == SignalAction::Buy
//!     {
//!         let order = TradeRequest::buy_amount(signal.symbol, Decimal::from(100));
//!         let done = client.manual_trade(&order).await?;
//!         println!("bought {} at {}", done.trade.quantity, done.trade.price);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cryptobot_domain::{
    BotState, Channel, ClientOrderId, Event, LevelChange, Order, OrderPage, OrderQuery, OrderRef,
    OrderRequest, OrderSize, Position, Side, Symbol, Trade,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// Reconnect delays with jitter.
mod backoff;
/// The client's error type and the gateway's stable error codes.
pub mod error;
/// Resting orders: request constructors, payloads, replies.
mod orders;
/// The REST calls of a trade refill.
mod rest;
/// Dedupe and resume state.
mod tracker;
/// Frames in and out.
mod wire;
/// The connection actor.
mod worker;

pub use error::{ClientError, ErrorCode};
pub use orders::{NewOrder, OrderPlacement};

/// Where the token goes at the upgrade (docs/protocol.md, "Connecting").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenPlacement {
    /// `Authorization: Bearer <token>`.
    #[default]
    Header,
    /// The sub-protocol `bearer.<token>` next to `cryptobot.v1` (what browsers must use).
    SubProtocol,
}

/// How to reach the gateway and how to behave; built with [`ClientConfig::new`] and its setters.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    url: String,
    token: Option<String>,
    token_placement: TokenPlacement,
    channels: BTreeSet<Channel>,
    trades_after: Option<u64>,
    request_timeout: Duration,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    backoff_initial: Duration,
    backoff_max: Duration,
    update_buffer: usize,
}

impl ClientConfig {
    /// A client of `url` (`ws://HOST:PORT/api/v1/ws`) without a token, on the server's default
    /// channels (`trades`, `portfolio`, `alerts`).
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            token_placement: TokenPlacement::Header,
            channels: BTreeSet::from([Channel::Trades, Channel::Portfolio, Channel::Alerts]),
            trades_after: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: None,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            update_buffer: 1024,
        }
    }

    /// The token, for a server with `auth.mode` other than `none`.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Where the token goes at the upgrade (the REST refill always uses the header).
    #[must_use]
    pub const fn token_placement(mut self, placement: TokenPlacement) -> Self {
        self.token_placement = placement;
        self
    }

    /// The channels to deliver, instead of the server's defaults. Default channels not listed are
    /// unsubscribed on every connection.
    #[must_use]
    pub fn channels(mut self, channels: impl IntoIterator<Item = Channel>) -> Self {
        self.channels = channels.into_iter().collect();
        self
    }

    /// Delivers every trade with an id above `id` (refilled over REST on the first connection),
    /// e.g. the last one a bot stored before it stopped. Without it the trade stream starts at
    /// the newest trade when the client first connects.
    #[must_use]
    pub const fn trades_after(mut self, id: u64) -> Self {
        self.trades_after = Some(id);
        self
    }

    /// Longest wait for a command's reply (default 10 s), and for one REST page.
    #[must_use]
    pub const fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Longest wait for TCP, the handshake and the `welcome` of one attempt (default 10 s).
    #[must_use]
    pub const fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A connection on which nothing (not even a ping) arrives for this long is taken as dead
    /// and replaced. Default: the `client_timeout_secs` of the server's `welcome`.
    #[must_use]
    pub const fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The reconnect delays: the first `initial` (default 0.5 s), doubling per failed attempt up
    /// to `max` (default 30 s); each wait is random between half and the whole delay.
    #[must_use]
    pub const fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// How many updates may wait for the caller (default 1024). When they are not read the
    /// client stops reading the socket; the server then closes it as a slow consumer and the
    /// client resumes, so nothing is lost, only late.
    #[must_use]
    pub fn update_buffer(mut self, updates: usize) -> Self {
        self.update_buffer = updates.max(1);
        self
    }
}

/// An event as received, with where it sits on its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The channel it came on.
    pub channel: Channel,
    /// Its `seq` on the channel; `None` for a trade refilled over REST.
    pub seq: Option<u64>,
    /// True for a snapshot (a ticker on subscribe, a portfolio after a resume that was not
    /// recovered).
    pub snapshot: bool,
    /// The event, as the domain defines it.
    pub event: Event,
}

/// What the client tells its caller, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// A new event (never a repeat).
    Event(Received),
    /// A connection is up and subscribed. `recovered` is the server's answer to the resume
    /// (empty on a first connection): a trades channel not recovered is refilled over REST
    /// before the next update.
    Connected {
        /// The server run.
        epoch: u64,
        /// Per resumed channel, whether the server replayed what was missed.
        recovered: BTreeMap<Channel, bool>,
    },
    /// The open orders (of the `orders` channel): sent on subscribing to it, and fetched again
    /// after a resume the server could not replay. Replace what you hold with it, then apply the
    /// order events that follow it (they come in `seq` order; one may already be in it).
    OpenOrders {
        /// The channel's `seq` it includes; `None` when fetched over REST after a resume.
        seq: Option<u64>,
        /// The open orders, oldest first.
        orders: Vec<Order>,
    },
    /// The connection was lost; the client reconnects by itself.
    Disconnected {
        /// What happened.
        reason: String,
    },
    /// The client stopped for good on an error reconnecting cannot fix (a refused token).
    Stopped(ClientError),
}

/// The receiving side of a client's updates.
#[derive(Debug)]
pub struct Updates {
    rx: mpsc::Receiver<Update>,
}

impl Updates {
    /// The next update; `None` once the client stopped.
    pub async fn recv(&mut self) -> Option<Update> {
        self.rx.recv().await
    }

    /// The next event, skipping connection notices and open-orders snapshots; `None` once the client stopped.
    pub async fn next_event(&mut self) -> Option<Received> {
        loop {
            match self.rx.recv().await? {
                Update::Event(received) => return Some(received),
                Update::Stopped(_) => return None,
                Update::Connected { .. }
                | Update::Disconnected { .. }
                | Update::OpenOrders { .. } => {}
            }
        }
    }
}

/// A `manual_trade` command. Each one gets a fresh `client_order_id` when it is built, so
/// retrying the same value (after [`ClientError::Timeout`] or `unavailable`) never trades twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRequest {
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// A base quantity or a quote amount (fees included).
    pub size: OrderSize,
    /// The idempotency key.
    pub client_order_id: ClientOrderId,
}

impl TradeRequest {
    /// An order with a generated `client_order_id`.
    #[must_use]
    pub fn new(symbol: Symbol, side: Side, size: OrderSize) -> Self {
        Self {
            symbol,
            side,
            size,
            client_order_id: generate_client_order_id(),
        }
    }

    /// Buys for `amount` of the quote asset, fee included.
    #[must_use]
    pub fn buy_amount(symbol: Symbol, amount: rust_decimal::Decimal) -> Self {
        Self::new(symbol, Side::Buy, OrderSize::Amount(amount))
    }

    /// Sells `quantity` of the base asset.
    #[must_use]
    pub fn sell_quantity(symbol: Symbol, quantity: rust_decimal::Decimal) -> Self {
        Self::new(symbol, Side::Sell, OrderSize::Quantity(quantity))
    }

    /// Uses the caller's own idempotency key instead of the generated one.
    #[must_use]
    pub fn with_client_order_id(mut self, id: ClientOrderId) -> Self {
        self.client_order_id = id;
        self
    }

    fn payload(&self) -> Value {
        let mut payload = json!({
            "symbol": self.symbol.as_str(),
            "side": self.side.as_str(),
            "client_order_id": self.client_order_id.as_str(),
        });
        match self.size {
            OrderSize::Quantity(quantity) => payload["quantity"] = quantity.to_string().into(),
            OrderSize::Amount(amount) => payload["amount"] = amount.to_string().into(),
        }
        payload
    }
}

/// `cb-<time><random>`: unique per process and across processes, in the allowed alphabet.
fn generate_client_order_id() -> ClientOrderId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros());
    // expect: "cb-", hex digits and a dash are in [A-Za-z0-9_.:-] and 36 characters at most.
    ClientOrderId::parse(&format!("cb-{micros:x}-{:016x}", hasher.finish()))
        .expect("a generated key is valid")
}

/// The answer to a `manual_trade`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeExecution {
    /// The trade, as committed.
    pub trade: Trade,
    /// True when the `client_order_id` had already executed: this is the first trade again.
    pub replayed: bool,
}

/// The answer to a `force_exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionExit {
    /// The sell of the whole position (origin `force_exit`).
    pub trade: Trade,
    /// The resting sell orders of the symbol that were canceled first (empty on a replay).
    pub canceled_orders: Vec<Order>,
    /// True when the `client_order_id` had already exited: this is the first exit's trade.
    pub replayed: bool,
}

/// A connected client; cheap to clone, every clone drives the same connection. The connection
/// stops once [`Client::close`] is called or the [`Updates`] are dropped.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<worker::Command>,
    request_timeout: Duration,
}

impl Client {
    /// Connects, subscribes to the configured channels and returns the client and its updates.
    /// Later losses are repaired in the background; this first attempt is not retried, so a
    /// wrong URL or token is reported here.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`], a refused upgrade ([`ClientError::Server`] with the HTTP
    /// status and the body's code), or [`ClientError::Connection`] / [`ClientError::Timeout`].
    pub async fn connect(config: ClientConfig) -> Result<(Self, Updates), ClientError> {
        let target = worker::Target::parse(&config.url)?;
        let (commands, command_rx) = mpsc::channel(64);
        let (update_tx, rx) = mpsc::channel(config.update_buffer);
        let (first_tx, first_rx) = oneshot::channel();
        let request_timeout = config.request_timeout;
        let worker = worker::Worker::new(config, target, command_rx, update_tx);
        tokio::spawn(worker.run(first_tx));
        first_rx.await.map_err(|_| ClientError::Closed)??;
        Ok((
            Self {
                commands,
                request_timeout,
            },
            Updates { rx },
        ))
    }

    /// Adds channels; returns the connection's whole active set.
    ///
    /// # Errors
    /// `unknown_channel`, `unknown_symbol`, `too_many_subscriptions` (nothing changes), or the
    /// connection errors of [`Client::manual_trade`].
    pub async fn subscribe(
        &self,
        channels: impl IntoIterator<Item = Channel>,
    ) -> Result<Vec<Channel>, ClientError> {
        let channels: Vec<Channel> = channels.into_iter().collect();
        let payload = json!({"channels": channels});
        let ack = self
            .request(
                "subscribe",
                Some(payload),
                Some(worker::Change::Add(channels)),
            )
            .await?;
        Ok(wire::channels(&ack))
    }

    /// Removes channels; returns the connection's whole active set.
    ///
    /// # Errors
    /// As [`Client::subscribe`].
    pub async fn unsubscribe(
        &self,
        channels: impl IntoIterator<Item = Channel>,
    ) -> Result<Vec<Channel>, ClientError> {
        let channels: Vec<Channel> = channels.into_iter().collect();
        let payload = json!({"channels": channels});
        let ack = self
            .request(
                "unsubscribe",
                Some(payload),
                Some(worker::Change::Remove(channels)),
            )
            .await?;
        Ok(wire::channels(&ack))
    }

    /// Executes a trade. A command whose connection drops before the reply is sent again on the
    /// next connection with the same `client_order_id`, so it executes once.
    ///
    /// # Errors
    /// The server's refusal ([`ClientError::Server`] with e.g. [`ErrorCode::InsufficientFunds`]),
    /// [`ClientError::Timeout`] (retry the same [`TradeRequest`]), or [`ClientError::Closed`].
    pub async fn manual_trade(&self, order: &TradeRequest) -> Result<TradeExecution, ClientError> {
        let reply = self
            .request("manual_trade", Some(order.payload()), None)
            .await?;
        let payload = reply.get("payload").cloned().unwrap_or(Value::Null);
        let trade = serde_json::from_value(payload.get("trade").cloned().unwrap_or(Value::Null))
            .map_err(|err| ClientError::Protocol(format!("trade_executed: {err}")))?;
        let replayed = payload
            .get("replayed")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(TradeExecution { trade, replayed })
    }

    /// Sets or clears the stop-loss and take-profit of a held position.
    ///
    /// # Errors
    /// `no_position`, `invalid_levels`, `forbidden`, ... as [`Client::manual_trade`].
    pub async fn update_position(
        &self,
        symbol: &Symbol,
        stop_loss: LevelChange,
        take_profit: LevelChange,
    ) -> Result<Position, ClientError> {
        let mut payload = json!({"symbol": symbol.as_str()});
        for (field, change) in [("stop_loss", stop_loss), ("take_profit", take_profit)] {
            match change {
                LevelChange::Keep => {}
                LevelChange::Clear => payload[field] = Value::Null,
                LevelChange::Set(level) => payload[field] = level.to_string().into(),
            }
        }
        let reply = self.request("update_position", Some(payload), None).await?;
        serde_json::from_value(reply.get("payload").cloned().unwrap_or(Value::Null))
            .map_err(|err| ClientError::Protocol(format!("position_updated: {err}")))
    }

    /// Places an order (build it with [`NewOrder`], which sets its `client_order_id`; one without
    /// a key gets one for this call). Committed before the reply; a repeat of the same key
    /// returns the order as it is now with `replayed: true`.
    ///
    /// # Errors
    /// [`ClientError::Server`] with e.g. [`ErrorCode::InvalidOrder`],
    /// [`ErrorCode::PostOnlyWouldCross`], [`ErrorCode::TooManyOrders`],
    /// [`ErrorCode::InsufficientFunds`] or [`ErrorCode::DuplicateClientOrderId`], or the
    /// connection errors of [`Client::manual_trade`].
    pub async fn place_order(&self, order: &OrderRequest) -> Result<OrderPlacement, ClientError> {
        let payload = orders::place_payload(order);
        let reply = self.request("place_order", Some(payload), None).await?;
        let read = |err| orders::unexpected("order_placed", &err);
        Ok(OrderPlacement {
            order: serde_json::from_value(orders::reply_field(&reply, Some("order")))
                .map_err(read)?,
            replayed: serde_json::from_value(orders::reply_field(&reply, Some("replayed")))
                .map_err(read)?,
        })
    }

    /// Cancels one open order, by id or by `client_order_id`; returns it, canceled.
    ///
    /// # Errors
    /// [`ErrorCode::UnknownOrder`], [`ErrorCode::OrderNotOpen`] (also when a cancel sent again
    /// after a lost connection had already canceled it), `forbidden`, or the connection errors of
    /// [`Client::manual_trade`].
    pub async fn cancel_order(&self, order: &OrderRef) -> Result<Order, ClientError> {
        let payload = orders::cancel_payload(order);
        let reply = self.request("cancel_order", Some(payload), None).await?;
        serde_json::from_value(orders::reply_field(&reply, None))
            .map_err(|err| orders::unexpected("order_canceled", &err))
    }

    /// Cancels every open order, or those of `symbol`; returns the canceled ones (empty when
    /// none was open).
    ///
    /// # Errors
    /// `invalid_symbol`, `unknown_symbol`, `forbidden`, or the connection errors of
    /// [`Client::manual_trade`].
    pub async fn cancel_all_orders(
        &self,
        symbol: Option<&Symbol>,
    ) -> Result<Vec<Order>, ClientError> {
        let payload = symbol.map(|symbol| json!({"symbol": symbol.as_str()}));
        let reply = self.request("cancel_all_orders", payload, None).await?;
        serde_json::from_value(orders::reply_field(&reply, Some("orders")))
            .map_err(|err| orders::unexpected("orders_canceled", &err))
    }

    /// One page of orders: newest first, oldest first with `after_id`; `more` says whether
    /// another page follows (continue from the last order's id).
    ///
    /// # Errors
    /// [`ErrorCode::InvalidLimit`], or the connection errors of [`Client::manual_trade`].
    pub async fn list_orders(&self, query: &OrderQuery) -> Result<OrderPage, ClientError> {
        let payload = orders::list_payload(query);
        let reply = self.request("list_orders", Some(payload), None).await?;
        serde_json::from_value(orders::reply_field(&reply, None))
            .map_err(|err| orders::unexpected("orders", &err))
    }

    /// Pauses the bot's own trading (its auto-trader follows no signal; stop-loss, take-profit,
    /// resting orders and commands keep working); returns the state after it. Pausing a paused
    /// bot changes nothing.
    ///
    /// # Errors
    /// [`ErrorCode::Forbidden`] without the `trade` scope, `storage_error`, or the connection
    /// errors of [`Client::manual_trade`].
    pub async fn pause_trading(&self) -> Result<BotState, ClientError> {
        self.set_trading("pause_trading").await
    }

    /// Resumes the bot's own trading; returns the state after it.
    ///
    /// # Errors
    /// As [`Client::pause_trading`].
    pub async fn resume_trading(&self) -> Result<BotState, ClientError> {
        self.set_trading("resume_trading").await
    }

    async fn set_trading(&self, kind: &'static str) -> Result<BotState, ClientError> {
        let reply = self.request(kind, None, None).await?;
        serde_json::from_value(orders::reply_field(&reply, None))
            .map_err(|err| orders::unexpected("bot_state", &err))
    }

    /// Sells the whole position of `symbol` at market, as one trade, after canceling its resting
    /// sell orders. Without a `client_order_id` one is made for this call, so a command sent again
    /// after a lost connection sells once.
    ///
    /// # Errors
    /// [`ErrorCode::NoPosition`] when nothing is held, [`ErrorCode::UnknownSymbol`],
    /// [`ErrorCode::OrderTooSmall`], [`ErrorCode::DuplicateClientOrderId`] (the key was used for
    /// another command), `forbidden`, or the connection errors of [`Client::manual_trade`].
    pub async fn force_exit(
        &self,
        symbol: &Symbol,
        client_order_id: Option<ClientOrderId>,
    ) -> Result<PositionExit, ClientError> {
        let key = client_order_id.unwrap_or_else(generate_client_order_id);
        let payload = json!({"symbol": symbol.as_str(), "client_order_id": key.as_str()});
        let reply = self.request("force_exit", Some(payload), None).await?;
        let read = |err| orders::unexpected("position_exited", &err);
        Ok(PositionExit {
            trade: serde_json::from_value(orders::reply_field(&reply, Some("trade")))
                .map_err(read)?,
            canceled_orders: serde_json::from_value(orders::reply_field(
                &reply,
                Some("canceled_orders"),
            ))
            .map_err(read)?,
            replayed: serde_json::from_value(orders::reply_field(&reply, Some("replayed")))
                .map_err(read)?,
        })
    }

    /// Closes the connection (a normal close) and stops reconnecting; waits until it is done.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self
            .commands
            .send(worker::Command::Close { done })
            .await
            .is_ok()
        {
            let _ = finished.await;
        }
    }

    async fn request(
        &self,
        kind: &'static str,
        payload: Option<Value>,
        change: Option<worker::Change>,
    ) -> Result<Value, ClientError> {
        let (reply, answer) = oneshot::channel();
        let command = worker::Command::Request {
            kind,
            payload,
            change,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed)?;
        tokio::time::timeout(self.request_timeout, answer)
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))?
            .map_err(|_| ClientError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_carry_fresh_valid_keys_and_the_documented_payload() {
        let symbol = Symbol::parse("BTCUSDT").unwrap();
        let a = TradeRequest::buy_amount(symbol.clone(), "100".parse().unwrap());
        let b = TradeRequest::buy_amount(symbol.clone(), "100".parse().unwrap());
        assert_ne!(a.client_order_id, b.client_order_id);
        assert_eq!(
            a.payload(),
            json!({"symbol":"BTCUSDT","side":"buy","amount":"100","client_order_id":a.client_order_id.as_str()})
        );
        let sell = TradeRequest::sell_quantity(symbol, "0.010".parse().unwrap());
        assert_eq!(sell.payload()["quantity"], "0.010");
        assert_eq!(sell.payload()["side"], "sell");
    }

    #[test]
    fn the_readme_example_is_the_compiled_one() {
        // examples/readme.rs compiles with every `cargo test`; README.md shows the same lines.
        let example = include_str!("../examples/readme.rs");
        let body = example
            .split("// README begin\n")
            .nth(1)
            .and_then(|rest| rest.split("    // README end").next())
            .expect("markers in examples/readme.rs");
        let body: Vec<&str> = body
            .lines()
            .map(|line| line.strip_prefix("    ").unwrap_or(line))
            .collect();
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("## From another Rust bot")
            .nth(1)
            .and_then(|rest| rest.split("```rust\n").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("the README's client example");
        let imports: Vec<&str> = example
            .lines()
            .filter(|line| line.starts_with("use "))
            .collect();
        let shown: Vec<&str> = block.lines().collect();
        assert_eq!(shown, [imports, vec![""], body].concat());
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_before_any_connection() {
        for url in [
            "http://127.0.0.1:1/api/v1/ws",
            "wss://example.com/ws",
            "ws://",
        ] {
            let err = Client::connect(ClientConfig::new(url)).await.unwrap_err();
            assert!(matches!(err, ClientError::InvalidUrl(_)), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn a_first_connection_that_fails_is_reported() {
        // A port nothing listens on (bound then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = ClientConfig::new(format!("ws://127.0.0.1:{port}/api/v1/ws"));
        let err = Client::connect(config).await.unwrap_err();
        assert!(matches!(err, ClientError::Connection(_)), "{err}");
    }
}
