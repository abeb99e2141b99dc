//! The per-connection actor: owns the subscriptions, the policies and the inbound side of one
//! client.
//!
//! One `select!` loop over the inbound frames, the outbound port, the heartbeat timer and the
//! shutdown token. Live events do not pass through this task: the worker's fan-out puts them into
//! the connection's outbox and the response body writes them (see `fanout.rs`, `wire.rs`); the
//! task is woken only when the socket stalls (then `send_timeout_ms` bounds how long it may take
//! nothing), closes or the FIFO overflows.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use actix_web::web::Bytes;
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason};
use cryptobot_domain::{Channel, Symbol};
use cryptobot_services::{Envelope, Replay};
use serde_json::Value;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::dispatch::{Action, Dispatcher, Subscriptions};
use crate::fanout::{Port, PortFailure, WorkerFanout};
use crate::guards::{ActiveGuard, IpSlot};
use crate::hub::{HubShared, frame_bytes};
use crate::inbound::InboundBudget;
use crate::metrics::GatewayMetrics;
use crate::outbox::Frame;
use crate::protocol::{EventMeta, ResumeRequest, ServerMessage, codes};

/// Longest wait for the portfolio summary sent as a snapshot after a failed resume.
const SNAPSHOT_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a connection ended; decides the close frame and the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client sent a close frame (echoed back with the same code).
    ClientClosed(Option<CloseReason>),
    /// The TCP connection went away without a close handshake.
    Gone,
    /// The server is shutting down (`close_code_shutdown`, default 1001).
    Shutdown,
    /// The client fell too far behind or blocked a send (`close_code_slow_consumer`, default 1008).
    SlowConsumer(&'static str),
    /// The client sent nothing for `client_timeout_secs` (`close_code_idle`, default 4000).
    Idle,
    /// An inbound message exceeded `max_message_bytes` (`close_code_too_big`, default 1009).
    TooBig,
    /// A binary frame (`close_code_binary`, default 1003).
    Binary,
    /// A WebSocket protocol violation (`close_code_protocol`, default 1002).
    Protocol(String),
    /// A text message that is not valid UTF-8 (1007, fixed by RFC 6455 §7.4.1).
    InvalidUtf8,
    /// Over `max_messages_per_sec` after every warning (`close_code_rate_limited`, default 1008).
    RateLimited,
    /// The connection's JWT expired (`close_code_token_expired`, default 4401).
    TokenExpired,
    /// The engine restarted: its `seq`s start over, so the client must resume in the new epoch
    /// (`close_code_new_epoch`, default 1012).
    NewEpoch,
}

/// For the log line: `client closed (1000 bye)`, `slow consumer: send timed out`, ...
impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientClosed(None) => f.write_str("client closed"),
            Self::ClientClosed(Some(reason)) => {
                let code = u16::from(reason.code);
                match reason.description.as_deref() {
                    Some(text) if !text.is_empty() => write!(f, "client closed ({code} {text})"),
                    _ => write!(f, "client closed ({code})"),
                }
            }
            Self::Gone => f.write_str("gone without a close"),
            Self::Shutdown => f.write_str("server shutting down"),
            Self::SlowConsumer(why) => write!(f, "slow consumer: {why}"),
            Self::Idle => f.write_str("heartbeat timeout"),
            Self::TooBig => f.write_str("message too big"),
            Self::Binary => f.write_str("binary frame"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::RateLimited => f.write_str("rate limited"),
            Self::TokenExpired => f.write_str("token expired"),
            Self::NewEpoch => f.write_str("new epoch"),
        }
    }
}

impl End {
    /// The close frame to send, if any.
    pub(crate) fn close_reason(&self, config: &GatewayConfig) -> Option<CloseReason> {
        let (code, text) = match self {
            Self::ClientClosed(reason) => return reason.clone(),
            Self::Gone => return None,
            Self::Shutdown => (config.close_code_shutdown, "server shutting down"),
            Self::SlowConsumer(_) => (config.close_code_slow_consumer, "slow consumer"),
            Self::Idle => (config.close_code_idle, "heartbeat timeout"),
            Self::TooBig => (config.close_code_too_big, "message too big"),
            Self::Binary => (config.close_code_binary, "binary frames are not supported"),
            Self::Protocol(_) => (config.close_code_protocol, "protocol error"),
            Self::InvalidUtf8 => (codes::CLOSE_INVALID_UTF8, "invalid UTF-8 in a text message"),
            Self::RateLimited => (config.close_code_rate_limited, "rate limit exceeded"),
            Self::TokenExpired => (config.close_code_token_expired, "token expired"),
            Self::NewEpoch => (config.close_code_new_epoch, "new epoch"),
        };
        Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(text.to_owned()),
        })
    }
}

/// What the connection does with requests.
#[derive(Debug, Clone)]
pub(crate) enum Behaviour {
    /// The product: services and the hub.
    Services {
        /// Request handling.
        dispatcher: Dispatcher,
        /// Event fan-out.
        hub: Arc<HubShared>,
    },
    /// Conformance testing: every text or binary message is echoed back unchanged.
    Echo,
}

/// What the rate limit says about one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: drop it and answer with a `rate_limited` error.
    Warn,
    /// Over the rate after every warning: close.
    Close,
}

/// A token bucket: `rate` messages per second with a burst of `rate`, plus the number of
/// `rate_limited` warnings a client gets before it is closed.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
    /// Messages dropped since the bucket was last full.
    strikes: u32,
    /// Warnings allowed before the close.
    warnings: u32,
}

impl RateLimit {
    fn new(per_sec: u32, warnings: u32) -> Option<Self> {
        (per_sec > 0).then(|| Self {
            rate: f64::from(per_sec),
            tokens: f64::from(per_sec),
            last: Instant::now(),
            strikes: 0,
            warnings,
        })
    }

    fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        // A client that slowed down long enough to refill the whole burst starts afresh.
        if self.tokens >= self.rate {
            self.strikes = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Verdict::Allow
        } else if self.strikes < self.warnings {
            self.strikes += 1;
            Verdict::Warn
        } else {
            Verdict::Close
        }
    }
}

/// What the outbound port tells the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbound {
    /// The socket took nothing since the writer was last woken: the send deadline starts.
    Stalled,
    /// The fan-out gave the connection up, or the socket is gone.
    Failed(PortFailure),
}

/// One client connection.
pub(crate) struct Connection {
    /// Process-unique id, in every log line of this connection.
    pub(crate) id: u64,
    /// Outbound half: the outbox and the writer's state, shared with the worker's fan-out and the
    /// response body.
    pub(crate) port: Rc<Port>,
    /// This worker's fan-out (`None` in echo mode).
    pub(crate) fanout: Option<Rc<WorkerFanout>>,
    /// Inbound half, with fragments reassembled (`max_message_bytes` per message).
    pub(crate) inbound: AggregatedMessageStream,
    /// Set by the inbound size guard when it cut the stream.
    pub(crate) budget: Rc<InboundBudget>,
    /// Policies.
    pub(crate) config: Arc<GatewayConfig>,
    /// Services or echo.
    pub(crate) behaviour: Behaviour,
    /// Channels this client receives (the outbox gets a copy of the never-dropped ones).
    pub(crate) subs: Subscriptions,
    /// Who opened the connection; its scopes gate `manual_trade` and `update_position`.
    pub(crate) principal: cryptobot_access::Principal,
    /// Counts this connection against its client IP until the actor ends.
    pub(crate) _ip_slot: Option<IpSlot>,
    /// When the client last sent anything.
    pub(crate) last_seen: Instant,
    /// Counters.
    pub(crate) metrics: Arc<GatewayMetrics>,
    /// Cancelled at server shutdown.
    pub(crate) shutdown: CancellationToken,
    /// Decrements the running-actor count when the actor ends.
    pub(crate) _active: ActiveGuard,
}

impl Connection {
    /// Runs the connection to its end, sends the close frame and returns why it ended.
    pub(crate) async fn run(mut self) -> End {
        let period = self.config.heartbeat_interval();
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut rate = RateLimit::new(
            self.config.max_messages_per_sec,
            self.config.rate_limit_warnings,
        );
        if self.port.outbox.borrow().is_held()
            && let Err(end) = self.welcome().await
        {
            return self.finish(end).await;
        }
        // A JWT's expiry ends the connection; other credentials do not expire.
        let expiry = self.principal.expires_at.map(|exp| {
            let now = chrono::Utc::now().timestamp();
            let left = u64::try_from(exp.saturating_sub(now)).unwrap_or(0);
            Instant::now() + std::time::Duration::from_secs(left)
        });
        let far = Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        let expired = tokio::time::sleep_until(expiry.unwrap_or(far));
        tokio::pin!(expired);
        // One registration for the whole life of the connection, not one per wake-up.
        let cancelled = self.shutdown.clone().cancelled_owned();
        tokio::pin!(cancelled);
        // Armed only while the socket stalls: one timer per stall, none per frame.
        let send_deadline = tokio::time::sleep_until(far);
        tokio::pin!(send_deadline);
        let mut blocked = false;
        let end = loop {
            let step = tokio::select! {
                biased;
                () = &mut cancelled => Err(End::Shutdown),
                () = &mut expired, if expiry.is_some() => Err(End::TokenExpired),
                outbound = outbound(&self.port, blocked) => match outbound {
                    Outbound::Stalled => {
                        blocked = true;
                        self.port.take_progress();
                        send_deadline.as_mut().reset(Instant::now() + self.config.send_timeout());
                        Ok(())
                    }
                    Outbound::Failed(PortFailure::Gone) => Err(End::Gone),
                    Outbound::Failed(PortFailure::Lagged) => Err(End::SlowConsumer("lagged")),
                    Outbound::Failed(PortFailure::NewEpoch) => Err(End::NewEpoch),
                },
                // A slow reader that still takes frames gets a new deadline; only a stuck one is
                // closed. An empty outbox ends the stall (a later one is seen afresh).
                () = &mut send_deadline, if blocked => {
                    let progress = self.port.take_progress();
                    if self.port.outbox.borrow().is_empty() {
                        blocked = false;
                        self.port.take_stall();
                        Ok(())
                    } else if progress {
                        send_deadline.as_mut().reset(Instant::now() + self.config.send_timeout());
                        Ok(())
                    } else {
                        Err(End::SlowConsumer("send timed out"))
                    }
                },
                inbound = self.inbound.recv() => self.on_inbound(inbound, rate.as_mut()).await,
                _ = heartbeat.tick() => self.on_heartbeat().await,
            };
            if let Err(end) = step {
                break end;
            }
        };
        self.finish(end).await
    }

    async fn on_inbound(
        &mut self,
        inbound: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>,
        rate: Option<&mut RateLimit>,
    ) -> Result<(), End> {
        let message = match inbound {
            None => return Err(End::Gone),
            Some(Err(err)) => return Err(self.classify(&err)),
            Some(Ok(message)) => message,
        };
        self.last_seen = Instant::now();
        GatewayMetrics::incr(&self.metrics.messages_received);
        match rate.map_or(Verdict::Allow, |rate| rate.check(self.last_seen)) {
            Verdict::Allow => {}
            Verdict::Warn => {
                // The message is dropped unread; the client learns why and may slow down.
                let warning = ServerMessage::error(
                    None,
                    codes::RATE_LIMITED,
                    format!(
                        "more than {} messages per second: message dropped",
                        self.config.max_messages_per_sec
                    ),
                );
                return self.send_message(&warning).await;
            }
            Verdict::Close => return Err(End::RateLimited),
        }
        match message {
            AggregatedMessage::Text(text) => match &self.behaviour {
                Behaviour::Echo => self.send(Frame::Text(text.into_bytes())).await,
                Behaviour::Services { .. } => self.on_text(&text).await,
            },
            AggregatedMessage::Binary(bytes) => match self.behaviour {
                Behaviour::Echo => self.send(Frame::Binary(bytes)).await,
                Behaviour::Services { .. } => Err(End::Binary),
            },
            AggregatedMessage::Ping(bytes) => self.send(Frame::Pong(bytes)).await,
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(reason) => Err(End::ClientClosed(reason)),
        }
    }

    /// Maps an inbound error to the end it causes; every error is fatal (see actix-ws notes).
    fn classify(&self, err: &actix_ws::ProtocolError) -> End {
        let text = err.to_string();
        if self.budget.overflowed()
            || matches!(err, actix_ws::ProtocolError::Overflow)
            || text.contains("continuation size")
        {
            End::TooBig
        } else if matches!(err, actix_ws::ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData)
        {
            // actix-ws reports a text frame (or reassembled message) that is not UTF-8 this way.
            End::InvalidUtf8
        } else {
            End::Protocol(text)
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let received = std::time::Instant::now();
        let Behaviour::Services { dispatcher, .. } = &self.behaviour else {
            return Ok(());
        };
        let (command, actions) = match crate::dispatch::parse_request(text, &self.principal) {
            Ok(message) => (
                message.request.name(),
                dispatcher.clone().handle(message, &mut self.subs).await,
            ),
            Err(err) => ("unknown", vec![Action::Send(err.into_message())]),
        };
        self.port
            .outbox
            .borrow_mut()
            .set_channels(&self.subs.list());
        for action in actions {
            match action {
                Action::Send(message) => self.send_message(&message).await?,
                Action::Watch(symbol) => self.watch(symbol).await?,
                Action::Unwatch(symbol) => self.unwatch(&symbol),
                Action::Resume {
                    request,
                    channels,
                    id,
                } => self.resume(request, channels, id).await?,
            }
        }
        // The first message ends the hold (`?welcome=1`): live events follow what it queued.
        let released = self.port.outbox.borrow_mut().release();
        if released.is_err() {
            return Err(End::SlowConsumer("lagged"));
        }
        // Every reply is queued: what the socket does next is the delivery's part.
        self.metrics.command(command, received.elapsed());
        self.flush()
    }

    /// Sends the `welcome` frame (epoch, version, channels).
    async fn welcome(&mut self) -> Result<(), End> {
        let Behaviour::Services { dispatcher, .. } = &self.behaviour else {
            return Ok(());
        };
        let message = ServerMessage::Welcome {
            epoch: dispatcher.bus.epoch(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            channels: self.subs.list(),
            scopes: self.principal.scopes.clone(),
            limits: dispatcher.limits,
        };
        self.send_message(&message).await
    }

    /// Acknowledges a resume, replays exactly the missed events of each resumed channel (or sends
    /// a snapshot when that is impossible), then lets live delivery continue without a gap or a
    /// repeat: live sources are watched before the history is read, and live events at or below
    /// what was replayed are dropped by the outbox.
    async fn resume(
        &mut self,
        request: ResumeRequest,
        channels: Vec<Channel>,
        id: Option<Value>,
    ) -> Result<(), End> {
        let Behaviour::Services { dispatcher, hub } = &self.behaviour else {
            return Ok(());
        };
        let (dispatcher, hub) = (dispatcher.clone(), Arc::clone(hub));
        let epoch = dispatcher.bus.epoch();
        // Live first: never-dropped channels flow since the connection opened; ticker slots start now,
        // before the history is read.
        let mut symbols = Vec::new();
        for channel in &request.channels {
            if let Channel::Ticker(symbol) = channel {
                self.start_watch(symbol);
                symbols.push(symbol.clone());
            }
        }
        let mut recovered = BTreeMap::new();
        let mut replays: Vec<(Channel, Option<Vec<Arc<Envelope>>>)> = Vec::new();
        for (channel, &last) in &request.last_seq {
            let delivered = self.port.outbox.borrow().delivered(channel);
            // Live events past the client's seq already went out on this connection: a replay now
            // would arrive out of order, so this channel is resynchronized instead.
            let replay = if request.epoch != epoch || delivered.is_some_and(|d| d > last) {
                None
            } else {
                match dispatcher.bus.replay(channel, last) {
                    Replay::Complete(envelopes) => {
                        Some(crate::dispatch::resume_replay(channel, envelopes))
                    }
                    Replay::Gap { .. } => None,
                }
            };
            recovered.insert(channel.to_string(), replay.is_some());
            replays.push((channel.clone(), replay));
        }
        let ack = if request.standalone {
            ServerMessage::Resumed {
                channels,
                epoch,
                recovered: recovered.clone(),
                limits: dispatcher.limits,
                id,
            }
        } else {
            ServerMessage::Subscribed {
                channels,
                epoch: Some(epoch),
                recovered: Some(recovered.clone()),
                limits: dispatcher.limits,
                id,
            }
        };
        self.send_message(&ack).await?;
        for (channel, replay) in replays {
            match (replay, &channel) {
                // Tickers are conflated by contract: the newest missed one is all a client needs.
                (Some(envelopes), Channel::Ticker(symbol)) => {
                    if let Some(envelope) = envelopes.last() {
                        self.port.outbox.borrow_mut().ticker(
                            symbol,
                            envelope.seq,
                            envelope.ts_us,
                            frame_bytes(envelope),
                        );
                    }
                }
                (Some(envelopes), _) => {
                    for envelope in envelopes {
                        self.make_room().await?;
                        let offered = self.port.outbox.borrow_mut().replayed(
                            &channel,
                            envelope.seq,
                            frame_bytes(&envelope),
                        );
                        if offered.is_err() {
                            return Err(End::SlowConsumer("lagged"));
                        }
                    }
                    let mut outbox = self.port.outbox.borrow_mut();
                    if outbox.delivered(&channel).is_none() {
                        outbox.set_delivered(&channel, request.last_seq[&channel]);
                    }
                }
                // Tickers get their snapshot below.
                (None, Channel::Ticker(_)) => {}
                (None, _) => self.resync(&channel, &dispatcher).await?,
            }
        }
        for symbol in symbols {
            let channel = Channel::Ticker(symbol.clone());
            if recovered.get(&channel.to_string()) == Some(&true) {
                continue;
            }
            // Not resumed (or not recoverable): the latest ticker, as a plain subscribe sends it;
            // the bus's own last envelope first, as the hub's copy may still trail it.
            let last = dispatcher.bus.last_seq(&channel);
            if let Replay::Complete(newest) =
                dispatcher.bus.replay(&channel, last.saturating_sub(1))
                && let Some(envelope) = newest.last()
            {
                self.port.outbox.borrow_mut().ticker(
                    &symbol,
                    envelope.seq,
                    envelope.ts_us,
                    frame_bytes(envelope),
                );
                continue;
            }
            self.ticker_snapshot(&symbol, &hub, &dispatcher).await;
        }
        self.flush()
    }

    /// After an unrecoverable resume of a never-dropped channel: the portfolio and the bot state
    /// get a fresh snapshot; trades, signals and alerts continue live after the channel's current `seq`
    /// (the client refills trades over REST, see docs/protocol.md).
    async fn resync(
        &mut self,
        channel: &Channel,
        dispatcher: &crate::dispatch::Dispatcher,
    ) -> Result<(), End> {
        // Read the seq before the state, so the snapshot reflects at least that seq.
        let seq = dispatcher.bus.last_seq(channel);
        self.port.outbox.borrow_mut().set_delivered(channel, seq);
        if *channel == Channel::Bot {
            return match dispatcher.bot_snapshot().await {
                Some(message) => self.send_message(&message).await,
                None => Ok(()),
            };
        }
        if *channel != Channel::Portfolio {
            return Ok(());
        }
        match tokio::time::timeout(SNAPSHOT_FETCH_TIMEOUT, dispatcher.portfolio.summary()).await {
            Ok(Ok(summary)) => {
                let message = ServerMessage::PortfolioUpdate {
                    payload: Box::new(summary),
                    meta: EventMeta::new(Channel::Portfolio, seq, dispatcher.clock.now_us(), true),
                };
                self.send_message(&message).await
            }
            Ok(Err(err)) => {
                tracing::warn!(conn = self.id, %err, "portfolio snapshot failed");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(conn = self.id, "portfolio snapshot timed out");
                Ok(())
            }
        }
    }

    /// Starts the symbol's ticker slot and registers it with the worker's fan-out.
    fn start_watch(&self, symbol: &Symbol) {
        self.port.outbox.borrow_mut().watch(symbol);
        if let Some(fanout) = &self.fanout {
            fanout.watch(symbol, &self.port);
        }
    }

    fn unwatch(&self, symbol: &Symbol) {
        self.port.outbox.borrow_mut().unwatch(symbol);
        if let Some(fanout) = &self.fanout {
            fanout.unwatch(symbol, self.id);
        }
    }

    /// Starts delivering a symbol's tickers and sends the latest one at once.
    async fn watch(&mut self, symbol: Symbol) -> Result<(), End> {
        let Behaviour::Services { dispatcher, hub } = &self.behaviour else {
            return Ok(());
        };
        let (dispatcher, hub) = (dispatcher.clone(), Arc::clone(hub));
        self.start_watch(&symbol);
        self.ticker_snapshot(&symbol, &hub, &dispatcher).await;
        self.flush()
    }

    /// Puts the newest known ticker of the symbol into its slot: the hub's copy, or the market's
    /// price when the hub has seen none yet (`seq` 0: any live update replaces it).
    async fn ticker_snapshot(&self, symbol: &Symbol, hub: &HubShared, dispatcher: &Dispatcher) {
        if let Some(frame) = hub.latest_ticker(symbol) {
            self.port.outbox.borrow_mut().ticker(
                symbol,
                frame.seq,
                frame.ts_us,
                frame.bytes.clone(),
            );
            return;
        }
        if let Some(message) = dispatcher.ticker_snapshot(symbol).await {
            self.port
                .outbox
                .borrow_mut()
                .ticker(symbol, 0, 0, Bytes::from(message.to_json()));
        }
    }

    async fn on_heartbeat(&mut self) -> Result<(), End> {
        if self.last_seen.elapsed() >= self.config.client_timeout() {
            return Err(End::Idle);
        }
        // Woken before this tick and not polled since: a socket that takes nothing is found even
        // when no event arrives.
        self.port.check_stall();
        self.queue(Frame::Ping(Bytes::from_static(b"hb")))?;
        self.flush()
    }

    async fn send_message(&mut self, message: &ServerMessage) -> Result<(), End> {
        if let ServerMessage::Error { code, .. } = message {
            self.metrics.error_frames.with_label_values(&[code]).inc();
        }
        self.send(Frame::Text(Bytes::from(message.to_json()))).await
    }

    /// Queues one frame (waiting at most `send_timeout_ms` for room) and wakes the writer.
    async fn send(&mut self, frame: Frame) -> Result<(), End> {
        self.make_room().await?;
        self.queue(frame)?;
        self.flush()
    }

    fn queue(&self, frame: Frame) -> Result<(), End> {
        self.port
            .outbox
            .borrow_mut()
            .reply(frame)
            .map_err(|_| End::SlowConsumer("lagged"))
    }

    /// Wakes the writer for whatever waits (it writes when the socket takes more).
    fn flush(&self) -> Result<(), End> {
        if self.port.failure() == Some(PortFailure::Gone) {
            return Err(End::Gone);
        }
        self.port.kick();
        Ok(())
    }

    /// Waits (at most `send_timeout_ms`) until the FIFO has room for one more frame.
    async fn make_room(&self) -> Result<(), End> {
        if self.port.outbox.borrow().has_room() {
            return Ok(());
        }
        let drained = tokio::time::timeout(self.config.send_timeout(), self.drain())
            .await
            .map_err(|_| End::SlowConsumer("send timed out"))?;
        if !drained {
            return Err(End::Gone);
        }
        if self.port.outbox.borrow().has_room() {
            Ok(())
        } else {
            Err(End::SlowConsumer("lagged"))
        }
    }

    /// Waits until the writer took everything waiting (true) or the socket is gone (false),
    /// however long the socket takes nothing: callers bound it.
    async fn drain(&self) -> bool {
        poll_fn(|cx| {
            self.port.register(cx.waker());
            if self.port.failure() == Some(PortFailure::Gone) {
                return Poll::Ready(false);
            }
            if self.port.outbox.borrow().is_empty() {
                return Poll::Ready(true);
            }
            self.port.want_drain();
            Poll::Pending
        })
        .await
    }

    /// Waits until the close frame went out or the socket is gone.
    async fn closed(&self) {
        poll_fn(|cx| {
            self.port.register(cx.waker());
            if self.port.closed() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Sends the close frame (bounded by `close_timeout_ms`), logs and counts the end.
    async fn finish(self, end: End) -> End {
        if let Some(fanout) = &self.fanout {
            fanout.remove(&self.port);
        }
        let counter = match &end {
            End::SlowConsumer(_) => Some(&self.metrics.slow_consumer_closes),
            End::Idle => Some(&self.metrics.idle_closes),
            End::TooBig => Some(&self.metrics.oversized_closes),
            End::Binary | End::Protocol(_) | End::InvalidUtf8 | End::RateLimited => {
                Some(&self.metrics.protocol_closes)
            }
            End::ClientClosed(_)
            | End::Gone
            | End::Shutdown
            | End::TokenExpired
            | End::NewEpoch => None,
        };
        if let Some(counter) = counter {
            GatewayMetrics::incr(counter);
        }
        if end != End::Gone {
            // Both waits share one deadline (close_timeout_ms <= 1 s), so a stuck client cannot
            // hold the actor and a planned shutdown closes within a second.
            let deadline = Instant::now() + self.config.close_timeout();
            if end == End::Shutdown
                && let Behaviour::Services { dispatcher, .. } = &self.behaviour
            {
                let notice = ServerMessage::ServerShutdown {
                    reason: "server shutting down".to_owned(),
                    epoch: dispatcher.bus.epoch(),
                };
                let _ = self
                    .port
                    .outbox
                    .borrow_mut()
                    .reply(Frame::Text(Bytes::from(notice.to_json())));
            }
            // After everything queued; a client's close without a code gets an empty close back.
            self.port.close(end.close_reason(&self.config));
            let _ = tokio::time::timeout_at(deadline, self.closed()).await;
        }
        // Whatever did not go out by now never will: the response ends.
        self.port.finish();
        tracing::info!(conn = self.id, reason = %end, "websocket connection ended");
        end
    }
}

/// Waits for news from the outbound port: a stall (taken only while not `blocked`) or a failure.
async fn outbound(port: &Port, blocked: bool) -> Outbound {
    poll_fn(|cx| {
        port.register(cx.waker());
        if let Some(failure) = port.failure() {
            return Poll::Ready(Outbound::Failed(failure));
        }
        if !blocked && port.take_stall() {
            return Poll::Ready(Outbound::Stalled);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_end_is_logged_as_words_not_debug_output() {
        let closed = |code: u16, text: Option<&str>| {
            End::ClientClosed(Some(CloseReason {
                code: CloseCode::from(code),
                description: text.map(str::to_owned),
            }))
        };
        for (end, logged) in [
            (closed(1000, Some("bye")), "client closed (1000 bye)"),
            (closed(4000, None), "client closed (4000)"),
            (End::ClientClosed(None), "client closed"),
            (
                End::SlowConsumer("send timed out"),
                "slow consumer: send timed out",
            ),
            (End::Protocol("masked".into()), "protocol error: masked"),
            (End::Gone, "gone without a close"),
        ] {
            assert_eq!(end.to_string(), logged);
        }
    }

    #[test]
    fn rate_limit_warns_then_closes_and_forgives_a_client_that_slowed_down() {
        let start = Instant::now();
        let mut rate = RateLimit::new(2, 2).unwrap();
        // TC0: the burst passes, the next two are warnings, then the close
        let verdicts: Vec<Verdict> = (0..5).map(|_| rate.check(start)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Warn,
                Verdict::Warn,
                Verdict::Close
            ]
        );
        // TC1: after a full refill the warnings start over
        let mut rate = RateLimit::new(2, 1).unwrap();
        assert_eq!(
            [rate.check(start), rate.check(start), rate.check(start)],
            [Verdict::Allow, Verdict::Allow, Verdict::Warn]
        );
        let later = start + Duration::from_secs(2);
        assert_eq!(
            [rate.check(later), rate.check(later), rate.check(later)],
            [Verdict::Allow, Verdict::Allow, Verdict::Warn]
        );
        // TC2: no warnings configured: the first excess message closes
        let mut rate = RateLimit::new(1, 0).unwrap();
        assert_eq!(
            [rate.check(start), rate.check(start)],
            [Verdict::Allow, Verdict::Close]
        );
        // TC3: 0 disables the limit
        assert!(RateLimit::new(0, 10).is_none());
    }
}
