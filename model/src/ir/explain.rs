//! "Why did my request go there?": what the data plane would do with a described request under a
//! snapshot, computed by the lookup the proxy runs ([`Snapshot::lookup_observed`] and
//! [`Snapshot::tls_admits`]), with every rule passed over before the winner and the condition it
//! failed. Serves `POST /debug/explain` and `gateway explain` alike; pure, no I/O.

use super::{
    Cluster, Cors, Discovery, Fault, HeaderMatch, HeaderOps, LbPolicy, Listener, LookupObserver,
    Matcher, Mismatch, OutlierPolicy, QueryMatch, Redirect, RequestView, RetryPolicy, Rewrite,
    Route, RouteAction, RouteMatch, Snapshot, Target, TcpKeepalive,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The gateway port whose listener terminates TLS (`--https`).
const TLS_PORT: u16 = 443;

/// A request described in JSON (`POST /debug/explain`) or on the command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExplainRequest {
    /// The Gateway port the request arrives on (80 is `--http`, 443 is `--https`).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The Host header (or `:authority`), may carry a port.
    pub host: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Path with an optional `?query`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Request headers; a list gives a header several values.
    #[serde(default)]
    pub headers: BTreeMap<String, OneOrMany>,
    /// The ClientHello's server name on port 443; `null` is a client that sends none.
    #[serde(default)]
    pub sni: Option<String>,
    /// The client's address. Accepted for completeness; no HTTP route condition reads it.
    #[serde(default)]
    pub client_address: Option<String>,
}

/// A header value, or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn default_port() -> u16 {
    80
}
fn default_method() -> String {
    "GET".to_string()
}
fn default_path() -> String {
    "/".to_string()
}

/// A described request that cannot be sent: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainError {
    /// `headers.x-a`, `method`, …
    pub field: String,
    pub message: String,
}

impl fmt::Display for ExplainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ExplainError {}

/// What the data plane would do with one request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation<'s> {
    pub listener: ListenerOutcome,
    /// On port 443: the TLS server the SNI selects and whether it admits the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOutcome>,
    /// The domain of the virtual host the host index chose (`a.example.com`, `*.example.com`, `*`).
    pub virtual_host: Option<&'s str>,
    /// `vs/<ns>/<name>/http/<i>`: the id in metrics, the access log and `x-gateway-error`.
    pub route: Option<&'s str>,
    pub virtual_service: Option<&'s str>,
    pub gateway: Option<&'s str>,
    /// The index of the winning rule in the VirtualService's `http` list.
    pub rule: Option<usize>,
    /// The conditions of the match entry that accepted the request (`any request` for a
    /// catch-all).
    #[serde(rename = "match")]
    pub matched: Option<String>,
    /// `route`, `redirect`, `directResponse` or `notFound`.
    pub action: &'static str,
    /// The status of an answer the gateway makes itself (404, a redirect, a direct response,
    /// 503 for a destination without a cluster).
    pub status: Option<u16>,
    /// Why the request is not routed (`notFound`), or why the gateway answers itself.
    pub reason: Option<String>,
    pub destinations: Vec<DestinationOutcome<'s>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<&'s Redirect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<Policies<'s>>,
    /// In order: every route considered before the winner and the condition that failed.
    pub skipped: Vec<SkippedRoute>,
    /// Parts of the described request that do not take part in the decision.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerOutcome {
    pub port: u16,
    pub served: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsOutcome {
    pub sni: Option<String>,
    /// `<ns>/<gateway> spec.servers[<i>]`, `None` when no server claims the SNI.
    pub server: Option<String>,
    pub hosts: Vec<String>,
    /// Whether the selected server's hosts include the request's host.
    pub admitted: bool,
    /// Why handshakes for the server fail, when they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationOutcome<'s> {
    pub host: &'s str,
    pub subset: Option<&'s str>,
    pub port: u16,
    pub weight: u32,
    /// The cluster name, `None` when the subset has no DestinationRule (503 `NC`).
    pub cluster: Option<&'s str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<&'s str>,
    /// `address:port` of each endpoint known at translation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// `host:port` resolved by DNS at request time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<&'s LbPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker<'s>>,
    /// Upstream TLS: the SNI sent (`None`: the request's host) and any problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<UpstreamTlsOutcome<'s>>,
}

/// Connection pool limits and outlier detection of a cluster.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker<'s> {
    pub connect_timeout: Duration,
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    pub idle_timeout: Option<Duration>,
    pub tcp_keepalive: Option<&'s TcpKeepalive>,
    pub outlier_detection: Option<&'s OutlierPolicy>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTlsOutcome<'s> {
    pub sni: Option<&'s str>,
    pub problem: Option<&'s str>,
}

#[derive(Debug, Serialize)]
pub struct DirectOutcome {
    pub status: u16,
    pub body: String,
}

/// The winning route's policies as the compiled IR has them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policies<'s> {
    pub timeout: Option<Duration>,
    pub retries: &'s RetryPolicy,
    pub fault: Option<&'s Fault>,
    pub mirrors: Vec<MirrorOutcome<'s>>,
    pub cors: Option<&'s Cors>,
    pub rewrite: Option<&'s Rewrite>,
    pub request_headers: &'s HeaderOps,
    pub response_headers: &'s HeaderOps,
}

#[derive(Debug, Serialize)]
pub struct MirrorOutcome<'s> {
    pub host: &'s str,
    pub port: u16,
    pub percent: f64,
    pub cluster: Option<&'s str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRoute {
    pub route: String,
    pub reason: String,
}

impl ExplainRequest {
    /// The request's headers as the proxy would see them.
    fn header_map(&self) -> Result<http::HeaderMap, ExplainError> {
        let mut map = http::HeaderMap::new();
        for (name, values) in &self.headers {
            let field = format!("headers.{name}");
            let n = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| ExplainError {
                field: field.clone(),
                message: "not a valid header name".to_string(),
            })?;
            let values: &[String] = match values {
                OneOrMany::One(v) => std::slice::from_ref(v),
                OneOrMany::Many(v) => v,
            };
            for v in values {
                let v = http::HeaderValue::from_str(v).map_err(|_| ExplainError {
                    field: field.clone(),
                    message: "not a valid header value".to_string(),
                })?;
                map.append(n.clone(), v);
            }
        }
        Ok(map)
    }

    fn check(&self) -> Result<(), ExplainError> {
        if http::Method::from_bytes(self.method.as_bytes()).is_err() {
            return Err(ExplainError {
                field: "method".to_string(),
                message: format!("{:?} is not an HTTP method", self.method),
            });
        }
        if !self.path.starts_with('/') {
            return Err(ExplainError {
                field: "path".to_string(),
                message: "must start with '/'".to_string(),
            });
        }
        if self.host.is_empty() {
            return Err(ExplainError {
                field: "host".to_string(),
                message: "must not be empty".to_string(),
            });
        }
        Ok(())
    }
}

/// Records what the lookup passes over, in order.
#[derive(Default)]
struct Recorder {
    listener: bool,
    /// Reasons of the match entries of the route being considered.
    pending: Vec<String>,
    skipped: Vec<SkippedRoute>,
}

impl LookupObserver for Recorder {
    fn listener(&mut self, listener: Option<&Listener>) {
        self.listener = listener.is_some();
    }
    fn mismatch(&mut self, _route: &Route, _entry: usize, why: Mismatch<'_>) {
        self.pending.push(why.to_string());
    }
    fn skipped(&mut self, route: &Arc<Route>) {
        let reasons = std::mem::take(&mut self.pending);
        self.skipped.push(SkippedRoute {
            route: route.id.clone(),
            reason: reasons.join("; "),
        });
    }
}

impl Snapshot {
    /// What the data plane would do with `req`: the same host index and route walk as the proxy,
    /// recording every route passed over.
    pub fn explain(&self, req: &ExplainRequest) -> Result<Explanation<'_>, ExplainError> {
        req.check()?;
        let headers = req.header_map()?;
        let tls = req.port == TLS_PORT;
        let (path, query) = match req.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.path.as_str(), None),
        };
        let view = RequestView {
            method: &req.method,
            scheme: if tls { "https" } else { "http" },
            authority: &req.host,
            path,
            query,
            port: req.port,
            headers: &headers,
            claims: None,
        };
        let mut notes = Vec::new();
        if req.client_address.is_some() {
            notes.push("clientAddress: no HTTP route condition reads the client address; it only feeds consistent hashing by source IP".to_string());
        }
        if req.sni.is_some() && !tls {
            notes.push(format!(
                "sni: port {} is plain HTTP; the SNI is ignored",
                req.port
            ));
        }
        let mut out = Explanation {
            listener: ListenerOutcome {
                port: req.port,
                served: false,
                reason: None,
            },
            tls: None,
            virtual_host: None,
            route: None,
            virtual_service: None,
            gateway: None,
            rule: None,
            matched: None,
            action: "notFound",
            status: Some(404),
            reason: None,
            destinations: Vec::new(),
            redirect: None,
            direct_response: None,
            policies: None,
            skipped: Vec::new(),
            notes,
        };
        if tls {
            let server = self
                .tls
                .get(&req.port)
                .and_then(|l| l.server_for(req.sni.as_deref()));
            let admitted = self.tls_admits(req.port, req.sni.as_deref(), &req.host);
            out.tls = Some(TlsOutcome {
                sni: req.sni.clone(),
                server: server.map(|s| s.name.clone()),
                hosts: server.map(|s| s.hosts.clone()).unwrap_or_default(),
                admitted,
                problem: server.and_then(|s| s.problem.clone()),
            });
            if !admitted {
                out.listener.served = self.listeners.contains_key(&req.port);
                out.reason = Some(match server {
                    None => match &req.sni {
                        Some(sni) => format!("no TLS server on port {} claims SNI {sni:?}: the handshake fails", req.port),
                        None => format!("no TLS server on port {} serves clients that send no SNI (none has host \"*\"): the handshake fails", req.port),
                    },
                    Some(s) => format!(
                        "host {:?} is not among the hosts of TLS server {} that SNI {:?} selects",
                        super::strip_port(&req.host),
                        s.name,
                        req.sni.as_deref().unwrap_or("")
                    ),
                });
                return Ok(out);
            }
        }
        let mut rec = Recorder::default();
        let found = self.lookup_observed(&view, &mut rec);
        out.listener.served = rec.listener;
        out.skipped = rec.skipped;
        let Some((vhost, route)) = found else {
            out.reason = Some(if rec.listener {
                format!(
                    "no virtual host on port {} matches host {:?}",
                    req.port,
                    super::strip_port(&req.host)
                )
            } else {
                let why = format!("no Gateway server on port {}", req.port);
                out.listener.reason = Some(why.clone());
                why
            });
            return Ok(out);
        };
        out.virtual_host = Some(&vhost.domain);
        if vhost.https_redirect && !tls {
            // The proxy answers before looking at the route: the access log has no route id.
            out.action = "redirect";
            out.status = Some(301);
            out.reason = Some(format!(
                "the Gateway server of {:?} sets tls.httpsRedirect: plain HTTP is redirected to https://",
                vhost.domain
            ));
            return Ok(out);
        }
        let Some(winner) = route else {
            out.reason = Some(format!(
                "no route of virtual host {:?} matches",
                vhost.domain
            ));
            return Ok(out);
        };
        describe_route(&mut out, winner);
        Ok(out)
    }
}

fn describe_route<'s>(out: &mut Explanation<'s>, winner: super::Winner<'s>) {
    let route: &'s Route = winner.route;
    out.route = Some(&route.id);
    out.virtual_service = Some(&route.virtual_service);
    out.gateway = Some(&route.gateway);
    out.rule = route.id.rsplit('/').next().and_then(|i| i.parse().ok());
    out.matched = Some(
        winner
            .entry
            .map_or_else(|| "any request".to_string(), describe_match),
    );
    out.reason = None;
    let mut rewrite = None;
    match &route.action {
        RouteAction::Forward(f) => {
            out.action = "route";
            out.status = None;
            out.destinations = f
                .destinations
                .iter()
                .map(|d| {
                    let (cluster, problem) = match &d.target {
                        Target::Cluster(c) => (Some(c.as_ref()), None),
                        Target::NoCluster { reason } => (None, Some(reason.as_str())),
                    };
                    destination(
                        d.host.as_str(),
                        d.subset.as_deref(),
                        d.port,
                        d.weight,
                        cluster,
                        problem,
                    )
                })
                .collect();
            if f.destinations.len() == 1 {
                if let Some(p) = out.destinations.first().and_then(|d| d.problem) {
                    out.status = Some(503);
                    out.reason = Some(format!("503 NC: {p}"));
                }
            }
            rewrite = f.rewrite.as_ref();
        }
        RouteAction::Redirect(r) => {
            out.action = "redirect";
            out.status = Some(r.code);
            out.redirect = Some(r);
        }
        RouteAction::Direct(d) => {
            out.action = "directResponse";
            out.status = Some(d.status);
            out.direct_response = Some(DirectOutcome {
                status: d.status,
                body: String::from_utf8_lossy(&d.body.0).into_owned(),
            });
        }
    }
    out.policies = Some(Policies {
        timeout: route.timeout,
        retries: &route.retries,
        fault: route.fault.as_ref(),
        mirrors: route
            .mirrors
            .iter()
            .map(|m| MirrorOutcome {
                host: &m.host,
                port: m.port,
                percent: m.percent,
                cluster: match &m.target {
                    Target::Cluster(c) => Some(c.name.as_str()),
                    Target::NoCluster { .. } => None,
                },
            })
            .collect(),
        cors: route.cors.as_ref(),
        rewrite,
        request_headers: &route.request_headers,
        response_headers: &route.response_headers,
    });
}

fn destination<'s>(
    host: &'s str,
    subset: Option<&'s str>,
    port: u16,
    weight: u32,
    cluster: Option<&'s Cluster>,
    problem: Option<&'s str>,
) -> DestinationOutcome<'s> {
    let (endpoints, dns) = match cluster.map(|c| &c.discovery) {
        Some(Discovery::Static(eps)) => (
            Some(
                eps.iter()
                    .map(|e| join_host_port(&e.address, e.port))
                    .collect(),
            ),
            None,
        ),
        Some(Discovery::Dns { host, port }) => (None, Some(join_host_port(host, *port))),
        None => (None, None),
    };
    DestinationOutcome {
        host,
        subset,
        port,
        weight,
        cluster: cluster.map(|c| c.name.as_str()),
        problem,
        endpoints,
        dns,
        load_balancer: cluster.map(|c| &c.policy.lb),
        circuit_breaker: cluster.map(|c| CircuitBreaker {
            connect_timeout: c.policy.connect_timeout,
            max_connections: c.policy.max_connections,
            max_pending_requests: c.policy.max_pending_requests,
            max_requests: c.policy.max_requests,
            max_requests_per_connection: c.policy.max_requests_per_connection,
            max_retries: c.policy.max_retries,
            idle_timeout: c.policy.idle_timeout,
            tcp_keepalive: c.policy.tcp_keepalive.as_ref(),
            outlier_detection: c.policy.outlier.as_ref(),
        }),
        upstream_tls: cluster
            .and_then(|c| c.policy.tls.as_deref())
            .map(|t| UpstreamTlsOutcome {
                sni: t.sni.as_deref(),
                problem: t.problem.as_deref(),
            }),
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The conditions of one match entry, as `uri prefix "/api", header x-v exact "2"`.
fn describe_match(m: &RouteMatch) -> String {
    let mut parts = Vec::new();
    if let Some(p) = m.port {
        parts.push(format!("port {p}"));
    }
    for (what, matcher) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(matcher) = matcher {
            parts.push(format!("{what} {matcher}"));
        }
    }
    for h in &m.headers {
        parts.push(describe_header(h));
    }
    for q in &m.query_params {
        parts.push(match &q.matcher {
            None => format!("query parameter {} present", q.name),
            Some(matcher) => format!("query parameter {}: {matcher}", q.name),
        });
    }
    if parts.is_empty() {
        "any request".to_string()
    } else {
        parts.join(", ")
    }
}

fn describe_header(h: &HeaderMatch) -> String {
    match (&h.matcher, h.invert) {
        (None, false) => format!("header {} present", h.name),
        (None, true) => format!("header {} absent", h.name),
        (Some(m), false) => format!("header {}: {m}", h.name),
        (Some(m), true) => format!("header {}: not {m}", h.name),
    }
}

impl fmt::Display for Matcher {
    /// `exact "v2"`, `prefix "/api"`, `regex "/a.*"` (as written, without the anchoring the
    /// gateway adds), with ` (ignoring case)` for `ignoreUriCase`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact { value, ignore_case } | Matcher::Prefix { value, ignore_case } => {
                let kind = if matches!(self, Matcher::Exact { .. }) {
                    "exact"
                } else {
                    "prefix"
                };
                write!(f, "{kind} {value:?}")?;
                if *ignore_case {
                    f.write_str(" (ignoring case)")?;
                }
                Ok(())
            }
            Matcher::PathSeparatedPrefix { value } => write!(f, "path prefix {value:?}"),
            Matcher::Regex(re) => {
                let s = re.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                write!(f, "regex {inner:?}")
            }
        }
    }
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Port { want, got } => write!(f, "port {got} is not {want}"),
            Mismatch::Method {
                matcher:
                    Matcher::Exact {
                        value,
                        ignore_case: false,
                    },
                got,
            } => write!(f, "method {got} is not {value}"),
            Mismatch::Uri { matcher, got } => write!(f, "uri {matcher} does not match {got:?}"),
            Mismatch::Scheme { matcher, got } => {
                write!(f, "scheme {matcher} does not match {got:?}")
            }
            Mismatch::Method { matcher, got } => {
                write!(f, "method {matcher} does not match {got:?}")
            }
            Mismatch::Authority { matcher, got } => {
                write!(f, "authority {matcher} does not match {got:?}")
            }
            Mismatch::Header { header, got } => header_mismatch(f, header, got.as_deref()),
            Mismatch::Query { query, got } => query_mismatch(f, query, *got),
            Mismatch::Claim { claim, got } => {
                let name = claim.path.join(".");
                match (got, claim.invert) {
                    (None, false) => write!(f, "JWT claim {name} is absent (or no verified token)"),
                    (Some(v), false) => write!(f, "JWT claim {name} does not match {v:?}"),
                    (v, true) => write!(f, "JWT claim {name} must not match but is {v:?}"),
                }
            }
        }
    }
}

fn header_mismatch(f: &mut fmt::Formatter<'_>, h: &HeaderMatch, got: Option<&str>) -> fmt::Result {
    let name = &h.name;
    match (&h.matcher, h.invert, got) {
        (_, false, None) => write!(f, "header {name} is absent"),
        (Some(m), false, Some(v)) => write!(f, "header {name}: {m} does not match {v:?}"),
        (None, false, Some(_)) => write!(f, "header {name} is present"),
        (None, true, Some(v)) => write!(f, "header {name} must be absent but is {v:?}"),
        (Some(m), true, v) => write!(
            f,
            "header {name} must not match {m} but is {:?}",
            v.unwrap_or("")
        ),
        (None, true, None) => write!(f, "header {name} is absent"),
    }
}

fn query_mismatch(f: &mut fmt::Formatter<'_>, q: &QueryMatch, got: Option<&str>) -> fmt::Result {
    match (&q.matcher, got) {
        (_, None) => write!(f, "query parameter {} is absent", q.name),
        (Some(m), Some(v)) => write!(f, "query parameter {}: {m} does not match {v:?}", q.name),
        (None, Some(_)) => write!(f, "query parameter {} is present", q.name),
    }
}

#[cfg(test)]
mod tests;
