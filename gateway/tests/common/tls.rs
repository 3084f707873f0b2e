//! TLS helpers shared by the e2e tests: certificates made at test time with rcgen (a CA that
//! signs server and client leaves, Secrets carrying them) and a real tokio-rustls client that
//! reports what the handshake showed (leaf certificate, version, cipher suite, ALPN).

use super::Response;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ----- certificates -----

/// A certificate authority that signs leaves.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

/// A certificate with its key, as PEM and DER.
#[derive(Clone)]
pub struct Leaf {
    pub pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).expect("ca");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn issue(&self, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        self.issue_with(cn, names, usage, |_| {})
    }

    pub fn issue_with(
        &self,
        cn: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(
            names
                .iter()
                .filter(|n| !n.contains("://"))
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
        )
        .expect("params");
        for uri in names.iter().filter(|n| n.contains("://")) {
            p.subject_alt_names
                .push(SanType::URI((*uri).try_into().expect("uri")));
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        tweak(&mut p);
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("leaf");
        Leaf {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub fn server(&self, names: &[&str]) -> Leaf {
        self.issue(names[0], names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client(&self, cn: &str, names: &[&str]) -> Leaf {
        self.issue(cn, names, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

pub fn secret_yaml(name: &str, leaf: &Leaf, ca: Option<&str>) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: {:?}\n  tls.key: {:?}\n",
        leaf.pem, leaf.key_pem
    );
    if let Some(ca) = ca {
        y.push_str(&format!("  ca.crt: {ca:?}\n"));
    }
    y.push_str("---\n");
    y
}

pub fn secret_json(name: &str, leaf: &Leaf) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": leaf.pem, "tls.key": leaf.key_pem},
    })
}

// ----- a TLS client -----

/// Accepts any server certificate: the tests compare the served certificate with the expected
/// one byte for byte instead.
#[derive(Debug)]
pub struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How a test client connects.
#[derive(Clone, Default)]
pub struct Client {
    /// `None`: send no SNI.
    pub sni: Option<String>,
    /// Empty: TLS 1.2 and 1.3.
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    pub alpn: Vec<&'static str>,
    pub cert: Option<Leaf>,
}

impl Client {
    pub fn sni(name: &str) -> Client {
        Client {
            sni: Some(name.to_string()),
            ..Client::default()
        }
    }

    pub fn config(&self) -> rustls::ClientConfig {
        let versions = if self.versions.is_empty() {
            vec![&rustls::version::TLS12, &rustls::version::TLS13]
        } else {
            self.versions.clone()
        };
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny));
        let mut c = match &self.cert {
            None => b.with_no_client_auth(),
            Some(l) => b
                .with_client_auth_cert(
                    vec![l.der.clone()],
                    PrivateKeyDer::from_pem_slice(l.key_pem.as_bytes()).expect("key"),
                )
                .expect("client cert"),
        };
        c.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        c.enable_sni = self.sni.is_some();
        c
    }
}

pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// What a completed handshake showed.
pub struct Shook {
    pub leaf: Vec<u8>,
    pub version: Option<rustls::ProtocolVersion>,
    pub suite: Option<rustls::CipherSuite>,
    pub alpn: Option<Vec<u8>>,
    pub stream: TlsStream,
}

pub async fn handshake(addr: SocketAddr, c: &Client) -> Result<Shook, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(c.config()));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(c.sni.clone().unwrap_or_else(|| "no-sni.invalid".into()))
        .map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let conn = stream.get_ref().1;
    Ok(Shook {
        leaf: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default(),
        version: conn.protocol_version(),
        suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        stream,
    })
}

/// One HTTP/1.1 request on an established TLS stream; `close` asks the server to close after.
pub async fn http1<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
    close: bool,
) -> Result<Response, String> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    // Read until a whole response (head + Content-Length body) is in.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                buf.truncate(end + 4 + len);
                return super::read_response(&buf[..]).map_err(|e| e.to_string());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .map_err(|_| "read timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("connection closed after {} bytes", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Handshake, one request, the response.
pub async fn get(addr: SocketAddr, c: &Client, host: &str, path: &str) -> Result<Response, String> {
    let mut s = handshake(addr, c).await?;
    http1(&mut s.stream, host, path, true).await
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
