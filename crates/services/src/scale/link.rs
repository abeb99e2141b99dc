use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

/// First and longest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Opens one connection, retrying with exponential backoff until it works or `shutdown` fires.
///
/// `response_timeout` must exceed any `BLOCK` used on the connection.
pub(crate) async fn connect(
    client: &redis::Client,
    response_timeout: Duration,
    shutdown: &CancellationToken,
) -> Option<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout));
    let mut pause = BACKOFF_MIN;
    loop {
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => return Some(conn),
            Err(err) => tracing::debug!(%err, "redis connect failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(BACKOFF_MAX);
    }
}

/// Sleeps a short fixed pause after a failed command (the next `connect` backs off further).
pub(crate) async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(BACKOFF_MIN) => true,
    }
}
