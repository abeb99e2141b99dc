//! The REST calls the client needs to refill trades (`GET /api/v1/trades`, docs/api.md) and the
//! open orders (`GET /api/v1/orders?status=open`): a minimal HTTP/1.1 GET over the same plain TCP as the WebSocket, one request per connection.

use std::time::Duration;

use cryptobot_domain::{Order, Trade};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{ClientError, ErrorCode};

/// Reads a listing's body as `T` (a macro, as the client does not depend on serde itself).
macro_rules! decode {
    ($t:ty, $path:expr, $body:expr) => {
        serde_json::from_value::<$t>($body)
            .map_err(|err| ClientError::Protocol(format!("GET {}: {err}", $path)))
    };
}

/// Largest response body read: a page of 1000 trades is about 300 KiB.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Most pages one refill follows (1000 trades each), so a broken `Link` cannot loop forever.
const MAX_PAGES: usize = 10_000;

/// Where and how to ask.
#[derive(Debug, Clone)]
pub(crate) struct Rest {
    /// `host:port` of the server.
    pub(crate) authority: String,
    pub(crate) token: Option<String>,
    pub(crate) timeout: Duration,
}

impl Rest {
    /// The id of the newest trade (0 when there is none).
    pub(crate) async fn newest_trade_id(&self) -> Result<u64, ClientError> {
        let path = "/api/v1/trades?limit=1";
        let trades = decode!(Vec<Trade>, path, self.page(path).await?.0)?;
        Ok(trades.first().map_or(0, |trade| trade.id))
    }

    /// Every trade after `after_id`, oldest first, following the `Link` header page by page.
    pub(crate) async fn trades_after(&self, after_id: u64) -> Result<Vec<Trade>, ClientError> {
        let mut path = format!("/api/v1/trades?after_id={after_id}&limit=1000");
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let (trades, next) = self.page(&path).await?;
            all.extend(decode!(Vec<Trade>, path, trades)?);
            match next {
                Some(next) => path = next,
                None => return Ok(all),
            }
        }
        Err(ClientError::Protocol(format!(
            "more than {MAX_PAGES} pages of trades"
        )))
    }

    /// Every open order, oldest first.
    pub(crate) async fn open_orders(&self) -> Result<Vec<Order>, ClientError> {
        let mut path = "/api/v1/orders?status=open&after_id=0&limit=1000".to_owned();
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let (orders, next) = self.page(&path).await?;
            all.extend(decode!(Vec<Order>, path, orders)?);
            match next {
                Some(next) => path = next,
                None => return Ok(all),
            }
        }
        Err(ClientError::Protocol(format!(
            "more than {MAX_PAGES} pages of orders"
        )))
    }

    /// One page of a listing and the path of the next one.
    async fn page(&self, path: &str) -> Result<(Value, Option<String>), ClientError> {
        let response = tokio::time::timeout(self.timeout, self.get(path))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        if response.status != 200 {
            return Err(refusal(response.status, &response.body));
        }
        let items = serde_json::from_slice(&response.body)
            .map_err(|err| ClientError::Protocol(format!("GET {path}: {err}")))?;
        Ok((items, response.next_link))
    }

    async fn get(&self, path: &str) -> Result<Response, ClientError> {
        let io = |err: std::io::Error| ClientError::Connection(format!("GET {path}: {err}"));
        let mut stream = TcpStream::connect(&self.authority).await.map_err(io)?;
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.authority
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        let mut limited = (&mut stream).take(MAX_RESPONSE_BYTES as u64 + 1);
        limited.read_to_end(&mut raw).await.map_err(io)?;
        if raw.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::Protocol(format!(
                "GET {path}: response too large"
            )));
        }
        parse_response(&raw)
            .ok_or_else(|| ClientError::Connection(format!("GET {path}: incomplete response")))
    }
}

/// A refused request as the client's error, with the body's stable code.
pub(crate) fn refusal(status: u16, body: &[u8]) -> ClientError {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    ClientError::Server {
        code: ErrorCode::parse(&text("code").unwrap_or_else(|| format!("http_{status}"))),
        message: text("error").unwrap_or_else(|| format!("HTTP {status}")),
        status: Some(status),
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    next_link: Option<String>,
    body: Vec<u8>,
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut next_link = None;
    let mut chunked = false;
    let mut length = None;
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "link" => next_link = next_of(value),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-length" => length = value.parse::<usize>().ok(),
            _ => {}
        }
    }
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        // A body shorter than announced is a connection cut mid-response.
        body.get(..length.unwrap_or(body.len()))?.to_vec()
    };
    Some(Response {
        status,
        next_link,
        body,
    })
}

/// The target of `rel="next"` in a `Link` header (RFC 8288).
fn next_of(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let rel_next = params
            .split(';')
            .any(|param| param.trim().replace(' ', "") == "rel=\"next\"");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        rel_next.then(|| target.to_owned())
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pages_links_and_cut_responses() {
        // TC0: a page with a next link
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nlink: </api/v1/trades?limit=1&after_id=2>; rel=\"next\"\r\n\r\n[]";
        let page = parse_response(raw).unwrap();
        assert_eq!(page.status, 200);
        assert_eq!(
            page.next_link.as_deref(),
            Some("/api/v1/trades?limit=1&after_id=2")
        );
        // TC1: chunked
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n1\r\n]\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, b"[]");
        // TC2: cut before the announced length, or before the head ends
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n[]").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_none());
        // TC3: a link without rel=next
        assert_eq!(next_of("</x>; rel=\"prev\""), None);
    }

    #[test]
    fn refusals_keep_the_stable_code() {
        let err = refusal(401, br#"{"error":"missing token","code":"unauthorized"}"#);
        assert_eq!(err.code(), Some(&ErrorCode::Unauthorized));
        assert!(err.is_fatal());
        let err = refusal(502, b"<html>");
        assert_eq!(err.code(), Some(&ErrorCode::Other("http_502".into())));
    }
}
