//! A userspace TCP proxy that adds network faults between a node and what it talks to (Redis):
//! one-way delay and emulated loss, changed at runtime through a [`FaultHandle`]. The kernel here
//! lacks `tc netem`, so the fault tests put this in the path instead.
//!
//! The loss model: a TCP proxy cannot drop bytes without corrupting the stream, and the peer's TCP
//! would resend a lost segment anyway. So a "lost" chunk is one held back for a retransmission
//! timeout (uniformly drawn from [`Faults::retransmit`]), with probability [`Faults::loss`] per
//! chunk read. As in TCP, everything behind it waits too (head-of-line blocking): chunks are
//! released in order, each no earlier than the one before it. Delay and loss apply to each
//! direction on its own.
//!
//! Also compiled into `crates/server/tests` through `#[path]`, so both suites share one copy.
//!
//! [`FaultHandle`]: crate::fault_proxy::FaultHandle
//! [`Faults::retransmit`]: crate::fault_proxy::Faults::retransmit
//! [`Faults::loss`]: crate::fault_proxy::Faults::loss

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes read from one side at most before they are passed on.
const CHUNK: usize = 16 * 1024;

/// What the proxy does to every chunk it forwards from now on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Added to every chunk, in each direction (one-way delay).
    pub delay: Duration,
    /// Probability (0 to 1) that a chunk is "lost", i.e. held back for a retransmission.
    pub loss: f64,
    /// Shortest and longest extra hold of a lost chunk.
    pub retransmit: (Duration, Duration),
}

impl Faults {
    /// Pass-through: every chunk forwarded as soon as it is read.
    pub const NONE: Self = Self {
        delay: Duration::ZERO,
        loss: 0.0,
        retransmit: (Duration::ZERO, Duration::ZERO),
    };

    /// `delay` each way, and `loss` of the chunks held back 200 to 600 ms more (the range of a
    /// Linux retransmission timeout on such a link: at least 200 ms, above the round trip).
    #[must_use]
    pub const fn lossy(delay: Duration, loss: f64) -> Self {
        Self {
            delay,
            loss,
            retransmit: (Duration::from_millis(200), Duration::from_millis(600)),
        }
    }
}

/// Changes the faults of a running [`FaultProxy`]; cloneable.
#[derive(Debug, Clone)]
pub struct FaultHandle {
    faults: Arc<Mutex<Faults>>,
}

impl FaultHandle {
    /// Applies `faults` to every chunk read from now on (chunks already read keep their time).
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    fn get(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy: accepts on [`FaultProxy::addr`] and forwards each connection to the upstream
/// address. Stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    handle: FaultHandle,
    shutdown: CancellationToken,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 for any) and forwards to `upstream`, starting in
    /// pass-through. `seed` makes the losses reproducible.
    ///
    /// # Errors
    /// When `listen` cannot be bound.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        seed: u64,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let handle = FaultHandle {
            faults: Arc::new(Mutex::new(Faults::NONE)),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            upstream,
            handle.clone(),
            seed,
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            handle,
            shutdown,
        })
    }

    /// Where the proxy accepts connections.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The handle that changes its faults.
    #[must_use]
    pub fn handle(&self) -> FaultHandle {
        self.handle.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    handle: FaultHandle,
    seed: u64,
    shutdown: CancellationToken,
) {
    let mut connections = 0u64;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        connections += 1;
        let seed = seed ^ connections.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tokio::spawn(connection(
            client,
            upstream,
            handle.clone(),
            seed,
            shutdown.child_token(),
        ));
    }
}

/// Forwards one connection both ways until either side closes or fails (then both are closed,
/// as a broken path would leave them) or the proxy stops.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    handle: FaultHandle,
    seed: u64,
    done: CancellationToken,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(
        client_read,
        server_write,
        handle.clone(),
        Rng(seed | 1),
        done.clone(),
    );
    let down = pump(
        server_read,
        client_write,
        handle,
        Rng(seed.rotate_left(17) | 1),
        done.clone(),
    );
    tokio::join!(up, down);
}

/// A chunk and the earliest time it may be written; `None` data means end of stream.
type Timed = (Instant, Option<Vec<u8>>);

/// One direction: a reader that stamps each chunk with its release time, and a writer that
/// releases them in order at that time. The end of the stream is passed on (a half-close); a
/// failed read or write ends both directions (`done`), as a broken path would.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    handle: FaultHandle,
    mut rng: Rng,
    done: CancellationToken,
) {
    // Unbounded: a test sends little, and a bounded queue would push back on the sender, which a
    // delayed network does not do within its window.
    let (tx, mut rx) = mpsc::unbounded_channel::<Timed>();
    let read = async {
        let mut last_release = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) => {
                    let _ = tx.send((last_release, None));
                    return;
                }
                Err(_) => {
                    done.cancel();
                    return;
                }
                Ok(n) => n,
            };
            let faults = handle.get();
            let mut release = Instant::now() + faults.delay;
            if faults.loss > 0.0 && rng.unit() < faults.loss {
                let (min, max) = faults.retransmit;
                release += min + max.saturating_sub(min).mul_f64(rng.unit());
            }
            // In order: never before the chunk ahead of it.
            last_release = release.max(last_release);
            if tx.send((last_release, Some(buf[..n].to_vec()))).is_err() {
                return;
            }
        }
    };
    let write = async {
        while let Some((release, chunk)) = rx.recv().await {
            tokio::time::sleep_until(release).await;
            let Some(chunk) = chunk else {
                let _ = to.shutdown().await;
                return;
            };
            if to.write_all(&chunk).await.is_err() {
                done.cancel();
                return;
            }
        }
    };
    tokio::select! {
        () = done.cancelled() => {}
        ((), ()) = async { tokio::join!(read, write) } => {}
    }
}

/// xorshift64*: enough randomness for fault injection, seeded for reproducible runs.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        #[allow(clippy::cast_precision_loss, reason = "53 random bits are plenty")]
        let unit = (value >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn proxy(seed: u64) -> FaultProxy {
        let upstream = echo_server().await;
        FaultProxy::start("127.0.0.1:0".parse().unwrap(), upstream, seed)
            .await
            .unwrap()
    }

    /// The time one byte takes there and back through `proxy`.
    async fn round_trip(socket: &mut TcpStream) -> Duration {
        let started = Instant::now();
        socket.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut byte))
            .await
            .expect("the byte comes back")
            .unwrap();
        assert_eq!(&byte, b"x");
        started.elapsed()
    }

    #[tokio::test]
    async fn bytes_arrive_intact_and_in_order_under_delay_and_loss() {
        let proxy = proxy(7).await;
        // Much more loss than the fault tests use, with short holds, so many chunks are held.
        proxy.handle().set(Faults {
            delay: Duration::from_millis(5),
            loss: 0.3,
            retransmit: (Duration::from_millis(1), Duration::from_millis(20)),
        });
        let socket = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut read, mut write) = socket.into_split();
        let sent: Vec<u8> = (0..400_000u32).map(|n| (n * 7 % 251) as u8).collect();
        let to_send = sent.clone();
        let writer = tokio::spawn(async move {
            // Uneven writes, so chunk borders fall anywhere.
            for (n, piece) in to_send.chunks(1_000).enumerate() {
                write.write_all(piece).await.unwrap();
                if n % 37 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            write.shutdown().await.unwrap();
        });
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut received))
            .await
            .expect("everything comes back")
            .unwrap();
        writer.await.unwrap();
        // TC0: every byte, in order, nothing added; and the end of the stream passed through
        assert_eq!(received.len(), sent.len());
        assert!(received == sent, "bytes reordered or corrupted");
    }

    #[tokio::test]
    async fn the_delay_and_the_retransmission_hold_are_applied_and_changed_at_runtime() {
        let proxy = proxy(1).await;
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        // TC0: 150 ms each way: a round trip takes at least 300 ms
        proxy
            .handle()
            .set(Faults::lossy(Duration::from_millis(150), 0.0));
        assert!(round_trip(&mut socket).await >= Duration::from_millis(300));
        // TC1: every chunk lost once, held 250 ms: at least 500 ms there and back
        proxy.handle().set(Faults {
            delay: Duration::ZERO,
            loss: 1.0,
            retransmit: (Duration::from_millis(250), Duration::from_millis(250)),
        });
        assert!(round_trip(&mut socket).await >= Duration::from_millis(500));
        // TC2: back to pass-through, the same connection still carries bytes
        proxy.handle().set(Faults::NONE);
        round_trip(&mut socket).await;
    }

    #[tokio::test]
    async fn the_end_of_either_side_closes_the_other() {
        let proxy = proxy(3).await;
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut socket).await;
        // TC0: the client half-closes: the echo server closes, so the client reads the end
        socket.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest))
            .await
            .expect("the proxy passes the end on")
            .unwrap();
        assert!(rest.is_empty());
        // TC1: a stopped proxy closes its connections
        let mut other = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut other).await;
        drop(proxy);
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), other.read(&mut byte))
            .await
            .expect("closed, not hanging");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[test]
    fn the_loss_rate_is_the_configured_one() {
        let mut rng = Rng(42);
        let lost = (0..100_000).filter(|_| rng.unit() < 0.05).count();
        // TC0: 5 % of 100000 within a wide margin (a broken generator is far off)
        assert!((4_000..6_000).contains(&lost), "{lost}");
    }
}
