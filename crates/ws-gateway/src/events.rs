//! The never-dropped events one connection receives, as one long-lived stream.
//!
//! A fresh `broadcast::Receiver::recv` future per loop turn queues a waiter on the channel's
//! shared list and takes it off again when another branch wins: two locks of a mutex that every
//! connection shares, on every delivered ticker. Kept alive across turns, the waiter stays queued
//! until an event arrives. And the receiver is polled only when it woke: a turn started by a
//! ticker or an inbound frame does not touch the channel's lock at all.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::stream::{BoxStream, StreamExt};
use futures_util::task::AtomicWaker;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::hub::EventFrame;

/// The event receiver of one connection, or none (echo mode, or the hub stopped).
pub(crate) struct EventStream {
    inner: Option<BoxStream<'static, Result<Arc<EventFrame>, RecvError>>>,
    /// Set when the receiver woke (or yielded and may have more); the stream is polled only then.
    woken: Arc<Woken>,
    /// `woken` as the waker the receiver registers.
    waker: Waker,
}

/// The receiver's waker: records the wake-up, then wakes the connection's task.
#[derive(Debug)]
struct Woken {
    flag: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("open", &self.inner.is_some())
            .finish()
    }
}

impl EventStream {
    /// Streams what `receiver` receives; without one, `next` waits forever.
    pub(crate) fn new(receiver: Option<broadcast::Receiver<Arc<EventFrame>>>) -> Self {
        let inner = receiver.map(|receiver| {
            futures_util::stream::unfold(receiver, |mut receiver| async move {
                let item = receiver.recv().await;
                Some((item, receiver))
            })
            .boxed()
        });
        // Set at first, so the first poll queues the receiver's waiter.
        let woken = Arc::new(Woken {
            flag: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&woken));
        Self {
            inner,
            woken,
            waker,
        }
    }

    /// The next event, `Lagged` or `Closed` exactly as the receiver reports them; pending forever
    /// once closed. Cancel-safe: an event is never lost when another `select!` branch wins.
    pub(crate) async fn next(&mut self) -> Result<Arc<EventFrame>, RecvError> {
        poll_fn(|cx| {
            let Some(stream) = self.inner.as_mut() else {
                return Poll::Pending;
            };
            // Registered before the flag is read, so a wake-up in between is never missed.
            self.woken.task.register(cx.waker());
            if !self.woken.flag.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            match stream.poll_next_unpin(&mut Context::from_waker(&self.waker)) {
                Poll::Ready(Some(item)) => {
                    // More may be queued without another wake-up: poll again next time.
                    self.woken.flag.store(true, Ordering::Release);
                    Poll::Ready(item)
                }
                // `unfold` above never ends by itself; pending means the waiter is queued.
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Drops the receiver (the hub stopped): `next` waits forever from now on.
    pub(crate) fn close(&mut self) {
        self.inner = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::web::Bytes;
    use cryptobot_domain::Channel;

    use super::*;

    fn frame(seq: u64) -> Arc<EventFrame> {
        Arc::new(EventFrame {
            channel: Channel::Trades,
            seq,
            snapshot: false,
            bytes: Bytes::from(format!("{{\"seq\":{seq}}}")),
        })
    }

    async fn next_now(events: &mut EventStream) -> Option<Result<u64, RecvError>> {
        tokio::time::timeout(Duration::from_millis(50), events.next())
            .await
            .ok()
            .map(|item| item.map(|frame| frame.seq))
    }

    #[tokio::test]
    async fn yields_every_event_in_order_across_cancelled_waits_then_lag_and_close() {
        let (sender, receiver) = broadcast::channel(2);
        let mut events = EventStream::new(Some(receiver));
        // TC0: nothing sent: nothing yielded (the wait is cancelled by the timeout)
        assert_eq!(next_now(&mut events).await, None);
        // TC1: events sent after a cancelled wait are all yielded, in order
        sender.send(frame(1)).unwrap();
        sender.send(frame(2)).unwrap();
        assert_eq!(next_now(&mut events).await, Some(Ok(1)));
        assert_eq!(next_now(&mut events).await, Some(Ok(2)));
        assert_eq!(next_now(&mut events).await, None);
        // TC2: more than the capacity unread: Lagged, as the receiver reports it
        for seq in 3..=6 {
            sender.send(frame(seq)).unwrap();
        }
        assert_eq!(next_now(&mut events).await, Some(Err(RecvError::Lagged(2))));
        assert_eq!(next_now(&mut events).await, Some(Ok(5)));
        assert_eq!(next_now(&mut events).await, Some(Ok(6)));
        // TC3: the sender gone: Closed; after close() nothing more, without a panic
        drop(sender);
        assert_eq!(next_now(&mut events).await, Some(Err(RecvError::Closed)));
        events.close();
        assert_eq!(next_now(&mut events).await, None);
        assert_eq!(format!("{events:?}"), "EventStream { open: false }");
    }

    #[tokio::test]
    async fn without_a_receiver_waits_forever() {
        let mut events = EventStream::new(None);
        assert_eq!(next_now(&mut events).await, None);
    }
}
