//! The compiled, immutable route snapshot the data plane serves from: listeners by port, a host
//! index per listener leading to ordered routes, and the clusters those routes send to. Built only
//! by `translate`; swapped whole, never mutated.

pub mod authz;
mod explain;
pub mod jwt;
mod l4;
mod lookup;
mod tls;

pub use explain::*;
pub use l4::*;
pub use lookup::*;
pub use tls::*;

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Everything one generation of configuration means to the data plane.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Listeners keyed by Gateway server `port.number` (80 is `--http`, 443 is `--https`).
    pub listeners: BTreeMap<u16, Listener>,
    /// Every cluster some route can send to, by name.
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// TLS termination by Gateway server `port.number` (443 is `--https`): the servers chosen by SNI.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tls: BTreeMap<u16, TlsListener>,
    /// TCP and TLS (passthrough, or terminated then `tcp` routes) by Gateway server `port.number`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub l4: BTreeMap<u16, L4Port>,
    /// The leaf certificate of every TLS Secret that parses, by namespace and name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_certificates: Vec<SecretCertificate>,
    /// JWT rules and AuthorizationPolicies by gateway (`ns/name`, as [`Route::gateway`]); a
    /// gateway with none is absent. Gateways with the same workload labels share one entry.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub security: BTreeMap<String, Arc<authz::GatewaySecurity>>,
    /// A cluster for every ServiceEntry host and port no route sends to, by name: how the
    /// gateway's own clients (the external authorizer of `CUSTOM` policies) reach a ServiceEntry
    /// host like any destination. Not part of the routing snapshot's JSON.
    #[serde(skip)]
    pub service_clusters: BTreeMap<String, Arc<Cluster>>,
}

impl Snapshot {
    /// The cluster of `host` on `port` without subset, routed or not, if a route or a
    /// ServiceEntry defines it.
    pub fn cluster_for_service(&self, host: &str, port: u16) -> Option<&Arc<Cluster>> {
        let is = |c: &&Arc<Cluster>| c.host == host && c.port == port && c.subset.is_none();
        self.clusters
            .values()
            .find(is)
            .or_else(|| self.service_clusters.values().find(is))
    }
}

/// The HTTP routing of one port: the union of every Gateway server on that port.
#[derive(Debug, Default, Serialize)]
pub struct Listener {
    pub port: u16,
    pub hosts: HostIndex,
    /// A server on this port has protocol GRPC-WEB: gRPC-Web requests are bridged to gRPC (Istio
    /// adds Envoy's grpc_web filter to such servers only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub grpc_web: bool,
}

/// Host → virtual host, with Envoy's precedence: exact, then `*.suffix` longest first, then `*`.
/// Lookup cost depends on the number of labels of the request host, not on the number of hosts.
#[derive(Debug, Default, Serialize)]
pub struct HostIndex {
    /// Lowercased exact domains.
    #[serde(serialize_with = "ser_sorted_map")]
    pub exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com` (lowercased).
    #[serde(serialize_with = "ser_sorted_map")]
    pub suffix: HashMap<String, usize>,
    /// The `*` virtual host.
    pub any: Option<usize>,
    pub vhosts: Vec<VirtualHost>,
}

/// The routes served for one domain on one listener.
#[derive(Debug, Serialize)]
pub struct VirtualHost {
    /// The domain as written (`a.example.com`, `*.example.com`, `*`).
    pub domain: String,
    /// Plain-HTTP requests get 301 to `https://` (Gateway server `tls.httpsRedirect`).
    pub https_redirect: bool,
    /// Ordered: first match wins; merged across VirtualServices with catch-alls last.
    pub routes: Vec<Arc<Route>>,
}

/// One compiled `http` rule of a VirtualService.
#[derive(Debug, Serialize)]
pub struct Route {
    /// `vs/<ns>/<name>/http/<i>`: shared by logs, metrics and error headers.
    pub id: String,
    /// `ns/name` of the Gateway this route is served for (metrics label).
    pub gateway: String,
    /// `ns/name` of the VirtualService.
    pub virtual_service: String,
    /// OR across entries; empty means match everything.
    pub matches: Vec<RouteMatch>,
    pub action: RouteAction,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Whole-request timeout; `None` is Istio's default (no timeout).
    pub timeout: Option<Duration>,
    pub retries: RetryPolicy,
    pub fault: Option<Fault>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Cors>,
}

/// AND of every condition of one `match` entry.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RouteMatch {
    pub uri: Option<Matcher>,
    pub scheme: Option<Matcher>,
    pub method: Option<Matcher>,
    pub authority: Option<Matcher>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
    pub port: Option<u16>,
    /// `@request.auth.claims.<name>` header matches: evaluated on the verified JWT.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimMatch>,
}

/// A JWT claim condition (Istio's metadata match on `request.auth.claims`): a string claim, or
/// any string of a list claim, matches; `matcher: None` is a presence test. A request without a
/// verified token has no claims: a `headers` claim match fails, a `withoutHeaders` one holds.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimMatch {
    /// The claim's path of names (`a.b` is `["a", "b"]`).
    pub path: Vec<String>,
    pub matcher: Option<Matcher>,
    pub invert: bool,
}

/// A compiled `StringMatch`. `ignore_case` is `ignoreUriCase` (exact and prefix only).
#[derive(Debug, Clone, Serialize)]
pub enum Matcher {
    Exact {
        value: String,
        ignore_case: bool,
    },
    Prefix {
        value: String,
        ignore_case: bool,
    },
    /// Envoy's `path_separated_prefix` (Kubernetes Ingress `pathType: Prefix`, element-wise):
    /// `/foo` matches `/foo` and `/foo/bar`, not `/foobar`. `value` never ends with `/`.
    PathSeparatedPrefix {
        value: String,
    },
    /// Anchored `^(?:…)$` so that it matches the whole value (RE2 full match).
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
}

fn ser_cluster_name<S: serde::Serializer>(c: &Arc<Cluster>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&c.name)
}

/// HashMaps serialize in a per-process random order; dumps and golden files need a stable one.
fn ser_sorted_map<S: serde::Serializer>(
    m: &HashMap<String, usize>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().collect::<BTreeMap<_, _>>())
}

fn ser_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// A header condition: `matcher: None` is a presence test; `invert` is `withoutHeaders`.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    /// Lowercase.
    pub name: String,
    pub matcher: Option<Matcher>,
    pub invert: bool,
}

/// A query parameter condition: `matcher: None` is a presence test.
#[derive(Debug, Clone, Serialize)]
pub struct QueryMatch {
    pub name: String,
    pub matcher: Option<Matcher>,
}

#[derive(Debug, Serialize)]
pub enum RouteAction {
    Forward(Forward),
    Redirect(Redirect),
    Direct(DirectResponse),
}

/// Weighted destinations plus the request rewrite that applies before forwarding.
#[derive(Debug, Serialize)]
pub struct Forward {
    pub destinations: Vec<WeightedDestination>,
    /// Sum of `weight`s; never 0 (one destination alone gets weight 1).
    pub total_weight: u32,
    pub rewrite: Option<Rewrite>,
}

#[derive(Debug, Serialize)]
pub struct WeightedDestination {
    /// Normalised weight; 0 gets no traffic.
    pub weight: u32,
    /// `host` as written in the VirtualService (metrics label `destination_service`).
    pub host: String,
    pub subset: Option<String>,
    pub port: u16,
    pub target: Target,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// Where a destination sends: a cluster, or why there is none (answered at request time).
#[derive(Debug, Serialize)]
pub enum Target {
    Cluster(#[serde(serialize_with = "ser_cluster_name")] Arc<Cluster>),
    /// The subset is defined by no DestinationRule for the host: 503 `NC`.
    NoCluster {
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    /// Replaces the matched prefix (prefix match) or the whole path (exact or regex match).
    pub uri: Option<String>,
    /// `uriRegexRewrite`: anchored-less RE2 match, `\1` replaced by capture groups (as `$1`).
    pub uri_regex: Option<RegexRewrite>,
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegexRewrite {
    #[serde(serialize_with = "ser_regex")]
    pub pattern: regex::Regex,
    /// Replacement in the `regex` crate's syntax (`${1}`), converted from RE2's `\1`.
    pub replacement: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    /// Replaces the whole path; `None` keeps it.
    pub uri: Option<String>,
    /// Replaces the matched prefix.
    pub prefix_rewrite: Option<String>,
    pub authority: Option<String>,
    pub port: Option<RedirectPort>,
    pub scheme: Option<String>,
    /// 301 by default.
    pub code: u16,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub enum RedirectPort {
    Fixed(u16),
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirectResponse {
    pub status: u16,
    pub body: bytes_body::Body,
}

/// A body kept as bytes but shown as text (or base64) in golden files.
pub mod bytes_body {
    use serde::Serialize;

    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Body(pub Vec<u8>);

    impl Serialize for Body {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&String::from_utf8_lossy(&self.0))
        }
    }
}

/// Header operations in the order Envoy applies them: remove, then set, then add.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

impl Serialize for HeaderOps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let pairs = |v: &[(http::HeaderName, http::HeaderValue)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect()
        };
        let mut st = s.serialize_struct("HeaderOps", 3)?;
        st.serialize_field("set", &pairs(&self.set))?;
        st.serialize_field("add", &pairs(&self.add))?;
        let remove: Vec<&str> = self.remove.iter().map(|n| n.as_str()).collect();
        st.serialize_field("remove", &remove)?;
        st.end()
    }
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Retries as compiled from `retries` (or Istio's default policy when absent).
#[derive(Debug, Clone, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first try; 0 disables.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// Tokens of `retryOn`, lowercased (numeric codes go to `status_codes`). Shared: most routes
    /// carry Istio's default list, one allocation for all of them.
    pub retry_on: Arc<[String]>,
    pub status_codes: Vec<u16>,
    pub ignore_previous_hosts: bool,
    pub backoff: Duration,
}

/// Istio's default `retryOn`, built once per process.
static DEFAULT_RETRY_ON: LazyLock<Arc<[String]>> = LazyLock::new(|| {
    [
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
});

impl Default for RetryPolicy {
    /// Istio's default when `retries` is absent.
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: DEFAULT_RETRY_ON.clone(),
            status_codes: Vec::new(),
            ignore_previous_hosts: true,
            backoff: Duration::from_millis(25),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultDelay {
    pub delay: Duration,
    /// 0..=100.
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultAbort {
    pub kind: AbortKind,
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub enum AbortKind {
    Http(u16),
    /// gRPC status code number (e.g. 14 for UNAVAILABLE).
    Grpc(u32),
}

#[derive(Debug, Serialize)]
pub struct Mirror {
    pub host: String,
    pub port: u16,
    pub target: Target,
    /// 0..=100.
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cors {
    pub allow_origins: Vec<Matcher>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    pub max_age: Option<u64>,
    pub allow_credentials: Option<bool>,
    /// `unmatchedPreflights: IGNORE` (default FORWARD).
    pub ignore_unmatched_preflights: bool,
}

/// An upstream: a host and port, optionally narrowed to a subset, with its endpoints and policy.
#[derive(Debug, Serialize)]
pub struct Cluster {
    /// Envoy-style `outbound|<port>|<subset>|<host>`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
    pub discovery: Discovery,
    pub policy: ClusterPolicy,
}

/// How a cluster finds its endpoints.
#[derive(Debug, Serialize)]
pub enum Discovery {
    /// Endpoints known at translation time (a STATIC ServiceEntry, or an IP destination). An
    /// endpoint address may still be a DNS name (resolution DNS with endpoints).
    Static(Vec<Endpoint>),
    /// Resolve `host` by DNS at request time (no ServiceEntry lists it, or resolution DNS without
    /// endpoints), on `port`.
    Dns { host: String, port: u16 },
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// IP or DNS name.
    pub address: String,
    pub port: u16,
    /// Relative weight, ≥ 1.
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
}

/// The effective DestinationRule policy for one cluster (subset over port-level over host-level).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterPolicy {
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub max_connections: Option<u32>,
    pub idle_timeout: Option<Duration>,
    /// `connectionPool.tcp.idleTimeout` alone (`http.idleTimeout` does not apply): how long an L4
    /// connection may stay silent both ways; `None` is Istio's default for TCP, 1 h.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_idle_timeout: Option<Duration>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    /// Ring hash or maglev, for `LbPolicy::ConsistentHash`.
    pub hash_algo: HashAlgo,
    /// `outlierDetection`, with Istio's defaults for unset fields; `None` when not configured.
    pub outlier: Option<OutlierPolicy>,
    /// `connectionPool.tcp.tcpKeepalive`: TCP keepalive on upstream connections.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `tls` with mode SIMPLE or MUTUAL; `None` is plain text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Arc<UpstreamTls>>,
    /// The HTTP version spoken to the endpoints, chosen as Istio chooses it.
    #[serde(skip_serializing_if = "UpstreamProtocol::is_http1")]
    pub protocol: UpstreamProtocol,
    /// `connectionPool.http.maxConcurrentStreams`: streams at once on one upstream HTTP/2
    /// connection (more open another connection); `None` is Envoy's default, no limit of ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// `connectionPool.http.http2KeepAlive.interval`: HTTP/2 PINGs on idle upstream connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_ping_interval: Option<Duration>,
}

/// Which HTTP version a cluster's upstream connections speak (Istio's `setUpstreamProtocol`,
/// `applyH2Upgrade` and `useClientProtocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (Istio's default at a gateway: the mesh's `h2UpgradePolicy` is DO_NOT_UPGRADE).
    #[default]
    Http1,
    /// HTTP/2: prior knowledge (h2c) in plain text, ALPN `h2` over TLS.
    Http2,
    /// The protocol the client spoke (`useClientProtocol: true`).
    Client,
}

impl UpstreamProtocol {
    pub fn is_http1(&self) -> bool {
        *self == UpstreamProtocol::Http1
    }
}

/// TCP keepalive socket options, each within what Linux accepts (1..=32767 s, 1..=127 probes);
/// an unset field has Linux's default, since the socket options are set together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TcpKeepalive {
    /// Idle time before the first probe (`time`; 7200 s).
    pub time: Duration,
    /// Between unanswered probes (`interval`; 75 s).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (`probes`; 9).
    pub probes: u32,
}

/// The consistent-hash table: Envoy's ring hash (the default) or maglev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HashAlgo {
    RingHash { minimum_ring_size: u64 },
    Maglev { table_size: u64 },
}

impl Default for HashAlgo {
    fn default() -> Self {
        HashAlgo::RingHash {
            minimum_ring_size: 1024,
        }
    }
}

/// Outlier detection: consecutive errors eject an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierPolicy {
    /// 0 disables.
    pub consecutive_5xx: u32,
    /// 0 disables (Istio's default).
    pub consecutive_gateway_errors: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

impl Default for OutlierPolicy {
    /// Istio's defaults when `outlierDetection` is present.
    fn default() -> Self {
        OutlierPolicy {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}

impl Default for ClusterPolicy {
    fn default() -> Self {
        ClusterPolicy {
            lb: LbPolicy::LeastRequest,
            connect_timeout: Duration::from_secs(10),
            max_connections: None,
            idle_timeout: None,
            tcp_idle_timeout: None,
            max_pending_requests: None,
            max_requests: None,
            max_requests_per_connection: None,
            max_retries: None,
            hash_algo: HashAlgo::default(),
            outlier: None,
            tcp_keepalive: None,
            tls: None,
            protocol: UpstreamProtocol::Http1,
            max_concurrent_streams: None,
            h2_ping_interval: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    Passthrough,
    ConsistentHash(HashKey),
}

#[derive(Debug, Clone, Serialize)]
pub enum HashKey {
    Header(String),
    Cookie {
        name: String,
        path: Option<String>,
        ttl: Option<Duration>,
        /// `attributes`, as `name` or `name=value`, written into the cookie the gateway sets.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        attributes: Vec<String>,
    },
    SourceIp,
    QueryParameter(String),
}
