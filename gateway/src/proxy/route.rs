//! Route: Istio's route lookup for the request, the answers routing makes itself (HTTPS redirects,
//! redirects, direct responses, CORS preflights, 404 `NR`), and what forwarding needs from the
//! winning route (destination, rewrite, hash, retries, mirrors).

use super::ctx::Ctx;
use super::GatewayProxy;
use crate::mirror;
use crate::policy;
use crate::routing::{
    apply_response_ops, authority_of, choose_destination, redirect_location, replace_prefix,
    respond, strip_port,
};
use bytes::Bytes;
use model::ir::{LbPolicy, RequestView, RouteAction, Target};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// What routing decided, computed while the request is borrowed and carried out after.
enum Decision {
    /// A response the gateway makes itself: status, flag, body.
    Local(u16, &'static str, &'static str),
    /// A complete response head (redirects, direct responses, preflights) and its body.
    Reply(Box<ResponseHeader>, Option<Bytes>),
    Forward,
}

impl GatewayProxy {
    /// Routes the request; `Ok(true)` when the gateway already answered.
    pub(super) async fn route(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // The gateway's own answers are boxed: a future is as large as its largest await, and
        // the callback's whole future is copied into Pingora's box on every request; their
        // writes would size it for the forwarded requests that never make them.
        match self.decide(session, ctx)? {
            Decision::Forward => return self.forward(session, ctx).await,
            Decision::Local(status, flag, body) => {
                if !flag.is_empty() {
                    ctx.flag(flag);
                }
                Box::pin(respond(session, status, &ctx.flags_header(), body)).await?;
            }
            Decision::Reply(resp, body) => Box::pin(reply(session, resp, body)).await?,
        }
        Ok(true)
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
        let (local_port, info) = self.listener(session);
        // A port listener decides per connection whether it is TLS: its handshake is registered.
        let handshake = self.handshake(session, local_port, info);
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
        let Some(winner) = route else {
            return Ok(Decision::Local(404, "NR", ""));
        };
        let route = winner.route;
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
                let loc = redirect_location(r, winner.uri(), req, info.tls);
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
                        Some(replace_prefix(path, winner.uri(), uri))
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
                    let h = crate::hash_policy::request_hash(key, req, ctx.client);
                    ctx.hash = h.hash;
                    ctx.set_cookie = h.set_cookie;
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
}

/// Writes a response head routing made (redirects, direct responses, preflights) and its body.
async fn reply(
    session: &mut Session,
    resp: Box<ResponseHeader>,
    body: Option<Bytes>,
) -> Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    match body {
        Some(b) if !head_only => {
            session.write_response_header(resp, false).await?;
            session.write_response_body(Some(b), true).await
        }
        _ => session.write_response_header(resp, true).await,
    }
}
