//! Worker-local fan-out: each actix worker thread receives every hub frame once, puts it into the
//! outbox of each of its connections that takes it, and wakes their socket writers (the response
//! bodies, on the same thread) once per turn. Nothing on that path crosses a thread, sets a timer,
//! takes a lock or allocates; a connection's task is woken only when its socket stalls, closes or
//! its FIFO overflows. The writers count frames and delivery times in the worker's `LocalWire`
//! (plain local counts), which the task adds to the shared metrics once a second.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;

use actix_ws::CloseReason;
use cryptobot_domain::{Channel, Symbol};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::hub::{HubFrame, HubShared};
use crate::metrics::{FLUSH_EVERY, GatewayMetrics, LocalWire};
use crate::outbox::{Outbox, Overflow};

/// Frames a worker takes from the hub before it writes: bounds one turn, so a burst cannot keep
/// the worker's other tasks (inbound, handshakes) waiting.
const BATCH: usize = 512;

/// Why the fan-out gave a connection up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortFailure {
    /// The FIFO overflowed (`event_buffer`), or the worker itself fell behind the hub.
    Lagged,
    /// The socket is done: the client went away.
    Gone,
    /// The engine restarted: the connection's `seq`s belong to the old run.
    NewEpoch,
}

/// Where the socket side of a connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WriterState {
    /// Writing the outbox.
    Open,
    /// The close frame is to go out once the outbox is empty.
    Closing(Option<CloseReason>),
    /// Nothing more goes out: the response body ends.
    Finished,
}

/// The outbound side of one connection, shared by its task, its worker's fan-out and the response
/// body that writes it (all on one thread).
pub(crate) struct Port {
    /// Process-unique connection id.
    pub(crate) id: u64,
    /// What waits to be written.
    pub(crate) outbox: RefCell<Outbox>,
    /// Set by the fan-out when it gave the connection up.
    failure: Cell<Option<PortFailure>>,
    /// Already on the fan-out's list of connections to wake this turn.
    dirty: Cell<bool>,
    /// The body was woken and has not been polled since: the dispatcher's write buffer is full.
    writer_woken: Cell<bool>,
    /// A stall was seen and not yet taken by the connection task.
    stalled: Cell<bool>,
    /// Some frame was written since the connection task last asked: a reader that is slow but
    /// reading is not stuck.
    progress: Cell<bool>,
    /// The connection task waits for the outbox to empty.
    drain_wanted: Cell<bool>,
    state: RefCell<WriterState>,
    /// The connection task's waker (registered by its outbound branch).
    waker: RefCell<Option<Waker>>,
    /// The waker of the dispatcher task polling the response body.
    writer: RefCell<Option<Waker>>,
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
    /// A port with `outbox`; its socket side is the [`crate::wire::OutboundBody`] built on it.
    pub(crate) fn new(id: u64, outbox: Outbox) -> Rc<Self> {
        Rc::new(Self {
            id,
            outbox: RefCell::new(outbox),
            failure: Cell::new(None),
            dirty: Cell::new(false),
            writer_woken: Cell::new(false),
            stalled: Cell::new(false),
            progress: Cell::new(false),
            drain_wanted: Cell::new(false),
            state: RefCell::new(WriterState::Open),
            waker: RefCell::new(None),
            writer: RefCell::new(None),
        })
    }

    /// Wakes the writer if something waits: the dispatcher then polls the body, which takes it.
    pub(crate) fn kick(&self) {
        if self.outbox.borrow().is_empty() && *self.state.borrow() == WriterState::Open {
            return;
        }
        self.wake_writer();
    }

    fn wake_writer(&self) {
        if self.writer_woken.replace(true) {
            return;
        }
        if let Some(waker) = self.writer.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Marks a stall if the writer was woken and has not taken anything since (called by the
    /// fan-out before it wakes again, and at each heartbeat): the connection task then starts its
    /// send deadline.
    pub(crate) fn check_stall(&self) {
        if self.writer_woken.get() && !self.stalled.replace(true) {
            self.wake();
        }
    }

    /// Takes the stall mark.
    pub(crate) fn take_stall(&self) -> bool {
        self.stalled.replace(false)
    }

    /// Called by the body on each poll.
    pub(crate) fn register_writer(&self, waker: &Waker) {
        self.writer_woken.set(false);
        let mut slot = self.writer.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Called by the body after it took frames.
    pub(crate) fn wrote(&self) {
        self.progress.set(true);
        if self.drain_wanted.get() && self.outbox.borrow().is_empty() {
            self.drain_wanted.set(false);
            self.wake();
        }
    }

    /// Asks for the close frame after what is queued; the body ends after it.
    pub(crate) fn close(&self, reason: Option<CloseReason>) {
        let mut state = self.state.borrow_mut();
        if *state == WriterState::Open {
            *state = WriterState::Closing(reason);
        }
        drop(state);
        self.wake_writer();
    }

    /// Ends the body without a close frame (the connection is over).
    pub(crate) fn finish(&self) {
        *self.state.borrow_mut() = WriterState::Finished;
        self.wake_writer();
    }

    /// The close frame to write now, if one was asked for; the body is finished after it.
    pub(crate) fn take_close(&self) -> Option<Option<CloseReason>> {
        let mut state = self.state.borrow_mut();
        if let WriterState::Closing(reason) = &mut *state {
            let reason = reason.take();
            *state = WriterState::Finished;
            drop(state);
            // The close is out: the connection task may stop waiting for it.
            self.drain_wanted.set(false);
            self.wake();
            return Some(reason);
        }
        None
    }

    /// True once nothing more is to be written.
    pub(crate) fn writer_finished(&self) -> bool {
        *self.state.borrow() == WriterState::Finished
    }

    /// True when the close frame (if any) went out or the body ended.
    pub(crate) fn closed(&self) -> bool {
        self.writer_finished() || self.failure.get() == Some(PortFailure::Gone)
    }

    /// Asks the body to wake the connection task when the outbox is empty.
    pub(crate) fn want_drain(&self) {
        self.drain_wanted.set(true);
        self.wake_writer();
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

    pub(crate) fn fail(&self, failure: PortFailure) {
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
}

/// The connections of one worker thread for one gateway: the handle its connections register
/// into, shared with the [`FanoutTask`] that feeds them.
#[derive(Debug)]
pub(crate) struct WorkerFanout {
    /// Every connection of this worker (never-dropped events are filtered by each outbox).
    ports: RefCell<HashMap<u64, Rc<Port>>>,
    /// Connections watching each symbol.
    tickers: RefCell<HashMap<Symbol, Vec<Rc<Port>>>>,
    /// This worker's unflushed frame counts and delivery times, fed by its connections'
    /// writers and flushed by the fan-out task about once a second.
    pub(crate) wire: Rc<LocalWire>,
}

thread_local! {
    /// The fan-out of each gateway (by its id) on this worker thread.
    static FANOUTS: RefCell<HashMap<u64, Rc<WorkerFanout>>> = RefCell::new(HashMap::new());
}

impl WorkerFanout {
    /// The fan-out of gateway `gateway` on this thread, its task started on first use (must run
    /// inside the worker's `LocalSet`, as connection actors do).
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
            let fanout = Rc::new(Self {
                ports: RefCell::default(),
                tickers: RefCell::default(),
                wire: Rc::new(LocalWire::new(metrics)),
            });
            // Detached: it ends with the hub or the shutdown, and unregisters itself then.
            let _task = FanoutTask::new(
                gateway,
                Rc::clone(&fanout),
                hub.frame_receiver(),
                Arc::clone(metrics),
                shutdown.clone(),
            )
            .spawn();
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
                    if port.outbox.borrow_mut().ticker_stamped(
                        symbol,
                        frame.seq,
                        frame.ts_us,
                        frame.bytes.clone(),
                        frame.entered,
                    ) {
                        mark(port, dirty);
                    }
                }
            }
            channel => {
                for port in self.ports.borrow().values() {
                    let offered = port.outbox.borrow_mut().event_stamped(
                        channel,
                        frame.seq,
                        frame.snapshot,
                        frame.bytes.clone(),
                        frame.entered,
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

/// The fan-out task of one worker thread for one gateway: takes every hub frame once and offers
/// it to the worker's connections. `!Send`: it stays on its worker's `LocalSet`, with the ports.
#[derive(Debug)]
struct FanoutTask {
    /// The gateway's id, its key in `FANOUTS`.
    gateway: u64,
    /// The worker's connections (shared with them and their handshakes).
    fanout: Rc<WorkerFanout>,
    /// This worker's receiver of every hub frame.
    frames: broadcast::Receiver<Arc<HubFrame>>,
    /// Counters (`hub_lagged_events`).
    metrics: Arc<GatewayMetrics>,
    /// Ends the task.
    shutdown: CancellationToken,
    /// Connections given frames this turn; kept across turns so its capacity is reused.
    dirty: Vec<Rc<Port>>,
}

impl FanoutTask {
    /// A task feeding `fanout` from `frames` until `shutdown` is cancelled or the hub stops.
    fn new(
        gateway: u64,
        fanout: Rc<WorkerFanout>,
        frames: broadcast::Receiver<Arc<HubFrame>>,
        metrics: Arc<GatewayMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            gateway,
            fanout,
            frames,
            metrics,
            shutdown,
            dirty: Vec::new(),
        }
    }

    /// Runs the task on this worker's `LocalSet`.
    fn spawn(self) -> tokio::task::JoinHandle<()> {
        actix_web::rt::spawn(self.run())
    }

    /// Receives hub frames until shutdown or until the hub stops, then unregisters the fan-out,
    /// so a later connection of this gateway on this worker starts a new one.
    async fn run(mut self) {
        let cancelled = self.shutdown.cancelled();
        tokio::pin!(cancelled);
        // One timer per worker (not per frame or connection): the writers' local counts reach
        // the shared series within about a second, also when no frame flows.
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                biased;
                () = &mut cancelled => break,
                _ = flush.tick() => {
                    self.fanout.wire.flush();
                    continue;
                }
                first = self.frames.recv() => first,
            };
            match first {
                Ok(frame) => self.fanout.offer(&frame, &mut self.dirty),
                Err(RecvError::Lagged(missed)) => self.fanout.lagged(missed, &self.metrics),
                Err(RecvError::Closed) => break,
            }
            for _ in 1..BATCH {
                match self.frames.try_recv() {
                    Ok(frame) => self.fanout.offer(&frame, &mut self.dirty),
                    Err(TryRecvError::Lagged(missed)) => self.fanout.lagged(missed, &self.metrics),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            for port in self.dirty.drain(..) {
                port.dirty.set(false);
                if port.failure().is_some() {
                    continue;
                }
                // Woken before and not polled since: the socket is not taking frames.
                port.check_stall();
                port.wake_writer();
            }
        }
        self.fanout.wire.flush();
        FANOUTS.with(|fanouts| fanouts.borrow_mut().remove(&self.gateway));
    }
}

fn mark(port: &Rc<Port>, dirty: &mut Vec<Rc<Port>>) {
    if !port.dirty.replace(true) {
        dirty.push(Rc::clone(port));
    }
}
