//! The delivery core of one connection: everything waiting to be written, with the protocol's rules
//! for order, dedupe, holding and conflation. No socket, no async, no clock: the connection actor
//! and its worker's fan-out feed it, and the writer drains it at the moment the socket takes more.
//!
//! - Replies and never-dropped events (trades, portfolio, signals, alerts) go through one FIFO, in
//!   the order they happened, and are never dropped: past `limit` frames the outbox overflows and
//!   the connection is closed as a slow consumer.
//! - Each watched ticker has one slot that always holds the newest frame not yet written; a newer
//!   price replaces an older one that was still waiting (conflation at the last moment). With a
//!   ticker window (`ws.ticker_window_ms`), updates less than the window older than the newest
//!   waiting one stay too (at most `TICKER_BURST`, 32, per symbol), so a busy server writes several per
//!   `write` instead of dropping them, while a lagging reader still gets only recent prices.
//! - A live event at or below the `seq` already queued on its channel was sent by a replay and is
//!   dropped, so a resume never duplicates.
//! - While held (`?welcome=1`, until the client's first message), live events wait apart and pass
//!   the dedupe only when released, after the resume's replay went into the FIFO.

use std::collections::VecDeque;
use std::time::Instant;

/// Most updates of one symbol waiting at once (with a ticker window).
pub const TICKER_BURST: usize = 32;

use actix_web::web::Bytes;
use cryptobot_domain::{Channel, Symbol};

/// When a live event entered the gateway (the hub received it) and its channel kind (an index
/// in `metrics::CHANNEL_KINDS`): what the writer needs for `cryptobot_ws_delivery_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The hub received the event.
    pub entered: Instant,
    /// Its channel kind.
    pub kind: u8,
}

/// The FIFO grew past its limit: the client is too far behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// One WebSocket message waiting to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// JSON text (shared bytes: a published event is the same allocation for every connection).
    Text(Bytes),
    /// Binary data (echo mode only).
    Binary(Bytes),
    /// A ping (heartbeat).
    Ping(Bytes),
    /// The answer to a client's ping.
    Pong(Bytes),
}

/// Number of never-dropped channels (every channel but the tickers).
const EVENT_CHANNELS: usize = 6;

/// Index of a fixed never-dropped channel; `None` for tickers and candles (candle channels get
/// indexes from `EVENT_CHANNELS` on, in the order a connection first subscribes to them).
const fn event_index(channel: &Channel) -> Option<usize> {
    match channel {
        Channel::Trades => Some(0),
        Channel::Portfolio => Some(1),
        Channel::Signals => Some(2),
        Channel::Alerts => Some(3),
        Channel::Orders => Some(4),
        Channel::Bot => Some(5),
        Channel::Ticker(_) | Channel::Candles(..) => None,
    }
}

/// One watched symbol.
#[derive(Debug)]
struct TickerSlot {
    symbol: Symbol,
    /// `seq` of the newest frame accepted (waiting or written); 0 before the first.
    last_seq: u64,
    /// Frames not yet written with their `ts_us` and when they entered the gateway (live ones),
    /// oldest first; the newest is last.
    pending: VecDeque<(Bytes, i64, Option<Instant>)>,
}

/// A live event that arrived while the outbox was held.
#[derive(Debug)]
struct HeldEvent {
    index: usize,
    seq: u64,
    snapshot: bool,
    bytes: Bytes,
}

/// What one connection has still to write.
#[derive(Debug)]
pub struct Outbox {
    /// Replies and never-dropped events (live ones stamped), oldest first.
    queue: VecDeque<(Frame, Option<Stamp>)>,
    /// Live events received while held; `None` once released.
    held: Option<Vec<HeldEvent>>,
    /// Which never-dropped channels the client receives: the fixed ones, then one per candle
    /// channel in `candles`.
    subscribed: Vec<bool>,
    /// Last `seq` queued per never-dropped channel (`None`: nothing yet), indexed as `subscribed`.
    event_seq: Vec<Option<u64>>,
    /// Candle channels this connection ever subscribed to (index `EVENT_CHANNELS + position`);
    /// never removed, so held events keep their index, and bounded by the traded symbols times
    /// the four intervals.
    candles: Vec<Channel>,
    /// Watched tickers (a handful per connection: a scan beats a map).
    tickers: Vec<TickerSlot>,
    /// Where the next ticker scan starts, so no slot starves the others.
    next_slot: usize,
    /// Most frames the FIFO (and the held list) may hold.
    limit: usize,
    /// A waiting ticker update older than the newest of its symbol by more than this is dropped.
    ticker_window_us: i64,
    /// Ticker frames replaced before they were written, not yet counted in the metrics.
    conflated: u64,
}

impl Outbox {
    /// An empty outbox delivering `channels`; `held` keeps live events back until [`Outbox::release`].
    pub fn new(limit: usize, channels: &[Channel], held: bool) -> Self {
        let mut outbox = Self {
            queue: VecDeque::new(),
            held: held.then(Vec::new),
            subscribed: vec![false; EVENT_CHANNELS],
            event_seq: vec![None; EVENT_CHANNELS],
            candles: Vec::new(),
            tickers: Vec::new(),
            next_slot: 0,
            limit: limit.max(1),
            ticker_window_us: 0,
            conflated: 0,
        };
        outbox.set_channels(channels);
        outbox
    }

    /// Keeps waiting ticker updates up to `window_us` older than the newest of their symbol
    /// (0, the default: only the newest waits).
    #[must_use]
    pub const fn with_ticker_window(mut self, window_us: i64) -> Self {
        self.ticker_window_us = window_us;
        self
    }

    /// Sets which never-dropped channels are delivered (ticker channels are watched separately).
    pub fn set_channels(&mut self, channels: &[Channel]) {
        self.subscribed.fill(false);
        for channel in channels {
            if let Some(index) = event_index(channel) {
                self.subscribed[index] = true;
            } else if matches!(channel, Channel::Candles(..)) {
                let index = self.index(channel).unwrap_or_else(|| {
                    self.candles.push(channel.clone());
                    self.subscribed.push(false);
                    self.event_seq.push(None);
                    self.subscribed.len() - 1
                });
                self.subscribed[index] = true;
            }
        }
    }

    /// Index of a never-dropped channel (fixed or candle); `None` for tickers and candle channels
    /// never subscribed.
    fn index(&self, channel: &Channel) -> Option<usize> {
        event_index(channel).or_else(|| {
            self.candles
                .iter()
                .position(|known| known == channel)
                .map(|position| EVENT_CHANNELS + position)
        })
    }

    /// Queues a reply (ack, error, pong, snapshot): always delivered, in order.
    pub fn reply(&mut self, frame: Frame) -> Result<(), Overflow> {
        self.push(frame, None)
    }

    /// Offers a never-dropped event; returns whether it was queued (or held).
    ///
    /// Dropped when the channel is not subscribed, or when its `seq` was already queued (a
    /// snapshot repeats the last `seq` and is never a duplicate).
    pub fn event(
        &mut self,
        channel: &Channel,
        seq: u64,
        snapshot: bool,
        bytes: Bytes,
    ) -> Result<bool, Overflow> {
        self.event_stamped(channel, seq, snapshot, bytes, None)
    }

    /// [`Outbox::event`] for a live event that entered the gateway at `entered`.
    pub fn event_stamped(
        &mut self,
        channel: &Channel,
        seq: u64,
        snapshot: bool,
        bytes: Bytes,
        entered: Option<Instant>,
    ) -> Result<bool, Overflow> {
        let stamp = entered.map(|entered| Stamp {
            entered,
            kind: crate::metrics::channel_kind(channel),
        });
        let Some(index) = self.index(channel) else {
            return Ok(false);
        };
        if !self.subscribed[index] {
            return Ok(false);
        }
        if let Some(held) = &mut self.held {
            if held.len() + self.queue.len() >= self.limit {
                return Err(Overflow);
            }
            // Held events are not timed: the wait for the client's first message is the client's,
            // not delivery.
            held.push(HeldEvent {
                index,
                seq,
                snapshot,
                bytes,
            });
            return Ok(true);
        }
        self.queue_event(index, seq, snapshot, bytes, stamp)
    }

    /// Queues a replayed event of a resume: like [`Outbox::event`], but never held (the replay is
    /// what the held live events must follow).
    pub fn replayed(
        &mut self,
        channel: &Channel,
        seq: u64,
        bytes: Bytes,
    ) -> Result<bool, Overflow> {
        match self.index(channel) {
            Some(index) if self.subscribed[index] => {
                self.queue_event(index, seq, false, bytes, None)
            }
            _ => Ok(false),
        }
    }

    fn queue_event(
        &mut self,
        index: usize,
        seq: u64,
        snapshot: bool,
        bytes: Bytes,
        stamp: Option<Stamp>,
    ) -> Result<bool, Overflow> {
        if !snapshot {
            if self.event_seq[index].is_some_and(|last| seq <= last) {
                return Ok(false);
            }
            self.event_seq[index] = Some(seq);
        }
        self.push(Frame::Text(bytes), stamp).map(|()| true)
    }

    fn push(&mut self, frame: Frame, stamp: Option<Stamp>) -> Result<(), Overflow> {
        let held = self.held.as_ref().map_or(0, Vec::len);
        if self.queue.len() + held >= self.limit {
            return Err(Overflow);
        }
        self.queue.push_back((frame, stamp));
        Ok(())
    }

    /// Lets held live events through the dedupe, after whatever the first request queued.
    pub fn release(&mut self) -> Result<(), Overflow> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        for event in held {
            // A channel unsubscribed meanwhile no longer receives its held events.
            if self.subscribed[event.index] {
                self.queue_event(event.index, event.seq, event.snapshot, event.bytes, None)?;
            }
        }
        Ok(())
    }

    /// True while live events are held back.
    pub const fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// The last `seq` queued on a channel, if any (tickers: the newest accepted).
    pub fn delivered(&self, channel: &Channel) -> Option<u64> {
        match channel {
            Channel::Ticker(symbol) => self
                .slot(symbol)
                .map(|slot| slot.last_seq)
                .filter(|seq| *seq > 0),
            other => self.index(other).and_then(|index| self.event_seq[index]),
        }
    }

    /// Marks `seq` as delivered on a never-dropped channel (a resume that continues live after it).
    pub fn set_delivered(&mut self, channel: &Channel, seq: u64) {
        if let Some(index) = self.index(channel) {
            self.event_seq[index] = Some(seq);
        }
    }

    /// Starts a slot for the symbol's tickers (no-op when it has one).
    pub fn watch(&mut self, symbol: &Symbol) {
        if self.slot(symbol).is_none() {
            self.tickers.push(TickerSlot {
                symbol: symbol.clone(),
                last_seq: 0,
                pending: VecDeque::new(),
            });
        }
    }

    /// Drops the symbol's slot and its unwritten frame.
    pub fn unwatch(&mut self, symbol: &Symbol) {
        self.tickers.retain(|slot| &slot.symbol != symbol);
        self.next_slot = 0;
    }

    fn slot(&self, symbol: &Symbol) -> Option<&TickerSlot> {
        self.tickers.iter().find(|slot| &slot.symbol == symbol)
    }

    /// Offers a ticker frame published at `ts_us`; returns whether it now waits.
    ///
    /// Ignored when the symbol is not watched or the `seq` is not newer than the last accepted
    /// (`seq` 0, a snapshot from the market before any live update, is taken only as the first).
    /// Waiting updates of the symbol more than the ticker window older than this one are dropped,
    /// and the oldest when [`TICKER_BURST`] wait.
    pub fn ticker(&mut self, symbol: &Symbol, seq: u64, ts_us: i64, bytes: Bytes) -> bool {
        self.ticker_stamped(symbol, seq, ts_us, bytes, None)
    }

    /// [`Outbox::ticker`] for a live update that entered the gateway at `entered`.
    pub fn ticker_stamped(
        &mut self,
        symbol: &Symbol,
        seq: u64,
        ts_us: i64,
        bytes: Bytes,
        entered: Option<Instant>,
    ) -> bool {
        let window = self.ticker_window_us;
        let Some(slot) = self.tickers.iter_mut().find(|slot| &slot.symbol == symbol) else {
            return false;
        };
        let newer = if seq == 0 {
            slot.last_seq == 0 && slot.pending.is_empty()
        } else {
            seq > slot.last_seq
        };
        if !newer {
            return false;
        }
        while let Some((_, waiting, _)) = slot.pending.front()
            && (window == 0
                || waiting.saturating_add(window) < ts_us
                || slot.pending.len() >= TICKER_BURST)
        {
            slot.pending.pop_front();
            self.conflated += 1;
        }
        slot.pending.push_back((bytes, ts_us, entered));
        slot.last_seq = seq;
        true
    }

    /// The next frame to write: the FIFO first (replies and events in order), then waiting tickers.
    pub fn pop(&mut self) -> Option<Frame> {
        self.pop_stamped().map(|(frame, _)| frame)
    }

    /// [`Outbox::pop`] with the frame's [`Stamp`] when it is a live event.
    pub fn pop_stamped(&mut self) -> Option<(Frame, Option<Stamp>)> {
        if let Some(entry) = self.queue.pop_front() {
            return Some(entry);
        }
        let slots = self.tickers.len();
        for step in 0..slots {
            let index = (self.next_slot + step) % slots;
            if let Some((bytes, _, entered)) = self.tickers[index].pending.pop_front() {
                self.next_slot = (index + 1) % slots;
                let stamp = entered.map(|entered| Stamp { entered, kind: 0 });
                return Some((Frame::Text(bytes), stamp));
            }
        }
        None
    }

    /// True when nothing waits to be written (held events do not count: they wait for the client).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.tickers.iter().all(|slot| slot.pending.is_empty())
    }

    /// True when the FIFO takes one more frame.
    pub fn has_room(&self) -> bool {
        self.queued() < self.limit
    }

    /// Frames waiting in the FIFO (held events included).
    pub fn queued(&self) -> usize {
        self.queue.len() + self.held.as_ref().map_or(0, Vec::len)
    }

    /// Ticker frames replaced since the last call.
    pub fn take_conflated(&mut self) -> u64 {
        std::mem::take(&mut self.conflated)
    }

    /// The watched symbols.
    pub fn watched(&self) -> impl Iterator<Item = &Symbol> {
        self.tickers.iter().map(|slot| &slot.symbol)
    }

    /// True when some never-dropped channel is delivered.
    pub fn receives_events(&self) -> bool {
        self.subscribed.iter().any(|s| *s)
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;

    use super::*;

    fn b(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    fn t(text: &'static str) -> Frame {
        Frame::Text(b(text))
    }

    fn drain(outbox: &mut Outbox) -> Vec<Frame> {
        std::iter::from_fn(|| outbox.pop()).collect()
    }

    fn defaults() -> Vec<Channel> {
        vec![Channel::Trades, Channel::Portfolio, Channel::Alerts]
    }

    /// One step of a scenario.
    #[derive(Debug, Clone)]
    enum Step {
        Event(Channel, u64, bool, &'static str),
        Replayed(Channel, u64, &'static str),
        Reply(&'static str),
        Ticker(&'static str, u64, &'static str),
        Watch(&'static str),
        Unwatch(&'static str),
        Delivered(Channel, u64),
        Release,
    }

    fn run(held: bool, steps: &[Step]) -> Vec<Frame> {
        let mut outbox = Outbox::new(100, &defaults(), held);
        for step in steps {
            match step.clone() {
                Step::Event(channel, seq, snapshot, text) => {
                    outbox.event(&channel, seq, snapshot, b(text)).unwrap();
                }
                Step::Replayed(channel, seq, text) => {
                    outbox.replayed(&channel, seq, b(text)).unwrap();
                }
                Step::Reply(text) => outbox.reply(t(text)).unwrap(),
                Step::Ticker(symbol, seq, text) => {
                    outbox.ticker(&fixtures::symbol(symbol), seq, 0, b(text));
                }
                Step::Watch(symbol) => outbox.watch(&fixtures::symbol(symbol)),
                Step::Unwatch(symbol) => outbox.unwatch(&fixtures::symbol(symbol)),
                Step::Delivered(channel, seq) => outbox.set_delivered(&channel, seq),
                Step::Release => outbox.release().unwrap(),
            }
        }
        drain(&mut outbox)
    }

    #[test]
    fn delivery_rules() {
        use Step::*;
        let tr = Channel::Trades;
        let cases: Vec<(&str, bool, Vec<Step>, Vec<&str>)> = vec![
            // TC0: replies and events keep their order
            (
                "fifo order",
                false,
                vec![
                    Event(tr.clone(), 1, false, "t1"),
                    Reply("ack"),
                    Event(tr.clone(), 2, false, "t2"),
                ],
                vec!["t1", "ack", "t2"],
            ),
            // TC1: a live event at or below the last queued seq was sent by a replay
            (
                "dedupe after replay",
                false,
                vec![
                    Event(tr.clone(), 5, false, "r5"),
                    Event(tr.clone(), 4, false, "live4"),
                    Event(tr.clone(), 5, false, "live5"),
                    Event(tr.clone(), 6, false, "live6"),
                ],
                vec!["r5", "live6"],
            ),
            // TC2: a snapshot repeats the last seq and is still delivered
            (
                "snapshot not deduped",
                false,
                vec![
                    Event(Channel::Portfolio, 3, false, "p3"),
                    Event(Channel::Portfolio, 3, true, "snap"),
                ],
                vec!["p3", "snap"],
            ),
            // TC3: channels not subscribed are filtered
            (
                "filter",
                false,
                vec![
                    Event(Channel::Signals, 1, false, "s1"),
                    Event(tr.clone(), 1, false, "t1"),
                ],
                vec!["t1"],
            ),
            // TC4: a replay and live events meet without a gap or a repeat
            (
                "replay then live",
                false,
                vec![
                    Replayed(tr.clone(), 3, "r3"),
                    Replayed(tr.clone(), 4, "r4"),
                    Event(tr.clone(), 4, false, "live4"),
                    Event(tr.clone(), 5, false, "live5"),
                    Replayed(Channel::Signals, 1, "not subscribed"),
                ],
                vec!["r3", "r4", "live5"],
            ),
            // TC4b: a resume that continues live after a seq
            (
                "set delivered",
                false,
                vec![
                    Delivered(tr.clone(), 10),
                    Event(tr.clone(), 10, false, "old"),
                    Event(tr.clone(), 11, false, "t11"),
                ],
                vec!["t11"],
            ),
            // TC5: tickers conflate to the newest frame not yet written
            (
                "conflation",
                false,
                vec![
                    Watch("BTCUSDT"),
                    Ticker("BTCUSDT", 1, "b1"),
                    Ticker("BTCUSDT", 2, "b2"),
                    Ticker("BTCUSDT", 3, "b3"),
                ],
                vec!["b3"],
            ),
            // TC6: older or repeated ticker seqs are ignored; unwatched symbols too
            (
                "ticker dedupe",
                false,
                vec![
                    Watch("BTCUSDT"),
                    Ticker("BTCUSDT", 5, "b5"),
                    Ticker("BTCUSDT", 4, "b4"),
                    Ticker("ETHUSDT", 9, "e9"),
                ],
                vec!["b5"],
            ),
            // TC7: the FIFO goes before waiting tickers (an ack precedes its snapshot)
            (
                "fifo before tickers",
                false,
                vec![Watch("BTCUSDT"), Ticker("BTCUSDT", 1, "b1"), Reply("ack")],
                vec!["ack", "b1"],
            ),
            // TC8: a market snapshot (seq 0) only before the first live ticker
            (
                "seq 0 snapshot",
                false,
                vec![
                    Watch("BTCUSDT"),
                    Ticker("BTCUSDT", 0, "snap"),
                    Ticker("BTCUSDT", 0, "snap2"),
                ],
                vec!["snap"],
            ),
            // TC9: unwatch drops the waiting frame
            (
                "unwatch",
                false,
                vec![
                    Watch("BTCUSDT"),
                    Ticker("BTCUSDT", 1, "b1"),
                    Unwatch("BTCUSDT"),
                    Ticker("BTCUSDT", 2, "b2"),
                ],
                vec![],
            ),
            // TC10: held live events wait, then pass the dedupe after the replay
            (
                "held then released",
                true,
                vec![
                    Reply("welcome"),
                    Event(tr.clone(), 7, false, "live7"),
                    Event(tr.clone(), 8, false, "live8"),
                    Reply("resumed"),
                    Replayed(tr.clone(), 6, "r6"),
                    Replayed(tr.clone(), 7, "r7"),
                    Release,
                ],
                vec!["welcome", "resumed", "r6", "r7", "live8"],
            ),
            // TC11: nothing held is written before the release
            (
                "held stays back",
                true,
                vec![Reply("welcome"), Event(tr, 1, false, "t1")],
                vec!["welcome"],
            ),
        ];
        for (name, held, steps, expected) in cases {
            let got = run(held, &steps);
            let expected: Vec<Frame> = expected.into_iter().map(t).collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn fifo_overflow_is_reported_and_tickers_never_overflow() {
        let mut outbox = Outbox::new(2, &defaults(), false);
        assert_eq!(outbox.reply(t("a")), Ok(()));
        assert_eq!(outbox.event(&Channel::Trades, 1, false, b("t1")), Ok(true));
        assert_eq!(
            outbox.event(&Channel::Trades, 2, false, b("t2")),
            Err(Overflow)
        );
        assert_eq!(outbox.reply(t("b")), Err(Overflow));
        let btc = fixtures::symbol("BTCUSDT");
        outbox.watch(&btc);
        for seq in 1..1000 {
            assert!(outbox.ticker(&btc, seq, 0, b("x")));
        }
        assert_eq!(outbox.take_conflated(), 998);
        assert_eq!(outbox.take_conflated(), 0);
        assert_eq!(drain(&mut outbox).len(), 3);
        assert!(outbox.is_empty());
    }

    #[test]
    fn candle_channels_are_delivered_per_channel_and_deduped() {
        use cryptobot_domain::Interval;
        let m1 = Channel::Candles(fixtures::symbol("BTCUSDT"), Interval::M1);
        let h1 = Channel::Candles(fixtures::symbol("BTCUSDT"), Interval::H1);
        let mut channels = defaults();
        channels.push(m1.clone());
        let mut outbox = Outbox::new(10, &channels, true);
        // TC0: held like every never-dropped event, then released in order
        assert_eq!(outbox.event(&m1, 1, false, b("m1-1")), Ok(true));
        // TC1: a candle channel not subscribed is not delivered
        assert_eq!(outbox.event(&h1, 1, false, b("h1-1")), Ok(false));
        assert_eq!(outbox.release(), Ok(()));
        // TC2: a repeated seq is dropped, a snapshot is not
        assert_eq!(outbox.event(&m1, 1, false, b("again")), Ok(false));
        assert_eq!(outbox.event(&m1, 1, true, b("snap")), Ok(true));
        assert_eq!(outbox.delivered(&m1), Some(1));
        // TC3: subscribing later adds the channel; unsubscribing keeps its seq
        channels.push(h1.clone());
        outbox.set_channels(&channels);
        assert_eq!(outbox.event(&h1, 7, false, b("h1-7")), Ok(true));
        outbox.set_channels(&defaults());
        assert_eq!(outbox.event(&m1, 2, false, b("m1-2")), Ok(false));
        assert_eq!(outbox.delivered(&h1), Some(7));
        assert!(outbox.receives_events());
        assert_eq!(drain(&mut outbox), [t("m1-1"), t("snap"), t("h1-7")]);
    }

    #[test]
    fn held_events_count_against_the_limit() {
        let mut outbox = Outbox::new(2, &defaults(), true);
        assert_eq!(outbox.event(&Channel::Trades, 1, false, b("1")), Ok(true));
        assert_eq!(outbox.event(&Channel::Trades, 2, false, b("2")), Ok(true));
        assert_eq!(
            outbox.event(&Channel::Trades, 3, false, b("3")),
            Err(Overflow)
        );
        assert!(outbox.is_held());
        assert!(outbox.is_empty(), "held events are not ready to write");
        assert_eq!(outbox.queued(), 2);
    }

    #[test]
    fn tickers_take_turns() {
        let mut outbox = Outbox::new(10, &defaults(), false);
        let (btc, eth) = (fixtures::symbol("BTCUSDT"), fixtures::symbol("ETHUSDT"));
        outbox.watch(&btc);
        outbox.watch(&eth);
        outbox.ticker(&btc, 1, 1, b("b1"));
        outbox.ticker(&eth, 1, 1, b("e1"));
        assert_eq!(outbox.pop(), Some(t("b1")));
        outbox.ticker(&btc, 2, 2, b("b2"));
        // ETH waited longer: it goes first.
        assert_eq!(outbox.pop(), Some(t("e1")));
        assert_eq!(outbox.pop(), Some(t("b2")));
        assert_eq!(outbox.pop(), None);
    }

    #[test]
    fn the_ticker_window_keeps_recent_updates_and_skips_older_ones() {
        // (window µs, updates offered as (seq, ts µs), what waits afterwards, skipped)
        type Case = (i64, &'static [(u64, i64)], &'static [u64], u64);
        let cases: [Case; 5] = [
            // TC0: no window: only the newest waits
            (0, &[(1, 0), (2, 10), (3, 20)], &[3], 2),
            // TC1: all within the window: all wait, in order
            (50_000, &[(1, 0), (2, 10_000), (3, 20_000)], &[1, 2, 3], 0),
            // TC2: the newest is 70 ms on: those more than 50 ms older are skipped, 50 ms is kept
            (
                50_000,
                &[(1, 0), (2, 10_000), (3, 20_000), (4, 70_000)],
                &[3, 4],
                2,
            ),
            // TC3: an older seq is ignored, not queued behind the newer
            (50_000, &[(5, 0), (4, 1_000), (6, 2_000)], &[5, 6], 0),
            // TC4: a gap longer than the window leaves only the newest
            (50_000, &[(1, 0), (2, 1_000), (3, 900_000)], &[3], 2),
        ];
        let btc = fixtures::symbol("BTCUSDT");
        for (n, (window, offered, waiting, skipped)) in cases.into_iter().enumerate() {
            let mut outbox = Outbox::new(10, &defaults(), false).with_ticker_window(window);
            outbox.watch(&btc);
            for &(seq, ts) in offered {
                outbox.ticker(&btc, seq, ts, Bytes::from(seq.to_string()));
            }
            let got: Vec<u64> = drain(&mut outbox)
                .into_iter()
                .map(|frame| match frame {
                    Frame::Text(bytes) => std::str::from_utf8(&bytes).unwrap().parse().unwrap(),
                    other => panic!("TC{n}: not a ticker: {other:?}"),
                })
                .collect();
            assert_eq!(got, waiting, "TC{n}");
            assert_eq!(outbox.take_conflated(), skipped, "TC{n}");
        }
    }

    #[test]
    fn at_most_a_burst_of_one_symbol_waits_within_the_window() {
        let mut outbox = Outbox::new(10, &defaults(), false).with_ticker_window(1_000_000);
        let btc = fixtures::symbol("BTCUSDT");
        outbox.watch(&btc);
        let offered = TICKER_BURST as u64 + 8;
        for seq in 1..=offered {
            assert!(outbox.ticker(&btc, seq, i64::try_from(seq).unwrap(), b("x")));
        }
        assert_eq!(drain(&mut outbox).len(), TICKER_BURST);
        assert_eq!(outbox.take_conflated(), 8);
    }

    #[test]
    fn delivered_reports_per_channel() {
        let mut outbox = Outbox::new(10, &defaults(), false);
        let btc = fixtures::symbol("BTCUSDT");
        assert_eq!(outbox.delivered(&Channel::Trades), None);
        outbox.event(&Channel::Trades, 4, false, b("t")).unwrap();
        assert_eq!(outbox.delivered(&Channel::Trades), Some(4));
        outbox.watch(&btc);
        assert_eq!(outbox.delivered(&Channel::Ticker(btc.clone())), None);
        outbox.ticker(&btc, 9, 9, b("b"));
        assert_eq!(outbox.delivered(&Channel::Ticker(btc)), Some(9));
        assert!(outbox.receives_events());
        outbox.set_channels(&[]);
        assert!(!outbox.receives_events());
    }

    #[test]
    fn live_events_keep_their_stamp_and_replies_replays_and_held_events_have_none() {
        let entered = Instant::now();
        let btc = fixtures::symbol("BTCUSDT");
        // TC0: a live trade, a reply, a replayed trade, a live ticker, in that order
        let mut outbox = Outbox::new(10, &defaults(), false);
        outbox.watch(&btc);
        outbox
            .event_stamped(&Channel::Trades, 1, false, b("t1"), Some(entered))
            .unwrap();
        outbox.reply(t("ack")).unwrap();
        outbox.replayed(&Channel::Trades, 2, b("t2")).unwrap();
        assert!(outbox.ticker_stamped(&btc, 1, 1, b("p"), Some(entered)));
        let stamps: Vec<Option<Stamp>> =
            std::iter::from_fn(|| outbox.pop_stamped().map(|(_, stamp)| stamp)).collect();
        assert_eq!(
            stamps,
            [
                Some(Stamp { entered, kind: 1 }),
                None,
                None,
                Some(Stamp { entered, kind: 0 }),
            ]
        );
        // TC1: held until the first message: released without a stamp
        let mut held = Outbox::new(10, &defaults(), true);
        held.event_stamped(&Channel::Alerts, 1, false, b("a"), Some(entered))
            .unwrap();
        held.release().unwrap();
        assert_eq!(held.pop_stamped(), Some((t("a"), None)));
    }
}
