//! HTTPS for the admin API (`--admin-tls-cert`, `--admin-tls-key`): kubectl sends a bearer token
//! only to an https server. Handshakes run one task per connection, so a client that stalls in
//! its handshake holds up nobody else; a finished one is handed to axum as an accepted stream.

use admin::linger::{LingeringListener, LingeringStream};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin API's certificate and key, read and checked at startup.
#[derive(Clone)]
pub struct AdminTls(Arc<rustls::ServerConfig>);

impl AdminTls {
    pub fn load(cert: &Path, key: &Path) -> Result<AdminTls, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("--admin-tls-cert {}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--admin-tls-cert {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "--admin-tls-cert {}: no PEM certificate in the file",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--admin-tls-key {}: {e}", key.display()))?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(model::ir::server_crypto()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| format!("--admin-tls-cert/--admin-tls-key: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(AdminTls(Arc::new(config)))
    }
}

/// Accepted TLS connections, as axum serves them.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<LingeringStream>, SocketAddr)>,
    local: std::io::Result<SocketAddr>,
}

impl TlsListener {
    /// Starts accepting on `inner` (on the current runtime).
    pub fn new(mut inner: LingeringListener, tls: &AdminTls) -> TlsListener {
        let local = axum::serve::Listener::local_addr(&inner);
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(Arc::clone(&tls.0));
        tokio::spawn(async move {
            loop {
                let (io, addr) = axum::serve::Listener::accept(&mut inner).await;
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            // The server is gone only when the process is exiting.
                            let _ = tx.send((stream, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "admin TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %addr, "admin TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<LingeringStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop never ends on its own; if it did, serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
