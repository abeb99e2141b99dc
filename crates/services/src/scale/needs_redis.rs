//! The one rule for tests that need a real Redis (or `redis-server` on `PATH`): without it a test
//! says "skipped" on the real stderr and returns, and under `CI=true` it fails instead, so CI
//! cannot go green without running it.
//!
//! The services' unit tests use this module; the server's scale-out tests include this same file
//! with `#[path]` (a test binary cannot reach `#[cfg(test)]` items of another crate, and the rule
//! is no part of the services' API).

/// `REDIS_URL` for `test`, or `None` after [`skip`] (which panics under `CI=true`).
pub(crate) fn redis_url_or_skip(test: &str) -> Option<String> {
    let url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty());
    if url.is_none() {
        skip(
            test,
            "REDIS_URL not set",
            "set REDIS_URL to a running Redis, e.g. REDIS_URL=redis://127.0.0.1:6379",
        );
    }
    url
}

/// Skips `test` for the reason `why`: says so on the real stderr (the harness captures
/// `eprintln!` of passing tests, and a skip must never be silent). Under `CI=true` it panics
/// with `fix` instead.
///
/// # Panics
/// Under `CI=true`, always.
pub(crate) fn skip(test: &str, why: &str, fix: &str) {
    assert!(
        !running_in_ci(),
        "{test}: {why}; CI=true does not allow skipping it: {fix}"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why} ({fix})");
}

/// True under `CI=true` (or `CI=1`), which CI runners and `.ci/run` set.
fn running_in_ci() -> bool {
    forbids_skipping(std::env::var("CI").ok().as_deref())
}

/// Whether the value of `CI` makes a skip a failure.
fn forbids_skipping(ci: Option<&str>) -> bool {
    ci.map(str::trim)
        .is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_true_ci_variable_forbids_skipping() {
        let cases = [
            // TC0: a developer's machine
            (None, false),
            // TC1: GitHub Actions and .ci/run
            (Some("true"), true),
            // TC2: other runners' spellings
            (Some("1"), true),
            (Some("TRUE "), true),
            // TC3: explicitly off, or empty
            (Some("false"), false),
            (Some("0"), false),
            (Some(""), false),
        ];
        for (ci, expected) in cases {
            assert_eq!(forbids_skipping(ci), expected, "CI={ci:?}");
        }
    }
}
