//! The tickers one connection watches: one long-lived stream per symbol, polled in turn.
//!
//! Replaces a boxed future, an abort handle and two symbol clones per delivered update with one
//! boxed stream per subscription. A connection watches few symbols (at most `max_subscriptions`),
//! so polling them in turn from a rotating start is cheaper than a `FuturesUnordered` and fair.

use std::future::poll_fn;
use std::task::Poll;

use cryptobot_domain::Symbol;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::watch;

use crate::hub::TickerFrame;

/// The watched symbols of one connection and their update streams.
pub(crate) struct TickerStreams {
    streams: Vec<(Symbol, BoxStream<'static, TickerFrame>)>,
    /// Where the next poll starts, so a busy symbol cannot starve the others.
    start: usize,
}

impl std::fmt::Debug for TickerStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.streams.iter().map(|(symbol, _)| symbol))
            .finish()
    }
}

impl TickerStreams {
    pub(crate) const fn new() -> Self {
        Self {
            streams: Vec::new(),
            start: 0,
        }
    }

    /// Watches `symbol` through `receiver` from its next change on, replacing an earlier watch.
    pub(crate) fn watch(&mut self, symbol: Symbol, receiver: watch::Receiver<Option<TickerFrame>>) {
        self.unwatch(&symbol);
        let updates = futures_util::stream::unfold(receiver, |mut receiver| async move {
            loop {
                // An error means the hub is gone (shutdown): the stream ends.
                receiver.changed().await.ok()?;
                let frame = receiver.borrow_and_update().clone();
                if let Some(frame) = frame {
                    return Some((frame, receiver));
                }
            }
        });
        self.streams.push((symbol, updates.boxed()));
    }

    /// Stops watching `symbol`; nothing more of it is yielded.
    pub(crate) fn unwatch(&mut self, symbol: &Symbol) {
        self.streams.retain(|(watched, _)| watched != symbol);
    }

    /// Waits for the next update of any watched symbol; pending forever while none is watched.
    pub(crate) async fn next(&mut self) -> (Symbol, TickerFrame) {
        poll_fn(|cx| {
            // Every stream is polled until one is ready, so each has its waker registered.
            let mut polled = 0;
            while polled < self.streams.len() {
                let slot = (self.start + polled) % self.streams.len();
                match self.streams[slot].1.poll_next_unpin(cx) {
                    Poll::Ready(Some(frame)) => {
                        self.start = slot + 1;
                        return Poll::Ready((self.streams[slot].0.clone(), frame));
                    }
                    // The hub stopped: forget the stream and scan the others again.
                    Poll::Ready(None) => {
                        drop(self.streams.remove(slot));
                        self.start = slot;
                        polled = 0;
                    }
                    Poll::Pending => polled += 1,
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use actix_web::web::Bytes;

    use super::*;

    fn frame(seq: u64) -> Option<TickerFrame> {
        Some(TickerFrame {
            seq,
            bytes: Bytes::from(format!("{{\"seq\":{seq}}}")),
        })
    }

    fn symbol(text: &str) -> Symbol {
        Symbol::parse(text).unwrap()
    }

    async fn next_now(streams: &mut TickerStreams) -> Option<(Symbol, u64)> {
        tokio::time::timeout(std::time::Duration::from_millis(50), streams.next())
            .await
            .ok()
            .map(|(symbol, frame)| (symbol, frame.seq))
    }

    #[tokio::test]
    async fn yields_the_latest_update_of_each_watched_symbol_and_stops_after_unwatch() {
        let (btc, btc_rx) = watch::channel(None);
        let (eth, eth_rx) = watch::channel(None);
        let mut streams = TickerStreams::new();
        // TC0: nothing watched, nothing changed
        assert_eq!(next_now(&mut streams).await, None);
        streams.watch(symbol("BTCUSDT"), btc_rx);
        streams.watch(symbol("ETHUSDT"), eth_rx);
        assert_eq!(next_now(&mut streams).await, None);
        // TC1: conflation: two sends before a read yield the latest only
        btc.send_replace(frame(1));
        btc.send_replace(frame(2));
        eth.send_replace(frame(7));
        let mut got = vec![
            next_now(&mut streams).await.unwrap(),
            next_now(&mut streams).await.unwrap(),
        ];
        got.sort();
        assert_eq!(got, [(symbol("BTCUSDT"), 2), (symbol("ETHUSDT"), 7)]);
        assert_eq!(next_now(&mut streams).await, None);
        // TC2: unwatch: later updates of that symbol are not yielded
        streams.unwatch(&symbol("BTCUSDT"));
        btc.send_replace(frame(3));
        assert_eq!(next_now(&mut streams).await, None);
        // TC3: a hub that is gone ends its stream without blocking the others
        drop(eth);
        assert_eq!(next_now(&mut streams).await, None);
        assert!(format!("{streams:?}") == "[]");
    }

    #[tokio::test]
    async fn a_busy_symbol_does_not_starve_the_others() {
        let (btc, btc_rx) = watch::channel(None);
        let (eth, eth_rx) = watch::channel(None);
        let mut streams = TickerStreams::new();
        streams.watch(symbol("BTCUSDT"), btc_rx);
        streams.watch(symbol("ETHUSDT"), eth_rx);
        for seq in 1..=3 {
            btc.send_replace(frame(seq));
            eth.send_replace(frame(seq));
            let first = next_now(&mut streams).await.unwrap();
            let second = next_now(&mut streams).await.unwrap();
            assert_ne!(first.0, second.0, "round {seq}: both symbols are served");
        }
    }
}
