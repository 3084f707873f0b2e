//! The HTTP request path: Pingora's proxy phases, each handing the request to its stage, in order:
//! `downstream` (the connection, hygiene), authentication and authorization (`crate::security`),
//! `route`, `forward` (faults, circuit breaking, deadline), `balance` (each attempt's endpoint),
//! `headers` (edits in place both ways), `retry` (what a failed attempt means), `failure` (the
//! gateway's own answer to a failed request) and `record` (metrics, access log). [`Ctx`] carries
//! one request's state through them.

mod balance;
mod ctx;
mod downstream;
mod failure;
mod forward;
mod headers;
mod record;
mod retry;
mod route;

pub use ctx::{Ctx, InflightGuard};
pub use downstream::{ConnectionGuard, ListenerInfo};

use crate::accesslog::AccessLogger;
use crate::balancer::Balancers;
use crate::fast_map::FastMap;
use crate::metrics::Metrics;
use crate::mirror;
use crate::routing::new_request_id;
use crate::upstream::Upstreams;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use model::ir::Snapshot;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

/// The proxy: shared handles; per-request state lives in [`Ctx`].
pub struct GatewayProxy {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub upstreams: Arc<Upstreams>,
    pub balancers: Arc<Balancers>,
    pub metrics: Metrics,
    /// Local port → listener, fixed at start.
    pub listeners: Arc<FastMap<u16, ListenerInfo>>,
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

#[async_trait]
impl ProxyHttp for GatewayProxy {
    // Boxed: pingora-proxy keeps its context by value in the request's future, which is moved
    // into a fresh box for every request (`HttpServerApp::process_new_http`); a pointer there
    // instead of 768 bytes shortens that copy.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new(&self.inflight))
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<()> {
        self.begin(session, ctx)
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
        ctx: &Box<Ctx>,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        ConnectionGuard::carry(ctx.connection.as_ref())
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Box<Ctx>,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        ctx.connection = ConnectionGuard::resume(prev);
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        let has_id = session
            .req_header()
            .headers
            .get(headers::X_REQUEST_ID)
            .is_some_and(|v| !v.is_empty());
        if !has_id {
            ctx.request_id = Some(new_request_id());
        }
        // ACME HTTP-01 is answered before anything else looks at the request, as Envoy's
        // challenge route would be.
        if let Some(acme) = &self.acme {
            if Box::pin(crate::acme_http::answer(session, acme, &self.listeners)).await? {
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
            // Boxed, as everything off the common path (see `route`): only requests under a
            // policy carry its future.
            let check =
                self.security
                    .check(session, &snapshot, &conn, &mut ctx.auth, &mut ctx.flags);
            let answered = Box::pin(check).await?;
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
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let len = body.as_ref().map_or(0, Bytes::len);
        self.edge
            .body
            .on_body(session, &mut ctx.body, len, end_of_stream)?;
        if let Some(t) = ctx.web_text.as_mut() {
            t.request_body(body)?;
        }
        self.mirrors
            .on_body(&mut ctx.mirror, body.as_deref(), end_of_stream);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Box<Ctx>,
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
        ctx: &mut Box<Ctx>,
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

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Box<Ctx>,
    ) -> Result<Box<HttpPeer>> {
        self.pick_peer(session, ctx).await
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<Ctx>,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(session, ctx, e)
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<Ctx>,
        client_reused: bool,
    ) -> Box<Error> {
        self.attempt_failed(session, e, ctx, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        self.upstream_request(session, upstream, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        self.upstream_response(session, resp, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        self.downstream_response(session, resp, ctx)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<Ctx>,
    ) -> FailToProxy {
        self.answer_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Box<Ctx>) {
        self.record(session, ctx).await
    }
}
