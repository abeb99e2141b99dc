//! The engine's lease on a key prefix: `{prefix}:engine` holds the running engine's token with a
//! time-to-live that the engine keeps renewing. A second engine on the same prefix would replace
//! the first one's streams, so it waits for the lease to lapse and refuses to start if it does not.
//!
//! The token names one process run, not the epoch: a successor may continue its predecessor's
//! epoch, and a fence comparing epochs would then let a paused predecessor write again. The
//! liveness mark `{prefix}:engine:alive` holds the epoch, which is what gateways compare.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use super::{RedisSettings, link};
use crate::ServiceError;

/// Default time-to-live of the lease (`bus.lease_ttl_ms`); a crashed engine's successor waits at
/// most this long.
pub const ENGINE_LEASE: Duration = Duration::from_secs(10);

/// Takes the lease if it is free or already ours, keeping it for another `ARGV[2]` ms, and marks
/// the engine's epoch `ARGV[4]` alive for `ARGV[3]` ms (what gateways report in their health;
/// not before the epoch is known, `ARGV[4]` = 0).
/// Answers 1 when the lease is ours afterwards, 0 when another token holds it.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if ARGV[4] ~= '0' then
    redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
  end
  return 1
end
return 0";

/// Deletes the lease and the liveness mark only if they are still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
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

/// This engine's view of its lease, shared by the keeper (which renews it) and everything that
/// writes as the engine (the trading engine before a commit, the command server before it
/// executes, the stream writer): the fence of [`EngineLease::check`].
///
/// The lease is trusted while the last successful renewal was *sent* less than the time-to-live
/// (minus a margin) ago: Redis cannot have let it lapse before that. A process that was paused
/// (SIGSTOP, a frozen VM) wakes up past that point and writes nothing until the keeper has renewed
/// it again, or learnt that another engine took it ([`EngineLease::lost`]; the process then
/// stops). While Redis is unreachable for everyone the lease cannot be taken, so an engine that
/// keeps seeing Redis fail goes on trading (docs/operations.md).
#[derive(Debug)]
pub struct EngineLease {
    token: u64,
    /// The epoch this run publishes (0 until it is decided): the liveness mark's value.
    epoch: AtomicU64,
    ttl: Duration,
    /// Origin of the millisecond stamps below.
    base: Instant,
    /// 1 + ms since `base` at which the last successful claim was sent; 0 = never.
    confirmed: AtomicU64,
    /// 1 + ms since `base` of the last failed claim since that confirmation; 0 = none.
    unreachable: AtomicU64,
    lost: CancellationToken,
}

impl EngineLease {
    /// The lease of the engine run `token` (see [`EngineLease::run_token`]), with time-to-live
    /// `ttl`.
    #[must_use]
    pub fn new(token: u64, ttl: Duration) -> Self {
        Self {
            token,
            epoch: AtomicU64::new(0),
            ttl: ttl.max(Duration::from_millis(100)),
            base: Instant::now(),
            confirmed: AtomicU64::new(0),
            unreachable: AtomicU64::new(0),
            lost: CancellationToken::new(),
        }
    }

    /// A token unique to one process run: its start time in µs (from the injected clock) and
    /// the process id, so two runs started in the same microsecond still differ.
    #[must_use]
    pub fn run_token(now_us: i64, pid: u32) -> u64 {
        u64::try_from(now_us)
            .unwrap_or(0)
            .saturating_mul(1000)
            .saturating_add(u64::from(pid % 1000))
    }

    /// The token stored in Redis while the lease is ours.
    #[must_use]
    pub const fn token(&self) -> u64 {
        self.token
    }

    /// The epoch this run publishes, written into the liveness mark from the next claim on.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, SeqCst);
    }

    /// The epoch of [`EngineLease::set_epoch`] (0 before).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(SeqCst)
    }

    /// The lease's time-to-live.
    #[must_use]
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the keeper renews the lease: five times per time-to-live.
    #[must_use]
    pub fn renew_every(&self) -> Duration {
        self.ttl / 5
    }

    /// Longest one claim may take before it counts as failed.
    fn attempt_timeout(&self) -> Duration {
        self.renew_every()
            .clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// How long the liveness mark lives: two missed renewals and a slow one.
    fn alive_ttl(&self) -> Duration {
        self.renew_every() * 2 + self.attempt_timeout()
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX - 1)
            + 1
    }

    /// A claim sent at `sent_at` succeeded.
    pub(crate) fn confirm(&self, sent_at: Instant) {
        self.confirmed.fetch_max(self.stamp(sent_at), SeqCst);
        self.unreachable.store(0, SeqCst);
    }

    /// A claim failed because Redis did not answer (not because this process was paused).
    pub(crate) fn unreachable(&self, at: Instant) {
        self.unreachable.store(self.stamp(at), SeqCst);
    }

    /// Another engine holds the lease: this process must stop writing for good.
    pub fn lose(&self) {
        self.lost.cancel();
    }

    /// Cancelled once the lease is lost (the server then stops with exit code 3).
    #[must_use]
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// True once another engine took the lease.
    #[must_use]
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Whether this process may commit and publish now (see the type's documentation).
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`] once the lease is lost, and while it is not confirmed.
    pub fn check(&self) -> Result<(), ServiceError> {
        if self.is_lost() {
            return Err(ServiceError::Unavailable(
                "this engine lost its lease to another engine and is stopping; retry with the same client_order_id"
                    .into(),
            ));
        }
        let now = self.stamp(Instant::now());
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX / 4);
        // Room for clock-rate differences and for the commit that follows the check.
        let trusted_for = ttl - ttl / 10;
        let confirmed = self.confirmed.load(SeqCst);
        if confirmed > 0 && now < confirmed.saturating_add(trusted_for) {
            return Ok(());
        }
        let unreachable = self.unreachable.load(SeqCst);
        if unreachable > 0 && now <= unreachable.saturating_add(ttl / 2) {
            return Ok(());
        }
        Err(ServiceError::Unavailable(
            "this engine's lease is not confirmed (the process was paused?); retry with the same client_order_id"
                .into(),
        ))
    }
}

async fn claim(
    conn: &mut MultiplexedConnection,
    settings: &RedisSettings,
    lease: &EngineLease,
) -> redis::RedisResult<bool> {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    // EVAL rather than `redis::Script`, which needs an extra feature and a SHA-1 dependency.
    let held: i64 = redis::cmd("EVAL")
        .arg(CLAIM)
        .arg(2)
        .arg(settings.lease_key())
        .arg(settings.alive_key())
        .arg(lease.token())
        .arg(millis(lease.ttl()))
        .arg(millis(lease.alive_ttl()))
        .arg(lease.epoch())
        .query_async(conn)
        .await?;
    Ok(held == 1)
}

async fn open(
    client: &redis::Client,
    timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Takes the lease, waiting up to `wait` for another engine's lease to lapse.
pub async fn acquire_engine_lease(
    settings: &RedisSettings,
    lease: &EngineLease,
    wait: Duration,
) -> LeaseOutcome {
    let client = match redis::Client::open(settings.url.as_str()) {
        Ok(client) => client,
        Err(err) => return LeaseOutcome::Unreachable(err.to_string()),
    };
    let mut conn = match open(&client, Duration::from_secs(2)).await {
        Ok(conn) => conn,
        Err(err) => {
            lease.unreachable(Instant::now());
            return LeaseOutcome::Unreachable(err.to_string());
        }
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut announced = false;
    loop {
        let sent_at = Instant::now();
        match claim(&mut conn, settings, lease).await {
            Ok(true) => {
                lease.confirm(sent_at);
                return LeaseOutcome::Held;
            }
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
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => {
                lease.unreachable(Instant::now());
                return LeaseOutcome::Unreachable(err.to_string());
            }
        }
    }
}

/// Waits for the lease as a hot standby (`bus.standby`): as long as another engine renews it,
/// and as long as Redis cannot be reached, since a standby that cannot see Redis cannot tell
/// whether the active engine is gone. Returns once the lease is ours; the caller drops the future
/// to give up (a shutdown signal).
pub async fn wait_for_engine_lease(settings: &RedisSettings, lease: &EngineLease) {
    /// Pause between two claims while another engine holds the lease: a takeover comes at most
    /// this long after the lease lapsed.
    const CLAIM_EVERY: Duration = Duration::from_millis(250);
    /// Pause before reconnecting to a Redis that did not answer.
    const RECONNECT_EVERY: Duration = Duration::from_secs(1);
    let mut announced_holder = false;
    let mut announced_unreachable = false;
    loop {
        let conn = match redis::Client::open(settings.url.as_str()) {
            Ok(client) => open(&client, Duration::from_secs(2)).await,
            Err(err) => Err(err),
        };
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(err) => {
                if !announced_unreachable {
                    tracing::warn!(%err, prefix = %settings.prefix, "standby: redis unreachable; not taking over until it answers");
                    announced_unreachable = true;
                }
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
        };
        loop {
            let sent_at = Instant::now();
            match claim(&mut conn, settings, lease).await {
                Ok(true) => {
                    lease.confirm(sent_at);
                    return;
                }
                Ok(false) => {
                    if !announced_holder {
                        tracing::info!(prefix = %settings.prefix, "standby: another engine holds the lease; taking over when it lapses");
                        announced_holder = true;
                    }
                    tokio::time::sleep(CLAIM_EVERY).await;
                }
                Err(err) => {
                    if !announced_unreachable {
                        tracing::warn!(%err, prefix = %settings.prefix, "standby: redis unreachable; not taking over until it answers");
                        announced_unreachable = true;
                    }
                    tokio::time::sleep(RECONNECT_EVERY).await;
                    break;
                }
            }
        }
    }
}

/// The engine's lease keeper: renews the lease five times per time-to-live until the shutdown
/// token is cancelled, then releases it. Re-claims it after Redis lost it (a restart). Finding it
/// held by another engine means this process was replaced: the lease is marked lost
/// ([`EngineLease::lose`]) and the keeper ends.
#[derive(Debug)]
pub struct LeaseKeeper {
    settings: RedisSettings,
    lease: std::sync::Arc<EngineLease>,
    shutdown: CancellationToken,
}

impl LeaseKeeper {
    /// A keeper of `lease` under `settings.prefix`, until `shutdown`.
    #[must_use]
    pub const fn new(
        settings: RedisSettings,
        lease: std::sync::Arc<EngineLease>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            settings,
            lease,
            shutdown,
        }
    }

    /// Runs the keeper on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Keeps the lease until the shutdown token is cancelled or the lease is lost.
    pub async fn run(self) {
        let Self {
            settings,
            lease,
            shutdown,
        } = self;
        let Some(client) = link::client(&settings.url, "the engine lease is not renewed") else {
            return;
        };
        let timeout = lease.attempt_timeout();
        let mut conn: Option<MultiplexedConnection> = None;
        loop {
            let started = Instant::now();
            let attempt = async {
                let conn = match &mut conn {
                    Some(conn) => conn,
                    empty => empty.insert(open(&client, timeout).await?),
                };
                claim(conn, &settings, &lease).await
            };
            let pause = match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(true)) => {
                    lease.confirm(started);
                    lease.renew_every()
                }
                Ok(Ok(false)) => {
                    tracing::error!(
                        prefix = %settings.prefix,
                        "another engine took the lease on this prefix: this engine stops"
                    );
                    lease.lose();
                    return;
                }
                failed => {
                    if let Ok(Err(err)) = failed {
                        tracing::debug!(%err, "redis: lease renewal failed; retrying");
                    }
                    conn = None;
                    // An attempt that took far longer than its timeout means this process was not
                    // running (paused), which says nothing about Redis: no outage is recorded then,
                    // so the fence stays shut until a claim succeeds.
                    if started.elapsed() <= timeout * 2 {
                        lease.unreachable(Instant::now());
                    }
                    lease.renew_every().min(Duration::from_millis(500))
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {
                    if let Some(conn) = &mut conn {
                        let released: redis::RedisResult<i64> = redis::cmd("EVAL")
                            .arg(RELEASE)
                            .arg(2)
                            .arg(settings.lease_key())
                            .arg(settings.alive_key())
                            .arg(lease.token())
                            .query_async(conn)
                            .await;
                        if let Err(err) = released {
                            tracing::debug!(%err, "redis: lease not released; it lapses by itself");
                        }
                    }
                    return;
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cryptobot_domain::Channel;

    use super::*;

    #[test]
    fn the_fence_opens_on_a_confirmation_and_shuts_when_it_grows_old_or_is_lost() {
        // TC0: never confirmed
        let lease = EngineLease::new(1, Duration::from_secs(5));
        assert!(lease.check().is_err());
        // TC1: confirmed just now
        lease.confirm(Instant::now());
        assert_eq!(lease.check(), Ok(()));
        // TC2: a confirmation older than the time-to-live (a paused process) does not count
        let short = EngineLease::new(2, Duration::from_millis(200));
        short.confirm(Instant::now());
        std::thread::sleep(Duration::from_millis(250));
        let err = short.check().unwrap_err();
        assert!(err.to_string().contains("not confirmed"), "{err}");
        // TC3: while the keeper keeps seeing Redis fail, the engine goes on (an outage)
        short.unreachable(Instant::now());
        assert_eq!(short.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(150));
        assert!(short.check().is_err(), "the keeper stopped reporting");
        // TC4: lost is final, whatever was confirmed
        lease.lose();
        let err = lease.check().unwrap_err();
        assert!(err.to_string().contains("lost its lease"), "{err}");
        assert!(lease.lost().is_cancelled());
        lease.confirm(Instant::now());
        assert!(lease.check().is_err());
    }

    fn settings(url: String) -> RedisSettings {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        RedisSettings {
            url,
            prefix: format!("cbtest-lease-{}-{nanos}", std::process::id()),
            stream_len: 10,
            publish_buffer: 10,
            command_timeout: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(2),
            read_timeout: Duration::from_millis(750),
            channels: vec![Channel::Trades],
        }
    }

    async fn cleanup(settings: &RedisSettings) {
        if let Ok(client) = redis::Client::open(settings.url.as_str())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(settings.lease_key())
                .arg(settings.alive_key())
                .query_async(&mut conn)
                .await;
        }
    }

    /// Needs a real Redis (`REDIS_URL`): one lease per prefix, re-entrant for its holder, released
    /// at shutdown so a successor starts at once.
    #[tokio::test]
    async fn one_engine_holds_a_prefix_and_releases_it_at_shutdown() {
        let Some(url) = crate::scale::redis_url_or_skip(
            "one_engine_holds_a_prefix_and_releases_it_at_shutdown",
        ) else {
            return;
        };
        let settings = settings(url);
        let ttl = settings.lease_ttl;
        let first = Arc::new(EngineLease::new(1, ttl));
        let second = EngineLease::new(2, ttl);
        // TC0: the first engine takes it; a second is refused once its wait is over
        assert_eq!(
            acquire_engine_lease(&settings, &first, Duration::ZERO).await,
            LeaseOutcome::Held
        );
        assert_eq!(first.check(), Ok(()));
        assert_eq!(
            acquire_engine_lease(&settings, &second, Duration::from_millis(600)).await,
            LeaseOutcome::TakenByAnother
        );
        assert!(second.check().is_err(), "the refused engine may not write");
        // TC1: the holder may claim it again (renewal)
        assert_eq!(
            acquire_engine_lease(&settings, &first, Duration::ZERO).await,
            LeaseOutcome::Held
        );
        // TC2: the keeper renews it while running and releases it at shutdown
        let shutdown = CancellationToken::new();
        let keeper =
            LeaseKeeper::new(settings.clone(), Arc::clone(&first), shutdown.clone()).spawn();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            acquire_engine_lease(&settings, &second, Duration::ZERO).await,
            LeaseOutcome::TakenByAnother
        );
        shutdown.cancel();
        keeper.await.expect("keeper ends");
        assert!(!first.is_lost());
        assert_eq!(
            acquire_engine_lease(&settings, &second, Duration::ZERO).await,
            LeaseOutcome::Held
        );
        // TC3: an unreachable Redis is reported, not fatal
        let nowhere = RedisSettings {
            url: "redis://127.0.0.1:1".to_owned(),
            ..settings.clone()
        };
        assert!(matches!(
            acquire_engine_lease(&nowhere, &EngineLease::new(3, ttl), Duration::ZERO).await,
            LeaseOutcome::Unreachable(_)
        ));
        cleanup(&settings).await;
    }

    /// Needs a real Redis (`REDIS_URL`): the lease holds the run token and the liveness mark the
    /// epoch, written only once the epoch is decided.
    #[tokio::test]
    async fn the_lease_holds_the_run_token_and_the_liveness_mark_the_epoch() {
        let Some(url) = crate::scale::redis_url_or_skip(
            "the_lease_holds_the_run_token_and_the_liveness_mark_the_epoch",
        ) else {
            return;
        };
        let settings = settings(url);
        let lease = EngineLease::new(
            EngineLease::run_token(1_700_000_000_000_000, 4321),
            settings.lease_ttl,
        );
        assert_eq!(lease.token(), 1_700_000_000_000_000_321);
        let client = redis::Client::open(settings.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let read = |conn: &mut MultiplexedConnection| {
            let mut conn = conn.clone();
            let keys = (settings.lease_key(), settings.alive_key());
            async move {
                let values: (Option<u64>, Option<u64>) = redis::pipe()
                    .get(keys.0)
                    .get(keys.1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                values
            }
        };
        // TC0: before the epoch is decided: the lease, no liveness mark
        assert_eq!(
            acquire_engine_lease(&settings, &lease, Duration::ZERO).await,
            LeaseOutcome::Held
        );
        assert_eq!(read(&mut conn).await, (Some(lease.token()), None));
        // TC1: once decided, the next claim marks the epoch alive; the lease keeps the token
        lease.set_epoch(7);
        assert_eq!(
            acquire_engine_lease(&settings, &lease, Duration::ZERO).await,
            LeaseOutcome::Held
        );
        assert_eq!(read(&mut conn).await, (Some(lease.token()), Some(7)));
        // TC2: another run continuing epoch 7 is still another token: refused while ours holds
        let successor = EngineLease::new(
            EngineLease::run_token(1_700_000_000_000_001, 4321),
            settings.lease_ttl,
        );
        successor.set_epoch(7);
        assert_eq!(
            acquire_engine_lease(&settings, &successor, Duration::ZERO).await,
            LeaseOutcome::TakenByAnother
        );
        cleanup(&settings).await;
    }

    /// Needs a real Redis (`REDIS_URL`): a keeper that finds its lease held by another token
    /// marks it lost at its next renewal, and the fence shuts for good.
    #[tokio::test]
    async fn a_keeper_whose_lease_was_taken_marks_it_lost() {
        let Some(url) =
            crate::scale::redis_url_or_skip("a_keeper_whose_lease_was_taken_marks_it_lost")
        else {
            return;
        };
        let settings = settings(url);
        let lease = Arc::new(EngineLease::new(1, settings.lease_ttl));
        assert_eq!(
            acquire_engine_lease(&settings, &lease, Duration::ZERO).await,
            LeaseOutcome::Held
        );
        let shutdown = CancellationToken::new();
        let keeper =
            LeaseKeeper::new(settings.clone(), Arc::clone(&lease), shutdown.clone()).spawn();
        // Another engine's token replaces ours (as after our lease lapsed during a pause).
        let client = redis::Client::open(settings.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg(settings.lease_key())
            .arg(2)
            .query_async(&mut conn)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), lease.lost().cancelled())
            .await
            .expect("the keeper notices within a renewal");
        keeper.await.expect("keeper ends by itself");
        assert!(lease.check().is_err());
        // The other engine's lease is left alone.
        let holder: Option<u64> = redis::cmd("GET")
            .arg(settings.lease_key())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(holder, Some(2));
        shutdown.cancel();
        cleanup(&settings).await;
    }
}
