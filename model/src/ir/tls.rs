//! TLS in the snapshot: the servers that terminate TLS on a gateway port, chosen by SNI, each with a
//! ready `rustls::ServerConfig` (certificate, client verification, versions, cipher suites, ALPN);
//! the upstream TLS of clusters; and the certificate material they are built from, parsed from PEM
//! once at translation. A handshake only looks things up: it never parses PEM.
//!
//! Parsing never panics on user input and its errors never repeat the bytes (private keys).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The TLS servers of one gateway port, indexed by the names their `hosts` claim.
#[derive(Debug, Default, Serialize)]
pub struct TlsListener {
    pub port: u16,
    /// Lowercased exact names.
    #[serde(serialize_with = "super::ser_sorted_map")]
    pub exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com`.
    #[serde(serialize_with = "super::ser_sorted_map")]
    pub suffix: HashMap<String, usize>,
    /// The server whose hosts include `*`: any SNI, and clients that send none.
    pub any: Option<usize>,
    pub servers: Vec<Arc<TlsServer>>,
}

impl TlsListener {
    /// The server for a ClientHello's SNI (`None` when the client sent none): exact name, then
    /// `*.suffix` longest first, then `*`. `None` means no server claims it: the handshake fails.
    pub fn server_for(&self, sni: Option<&str>) -> Option<&Arc<TlsServer>> {
        let i = match sni {
            None => self.any?,
            Some(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                self.exact
                    .get(&name)
                    .copied()
                    .or_else(|| {
                        // Every dot starts a candidate suffix, longest first; the name itself is
                        // never one (`*.a.com` does not claim `a.com`).
                        name.bytes()
                            .enumerate()
                            .filter(|(_, b)| *b == b'.')
                            .find_map(|(pos, _)| {
                                name.get(pos + 1..).and_then(|s| self.suffix.get(s))
                            })
                            .copied()
                    })
                    .or(self.any)?
            }
        };
        self.servers.get(i)
    }
}

/// Cipher suites Envoy (and so Istio) knows by their OpenSSL names; the gateway implements the
/// ECDHE ones with AES-GCM or CHACHA20-POLY1305 (TLS 1.2; TLS 1.3 suites are not configurable).
pub const ENVOY_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// How a server treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ClientAuth {
    /// `SIMPLE`: none asked for.
    None,
    /// `OPTIONAL_MUTUAL`: asked for, verified when given.
    Optional,
    /// `MUTUAL`: required and verified.
    Required,
}

/// A protocol version rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSV1_2")]
    Tls12,
    #[serde(rename = "TLSV1_3")]
    Tls13,
}

/// One Gateway server that terminates TLS.
#[derive(Serialize)]
pub struct TlsServer {
    /// `<ns>/<gateway> spec.servers[<i>]`, for logs.
    pub name: String,
    /// `ns/name` of the Gateway.
    pub gateway: String,
    /// Lowercased hosts (namespace filters dropped): HTTP requests on a connection to this server
    /// must name one of them.
    pub hosts: Vec<String>,
    pub client_auth: ClientAuth,
    /// Versions offered (ascending); empty when none is possible.
    pub versions: Vec<TlsVersion>,
    /// TLS 1.2 cipher suites honoured (Envoy names), empty for rustls' defaults. TLS 1.3 suites are
    /// not configurable (as in Envoy).
    pub cipher_suites: Vec<String>,
    /// The served certificates (one per key type).
    pub certificates: Vec<CertInfo>,
    /// Client CA certificates (mutual modes).
    pub client_ca: Vec<CertInfo>,
    /// Client certificates must carry one of these SANs (when not empty).
    pub subject_alt_names: Vec<String>,
    /// Why handshakes for this server fail, when they do (`config` is `None`).
    pub problem: Option<String>,
    /// A `TLS` server (not `HTTPS`): the decrypted stream goes to `tcp` routes, not to HTTP.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
    /// The whole handshake configuration; `None` makes every handshake for this server fail.
    #[serde(skip)]
    pub config: Option<Arc<rustls::ServerConfig>>,
}

impl TlsServer {
    /// Whether a request host (port already stripped) is one of this server's hosts.
    pub fn admits(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.hosts.iter().any(|h| {
            if h == "*" {
                return true;
            }
            if let Some(suffix) = h.strip_prefix("*.") {
                return host.len() > suffix.len() + 1
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
                    && host.as_bytes().get(host.len() - suffix.len() - 1) == Some(&b'.');
            }
            h.eq_ignore_ascii_case(host)
        })
    }
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("client_auth", &self.client_auth)
            .field("versions", &self.versions)
            .field("problem", &self.problem)
            .finish_non_exhaustive()
    }
}

/// What the snapshot shows of a certificate (never key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The subject's common name, or the whole subject when it has none.
    pub subject: String,
    /// DNS, URI, IP and e-mail SANs, as text.
    pub sans: Vec<String>,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
}

/// A TLS Secret's certificate, for `gateway_tls_certificate_expiry_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretCertificate {
    pub namespace: String,
    pub name: String,
    /// `notAfter` of the leaf certificate, Unix seconds.
    pub not_after: i64,
}

/// Upstream TLS of a cluster (DestinationRule `trafficPolicy.tls`, mode SIMPLE or MUTUAL).
#[derive(Serialize)]
pub struct UpstreamTls {
    /// Sent as SNI and verified against; `None` means the downstream Host (port stripped).
    pub sni: Option<String>,
    /// When not empty, the certificate must be valid for one of these names.
    pub subject_alt_names: Vec<String>,
    pub insecure_skip_verify: bool,
    /// Trusted roots as DER; `None` means the system's roots.
    #[serde(serialize_with = "ser_der_count")]
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// MUTUAL: the client certificate chain (leaf first) and its private key (DER).
    #[serde(skip)]
    pub client: Option<ClientCertificate>,
    /// Summary of `client` for dumps.
    pub client_certificate: Option<CertInfo>,
    /// Why connections with this policy fail, when they do (e.g. a `credentialName` that does not
    /// resolve): the data plane answers 503 `UF` rather than connecting without the credential.
    pub problem: Option<String>,
    /// A slot for the data plane's own form of this policy (built on first use, dropped with the
    /// snapshot), so that per-request work does not repeat it.
    #[serde(skip)]
    pub data_plane: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("subject_alt_names", &self.subject_alt_names)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("problem", &self.problem)
            .finish_non_exhaustive()
    }
}

fn ser_der_count<S: serde::Serializer>(
    v: &Option<Vec<CertificateDer<'static>>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(certs) => s.serialize_some(&format!("{} certificate(s)", certs.len())),
    }
}

/// A client certificate for upstream mutual TLS.
pub struct ClientCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8, SEC1 or PKCS#1 DER, as found in the PEM.
    pub key: PrivateKeyDer<'static>,
}

/// A served certificate: the chain with its signing key, ready for rustls.
#[derive(Debug, Clone)]
pub struct ServedCertificate {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// What is wrong with PEM material. Messages never contain the material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemError {
    /// No `CERTIFICATE` block at all.
    NoCertificate,
    /// A block that does not decode as an X.509 certificate.
    BadCertificate(String),
    NoKey,
    BadKey(String),
    /// The key does not belong to the first (leaf) certificate.
    KeyMismatch,
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::NoCertificate => f.write_str("no PEM certificate found"),
            PemError::BadCertificate(e) => write!(f, "the certificate does not parse: {e}"),
            PemError::NoKey => f.write_str("no PEM private key found"),
            PemError::BadKey(e) => write!(f, "the private key is not usable: {e}"),
            PemError::KeyMismatch => f.write_str(
                "the private key does not match the public key of the first certificate",
            ),
        }
    }
}

/// Every `CERTIFICATE` block, each checked to be an X.509 certificate.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let mut out = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let c = c.map_err(|e| PemError::BadCertificate(format!("block {}: {e}", i + 1)))?;
        cert_info(&c).map_err(|e| PemError::BadCertificate(format!("block {}: {e}", i + 1)))?;
        out.push(c);
    }
    if out.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(out)
}

/// The first private key block (PKCS#8, SEC1 or PKCS#1).
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => Ok(k),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(PemError::NoKey),
        Err(e) => Err(PemError::BadKey(e.to_string())),
    }
}

/// The cryptography of every TLS server the gateway runs (the edge's, the admin API's): aws-lc-rs.
/// The edge's full handshakes are bound by the certificate's signature, and aws-lc signs RSA-2048
/// in about half ring's time (measured: 0.41 ms against 0.76, OpenSSL 3 0.41); it also offers the
/// X25519MLKEM768 post-quantum hybrid to the clients that ask for it. Clients (upstream TLS, ACME,
/// JWKS) stay on ring, Pingora's provider.
pub fn server_crypto() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// A private key as the servers of [`server_crypto`] sign with it.
pub fn signing_key(
    key: PrivateKeyDer<'static>,
) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
    rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
}

/// The chain and key as rustls serves them, after checking that the key is supported and belongs
/// to the leaf. The error says which of the two is wrong: `Err((true, _))` is about the key.
pub fn served_certificate(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<ServedCertificate, (bool, PemError)> {
    let chain = parse_certificates(chain_pem).map_err(|e| (false, e))?;
    let key = parse_private_key(key_pem).map_err(|e| (true, e))?;
    let signer = signing_key(key).map_err(|e| (true, PemError::BadKey(e.to_string())))?;
    let info = chain
        .first()
        .map(cert_info)
        .transpose()
        .map_err(|e| (false, PemError::BadCertificate(e)))?
        .ok_or((false, PemError::NoCertificate))?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err((true, PemError::KeyMismatch))
        }
        // The key type cannot say its public key: nothing to compare, rustls will find out.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err((false, PemError::BadCertificate(e.to_string()))),
    }
    Ok(ServedCertificate {
        key: Arc::new(ck),
        info,
    })
}

/// `notAfter` (Unix seconds) of the first certificate of a PEM chain, if it parses.
pub fn leaf_not_after(pem: &[u8]) -> Option<i64> {
    let chain = parse_certificates(pem).ok()?;
    cert_info(chain.first()?).ok().map(|i| i.not_after)
}

/// Subject, SANs and expiry of a DER certificate.
pub fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (rest, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".to_string());
    }
    let subject = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| cert.subject().to_string());
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::URI(u) => sans.push(u.to_string()),
                GeneralName::RFC822Name(m) => sans.push(m.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Some(ip) = ip_of(b) {
                        sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        subject,
        sans,
        not_after: cert.validity().not_after.timestamp(),
    })
}

fn ip_of(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// Whether a SAN list (as [`cert_info`] renders it) contains one of `wanted` (exact, DNS names
/// case-insensitively).
pub fn sans_match(sans: &[String], wanted: &[String]) -> bool {
    wanted
        .iter()
        .any(|w| sans.iter().any(|s| s.eq_ignore_ascii_case(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(hosts: &[&str]) -> TlsServer {
        TlsServer {
            name: hosts.join(","),
            gateway: "default/gw".to_string(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            client_auth: ClientAuth::None,
            versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            cipher_suites: Vec::new(),
            certificates: Vec::new(),
            client_ca: Vec::new(),
            subject_alt_names: Vec::new(),
            problem: None,
            tcp: false,
            config: None,
        }
    }

    #[test]
    fn wildcard_host_admits_subdomains_not_the_apex() {
        let s = server(&["*.example.com", "a.test"]);
        assert!(s.admits("x.example.com"));
        assert!(s.admits("X.y.Example.com"));
        assert!(!s.admits("example.com"));
        assert!(!s.admits("xexample.com"));
        assert!(s.admits("A.TEST"));
        assert!(!s.admits("b.test"));
        assert!(server(&["*"]).admits("anything.at.all"));
    }

    #[test]
    fn exact_sni_beats_longest_suffix_beats_any() {
        let l = TlsListener {
            port: 443,
            exact: HashMap::from([("a.example.com".to_string(), 0)]),
            suffix: HashMap::from([
                ("example.com".to_string(), 1),
                ("deep.example.com".to_string(), 2),
            ]),
            any: Some(3),
            servers: ["a", "b", "c", "d"]
                .iter()
                .map(|n| Arc::new(server(&[n])))
                .collect(),
        };
        let pick = |sni: Option<&str>| l.server_for(sni).map(|s| s.name.clone());
        assert_eq!(pick(Some("A.example.com.")).as_deref(), Some("a"));
        assert_eq!(pick(Some("b.example.com")).as_deref(), Some("b"));
        assert_eq!(pick(Some("x.deep.example.com")).as_deref(), Some("c"));
        assert_eq!(pick(Some("example.com")).as_deref(), Some("d"));
        assert_eq!(pick(None).as_deref(), Some("d"));
        let no_any = TlsListener {
            any: None,
            ..TlsListener::default()
        };
        assert!(no_any.server_for(None).is_none());
    }

    #[test]
    fn pem_errors_never_repeat_the_input() {
        let secret =
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let e = served_certificate(secret, secret).expect_err("not a certificate");
        assert_eq!(e, (false, PemError::NoCertificate));
        assert!(!e.1.to_string().contains("c2VjcmV0"));
    }
}
