//! The per-address limiter of cryptobot-access against governor's keyed limiters (its
//! `hashmap` and `dashmap` stores), on the same keys and rates, in one run.
//!
//! The rate is high enough that every request is allowed: what is measured is the cost of one
//! check, the part that runs on every REST request and every upgrade.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use cryptobot_access::IpRateLimiter;
use governor::{Quota, RateLimiter};

const RATE: u32 = 1_000_000_000;

fn addresses(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

fn quota() -> Quota {
    let n = NonZeroU32::new(RATE).expect("non-zero");
    Quota::per_second(n).allow_burst(n)
}

/// Runs `check` over `keys` round robin, `per_thread` times on each of `threads` threads at once.
fn contended(threads: usize, per_thread: u64, keys: &Arc<Vec<IpAddr>>, check: Arc<dyn Fn(IpAddr) + Send + Sync>) -> Duration {
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let keys = Arc::clone(keys);
            let check = Arc::clone(&check);
            std::thread::spawn(move || {
                let offset = t * keys.len() / threads;
                for i in 0..per_thread {
                    check(keys[(offset + i as usize) % keys.len()]);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    start.elapsed()
}

fn limiters(c: &mut Criterion) {
    for (label, n) in [("one_address", 1), ("10k_addresses", 10_000)] {
        let keys = addresses(n);
        let mut group = c.benchmark_group(label);
        let ours = IpRateLimiter::new(RATE, RATE).expect("limited");
        let mut i = 0usize;
        group.bench_function("cryptobot_access", |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(ours.check(keys[i]).is_ok())
            });
        });
        let hashmap = RateLimiter::hashmap(quota());
        group.bench_function("governor_hashmap", |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(hashmap.check_key(&keys[i]).is_ok())
            });
        });
        let dashmap = RateLimiter::dashmap(quota());
        group.bench_function("governor_dashmap", |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(dashmap.check_key(&keys[i]).is_ok())
            });
        });
        group.finish();
    }

    // Both cores at once on one shared limiter (actix-web runs one worker per core).
    let keys = Arc::new(addresses(10_000));
    let mut group = c.benchmark_group("two_threads_10k_addresses");
    let ours = Arc::new(IpRateLimiter::new(RATE, RATE).expect("limited"));
    group.bench_function("cryptobot_access", |b| {
        let ours = Arc::clone(&ours);
        b.iter_custom(|iters| {
            let ours = Arc::clone(&ours);
            contended(2, iters, &keys, Arc::new(move |ip| {
                black_box(ours.check(ip).is_ok());
            }))
        });
    });
    let hashmap = Arc::new(RateLimiter::hashmap(quota()));
    group.bench_function("governor_hashmap", |b| {
        b.iter_custom(|iters| {
            let hashmap = Arc::clone(&hashmap);
            contended(2, iters, &keys, Arc::new(move |ip| {
                black_box(hashmap.check_key(&ip).is_ok());
            }))
        });
    });
    let dashmap = Arc::new(RateLimiter::dashmap(quota()));
    group.bench_function("governor_dashmap", |b| {
        b.iter_custom(|iters| {
            let dashmap = Arc::clone(&dashmap);
            contended(2, iters, &keys, Arc::new(move |ip| {
                black_box(dashmap.check_key(&ip).is_ok());
            }))
        });
    });
    group.finish();
}

/// Memory under a flood of distinct addresses (spoofed X-Forwarded-For behind a trusted proxy, or
/// many IPv6 /64s): entries each limiter holds right after 1,000,000 addresses sent one request
/// each at a realistic rate (10/s, burst 20). Printed, not timed.
fn flood(_: &mut Criterion) {
    let keys = addresses(1_000_000);
    let ours = IpRateLimiter::new(10, 20).expect("limited");
    let per_second = NonZeroU32::new(10).expect("non-zero");
    let quota = Quota::per_second(per_second).allow_burst(NonZeroU32::new(20).expect("non-zero"));
    let hashmap = RateLimiter::hashmap(quota);
    let dashmap = RateLimiter::dashmap(quota);
    let (mut refused, mut allowed) = (0u32, 0u32);
    for ip in &keys {
        if ours.check(*ip).is_ok() {
            allowed += 1;
        } else {
            refused += 1;
        }
        let _ = hashmap.check_key(ip);
        let _ = dashmap.check_key(ip);
    }
    println!(
        "flood of {} addresses: cryptobot_access holds {} entries ({allowed} allowed, {refused} newcomers refused while full), governor_hashmap {}, governor_dashmap {}",
        keys.len(),
        ours.tracked(),
        hashmap.len(),
        dashmap.len()
    );
}

criterion_group!(benches, limiters, flood);
criterion_main!(benches);
