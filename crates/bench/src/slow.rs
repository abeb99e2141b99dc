//! Slow readers: connections that read at most a few frames a second (`--slow-readers`,
//! `--slow-rate`), to see how old their tickers are when they get them and whether every trade
//! still reaches them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use hdrhistogram::Histogram;

use crate::scan;

/// Seconds of window tracked in [`SlowStats::age_max_by_second`] (later ones count in the last).
const MAX_SECONDS: usize = 600;

/// What every slow reader adds to; one thread, so `Cell`s.
#[derive(Debug)]
pub(crate) struct SlowStats {
    /// Age at arrival (now minus `ts_us`) in microseconds of every ticker read in the window.
    pub(crate) age_us: RefCell<Histogram<u64>>,
    /// The largest age in microseconds per second of the window (index 0 is its first second):
    /// shows whether the age still grows (buffers still filling) or has settled.
    pub(crate) age_max_by_second: RefCell<Vec<u64>>,
    /// When the window opened, microseconds since the Unix epoch.
    pub(crate) window_start_us: Cell<u64>,
    /// Frames of any kind read in the window.
    pub(crate) frames_in_window: Cell<u64>,
    /// Frames of any kind read from the subscription on, the drain included.
    pub(crate) frames_total: Cell<u64>,
    /// Ticker updates read in the window.
    pub(crate) tickers_in_window: Cell<u64>,
    /// Ticker updates skipped between two read ones of the same channel, in the window.
    pub(crate) tickers_skipped: Cell<u64>,
    /// `trade_notification` frames read, at any time.
    pub(crate) trade_notifications: Cell<u64>,
    /// Times the trades `seq` did not follow the previous one (+1) on a reader.
    pub(crate) trade_seq_gaps: Cell<u64>,
    /// Trade ids each reader got, indexed by reader.
    pub(crate) received: RefCell<Vec<Vec<u64>>>,
    /// Local ports of the connected readers, to find their queues in /proc/net/tcp.
    pub(crate) local_ports: RefCell<Vec<u16>>,
    /// Readers whose connection ended (closed by the server, say), and the first close seen.
    pub(crate) ended: Cell<usize>,
    pub(crate) first_close: RefCell<Option<String>>,
    /// Largest and last sampled sums over the readers of the bytes their kernel receive queues
    /// held unread, and of the bytes the server's send queues held for them.
    pub(crate) client_rx_max: Cell<u64>,
    pub(crate) client_rx_last: Cell<u64>,
    pub(crate) server_tx_max: Cell<u64>,
    pub(crate) server_tx_last: Cell<u64>,
}

impl SlowStats {
    pub(crate) fn new(readers: usize) -> Self {
        Self {
            // expect: 1 µs to 10 min with 3 significant digits are valid bounds.
            age_us: RefCell::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            ),
            age_max_by_second: RefCell::new(Vec::new()),
            window_start_us: Cell::new(0),
            frames_in_window: Cell::new(0),
            frames_total: Cell::new(0),
            tickers_in_window: Cell::new(0),
            tickers_skipped: Cell::new(0),
            trade_notifications: Cell::new(0),
            trade_seq_gaps: Cell::new(0),
            received: RefCell::new(vec![Vec::new(); readers]),
            local_ports: RefCell::new(Vec::new()),
            ended: Cell::new(0),
            first_close: RefCell::new(None),
            client_rx_max: Cell::new(0),
            client_rx_last: Cell::new(0),
            server_tx_max: Cell::new(0),
            server_tx_last: Cell::new(0),
        }
    }

    /// How many of `executed` some reader has not got (summed over readers).
    pub(crate) fn missing(&self, executed: &[u64]) -> u64 {
        let received = self.received.borrow();
        received
            .iter()
            .map(|got| executed.iter().filter(|id| !got.contains(id)).count() as u64)
            .sum()
    }

    /// Records one sample of the kernel queues (`client_rx`, `server_tx`), summed over readers.
    pub(crate) fn sample_queues(&self, client_rx: u64, server_tx: u64) {
        self.client_rx_last.set(client_rx);
        self.server_tx_last.set(server_tx);
        self.client_rx_max
            .set(self.client_rx_max.get().max(client_rx));
        self.server_tx_max
            .set(self.server_tx_max.get().max(server_tx));
    }
}

/// One slow reader's own bookkeeping.
#[derive(Debug)]
pub(crate) struct SlowReader {
    /// Index into [`SlowStats::received`].
    slot: usize,
    /// The last ticker `seq` per channel (`ticker:<SYMBOL>`).
    last_ticker_seq: HashMap<Vec<u8>, u64>,
    last_trade_seq: Option<u64>,
}

impl SlowReader {
    pub(crate) fn new(slot: usize) -> Self {
        Self {
            slot,
            last_ticker_seq: HashMap::new(),
            last_trade_seq: None,
        }
    }

    /// Accounts for one text frame read at `arrived_us` (microseconds since the Unix epoch).
    pub(crate) fn on_frame(
        &mut self,
        bytes: &[u8],
        arrived_us: u64,
        measuring: bool,
        stats: &SlowStats,
    ) {
        stats.frames_total.set(stats.frames_total.get() + 1);
        if measuring {
            stats.frames_in_window.set(stats.frames_in_window.get() + 1);
        }
        if scan::contains(bytes, b"\"ticker_update\"") {
            let channel = scan::string_after(bytes, b"\"channel\":\"").unwrap_or_default();
            let seq = scan::number_after(bytes, b"\"seq\":");
            let last = match seq {
                Some(seq) => self.last_ticker_seq.insert(channel.to_vec(), seq),
                None => None,
            };
            if !measuring {
                return;
            }
            stats
                .tickers_in_window
                .set(stats.tickers_in_window.get() + 1);
            if let Some(ts_us) = scan::number_after(bytes, b"\"ts_us\":") {
                let age = arrived_us.saturating_sub(ts_us).max(1);
                let _ = stats.age_us.borrow_mut().record(age);
                let second = arrived_us.saturating_sub(stats.window_start_us.get()) / 1_000_000;
                let second = usize::try_from(second)
                    .unwrap_or(usize::MAX)
                    .min(MAX_SECONDS);
                let mut by_second = stats.age_max_by_second.borrow_mut();
                if by_second.len() <= second {
                    by_second.resize(second + 1, 0);
                }
                by_second[second] = by_second[second].max(age);
            }
            if let (Some(seq), Some(last)) = (seq, last) {
                let skipped = seq.saturating_sub(last).saturating_sub(1);
                stats
                    .tickers_skipped
                    .set(stats.tickers_skipped.get() + skipped);
            }
        } else if scan::contains(bytes, b"\"trade_notification\"") {
            stats
                .trade_notifications
                .set(stats.trade_notifications.get() + 1);
            if let Some(id) = scan::first_number_after(bytes, b"\"id\":")
                && let Some(got) = stats.received.borrow_mut().get_mut(self.slot)
            {
                got.push(id);
            }
            let seq = scan::number_after(bytes, b"\"seq\":");
            if let (Some(seq), Some(last)) = (seq, self.last_trade_seq)
                && seq != last + 1
            {
                stats.trade_seq_gaps.set(stats.trade_seq_gaps.get() + 1);
            }
            if seq.is_some() {
                self.last_trade_seq = seq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticker(symbol: &str, seq: u64, ts_us: u64) -> String {
        format!(
            r#"{{"type":"ticker_update","channel":"ticker:{symbol}","payload":{{"symbol":"{symbol}","price":"1.5"}},"timestamp":1,"ts_us":{ts_us},"seq":{seq}}}"#
        )
    }

    fn trade(id: u64, seq: u64) -> String {
        format!(
            r#"{{"type":"trade_notification","channel":"trades","payload":{{"id":{id},"symbol":"BTCUSDT","side":"buy","client_order_id":"x-{id}"}},"timestamp":1,"ts_us":5,"seq":{seq}}}"#
        )
    }

    #[test]
    fn ages_and_skips_count_per_channel_inside_the_window_only() {
        let stats = SlowStats::new(1);
        stats.window_start_us.set(1_000_000);
        let mut reader = SlowReader::new(0);
        let mut read = |frame: &str, arrived_us: u64, measuring: bool| {
            reader.on_frame(frame.as_bytes(), arrived_us, measuring, &stats);
        };
        // Before the window: remembered, not recorded.
        read(&ticker("BTCUSDT", 10, 1_000), 2_000, false);
        // In the window: BTC 10 -> 13 skips two; ETH starts at 7 (no previous) skips none.
        read(&ticker("BTCUSDT", 13, 1_000_000), 1_250_000, true);
        read(&ticker("ETHUSDT", 7, 1_000_000), 1_500_000, true);
        read(&ticker("ETHUSDT", 8, 1_000_000), 1_750_000, true);
        // 2.5 s into the window, 0.1 s old.
        read(&ticker("ETHUSDT", 9, 3_400_000), 3_500_000, true);
        read(r#"{"type":"portfolio_update","seq":3}"#, 1, true);
        assert_eq!(stats.frames_total.get(), 6);
        assert_eq!(stats.frames_in_window.get(), 5);
        assert_eq!(stats.tickers_in_window.get(), 4);
        assert_eq!(stats.tickers_skipped.get(), 2);
        // The largest age of each second of the window; none in the second second.
        assert_eq!(*stats.age_max_by_second.borrow(), [750_000, 0, 100_000]);
        let ages = stats.age_us.borrow();
        assert_eq!(ages.len(), 4);
        // 0.1, 0.25, 0.5 and 0.75 s old (HDR values are equal within its precision).
        assert!(ages.equivalent(ages.min(), 100_000), "{}", ages.min());
        assert!(ages.equivalent(ages.value_at_quantile(0.5), 250_000));
        assert!(ages.equivalent(ages.max(), 750_000), "{}", ages.max());
    }

    #[test]
    fn trades_are_collected_and_seq_gaps_counted() {
        let stats = SlowStats::new(2);
        let mut first = SlowReader::new(0);
        let mut second = SlowReader::new(1);
        for (id, seq) in [(21, 1), (22, 2), (23, 3)] {
            first.on_frame(trade(id, seq).as_bytes(), 10, false, &stats);
        }
        // The second reader misses seq 2 (trade 22).
        for (id, seq) in [(21, 1), (23, 3)] {
            second.on_frame(trade(id, seq).as_bytes(), 10, true, &stats);
        }
        assert_eq!(stats.trade_notifications.get(), 5);
        assert_eq!(stats.trade_seq_gaps.get(), 1);
        assert_eq!(stats.received.borrow()[0], [21, 22, 23]);
        assert_eq!(stats.missing(&[21, 22, 23]), 1);
        assert_eq!(stats.missing(&[21, 23]), 0);
        assert_eq!(stats.missing(&[24]), 2);
        // Trades are no tickers: no age recorded.
        assert_eq!(stats.age_us.borrow().len(), 0);
    }

    #[test]
    fn queue_samples_keep_the_largest_and_the_last() {
        let stats = SlowStats::new(1);
        stats.sample_queues(100, 5);
        stats.sample_queues(40, 9);
        assert_eq!(
            (stats.client_rx_max.get(), stats.client_rx_last.get()),
            (100, 40)
        );
        assert_eq!(
            (stats.server_tx_max.get(), stats.server_tx_last.get()),
            (9, 9)
        );
    }
}
