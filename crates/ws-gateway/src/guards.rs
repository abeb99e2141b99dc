//! Drop guards that keep the gateway's counts right whatever way a task ends: running actors
//! (what `Gateway::closed` waits for) and open connections per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::metrics::GatewayMetrics;

/// Keeps the count of running actors right even if the task is dropped mid-flight.
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    /// Number of running actors (the gateway's `closed()` waits for it to reach zero).
    pub(crate) active: Arc<watch::Sender<usize>>,
    /// Counters.
    pub(crate) metrics: Arc<GatewayMetrics>,
}

impl ActiveGuard {
    /// Counts one more running actor.
    pub(crate) fn new(active: Arc<watch::Sender<usize>>, metrics: Arc<GatewayMetrics>) -> Self {
        active.send_modify(|n| *n += 1);
        GatewayMetrics::incr(&metrics.connections_open);
        GatewayMetrics::incr(&metrics.connections_total);
        Self { active, metrics }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.active.send_modify(|n| *n = n.saturating_sub(1));
        self.metrics
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One connection counted against its client IP address; released on drop.
#[derive(Debug)]
pub(crate) struct IpSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    /// Counts one more connection from `ip`, or `None` when it already has `limit`.
    pub(crate) fn acquire(
        map: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        limit: usize,
    ) -> Option<Self> {
        // A poisoned lock only means another thread panicked mid-update; the counts stay usable.
        let mut counts = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self {
            map: Arc::clone(map),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Decrements the running count when the hub task ends.
pub(crate) struct HubGuard(Arc<watch::Sender<usize>>);

impl HubGuard {
    pub(crate) fn new(active: Arc<watch::Sender<usize>>) -> Self {
        active.send_modify(|n| *n += 1);
        Self(active)
    }
}

impl Drop for HubGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_slots_count_and_release() {
        let map = Arc::new(Mutex::new(HashMap::new()));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = IpSlot::acquire(&map, ip, 2).unwrap();
        let second = IpSlot::acquire(&map, ip, 2).unwrap();
        assert!(
            IpSlot::acquire(&map, ip, 2).is_none(),
            "third over the limit"
        );
        assert!(
            IpSlot::acquire(&map, "192.0.2.2".parse().unwrap(), 2).is_some(),
            "other IPs unaffected"
        );
        drop(first);
        let third = IpSlot::acquire(&map, ip, 2).unwrap();
        drop((second, third));
        assert!(map.lock().unwrap().is_empty(), "no entry left behind");
    }
}
