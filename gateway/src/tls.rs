//! TLS at the edge. Downstream: [`TlsAcceptor`] serves every listener that speaks TLS: the
//! listener (`crate::listeners`) has the ClientHello read, picks by SNI in the snapshot current at
//! that moment either a passthrough route (the bytes go upstream untouched) or the Gateway server
//! whose whole `rustls::ServerConfig` (certificate, client verification, versions, cipher suites,
//! ALPN) finishes the handshake; the decrypted stream then goes to the HTTP proxy (HTTPS) or to
//! `tcp` routes (TLS). Choosing the config after the ClientHello is what lets mTLS, versions and
//! cipher suites differ per SNI, which one Pingora-built acceptor (one `ServerConfig` for the
//! whole listener) cannot do.
//!
//! Invariants: a handshake parses no PEM and does no I/O besides the socket (the snapshot holds
//! ready configs); a snapshot swap applies to the next handshake and never touches established
//! connections; every failed handshake counts in `gateway_tls_handshake_failures_total`.
//!
//! Upstream: [`upstream_peer_tls`] turns a cluster's [`UpstreamTls`] into Pingora peer options,
//! memoised in the snapshot so that requests do not rebuild them.

use crate::coalesce::Coalesced;
use crate::fast_map::FastMap;
use async_trait::async_trait;
use model::ir::{TlsServer, UpstreamTls};
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::protocols::{Stream, IO};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::LazyConfigAcceptor;

/// How long a client may take to complete the handshake (a slow or silent client would otherwise
/// hold a task and a socket forever).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection's handshake chose, for the requests that follow on it.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The SNI the client sent, lowercased.
    pub sni: Option<Arc<str>>,
    /// The client certificate's identity (mTLS): its first `spiffe://` URI SAN, else its first
    /// URI SAN, as Envoy's `source.principal` (AuthorizationPolicy `principals`).
    pub principal: Option<Arc<str>>,
}

/// The live TLS connections of the listeners, by (local port, client address): the HTTP layer
/// reads a request's SNI here (Pingora keeps no per-connection slot a stream wrapper could fill).
#[derive(Debug, Default)]
pub struct Connections {
    map: Mutex<FastMap<(u16, SocketAddr), Handshake>>,
}

impl Connections {
    /// What the handshake of the connection from `peer` on local port `port` chose.
    pub fn get(&self, port: u16, peer: SocketAddr) -> Option<Handshake> {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(&(port, peer)).cloned())
    }

    pub(crate) fn insert(self: &Arc<Self>, key: (u16, SocketAddr), h: Handshake) -> Registered {
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
pub struct Registered {
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

/// The one per-SNI TLS acceptor of every listener that speaks TLS (`--https`, and `--listen`
/// ports with HTTPS or TLS servers). A handshake is two steps, so that the caller can route on the
/// SNI in between: [`read_client_hello`] reads the ClientHello (and puts its bytes back), then
/// [`TlsAcceptor::terminate`] finishes the handshake with the chosen server's config, or the
/// caller passes the untouched bytes through.
pub struct TlsAcceptor {
    pub connections: Arc<Connections>,
    /// Answers a ClientHello that no server claims with an alert instead of a bare close.
    reject: Arc<rustls::ServerConfig>,
    /// ACME TLS-ALPN-01 challenge certificates (with `--acme-directory`).
    acme: Option<Arc<admin::acme::Challenges>>,
}

/// The most a ClientHello may take (a TLS record is at most 16 KiB; a hello with a post-quantum
/// key share and many extensions can span two or three).
const CLIENT_HELLO_MAX: usize = 64 * 1024;

/// Reads a ClientHello from `io` without decrypting anything, and puts the bytes read back at the
/// head of the stream, so that a terminating handshake or a passthrough upstream reads them again.
/// Returns the stream and the SNI (lowercased).
pub async fn read_client_hello(mut io: Stream) -> Result<(Stream, Option<Arc<str>>), Failed> {
    use tokio::io::AsyncReadExt;
    let mut acceptor = Acceptor::default();
    let mut seen: Vec<u8> = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let sni = loop {
        let n = io.read(&mut chunk).await.map_err(|e| {
            if seen.is_empty() {
                Failed::Silent
            } else {
                Failed::Counted(format!("reading the ClientHello: {e}"))
            }
        })?;
        if n == 0 {
            // A connection closed before any ClientHello (a TCP probe, a port scan) is not a
            // handshake that failed.
            return Err(if seen.is_empty() {
                Failed::Silent
            } else {
                Failed::Counted("closed in the middle of the ClientHello".to_string())
            });
        }
        let mut fresh = chunk.get(..n).unwrap_or_default();
        seen.extend_from_slice(fresh);
        if seen.len() > CLIENT_HELLO_MAX {
            return Err(Failed::Counted("ClientHello too large".to_string()));
        }
        while !fresh.is_empty() {
            let took = acceptor
                .read_tls(&mut fresh)
                .map_err(|e| Failed::Counted(format!("reading the ClientHello: {e}")))?;
            if took == 0 {
                return Err(Failed::Counted("ClientHello not accepted".to_string()));
            }
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                break accepted
                    .client_hello()
                    .server_name()
                    .map(|s| Arc::from(s.to_ascii_lowercase()));
            }
            Err((e, _)) => return Err(Failed::Counted(format!("reading the ClientHello: {e}"))),
        }
    };
    // Every listener is a Pingora TCP listener, whose streams can take bytes back.
    match io
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
    {
        Ok(mut l4) => {
            l4.rewind(&seen);
            let io: Stream = l4;
            Ok((io, sni))
        }
        Err(_) => Err(Failed::Counted(
            "internal: the connection is not a TCP stream".to_string(),
        )),
    }
}

impl TlsAcceptor {
    pub fn new(
        connections: Arc<Connections>,
        acme: Option<Arc<admin::acme::Challenges>>,
    ) -> Result<Self, String> {
        let reject =
            rustls::ServerConfig::builder_with_provider(Arc::new(model::ir::server_crypto()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(NoCertificate));
        Ok(TlsAcceptor {
            connections,
            reject: Arc::new(reject),
            acme,
        })
    }

    /// RFC 8737: a ClientHello offering `acme-tls/1` for a host with a published
    /// challenge gets the challenge certificate, whatever server (if any) the SNI selects.
    fn acme_challenge(&self, hello: &ClientHello<'_>) -> Option<Arc<rustls::ServerConfig>> {
        let acme = self.acme.as_ref()?;
        let offered = hello
            .alpn()
            .is_some_and(|mut a| a.any(|p| p == admin::acme::ACME_TLS_ALPN));
        tracing::debug!(offered, sni = ?hello.server_name(), "ClientHello ALPN");
        if !offered {
            return None;
        }
        let sni = hello.server_name()?.to_ascii_lowercase();
        let Some(cert) = acme.alpn(&sni) else {
            tracing::info!(host = %sni, "acme-tls/1 offered for a host with no pending challenge");
            return None;
        };
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_der.clone().into());
        let provider = Arc::new(model::ir::server_crypto());
        // Not `with_single_cert`: its certificate check refuses the critical acmeIdentifier
        // extension that RFC 8737 requires.
        let built = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| e.to_string())
            .and_then(|signer| {
                let key = CertifiedKey::new(vec![cert.cert_der.clone().into()], signer);
                rustls::ServerConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())
                    .map(|b| {
                        b.with_no_client_auth()
                            .with_cert_resolver(Arc::new(Fixed(Arc::new(key))))
                    })
            });
        let mut config = match built {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(host = %sni, error = %e, "unusable TLS-ALPN-01 challenge certificate");
                return None;
            }
        };
        config.alpn_protocols = vec![admin::acme::ACME_TLS_ALPN.to_vec()];
        tracing::info!(host = %sni, "answering an ACME TLS-ALPN-01 challenge");
        Some(Arc::new(config))
    }

    /// Finishes the handshake of a stream whose ClientHello [`read_client_hello`] put back, with
    /// `server`'s whole config (the caller chose it by SNI in the snapshot current at accept
    /// time); `None` (no server claims the SNI) ends it with an alert.
    pub async fn terminate(
        &self,
        io: Stream,
        server: Option<&Arc<TlsServer>>,
    ) -> Result<TlsConn, Failed> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io)
            .await
            .map_err(|e| Failed::Counted(format!("reading the ClientHello: {e}")))?;
        if let Some(challenge) = self.acme_challenge(&start.client_hello()) {
            // The validation is the handshake itself; nothing is served on this connection.
            return match start.into_stream(challenge).await {
                Ok(_) => Err(Failed::Silent),
                Err(e) => Err(Failed::Counted(format!("ACME TLS-ALPN-01 handshake: {e}"))),
            };
        }
        let config = match server.map(|s| (s.config.clone(), &s.name)) {
            Some((Some(config), _)) => config,
            Some((None, name)) => {
                let _ = start.into_stream(self.reject.clone()).await;
                return Err(Failed::Counted(format!(
                    "server {name} has no usable certificate"
                )));
            }
            None => {
                let sni = start.client_hello().server_name().map(str::to_string);
                let _ = start.into_stream(self.reject.clone()).await;
                return Err(Failed::Counted(format!("no server for SNI {sni:?}")));
            }
        };
        let tls = start
            .into_stream(config)
            .await
            .map_err(|e| Failed::Counted(format!("handshake: {e}")))?;
        Ok(TlsConn::new(tls))
    }

    /// Remembers what a connection's handshake chose until the returned guard drops.
    pub fn register(&self, key: (u16, SocketAddr), h: Handshake) -> Registered {
        self.connections.insert(key, h)
    }
}

/// Why a handshake did not complete.
pub enum Failed {
    /// Counted in `gateway_tls_handshake_failures_total`.
    Counted(String),
    /// The peer went away before saying anything.
    Silent,
}

/// A resolver that always answers with one certificate (the TLS-ALPN-01 challenge's).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
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
    /// Writes held until Pingora flushes: a response head and a small body become one record.
    inner: Coalesced<tokio_rustls::server::TlsStream<Stream>>,
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
            inner: Coalesced::new(inner),
            digest: Arc::new(digest),
            alpn,
        }
    }

    fn l4(&self) -> &Stream {
        self.inner.get_ref().get_ref().0
    }

    /// The identity of the client certificate, if the client sent one ([`Handshake::principal`]).
    pub fn principal(&self) -> Option<Arc<str>> {
        let cert = self
            .inner
            .get_ref()
            .get_ref()
            .1
            .peer_certificates()?
            .first()?;
        uri_san(cert.as_ref()).map(Arc::from)
    }
}

/// A certificate's identity: its first `spiffe://` URI SAN, else its first URI SAN.
pub fn uri_san(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    uris.iter()
        .find(|u| u.starts_with("spiffe://"))
        .or(uris.first())
        .map(|u| u.to_string())
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
        self.inner
            .get_mut()
            .get_mut()
            .0
            .set_socket_digest(socket_digest)
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
