//! The Pingora `ProxyHttp` implementation: loads the snapshot once per request, routes with Istio's
//! semantics, answers redirects, direct responses, faults, CORS preflights and routing failures
//! itself (with Envoy's response flags), and forwards everything else to an endpoint chosen by the
//! cluster's policy, with retries, timeouts, circuit breaking, outlier detection and mirroring.

use crate::accesslog::{AccessLogger, Entry};
use crate::balancer::{self, Balancers, ClusterState, Pick, Slot};
use crate::metrics::{flags_label, method_label, Metrics, RequestLabels};
use crate::mirror;
use crate::policy::{self, Failure};
use crate::routing::{
    apply_request_ops, apply_response_ops, authority_of, choose_destination, matched_uri,
    new_request_id, new_traceparent, redirect_location, replace_prefix, respond, strip_port,
};
use crate::upstream::{Resolved, Upstreams};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use model::ir::{
    self, AbortKind, HashKey, LbPolicy, RequestView, Route, RouteAction, Snapshot, Target,
    WeightedDestination,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorType;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What a listener (a local port) serves: the Gateway port number and whether it terminates TLS.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub gateway_port: u16,
    pub tls: bool,
    /// A TLS listener's live connections: what each handshake chose (the SNI).
    pub connections: Option<Arc<crate::tls::Connections>>,
    /// `gateway_open_connections{listener}` for this listener.
    pub open_connections: Option<prometheus::IntGauge>,
}

const X_REQUEST_ID: &str = "x-request-id";
const TRACEPARENT: &str = "traceparent";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_ENVOY_EXTERNAL_ADDRESS: &str = "x-envoy-external-address";

/// A local port no listener is registered for (only in tests): plain HTTP on port 80.
const PLAIN_80: ListenerInfo = ListenerInfo {
    gateway_port: 80,
    tls: false,
    connections: None,
    open_connections: None,
};

/// Counts a downstream connection in `gateway_open_connections` for as long as it lives: created
/// by its first request, carried from request to request on a kept-alive connection through
/// Pingora's connection context, dropped with the connection. (HTTP/2 streams count one each.)
pub struct ConnectionGuard(prometheus::IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The proxy: shared handles; per-request state lives in [`Ctx`].
pub struct GatewayProxy {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub upstreams: Arc<Upstreams>,
    pub balancers: Arc<Balancers>,
    pub metrics: Metrics,
    /// Local port → listener, fixed at start.
    pub listeners: Arc<HashMap<u16, ListenerInfo>>,
    /// Requests in flight, for draining on SIGTERM.
    pub inflight: Arc<AtomicUsize>,
    pub access_log: AccessLogger,
    /// Draining: every answer closes its connection, so that clients move to the new process
    /// (upgrade) or elsewhere before the listeners close, instead of racing an idle close.
    pub health: Arc<admin::Health>,
    /// `--mesh-config`: ext-authz providers and the gateway topology.
    pub mesh: Arc<model::mesh::MeshConfig>,
    /// Mirrored copies: their connector and counters.
    pub mirrors: Arc<mirror::Mirrors>,
    /// ACME HTTP-01 challenges to answer on the port-80 listener (with `--acme-directory`).
    pub acme: Option<Arc<admin::acme::Challenges>>,
    /// JWT keys, the external authorizer, their counters.
    pub security: Arc<crate::security::Security>,
    /// Edge settings: trusted proxies, body limits.
    pub edge: Arc<crate::edge::Edge>,
}

/// Decrements the in-flight count when a request's context (or a proxied TCP connection) is
/// dropped, however it ends: the drain waits for the count to reach zero.
pub struct InflightGuard(Arc<AtomicUsize>);

impl InflightGuard {
    pub fn enter(count: &Arc<AtomicUsize>) -> InflightGuard {
        count.fetch_add(1, Ordering::AcqRel);
        InflightGuard(count.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A local answer decided in a phase that cannot write it (status, flag, body), written by
/// `fail_to_proxy`.
type LocalError = (u16, &'static str, &'static str);

/// Per-request state. The snapshot is loaded once, so every phase of a request (and its retries)
/// sees one configuration even if a reload happens meanwhile.
pub struct Ctx {
    _inflight: InflightGuard,
    start: Instant,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<Arc<Route>>,
    dest: Option<usize>,
    cluster: Option<Arc<ir::Cluster>>,
    state: Option<Arc<ClusterState>>,
    endpoints: Arc<Vec<Resolved>>,
    tried: Vec<SocketAddr>,
    /// Counters held for the request's lifetime (circuit breaker, least request, retries).
    slots: Vec<Slot>,
    endpoint_slot: Option<Slot>,
    retries_left: u32,
    attempts: u32,
    hash: Option<u64>,
    /// A consistent-hash cookie the gateway generated, to set on the response.
    set_cookie: Option<String>,
    deadline: Option<Instant>,
    /// The attempt failed on a retriable upstream status (the marker error of a status retry).
    status_retry: bool,
    local_error: Option<LocalError>,
    flags: Vec<&'static str>,
    tls: bool,
    /// The SNI of the TLS connection the request came on.
    sni: Option<Arc<str>>,
    upstream_start: Option<Instant>,
    /// The rewritten path (without query), computed at routing time where the match is known.
    new_path: Option<String>,
    /// `x-request-id` generated for this request when the client sent none (the client's own is
    /// read from the request when needed, never copied).
    request_id: Option<http::HeaderValue>,
    upstream_service_time: Option<Duration>,
    /// Origin allowed by the route's CORS policy: the response gets CORS headers.
    cors_origin: Option<String>,
    mirror: Option<mirror::Pending>,
    /// The downstream connection's unit of `gateway_open_connections`.
    connection: Option<ConnectionGuard>,
    /// A gRPC-Web text request on a GRPC-WEB server, bridged here (Pingora's bridge does binary).
    web_text: Option<crate::grpc_web_text::Bridge>,
    /// What authentication and authorization decided (identity, deciding policy, header changes).
    auth: crate::security::RequestAuth,
    /// The `grpc-status` of the answer's trailers, for `gateway_grpc_requests_total`.
    grpc_status: Option<u32>,
    /// The body's size and pace so far.
    body: crate::request_limits::BodyState,
    /// The client address (`crate::client_addr`), once the header is read.
    client: Option<std::net::IpAddr>,
}

impl Ctx {
    fn destination(&self) -> Option<&WeightedDestination> {
        let route = self.route.as_deref()?;
        match &route.action {
            RouteAction::Forward(f) => f.destinations.get(self.dest?),
            _ => None,
        }
    }

    fn flags_header(&self) -> String {
        self.flags.join(",")
    }

    fn flag(&mut self, f: &'static str) {
        if !self.flags.contains(&f) {
            self.flags.push(f);
        }
    }
}

/// What routing decided, computed while the request is borrowed and carried out after.
enum Decision {
    /// A response the gateway makes itself: status, flag, body.
    Local(u16, &'static str, &'static str),
    /// A complete response head (redirects, direct responses, preflights) and its body.
    Reply(Box<ResponseHeader>, Option<Bytes>),
    Forward,
}

/// `x-forwarded-for` with the client's address appended, built without heap formatting for the
/// usual case of a short previous value.
fn forwarded_for(prev: Option<&http::HeaderValue>, ip: std::net::IpAddr) -> http::HeaderValue {
    use std::io::Write;
    let prev = prev.map(|v| v.as_bytes()).filter(|v| !v.is_empty());
    const CAP: usize = 256;
    let mut buf = [0u8; CAP];
    let mut w = &mut buf[..];
    let fits = match prev {
        Some(p) => w.write_all(p).and_then(|()| write!(w, ", {ip}")),
        None => write!(w, "{ip}"),
    }
    .is_ok();
    let written = CAP - w.len();
    if fits {
        if let Ok(v) = http::HeaderValue::from_bytes(&buf[..written]) {
            return v;
        }
    }
    let mut long = prev.map(<[u8]>::to_vec).unwrap_or_default();
    if !long.is_empty() {
        long.extend_from_slice(b", ");
    }
    long.extend_from_slice(ip.to_string().as_bytes());
    http::HeaderValue::from_bytes(&long).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

impl GatewayProxy {
    fn labels<'c>(&self, ctx: &'c Ctx) -> [&'c str; 2] {
        match ctx.destination() {
            Some(d) => [d.host.as_str(), d.subset.as_deref().unwrap_or("")],
            None => ["", ""],
        }
    }

    /// Turns on Pingora's gRPC-Web bridge (a gRPC-Web request goes upstream as gRPC, its answer
    /// comes back as gRPC-Web with the trailers in the body) when the listener's port has a
    /// GRPC-WEB server in this request's snapshot, as Istio adds Envoy's grpc_web filter there.
    fn enable_grpc_web(&self, session: &mut Session, ctx: &mut Ctx) {
        let snapshot = self.snapshot.load_full();
        let local_port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map_or(0, |a| a.port());
        let port = self
            .listeners
            .get(&local_port)
            .unwrap_or(&PLAIN_80)
            .gateway_port;
        if snapshot.listeners.get(&port).is_some_and(|l| l.grpc_web) {
            if crate::grpc_web_text::is_text(session.req_header()) {
                ctx.web_text = Some(crate::grpc_web_text::Bridge::default());
            } else if let Some(bridge) = session
                .downstream_modules_ctx
                .get_mut::<pingora::modules::http::grpc_web::GrpcWebBridge>(
            ) {
                bridge.init();
            }
        }
        ctx.snapshot = Some(snapshot);
    }

    /// The connection as authorization sees it: ports, addresses, what the TLS handshake chose.
    fn conn(&self, session: &Session) -> crate::security::Conn {
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        let local_port = local.map_or(0, |a| a.port());
        let info = self.listeners.get(&local_port).unwrap_or(&PLAIN_80);
        let handshake = info
            .connections
            .as_ref()
            .zip(peer)
            .and_then(|(c, p)| c.get(local_port, p));
        let (sni, principal) = handshake.map_or((None, None), |h| (h.sni, h.principal));
        crate::security::Conn {
            gateway_port: info.gateway_port,
            local,
            peer,
            sni,
            principal,
            remote: None,
        }
    }

    /// The request's client address: the peer, or the `X-Forwarded-For` hop that the trusted
    /// proxies in front of the gateway name (`crate::client_addr`).
    fn client_ip(&self, session: &Session) -> Option<std::net::IpAddr> {
        let peer = session.client_addr().and_then(|a| a.as_inet())?.ip();
        let xff = session.req_header().headers.get_all(X_FORWARDED_FOR);
        Some(crate::client_addr::client_ip(
            peer,
            xff,
            self.edge.trusted_hops,
        ))
    }

    /// Routes the request; `Ok(true)` when the gateway already answered.
    async fn route(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let decision = self.decide(session, ctx)?;
        match decision {
            Decision::Local(status, flag, body) => {
                if !flag.is_empty() {
                    ctx.flag(flag);
                }
                respond(session, status, &ctx.flags_header(), body).await?;
                Ok(true)
            }
            Decision::Reply(resp, body) => {
                let head_only = session.req_header().method == http::Method::HEAD;
                match body {
                    Some(b) if !head_only => {
                        session.write_response_header(resp, false).await?;
                        session.write_response_body(Some(b), true).await?;
                    }
                    _ => session.write_response_header(resp, true).await?,
                }
                Ok(true)
            }
            Decision::Forward => self.forward(session, ctx).await,
        }
    }

    /// Faults, circuit breaking and endpoint resolution for a forwarded request.
    async fn forward(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some(route) = ctx.route.clone() else {
            return Ok(false);
        };
        if let Some(fault) = &route.fault {
            if let Some(d) = fault.delay.as_ref().filter(|d| policy::roll(d.percent)) {
                ctx.flag("DI");
                tokio::time::sleep(d.delay).await;
            }
            if let Some(a) = fault.abort.as_ref().filter(|a| policy::roll(a.percent)) {
                ctx.flag("FI");
                match a.kind {
                    AbortKind::Http(status) => {
                        respond(session, status, &ctx.flags_header(), "fault filter abort").await?;
                    }
                    AbortKind::Grpc(code) => {
                        let resp = crate::grpc::local_reply(
                            code,
                            "fault filter abort",
                            &ctx.flags_header(),
                        )?;
                        crate::grpc::send_local_reply(session, resp).await?;
                    }
                }
                return Ok(true);
            }
        }
        let (Some(cluster), Some(state)) = (ctx.cluster.clone(), ctx.state.clone()) else {
            return Ok(false);
        };
        let Some(slot) = state.admit(&cluster.policy) else {
            ctx.flag("UO");
            respond(
                session,
                503,
                &ctx.flags_header(),
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            )
            .await?;
            return Ok(true);
        };
        ctx.slots.push(slot);
        ctx.endpoints = self.upstreams.endpoints(&cluster, &state).await;
        if ctx.endpoints.is_empty() {
            ctx.flag("UH");
            respond(session, 503, &ctx.flags_header(), "no healthy upstream").await?;
            return Ok(true);
        }
        if ctx.retries_left > 0 {
            session.enable_retry_buffering();
        }
        // Istio sets Envoy's `max_grpc_timeout` to the route timeout: a gRPC request's
        // `grpc-timeout` applies when it is shorter (or when the route has none); zero is none.
        let grpc_timeout = Some(session.req_header())
            .filter(|r| crate::grpc::is_grpc(r))
            .and_then(crate::grpc::timeout)
            .filter(|t| !t.is_zero());
        let timeout = match (route.timeout, grpc_timeout) {
            (Some(r), Some(g)) => Some(r.min(g)),
            (r, g) => r.or(g),
        };
        ctx.deadline = timeout.map(|t| Instant::now() + t);
        Ok(false)
    }

    fn decide(&self, session: &Session, ctx: &mut Ctx) -> Result<Decision> {
        // Loaded once per request, in `early_request_filter`.
        let snapshot = match &ctx.snapshot {
            Some(s) => s.clone(),
            None => {
                let s = self.snapshot.load_full();
                ctx.snapshot = Some(s.clone());
                s
            }
        };
        let local_port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port())
            .unwrap_or(0);
        let info = self.listeners.get(&local_port).unwrap_or(&PLAIN_80);
        // A port listener decides per connection whether it is TLS: its handshake is registered.
        let handshake = info.connections.as_ref().and_then(|conns| {
            let peer = session.client_addr().and_then(|a| a.as_inet()).copied()?;
            conns.get(local_port, peer)
        });
        let tls = info.tls || handshake.is_some();
        ctx.tls = tls;
        let req = session.req_header();
        let identity = ctx.auth.identity.clone();
        let view = RequestView {
            method: req.method.as_str(),
            scheme: if tls { "https" } else { "http" },
            authority: authority_of(req),
            path: req.uri.path(),
            query: req.uri.query(),
            port: info.gateway_port,
            headers: &req.headers,
            claims: identity.as_deref().map(|i| &i.claims),
        };
        if tls {
            // On TLS, routing is restricted to the hosts of the server the SNI selects (in this
            // request's snapshot): another server's hosts are not reachable through this one.
            if let Some(h) = handshake {
                ctx.sni = h.sni;
                // For the access log, also when no policy asked for it.
                ctx.auth.peer_principal = h.principal;
            }
            if !snapshot.tls_admits(info.gateway_port, ctx.sni.as_deref(), view.authority) {
                return Ok(Decision::Local(404, "NR", ""));
            }
        }
        let Some((vhost, route)) = snapshot.lookup(&view) else {
            return Ok(Decision::Local(404, "NR", ""));
        };
        if vhost.https_redirect && !tls {
            let host = strip_port(view.authority);
            let loc = match req.uri.path_and_query() {
                Some(pq) => format!("https://{host}{pq}"),
                None => format!("https://{host}/"),
            };
            let mut resp = ResponseHeader::build(301, Some(2))?;
            resp.insert_header("location", loc)?;
            resp.insert_header("content-length", "0")?;
            return Ok(Decision::Reply(Box::new(resp), None));
        }
        let Some(route) = route else {
            return Ok(Decision::Local(404, "NR", ""));
        };
        ctx.route = Some(route.clone());
        if let Some(cors) = &route.cors {
            if let Some(origin) = req.headers.get("origin").and_then(|v| v.to_str().ok()) {
                let allowed = policy::origin_allowed(cors, origin);
                let preflight = req.method == http::Method::OPTIONS
                    && req.headers.contains_key("access-control-request-method");
                if preflight && (allowed || cors.ignore_unmatched_preflights) {
                    let mut resp = ResponseHeader::build(200, Some(8))?;
                    if allowed {
                        for (n, v) in policy::preflight_headers(cors, origin) {
                            resp.insert_header(n, v)?;
                        }
                    }
                    resp.insert_header("content-length", "0")?;
                    return Ok(Decision::Reply(Box::new(resp), None));
                }
                if allowed {
                    ctx.cors_origin = Some(origin.to_string());
                }
            }
        }
        match &route.action {
            RouteAction::Redirect(r) => {
                let loc = redirect_location(r, matched_uri(route, &view), req, info.tls);
                let mut resp = ResponseHeader::build(r.code, Some(4))?;
                resp.insert_header("location", loc)?;
                resp.insert_header("content-length", "0")?;
                apply_response_ops(&mut resp, &route.response_headers)?;
                Ok(Decision::Reply(Box::new(resp), None))
            }
            RouteAction::Direct(d) => {
                let body = Bytes::from(d.body.0.clone());
                let mut resp = ResponseHeader::build(d.status, Some(4))?;
                resp.insert_header("content-length", body.len().to_string())?;
                if !body.is_empty() {
                    resp.insert_header("content-type", "text/plain")?;
                }
                apply_response_ops(&mut resp, &route.response_headers)?;
                let body = if body.is_empty() { None } else { Some(body) };
                Ok(Decision::Reply(Box::new(resp), body))
            }
            RouteAction::Forward(f) => {
                let Some(i) = choose_destination(f) else {
                    return Ok(Decision::Local(503, "UH", "no healthy upstream"));
                };
                ctx.dest = Some(i);
                let cluster = match &f.destinations[i].target {
                    Target::Cluster(c) => c.clone(),
                    Target::NoCluster { .. } => {
                        return Ok(Decision::Local(503, "NC", "cluster not found"));
                    }
                };
                if let Some(rw) = &f.rewrite {
                    let path = view.path;
                    let new_path = if let Some(uri) = &rw.uri {
                        Some(replace_prefix(path, matched_uri(route, &view), uri))
                    } else {
                        rw.uri_regex.as_ref().map(|rx| {
                            rx.pattern
                                .replace_all(path, rx.replacement.as_str())
                                .into_owned()
                        })
                    };
                    ctx.new_path = new_path.map(|p| if p.is_empty() { "/".to_string() } else { p });
                }
                if let LbPolicy::ConsistentHash(key) = &cluster.policy.lb {
                    ctx.hash = self.hash_key(key, req, ctx);
                }
                ctx.retries_left = route.retries.attempts;
                ctx.state = Some(self.balancers.get(&cluster.name));
                ctx.cluster = Some(cluster);
                let mirrors = mirror::chosen(&route.mirrors);
                if !mirrors.is_empty() {
                    ctx.mirror = Some(mirror::Pending::new(
                        mirrors,
                        strip_port(view.authority).to_string(),
                        req.version == http::Version::HTTP_2,
                    ));
                }
                Ok(Decision::Forward)
            }
        }
    }

    fn hash_key(&self, key: &HashKey, req: &RequestHeader, ctx: &mut Ctx) -> Option<u64> {
        match key {
            HashKey::Header(name) => req
                .headers
                .get(name.as_str())
                .map(|v| balancer::hash_key(v.as_bytes())),
            // Envoy hashes the downstream remote address: the client trusted proxies name.
            HashKey::SourceIp => ctx
                .client
                .map(|ip| balancer::hash_key(ip.to_string().as_bytes())),
            HashKey::QueryParameter(name) => req.uri.query().and_then(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| balancer::hash_key(v.as_bytes()))
            }),
            HashKey::Cookie {
                name,
                path,
                ttl,
                attributes,
            } => {
                let found = req
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .filter_map(|c| c.trim().split_once('='))
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.to_string());
                let value = match found {
                    Some(v) => v,
                    None => {
                        // Envoy generates the cookie when a ttl is configured, so the client sticks.
                        let ttl = (*ttl)?;
                        let v = format!("{:016x}", rand::random::<u64>());
                        let mut c = format!("{name}={v}");
                        if let Some(p) = path {
                            c.push_str(&format!("; Path={p}"));
                        }
                        if !ttl.is_zero() {
                            c.push_str(&format!("; Max-Age={}", ttl.as_secs()));
                        }
                        // Envoy's order: the attributes, then HttpOnly.
                        for a in attributes {
                            c.push_str("; ");
                            c.push_str(a);
                        }
                        c.push_str("; HttpOnly");
                        ctx.set_cookie = Some(c);
                        v
                    }
                };
                Some(balancer::hash_key(value.as_bytes()))
            }
        }
    }

    /// Decides whether a failed attempt is retried (and takes a retry slot if so).
    fn decide_retry(&self, session: &Session, ctx: &mut Ctx, f: Failure) -> bool {
        let Some(route) = ctx.route.clone() else {
            return false;
        };
        if ctx.retries_left == 0
            || session.retry_buffer_truncated()
            || !policy::retriable(&route.retries, f)
            || ctx.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return false;
        }
        let (Some(cluster), Some(state)) = (ctx.cluster.clone(), ctx.state.clone()) else {
            return false;
        };
        let Some(slot) = state.admit_retry(&cluster.policy) else {
            return false;
        };
        ctx.slots.push(slot);
        ctx.retries_left -= 1;
        self.metrics
            .upstream_retries
            .with_label_values(&self.labels(ctx))
            .inc();
        true
    }

    fn record(&self, ctx: &Ctx, status: Option<u16>) {
        if let (Some(cluster), Some(state), Some(addr)) =
            (&ctx.cluster, &ctx.state, ctx.tried.last())
        {
            state.record(*addr, status, cluster.policy.outlier.as_ref());
        }
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _inflight: InflightGuard::enter(&self.inflight),
            start: Instant::now(),
            snapshot: None,
            route: None,
            dest: None,
            cluster: None,
            state: None,
            endpoints: Arc::default(),
            tried: Vec::new(),
            slots: Vec::new(),
            endpoint_slot: None,
            retries_left: 0,
            attempts: 0,
            hash: None,
            set_cookie: None,
            deadline: None,
            status_retry: false,
            local_error: None,
            flags: Vec::new(),
            tls: false,
            sni: None,
            upstream_start: None,
            new_path: None,
            request_id: None,
            upstream_service_time: None,
            cors_origin: None,
            mirror: None,
            connection: None,
            web_text: None,
            auth: crate::security::RequestAuth::default(),
            grpc_status: None,
            body: Default::default(),
            client: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if ctx.connection.is_none() {
            let local_port = session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map_or(0, |a| a.port());
            if let Some(g) = self
                .listeners
                .get(&local_port)
                .and_then(|l| l.open_connections.as_ref())
            {
                g.inc();
                ctx.connection = Some(ConnectionGuard(g.clone()));
            }
        }
        if self.health.is_draining() {
            session.set_keepalive(None);
        }
        crate::header_timer::header_done(session);
        ctx.client = self.client_ip(session);
        self.enable_grpc_web(session, ctx);
        crate::hygiene::prepare(session)?;
        self.edge.body.start(session, &mut ctx.body)
    }

    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        // Pingora's default (response compression, off), and its gRPC-Web bridge, enabled per
        // request on GRPC-WEB servers.
        modules
            .add_module(pingora::modules::http::compression::ResponseCompressionBuilder::enable(0));
        modules.add_module(Box::new(pingora::modules::http::grpc_web::GrpcWeb));
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &Ctx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        // The hook only borrows the context: hand the guard over by cloning the gauge and
        // counting once more; the context's own guard then gives its unit back when it drops.
        ctx.connection.as_ref().map(|g| {
            g.0.inc();
            Box::new(ConnectionGuard(g.0.clone())) as Box<dyn std::any::Any + Send + Sync>
        })
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(g) = prev.downcast::<ConnectionGuard>() {
            ctx.connection = Some(*g);
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let has_id = session
            .req_header()
            .headers
            .get(X_REQUEST_ID)
            .is_some_and(|v| !v.is_empty());
        if !has_id {
            ctx.request_id = Some(new_request_id());
        }
        // ACME HTTP-01 is answered before anything else looks at the request, as Envoy's
        // challenge route would be.
        if let Some(acme) = &self.acme {
            if crate::acme_http::answer(session, acme, &self.listeners).await? {
                return Ok(true);
            }
        }
        let snapshot = match &ctx.snapshot {
            Some(s) => s.clone(),
            None => self.snapshot.load_full(),
        };
        if !snapshot.security.is_empty() {
            let mut conn = self.conn(session);
            conn.remote = ctx.client;
            let answered = self
                .security
                .check(session, &snapshot, &conn, &mut ctx.auth, &mut ctx.flags)
                .await?;
            if answered {
                return Ok(true);
            }
        }
        self.route(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let len = body.as_ref().map_or(0, Bytes::len);
        self.edge
            .body
            .on_body(session, &mut ctx.body, len, end_of_stream)?;
        if let Some(t) = ctx.web_text.as_mut() {
            t.request_body(body)?;
        }
        if let Some(m) = ctx.mirror.as_mut() {
            if let Some(b) = body {
                m.add_body(b);
            }
        }
        if end_of_stream && ctx.mirror.as_ref().is_some_and(|m| m.head.is_some()) {
            if let Some(m) = ctx.mirror.take() {
                self.mirrors.fire(m);
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(cluster), Some(state)) = (ctx.cluster.clone(), ctx.state.clone()) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no cluster chosen",
            ));
        };
        if ctx.attempts > 0 {
            ctx.flag("URX");
            if let Some(route) = &ctx.route {
                tokio::time::sleep(balancer::backoff(route.retries.backoff, ctx.attempts)).await;
            }
        }
        ctx.attempts += 1;
        let ignore_previous = ctx
            .route
            .as_ref()
            .is_none_or(|r| r.retries.ignore_previous_hosts);
        let avoid: &[SocketAddr] = if ignore_previous { &ctx.tried } else { &[] };
        let addr = match state.pick(&cluster.policy, &ctx.endpoints, avoid, ctx.hash) {
            Pick::Endpoint(a) => a,
            Pick::AllEjected | Pick::Empty => {
                ctx.local_error = Some((503, "UH", "no healthy upstream"));
                return Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "no healthy upstream",
                ));
            }
        };
        // The SNI defaults to the Host the upstream will see (after an authority rewrite), as
        // Envoy's auto SNI does.
        let rewritten = ctx.route.as_deref().and_then(|r| match &r.action {
            RouteAction::Forward(ir::Forward {
                rewrite: Some(rw), ..
            }) => rw.authority.clone(),
            _ => None,
        });
        let host =
            rewritten.unwrap_or_else(|| strip_port(authority_of(session.req_header())).to_string());
        let client_h2 = session.req_header().version == http::Version::HTTP_2;
        let mut peer = match crate::peer::build(&cluster, addr, strip_port(&host), client_h2) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(cluster = %cluster.name, reason = %why, "upstream TLS unusable");
                ctx.local_error = Some((
                    503,
                    "UF",
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS credentials unavailable",
                ));
                return Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "upstream TLS credentials unavailable",
                ));
            }
        };
        ctx.tried.push(addr);
        ctx.endpoint_slot = Some(state.track(addr));
        let p = &cluster.policy;
        let per_try = ctx.route.as_ref().and_then(|r| r.retries.per_try_timeout);
        let remaining = ctx.deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        let read = match (per_try, remaining) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = read {
            peer.options.read_timeout = Some(t);
            peer.options.total_connection_timeout = Some(t.min(p.connect_timeout));
        }
        ctx.upstream_start = Some(Instant::now());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.metrics
            .connect_failures
            .with_label_values(&self.labels(ctx))
            .inc();
        self.record(ctx, None);
        ctx.endpoint_slot = None;
        let retry = self.decide_retry(session, ctx, Failure::Connect);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        ctx.endpoint_slot = None;
        if ctx.status_retry {
            // Our own marker: a retriable status, already counted and decided.
            ctx.status_retry = false;
            e.set_retry(true);
            return e;
        }
        // A pooled connection the upstream had closed: retry once on a fresh one, as Pingora does.
        let stale = client_reused && matches!(e.retry, pingora::RetryType::ReusedOnly);
        if stale && !session.retry_buffer_truncated() {
            e.set_retry(true);
            return e;
        }
        let failure = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
            _ => Failure::Reset,
        };
        self.record(ctx, None);
        let retry = self.decide_retry(session, ctx, failure);
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        if let Some(p) = ctx.new_path.clone() {
            let full = match upstream.uri.query() {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            match full.parse::<http::Uri>() {
                Ok(uri) => upstream.set_uri(uri),
                Err(_) => {
                    ctx.local_error = Some((500, "", ""));
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(500),
                        "rewritten path is not a valid URI",
                    ));
                }
            }
        }
        if let RouteAction::Forward(ir::Forward {
            rewrite: Some(rw), ..
        }) = &route.action
        {
            if let Some(a) = &rw.authority {
                upstream.insert_header(http::header::HOST, a.as_str())?;
            }
        }
        for name in &ctx.auth.upstream_remove {
            upstream.remove_header(name.as_str());
        }
        for (n, v) in &ctx.auth.upstream_set {
            upstream.insert_header(n.clone(), v.clone())?;
        }
        apply_request_ops(upstream, &route.request_headers)?;
        if let Some(d) = ctx.destination() {
            apply_request_ops(upstream, &d.request_headers)?;
        }
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let xff = forwarded_for(upstream.headers.get(X_FORWARDED_FOR), ip);
            upstream.insert_header(X_FORWARDED_FOR, xff)?;
        }
        upstream.remove_header(X_ENVOY_EXTERNAL_ADDRESS);
        if let Some(c) = ctx.client.filter(|c| !crate::client_addr::is_internal(*c)) {
            upstream.insert_header(X_ENVOY_EXTERNAL_ADDRESS, c.to_string())?;
        }
        upstream.insert_header("x-forwarded-proto", if ctx.tls { "https" } else { "http" })?;
        // gRPC servers insist on `te: trailers`, which Pingora strips from HTTP/1.1 requests as a
        // hop-by-hop header (a gRPC-Web call, or gRPC over HTTP/1.1, bridged to HTTP/2).
        if session.req_header().version != http::Version::HTTP_2 && crate::grpc::is_grpc(upstream) {
            upstream.insert_header("te", "trailers")?;
        }
        if let Some(b) = ctx.web_text.as_mut() {
            b.request_header(upstream)?;
        }
        if let Some(id) = &ctx.request_id {
            upstream.insert_header(X_REQUEST_ID, id.clone())?;
        }
        if !upstream.headers.contains_key(TRACEPARENT) {
            upstream.insert_header(TRACEPARENT, new_traceparent())?;
        }
        if let Some(m) = ctx.mirror.as_mut() {
            if m.head.is_none() {
                m.head = Some(Box::new(upstream.clone()));
            }
            if session.as_mut().is_body_empty() {
                if let Some(m) = ctx.mirror.take() {
                    self.mirrors.fire(m);
                }
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        self.record(ctx, Some(status));
        if let (Some(start), Some(route)) = (ctx.upstream_start, &ctx.route) {
            let took = start.elapsed();
            ctx.upstream_service_time = Some(took);
            let [destination, subset] = self.labels(ctx);
            let labels = RequestLabels {
                gateway: &route.gateway,
                virtual_service: &route.virtual_service,
                route: &route.id,
                destination,
                subset,
                method: method_label(&session.req_header().method),
            };
            let dest = ctx.dest.unwrap_or(usize::MAX);
            self.metrics
                .observe_upstream(route, dest, &labels, took.as_secs_f64());
        }
        let grpc_status = crate::grpc::response_status(resp);
        let failure = Failure::Status(status, grpc_status);
        // A gRPC error answers 200 with its status in the headers (trailers-only): retried on by
        // the gRPC names of `retryOn`. A status in the trailers comes after the response started.
        let failed = status >= 400 || grpc_status.is_some_and(|c| c != 0);
        let retriable = ctx
            .route
            .as_ref()
            .is_some_and(|r| failed && policy::retriable(&r.retries, failure));
        if retriable && self.decide_retry(session, ctx, failure) {
            ctx.status_retry = true;
            ctx.endpoint_slot = None;
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "retriable upstream status",
            ));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(t) = ctx.web_text.as_mut() {
            t.response_header(resp, session.req_header().version != http::Version::HTTP_2)?;
        }
        if let Some(route) = ctx.route.clone() {
            apply_response_ops(resp, &route.response_headers)?;
            if let Some(d) = ctx.destination() {
                apply_response_ops(resp, &d.response_headers)?;
            }
            if let (Some(cors), Some(origin)) = (&route.cors, &ctx.cors_origin) {
                for (n, v) in policy::response_headers(cors, origin) {
                    resp.insert_header(n, v)?;
                }
            }
        }
        if let Some(c) = ctx.set_cookie.take() {
            resp.append_header("set-cookie", c)?;
        }
        for (n, v) in &ctx.auth.downstream_set {
            resp.append_header(n.clone(), v.clone())?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let Some(t) = &ctx.web_text {
            t.response_body(body);
        }
        Ok(None)
    }

    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<Option<Bytes>> {
        ctx.grpc_status = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(ctx
            .web_text
            .as_ref()
            .and_then(|t| t.response_trailers(trailers)))
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let deadline_passed = ctx.deadline.is_some_and(|d| Instant::now() >= d);
        let (code, flag, body): LocalError = if let Some(l) = ctx.local_error.take() {
            l
        } else if let Some(l) = self.edge.body.local_error(e, &mut ctx.body) {
            l
        } else {
            match e.etype() {
                ErrorType::HTTPStatus(c) => (*c, "", ""),
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError
                | ErrorType::SocketError
                | ErrorType::TLSHandshakeFailure
                | ErrorType::TLSHandshakeTimedout
                | ErrorType::HandshakeError
                | ErrorType::InvalidCert => (
                    503,
                    "UF",
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                ),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
                    if matches!(e.esource(), pingora::ErrorSource::Upstream) || deadline_passed =>
                {
                    (504, "UT", "upstream request timeout")
                }
                _ => match e.esource() {
                    pingora::ErrorSource::Upstream => (
                        503,
                        "UC",
                        "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                    ),
                    pingora::ErrorSource::Downstream => match e.etype() {
                        ErrorType::WriteError
                        | ErrorType::ReadError
                        | ErrorType::ConnectionClosed => (0, "", ""),
                        _ => (400, "", ""),
                    },
                    _ => (500, "", ""),
                },
            }
        };
        if !flag.is_empty() {
            // The table's flag first, then the others (`UF,URX`).
            ctx.flags.retain(|f| *f != flag);
            ctx.flags.insert(0, flag);
        }
        if code > 0 && session.response_written().is_none() {
            let flags = ctx.flags_header();
            if let Err(err) = respond(session, code, &flags, body).await {
                tracing::debug!(error = %err, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let code = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let method = method_label(&session.req_header().method);
        let (gateway, vs, route_id) = match ctx.route.as_deref() {
            Some(r) => (
                r.gateway.as_str(),
                r.virtual_service.as_str(),
                r.id.as_str(),
            ),
            None => ("", "", ""),
        };
        let [dest, subset] = self.labels(ctx);
        let elapsed = ctx.start.elapsed();
        self.metrics.observe_request(
            ctx.route
                .as_ref()
                .map(|r| (r, ctx.dest.unwrap_or(usize::MAX))),
            &RequestLabels {
                gateway,
                virtual_service: vs,
                route: route_id,
                destination: dest,
                subset,
                method,
            },
            code,
            &ctx.flags,
            elapsed.as_secs_f64(),
        );
        if crate::grpc::is_grpc(session.req_header()) {
            // Trailers, else a trailers-only answer (what the gateway's own answers are).
            let status = ctx.grpc_status.or_else(|| {
                session
                    .response_written()
                    .and_then(crate::grpc::response_status)
            });
            let status = status.map_or_else(|| "-".to_string(), |s| s.to_string());
            self.metrics
                .grpc_requests
                .with_label_values(&[gateway, vs, route_id, dest, &status])
                .inc();
        }
        if self.access_log.enabled() {
            let req = session.req_header();
            let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
            let forwarded = peer.map(|p| forwarded_for(req.headers.get(X_FORWARDED_FOR), p.ip()));
            let remote = match (ctx.client, peer) {
                (Some(c), Some(p)) if c != p.ip() => Some(SocketAddr::new(c, 0).to_string()),
                (_, p) => p.map(|p| p.to_string()),
            };
            let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
            let path = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let protocol = match req.version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_3 => "HTTP/3",
                http::Version::HTTP_09 => "HTTP/0.9",
                _ => "HTTP/1.1",
            };
            self.access_log.log(&Entry {
                start: SystemTime::now() - elapsed,
                method: req.method.as_str(),
                path,
                protocol,
                status: code,
                flags: &flags_label(&ctx.flags),
                bytes_received: session.body_bytes_read(),
                bytes_sent: session.body_bytes_sent(),
                duration_ms: elapsed.as_millis(),
                upstream_service_time_ms: ctx.upstream_service_time.map(|d| d.as_millis()),
                x_forwarded_for: forwarded
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .or_else(|| header(X_FORWARDED_FOR)),
                user_agent: header("user-agent"),
                request_id: ctx
                    .request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .or_else(|| header(X_REQUEST_ID))
                    .unwrap_or(""),
                authority: authority_of(req),
                upstream_host: ctx.tried.last().map(|a| a.to_string()),
                route: route_id,
                sni: ctx.sni.as_deref(),
                peer_principal: ctx.auth.peer_principal.as_deref(),
                request_principal: ctx.auth.request_principal.as_deref(),
                authz_policy: ctx.auth.policy.as_deref(),
                downstream_remote_address: remote.as_deref(),
            });
        }
        // The last hook before Pingora closes or reuses the connection, whichever way the
        // request ended; after the metrics and the log, so that neither counts the lingering.
        if !ctx.body.timed_out() {
            crate::linger::discard_unread_body(session).await;
        }
        crate::header_timer::request_done(session);
    }
}

#[cfg(test)]
mod tests {
    use super::forwarded_for;
    use http::HeaderValue;

    #[test]
    fn forwarded_for_appends_the_client_address() {
        let ip = "192.0.2.7".parse().expect("test value");
        assert_eq!(forwarded_for(None, ip), "192.0.2.7");
        let empty = HeaderValue::from_static("");
        assert_eq!(forwarded_for(Some(&empty), ip), "192.0.2.7");
        let prev = HeaderValue::from_static("203.0.113.1");
        assert_eq!(forwarded_for(Some(&prev), ip), "203.0.113.1, 192.0.2.7");
        let v6 = "2001:db8::1".parse().expect("test value");
        assert_eq!(forwarded_for(Some(&prev), v6), "203.0.113.1, 2001:db8::1");
        let long = HeaderValue::from_str(&"1.1.1.1, ".repeat(40)).expect("test value");
        let joined = forwarded_for(Some(&long), ip);
        assert_eq!(
            joined.to_str().expect("test value"),
            format!("{}, 192.0.2.7", "1.1.1.1, ".repeat(40))
        );
    }
}
