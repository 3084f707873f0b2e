//! Record: the request's metrics and access-log line, and the end of the request on its connection
//! (the unread body lingered over, the header timer rearmed).

use super::ctx::Ctx;
use super::headers::{forwarded_for, X_FORWARDED_FOR, X_REQUEST_ID};
use super::GatewayProxy;
use crate::accesslog::Entry;
use crate::metrics::{flags_label, method_label, RequestLabels};
use crate::routing::authority_of;
use pingora::proxy::Session;
use std::net::SocketAddr;
use std::time::SystemTime;

impl GatewayProxy {
    /// The last stage, however the request ended: its metrics, its access-log line, then what
    /// its connection needs before Pingora closes or reuses it.
    pub(super) async fn record(&self, session: &mut Session, ctx: &mut Ctx) {
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
        let [dest, subset] = ctx.labels();
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
