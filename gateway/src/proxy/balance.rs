//! Balance: the endpoint of each attempt and the peer (TLS, protocol, timeouts) that reaches it.

use super::ctx::Ctx;
use super::GatewayProxy;
use crate::balancer::{self, Pick};
use crate::routing::{authority_of, strip_port};
use model::ir::{self, RouteAction};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorType;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl GatewayProxy {
    /// The endpoint of this attempt (the cluster's policy, avoiding hosts already tried, after the
    /// retry backoff) and the peer that reaches it, with the attempt's timeouts.
    pub(super) async fn pick_peer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<Box<HttpPeer>> {
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
}
