//! TLS at the edge. Downstream: [`TlsTerminator`] accepts the TCP connections of the `--https`
//! listener, reads the ClientHello, picks the Gateway server by SNI in the snapshot current at
//! that moment and finishes the handshake with that server's whole `rustls::ServerConfig`
//! (certificate, client verification, versions, cipher suites, ALPN), then hands the decrypted
//! stream to the same Pingora HTTP proxy as the plaintext listener. Choosing the config after the
//! ClientHello is what lets mTLS, versions and cipher suites differ per SNI, which one
//! Pingora-built acceptor (one `ServerConfig` for the whole listener) cannot do.
//!
//! Invariants: a handshake parses no PEM and does no I/O besides the socket (the snapshot holds
//! ready configs); a snapshot swap applies to the next handshake and never touches established
//! connections; every failed handshake counts in `gateway_tls_handshake_failures_total`.
//!
//! Upstream: [`upstream_peer_tls`] turns a cluster's [`UpstreamTls`] into Pingora peer options,
//! memoised in the snapshot so that requests do not rebuild them.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use model::ir::{Snapshot, UpstreamTls};
use pingora::apps::ServerApp;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::protocols::{Stream, IO};
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use prometheus::IntCounter;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::LazyConfigAcceptor;

/// How long a client may take to complete the handshake (a slow or silent client would otherwise
/// hold a task and a socket forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection's handshake chose, for the requests that follow on it.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The SNI the client sent, lowercased.
    pub sni: Option<Arc<str>>,
}

/// The live TLS connections of the listeners, by (local port, client address): the HTTP layer
/// reads a request's SNI here (Pingora keeps no per-connection slot a stream wrapper could fill).
#[derive(Debug, Default)]
pub struct Connections {
    map: Mutex<HashMap<(u16, SocketAddr), Handshake>>,
}

impl Connections {
    /// What the handshake of the connection from `peer` on local port `port` chose.
    pub fn get(&self, port: u16, peer: SocketAddr) -> Option<Handshake> {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(&(port, peer)).cloned())
    }

    fn insert(self: &Arc<Self>, key: (u16, SocketAddr), h: Handshake) -> Registered {
        if let Ok(mut m) = self.map.lock() {
            m.insert(key, h);
        }
        Registered {
            conns: self.clone(),
            key,
        }
    }
}

/// Removes a connection from [`Connections`] when it ends, however it ends.
struct Registered {
    conns: Arc<Connections>,
    key: (u16, SocketAddr),
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut m) = self.conns.map.lock() {
            m.remove(&self.key);
        }
    }
}

/// The `--https` listener's application: TLS by SNI, then the HTTP proxy `A`.
pub struct TlsTerminator<A> {
    pub proxy: Arc<A>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The Gateway server port this listener serves (443).
    pub gateway_port: u16,
    pub connections: Arc<Connections>,
    /// `gateway_tls_handshake_failures_total{listener}` for this listener.
    pub failures: IntCounter,
    /// Answers a ClientHello that no server claims with an alert instead of a bare close.
    reject: Arc<rustls::ServerConfig>,
}

impl<A> TlsTerminator<A> {
    pub fn new(
        proxy: A,
        snapshot: Arc<ArcSwap<Snapshot>>,
        gateway_port: u16,
        connections: Arc<Connections>,
        failures: IntCounter,
    ) -> Result<Self, String> {
        let reject = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
        Ok(TlsTerminator {
            proxy: Arc::new(proxy),
            snapshot,
            gateway_port,
            connections,
            failures,
            reject: Arc::new(reject),
        })
    }

    async fn handshake(&self, io: Stream) -> Result<(TlsConn, Handshake), Failed> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io)
            .await
            .map_err(|e| {
                // A connection closed before any ClientHello (a TCP probe, a port scan) is not
                // a handshake that failed.
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Failed::Silent
                } else {
                    Failed::Counted(format!("reading the ClientHello: {e}"))
                }
            })?;
        let sni: Option<Arc<str>> = start
            .client_hello()
            .server_name()
            .map(|s| Arc::from(s.to_ascii_lowercase()));
        // One load: the server and its config come from the same snapshot.
        let chosen = {
            let snapshot = self.snapshot.load();
            snapshot
                .tls
                .get(&self.gateway_port)
                .and_then(|l| l.server_for(sni.as_deref()))
                .map(|s| (s.config.clone(), s.name.clone()))
        };
        let config = match chosen {
            Some((Some(config), _)) => config,
            Some((None, server)) => {
                let _ = start.into_stream(self.reject.clone()).await;
                return Err(Failed::Counted(format!(
                    "server {server} has no usable certificate"
                )));
            }
            None => {
                let _ = start.into_stream(self.reject.clone()).await;
                return Err(Failed::Counted(format!("no server for SNI {sni:?}")));
            }
        };
        let tls = start
            .into_stream(config)
            .await
            .map_err(|e| Failed::Counted(format!("handshake: {e}")))?;
        let conn = TlsConn::new(tls);
        Ok((conn, Handshake { sni }))
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TlsTerminator<A> {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let key = io.get_socket_digest().and_then(|d| {
            let local = d.local_addr()?.as_inet()?.port();
            let peer = *d.peer_addr()?.as_inet()?;
            Some((local, peer))
        });
        let (conn, handshake) =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(io)).await {
                Ok(Ok(done)) => done,
                Ok(Err(Failed::Counted(e))) => {
                    self.failures.inc();
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return None;
                }
                Ok(Err(Failed::Silent)) => return None,
                Err(_) => {
                    self.failures.inc();
                    tracing::debug!("TLS handshake timed out");
                    return None;
                }
            };
        let _registered = key.map(|k| self.connections.insert(k, handshake));
        // The proxy returns the stream while the connection may serve another request (HTTP/1.1
        // keep-alive); Pingora's own loop would hand it back here, so loop in place instead.
        let mut next: Option<Stream> = Some(Box::new(conn));
        while let Some(stream) = next.take() {
            next = self.proxy.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

/// Why a handshake did not complete.
enum Failed {
    /// Counted in `gateway_tls_handshake_failures_total`.
    Counted(String),
    /// The peer went away before saying anything.
    Silent,
}

/// A resolver that never finds a certificate: rustls then ends the handshake with an alert.
#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// A server-side TLS connection as Pingora's HTTP layer wants it: the byte stream plus the TLS
/// facts it asks for (negotiated ALPN decides HTTP/2, the digest marks the connection as TLS).
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<Stream>,
    digest: Arc<SslDigest>,
    alpn: Option<ALPN>,
}

impl TlsConn {
    fn new(inner: tokio_rustls::server::TlsStream<Stream>) -> TlsConn {
        let c = inner.get_ref().1;
        let alpn = match c.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(b"http/1.1") => Some(ALPN::H1),
            _ => None,
        };
        let cipher = c
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("");
        let version = c.protocol_version().and_then(|v| v.as_str()).unwrap_or("");
        let peer = c.peer_certificates().and_then(|certs| certs.first());
        let (organization, serial) = peer
            .and_then(|p| pingora::utils::tls::get_organization_serial_bytes(p.as_ref()).ok())
            .map_or((None, None), |(o, s)| (o, Some(s)));
        let cert_digest = peer
            .map(|p| pingora::tls::hash_certificate(p))
            .unwrap_or_default();
        let digest = SslDigest::new(cipher, version, organization, serial, cert_digest);
        TlsConn {
            inner,
            digest: Arc::new(digest),
            alpn,
        }
    }

    fn l4(&self) -> &Stream {
        self.inner.get_ref().0
    }
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("l4", self.l4())
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for TlsConn {
    async fn shutdown(&mut self) {
        if let Err(e) = tokio::io::AsyncWriteExt::shutdown(&mut self.inner).await {
            tracing::debug!(error = %e, "TLS shutdown");
        }
    }
}

impl UniqueID for TlsConn {
    fn id(&self) -> UniqueIDType {
        self.l4().id()
    }
}

impl Ssl for TlsConn {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.digest.clone())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl GetTimingDigest for TlsConn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.l4().get_timing_digest()
    }
}

impl GetProxyDigest for TlsConn {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.l4().get_proxy_digest()
    }
}

impl GetSocketDigest for TlsConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.l4().get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.get_mut().0.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for TlsConn {}

// Compile-time check that the wrapper is a Pingora stream.
const _: fn(TlsConn) -> Box<dyn IO> = |c| Box::new(c);

/// The Pingora form of a cluster's upstream TLS, built once per snapshot.
struct PeerTls {
    ca: Option<Arc<[WrappedX509]>>,
    client: Option<Arc<CertKey>>,
}

/// Makes `peer` a TLS peer per the cluster's policy. `host` is the request's authority (port
/// stripped), the SNI when the policy names none; `cluster_host` stands in when it is empty,
/// because Pingora skips certificate verification altogether for an empty SNI. `Err` when the
/// policy cannot be used (its credential is missing): the request fails rather than going out in
/// plain text.
pub fn upstream_peer_tls(
    addr: SocketAddr,
    tls: &Arc<UpstreamTls>,
    host: &str,
    cluster_host: &str,
) -> Result<HttpPeer, String> {
    if let Some(p) = &tls.problem {
        return Err(p.clone());
    }
    let compiled = tls.data_plane.get_or_init(|| {
        // The model checked every certificate parses with the same x509 parser Pingora uses, so
        // `parse_x509` (which panics on bad DER) cannot fail here.
        let ca = tls.ca.as_ref().map(|certs| {
            certs
                .iter()
                .map(|c| WrappedX509::new(c.as_ref().to_vec(), parse_x509))
                .collect::<Vec<_>>()
                .into()
        });
        let client = tls
            .client
            .as_ref()
            .filter(|c| !c.chain.is_empty())
            .map(|c| {
                Arc::new(CertKey::new(
                    c.chain.iter().map(|d| d.as_ref().to_vec()).collect(),
                    c.key.secret_der().to_vec(),
                ))
            });
        let built: Arc<dyn std::any::Any + Send + Sync> = Arc::new(PeerTls { ca, client });
        built
    });
    let Some(compiled) = compiled.downcast_ref::<PeerTls>() else {
        return Err("internal: upstream TLS slot holds another type".to_string());
    };
    let sni = tls
        .sni
        .clone()
        .unwrap_or_else(|| host.trim_end_matches('.').to_ascii_lowercase());
    let sni = if sni.is_empty() {
        cluster_host.to_ascii_lowercase()
    } else {
        sni
    };
    if sni.is_empty() {
        return Err("no name to send as SNI and verify the certificate against".to_string());
    }
    let mut peer = HttpPeer::new(addr, true, sni);
    peer.options.ca = compiled.ca.clone();
    peer.client_cert_key = compiled.client.clone();
    peer.options.verify_cert = !tls.insecure_skip_verify;
    peer.options.verify_hostname = !tls.insecure_skip_verify;
    // Connections made under different TLS policies (CA, client certificate) must not be pooled
    // together: Pingora's pool key covers the SNI and the certificate but not the CA.
    peer.group_key = Arc::as_ptr(tls) as usize as u64;
    Ok(peer)
}
