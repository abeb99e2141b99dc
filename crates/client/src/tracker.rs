//! What the client remembers across connections: the epoch, the last `seq` per channel and the
//! last trade id. Pure, so the dedupe rules are unit-tested without a socket.

use std::collections::BTreeMap;

use cryptobot_domain::Channel;

/// Decides which received events are new, and what to ask for on resume.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker {
    /// The server run the `seq` values belong to (`None` before the first `welcome`).
    epoch: Option<u64>,
    /// The highest `seq` received per channel, in `epoch`.
    last_seq: BTreeMap<Channel, u64>,
    /// The highest trade id delivered. Trade ids are storage ids, increasing in execution order
    /// and kept across server restarts, so they dedupe trades where `seq` (per run) cannot.
    last_trade_id: Option<u64>,
}

impl Tracker {
    pub(crate) fn new(trades_after: Option<u64>) -> Self {
        Self {
            last_trade_id: trades_after,
            ..Self::default()
        }
    }

    /// Takes a new connection's epoch. Another run's `seq`s start over, so the old ones are
    /// dropped (the last trade id stays: it is the server's storage id).
    pub(crate) fn on_welcome(&mut self, epoch: u64) {
        if self.epoch != Some(epoch) {
            self.last_seq.clear();
            self.epoch = Some(epoch);
        }
    }

    /// The `resume` to send: the epoch and the last `seq` of every channel received, if any.
    pub(crate) fn resume(&self) -> Option<(u64, &BTreeMap<Channel, u64>)> {
        match self.epoch {
            Some(epoch) if !self.last_seq.is_empty() => Some((epoch, &self.last_seq)),
            _ => None,
        }
    }

    /// Applies the ack's `recovered` map: a channel not recovered continues after the server's
    /// current `seq` (or a snapshot of it), which must not be taken for a repeat.
    pub(crate) fn on_recovered(&mut self, recovered: &BTreeMap<Channel, bool>) {
        for (channel, ok) in recovered {
            if !ok {
                self.last_seq.remove(channel);
            }
        }
    }

    /// Forgets a channel the caller unsubscribed.
    pub(crate) fn forget(&mut self, channel: &Channel) {
        self.last_seq.remove(channel);
    }

    pub(crate) const fn last_trade_id(&self) -> Option<u64> {
        self.last_trade_id
    }

    /// Sets where the trade stream starts when nothing was delivered yet.
    pub(crate) fn start_trades_after(&mut self, id: u64) {
        if self.last_trade_id.is_none() {
            self.last_trade_id = Some(id);
        }
    }

    /// Records a pushed event and says whether it is new. Trades are new when their id is above
    /// the last delivered; other channels when their `seq` is above the last received (a
    /// snapshot repeats the last `seq`).
    pub(crate) fn accept(
        &mut self,
        channel: &Channel,
        seq: Option<u64>,
        trade_id: Option<u64>,
    ) -> bool {
        let seq_is_new =
            seq.is_none_or(|seq| self.last_seq.get(channel).is_none_or(|last| seq > *last));
        if let Some(seq) = seq
            && seq_is_new
        {
            self.last_seq.insert(channel.clone(), seq);
        }
        match trade_id {
            Some(id) => self.accept_trade(id),
            None => seq_is_new,
        }
    }

    /// Records a trade refilled over REST (no `seq`) and says whether it is new.
    pub(crate) fn accept_trade(&mut self, id: u64) -> bool {
        let new = self.last_trade_id.is_none_or(|last| id > last);
        if new {
            self.last_trade_id = Some(id);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticker() -> Channel {
        Channel::parse("ticker:BTCUSDT").unwrap()
    }

    #[test]
    fn repeats_and_snapshots_of_a_seq_are_dropped() {
        let mut tracker = Tracker::new(None);
        tracker.on_welcome(7);
        // TC0: first event of a channel, whatever its seq
        assert!(tracker.accept(&ticker(), Some(27), None));
        // TC1: a snapshot repeating it, then an older one
        assert!(!tracker.accept(&ticker(), Some(27), None));
        assert!(!tracker.accept(&ticker(), Some(20), None));
        // TC2: a jump (conflated tickers) is new
        assert!(tracker.accept(&ticker(), Some(31), None));
        assert_eq!(tracker.resume().unwrap().1[&ticker()], 31);
    }

    #[test]
    fn trades_are_deduped_by_id_across_epochs() {
        let mut tracker = Tracker::new(Some(10));
        tracker.on_welcome(1);
        assert!(!tracker.accept(&Channel::Trades, Some(1), Some(10)));
        assert!(tracker.accept(&Channel::Trades, Some(2), Some(11)));
        // A restart: seqs start over, ids go on.
        tracker.on_welcome(2);
        assert!(tracker.resume().is_none());
        assert!(!tracker.accept_trade(11));
        assert!(tracker.accept_trade(12));
        assert!(!tracker.accept(&Channel::Trades, Some(1), Some(12)));
        assert!(tracker.accept(&Channel::Trades, Some(2), Some(13)));
        assert_eq!(tracker.last_trade_id(), Some(13));
    }

    #[test]
    fn a_channel_not_recovered_takes_the_next_seq_whatever_it_is() {
        let mut tracker = Tracker::new(None);
        tracker.on_welcome(3);
        assert!(tracker.accept(&Channel::Portfolio, Some(40), None));
        tracker.on_welcome(3);
        assert_eq!(tracker.resume().unwrap().0, 3);
        tracker.on_recovered(&BTreeMap::from([(Channel::Portfolio, false)]));
        // The snapshot after recovered:false repeats the channel's current seq, maybe lower.
        assert!(tracker.accept(&Channel::Portfolio, Some(12), None));
        tracker.forget(&Channel::Portfolio);
        assert!(tracker.resume().is_none());
    }

    #[test]
    fn the_first_start_point_is_kept() {
        let mut tracker = Tracker::new(None);
        tracker.start_trades_after(5);
        tracker.start_trades_after(9);
        assert_eq!(tracker.last_trade_id(), Some(5));
        assert!(tracker.accept_trade(6));
    }
}
