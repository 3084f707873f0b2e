//! Endpoint discovery for a cluster: static endpoints, and DNS names resolved through a
//! short-lived cache so that a request does not pay a lookup.

use model::ir::{Cluster, Discovery};
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

    /// Every endpoint of the cluster, through the cluster's cache when no address needs DNS.
    pub async fn endpoints(
        &self,
        cluster: &std::sync::Arc<Cluster>,
        state: &crate::balancer::ClusterState,
    ) -> Arc<Vec<Resolved>> {
        if let Some(eps) = state.cached(cluster) {
            return eps;
        }
        let eps = Arc::new(self.resolve(cluster).await);
        let all_ips = match &cluster.discovery {
            Discovery::Static(list) => list.iter().all(|e| e.address.parse::<IpAddr>().is_ok()),
            Discovery::Dns { host, .. } => host.parse::<IpAddr>().is_ok(),
        };
        if all_ips {
            state.cache(cluster, eps.clone());
        }
        eps
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
