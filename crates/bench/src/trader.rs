//! Trades during the window, for the slow-reader scenario (the bench profile has auto-trading
//! off): `POST /api/v1/trades` (docs/api.md) at a bounded rate, each with its own
//! `client_order_id`, over a plain HTTP/1.1 connection per request (no HTTP client dependency).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::scan;

/// Longest wait for one request's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// What the trader did; one thread, so `Cell`s.
#[derive(Debug, Default)]
pub(crate) struct Trades {
    /// Ids of the trades executed (201, or 200 for a replay), in order.
    pub(crate) executed: RefCell<Vec<u64>>,
    /// Requests that got no trade back.
    pub(crate) failed: Cell<u64>,
    /// The first failure, to say why.
    pub(crate) first_error: RefCell<Option<String>>,
    /// Whether the trader has finished (its last request answered or given up).
    pub(crate) done: Cell<bool>,
}

impl Trades {
    fn fail(&self, error: String) {
        self.failed.set(self.failed.get() + 1);
        self.first_error.borrow_mut().get_or_insert(error);
    }
}

/// What to trade.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) target: SocketAddr,
    pub(crate) symbol: String,
    pub(crate) amount: String,
    pub(crate) count: u64,
    pub(crate) per_sec: f64,
    /// Unique per run; each trade appends its number.
    pub(crate) id_prefix: String,
}

/// Buys `plan.count` times at most `plan.per_sec` a second, while `open()` says the window is
/// open; each request waits for its answer before the next.
pub(crate) async fn run(plan: Plan, trades: &Trades, open: impl Fn() -> bool) {
    let period = Duration::from_secs_f64(1.0 / plan.per_sec);
    let mut next = Instant::now();
    for number in 0..plan.count {
        tokio::time::sleep_until(next.into()).await;
        if !open() {
            break;
        }
        next += period;
        let body = format!(
            r#"{{"symbol":"{}","side":"buy","amount":"{}","client_order_id":"{}-{number}"}}"#,
            plan.symbol, plan.amount, plan.id_prefix
        );
        match tokio::time::timeout(REQUEST_TIMEOUT, post(plan.target, "/api/v1/trades", &body))
            .await
        {
            Ok(Ok(response)) => match trade_id(&response) {
                Ok(id) => trades.executed.borrow_mut().push(id),
                Err(error) => trades.fail(error),
            },
            Ok(Err(error)) => trades.fail(error),
            Err(_) => trades.fail("POST /api/v1/trades: no answer within 5 s".to_owned()),
        }
    }
    trades.done.set(true);
}

/// One request on its own connection; returns the whole response.
async fn post(target: SocketAddr, path: &str, body: &str) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {target}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("POST {path}: {e}"))?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("POST {path}: reading the answer: {e}"))?;
    Ok(response)
}

/// The trade id of an answer to `POST /api/v1/trades`: status 201 (or 200, a replay) and a body
/// `{"trade":{"id":N,...},...}`.
fn trade_id(response: &[u8]) -> Result<u64, String> {
    let text = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .chars()
            .take(200)
            .collect::<String>()
    };
    let (status, body) = split_response(response)
        .ok_or_else(|| format!("not an HTTP answer: {}", text(response)))?;
    if status != 200 && status != 201 {
        return Err(format!("POST /api/v1/trades: {status} {}", text(body)));
    }
    scan::first_number_after(body, b"\"trade\":{\"id\":")
        .ok_or_else(|| format!("no trade id in {}", text(body)))
}

/// The status code and the body of an HTTP/1.1 response.
fn split_response(response: &[u8]) -> Option<(u16, &[u8])> {
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status_line = response[..head_end].split(|b| *b == b'\r').next()?;
    let mut parts = status_line.split(|b| *b == b' ');
    if !parts.next()?.starts_with(b"HTTP/1.") {
        return None;
    }
    let status = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((status, &response[head_end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_trade_id_of_an_answer() {
        let created = b"HTTP/1.1 201 Created\r\ncontent-length: 60\r\ncontent-type: application/json\r\n\r\n{\"trade\":{\"id\":17,\"symbol\":\"BTCUSDT\"},\"replayed\":false,\"idempotent\":true}";
        assert_eq!(trade_id(created), Ok(17));
        let replayed = b"HTTP/1.1 200 OK\r\n\r\n{\"trade\":{\"id\":3},\"replayed\":true}";
        assert_eq!(trade_id(replayed), Ok(3));
        // TC1: refusals keep their status and body in the error
        let refused = b"HTTP/1.1 422 Unprocessable Entity\r\n\r\n{\"error\":\"insufficient funds\",\"code\":\"insufficient_funds\"}";
        let err = trade_id(refused).unwrap_err();
        assert!(
            err.contains("422") && err.contains("insufficient_funds"),
            "{err}"
        );
        // TC2: not HTTP, a head that never ends, a 201 without a trade
        assert!(trade_id(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(trade_id(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n").is_err());
        assert!(trade_id(b"HTTP/1.1 201 Created\r\n\r\n{}").is_err());
        assert_eq!(split_response(b"HTTP/1.1 abc\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn posts_each_trade_with_its_own_order_id_and_stops_at_the_count() {
        // A one-connection-per-request HTTP server that answers 201 with an increasing id and
        // records the bodies it got.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for id in 1..=3_u64 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut chunk = [0_u8; 1024];
                while !request.ends_with(b"}") {
                    let n = socket.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "request ended early");
                    request.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8(request).unwrap();
                assert!(
                    text.starts_with("POST /api/v1/trades HTTP/1.1\r\n"),
                    "{text}"
                );
                bodies.push(text.split("\r\n\r\n").nth(1).unwrap().to_owned());
                let body = format!("{{\"trade\":{{\"id\":{id}}},\"replayed\":false}}");
                let answer = format!(
                    "HTTP/1.1 201 Created\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
            bodies
        });
        let plan = Plan {
            target,
            symbol: "ETHUSDT".to_owned(),
            amount: "2.5".to_owned(),
            count: 3,
            per_sec: 1000.0,
            id_prefix: "t".to_owned(),
        };
        let trades = Trades::default();
        run(plan, &trades, || true).await;
        assert!(trades.done.get());
        assert_eq!(*trades.executed.borrow(), [1, 2, 3]);
        assert_eq!(trades.failed.get(), 0);
        let bodies = server.await.unwrap();
        assert_eq!(
            bodies[1],
            r#"{"symbol":"ETHUSDT","side":"buy","amount":"2.5","client_order_id":"t-1"}"#
        );

        // A closed window sends nothing.
        let trades = Trades::default();
        let plan = Plan {
            target,
            symbol: "ETHUSDT".to_owned(),
            amount: "1".to_owned(),
            count: 5,
            per_sec: 1000.0,
            id_prefix: "u".to_owned(),
        };
        run(plan, &trades, || false).await;
        assert!(trades.done.get());
        assert!(trades.executed.borrow().is_empty());
        assert_eq!(trades.failed.get(), 0);
    }
}
