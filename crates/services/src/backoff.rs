//! Reconnect delays: exponential backoff with "equal jitter", the one backoff of every
//! reconnecting client here (the Binance feed, the Redis links). The randomness is a seeded
//! generator the caller seeds, so tests get exact delays and no `rand` dependency is needed.

use std::time::Duration;

/// Delay before the next reconnect attempt: `min * 2^attempt`, capped at `max`, of which the
/// first half is fixed and the second half random, so many clients (gateway nodes after a Redis
/// restart, feeds after an exchange outage) do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff between `min` and `max` (a `max` below `min` counts as `min`), its jitter drawn
    /// from a generator seeded with `seed`: the same seed gives the same delays.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
            rng: SplitMix64(seed),
        }
    }

    /// Returns the next delay and counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1_u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            self.rng.next() % (spread + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// Starts over from `min`, after a connection that worked.
    pub const fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The SplitMix64 generator: tiny, fast and good enough for jitter.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    const fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jittered_bounds_and_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 7);
        // Ceilings: 100, 200, 400, 800, 1600, then capped at 2000 ms.
        for ceiling_ms in [100, 200, 400, 800, 1600, 2000, 2000, 2000] {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} not within [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        // TC1: a reset starts over
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn delays_are_half_fixed_half_drawn_from_the_seeded_generator() {
        let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(2), 42);
        let mut rng = SplitMix64(42);
        // TC0: every delay is 1 s plus the next draw modulo the 1 s (+1 µs) of spread
        for _ in 0..4 {
            let expected = Duration::from_secs(1) + Duration::from_micros(rng.next() % 1_000_001);
            assert_eq!(backoff.next_delay(), expected);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_different_seeds_differ() {
        let delays = |seed| {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), seed);
            (0..6).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(1), delays(1));
        assert_ne!(delays(1), delays(2));
    }

    #[test]
    fn many_attempts_neither_overflow_nor_exceed_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 0);
        for _ in 0..200 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
        // TC1: zero delays stay zero
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO, 0);
        assert_eq!(zero.next_delay(), Duration::ZERO);
    }
}
