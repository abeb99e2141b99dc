//! Worker-local fan-out: each actix worker thread receives every hub frame once and hands it to
//! its own connections, writing to their sessions in the same turn. Nothing on that path crosses a
//! thread, sets a timer or takes a lock; a connection's task is woken only when its session is full,
//! closed or overflowed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix_ws::Message;
use cryptobot_domain::{Channel, Symbol};
use futures_util::Sink;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::hub::{HubFrame, HubShared};
use crate::metrics::GatewayMetrics;
use crate::outbox::{Frame, Outbox, Overflow};

/// Frames a worker takes from the hub before it writes: bounds one turn, so a burst cannot keep
/// the worker's other tasks (inbound, handshakes) waiting.
const BATCH: usize = 512;

/// Why the fan-out gave a connection up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortFailure {
    /// The FIFO overflowed (`event_buffer`), or the worker itself fell behind the hub.
    Lagged,
    /// The session is closed: the client went away.
    Gone,
    /// The engine restarted: the connection's `seq`s belong to the old run.
    NewEpoch,
}

/// Outcome of one attempt to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Everything waiting was handed to the session.
    Done,
    /// The session takes no more now; the connection's task is woken when it does.
    Blocked,
    /// The session is closed.
    Closed,
}

/// The outbound side of one connection, shared by its task and its worker's fan-out (same thread).
pub(crate) struct Port {
    /// Process-unique connection id.
    pub(crate) id: u64,
    /// What waits to be written.
    pub(crate) outbox: RefCell<Outbox>,
    /// actix-ws's outbound queue to this socket.
    session: RefCell<actix_ws::Session>,
    /// Set by the fan-out when it gave the connection up.
    failure: Cell<Option<PortFailure>>,
    /// Already on the fan-out's list of connections to write this turn.
    dirty: Cell<bool>,
    /// Some frame was handed to the session since the connection task last asked: a reader that is
    /// slow but reading is not stuck.
    progress: Cell<bool>,
    /// The connection task's waker (registered by its outbound branch).
    waker: RefCell<Option<Waker>>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.id)
            .field("failure", &self.failure.get())
            .finish_non_exhaustive()
    }
}

impl Port {
    /// A port over `session` with an empty outbox.
    pub(crate) fn new(id: u64, session: actix_ws::Session, outbox: Outbox) -> Rc<Self> {
        Rc::new(Self {
            id,
            outbox: RefCell::new(outbox),
            session: RefCell::new(session),
            failure: Cell::new(None),
            dirty: Cell::new(false),
            progress: Cell::new(false),
            waker: RefCell::new(None),
        })
    }

    /// A clone of the session (to send the close frame).
    pub(crate) fn session(&self) -> actix_ws::Session {
        self.session.borrow().clone()
    }

    /// Hands waiting frames to the session until it is full or nothing waits; returns the outcome
    /// and the number of frames handed over. A full session registers `cx`'s waker.
    pub(crate) fn flush(&self, cx: &mut Context<'_>, metrics: &GatewayMetrics) -> Flush {
        let mut sent = 0_u64;
        let outcome = self.write(cx, &mut sent);
        if sent > 0 {
            GatewayMetrics::add(&metrics.frames_sent, sent);
        }
        self.account(metrics);
        outcome
    }

    /// [`Port::flush`] without the metrics (the fan-out adds them up per turn).
    fn write(&self, cx: &mut Context<'_>, sent: &mut u64) -> Flush {
        let mut session = self.session.borrow_mut();
        let mut outbox = self.outbox.borrow_mut();
        loop {
            if outbox.is_empty() {
                return Flush::Done;
            }
            match Pin::new(&mut *session).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Flush::Closed,
                Poll::Pending => return Flush::Blocked,
            }
            // expect: the outbox was not empty a moment ago and nothing else touched it.
            let frame = outbox.pop().expect("outbox had a frame");
            let message = match frame {
                Frame::Text(bytes) => match bytes.try_into() {
                    Ok(text) => Message::Text(text),
                    // Our own JSON is always UTF-8; skipping is the only sane reaction if not.
                    Err(err) => {
                        tracing::error!(conn = self.id, %err, "outbound frame is not UTF-8");
                        continue;
                    }
                },
                Frame::Binary(bytes) => Message::Binary(bytes),
                Frame::Ping(bytes) => Message::Ping(bytes),
                Frame::Pong(bytes) => Message::Pong(bytes),
            };
            if Pin::new(&mut *session).start_send(message).is_err() {
                return Flush::Closed;
            }
            *sent += 1;
            self.progress.set(true);
        }
    }

    /// Moves the outbox's conflation count into the metrics.
    fn account(&self, metrics: &GatewayMetrics) {
        let conflated = self.outbox.borrow_mut().take_conflated();
        if conflated > 0 {
            GatewayMetrics::add(&metrics.tickers_conflated, conflated);
        }
    }

    /// Whether a frame was written since the last call.
    pub(crate) fn take_progress(&self) -> bool {
        self.progress.replace(false)
    }

    /// Why the fan-out gave up on this connection, if it did.
    pub(crate) fn failure(&self) -> Option<PortFailure> {
        self.failure.get()
    }

    /// Records the connection task's waker (cheap when unchanged).
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn fail(&self, failure: PortFailure) {
        // A new epoch outranks a lag: the client must learn that its `seq`s are void.
        if self.failure.get().is_none() || failure == PortFailure::NewEpoch {
            self.failure.set(Some(failure));
        }
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    /// A context carrying the connection task's waker: a full session then wakes the task itself.
    fn with_task_context<R>(&self, f: impl FnOnce(&mut Context<'_>) -> R) -> R {
        // Borrowed, not cloned per write: only the task's own poll replaces it.
        let slot = self.waker.borrow();
        let mut cx = Context::from_waker(slot.as_ref().unwrap_or(Waker::noop()));
        f(&mut cx)
    }
}

/// The connections of one worker thread for one gateway, and the task feeding them.
#[derive(Debug, Default)]
pub(crate) struct WorkerFanout {
    /// Every connection of this worker (never-dropped events are filtered by each outbox).
    ports: RefCell<HashMap<u64, Rc<Port>>>,
    /// Connections watching each symbol.
    tickers: RefCell<HashMap<Symbol, Vec<Rc<Port>>>>,
}

thread_local! {
    /// The fan-out of each gateway (by its id) on this worker thread.
    static FANOUTS: RefCell<HashMap<u64, Rc<WorkerFanout>>> = RefCell::new(HashMap::new());
}

impl WorkerFanout {
    /// The fan-out of gateway `gateway` on this thread, started on first use (must run inside the
    /// worker's `LocalSet`, as connection actors do).
    pub(crate) fn for_this_worker(
        gateway: u64,
        hub: &Arc<HubShared>,
        metrics: &Arc<GatewayMetrics>,
        shutdown: &CancellationToken,
    ) -> Rc<Self> {
        FANOUTS.with(|fanouts| {
            let mut fanouts = fanouts.borrow_mut();
            if let Some(fanout) = fanouts.get(&gateway) {
                return Rc::clone(fanout);
            }
            let fanout = Rc::new(Self::default());
            let task =
                Rc::clone(&fanout).run(hub.frame_receiver(), Arc::clone(metrics), shutdown.clone());
            actix_web::rt::spawn(async move {
                task.await;
                FANOUTS.with(|fanouts| fanouts.borrow_mut().remove(&gateway));
            });
            fanouts.insert(gateway, Rc::clone(&fanout));
            fanout
        })
    }

    /// Adds a connection (it receives never-dropped events from now on).
    pub(crate) fn add(&self, port: &Rc<Port>) {
        self.ports.borrow_mut().insert(port.id, Rc::clone(port));
    }

    /// Removes a connection and its ticker watches.
    pub(crate) fn remove(&self, port: &Port) {
        self.ports.borrow_mut().remove(&port.id);
        let symbols: Vec<Symbol> = port.outbox.borrow().watched().cloned().collect();
        for symbol in symbols {
            self.unwatch(&symbol, port.id);
        }
    }

    /// Delivers the symbol's tickers to the connection.
    pub(crate) fn watch(&self, symbol: &Symbol, port: &Rc<Port>) {
        let mut tickers = self.tickers.borrow_mut();
        let list = tickers.entry(symbol.clone()).or_default();
        if !list.iter().any(|p| p.id == port.id) {
            list.push(Rc::clone(port));
        }
    }

    /// Stops delivering the symbol's tickers to connection `id`.
    pub(crate) fn unwatch(&self, symbol: &Symbol, id: u64) {
        let mut tickers = self.tickers.borrow_mut();
        if let Some(list) = tickers.get_mut(symbol) {
            list.retain(|p| p.id != id);
            if list.is_empty() {
                tickers.remove(symbol);
            }
        }
    }

    /// Receives hub frames until shutdown or until the hub stops.
    async fn run(
        self: Rc<Self>,
        mut frames: broadcast::Receiver<Arc<HubFrame>>,
        metrics: Arc<GatewayMetrics>,
        shutdown: CancellationToken,
    ) {
        let mut dirty: Vec<Rc<Port>> = Vec::new();
        let cancelled = shutdown.cancelled_owned();
        tokio::pin!(cancelled);
        loop {
            let first = tokio::select! {
                biased;
                () = &mut cancelled => break,
                first = frames.recv() => first,
            };
            match first {
                Ok(frame) => self.offer(&frame, &mut dirty),
                Err(RecvError::Lagged(missed)) => self.lagged(missed, &metrics),
                Err(RecvError::Closed) => break,
            }
            for _ in 1..BATCH {
                match frames.try_recv() {
                    Ok(frame) => self.offer(&frame, &mut dirty),
                    Err(TryRecvError::Lagged(missed)) => self.lagged(missed, &metrics),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            let mut sent = 0_u64;
            for port in dirty.drain(..) {
                port.dirty.set(false);
                if port.failure().is_some() {
                    continue;
                }
                match port.with_task_context(|cx| port.write(cx, &mut sent)) {
                    Flush::Done => {}
                    // Now, so the task starts its send deadline; the session (which registered the
                    // task's waker) wakes it again when there is room.
                    Flush::Blocked => port.wake(),
                    Flush::Closed => port.fail(PortFailure::Gone),
                }
                port.account(&metrics);
            }
            if sent > 0 {
                GatewayMetrics::add(&metrics.frames_sent, sent);
            }
        }
    }

    /// Puts one frame into the outbox of every connection it is for.
    fn offer(&self, frame: &HubFrame, dirty: &mut Vec<Rc<Port>>) {
        if frame.new_epoch {
            for port in self.ports.borrow().values() {
                port.fail(PortFailure::NewEpoch);
            }
            return;
        }
        match &frame.channel {
            Channel::Ticker(symbol) => {
                let tickers = self.tickers.borrow();
                let Some(list) = tickers.get(symbol) else {
                    return;
                };
                for port in list {
                    if port
                        .outbox
                        .borrow_mut()
                        .ticker(symbol, frame.seq, frame.bytes.clone())
                    {
                        mark(port, dirty);
                    }
                }
            }
            channel => {
                for port in self.ports.borrow().values() {
                    let offered = port.outbox.borrow_mut().event(
                        channel,
                        frame.seq,
                        frame.snapshot,
                        frame.bytes.clone(),
                    );
                    match offered {
                        Ok(true) => mark(port, dirty),
                        Ok(false) => {}
                        Err(Overflow) => port.fail(PortFailure::Lagged),
                    }
                }
            }
        }
    }

    /// This worker missed hub frames: never-dropped events may be among them, so every connection
    /// that receives such events is closed as a slow consumer (it resumes or resynchronizes).
    fn lagged(&self, missed: u64, metrics: &GatewayMetrics) {
        GatewayMetrics::add(&metrics.hub_lagged_events, missed);
        tracing::warn!(missed, "a gateway worker fell behind the hub");
        for port in self.ports.borrow().values() {
            if port.outbox.borrow().receives_events() {
                port.fail(PortFailure::Lagged);
            }
        }
    }
}

fn mark(port: &Rc<Port>, dirty: &mut Vec<Rc<Port>>) {
    if !port.dirty.replace(true) {
        dirty.push(Rc::clone(port));
    }
}
