//! What one client request does: subscription bookkeeping and service calls, with no socket.
//!
//! The connection actor turns the returned `Action`s into frames and watch subscriptions, so the
//! whole request/reply logic is unit-tested here with mocked services.

use std::collections::BTreeSet;
use std::sync::Arc;

use cryptobot_domain::{Alert, AlertType, Channel, OrderRequest, Severity, Symbol, TradeRequest};
use cryptobot_services::{
    BrokerHealth, Clock, Envelope as BusEnvelope, EventBus, MarketService, PortfolioService,
    ServiceError, TradeService,
};
use serde_json::Value;

use crate::protocol::{
    ClientMessage, ClientRequest, ConnectionLimits, Envelope, EventMeta, OrderList, OrderPlaced,
    PositionExited, RequestError, ResumeRequest, ServerMessage, TradeExecuted, codes,
};
use cryptobot_access::Principal;

/// Message types that change the account and so need the `trade` scope.
const TRADE_SCOPED: [&str; 8] = [
    "manual_trade",
    "update_position",
    "place_order",
    "cancel_order",
    "cancel_all_orders",
    "pause_trading",
    "resume_trading",
    "force_exit",
];

/// Parses one text frame, checking the scope before the payload: the order of checks is the
/// REST API's (authentication at the upgrade, then the scope the message's `type` needs, then the
/// payload's shape, then its fields, then the services), so a read-only token gets `forbidden`
/// for any `manual_trade`, well-formed or not, as `POST /api/v1/trades` answers 403 before its
/// body is read.
///
/// # Errors
/// `forbidden` (with the id), or the errors of [`Envelope::parse`] and
/// [`Envelope::into_message`].
pub(crate) fn parse_request(
    text: &str,
    principal: &Principal,
) -> Result<ClientMessage, RequestError> {
    let envelope = Envelope::parse(text)?;
    if TRADE_SCOPED.contains(&envelope.kind.as_str()) && !principal.can_trade() {
        tracing::info!(principal = %principal.name, "command refused: no trade scope");
        return Err(RequestError {
            id: envelope.id,
            code: codes::FORBIDDEN,
            message: "this token lacks the trade scope".to_owned(),
            channel: None,
        });
    }
    let mut message = envelope.into_message()?;
    // The engine's trade log line (and the bot state's `changed_by`) names who asked.
    match &mut message.request {
        ClientRequest::ManualTrade(trade) => {
            *trade = trade.clone().requested_by_principal(&principal.name);
        }
        ClientRequest::SetTradingState { changed_by, .. } => {
            *changed_by = Some(principal.name.clone());
        }
        ClientRequest::ForceExit(request) => {
            request.requested_by = Some(principal.name.clone());
        }
        _ => {}
    }
    Ok(message)
}

/// What a resume replays of a channel whose history reaches back far enough: every missed event,
/// except for a ticker channel, which is conflated by contract: only its newest ticker (with its
/// `seq`), not the ~20 per second it missed.
pub(crate) fn resume_replay(
    channel: &Channel,
    mut missed: Vec<Arc<BusEnvelope>>,
) -> Vec<Arc<BusEnvelope>> {
    if matches!(channel, Channel::Ticker(_)) && missed.len() > 1 {
        missed.drain(..missed.len() - 1);
    }
    missed
}

/// Note attached to `trade_executed` when the command had no `client_order_id`.
pub const NOT_IDEMPOTENT_NOTE: &str =
    "no client_order_id was given: this command is not idempotent, a retry may trade again";

/// Channels a new connection receives without subscribing (as the seed).
pub const DEFAULT_CHANNELS: [Channel; 3] = [Channel::Trades, Channel::Portfolio, Channel::Alerts];

/// The channels one connection is subscribed to, bounded by `max_subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscriptions {
    channels: BTreeSet<Channel>,
    max: usize,
}

impl Subscriptions {
    /// The default set of a new connection.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            channels: DEFAULT_CHANNELS.into_iter().collect(),
            max,
        }
    }

    /// Adds channels, all or nothing; fails with the first channel (in request order) that
    /// does not fit when the set would exceed the maximum.
    fn add(&mut self, channels: &[Channel]) -> Result<(), Channel> {
        let mut new: Vec<&Channel> = Vec::new();
        for channel in channels {
            if !self.channels.contains(channel) && !new.contains(&channel) {
                new.push(channel);
            }
        }
        if let Some(&last) = new.last()
            && self.channels.len() + new.len() > self.max
        {
            let room = self.max.saturating_sub(self.channels.len());
            return Err(new.get(room).copied().unwrap_or(last).clone());
        }
        self.channels.extend(new.into_iter().cloned());
        Ok(())
    }

    /// Removes channels; returns the ticker symbols that were removed.
    fn remove(&mut self, channels: &[Channel]) -> Vec<Symbol> {
        channels
            .iter()
            .filter(|c| self.channels.remove(*c))
            .filter_map(|c| match c {
                Channel::Ticker(symbol) => Some(symbol.clone()),
                _ => None,
            })
            .collect()
    }

    /// The active set, sorted.
    pub(crate) fn list(&self) -> Vec<Channel> {
        self.channels.iter().cloned().collect()
    }
}

/// One effect of a request, in the order the actor must apply them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Send this frame.
    Send(ServerMessage),
    /// Start delivering the symbol's tickers (if not yet) and send its latest ticker as a snapshot.
    Watch(Symbol),
    /// Stop delivering the symbol's tickers.
    Unwatch(Symbol),
    /// The channels are subscribed: acknowledge, then replay what was missed (or send snapshots)
    /// and continue live.
    Resume {
        /// The request, validated.
        request: ResumeRequest,
        /// The active channel set after the change (for the ack).
        channels: Vec<Channel>,
        /// Echo of the request id.
        id: Option<Value>,
    },
}

/// The services a request may call.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    /// Symbols and tickers.
    pub(crate) market: Arc<dyn MarketService>,
    /// Manual trades.
    pub(crate) trade: Arc<dyn TradeService>,
    /// Position levels.
    pub(crate) portfolio: Arc<dyn PortfolioService>,
    /// Time of pongs and fetched snapshots.
    pub(crate) clock: Arc<dyn Clock>,
    /// The event bus: epoch, last `seq` and replay history of every channel.
    pub(crate) bus: Arc<dyn EventBus>,
    /// Announced in `welcome`, the subscribe acks and `subscriptions`.
    pub(crate) limits: ConnectionLimits,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Handles one parsed request.
    pub(crate) async fn handle(&self, msg: ClientMessage, subs: &mut Subscriptions) -> Vec<Action> {
        let id = msg.id;
        match msg.request {
            ClientRequest::SubscribeTicker(symbol) => {
                let channel = Channel::Ticker(symbol.clone());
                match self.add(subs, std::slice::from_ref(&channel), id.clone()) {
                    Err(error) => vec![Action::Send(*error)],
                    Ok(()) => vec![
                        Action::Send(ServerMessage::SubscriptionSuccess {
                            message: format!("Subscribed to {symbol}"),
                            channels: subs.list(),
                            epoch: Some(self.bus.epoch()),
                            limits: self.limits,
                            id,
                        }),
                        Action::Watch(symbol),
                    ],
                }
            }
            ClientRequest::UnsubscribeTicker(symbol) => {
                let removed = subs.remove(&[Channel::Ticker(symbol.clone())]);
                let mut actions = vec![Action::Send(ServerMessage::UnsubscriptionSuccess {
                    message: format!("Unsubscribed from {symbol}"),
                    channels: subs.list(),
                    id,
                })];
                actions.extend(removed.into_iter().map(Action::Unwatch));
                actions
            }
            ClientRequest::Subscribe(channels) => match self.add(subs, &channels, id.clone()) {
                Err(error) => vec![Action::Send(*error)],
                Ok(()) => {
                    let mut actions = vec![Action::Send(ServerMessage::Subscribed {
                        channels: subs.list(),
                        epoch: Some(self.bus.epoch()),
                        recovered: None,
                        limits: self.limits,
                        id,
                    })];
                    actions.extend(self.broker_state(&channels));
                    if channels.contains(&Channel::Orders) {
                        actions.extend(self.orders_snapshot().await.map(Action::Send));
                    }
                    if channels.contains(&Channel::Bot) {
                        actions.extend(self.bot_snapshot().await.map(Action::Send));
                    }
                    for channel in &channels {
                        if let Channel::Candles(symbol, interval) = channel {
                            let snapshot = self.candle_snapshot(symbol, *interval).await;
                            actions.extend(snapshot.map(Action::Send));
                        }
                    }
                    actions.extend(channels.into_iter().filter_map(|c| match c {
                        Channel::Ticker(symbol) => Some(Action::Watch(symbol)),
                        _ => None,
                    }));
                    dedup_watches(&mut actions);
                    actions
                }
            },
            ClientRequest::Resume(request) => match self.add(subs, &request.channels, id.clone()) {
                Err(error) => vec![Action::Send(*error)],
                Ok(()) => {
                    let stalled = self.broker_state(&request.channels);
                    let mut actions = vec![Action::Resume {
                        request,
                        channels: subs.list(),
                        id,
                    }];
                    actions.extend(stalled);
                    actions
                }
            },
            ClientRequest::Unsubscribe(channels) => {
                let removed = subs.remove(&channels);
                let mut actions = vec![Action::Send(ServerMessage::Unsubscribed {
                    channels: subs.list(),
                    id,
                })];
                actions.extend(removed.into_iter().map(Action::Unwatch));
                actions
            }
            ClientRequest::ListSubscriptions => vec![Action::Send(ServerMessage::Subscriptions {
                channels: subs.list(),
                epoch: self.bus.epoch(),
                limits: self.limits,
                id,
            })],
            ClientRequest::ManualTrade(trade) => vec![Action::Send(self.trade(trade, id).await)],
            ClientRequest::UpdatePosition { symbol, update } => {
                // A symbol the market does not trade is unknown, not merely not held (as REST).
                if !self.market.symbols().contains(&symbol) {
                    let err = ServiceError::UnknownSymbol(symbol);
                    return vec![Action::Send(service_error(id, &err))];
                }
                let reply = match self.portfolio.update_position(symbol, update).await {
                    Ok(position) => ServerMessage::PositionUpdated {
                        payload: position,
                        id,
                    },
                    Err(err) => service_error(id, &err),
                };
                vec![Action::Send(reply)]
            }
            ClientRequest::PlaceOrder(request) => {
                vec![Action::Send(self.place_order(*request, id).await)]
            }
            ClientRequest::CancelOrder(order) => {
                let reply = match self.trade.cancel_order(order).await {
                    Ok(order) => ServerMessage::OrderCanceled {
                        payload: Box::new(order),
                        id,
                    },
                    Err(err) => service_error(id, &err),
                };
                vec![Action::Send(reply)]
            }
            ClientRequest::CancelAllOrders(symbol) => {
                if let Some(symbol) = &symbol
                    && !self.market.symbols().contains(symbol)
                {
                    let err = ServiceError::UnknownSymbol(symbol.clone());
                    return vec![Action::Send(service_error(id, &err))];
                }
                let reply = match self.trade.cancel_all_orders(symbol).await {
                    Ok(orders) => ServerMessage::OrdersCanceled {
                        payload: OrderList { orders },
                        id,
                    },
                    Err(err) => service_error(id, &err),
                };
                vec![Action::Send(reply)]
            }
            ClientRequest::ListOrders(query) => {
                let reply = match self.trade.orders(query).await {
                    Ok(page) => ServerMessage::Orders { payload: page, id },
                    Err(err) => service_error(id, &err),
                };
                vec![Action::Send(reply)]
            }
            ClientRequest::SetTradingState { state, changed_by } => {
                let reply = match self.trade.set_trading_state(state, changed_by).await {
                    Ok(bot) => ServerMessage::BotState { payload: bot, id },
                    Err(err) => service_error(id, &err),
                };
                vec![Action::Send(reply)]
            }
            ClientRequest::ForceExit(request) => {
                vec![Action::Send(self.force_exit(request, id).await)]
            }
            ClientRequest::Ping => {
                let ts_us = self.clock.now_us();
                vec![Action::Send(ServerMessage::Pong {
                    timestamp: ts_us.div_euclid(1_000_000),
                    ts_us,
                    id,
                })]
            }
        }
    }

    /// A client subscribing to `alerts` while the broker is down gets the `feed_stalled` it
    /// would have received had it been connected when the broker went away (the hub announces
    /// changes only).
    fn broker_state(&self, channels: &[Channel]) -> Option<Action> {
        if !channels.contains(&Channel::Alerts) {
            return None;
        }
        let health = *self.bus.health()?.borrow();
        broker_alert(
            health,
            self.bus.last_seq(&Channel::Alerts),
            self.clock.now_us(),
        )
        .filter(|_| health == BrokerHealth::Down)
        .map(Action::Send)
    }

    /// Validates the symbols of ticker channels and adds the channels, all or nothing.
    fn add(
        &self,
        subs: &mut Subscriptions,
        channels: &[Channel],
        id: Option<Value>,
    ) -> Result<(), Box<ServerMessage>> {
        let known = self.market.symbols();
        let refused = |id, code: &str, message: String, channel: &Channel| {
            Box::new(ServerMessage::Error {
                error: message,
                code: code.to_owned(),
                channel: Some(channel.to_string()),
                id,
            })
        };
        for channel in channels {
            if let Channel::Ticker(symbol) | Channel::Candles(symbol, _) = channel
                && !known.contains(symbol)
            {
                let message = format!("unknown symbol {symbol}");
                return Err(refused(id, codes::UNKNOWN_SYMBOL, message, channel));
            }
        }
        let max = subs.max;
        subs.add(channels).map_err(|channel| {
            let message = format!("at most {max} channels per connection");
            refused(id, codes::TOO_MANY_SUBSCRIPTIONS, message, &channel)
        })
    }

    async fn trade(&self, request: TradeRequest, id: Option<Value>) -> ServerMessage {
        let note = request
            .client_order_id()
            .is_none()
            .then(|| NOT_IDEMPOTENT_NOTE.to_owned());
        match self.trade.execute(request).await {
            Ok(execution) => ServerMessage::TradeExecuted {
                payload: Box::new(TradeExecuted {
                    trade: execution.trade,
                    replayed: execution.replayed,
                    note,
                }),
                id,
            },
            Err(err) => service_error(id, &err),
        }
    }

    async fn force_exit(
        &self,
        request: cryptobot_domain::ForceExitRequest,
        id: Option<Value>,
    ) -> ServerMessage {
        // A symbol the market does not trade is unknown, not merely not held (as REST).
        if !self.market.symbols().contains(&request.symbol) {
            let err = ServiceError::UnknownSymbol(request.symbol);
            return service_error(id, &err);
        }
        let note = request
            .client_order_id
            .is_none()
            .then(|| NOT_IDEMPOTENT_NOTE.to_owned());
        match self.trade.force_exit(request).await {
            Ok(exit) => ServerMessage::PositionExited {
                payload: Box::new(PositionExited {
                    trade: exit.trade,
                    canceled_orders: exit.canceled_orders,
                    replayed: exit.replayed,
                    note,
                }),
                id,
            },
            Err(err) => service_error(id, &err),
        }
    }

    async fn place_order(&self, request: OrderRequest, id: Option<Value>) -> ServerMessage {
        let note = request
            .client_order_id
            .is_none()
            .then(|| NOT_IDEMPOTENT_NOTE.to_owned());
        match self.trade.place_order(request).await {
            Ok(placement) => ServerMessage::OrderPlaced {
                payload: Box::new(OrderPlaced {
                    order: placement.order,
                    replayed: placement.replayed,
                    note,
                }),
                id,
            },
            Err(err) => service_error(id, &err),
        }
    }

    /// The open candle sent on subscribing to a candle channel (`snapshot: true`, the channel's
    /// last `seq`); `None` before the interval's first ticker or when the engine cannot answer.
    pub(crate) async fn candle_snapshot(
        &self,
        symbol: &Symbol,
        interval: cryptobot_domain::Interval,
    ) -> Option<ServerMessage> {
        let channel = Channel::Candles(symbol.clone(), interval);
        let seq = self.bus.last_seq(&channel);
        match self.trade.open_candle(symbol.clone(), interval).await {
            Ok(Some(candle)) => Some(ServerMessage::Candle {
                payload: candle,
                meta: EventMeta::new(channel, seq, self.clock.now_us(), true),
            }),
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(%err, "no candle snapshot");
                None
            }
        }
    }

    /// The `open_orders` snapshot sent on subscribing to `orders`; `None` (logged) when the
    /// engine cannot answer: the live updates still follow.
    pub(crate) async fn orders_snapshot(&self) -> Option<ServerMessage> {
        match self.trade.open_orders().await {
            Ok(open) => Some(ServerMessage::OpenOrders {
                payload: OrderList {
                    orders: open.orders,
                },
                meta: EventMeta::new(Channel::Orders, open.seq, self.clock.now_us(), true),
            }),
            Err(err) => {
                tracing::warn!(%err, "no open-orders snapshot");
                None
            }
        }
    }

    /// The `bot_state_update` snapshot sent on subscribing to `bot` (and after a resume of it
    /// that cannot replay); `None` (logged) when the engine cannot answer.
    pub(crate) async fn bot_snapshot(&self) -> Option<ServerMessage> {
        // The seq before the state, so the snapshot reflects at least that seq.
        let seq = self.bus.last_seq(&Channel::Bot);
        match self.trade.bot_state().await {
            Ok(bot) => Some(ServerMessage::BotStateUpdate {
                payload: bot,
                meta: EventMeta::new(Channel::Bot, seq, self.clock.now_us(), true),
            }),
            Err(err) => {
                tracing::warn!(%err, "no bot state snapshot");
                None
            }
        }
    }

    /// Fetches the latest ticker for a snapshot when the hub has not seen one yet.
    pub(crate) async fn ticker_snapshot(&self, symbol: &Symbol) -> Option<ServerMessage> {
        match self.market.ticker(symbol).await {
            Ok(ticker) => Some(ServerMessage::TickerUpdate {
                payload: ticker,
                meta: EventMeta::new(
                    Channel::Ticker(symbol.clone()),
                    0,
                    self.clock.now_us(),
                    true,
                ),
            }),
            // No price yet: the first live update will follow; nothing else to tell.
            Err(err) => {
                tracing::debug!(%err, %symbol, "no ticker snapshot");
                None
            }
        }
    }
}

/// The `alert` telling clients that the event broker went away (`feed_stalled`) or came back
/// (`feed_resumed`): unsequenced (`meta.snapshot: true`, `seq` repeating the channel's last
/// `seq`), since it is this node's observation, not an event of the engine. `None` while
/// connecting.
pub(crate) fn broker_alert(health: BrokerHealth, seq: u64, now_us: i64) -> Option<ServerMessage> {
    let (alert_type, severity, message) = match health {
        BrokerHealth::Down => (
            AlertType::FeedStalled,
            Severity::Critical,
            "event broker unreachable: live events pause; resume after it is back to get what you missed",
        ),
        BrokerHealth::Up => (
            AlertType::FeedResumed,
            Severity::Info,
            "event broker connected: live events flow",
        ),
        BrokerHealth::Connecting => return None,
    };
    let alert = Alert {
        alert_type,
        severity,
        message: message.to_owned(),
        symbol: None,
        raised_at: chrono::DateTime::from_timestamp_micros(now_us).unwrap_or_default(),
    };
    Some(ServerMessage::Alert {
        payload: alert,
        meta: EventMeta::new(Channel::Alerts, seq, now_us, true),
    })
}

/// Keeps the first `Watch` of each symbol.
fn dedup_watches(actions: &mut Vec<Action>) {
    let mut seen = BTreeSet::new();
    actions.retain(|action| match action {
        Action::Watch(symbol) => seen.insert(symbol.clone()),
        _ => true,
    });
}

/// The `error` frame of a service error: its stable code and message.
fn service_error(id: Option<Value>, err: &ServiceError) -> ServerMessage {
    if !err.is_client_error() {
        tracing::warn!(%err, "service call failed");
    }
    ServerMessage::error(id, err.code(), err.to_string())
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::{LevelChange, OrderSize, PositionUpdate, Side, fixtures};
    use cryptobot_services::market::MockMarketService;
    use cryptobot_services::trading::{MockPortfolioService, MockTradeService};
    use cryptobot_services::{Execution, InMemoryBus, SystemClock};
    use serde_json::json;

    use cryptobot_domain::TradeOrigin;

    use super::*;

    #[test]
    fn a_manual_trade_carries_the_name_of_the_principal_that_sent_it() {
        let principal = Principal {
            name: "desk-bot".to_owned(),
            scopes: vec!["read".to_owned(), "trade".to_owned()],
            expires_at: None,
        };
        let text =
            r#"{"type":"manual_trade","payload":{"symbol":"BTCUSDT","side":"buy","amount":"10"}}"#;
        let message = parse_request(text, &principal).unwrap();
        let ClientRequest::ManualTrade(trade) = message.request else {
            panic!("not a manual trade: {message:?}");
        };
        assert_eq!(trade.requested_by(), Some("desk-bot"));
        // Other requests are not changed.
        let message = parse_request(r#"{"type":"ping","id":1}"#, &principal).unwrap();
        assert!(matches!(message.request, ClientRequest::Ping));
    }

    #[test]
    fn controls_carry_the_principal_and_need_the_trade_scope() {
        let trader = Principal {
            name: "ops".to_owned(),
            scopes: vec!["read".to_owned(), "trade".to_owned()],
            expires_at: None,
        };
        let message = parse_request(r#"{"type":"pause_trading","id":1}"#, &trader).unwrap();
        assert_eq!(
            message.request,
            ClientRequest::SetTradingState {
                state: cryptobot_domain::TradingState::Paused,
                changed_by: Some("ops".to_owned())
            }
        );
        let text = r#"{"type":"force_exit","payload":{"symbol":"BTCUSDT"}}"#;
        let ClientRequest::ForceExit(request) = parse_request(text, &trader).unwrap().request
        else {
            panic!("not a force exit");
        };
        assert_eq!(request.requested_by.as_deref(), Some("ops"));
        let reader = Principal {
            scopes: vec!["read".to_owned()],
            ..trader
        };
        for kind in ["pause_trading", "resume_trading", "force_exit"] {
            let text = format!(r#"{{"type":"{kind}","id":2,"payload":"garbage"}}"#);
            let refused = parse_request(&text, &reader).unwrap_err();
            assert_eq!(
                (refused.code, refused.id),
                (codes::FORBIDDEN, Some(json!(2)))
            );
        }
    }

    #[tokio::test]
    async fn subscribing_to_bot_sends_the_state_as_a_snapshot() {
        let mut trade = MockTradeService::new();
        trade.expect_bot_state().returning(|| {
            Ok(cryptobot_domain::BotState::initial(
                cryptobot_domain::TradingState::Running,
            ))
        });
        let dispatcher = dispatcher(trade, MockPortfolioService::new());
        let mut subs = Subscriptions::new(8);
        let message =
            ClientMessage::parse(r#"{"type":"subscribe","id":1,"payload":{"channels":["bot"]}}"#)
                .unwrap();
        let actions = dispatcher.handle(message, &mut subs).await;
        assert!(subs.list().contains(&Channel::Bot));
        let Some(Action::Send(ServerMessage::BotStateUpdate { payload, meta })) = actions.get(1)
        else {
            panic!("no snapshot after the ack: {actions:?}");
        };
        assert_eq!(payload.state, cryptobot_domain::TradingState::Running);
        assert_eq!(
            (meta.channel.clone(), meta.seq, meta.snapshot),
            (Channel::Bot, 0, true)
        );
    }

    fn dispatcher(trade: MockTradeService, portfolio: MockPortfolioService) -> Dispatcher {
        let mut market = MockMarketService::new();
        market
            .expect_symbols()
            .returning(|| vec![fixtures::symbol("BTCUSDT"), fixtures::symbol("ETHUSDT")]);
        Dispatcher {
            market: Arc::new(market),
            trade: Arc::new(trade),
            portfolio: Arc::new(portfolio),
            clock: Arc::new(SystemClock),
            bus: Arc::new(InMemoryBus::new(16, Arc::new(SystemClock)).with_epoch(7)),
            limits: ConnectionLimits::from_config(&crate::GatewayConfig::default()),
        }
    }

    fn plain() -> Dispatcher {
        dispatcher(MockTradeService::new(), MockPortfolioService::new())
    }

    fn msg(id: i64, request: ClientRequest) -> ClientMessage {
        ClientMessage {
            id: Some(json!(id)),
            request,
        }
    }

    fn error_code(actions: &[Action]) -> Option<String> {
        match actions {
            [Action::Send(ServerMessage::Error { code, id, .. })] => {
                assert!(id.is_some(), "errors echo the id");
                Some(code.clone())
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn subscribe_ticker_acks_then_watches() {
        let mut subs = Subscriptions::new(8);
        let btc = fixtures::symbol("BTCUSDT");
        let actions = plain()
            .handle(
                msg(1, ClientRequest::SubscribeTicker(btc.clone())),
                &mut subs,
            )
            .await;
        let [
            Action::Send(ServerMessage::SubscriptionSuccess {
                message,
                channels,
                epoch,
                id,
                ..
            }),
            Action::Watch(watched),
        ] = actions.as_slice()
        else {
            panic!("unexpected {actions:?}")
        };
        assert_eq!(message, "Subscribed to BTCUSDT");
        assert_eq!(epoch, &Some(7), "the ack announces the epoch");
        assert_eq!(id, &Some(json!(1)));
        assert_eq!(watched, &btc);
        assert!(channels.contains(&Channel::Ticker(btc)));
        assert!(channels.contains(&Channel::Trades), "defaults stay");
    }

    #[tokio::test]
    async fn subscribing_to_alerts_while_the_broker_is_down_says_so() {
        let (health, _) = tokio::sync::watch::channel(BrokerHealth::Down);
        let mut bus = cryptobot_services::bus::MockEventBus::new();
        bus.expect_epoch().return_const(7_u64);
        bus.expect_last_seq().return_const(4_u64);
        let watched = health.clone();
        bus.expect_health()
            .returning(move || Some(watched.subscribe()));
        let d = Dispatcher {
            bus: Arc::new(bus),
            ..plain()
        };
        let subscribe = |channels: Vec<Channel>| msg(1, ClientRequest::Subscribe(channels));
        // TC0: alerts: the ack, then the stalled feed as an unsequenced alert
        let actions = d
            .handle(subscribe(vec![Channel::Alerts]), &mut Subscriptions::new(8))
            .await;
        let [
            Action::Send(ServerMessage::Subscribed { .. }),
            Action::Send(alert),
        ] = actions.as_slice()
        else {
            panic!("unexpected {actions:?}")
        };
        let alert: serde_json::Value = serde_json::from_str(&alert.to_json()).unwrap();
        assert_eq!(alert["payload"]["alert_type"], "feed_stalled", "{alert}");
        assert_eq!(alert["payload"]["severity"], "critical", "{alert}");
        assert_eq!(alert["snapshot"], true, "{alert}");
        assert_eq!(alert["seq"], 4, "{alert}");
        // TC1: other channels: no alert
        let actions = d
            .handle(
                subscribe(vec![Channel::Signals]),
                &mut Subscriptions::new(8),
            )
            .await;
        assert_eq!(actions.len(), 1, "{actions:?}");
        // TC2: the broker is up: nothing to say (the hub announced it when it happened)
        health.send_replace(BrokerHealth::Up);
        let actions = d
            .handle(subscribe(vec![Channel::Alerts]), &mut Subscriptions::new(8))
            .await;
        assert_eq!(actions.len(), 1, "{actions:?}");
    }

    #[tokio::test]
    async fn subscription_errors() {
        let d = plain();
        // TC0: unknown symbol
        let mut subs = Subscriptions::new(8);
        let actions = d
            .handle(
                msg(
                    1,
                    ClientRequest::SubscribeTicker(fixtures::symbol("DOGEUSDT")),
                ),
                &mut subs,
            )
            .await;
        assert_eq!(error_code(&actions).as_deref(), Some("unknown_symbol"));
        assert_eq!(subs, Subscriptions::new(8), "nothing changed");
        // TC1: over the limit (3 defaults + 1 allowed)
        let mut subs = Subscriptions::new(4);
        let request = ClientRequest::Subscribe(vec![
            Channel::Ticker(fixtures::symbol("BTCUSDT")),
            Channel::Signals,
        ]);
        let actions = d.handle(msg(2, request), &mut subs).await;
        assert_eq!(
            error_code(&actions).as_deref(),
            Some("too_many_subscriptions")
        );
        assert_eq!(subs, Subscriptions::new(4), "all or nothing");
    }

    #[tokio::test]
    async fn unsubscribe_reports_the_remaining_set_and_unwatches() {
        let d = plain();
        let mut subs = Subscriptions::new(8);
        let btc = Channel::Ticker(fixtures::symbol("BTCUSDT"));
        d.handle(
            msg(
                1,
                ClientRequest::Subscribe(vec![btc.clone(), Channel::Signals]),
            ),
            &mut subs,
        )
        .await;
        let actions = d
            .handle(
                msg(2, ClientRequest::Unsubscribe(vec![btc, Channel::Trades])),
                &mut subs,
            )
            .await;
        assert_eq!(
            actions,
            vec![
                Action::Send(ServerMessage::Unsubscribed {
                    channels: vec![Channel::Portfolio, Channel::Signals, Channel::Alerts],
                    id: Some(json!(2)),
                }),
                Action::Unwatch(fixtures::symbol("BTCUSDT")),
            ]
        );
    }

    #[tokio::test]
    async fn manual_trade_success_replay_and_error_codes() {
        let mut trade = MockTradeService::new();
        trade
            .expect_execute()
            .withf(|r| r.origin() == TradeOrigin::Manual && r.symbol().as_str() == "BTCUSDT")
            .times(1)
            .returning(|_| {
                Ok(Execution {
                    trade: fixtures::trade(5, "BTCUSDT", "100", "1"),
                    replayed: false,
                })
            });
        trade
            .expect_execute()
            .withf(|r| r.symbol().as_str() == "ETHUSDT")
            .returning(|_| {
                Err(ServiceError::InsufficientFunds {
                    needed: fixtures::dec("10"),
                    available: fixtures::dec("1"),
                })
            });
        let d = dispatcher(trade, MockPortfolioService::new());
        let mut subs = Subscriptions::new(8);
        let order = |symbol: &str, size: &str| {
            ClientRequest::ManualTrade(
                TradeRequest::new(
                    fixtures::symbol(symbol),
                    Side::Buy,
                    OrderSize::Quantity(fixtures::dec(size)),
                    None,
                    TradeOrigin::Manual,
                )
                .unwrap(),
            )
        };
        // TC0: executed, with the not-idempotent note
        let actions = d.handle(msg(1, order("BTCUSDT", "1")), &mut subs).await;
        let [Action::Send(ServerMessage::TradeExecuted { payload, id })] = actions.as_slice()
        else {
            panic!("unexpected {actions:?}")
        };
        assert_eq!((payload.trade.id, payload.replayed), (5, false));
        assert_eq!(payload.note.as_deref(), Some(NOT_IDEMPOTENT_NOTE));
        assert_eq!(id, &Some(json!(1)));
        // TC1: the service's code is forwarded
        let actions = d.handle(msg(2, order("ETHUSDT", "1")), &mut subs).await;
        assert_eq!(error_code(&actions).as_deref(), Some("insufficient_funds"));
    }

    #[tokio::test]
    async fn update_position_replies_with_the_position_or_the_code() {
        let mut portfolio = MockPortfolioService::new();
        portfolio
            .expect_update_position()
            .returning(|symbol, update| {
                if symbol.as_str() == "BTCUSDT" {
                    Ok(cryptobot_domain::Position {
                        symbol,
                        quantity: fixtures::dec("1"),
                        avg_entry_price: fixtures::dec("100"),
                        cost_basis: fixtures::dec("100"),
                        stop_loss: update.stop_loss.apply(None),
                        take_profit: None,
                    })
                } else {
                    Err(ServiceError::NoPosition(symbol))
                }
            });
        let d = dispatcher(MockTradeService::new(), portfolio);
        let mut subs = Subscriptions::new(8);
        let update = |symbol: &str| ClientRequest::UpdatePosition {
            symbol: fixtures::symbol(symbol),
            update: PositionUpdate {
                stop_loss: LevelChange::Set(fixtures::dec("90")),
                take_profit: LevelChange::Keep,
            },
        };
        let actions = d.handle(msg(1, update("BTCUSDT")), &mut subs).await;
        let [Action::Send(ServerMessage::PositionUpdated { payload, .. })] = actions.as_slice()
        else {
            panic!("unexpected {actions:?}")
        };
        assert_eq!(payload.stop_loss, Some(fixtures::dec("90")));
        let actions = d.handle(msg(2, update("ETHUSDT")), &mut subs).await;
        assert_eq!(error_code(&actions).as_deref(), Some("no_position"));
    }

    #[tokio::test]
    async fn ping_answers_pong_with_the_id_and_the_clock_time() {
        use chrono::TimeZone as _;
        // 2024-01-02T03:04:05.678901Z, so both the second and the microsecond are checked.
        let start = chrono::Utc
            .timestamp_micros(1_704_164_645_678_901)
            .single()
            .expect("a valid instant");
        let clock = Arc::new(cryptobot_services::ManualClock::new(start));
        let d = Dispatcher {
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            ..plain()
        };
        // (id, clock advance before the ping in ms, expected timestamp s, expected ts_us)
        let cases = [
            // TC0: the clock's time, in seconds and in microseconds, and the request's id
            (9, 0, 1_704_164_645, 1_704_164_645_678_901),
            // TC1: the answer follows the clock, not the wall time
            (10, 1_500, 1_704_164_647, 1_704_164_647_178_901),
        ];
        for (id, advance_ms, timestamp, ts_us) in cases {
            clock.advance(chrono::TimeDelta::milliseconds(advance_ms));
            let actions = d
                .handle(msg(id, ClientRequest::Ping), &mut Subscriptions::new(8))
                .await;
            assert_eq!(
                actions,
                [Action::Send(ServerMessage::Pong {
                    timestamp,
                    ts_us,
                    id: Some(json!(id)),
                })],
                "ping {id}"
            );
        }
    }
}
