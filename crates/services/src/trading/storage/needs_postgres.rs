//! The one rule for tests that need a real PostgreSQL: without one a test says "skipped" on the
//! real stderr and returns, and under `CI=true` it fails instead (the rule of
//! `scale/needs_redis.rs`, for `POSTGRES_URL`). Each test gets a schema of its own, dropped
//! after it, so tests running in parallel on one database never meet.
//!
//! The services' unit tests use this module; other crates' tests include this same file with
//! `#[path]` (they need the `postgres` crate as a dev-dependency).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The database when `POSTGRES_URL` is unset.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema `t_...` of its own in the test database; dropped (with everything in it) on drop.
#[derive(Debug)]
pub(crate) struct TestSchema {
    base: String,
    name: String,
}

impl TestSchema {
    /// Creates a fresh schema for `test`, or returns `None` after saying why the test is
    /// skipped (which panics under `CI=true`).
    pub(crate) fn create(test: &str) -> Option<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var("POSTGRES_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let name = format!(
            "t_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() % 1_000_000_000_000),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let created = off_runtime(|| {
            admin(&base)
                .and_then(|mut client| client.batch_execute(&format!("CREATE SCHEMA {name}")))
        });
        match created {
            Ok(()) => Some(Self { base, name }),
            Err(err) => {
                skip(
                    test,
                    &format!("PostgreSQL at {base} is not usable: {err}"),
                    "start PostgreSQL or set POSTGRES_URL, e.g. POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test",
                );
                None
            }
        }
    }

    /// The database URL with this schema as the search path (and as the application name, so
    /// a test can find its sessions in `pg_stat_activity`).
    pub(crate) fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-csearch_path%3D{name}&application_name={name}",
            self.base,
            name = self.name
        )
    }

    /// The schema's name.
    #[allow(
        dead_code,
        reason = "not every test binary that includes this file asks"
    )]
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A connection of its own to the schema (to look at tables or break things); for tests
    /// outside a tokio runtime (the sync client runs one of its own).
    #[allow(
        dead_code,
        reason = "not every test binary that includes this file asks"
    )]
    pub(crate) fn client(&self) -> postgres::Client {
        // expect: the schema was created through the same database a moment ago.
        admin(&self.url()).expect("connect to the test schema")
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        off_runtime(|| {
            if let Ok(mut client) = admin(&self.base) {
                let _ =
                    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
            }
        });
    }
}

/// Runs `work` on a thread of its own: async tests call this too, and the sync client must not
/// block a runtime's thread.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        // expect: `work` only returns errors, it does not panic.
        scope
            .spawn(work)
            .join()
            .expect("PostgreSQL test setup panicked")
    })
}

fn admin(url: &str) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    config.connect(postgres::NoTls)
}

/// Says on the real stderr that `test` is skipped (the harness captures `eprintln!` of passing
/// tests); under `CI=true` (or `CI=1`) panics with `fix` instead.
fn skip(test: &str, why: &str, fix: &str) {
    let ci = std::env::var("CI").ok();
    let forbidden = ci
        .as_deref()
        .map(str::trim)
        .is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"));
    assert!(
        !forbidden,
        "{test}: {why}; CI=true does not allow skipping it: {fix}"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why} ({fix})");
}
