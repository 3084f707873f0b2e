//! Per-cluster runtime state kept across snapshots: load-balancing choice (round robin, least
//! request, random, ring hash, maglev), outlier detection (consecutive errors eject an endpoint for
//! `baseEjectionTime × times ejected`, capped by `maxEjectionPercent`, ignored below
//! `minHealthPercent`) and circuit-breaker counters.

use crate::fast_map::FastMap;
use crate::upstream::Resolved;
use model::ir::{ClusterPolicy, HashAlgo, LbPolicy, OutlierPolicy};
use rand::Rng;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Every cluster's state, by cluster name.
#[derive(Default)]
pub struct Balancers {
    map: RwLock<FastMap<String, Arc<ClusterState>>>,
}

impl Balancers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of a cluster, created on first use.
    pub fn get(&self, name: &str) -> Arc<ClusterState> {
        if let Ok(m) = self.map.read() {
            if let Some(s) = m.get(name) {
                return s.clone();
            }
        }
        match self.map.write() {
            Ok(mut m) => m.entry(name.to_string()).or_default().clone(),
            Err(_) => Arc::new(ClusterState::default()),
        }
    }

    /// Endpoints currently ejected, by cluster (for `gateway_outlier_ejections_active`).
    pub fn ejections(&self) -> Vec<(String, usize)> {
        let now = Instant::now();
        let Ok(m) = self.map.read() else {
            return Vec::new();
        };
        m.iter()
            .map(|(name, s)| (name.clone(), s.ejected_count(now)))
            .collect()
    }
}

#[derive(Debug, Default, Clone)]
struct EndpointState {
    active: u32,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
}

/// The endpoints computed for one cluster value (held weakly: a new snapshot's cluster misses).
type ResolvedCache = (std::sync::Weak<model::ir::Cluster>, Arc<Vec<Resolved>>);

/// The endpoint set and algorithm a table was built for, the maglev table, and the ring.
type HashTable = (
    Vec<Resolved>,
    HashAlgo,
    Arc<Vec<SocketAddr>>,
    Arc<Vec<(u64, SocketAddr)>>,
);

/// Runtime state of one cluster.
#[derive(Default)]
pub struct ClusterState {
    rr: AtomicUsize,
    /// Requests in flight (circuit breaker).
    active: AtomicU32,
    /// Retries in flight (`maxRetries`).
    active_retries: AtomicU32,
    endpoints: Mutex<FastMap<SocketAddr, EndpointState>>,
    /// Endpoints of a cluster whose addresses are all IPs, resolved once per snapshot's cluster.
    resolved: Mutex<Option<ResolvedCache>>,
    /// The hash ring or maglev table, rebuilt when the endpoint set changes.
    table: Mutex<Option<HashTable>>,
}

/// The outcome of choosing an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pick {
    Endpoint(SocketAddr),
    /// Every endpoint is ejected: 503 `UH`.
    AllEjected,
    /// No endpoint at all.
    Empty,
}

/// Holds one unit of a counter and gives it back on drop.
pub struct Slot(Arc<ClusterState>, SlotKind);

enum SlotKind {
    Request,
    Retry,
    Endpoint(SocketAddr),
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.1 {
            SlotKind::Request => {
                self.0.active.fetch_sub(1, Ordering::AcqRel);
            }
            SlotKind::Retry => {
                self.0.active_retries.fetch_sub(1, Ordering::AcqRel);
            }
            SlotKind::Endpoint(addr) => {
                if let Ok(mut m) = self.0.endpoints.lock() {
                    if let Some(e) = m.get_mut(&addr) {
                        e.active = e.active.saturating_sub(1);
                    }
                }
            }
        }
    }
}

fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    // SipHash with fixed keys: stable across processes, so replicas agree on hash choices.
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Hashes a request key (header value, cookie, source IP, query parameter).
pub fn hash_key(v: &[u8]) -> u64 {
    hash_of(v)
}

impl ClusterState {
    /// Takes a request slot unless the cluster's concurrency limit is reached (overflow: 503 `UO`).
    pub fn admit(self: &Arc<Self>, policy: &ClusterPolicy) -> Option<Slot> {
        let limit = admission_limit(policy);
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        if u64::from(prev) >= limit {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone(), SlotKind::Request))
    }

    /// Takes a slot for an L4 connection unless `maxConnections` connections are open (a TCP
    /// proxy has no pending requests to queue: the limit is the connections themselves).
    pub fn admit_connection(self: &Arc<Self>, policy: &ClusterPolicy) -> Option<Slot> {
        let limit = policy.max_connections.map_or(u64::MAX, u64::from);
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        if u64::from(prev) >= limit {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone(), SlotKind::Request))
    }

    /// Takes a retry slot unless `maxRetries` retries are already in flight.
    pub fn admit_retry(self: &Arc<Self>, policy: &ClusterPolicy) -> Option<Slot> {
        let limit = policy.max_retries.map_or(u64::MAX, u64::from);
        let prev = self.active_retries.fetch_add(1, Ordering::AcqRel);
        if u64::from(prev) >= limit {
            self.active_retries.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone(), SlotKind::Retry))
    }

    /// Counts a request on an endpoint (least-request balancing) until the slot drops.
    pub fn track(self: &Arc<Self>, addr: SocketAddr) -> Slot {
        if let Ok(mut m) = self.endpoints.lock() {
            m.entry(addr).or_default().active += 1;
        }
        Slot(self.clone(), SlotKind::Endpoint(addr))
    }

    /// The cached endpoints of this exact cluster value, if any.
    pub fn cached(&self, cluster: &Arc<model::ir::Cluster>) -> Option<Arc<Vec<Resolved>>> {
        let c = self.resolved.lock().ok()?;
        match &*c {
            Some((w, eps)) if std::ptr::eq(w.as_ptr(), Arc::as_ptr(cluster)) => Some(eps.clone()),
            _ => None,
        }
    }

    /// Caches the endpoints of a cluster whose addresses need no DNS.
    pub fn cache(&self, cluster: &Arc<model::ir::Cluster>, eps: Arc<Vec<Resolved>>) {
        if let Ok(mut c) = self.resolved.lock() {
            *c = Some((Arc::downgrade(cluster), eps));
        }
    }

    fn ejected_count(&self, now: Instant) -> usize {
        self.endpoints
            .lock()
            .map(|m| {
                m.values()
                    .filter(|e| e.ejected_until.is_some_and(|t| t > now))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Records an upstream outcome for outlier detection: `status` is the response code, or
    /// `None` for a connection failure, reset or timeout (a gateway error).
    pub fn record(&self, addr: SocketAddr, status: Option<u16>, outlier: Option<&OutlierPolicy>) {
        let Some(o) = outlier else {
            return;
        };
        let Ok(mut m) = self.endpoints.lock() else {
            return;
        };
        let now = Instant::now();
        let total = m.len().max(1);
        let ejected = m
            .values()
            .filter(|e| e.ejected_until.is_some_and(|t| t > now))
            .count();
        let Some(e) = m.get_mut(&addr) else {
            return;
        };
        let is_5xx = status.is_none_or(|s| s >= 500);
        let is_gateway = status.is_none_or(|s| matches!(s, 502..=504));
        if is_5xx {
            e.consecutive_5xx += 1;
        } else {
            e.consecutive_5xx = 0;
        }
        if is_gateway {
            e.consecutive_gateway += 1;
        } else {
            e.consecutive_gateway = 0;
        }
        let trip = (o.consecutive_5xx > 0 && e.consecutive_5xx >= o.consecutive_5xx)
            || (o.consecutive_gateway_errors > 0
                && e.consecutive_gateway >= o.consecutive_gateway_errors);
        if !trip || e.ejected_until.is_some_and(|t| t > now) {
            return;
        }
        // Envoy ejects at least one host even when the percentage of a small pool rounds to zero.
        let max = ((total * o.max_ejection_percent as usize) / 100).max(1);
        if ejected >= max || o.max_ejection_percent == 0 {
            return;
        }
        e.times_ejected += 1;
        let factor = e.times_ejected.min(10);
        e.ejected_until = Some(now + o.base_ejection_time * factor);
        e.consecutive_5xx = 0;
        e.consecutive_gateway = 0;
    }

    /// Chooses an endpoint by the cluster's policy, avoiding ejected endpoints and (when others
    /// remain) the ones in `avoid`. Allocation-free unless outlier detection or a retry narrows
    /// the candidates.
    pub fn pick(
        &self,
        policy: &ClusterPolicy,
        endpoints: &[Resolved],
        avoid: &[SocketAddr],
        hash: Option<u64>,
    ) -> Pick {
        if endpoints.is_empty() {
            return Pick::Empty;
        }
        let Ok(mut m) = self.endpoints.lock() else {
            return weighted_random(endpoints).map_or(Pick::Empty, Pick::Endpoint);
        };
        let healthy_owned: Vec<Resolved>;
        let mut healthy: &[Resolved] = endpoints;
        if let Some(o) = &policy.outlier {
            let now = Instant::now();
            healthy_owned = endpoints
                .iter()
                .filter(|e| {
                    m.entry(e.addr)
                        .or_default()
                        .ejected_until
                        .is_none_or(|t| t <= now)
                })
                .copied()
                .collect();
            // Below minHealthPercent, outlier detection steps aside and every endpoint is used.
            let pct = healthy_owned.len() * 100 / endpoints.len();
            if o.min_health_percent == 0 || pct as u32 >= o.min_health_percent {
                healthy = &healthy_owned;
            }
        }
        if healthy.is_empty() {
            return Pick::AllEjected;
        }
        let fresh_owned: Vec<Resolved>;
        let mut pool = healthy;
        if !avoid.is_empty() {
            fresh_owned = healthy
                .iter()
                .filter(|e| !avoid.contains(&e.addr))
                .copied()
                .collect();
            if !fresh_owned.is_empty() {
                pool = &fresh_owned;
            }
        }
        let chosen = match &policy.lb {
            LbPolicy::RoundRobin => {
                let total: usize = pool.iter().map(|e| e.weight.max(1) as usize).sum();
                let mut n = self.rr.fetch_add(1, Ordering::Relaxed) % total.max(1);
                pool.iter()
                    .find(|e| {
                        let w = e.weight.max(1) as usize;
                        if n < w {
                            true
                        } else {
                            n -= w;
                            false
                        }
                    })
                    .map(|e| e.addr)
            }
            LbPolicy::Random | LbPolicy::Passthrough => weighted_random(pool),
            LbPolicy::LeastRequest => {
                // Power of two choices, weighted by endpoint weight.
                match (weighted_random(pool), weighted_random(pool)) {
                    (Some(a), Some(b)) => {
                        let load = |x: &SocketAddr| m.get(x).map_or(0, |e| e.active);
                        Some(if load(&b) < load(&a) { b } else { a })
                    }
                    (a, b) => a.or(b),
                }
            }
            LbPolicy::ConsistentHash(_) => match hash {
                Some(h) if pool.len() == healthy.len() => {
                    drop(m);
                    self.hashed(&policy.hash_algo, pool, h)
                }
                // A retry (or a missing key) falls back to a random healthy endpoint.
                _ => weighted_random(pool),
            },
        };
        chosen.map_or(Pick::Empty, Pick::Endpoint)
    }

    fn hashed(&self, algo: &HashAlgo, pool: &[Resolved], h: u64) -> Option<SocketAddr> {
        let Ok(mut t) = self.table.lock() else {
            return weighted_random(pool);
        };
        let fresh = !matches!(&*t, Some((eps, a, _, _)) if eps.as_slice() == pool && a == algo);
        if fresh {
            let (maglev, ring) = match algo {
                HashAlgo::Maglev { table_size } => (maglev_table(pool, *table_size), Vec::new()),
                HashAlgo::RingHash { minimum_ring_size } => {
                    (Vec::new(), ring(pool, *minimum_ring_size))
                }
            };
            *t = Some((
                pool.to_vec(),
                algo.clone(),
                Arc::new(maglev),
                Arc::new(ring),
            ));
        }
        let (_, _, maglev, ring) = t.as_ref()?;
        match algo {
            HashAlgo::Maglev { .. } => {
                let len = maglev.len() as u64;
                (len > 0).then(|| maglev[(h % len) as usize])
            }
            HashAlgo::RingHash { .. } => {
                if ring.is_empty() {
                    return None;
                }
                let i = ring.partition_point(|(p, _)| *p < h);
                Some(ring[i % ring.len()].1)
            }
        }
    }
}

fn admission_limit(policy: &ClusterPolicy) -> u64 {
    let conns = policy.max_connections.map(u64::from);
    let pending = policy.max_pending_requests.map(u64::from);
    let by_conn = match (conns, pending) {
        (Some(c), Some(p)) => Some(c + p),
        (Some(c), None) => Some(c.saturating_add(u64::from(u32::MAX))),
        (None, _) => None,
    };
    let by_req = policy.max_requests.map(u64::from);
    match (by_conn, by_req) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(u64::MAX),
    }
}

fn weighted_random(pool: &[Resolved]) -> Option<SocketAddr> {
    let total: u64 = pool.iter().map(|e| u64::from(e.weight.max(1))).sum();
    if total == 0 {
        return None;
    }
    let mut n = rand::thread_rng().gen_range(0..total);
    for e in pool {
        let w = u64::from(e.weight.max(1));
        if n < w {
            return Some(e.addr);
        }
        n -= w;
    }
    None
}

/// A ring of at least `min_size` points, each endpoint owning points in proportion to its weight.
fn ring(pool: &[Resolved], min_size: u64) -> Vec<(u64, SocketAddr)> {
    let total: u64 = pool.iter().map(|e| u64::from(e.weight.max(1))).sum();
    let min_size = min_size.clamp(1, 1 << 23);
    let per_weight = min_size.div_ceil(total.max(1));
    let mut ring = Vec::new();
    for e in pool {
        for i in 0..per_weight * u64::from(e.weight.max(1)) {
            ring.push((hash_of(&(e.addr, i)), e.addr));
        }
    }
    ring.sort_unstable_by_key(|(h, _)| *h);
    ring
}

/// Maglev's lookup table (Eisenbud et al. 2016): each endpoint fills slots by its own permutation.
fn maglev_table(pool: &[Resolved], size: u64) -> Vec<SocketAddr> {
    let m = size.clamp(1, 5_000_011) as usize;
    if pool.is_empty() {
        return Vec::new();
    }
    let perms: Vec<(usize, usize)> = pool
        .iter()
        .map(|e| {
            let offset = (hash_of(&(e.addr, "offset")) % m as u64) as usize;
            let skip = if m > 1 {
                (hash_of(&(e.addr, "skip")) % (m as u64 - 1)) as usize + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect();
    let weights: Vec<u64> = pool.iter().map(|e| u64::from(e.weight.max(1))).collect();
    let max_w = weights.iter().copied().max().unwrap_or(1);
    let mut next = vec![0usize; pool.len()];
    let mut table: Vec<Option<usize>> = vec![None; m];
    let mut filled = 0;
    let mut round: u64 = 0;
    while filled < m {
        round += 1;
        for i in 0..pool.len() {
            // Weighted maglev: an endpoint takes a turn in `weight` rounds out of `max_w`.
            if (round * weights[i]) / max_w == ((round - 1) * weights[i]) / max_w {
                continue;
            }
            let (offset, skip) = perms[i];
            loop {
                let c = (offset + next[i] * skip) % m;
                next[i] += 1;
                if table[c].is_none() {
                    table[c] = Some(i);
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
        .into_iter()
        .map(|i| pool[i.unwrap_or(0)].addr)
        .collect()
}

/// Backoff before retry `n` (1-based): full jitter over `base × 2^(n-1)`, capped at 10 × base.
pub fn backoff(base: Duration, n: u32) -> Duration {
    let cap = base * 10;
    let exp = base
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(cap);
    let ms = exp.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u16) -> Vec<Resolved> {
        (1..=n)
            .map(|p| Resolved {
                addr: SocketAddr::from(([127, 0, 0, 1], p)),
                weight: 1,
            })
            .collect()
    }

    fn policy(lb: LbPolicy) -> ClusterPolicy {
        ClusterPolicy {
            lb,
            ..ClusterPolicy::default()
        }
    }

    #[test]
    fn round_robin_cycles_through_endpoints() {
        let s = ClusterState::default();
        let e = eps(3);
        let p = policy(LbPolicy::RoundRobin);
        let picks: Vec<_> = (0..6).map(|_| s.pick(&p, &e, &[], None)).collect();
        assert_eq!(picks[0], picks[3]);
        assert_ne!(picks[0], picks[1]);
        assert_ne!(picks[1], picks[2]);
    }

    #[test]
    fn consistent_hash_is_stable_and_spreads() {
        for algo in [
            HashAlgo::RingHash {
                minimum_ring_size: 1024,
            },
            HashAlgo::Maglev { table_size: 65537 },
        ] {
            let s = ClusterState::default();
            let e = eps(4);
            let mut p = policy(LbPolicy::ConsistentHash(model::ir::HashKey::SourceIp));
            p.hash_algo = algo;
            let mut seen = std::collections::HashSet::new();
            for k in 0..200u64 {
                let h = hash_key(&k.to_le_bytes());
                let a = s.pick(&p, &e, &[], Some(h));
                assert_eq!(a, s.pick(&p, &e, &[], Some(h)));
                seen.insert(a);
            }
            assert_eq!(seen.len(), 4);
        }
    }

    #[test]
    fn consecutive_errors_eject_until_base_time_passes() {
        let s = Arc::new(ClusterState::default());
        let e = eps(2);
        let mut p = policy(LbPolicy::RoundRobin);
        p.outlier = Some(OutlierPolicy {
            consecutive_5xx: 3,
            consecutive_gateway_errors: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_millis(200),
            max_ejection_percent: 100,
            min_health_percent: 0,
        });
        let _ = s.pick(&p, &e, &[], None);
        for _ in 0..3 {
            s.record(e[0].addr, Some(503), p.outlier.as_ref());
        }
        for _ in 0..10 {
            assert_eq!(s.pick(&p, &e, &[], None), Pick::Endpoint(e[1].addr));
        }
        for _ in 0..3 {
            s.record(e[1].addr, None, p.outlier.as_ref());
        }
        assert_eq!(s.pick(&p, &e, &[], None), Pick::AllEjected);
        std::thread::sleep(Duration::from_millis(250));
        assert!(matches!(s.pick(&p, &e, &[], None), Pick::Endpoint(_)));
    }

    #[test]
    fn admission_limits_concurrency() {
        let s = Arc::new(ClusterState::default());
        let mut p = policy(LbPolicy::RoundRobin);
        p.max_connections = Some(1);
        p.max_pending_requests = Some(1);
        let a = s.admit(&p);
        let b = s.admit(&p);
        assert!(a.is_some() && b.is_some());
        assert!(s.admit(&p).is_none());
        drop(a);
        assert!(s.admit(&p).is_some());
    }

    #[test]
    fn backoff_is_capped() {
        for n in 1..20 {
            assert!(backoff(Duration::from_millis(25), n) <= Duration::from_millis(250));
        }
    }
}
