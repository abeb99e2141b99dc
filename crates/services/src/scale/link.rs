use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use crate::Clock;
use crate::backoff::Backoff;

/// First and longest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The backoff of one Redis link, seeded from the clock and the process id, so nodes that lose
/// Redis together (a Redis restart) spread their reconnects instead of retrying in lockstep.
pub(crate) fn backoff(clock: &dyn Clock) -> Backoff {
    let now = u64::try_from(clock.now_us()).unwrap_or(0);
    let seed = now ^ u64::from(std::process::id()).rotate_left(32);
    Backoff::new(BACKOFF_MIN, BACKOFF_MAX, seed)
}

/// The client of `url` for a long-running link, or `None` after logging what this node goes
/// without (`lost`). The server checks `bus.redis_url` at start (`url_problem`), so only an
/// embedder's unchecked settings get here.
pub(crate) fn client(url: &str, lost: &str) -> Option<redis::Client> {
    match redis::Client::open(url) {
        Ok(client) => Some(client),
        Err(err) => {
            tracing::error!(%err, "invalid bus.redis_url; {lost}");
            None
        }
    }
}

/// Opens one connection, retrying after each failure with the next delay of `backoff` until it
/// works (then `backoff` starts over) or `shutdown` fires.
///
/// `response_timeout` must exceed any `BLOCK` used on the connection.
pub(crate) async fn connect(
    client: &redis::Client,
    response_timeout: Duration,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Option<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout));
    loop {
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                backoff.reset();
                return Some(conn);
            }
            Err(err) => tracing::debug!(%err, "redis connect failed; retrying"),
        }
        if !pause(backoff, shutdown).await {
            return None;
        }
    }
}

/// Sleeps the next delay of `backoff` (after a failed command or connection); false when
/// `shutdown` fired meanwhile.
pub(crate) async fn pause(backoff: &mut Backoff, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(backoff.next_delay()) => true,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use cryptobot_domain::fixtures;

    use super::*;
    use crate::ManualClock;

    fn delays(clock: &ManualClock) -> Vec<Duration> {
        let mut backoff = backoff(clock);
        (0..8).map(|_| backoff.next_delay()).collect()
    }

    #[test]
    fn links_started_at_other_times_reconnect_at_other_times() {
        let clock = ManualClock::new(fixtures::instant());
        let first = delays(&clock);
        // TC0: the same start gives the same delays, within the jittered bounds
        assert_eq!(delays(&clock), first);
        assert!(
            first
                .iter()
                .all(|delay| *delay >= BACKOFF_MIN / 2 && *delay <= BACKOFF_MAX)
        );
        // TC1: a node started a microsecond later waits differently (no lockstep)
        clock.advance(TimeDelta::microseconds(1));
        assert_ne!(delays(&clock), first);
    }
}
