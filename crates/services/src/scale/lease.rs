//! The engine's lease on a key prefix: `{prefix}:engine` holds the running engine's token with a
//! time-to-live that the engine keeps renewing. A second engine on the same prefix would replace
//! the first one's streams, so it waits for the lease to lapse and refuses to start if it does not.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{RedisSettings, link};

/// How long a lease lives without renewal; a crashed engine's successor waits at most this long.
pub const ENGINE_LEASE: Duration = Duration::from_secs(10);

/// How often the running engine renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Takes the lease if it is free or already ours, keeping it for another `ttl` milliseconds.
/// Answers 1 when the lease is ours afterwards, 0 when another token holds it.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Deletes the lease only if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// What taking the lease at start found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The lease is ours.
    Held,
    /// Redis did not answer; the engine starts and claims the lease once it is reachable.
    Unreachable(String),
    /// Another engine kept renewing the lease for the whole wait.
    TakenByAnother,
}

fn lease_key(settings: &RedisSettings) -> String {
    format!("{}:engine", settings.prefix)
}

async fn claim(
    conn: &mut redis::aio::MultiplexedConnection,
    settings: &RedisSettings,
    token: u64,
) -> redis::RedisResult<bool> {
    let ttl_ms = u64::try_from(ENGINE_LEASE.as_millis()).unwrap_or(u64::MAX);
    // EVAL rather than `redis::Script`, which needs an extra feature and a SHA-1 dependency.
    let held: i64 = redis::cmd("EVAL")
        .arg(CLAIM)
        .arg(1)
        .arg(lease_key(settings))
        .arg(token)
        .arg(ttl_ms)
        .query_async(conn)
        .await?;
    Ok(held == 1)
}

/// Takes the lease for `token`, waiting up to `wait` for another engine's lease to lapse.
pub async fn acquire_engine_lease(
    settings: &RedisSettings,
    token: u64,
    wait: Duration,
) -> LeaseOutcome {
    let client = match redis::Client::open(settings.url.as_str()) {
        Ok(client) => client,
        Err(err) => return LeaseOutcome::Unreachable(err.to_string()),
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut conn = match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(conn) => conn,
        Err(err) => return LeaseOutcome::Unreachable(err.to_string()),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut announced = false;
    loop {
        match claim(&mut conn, settings, token).await {
            Ok(true) => return LeaseOutcome::Held,
            Ok(false) if tokio::time::Instant::now() >= deadline => {
                return LeaseOutcome::TakenByAnother;
            }
            Ok(false) => {
                if !announced {
                    tracing::warn!(
                        prefix = %settings.prefix,
                        "another engine holds the lease on this prefix; waiting for it to lapse"
                    );
                    announced = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return LeaseOutcome::Unreachable(err.to_string()),
        }
    }
}

/// Renews the lease every couple of seconds until `shutdown`, then releases it. Re-claims it
/// after Redis lost it (a restart); if another engine took it meanwhile, says so loudly.
pub async fn keep_engine_lease(settings: RedisSettings, token: u64, shutdown: CancellationToken) {
    let Ok(client) = redis::Client::open(settings.url.as_str()) else {
        return;
    };
    let mut conflict_reported = false;
    'connect: loop {
        let Some(mut conn) = link::connect(&client, Duration::from_secs(2), &shutdown).await else {
            return;
        };
        loop {
            match claim(&mut conn, &settings, token).await {
                Ok(true) => conflict_reported = false,
                Ok(false) if !conflict_reported => {
                    tracing::error!(
                        prefix = %settings.prefix,
                        "another engine took the lease on this prefix: two engines are publishing; stop one"
                    );
                    conflict_reported = true;
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::debug!(%err, "redis: lease renewal failed; reconnecting");
                    if !link::pause(&shutdown).await {
                        return;
                    }
                    continue 'connect;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    let released: redis::RedisResult<i64> = redis::cmd("EVAL")
                        .arg(RELEASE)
                        .arg(1)
                        .arg(lease_key(&settings))
                        .arg(token)
                        .query_async(&mut conn)
                        .await;
                    if let Err(err) = released {
                        tracing::debug!(%err, "redis: lease not released; it lapses by itself");
                    }
                    return;
                }
                () = tokio::time::sleep(RENEW_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::Channel;

    use super::*;

    /// Needs a real Redis (`REDIS_URL`): one lease per prefix, re-entrant for its holder, released
    /// at shutdown so a successor starts at once.
    #[tokio::test]
    async fn one_engine_holds_a_prefix_and_releases_it_at_shutdown() {
        let Some(url) = crate::scale::redis_url_or_skip(
            "one_engine_holds_a_prefix_and_releases_it_at_shutdown",
        ) else {
            return;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let settings = RedisSettings {
            url,
            prefix: format!("cbtest-lease-{}-{nanos}", std::process::id()),
            stream_len: 10,
            publish_buffer: 10,
            command_timeout: Duration::from_secs(1),
            channels: vec![Channel::Trades],
        };
        // TC0: the first engine takes it; a second is refused once its wait is over
        assert_eq!(
            acquire_engine_lease(&settings, 1, Duration::ZERO).await,
            LeaseOutcome::Held
        );
        assert_eq!(
            acquire_engine_lease(&settings, 2, Duration::from_millis(600)).await,
            LeaseOutcome::TakenByAnother
        );
        // TC1: the holder may claim it again (renewal)
        assert_eq!(
            acquire_engine_lease(&settings, 1, Duration::ZERO).await,
            LeaseOutcome::Held
        );
        // TC2: the keeper renews it while running and releases it at shutdown
        let shutdown = CancellationToken::new();
        let keeper = tokio::spawn(keep_engine_lease(settings.clone(), 1, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            acquire_engine_lease(&settings, 2, Duration::ZERO).await,
            LeaseOutcome::TakenByAnother
        );
        shutdown.cancel();
        keeper.await.expect("keeper ends");
        assert_eq!(
            acquire_engine_lease(&settings, 2, Duration::ZERO).await,
            LeaseOutcome::Held
        );
        // TC3: an unreachable Redis is reported, not fatal
        let nowhere = RedisSettings {
            url: "redis://127.0.0.1:1".to_owned(),
            ..settings.clone()
        };
        assert!(matches!(
            acquire_engine_lease(&nowhere, 3, Duration::ZERO).await,
            LeaseOutcome::Unreachable(_)
        ));
        // Clean up the prefix.
        if let Ok(client) = redis::Client::open(settings.url.as_str())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(lease_key(&settings))
                .query_async(&mut conn)
                .await;
        }
    }
}
