//! What the process tests (scale_out, takeover, faults) share: unique key prefixes and their
//! cleanup, the real stderr for measurements, and reading and writing WebSocket frames. Each test
//! file defines its own `GUARD`, the longest wait for a frame.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::GUARD;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Writes a line to the real stderr: the harness captures `eprintln!` of passing tests, and what
/// a test measured (or why it skipped) must show in CI's log.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A name no other test run uses: the key prefix of one test.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("cbtest-{name}-{}-{nanos}", std::process::id())
}

/// Deletes every key of a test's prefix when dropped.
pub struct Keys {
    pub url: String,
    pub prefix: String,
}

impl Drop for Keys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
    }
}

/// The next text frame as JSON; panics on a close or after `GUARD`.
pub async fn next_frame(socket: &mut Socket) -> Value {
    let wait = async {
        while let Some(frame) = socket.next().await {
            match frame.expect("frame") {
                Message::Text(text) => {
                    return serde_json::from_str::<Value>(&text).expect("frames are JSON");
                }
                Message::Close(close) => panic!("socket closed: {close:?}"),
                _ => {}
            }
        }
        panic!("socket closed");
    };
    tokio::time::timeout(GUARD, wait)
        .await
        .expect("a frame in time")
}

/// The next frame of type `kind`, skipping others.
pub async fn next_of_type(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = next_frame(socket).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// Sends one JSON text frame.
pub async fn send(socket: &mut Socket, message: &Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
}
