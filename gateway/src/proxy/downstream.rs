//! The downstream connection: which listener it came on, what its TLS handshake chose, the client
//! address, and its unit of `gateway_open_connections`, carried across kept-alive requests.

use super::ctx::Ctx;
use super::headers::X_FORWARDED_FOR;
use super::GatewayProxy;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::any::Any;
use std::sync::Arc;

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

impl ConnectionGuard {
    /// Hands the connection's unit over to Pingora's connection context for the next request:
    /// the hook only borrows the request's context, so the gauge counts once more, and the
    /// request's own guard gives its unit back when it drops.
    pub(super) fn carry(guard: Option<&ConnectionGuard>) -> Option<Box<dyn Any + Send + Sync>> {
        guard.map(|g| {
            g.0.inc();
            Box::new(ConnectionGuard(g.0.clone())) as Box<dyn Any + Send + Sync>
        })
    }

    /// The unit [`ConnectionGuard::carry`] handed over, taken by the next request.
    pub(super) fn resume(prev: Box<dyn Any + Send + Sync>) -> Option<ConnectionGuard> {
        prev.downcast::<ConnectionGuard>().ok().map(|g| *g)
    }
}

impl GatewayProxy {
    /// The listener the request came on: its local port and what it serves.
    pub(super) fn listener(&self, session: &Session) -> (u16, &ListenerInfo) {
        let port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map_or(0, |a| a.port());
        (port, self.listeners.get(&port).unwrap_or(&PLAIN_80))
    }

    /// What the TLS handshake of the request's connection chose; `None` on a plain connection.
    pub(super) fn handshake(
        &self,
        session: &Session,
        port: u16,
        info: &ListenerInfo,
    ) -> Option<crate::tls::Handshake> {
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied()?;
        info.connections.as_ref()?.get(port, peer)
    }

    /// Turns on Pingora's gRPC-Web bridge (a gRPC-Web request goes upstream as gRPC, its answer
    /// comes back as gRPC-Web with the trailers in the body) when the listener's port has a
    /// GRPC-WEB server in this request's snapshot, as Istio adds Envoy's grpc_web filter there.
    pub(super) fn enable_grpc_web(&self, session: &mut Session, ctx: &mut Ctx) {
        let snapshot = self.snapshot.load_full();
        let port = self.listener(session).1.gateway_port;
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
    pub(super) fn conn(&self, session: &Session) -> crate::security::Conn {
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        let (local_port, info) = self.listener(session);
        let handshake = self.handshake(session, local_port, info);
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
    pub(super) fn client_ip(&self, session: &Session) -> Option<std::net::IpAddr> {
        let peer = session.client_addr().and_then(|a| a.as_inet())?.ip();
        let xff = session.req_header().headers.get_all(X_FORWARDED_FOR);
        Some(crate::client_addr::client_ip(
            peer,
            xff,
            self.edge.trusted_hops,
        ))
    }

    /// The first stage, as soon as the request head is read: the connection's count, draining,
    /// the header timer, the client address, gRPC-Web, hygiene, and the body's limits.
    pub(super) fn begin(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if ctx.connection.is_none() {
            if let Some(g) = self.listener(session).1.open_connections.as_ref() {
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
}
