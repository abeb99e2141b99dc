//! Per-client-address request rates: connection attempts at the upgrade and REST requests.
//!
//! A generic cell rate algorithm (GCRA): per address only the theoretical arrival time of the next
//! request is kept, so a key is one `Instant` and an idle key can be forgotten. IPv6 addresses are
//! keyed by their /64 prefix, the block one subscriber usually holds, so one host cannot spread its
//! attempts over addresses. The table is bounded; see [`IpRateLimiter::check_at`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Addresses tracked at most; beyond this, new addresses are refused until idle ones expire.
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// How often a full table is swept for expired entries, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Limits the rate of requests per client address: `rate` per second with bursts of `burst`.
#[derive(Debug)]
pub struct IpRateLimiter {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of `now` the theoretical arrival time may run: `(burst - 1) * interval`.
    tolerance: Duration,
    state: Mutex<Table>,
    capacity: usize,
}

#[derive(Debug)]
struct Table {
    /// Theoretical arrival time of the next request, per key.
    next: HashMap<IpKey, Instant>,
    last_sweep: Option<Instant>,
}

/// An IPv4 address, or the /64 prefix of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpKey {
    V4(u32),
    V6Prefix(u64),
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl IpRateLimiter {
    /// A limiter allowing `per_sec` requests per second per address with bursts of `burst`
    /// (at least 1); `None` when `per_sec` is 0, which means unlimited.
    pub fn new(per_sec: u32, burst: u32) -> Option<Self> {
        Self::with_capacity(per_sec, burst, MAX_TRACKED_ADDRESSES)
    }

    fn with_capacity(per_sec: u32, burst: u32, capacity: usize) -> Option<Self> {
        if per_sec == 0 {
            return None;
        }
        let interval = Duration::from_secs(1) / per_sec;
        Some(Self {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            state: Mutex::new(Table {
                next: HashMap::new(),
                last_sweep: None,
            }),
            capacity,
        })
    }

    /// Counts one request from `ip` now; `Err(retry_after)` when it is over the rate.
    ///
    /// # Errors
    /// The time after which a request from this address would be allowed again.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    /// Like [`IpRateLimiter::check`], and tells what is left of the address's budget (the
    /// `RateLimit-*` headers of REST answers).
    ///
    /// # Errors
    /// The time after which a request from this address would be allowed again.
    pub fn check_quota(&self, ip: IpAddr) -> Result<Quota, Duration> {
        self.check_quota_at(ip, Instant::now())
    }

    /// [`IpRateLimiter::check_quota`] at `now`.
    ///
    /// # Errors
    /// The time after which a request from this address would be allowed again.
    pub fn check_quota_at(&self, ip: IpAddr, now: Instant) -> Result<Quota, Duration> {
        self.check_at(ip, now)?;
        let next = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next
            .get(&IpKey::from(ip))
            .copied()
            .unwrap_or(now);
        // The arrival time runs `ahead` of now; each interval of room left under the tolerance
        // is one more request allowed at once, and the whole burst is back once `now` reaches it.
        let ahead = next.saturating_duration_since(now);
        let room = (self.tolerance + self.interval).saturating_sub(ahead);
        let remaining =
            u32::try_from(room.as_nanos() / self.interval.as_nanos().max(1)).unwrap_or(u32::MAX);
        Ok(Quota {
            limit: self.burst(),
            remaining,
            reset: ahead,
        })
    }

    /// Requests allowed at once by an address that was idle.
    #[must_use]
    pub fn burst(&self) -> u32 {
        u32::try_from(self.tolerance.as_nanos() / self.interval.as_nanos().max(1) + 1)
            .unwrap_or(u32::MAX)
    }

    /// Counts one request from `ip` at `now`. A refused request does not count, so a client that
    /// keeps retrying too fast is let in again as soon as it honours `Retry-After`. When the table
    /// holds [`MAX_TRACKED_ADDRESSES`] addresses that are all still limited, a new address is
    /// refused for a second rather than letting memory grow: an attacker with that many addresses
    /// can delay newcomers, never evict a known client's state.
    ///
    /// # Errors
    /// The time after which a request from this address would be allowed again.
    pub fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = IpKey::from(ip);
        // A poisoned lock only means another thread panicked mid-update; the table stays usable.
        let mut table = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A known address: one lookup, which is every request but an address's first.
        if let Some(next) = table.next.get_mut(&key) {
            let current = (*next).max(now);
            let ahead = current.saturating_duration_since(now);
            if ahead > self.tolerance {
                return Err(ahead - self.tolerance);
            }
            *next = current + self.interval;
            return Ok(());
        }
        if table.next.len() >= self.capacity {
            let due = table
                .last_sweep
                .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_EVERY);
            if due {
                // An entry whose arrival time has passed is as good as absent.
                table.next.retain(|_, next| *next > now);
                table.last_sweep = Some(now);
            }
            if table.next.len() >= self.capacity {
                return Err(SWEEP_EVERY);
            }
        }
        // A new address starts with its whole burst: the first request always passes.
        table.next.insert(key, now + self.interval);
        Ok(())
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next
            .len()
    }
}

/// What is left of one address's budget after an allowed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed at once by an idle address (the burst).
    pub limit: u32,
    /// Requests this address may still send right now.
    pub remaining: u32,
    /// Time until the whole burst is available again.
    pub reset: Duration,
}

/// `Retry-After` header value in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn allows_the_burst_then_the_rate_and_tells_how_long_to_wait() {
        let limiter = IpRateLimiter::new(2, 3).unwrap();
        let start = Instant::now();
        let a = ip("10.0.0.1");
        // TC0: a burst of 3 passes, the 4th waits half a second (one interval at 2/s)
        for n in 0..3 {
            assert_eq!(limiter.check_at(a, start), Ok(()), "request {n}");
        }
        assert_eq!(limiter.check_at(a, start), Err(Duration::from_millis(500)));
        // TC1: another address has its own budget
        assert_eq!(limiter.check_at(ip("10.0.0.2"), start), Ok(()));
        // TC2: refused requests do not count: after the wait, one more passes
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.check_at(a, later), Ok(()));
        assert!(limiter.check_at(a, later).is_err());
        // TC3: after a long pause the whole burst is back
        let much_later = start + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(limiter.check_at(a, much_later), Ok(()));
        }
        assert!(limiter.check_at(a, much_later).is_err());
    }

    #[test]
    fn quota_counts_down_the_burst_and_refills_at_the_rate() {
        let limiter = IpRateLimiter::new(2, 3).unwrap();
        let start = Instant::now();
        let a = ip("10.0.0.1");
        let quota = |now| limiter.check_quota_at(a, now);
        // TC0: the burst counts down; the reset is when all of it is back
        assert_eq!(
            quota(start),
            Ok(Quota {
                limit: 3,
                remaining: 2,
                reset: Duration::from_millis(500)
            })
        );
        assert_eq!(quota(start).map(|q| q.remaining), Ok(1));
        let last = quota(start).unwrap();
        assert_eq!(
            (last.remaining, last.reset),
            (0, Duration::from_millis(1500))
        );
        // TC1: over the budget: refused with the wait
        assert_eq!(quota(start), Err(Duration::from_millis(500)));
        // TC2: half a second later one request is back, and is used now
        let later = start + Duration::from_millis(500);
        assert_eq!(quota(later).map(|q| q.remaining), Ok(0));
        // TC3: idle long enough: the whole burst again
        let idle = start + Duration::from_secs(10);
        assert_eq!(quota(idle).map(|q| q.remaining), Ok(2));
    }

    #[test]
    fn keys_ipv6_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let limiter = IpRateLimiter::new(1, 1).unwrap();
        let now = Instant::now();
        // TC0: two addresses in one /64 share a budget
        assert_eq!(limiter.check_at(ip("2001:db8::1"), now), Ok(()));
        assert!(limiter.check_at(ip("2001:db8::ffff:2"), now).is_err());
        // TC1: another /64 does not
        assert_eq!(limiter.check_at(ip("2001:db8:0:1::1"), now), Ok(()));
        // TC2: ::ffff:a.b.c.d is a.b.c.d
        assert_eq!(limiter.check_at(ip("192.0.2.7"), now), Ok(()));
        assert!(limiter.check_at(ip("::ffff:192.0.2.7"), now).is_err());
    }

    #[test]
    fn a_full_table_refuses_newcomers_until_entries_expire() {
        let limiter = IpRateLimiter::with_capacity(1, 1, 2).unwrap();
        let now = Instant::now();
        assert_eq!(limiter.check_at(ip("10.0.0.1"), now), Ok(()));
        assert_eq!(limiter.check_at(ip("10.0.0.2"), now), Ok(()));
        // TC0: full, nothing expired
        assert_eq!(
            limiter.check_at(ip("10.0.0.3"), now),
            Err(Duration::from_secs(1))
        );
        // TC1: a known address is still served
        assert_eq!(
            limiter.check_at(ip("10.0.0.1"), now + Duration::from_millis(999)),
            Err(Duration::from_millis(1))
        );
        // TC2: once entries expire the sweep frees room; the table never exceeds its capacity
        let later = now + Duration::from_secs(2);
        assert_eq!(limiter.check_at(ip("10.0.0.3"), later), Ok(()));
        assert!(limiter.tracked() <= 2);
    }

    #[test]
    fn zero_rate_means_unlimited_and_retry_after_rounds_up() {
        assert!(IpRateLimiter::new(0, 10).is_none());
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2_001)), 3);
    }
}
