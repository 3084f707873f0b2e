//! Forward: faults, circuit breaking, endpoint resolution and the request's deadline, decided once
//! before the first attempt.

use super::ctx::Ctx;
use super::GatewayProxy;
use crate::policy;
use crate::routing::respond;
use model::ir::AbortKind;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::time::Instant;

impl GatewayProxy {
    /// Faults, circuit breaking and endpoint resolution for a forwarded request.
    pub(super) async fn forward(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some(route) = ctx.route.clone() else {
            return Ok(false);
        };
        // What is awaited off the common path is boxed (see `route`): faults, the gateway's own
        // answers, endpoints that need DNS.
        if let Some(fault) = &route.fault {
            if Box::pin(self.inject_fault(session, ctx, fault)).await? {
                return Ok(true);
            }
        }
        let (Some(cluster), Some(state)) = (ctx.cluster.clone(), ctx.state.clone()) else {
            return Ok(false);
        };
        let Some(slot) = state.admit(&cluster.policy) else {
            ctx.flag("UO");
            let body =
                "upstream connect error or disconnect/reset before headers. reset reason: overflow";
            Box::pin(respond(session, 503, &ctx.flags_header(), body)).await?;
            return Ok(true);
        };
        ctx.slots.push(slot);
        ctx.endpoints = match state.cached(&cluster) {
            Some(eps) => eps,
            None => Box::pin(self.upstreams.endpoints(&cluster, &state)).await,
        };
        if ctx.endpoints.is_empty() {
            ctx.flag("UH");
            Box::pin(respond(
                session,
                503,
                &ctx.flags_header(),
                "no healthy upstream",
            ))
            .await?;
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

    /// The route's fault: a delay, then an abort answered here (`Ok(true)`).
    async fn inject_fault(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        fault: &model::ir::Fault,
    ) -> Result<bool> {
        if let Some(d) = fault.delay.as_ref().filter(|d| policy::roll(d.percent)) {
            ctx.flag("DI");
            tokio::time::sleep(d.delay).await;
        }
        let Some(a) = fault.abort.as_ref().filter(|a| policy::roll(a.percent)) else {
            return Ok(false);
        };
        ctx.flag("FI");
        match a.kind {
            AbortKind::Http(status) => {
                respond(session, status, &ctx.flags_header(), "fault filter abort").await?;
            }
            AbortKind::Grpc(code) => {
                let resp =
                    crate::grpc::local_reply(code, "fault filter abort", &ctx.flags_header())?;
                crate::grpc::send_local_reply(session, resp).await?;
            }
        }
        Ok(true)
    }
}
