//! The Pingora `ProxyHttp` implementation: loads the snapshot once per request, routes with Istio's
//! semantics, answers redirects, direct responses and routing failures itself (with Envoy's response
//! flags), and forwards everything else to a chosen upstream endpoint with rewrites and header
//! operations applied.

use crate::accesslog::{AccessLogger, Entry};
use crate::metrics::{method_label, Metrics};
use crate::upstream::{self, Resolved, Upstreams};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use model::ir::{
    self, Forward, HeaderOps, Matcher, Redirect, RedirectPort, RequestView, Route, RouteAction,
    Snapshot, Target, WeightedDestination,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorType;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What a listener (a local port) serves: the Gateway port number and whether it terminates TLS.
#[derive(Debug, Clone, Copy)]
pub struct ListenerInfo {
    pub gateway_port: u16,
    pub tls: bool,
}

/// The proxy: shared, immutable handles; per-request state lives in [`Ctx`].
pub struct GatewayProxy {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Metrics,
    /// Local port → listener, fixed at start.
    pub listeners: Arc<HashMap<u16, ListenerInfo>>,
    /// Requests in flight, for draining on SIGTERM.
    pub inflight: Arc<AtomicUsize>,
    pub access_log: AccessLogger,
}

/// Decrements the in-flight count when a request's context is dropped, however the request ends.
pub struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-request state. The snapshot is loaded once, so every phase of a request (and its retries)
/// sees one configuration even if a reload happens meanwhile.
pub struct Ctx {
    _inflight: InflightGuard,
    start: Instant,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<Arc<Route>>,
    dest: Option<usize>,
    endpoints: Vec<Resolved>,
    tried: Vec<SocketAddr>,
    retries_left: u32,
    retried: bool,
    flags: Vec<&'static str>,
    tls: bool,
    upstream_start: Option<Instant>,
    /// The rewritten path (without query), computed at routing time where the match is known.
    new_path: Option<String>,
    /// `x-request-id`: the client's, or one generated for this request.
    request_id: String,
    /// Time to the upstream response header, for `x-envoy-upstream-service-time`-style logging.
    upstream_service_time: Option<Duration>,
}

impl Ctx {
    fn destination(&self) -> Option<&WeightedDestination> {
        let route = self.route.as_deref()?;
        match &route.action {
            RouteAction::Forward(f) => f.destinations.get(self.dest?),
            _ => None,
        }
    }

    fn cluster(&self) -> Option<&ir::Cluster> {
        match &self.destination()?.target {
            Target::Cluster(c) => Some(c),
            Target::NoCluster { .. } => None,
        }
    }

    fn flags_header(&self) -> String {
        self.flags.join(",")
    }
}

/// Builds a response the gateway makes itself.
fn local_response(status: u16, flags: &str, body_len: usize) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    if !flags.is_empty() {
        resp.insert_header("x-gateway-error", flags)?;
    }
    resp.insert_header("content-length", body_len.to_string())?;
    Ok(resp)
}

async fn respond(
    session: &mut Session,
    status: u16,
    flags: &str,
    body: &'static str,
) -> Result<()> {
    let resp = local_response(status, flags, body.len())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), body.is_empty() || head_only)
        .await?;
    if !body.is_empty() && !head_only {
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await?;
    }
    Ok(())
}

/// Host as sent, from `:authority` (HTTP/2) or the Host header.
fn authority_of(req: &RequestHeader) -> &str {
    if let Some(a) = req.uri.authority() {
        return a.as_str();
    }
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn port_of(authority: &str) -> Option<u16> {
    let tail = if authority.starts_with('[') {
        authority.rsplit_once("]:").map(|(_, p)| p)
    } else {
        authority.rsplit_once(':').map(|(_, p)| p)
    };
    tail.and_then(|p| p.parse().ok())
}

/// The uri matcher of the first match entry that accepts the request: rewrites replace what it matched.
fn matched_uri<'r>(route: &'r Route, view: &RequestView<'_>) -> Option<&'r Matcher> {
    route
        .matches
        .iter()
        .find(|m| ir::match_accepts(m, view))
        .and_then(|m| m.uri.as_ref())
}

fn replace_prefix(path: &str, matcher: Option<&Matcher>, replacement: &str) -> String {
    match matcher {
        Some(Matcher::Prefix { value, .. }) if path.len() >= value.len() => {
            // ignoreUriCase prefixes match case-insensitively: cut by length, not by equality.
            let rest = path.get(value.len()..).unwrap_or("");
            let mut out = String::with_capacity(replacement.len() + rest.len());
            out.push_str(replacement);
            out.push_str(rest);
            out
        }
        _ => replacement.to_string(),
    }
}

fn redirect_location(
    r: &Redirect,
    matcher: Option<&Matcher>,
    req: &RequestHeader,
    tls: bool,
) -> String {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    let authority = authority_of(req);
    let host = match &r.authority {
        Some(a) => strip_port(a).to_string(),
        None => strip_port(authority).to_string(),
    };
    let explicit_port = r.authority.as_deref().and_then(port_of);
    let port = match r.port {
        Some(RedirectPort::Fixed(p)) => Some(p),
        Some(RedirectPort::FromProtocolDefault) => None,
        Some(RedirectPort::FromRequestPort) => port_of(authority),
        None => explicit_port.or_else(|| {
            // Envoy keeps the request's port unless the scheme changes.
            if r.scheme.is_some() && r.authority.is_none() {
                None
            } else if r.authority.is_none() {
                port_of(authority)
            } else {
                None
            }
        }),
    };
    let port =
        port.filter(|&p| !((scheme == "http" && p == 80) || (scheme == "https" && p == 443)));
    let path = req.uri.path();
    let new_path = if let Some(uri) = &r.uri {
        uri.clone()
    } else if let Some(p) = &r.prefix_rewrite {
        replace_prefix(path, matcher, p)
    } else {
        path.to_string()
    };
    let mut loc = format!("{scheme}://{host}");
    if let Some(p) = port {
        loc.push(':');
        loc.push_str(&p.to_string());
    }
    loc.push_str(&new_path);
    if let Some(q) = req.uri.query() {
        if !new_path.contains('?') {
            loc.push('?');
            loc.push_str(q);
        }
    }
    loc
}

fn apply_request_ops(req: &mut RequestHeader, ops: &HeaderOps) -> Result<()> {
    for name in &ops.remove {
        req.remove_header(name);
    }
    for (n, v) in &ops.set {
        req.insert_header(n.clone(), v.clone())?;
    }
    for (n, v) in &ops.add {
        req.append_header(n.clone(), v.clone())?;
    }
    Ok(())
}

fn apply_response_ops(resp: &mut ResponseHeader, ops: &HeaderOps) -> Result<()> {
    for name in &ops.remove {
        resp.remove_header(name);
    }
    for (n, v) in &ops.set {
        resp.insert_header(n.clone(), v.clone())?;
    }
    for (n, v) in &ops.add {
        resp.append_header(n.clone(), v.clone())?;
    }
    Ok(())
}

fn choose_destination(f: &Forward) -> Option<usize> {
    if f.destinations.len() == 1 {
        return Some(0);
    }
    if f.total_weight == 0 {
        return None;
    }
    let mut n = rand::thread_rng().gen_range(0..f.total_weight);
    for (i, d) in f.destinations.iter().enumerate() {
        if n < d.weight {
            return Some(i);
        }
        n -= d.weight;
    }
    None
}

/// A W3C `traceparent` starting a new trace (sampled), for requests that arrive without one.
fn new_traceparent() -> String {
    let mut rng = rand::thread_rng();
    let trace: u128 = rng.gen_range(1..=u128::MAX);
    let span: u64 = rng.gen_range(1..=u64::MAX);
    format!("00-{trace:032x}-{span:016x}-01")
}

/// Whether `retryOn` asks for retries of failed connections.
fn retries_connect_failures(route: &Route) -> bool {
    route.retries.retry_on.iter().any(|t| {
        matches!(
            t.as_str(),
            "connect-failure" | "5xx" | "gateway-error" | "reset" | "reset-before-request"
        )
    })
}

/// What routing decided, computed while the request is borrowed and carried out after.
enum Decision {
    /// A response the gateway makes itself: status, flag, body.
    Local(u16, &'static str, &'static str),
    /// A complete response head (redirects, direct responses) and its body.
    Reply(Box<ResponseHeader>, Option<Bytes>),
    Forward(Arc<ir::Cluster>),
}

impl GatewayProxy {
    /// Routes the request; `Ok(true)` when the gateway already answered.
    async fn route(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let decision = self.decide(session, ctx)?;
        match decision {
            Decision::Local(status, flag, body) => {
                if !flag.is_empty() {
                    ctx.flags.push(flag);
                }
                respond(session, status, flag, body).await?;
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
            Decision::Forward(cluster) => {
                ctx.endpoints = self.upstreams.resolve(&cluster).await;
                if ctx.endpoints.is_empty() {
                    ctx.flags.push("UH");
                    respond(session, 503, "UH", "no healthy upstream").await?;
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }

    fn decide(&self, session: &Session, ctx: &mut Ctx) -> Result<Decision> {
        let snapshot = self.snapshot.load_full();
        ctx.snapshot = Some(snapshot.clone());
        let local_port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port())
            .unwrap_or(0);
        let info = self
            .listeners
            .get(&local_port)
            .copied()
            .unwrap_or(ListenerInfo {
                gateway_port: 80,
                tls: false,
            });
        ctx.tls = info.tls;
        let req = session.req_header();
        let view = RequestView {
            method: req.method.as_str(),
            scheme: if info.tls { "https" } else { "http" },
            authority: authority_of(req),
            path: req.uri.path(),
            query: req.uri.query(),
            port: info.gateway_port,
            headers: &req.headers,
        };
        let Some((vhost, route)) = snapshot.lookup(&view) else {
            return Ok(Decision::Local(404, "NR", ""));
        };
        if vhost.https_redirect && !info.tls {
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
                ctx.retries_left = if retries_connect_failures(route) {
                    route.retries.attempts
                } else {
                    0
                };
                Ok(Decision::Forward(cluster))
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Ctx {
            _inflight: InflightGuard(self.inflight.clone()),
            start: Instant::now(),
            snapshot: None,
            route: None,
            dest: None,
            endpoints: Vec::new(),
            tried: Vec::new(),
            retries_left: 0,
            retried: false,
            flags: Vec::new(),
            tls: false,
            upstream_start: None,
            new_path: None,
            request_id: String::new(),
            upstream_service_time: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        crate::hygiene::check(session)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = match session
            .req_header()
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
        {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        self.route(session, ctx).await
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(addr) = upstream::pick(&ctx.endpoints, &ctx.tried) else {
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                "no endpoint left",
            ));
        };
        ctx.tried.push(addr);
        let mut peer = HttpPeer::new(addr, false, String::new());
        if let Some(c) = ctx.cluster() {
            peer.options.connection_timeout = Some(c.policy.connect_timeout);
            if let Some(idle) = c.policy.idle_timeout {
                peer.options.idle_timeout = Some(idle);
            }
        } else {
            peer.options.connection_timeout = Some(Duration::from_secs(10));
        }
        ctx.upstream_start = Some(Instant::now());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(d) = ctx.destination() {
            self.metrics
                .connect_failures
                .with_label_values(&[d.host.as_str(), d.subset.as_deref().unwrap_or("")])
                .inc();
        }
        if ctx.retries_left > 0 {
            ctx.retries_left -= 1;
            ctx.retried = true;
            if let Some(d) = ctx.destination() {
                self.metrics
                    .upstream_retries
                    .with_label_values(&[d.host.as_str(), d.subset.as_deref().unwrap_or("")])
                    .inc();
            }
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
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
        if let Some(p) = ctx.new_path.take() {
            let full = match upstream.uri.query() {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            match full.parse::<http::Uri>() {
                Ok(uri) => upstream.set_uri(uri),
                Err(_) => {
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(500),
                        "rewritten path is not a valid URI",
                    ))
                }
            }
        }
        if let RouteAction::Forward(Forward {
            rewrite: Some(rw), ..
        }) = &route.action
        {
            if let Some(a) = &rw.authority {
                upstream.insert_header(http::header::HOST, a.as_str())?;
            }
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
            let xff = match upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
                _ => ip.to_string(),
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        upstream.insert_header("x-forwarded-proto", if ctx.tls { "https" } else { "http" })?;
        if !upstream.headers.contains_key("x-request-id") {
            upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        }
        if !upstream.headers.contains_key("traceparent") {
            upstream.insert_header("traceparent", new_traceparent())?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            ctx.upstream_service_time = Some(start.elapsed());
            if let Some(d) = ctx.destination() {
                self.metrics
                    .upstream_duration
                    .with_label_values(&[d.host.as_str(), d.subset.as_deref().unwrap_or("")])
                    .observe(start.elapsed().as_secs_f64());
            }
        }
        if let Some(route) = ctx.route.clone() {
            apply_response_ops(resp, &route.response_headers)?;
            if let Some(d) = ctx.destination() {
                apply_response_ops(resp, &d.response_headers)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (code, flag, body): (u16, &'static str, &'static str) = match e.etype() {
            ErrorType::HTTPStatus(400) => (400, "", ""),
            ErrorType::HTTPStatus(431) => (431, "", ""),
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
                if matches!(e.esource(), pingora::ErrorSource::Upstream) =>
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
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        (0, "", "")
                    }
                    _ => (400, "", ""),
                },
                _ => (500, "", ""),
            },
        };
        if !flag.is_empty() {
            ctx.flags.push(flag);
            if ctx.retried {
                ctx.flags.push("URX");
            }
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
        let (dest, subset) = match ctx.destination() {
            Some(d) => (d.host.as_str(), d.subset.as_deref().unwrap_or("")),
            None => ("", ""),
        };
        let flags = if ctx.flags.is_empty() {
            "-".to_string()
        } else {
            ctx.flags_header()
        };
        let code_s = code.to_string();
        self.metrics
            .requests
            .with_label_values(&[gateway, vs, route_id, dest, subset, method, &code_s, &flags])
            .inc();
        let elapsed = ctx.start.elapsed();
        self.metrics
            .duration
            .with_label_values(&[gateway, vs, route_id, dest, subset, method])
            .observe(elapsed.as_secs_f64());
        if self.access_log.enabled() {
            let req = session.req_header();
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
                flags: &flags,
                bytes_received: session.body_bytes_read(),
                bytes_sent: session.body_bytes_sent(),
                duration_ms: elapsed.as_millis(),
                upstream_service_time_ms: ctx.upstream_service_time.map(|d| d.as_millis()),
                x_forwarded_for: header("x-forwarded-for"),
                user_agent: header("user-agent"),
                request_id: &ctx.request_id,
                authority: authority_of(req),
                upstream_host: ctx.tried.last().map(|a| a.to_string()),
                route: route_id,
                sni: None,
            });
        }
    }
}
