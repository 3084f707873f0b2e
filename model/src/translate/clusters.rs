//! Destinations to clusters: the ServiceEntry/WorkloadEntry registry a host resolves against, the
//! DestinationRules that apply to a host (exact first, else the most specific wildcard; several
//! merged in creation order), subset endpoint selection and the effective connection policy.
//! Clusters are built once per name and shared by every route that sends to them.

use super::diag::{Diag, Problem};
use super::hosts::{creation_order, is_ip};
use crate::ir::{
    Cluster, ClusterPolicy, Discovery, Endpoint, HashAlgo, HashKey, LbPolicy, OutlierPolicy,
    TcpKeepalive, UpstreamProtocol,
};
use crate::resource::{
    ConnectionPoolSettings, CookieAttribute, DestinationRule, H2UpgradePolicy, HttpSettings, Kind,
    LoadBalancerSettings, OutlierDetection, Resolution, ResourceKey, ResourceSet, ServiceEntry,
    ServicePort, SimpleLb, Subset, TrafficPolicy, WorkloadEntry, WorkloadEntrySpec,
};
use crate::validate::Protocol;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Port of a destination that names none and whose host no ServiceEntry lists (CONTRACT §2).
pub(crate) const DEFAULT_PORT: u16 = 80;

/// The DestinationRules of one host string, merged in creation order.
#[derive(Debug, Default)]
pub(crate) struct MergedRule<'a> {
    /// From the first rule that has one.
    pub traffic_policy: Option<&'a TrafficPolicy>,
    /// Concatenated; the first of a name wins.
    pub subsets: Vec<&'a Subset>,
}

impl<'a> MergedRule<'a> {
    pub(crate) fn subset(&self, name: &str) -> Option<&'a Subset> {
        self.subsets.iter().copied().find(|s| s.name == name)
    }
}

/// Everything translation reads about upstreams, indexed once.
pub(crate) struct Registry<'a> {
    /// Exact (lowercased) host → the first ServiceEntry, in creation order, listing it.
    entries: HashMap<String, &'a ServiceEntry>,
    /// Namespace → its WorkloadEntries, in key order.
    workloads: HashMap<String, Vec<&'a WorkloadEntry>>,
    /// DestinationRule host (lowercased, as written: exact or `*.suffix` or `*`) → merged rule.
    rules: HashMap<String, MergedRule<'a>>,
    /// Built clusters by name: the snapshot's `clusters`.
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Every DestinationRule `tls` block, compiled.
    pub upstream_tls: super::tls::UpstreamTlsByBlock,
}

/// How a host's endpoints are known, before port and subset are applied.
pub(crate) enum Resolved<'a> {
    /// Endpoints from a ServiceEntry (its `endpoints`, or the WorkloadEntries it selects).
    Listed {
        se: &'a ServiceEntry,
        endpoints: Vec<&'a WorkloadEntrySpec>,
    },
    /// Resolved by DNS on the host name (a ServiceEntry without endpoints, or no ServiceEntry).
    Dns { se: Option<&'a ServiceEntry> },
    /// An IP literal no ServiceEntry lists.
    Ip,
}

impl<'a> Registry<'a> {
    pub(crate) fn new(set: &'a ResourceSet) -> Registry<'a> {
        let mut ses: Vec<&ServiceEntry> = set.service_entries().collect();
        ses.sort_by_cached_key(|s| creation_order(&s.metadata));
        let mut entries = HashMap::new();
        for se in ses {
            for h in &se.spec.hosts {
                let h = h.trim().to_ascii_lowercase();
                // Wildcard ServiceEntry hosts name no concrete upstream a route could send to.
                if h.is_empty() || h.contains('*') {
                    continue;
                }
                entries.entry(h).or_insert(se);
            }
        }
        let mut workloads: HashMap<String, Vec<&WorkloadEntry>> = HashMap::new();
        for we in set.workload_entries() {
            workloads
                .entry(we.metadata.namespace().to_string())
                .or_default()
                .push(we);
        }
        let mut drs: Vec<&DestinationRule> = set.destination_rules().collect();
        drs.sort_by_cached_key(|d| creation_order(&d.metadata));
        let mut rules: HashMap<String, MergedRule> = HashMap::new();
        for dr in drs {
            let host = dr.spec.host.trim().to_ascii_lowercase();
            if host.is_empty() {
                continue;
            }
            let m = rules.entry(host).or_default();
            if m.traffic_policy.is_none() {
                m.traffic_policy = dr.spec.traffic_policy.as_ref();
            }
            for s in &dr.spec.subsets {
                if m.subset(&s.name).is_none() {
                    m.subsets.push(s);
                }
            }
        }
        Registry {
            entries,
            workloads,
            rules,
            clusters: BTreeMap::new(),
            upstream_tls: Default::default(),
        }
    }

    /// The ServiceEntry listing a host, if any.
    pub(crate) fn service_entry(&self, host: &str) -> Option<&'a ServiceEntry> {
        self.entries.get(host).copied()
    }

    /// The WorkloadEntries a ServiceEntry's `workloadSelector` selects (same namespace).
    pub(crate) fn selected_workloads(&self, se: &ServiceEntry) -> Vec<&'a WorkloadEntrySpec> {
        let Some(sel) = &se.spec.workload_selector else {
            return Vec::new();
        };
        self.workloads
            .get(se.metadata.namespace())
            .map(|wes| {
                wes.iter()
                    .filter(|we| labels_include(&we.spec.labels, &sel.labels))
                    .map(|we| &we.spec)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How a (lowercased) host's endpoints are known.
    pub(crate) fn resolve(&self, host: &str) -> Resolved<'a> {
        match self.service_entry(host) {
            Some(se) => {
                if se.spec.workload_selector.is_some() {
                    Resolved::Listed {
                        se,
                        endpoints: self.selected_workloads(se),
                    }
                } else if !se.spec.endpoints.is_empty()
                    || se.spec.resolution() == Resolution::Static
                {
                    Resolved::Listed {
                        se,
                        endpoints: se.spec.endpoints.iter().collect(),
                    }
                } else {
                    Resolved::Dns { se: Some(se) }
                }
            }
            None if is_ip(host) => Resolved::Ip,
            None => Resolved::Dns { se: None },
        }
    }

    /// The DestinationRule that applies to a host: an exact one, else the most specific wildcard.
    pub(crate) fn rule_for(&self, host: &str) -> Option<&MergedRule<'a>> {
        if let Some(r) = self.rules.get(host) {
            return Some(r);
        }
        for (pos, b) in host.bytes().enumerate() {
            if b == b'.' {
                if let Some(r) = self.rules.get(&format!("*{}", &host[pos..])) {
                    return Some(r);
                }
            }
        }
        self.rules.get("*")
    }

    /// The port a destination without `port` uses: the ServiceEntry's only port, else the
    /// listener's; for a host no ServiceEntry lists, 80. `None` means "the listener's".
    pub(crate) fn implicit_port(&self, host: &str) -> Option<u16> {
        match self.service_entry(host) {
            Some(se) => match se.spec.ports.as_slice() {
                [only] => port_u16(only.number),
                _ => None,
            },
            None => Some(DEFAULT_PORT),
        }
    }

    /// Whether the ServiceEntry port a cluster sends to carries HTTP/2 (Istio's `IsHTTP2`: GRPC,
    /// GRPC-WEB, HTTP2), by its `protocol`, or when that is unset by its name's prefix
    /// (`grpc-…`, `http2-…`, `grpc-web-…`), the naming convention of Kubernetes Service ports.
    fn port_is_http2(&self, host: &str, port: u16) -> bool {
        let Some(sp) = self.service_entry(host).and_then(|se| {
            se.spec
                .ports
                .iter()
                .find(|p| port_u16(p.number) == Some(port))
        }) else {
            return false;
        };
        match sp
            .protocol
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            Some(p) => Protocol::parse(p).is_some_and(Protocol::is_http2),
            None => {
                let name = sp.name.as_str();
                let prefix = match name.get(..8) {
                    Some(p) if p.eq_ignore_ascii_case("grpc-web") => p,
                    _ => name.split('-').next().unwrap_or(name),
                };
                Protocol::parse(prefix).is_some_and(Protocol::is_http2)
            }
        }
    }

    /// The shared cluster for `outbound|port|subset|host`, built on first use. `subset` must be
    /// defined (callers answer undefined subsets with `Target::NoCluster`).
    pub(crate) fn cluster(&mut self, host: &str, port: u16, subset: Option<&str>) -> Arc<Cluster> {
        let name = cluster_name(host, port, subset);
        if let Some(c) = self.clusters.get(&name) {
            return c.clone();
        }
        let rule = self.rule_for(host);
        let subset_def = subset.and_then(|s| rule.and_then(|r| r.subset(s)));
        let discovery = self.discovery(host, port, subset_def);
        let port_h2 = self.port_is_http2(host, port);
        let mut policy = policy(
            rule.and_then(|r| r.traffic_policy),
            subset_def,
            port,
            port_h2,
        );
        policy.tls = effective_tls(rule.and_then(|r| r.traffic_policy), subset_def, port)
            .and_then(|t| self.upstream_tls.get(&super::tls::block_id(t)).cloned())
            .flatten();
        let c = Arc::new(Cluster {
            name: name.clone(),
            host: host.to_string(),
            port,
            subset: subset.map(str::to_string),
            discovery,
            policy,
        });
        self.clusters.insert(name, c.clone());
        c
    }

    fn discovery(&self, host: &str, port: u16, subset: Option<&Subset>) -> Discovery {
        let wanted = subset.map(|s| &s.labels);
        let selects =
            |labels: &BTreeMap<String, String>| wanted.is_none_or(|w| labels_include(labels, w));
        match self.resolve(host) {
            Resolved::Listed { se, endpoints } => {
                let svc_port = se
                    .spec
                    .ports
                    .iter()
                    .find(|p| port_u16(p.number) == Some(port));
                Discovery::Static(
                    endpoints
                        .into_iter()
                        .filter(|ep| selects(&ep.labels))
                        .filter_map(|ep| endpoint(ep, svc_port, port))
                        .collect(),
                )
            }
            Resolved::Dns { se } => {
                // A name resolved by DNS carries no labels: a subset that asks for some selects
                // nothing rather than everything.
                if wanted.is_some_and(|w| !w.is_empty()) {
                    return Discovery::Static(Vec::new());
                }
                let svc_port = se.and_then(|se| {
                    se.spec
                        .ports
                        .iter()
                        .find(|p| port_u16(p.number) == Some(port))
                });
                let port = svc_port
                    .and_then(|p| p.target_port.and_then(port_u16))
                    .unwrap_or(port);
                Discovery::Dns {
                    host: host.to_string(),
                    port,
                }
            }
            Resolved::Ip => {
                let ep = Endpoint {
                    address: host
                        .strip_prefix('[')
                        .and_then(|h| h.strip_suffix(']'))
                        .unwrap_or(host)
                        .to_string(),
                    port,
                    weight: 1,
                    labels: BTreeMap::new(),
                };
                if wanted.is_some_and(|w| !w.is_empty()) {
                    Discovery::Static(Vec::new())
                } else {
                    Discovery::Static(vec![ep])
                }
            }
        }
    }

    /// Why a defined subset selects no endpoint of a host (on any port), if it selects none.
    pub(crate) fn subset_emptiness(&self, host: &str, subset: &Subset) -> Option<&'static str> {
        match self.resolve(host) {
            Resolved::Listed { endpoints, .. } => (!endpoints
                .iter()
                .any(|ep| ep.address.is_some() && labels_include(&ep.labels, &subset.labels)))
            .then_some("its labels match no endpoint"),
            Resolved::Dns { .. } | Resolved::Ip => (!subset.labels.is_empty())
                .then_some("the host is resolved by DNS or is an IP, whose endpoint has no labels"),
        }
    }
}

/// A ServiceEntry whose `workloadSelector` selects no WorkloadEntry has no endpoint to send to.
pub(crate) fn check_service_entries(set: &ResourceSet, reg: &Registry<'_>, diag: &mut Diag) {
    for se in set.service_entries() {
        let Some(sel) = &se.spec.workload_selector else {
            continue;
        };
        if reg.selected_workloads(se).is_empty() {
            let ns = se.metadata.namespace();
            let labels: Vec<String> = sel.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            diag.push(
                &ResourceKey::new(Kind::ServiceEntry, ns, se.metadata.name.clone()),
                Problem::Ref("NoEndpoints"),
                "spec.workloadSelector",
                &format!(
                    "selects no WorkloadEntry in namespace {ns:?} (labels {})",
                    labels.join(",")
                ),
            );
        }
    }
}

/// What a DestinationRule asks that the data plane cannot do as written, said per field: a
/// consistent-hash cookie attribute that would break the `Set-Cookie` header (or add attributes
/// of its own) is left out of the cookie; a `tcpKeepalive` value outside what Linux accepts is
/// brought within it.
pub(crate) fn check_destination_rules(set: &ResourceSet, diag: &mut Diag) {
    for dr in set.destination_rules() {
        let key = ResourceKey::new(
            Kind::DestinationRule,
            dr.metadata.namespace(),
            dr.metadata.name.clone(),
        );
        let mut policies: Vec<(String, &TrafficPolicy)> = Vec::new();
        if let Some(tp) = &dr.spec.traffic_policy {
            policies.push(("spec.trafficPolicy".to_string(), tp));
        }
        for (i, s) in dr.spec.subsets.iter().enumerate() {
            if let Some(tp) = &s.traffic_policy {
                policies.push((format!("spec.subsets[{i}].trafficPolicy"), tp));
            }
        }
        for (path, tp) in policies {
            let port_level = tp.port_level_settings.iter().enumerate().map(|(j, p)| {
                (
                    format!("{path}.portLevelSettings[{j}]"),
                    p.load_balancer.as_ref(),
                    p.connection_pool.as_ref(),
                )
            });
            let levels = std::iter::once((
                path.clone(),
                tp.load_balancer.as_ref(),
                tp.connection_pool.as_ref(),
            ))
            .chain(port_level);
            for (at, lb, pool) in levels {
                let cookie = lb
                    .and_then(|lb| lb.consistent_hash.as_ref())
                    .and_then(|ch| ch.http_cookie.as_ref());
                for (k, a) in cookie.iter().flat_map(|c| c.attributes.iter().enumerate()) {
                    if !a.name.is_empty() && cookie_attribute(a).is_none() {
                        diag.push(
                            &key,
                            Problem::Part,
                            &format!("{at}.loadBalancer.consistentHash.httpCookie.attributes[{k}]"),
                            "not a cookie attribute the Set-Cookie header can carry (a token name, a value of visible characters without ';'); left out of the cookie",
                        );
                    }
                }
                let keepalive = pool
                    .and_then(|p| p.tcp.as_ref())
                    .and_then(|t| t.tcp_keepalive.as_ref());
                if let Some(k) = keepalive {
                    let kp = format!("{at}.connectionPool.tcp.tcpKeepalive");
                    check_keepalive(k, &kp, &key, diag);
                }
            }
        }
    }
}

fn check_keepalive(
    k: &crate::resource::TcpKeepalive,
    path: &str,
    key: &ResourceKey,
    diag: &mut Diag,
) {
    for (field, d) in [("time", &k.time), ("interval", &k.interval)] {
        let Some(d) = d
            .as_ref()
            .and_then(|d| -> Option<Duration> { d.parse().ok() })
        else {
            continue;
        };
        if !KEEPALIVE_SECS.contains(&d.as_secs()) {
            diag.push(
                key,
                Problem::Part,
                &format!("{path}.{field}"),
                &format!(
                    "{d:?} is outside what the socket option takes (whole seconds, 1s to {}s); {}s applies",
                    KEEPALIVE_SECS.end(),
                    d.as_secs().clamp(*KEEPALIVE_SECS.start(), *KEEPALIVE_SECS.end())
                ),
            );
        }
    }
    if let Some(n) = k.probes.filter(|n| !KEEPALIVE_PROBES.contains(n)) {
        diag.push(
            key,
            Problem::Part,
            &format!("{path}.probes"),
            &format!(
                "{n} is outside what the socket option takes (1 to {}); {} applies",
                KEEPALIVE_PROBES.end(),
                n.clamp(*KEEPALIVE_PROBES.start(), *KEEPALIVE_PROBES.end())
            ),
        );
    }
}

/// `name` or `name=value` as written into `Set-Cookie` (as Envoy does: an empty value writes the
/// name alone); `None` when it is not a token name with a value of visible ASCII without `;`.
pub(crate) fn cookie_attribute(a: &CookieAttribute) -> Option<String> {
    let token = !a.name.is_empty()
        && a.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let value = a.value.as_deref().unwrap_or("");
    let value_ok = value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b';');
    if !token || !value_ok {
        return None;
    }
    Some(if value.is_empty() {
        a.name.clone()
    } else {
        format!("{}={value}", a.name)
    })
}

/// Linux's ranges for the keepalive idle time and interval (seconds) and probe count.
const KEEPALIVE_SECS: std::ops::RangeInclusive<u64> = 1..=32767;
const KEEPALIVE_PROBES: std::ops::RangeInclusive<i64> = 1..=127;

/// `tcpKeepalive`, unset fields at Linux's defaults and every value within what the kernel
/// accepts (an out-of-range socket option would fail every upstream connection).
fn tcp_keepalive(k: &crate::resource::TcpKeepalive) -> TcpKeepalive {
    let secs = |d: &Option<crate::resource::Duration>, default: u64| {
        let s = d
            .as_ref()
            .and_then(|d| d.parse().ok())
            .map_or(default, |d| d.as_secs());
        Duration::from_secs(s.clamp(*KEEPALIVE_SECS.start(), *KEEPALIVE_SECS.end()))
    };
    TcpKeepalive {
        time: secs(&k.time, 7200),
        interval: secs(&k.interval, 75),
        probes: k.probes.map_or(9, |n| {
            u32::try_from(n.clamp(*KEEPALIVE_PROBES.start(), *KEEPALIVE_PROBES.end())).unwrap_or(9)
        }),
    }
}

/// `outbound|<port>|<subset>|<host>`, Envoy's cluster naming.
pub(crate) fn cluster_name(host: &str, port: u16, subset: Option<&str>) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

fn labels_include(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

pub(crate) fn port_u16(n: i64) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

fn u32_of(n: Option<i64>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok())
}

/// One endpoint on the cluster port: `ports[svcPort.name]` > `svcPort.targetPort` >
/// `svcPort.number`; an endpoint without address is unusable.
fn endpoint(ep: &WorkloadEntrySpec, svc_port: Option<&ServicePort>, port: u16) -> Option<Endpoint> {
    let address = ep.address.as_deref()?.trim();
    if address.is_empty() {
        return None;
    }
    let port = svc_port
        .and_then(|sp| {
            ep.ports
                .get(&sp.name)
                .copied()
                .and_then(port_u16)
                .or_else(|| sp.target_port.and_then(port_u16))
                .or_else(|| port_u16(sp.number))
        })
        .unwrap_or(port);
    let weight = ep
        .weight
        .and_then(|w| u32::try_from(w).ok())
        .filter(|w| *w > 0)
        .unwrap_or(1);
    Some(Endpoint {
        address: address.to_string(),
        port,
        weight,
        labels: ep.labels.clone(),
    })
}

/// The fields of a TrafficPolicy that shape a cluster, after Istio's merge.
#[derive(Default, Clone, Copy)]
struct Effective<'a> {
    lb: Option<&'a LoadBalancerSettings>,
    pool: Option<&'a ConnectionPoolSettings>,
    outlier: Option<&'a OutlierDetection>,
}

impl<'a> Effective<'a> {
    /// Port-level settings replace the policy for that port entirely: no field inheritance.
    fn port_level(self, tp: &'a TrafficPolicy, port: u16) -> Effective<'a> {
        match tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|p| port_u16(p.number)) == Some(port))
        {
            Some(p) => Effective {
                lb: p.load_balancer.as_ref(),
                pool: p.connection_pool.as_ref(),
                outlier: p.outlier_detection.as_ref(),
            },
            None => self,
        }
    }
}

/// The `tls` block that applies: subset over port-level over host-level, a port-level entry
/// replacing its policy's `tls` whether or not it sets one (no field inheritance).
fn effective_tls<'a>(
    host_level: Option<&'a TrafficPolicy>,
    subset: Option<&'a Subset>,
    port: u16,
) -> Option<&'a crate::resource::ClientTlsSettings> {
    let level = |tp: &'a TrafficPolicy| -> Option<Option<&'a crate::resource::ClientTlsSettings>> {
        match tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|p| port_u16(p.number)) == Some(port))
        {
            Some(p) => Some(p.tls.as_ref()),
            None => tp.tls.as_ref().map(Some),
        }
    };
    let from_subset = subset
        .and_then(|s| s.traffic_policy.as_ref())
        .and_then(level);
    match from_subset {
        Some(t) => t,
        None => host_level.and_then(level).flatten(),
    }
}

/// Subset over port-level over host-level (Istio's `MergeTrafficPolicy`).
/// `port_h2`: the service port carries HTTP/2 (see [`upstream_protocol`]).
fn policy(
    host_level: Option<&TrafficPolicy>,
    subset: Option<&Subset>,
    port: u16,
    port_h2: bool,
) -> ClusterPolicy {
    let mut eff = Effective::default();
    if let Some(tp) = host_level {
        eff = Effective {
            lb: tp.load_balancer.as_ref(),
            pool: tp.connection_pool.as_ref(),
            outlier: tp.outlier_detection.as_ref(),
        }
        .port_level(tp, port);
    }
    if let Some(tp) = subset.and_then(|s| s.traffic_policy.as_ref()) {
        if tp.load_balancer.is_some() {
            eff.lb = tp.load_balancer.as_ref();
        }
        if tp.connection_pool.is_some() {
            eff.pool = tp.connection_pool.as_ref();
        }
        if tp.outlier_detection.is_some() {
            eff.outlier = tp.outlier_detection.as_ref();
        }
        eff = eff.port_level(tp, port);
    }
    let mut p = ClusterPolicy {
        protocol: upstream_protocol(port_h2, eff.pool.and_then(|p| p.http.as_ref())),
        ..ClusterPolicy::default()
    };
    if let Some(lb) = eff.lb {
        p.lb = lb_policy(lb);
        p.hash_algo = hash_algo(lb);
    }
    if let Some(o) = eff.outlier {
        p.outlier = Some(outlier_policy(o));
    }
    if let Some(pool) = eff.pool {
        if let Some(tcp) = &pool.tcp {
            p.max_connections = u32_of(tcp.max_connections);
            if let Some(d) = tcp.connect_timeout.as_ref().and_then(|d| d.parse().ok()) {
                p.connect_timeout = d;
            }
            p.idle_timeout = tcp.idle_timeout.as_ref().and_then(|d| d.parse().ok());
            p.tcp_idle_timeout = p.idle_timeout;
            p.tcp_keepalive = tcp.tcp_keepalive.as_ref().map(tcp_keepalive);
        }
        if let Some(http) = &pool.http {
            p.max_pending_requests = u32_of(http.http1_max_pending_requests);
            p.max_requests = u32_of(http.http2_max_requests);
            // 0 is Istio's "unlimited".
            p.max_requests_per_connection =
                u32_of(http.max_requests_per_connection).filter(|n| *n > 0);
            p.max_retries = u32_of(http.max_retries);
            if let Some(d) = http.idle_timeout.as_ref().and_then(|d| d.parse().ok()) {
                p.idle_timeout = Some(d);
            }
            // 0 (Istio's default) leaves Envoy's: no limit.
            p.max_concurrent_streams = u32_of(http.max_concurrent_streams).filter(|n| *n > 0);
            p.h2_ping_interval = http
                .http2_keep_alive
                .as_ref()
                .and_then(|k| k.interval.as_ref())
                .and_then(|d| d.parse().ok())
                .filter(|d: &Duration| !d.is_zero());
        }
    }
    p
}

/// Istio's order: the port's protocol makes the cluster HTTP/2 (`setUpstreamProtocol`); then
/// `useClientProtocol: true` replaces that with the client's protocol, and otherwise
/// `h2UpgradePolicy: UPGRADE` makes it HTTP/2 (`applyH2Upgrade`). `DO_NOT_UPGRADE` only declines
/// an upgrade: it does not turn an HTTP/2 port (GRPC, HTTP2) back into HTTP/1.1, nor does it in
/// Istio. `DEFAULT` is the mesh's policy, which is DO_NOT_UPGRADE (there is no mesh config here).
fn upstream_protocol(port_h2: bool, http: Option<&HttpSettings>) -> UpstreamProtocol {
    if http.is_some_and(|h| h.use_client_protocol == Some(true)) {
        return UpstreamProtocol::Client;
    }
    if port_h2 || http.is_some_and(|h| h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)) {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    }
}

/// Ring hash unless maglev is asked for; Envoy's defaults for unset sizes.
fn hash_algo(lb: &LoadBalancerSettings) -> HashAlgo {
    let Some(ch) = &lb.consistent_hash else {
        return HashAlgo::default();
    };
    if let Some(m) = &ch.maglev {
        let table_size = m
            .table_size
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(65537);
        return HashAlgo::Maglev { table_size };
    }
    let min = ch
        .ring_hash
        .as_ref()
        .and_then(|r| r.minimum_ring_size)
        .or(ch.minimum_ring_size)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(1024);
    HashAlgo::RingHash {
        minimum_ring_size: min,
    }
}

/// Istio's outlier defaults for every unset field.
fn outlier_policy(o: &OutlierDetection) -> OutlierPolicy {
    let d = OutlierPolicy::default();
    let dur = |v: &Option<crate::resource::Duration>, def: Duration| {
        v.as_ref().and_then(|d| d.parse().ok()).unwrap_or(def)
    };
    let count = |v: Option<i64>, def: u32| v.and_then(|n| u32::try_from(n).ok()).unwrap_or(def);
    OutlierPolicy {
        consecutive_5xx: count(
            o.consecutive_5xx_errors.or(o.consecutive_errors),
            d.consecutive_5xx,
        ),
        consecutive_gateway_errors: count(
            o.consecutive_gateway_errors,
            d.consecutive_gateway_errors,
        ),
        interval: dur(&o.interval, d.interval),
        base_ejection_time: dur(&o.base_ejection_time, d.base_ejection_time),
        max_ejection_percent: count(o.max_ejection_percent, d.max_ejection_percent).min(100),
        min_health_percent: count(o.min_health_percent, d.min_health_percent).min(100),
    }
}

fn lb_policy(lb: &LoadBalancerSettings) -> LbPolicy {
    if let Some(ch) = &lb.consistent_hash {
        if let Some(h) = ch.http_header_name.as_deref().filter(|h| !h.is_empty()) {
            return LbPolicy::ConsistentHash(HashKey::Header(h.to_ascii_lowercase()));
        }
        if let Some(c) = &ch.http_cookie {
            return LbPolicy::ConsistentHash(HashKey::Cookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl: c.ttl.as_ref().and_then(|d| d.parse().ok()),
                attributes: c.attributes.iter().filter_map(cookie_attribute).collect(),
            });
        }
        if ch.use_source_ip == Some(true) {
            return LbPolicy::ConsistentHash(HashKey::SourceIp);
        }
        if let Some(q) = ch
            .http_query_parameter_name
            .as_deref()
            .filter(|q| !q.is_empty())
        {
            return LbPolicy::ConsistentHash(HashKey::QueryParameter(q.to_string()));
        }
    }
    match lb.simple {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        Some(SimpleLb::Passthrough) => LbPolicy::Passthrough,
        Some(SimpleLb::Unspecified | SimpleLb::LeastConn | SimpleLb::LeastRequest) | None => {
            LbPolicy::LeastRequest
        }
    }
}
