//! The connection actor: owns the socket, reconnects, resumes, refills, and matches replies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use cryptobot_domain::{Channel, Event, Order};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::backoff::Backoff;
use crate::rest::{self, Rest};
use crate::tracker::Tracker;
use crate::wire::{self, Inbound};
use crate::{ClientConfig, ClientError, ErrorCode, Received, TokenPlacement, Update};

/// The server's `client_timeout_secs` default, used until a `welcome` says otherwise.
const DEFAULT_IDLE: Duration = Duration::from_secs(45);
/// How often abandoned requests (their caller timed out) are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Order updates kept per connection for patching its `open_orders` snapshot, which comes right
/// after the subscribe ack: live updates may overtake it.
const RECENT_ORDER_UPDATES: usize = 256;
/// The close code of an expired JWT (docs/protocol.md): reconnecting with it cannot help.
const TOKEN_EXPIRED: u16 = 4401;

type Socket = WebSocketStream<TcpStream>;

/// What a [`crate::Client`] asks the actor.
#[derive(Debug)]
pub(crate) enum Command {
    /// A request frame; the reply (or error) goes back on `reply`.
    Request {
        kind: &'static str,
        payload: Option<Value>,
        /// How the wanted channels change once the server acks.
        change: Option<Change>,
        reply: oneshot::Sender<Result<Value, ClientError>>,
    },
    /// Close and stop.
    Close { done: oneshot::Sender<()> },
}

/// A change of the wanted channels.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Add(Vec<Channel>),
    Remove(Vec<Channel>),
}

/// A request sent (or to send) and not answered yet. Kept across reconnects and sent again on the
/// next connection: every request the client makes is safe to repeat (`manual_trade` carries
/// its `client_order_id`, levels and subscriptions are states).
#[derive(Debug)]
struct Pending {
    kind: &'static str,
    payload: Option<Value>,
    change: Option<Change>,
    reply: oneshot::Sender<Result<Value, ClientError>>,
}

/// `ws://host:port/path?query`, split.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    authority: String,
    path_and_query: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, ClientError> {
        let invalid = || ClientError::InvalidUrl(format!("{url}: expected ws://HOST:PORT/PATH"));
        let rest = url.strip_prefix("ws://").ok_or_else(invalid)?;
        let (authority, path) = rest
            .find(['/', '?'])
            .map_or((rest, "/api/v1/ws"), |at| rest.split_at(at));
        if authority.is_empty() || authority.contains('@') {
            return Err(invalid());
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let path = if path.starts_with('?') {
            format!("/api/v1/ws{path}")
        } else {
            path.to_owned()
        };
        let separator = if path.contains('?') { '&' } else { '?' };
        Ok(Self {
            authority,
            path_and_query: format!("{path}{separator}welcome=1"),
        })
    }
}

/// How a connection ended.
enum End {
    /// Lost: reconnect.
    Lost(String),
    /// Reconnecting cannot help.
    Fatal(ClientError),
    /// Closed by the caller, or nobody reads the updates any more.
    Stop,
}

/// The actor. Owns everything that lives across connections.
pub(crate) struct Worker {
    config: ClientConfig,
    target: Target,
    rest: Rest,
    commands: mpsc::Receiver<Command>,
    /// False once every [`crate::Client`] is dropped (the updates may still be read).
    commands_open: bool,
    updates: mpsc::Sender<Update>,
    tracker: Tracker,
    /// The channels to deliver and to subscribe on every connection.
    wanted: BTreeSet<Channel>,
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
    backoff: Backoff,
    /// The server's `Retry-After` of the last refused attempt.
    retry_after: Option<Duration>,
    /// Whether the current connection's opening subscribe carried a `resume` (the server then
    /// sends no `open_orders`).
    resumed: bool,
    /// The order updates of the current connection with their `seq`, newest last.
    recent_orders: VecDeque<(u64, Order)>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Worker {
    pub(crate) fn new(
        config: ClientConfig,
        target: Target,
        commands: mpsc::Receiver<Command>,
        updates: mpsc::Sender<Update>,
    ) -> Self {
        let rest = Rest {
            authority: target.authority.clone(),
            token: config.token.clone(),
            timeout: config.request_timeout,
        };
        Self {
            tracker: Tracker::new(config.trades_after),
            wanted: config.channels.clone(),
            backoff: Backoff::new(config.backoff_initial, config.backoff_max),
            config,
            target,
            rest,
            commands,
            commands_open: true,
            updates,
            pending: BTreeMap::new(),
            next_id: 1,
            retry_after: None,
            resumed: false,
            recent_orders: VecDeque::new(),
        }
    }

    /// Connects, serves and reconnects until closed. `first` gets the outcome of the first
    /// attempt; a failed first attempt ends the actor.
    pub(crate) async fn run(mut self, first: oneshot::Sender<Result<(), ClientError>>) {
        let mut first = Some(first);
        loop {
            let attempt = tokio::time::timeout(self.config.connect_timeout, self.open())
                .await
                .unwrap_or(Err(ClientError::Timeout(self.config.connect_timeout)));
            let settled = match attempt {
                Ok((socket, idle, buffered, recovered, epoch)) => self
                    .settle(recovered, epoch)
                    .await
                    .map(|()| (socket, idle, buffered)),
                Err(err) if err.is_fatal() => Err(End::Fatal(err)),
                Err(err) => Err(End::Lost(err.to_string())),
            };
            let end = match settled {
                Ok((socket, idle, buffered)) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(()));
                    }
                    self.backoff.reset();
                    self.serve(socket, idle, buffered).await
                }
                Err(end) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(match end {
                            End::Fatal(err) => err,
                            End::Lost(reason) => ClientError::Connection(reason),
                            End::Stop => ClientError::Closed,
                        }));
                        return;
                    }
                    end
                }
            };
            match end {
                End::Stop => return,
                End::Fatal(err) => {
                    self.fail_pending(&err);
                    let _ = self.updates.send(Update::Stopped(err)).await;
                    return;
                }
                End::Lost(reason) => {
                    tracing::debug!(%reason, "connection lost");
                    if self
                        .updates
                        .send(Update::Disconnected { reason })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let delay = self
                .backoff
                .next_delay()
                .max(self.retry_after.take().unwrap_or_default());
            if !self.wait(delay).await {
                return;
            }
        }
    }

    /// Waits before the next attempt, queueing the commands that come meanwhile. False: stop.
    async fn wait(&mut self, delay: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return true,
                () = self.updates.closed() => return false,
                command = self.commands.recv(), if self.commands_open => match command {
                    None => self.commands_open = false,
                    Some(Command::Close { done }) => {
                        self.fail_pending(&ClientError::Closed);
                        let _ = done.send(());
                        return false;
                    }
                    Some(Command::Request { kind, payload, change, reply }) => {
                        let id = self.next_id();
                        self.pending.insert(id, Pending { kind, payload, change, reply });
                    }
                },
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn fail_pending(&mut self, err: &ClientError) {
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ = pending.reply.send(Err(err.clone()));
        }
    }

    /// One connection up to the point where it is subscribed, resumed and refilled: returns the
    /// socket, its idle timeout, the frames that came before the subscribe ack, the ack's
    /// `recovered` map and the epoch.
    #[allow(clippy::type_complexity, reason = "one private call site")]
    async fn open(
        &mut self,
    ) -> Result<
        (
            Socket,
            Duration,
            VecDeque<String>,
            BTreeMap<Channel, bool>,
            u64,
        ),
        ClientError,
    > {
        let mut socket = self.handshake().await?;
        // With ?welcome=1 the welcome comes first and pushes wait for our first message.
        let (epoch, server_idle) = loop {
            let text = next_text(&mut socket).await?;
            if let Inbound::Welcome {
                epoch,
                client_timeout_secs,
            } = wire::parse(&text)?
            {
                break (epoch, client_timeout_secs.map(Duration::from_secs));
            }
        };
        let idle = self
            .config
            .idle_timeout
            .or(server_idle)
            .unwrap_or(DEFAULT_IDLE);
        self.tracker.on_welcome(epoch);
        self.resumed = self.tracker.resume().is_some();
        self.recent_orders.clear();
        let setup_id = self.next_id();
        let payload = wire::subscribe_payload(&self.wanted, self.tracker.resume());
        let opening = if self.wanted.is_empty() {
            wire::request(setup_id, "list_subscriptions", None)
        } else {
            wire::request(setup_id, "subscribe", Some(&payload))
        };
        send(&mut socket, opening).await?;
        let mut buffered = VecDeque::new();
        let ack = loop {
            let text = next_text(&mut socket).await?;
            match wire::parse(&text)? {
                Inbound::Reply { id, result } if id == setup_id => break result,
                _ => buffered.push_back(text),
            }
        };
        let ack = ack.map_err(|err| match err {
            // The wanted set itself is refused (an unknown symbol): every attempt would be.
            ClientError::Server { code, message, .. } => ClientError::Server {
                code,
                message,
                status: Some(400),
            },
            other => other,
        })?;
        let recovered = wire::recovered(&ack);
        self.tracker.on_recovered(&recovered);
        let unwanted: Vec<String> = wire::channels(&ack)
            .into_iter()
            .filter(|channel| !self.wanted.contains(channel))
            .map(|channel| channel.to_string())
            .collect();
        if !unwanted.is_empty() {
            let id = self.next_id();
            let payload = serde_json::json!({ "channels": unwanted });
            send(
                &mut socket,
                wire::request(id, "unsubscribe", Some(&payload)),
            )
            .await?;
        }
        Ok((socket, idle, buffered, recovered, epoch))
    }

    async fn handshake(&mut self) -> Result<Socket, ClientError> {
        let url = format!(
            "ws://{}{}",
            self.target.authority, self.target.path_and_query
        );
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|err| ClientError::InvalidUrl(err.to_string()))?;
        let header = |value: String| {
            HeaderValue::from_str(&value)
                .map_err(|_| ClientError::InvalidUrl("token is not a valid header value".into()))
        };
        match (&self.config.token, self.config.token_placement) {
            (Some(token), TokenPlacement::Header) => {
                request
                    .headers_mut()
                    .insert("authorization", header(format!("Bearer {token}"))?);
            }
            (Some(token), TokenPlacement::SubProtocol) => {
                request.headers_mut().insert(
                    "sec-websocket-protocol",
                    header(format!("cryptobot.v1, bearer.{token}"))?,
                );
            }
            (None, _) => {}
        }
        let stream = TcpStream::connect(&self.target.authority)
            .await
            .map_err(|err| ClientError::Connection(format!("{}: {err}", self.target.authority)))?;
        let _ = stream.set_nodelay(true);
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(socket),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                self.retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_secs);
                Err(rest::refusal(
                    status,
                    response.body().as_deref().unwrap_or_default(),
                ))
            }
            Err(err) => Err(ClientError::Connection(err.to_string())),
        }
    }

    /// Runs one connection: the refill a lost resume needs, the requests left over from the last
    /// connection, the frames buffered during the opening, then the live stream.
    /// Tells the caller a connection is up, then refills trades if the server could not replay
    /// them. Done before the first [`crate::Client::connect`] returns, so the trade stream starts
    /// no later than that.
    async fn settle(&mut self, recovered: BTreeMap<Channel, bool>, epoch: u64) -> Result<(), End> {
        let trades_recovered = recovered.get(&Channel::Trades) == Some(&true);
        let orders_recovered = recovered.get(&Channel::Orders) == Some(&true);
        let connected = Update::Connected { epoch, recovered };
        self.updates.send(connected).await.map_err(|_| End::Stop)?;
        if self.wanted.contains(&Channel::Trades) && !trades_recovered {
            // The socket is subscribed already, so a trade committed from now on comes live;
            // everything before it is in the history. The id dedupes the overlap.
            self.refill().await?;
        }
        if self.resumed && self.wanted.contains(&Channel::Orders) && !orders_recovered {
            // A resume gets no `open_orders`: the state comes from the REST listing instead.
            let orders = self.rest.open_orders().await.map_err(lost)?;
            let snapshot = Update::OpenOrders { seq: None, orders };
            self.updates.send(snapshot).await.map_err(|_| End::Stop)?;
        }
        Ok(())
    }

    /// Runs one connection: the requests left over from the last connection, the frames
    /// buffered during the opening, then the live stream.
    async fn serve(
        &mut self,
        mut socket: Socket,
        idle: Duration,
        buffered: VecDeque<String>,
    ) -> End {
        // A request whose caller gave up (timed out) is not sent again: the caller decides.
        self.pending.retain(|_, pending| !pending.reply.is_closed());
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            let pending = &self.pending[&id];
            if let Err(err) = send(
                &mut socket,
                wire::request(id, pending.kind, pending.payload.as_ref()),
            )
            .await
            {
                return End::Lost(err.to_string());
            }
        }
        for text in buffered {
            if let Some(end) = self.handle_text(&text).await {
                return end;
            }
        }
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        let mut last_heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                frame = socket.next() => {
                    last_heard = tokio::time::Instant::now();
                    let end = match frame {
                        None => Some(End::Lost("connection closed".into())),
                        Some(Err(err)) => Some(End::Lost(err.to_string())),
                        Some(Ok(Message::Text(text))) => self.handle_text(&text).await,
                        Some(Ok(Message::Close(frame))) => Some(closed(frame)),
                        // Pings are answered by tungstenite on the next read or write.
                        Some(Ok(_)) => None,
                    };
                    if let Some(end) = end {
                        return end;
                    }
                }
                () = tokio::time::sleep_until(last_heard + idle) => {
                    return End::Lost(format!("nothing received for {idle:?}"));
                }
                command = self.commands.recv(), if self.commands_open => match command {
                    None => self.commands_open = false,
                    Some(Command::Close { done }) => {
                        let _ = socket.close(None).await;
                        self.fail_pending(&ClientError::Closed);
                        let _ = done.send(());
                        return End::Stop;
                    }
                    Some(Command::Request { kind, payload, change, reply }) => {
                        let id = self.next_id();
                        let frame = wire::request(id, kind, payload.as_ref());
                        self.pending.insert(id, Pending { kind, payload, change, reply });
                        if let Err(err) = send(&mut socket, frame).await {
                            return End::Lost(err.to_string());
                        }
                    }
                },
                () = self.updates.closed() => return End::Stop,
                _ = prune.tick() => self.pending.retain(|_, pending| !pending.reply.is_closed()),
            }
        }
    }

    /// Delivers every trade after the last one delivered, from the REST history.
    async fn refill(&mut self) -> Result<(), End> {
        let Some(after) = self.tracker.last_trade_id() else {
            let newest = self.rest.newest_trade_id().await.map_err(lost)?;
            self.tracker.start_trades_after(newest);
            return Ok(());
        };
        let trades = self.rest.trades_after(after).await.map_err(lost)?;
        for trade in trades {
            if self.tracker.accept_trade(trade.id) {
                let received = Received {
                    channel: Channel::Trades,
                    seq: None,
                    snapshot: false,
                    event: Event::TradeExecuted(trade),
                };
                self.updates
                    .send(Update::Event(received))
                    .await
                    .map_err(|_| End::Stop)?;
            }
        }
        Ok(())
    }

    /// Handles one text frame; `Some` ends the connection.
    async fn handle_text(&mut self, text: &str) -> Option<End> {
        let inbound = match wire::parse(text) {
            Ok(inbound) => inbound,
            Err(err) => {
                tracing::warn!(%err, "unreadable frame ignored");
                return None;
            }
        };
        match inbound {
            Inbound::Push {
                channel,
                seq,
                snapshot,
                event,
            } => {
                if !self.wanted.contains(&channel) {
                    return None;
                }
                let trade_id = match &event {
                    Event::TradeExecuted(trade) => Some(trade.id),
                    _ => None,
                };
                if self.tracker.accept(&channel, seq, trade_id) {
                    if let (Event::OrderUpdated(update), Some(seq)) = (&event, seq) {
                        if self.recent_orders.len() == RECENT_ORDER_UPDATES {
                            self.recent_orders.pop_front();
                        }
                        self.recent_orders.push_back((seq, update.order.clone()));
                    }
                    let received = Received {
                        channel,
                        seq,
                        snapshot,
                        event,
                    };
                    if self.updates.send(Update::Event(received)).await.is_err() {
                        return Some(End::Stop);
                    }
                }
            }
            Inbound::OpenOrders { seq, mut orders } => {
                if !self.wanted.contains(&Channel::Orders) {
                    return None;
                }
                if let Some(seq) = seq {
                    let newer = self
                        .recent_orders
                        .iter()
                        .filter(|(update_seq, _)| *update_seq > seq)
                        .map(|(_, order)| order.clone());
                    crate::orders::patch_open_orders(&mut orders, newer);
                    // Updates at or below its seq are in it: they are repeats from now on.
                    self.tracker.accept(&Channel::Orders, Some(seq), None);
                }
                let seq = self
                    .recent_orders
                    .back()
                    .map(|(newest, _)| *newest)
                    .max(seq);
                self.recent_orders.clear();
                if self
                    .updates
                    .send(Update::OpenOrders { seq, orders })
                    .await
                    .is_err()
                {
                    return Some(End::Stop);
                }
            }
            Inbound::Reply { id, result } => {
                if let Some(pending) = self.pending.remove(&id) {
                    if result.is_ok() {
                        self.apply(pending.change);
                    }
                    let _ = pending.reply.send(result);
                }
            }
            Inbound::Welcome { .. } | Inbound::Shutdown | Inbound::Ignored => {}
        }
        None
    }

    fn apply(&mut self, change: Option<Change>) {
        match change {
            Some(Change::Add(channels)) => self.wanted.extend(channels),
            Some(Change::Remove(channels)) => {
                for channel in channels {
                    self.tracker.forget(&channel);
                    self.wanted.remove(&channel);
                }
            }
            None => {}
        }
    }
}

/// A failed REST call as the end of the connection.
fn lost(err: ClientError) -> End {
    if err.is_fatal() {
        End::Fatal(err)
    } else {
        End::Lost(err.to_string())
    }
}

/// How a close frame ends the connection.
fn closed(frame: Option<CloseFrame>) -> End {
    match frame {
        Some(frame) if u16::from(frame.code) == TOKEN_EXPIRED => End::Fatal(ClientError::Server {
            code: ErrorCode::Unauthorized,
            message: format!("closed {}: {}", TOKEN_EXPIRED, frame.reason),
            status: Some(401),
        }),
        Some(frame) if frame.code != CloseCode::Normal || !frame.reason.is_empty() => End::Lost(
            format!("closed {}: {}", u16::from(frame.code), frame.reason),
        ),
        _ => End::Lost("closed".into()),
    }
}

async fn send(socket: &mut Socket, frame: String) -> Result<(), ClientError> {
    socket
        .send(Message::text(frame))
        .await
        .map_err(|err| ClientError::Connection(err.to_string()))
}

/// The next text frame (pings are answered meanwhile); a close or the end is an error.
async fn next_text(socket: &mut Socket) -> Result<String, ClientError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                return Err(ClientError::Connection(match closed(frame) {
                    End::Lost(reason) => reason,
                    End::Fatal(err) => err.to_string(),
                    End::Stop => "closed".into(),
                }));
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(ClientError::Connection(err.to_string())),
            None => return Err(ClientError::Connection("connection closed".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_add_welcome_and_a_default_port() {
        // TC0: the usual URL
        let target = Target::parse("ws://127.0.0.1:8080/api/v1/ws").unwrap();
        assert_eq!(target.authority, "127.0.0.1:8080");
        assert_eq!(target.path_and_query, "/api/v1/ws?welcome=1");
        // TC1: a query of the caller's is kept, the port defaults to 80
        let target = Target::parse("ws://bots.example/api/v1/ws?token=abc").unwrap();
        assert_eq!(target.authority, "bots.example:80");
        assert_eq!(target.path_and_query, "/api/v1/ws?token=abc&welcome=1");
        // TC2: no path
        assert_eq!(
            Target::parse("ws://[::1]:9000").unwrap().path_and_query,
            "/api/v1/ws?welcome=1"
        );
        // TC3: refused
        for url in [
            "wss://a:1/ws",
            "ws://",
            "ws://user@h:1/ws",
            "127.0.0.1:8080",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }
}
