//! Endpoint discovery and selection for a cluster: static endpoints, DNS names resolved through a
//! short-lived cache (so a request does not pay a lookup), and weighted choice that avoids
//! endpoints a retry already tried.

use model::ir::{Cluster, Discovery};
use rand::Rng;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a DNS answer is reused. Short, so that compose or VM address changes are seen quickly.
const DNS_TTL: Duration = Duration::from_secs(5);
/// How long a failed lookup is remembered, so that a missing name does not cost a lookup per request.
const DNS_NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// One resolved endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub addr: SocketAddr,
    pub weight: u32,
}

type DnsEntry = (Instant, Arc<Vec<SocketAddr>>);

/// Resolves cluster endpoints; shared by every request, kept across snapshots.
#[derive(Default)]
pub struct Upstreams {
    dns: Mutex<HashMap<(String, u16), DnsEntry>>,
}

impl Upstreams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every endpoint of the cluster with its weight; empty when none is configured or resolves.
    pub async fn resolve(&self, cluster: &Cluster) -> Vec<Resolved> {
        match &cluster.discovery {
            Discovery::Dns { host, port } => self
                .lookup(host, *port)
                .await
                .iter()
                .map(|&addr| Resolved { addr, weight: 1 })
                .collect(),
            Discovery::Static(endpoints) => {
                let mut out = Vec::with_capacity(endpoints.len());
                for ep in endpoints {
                    let weight = ep.weight.max(1);
                    match ep.address.parse::<IpAddr>() {
                        Ok(ip) => out.push(Resolved {
                            addr: SocketAddr::new(ip, ep.port),
                            weight,
                        }),
                        Err(_) => {
                            for &addr in self.lookup(&ep.address, ep.port).await.iter() {
                                out.push(Resolved { addr, weight });
                            }
                        }
                    }
                }
                out
            }
        }
    }

    async fn lookup(&self, host: &str, port: u16) -> Arc<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Arc::new(vec![SocketAddr::new(ip, port)]);
        }
        let key = (host.to_string(), port);
        if let Ok(cache) = self.dns.lock() {
            if let Some((expires, addrs)) = cache.get(&key) {
                if *expires > Instant::now() {
                    return addrs.clone();
                }
            }
        }
        let (addrs, ttl) = match tokio::net::lookup_host((host, port)).await {
            Ok(it) => {
                let mut v: Vec<SocketAddr> = it.collect();
                v.sort();
                v.dedup();
                (v, DNS_TTL)
            }
            Err(e) => {
                tracing::debug!(host, error = %e, "DNS lookup failed");
                (Vec::new(), DNS_NEGATIVE_TTL)
            }
        };
        let addrs = Arc::new(addrs);
        if let Ok(mut cache) = self.dns.lock() {
            cache.insert(key, (Instant::now() + ttl, addrs.clone()));
        }
        addrs
    }
}

/// Weighted random choice, skipping `avoid` (endpoints already tried) unless nothing else is left.
pub fn pick(endpoints: &[Resolved], avoid: &[SocketAddr]) -> Option<SocketAddr> {
    let fresh = endpoints.iter().filter(|e| !avoid.contains(&e.addr));
    let total: u64 = fresh.clone().map(|e| u64::from(e.weight)).sum();
    if total == 0 {
        return weighted(endpoints);
    }
    let mut n = rand::thread_rng().gen_range(0..total);
    for e in fresh {
        let w = u64::from(e.weight);
        if n < w {
            return Some(e.addr);
        }
        n -= w;
    }
    None
}

fn weighted(endpoints: &[Resolved]) -> Option<SocketAddr> {
    let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut n = rand::thread_rng().gen_range(0..total);
    for e in endpoints {
        let w = u64::from(e.weight);
        if n < w {
            return Some(e.addr);
        }
        n -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, weight: u32) -> Resolved {
        Resolved {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
        }
    }

    #[test]
    fn pick_avoids_tried_endpoints_while_others_remain() {
        let eps = [ep(1, 1), ep(2, 1)];
        for _ in 0..50 {
            assert_eq!(pick(&eps, &[eps[0].addr]), Some(eps[1].addr));
        }
        assert!(pick(&eps, &[eps[0].addr, eps[1].addr]).is_some());
        assert_eq!(pick(&[], &[]), None);
    }

    #[test]
    fn pick_follows_weights() {
        let eps = [ep(1, 9), ep(2, 1)];
        let n = (0..10_000)
            .filter(|_| pick(&eps, &[]) == Some(eps[0].addr))
            .count();
        assert!((8_500..9_500).contains(&n), "{n}");
    }
}
