//! Reconnect delays: exponential backoff with jitter (docs/protocol.md, "Client reconnect recipe").

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The delay before the next connection attempt. Starts at `initial`, doubles on every failed
/// attempt up to `max`, and each wait is a random time between half and the whole delay, so that
/// clients cut off together do not reconnect in a herd.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        // A per-process random seed without a dependency: std's hasher keys are random.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(u64::from(std::process::id()));
        Self::with_seed(initial, max, hasher.finish())
    }

    pub(crate) fn with_seed(initial: Duration, max: Duration, seed: u64) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
            rng: seed | 1,
        }
    }

    /// Returns the wait before the next attempt and doubles the delay for the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        // xorshift64: enough for jitter, which needs spread, not secrecy.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = delay / 2;
        let spread = u64::try_from((delay - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(self.rng % spread.saturating_add(1))
    }

    /// Back to the initial delay, once a connection succeeded.
    pub(crate) const fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_between_half_and_whole() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::with_seed(ms(500), ms(30_000), 42);
        let mut nominal = ms(500);
        let mut waits = Vec::new();
        for _ in 0..12 {
            let wait = backoff.next_delay();
            assert!(
                wait >= nominal / 2 && wait <= nominal,
                "{wait:?} for {nominal:?}"
            );
            waits.push(wait);
            nominal = (nominal * 2).min(ms(30_000));
        }
        assert!(waits[11] >= ms(15_000), "capped at 30 s: {waits:?}");
        // TC1: jitter spreads the waits of clients with other seeds.
        let mut other = Backoff::with_seed(ms(500), ms(30_000), 7);
        let others: Vec<_> = (0..12).map(|_| other.next_delay()).collect();
        assert_ne!(waits, others);
        // TC2: a success starts over.
        backoff.reset();
        assert!(backoff.next_delay() <= ms(500));
    }
}
