//! The gateway's own connection handling (framing, fragment reassembly, size and rate limits,
//! ping/pong, close handshake, heartbeat, shutdown) with an echo behaviour, for WebSocket
//! conformance suites such as Autobahn's fuzzingclient.
//!
//! Run: `cargo run -p cryptobot-ws-gateway --example echo -- 9001`, then point the suite at
//! `ws://127.0.0.1:9001/`. Text and binary messages are echoed unchanged (binary is allowed here
//! only). The size limit is raised to 16 MiB and the rate limit is off, as the suite needs.

use actix_web::{App, HttpServer};
use cryptobot_ws_gateway::{Gateway, GatewayConfig};
use tokio_util::sync::CancellationToken;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(9001);
    let shutdown = CancellationToken::new();
    let gateway = Gateway::echo(
        GatewayConfig {
            path: "/".to_owned(),
            max_message_bytes: 16 * 1024 * 1024,
            max_messages_per_sec: 0,
            allowed_origins: vec!["*".to_owned()],
            ..GatewayConfig::default()
        },
        shutdown.clone(),
    );
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal_token.cancel();
    });
    let app_gateway = gateway.clone();
    let server = HttpServer::new(move || {
        let gateway = app_gateway.clone();
        App::new().configure(move |cfg| gateway.configure(cfg))
    })
    .on_connect(gateway.on_connect())
    .disable_signals()
    .shutdown_signal(shutdown.clone().cancelled_owned())
    .shutdown_timeout(2)
    .bind(("127.0.0.1", port))?;
    for addr in server.addrs() {
        println!("echo server on ws://{addr}/");
    }
    server.run().await?;
    gateway.closed().await;
    Ok(())
}
