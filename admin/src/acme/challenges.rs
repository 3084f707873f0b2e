//! The challenges every replica answers: HTTP-01 key authorizations by token, TLS-ALPN-01
//! challenge certificates by host. Filled from the shared ACME state (so a challenge published by
//! the replica that orders is answered by whichever replica the ACME server reaches), read by the
//! data plane without locks or I/O.

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of HTTP-01 (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// One published challenge, as stored under `challenge/<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub host: String,
    pub token: String,
    pub key_authorization: String,
}

/// A self-signed certificate carrying the `acmeIdentifier` extension, DER.
#[derive(Debug)]
pub struct AlpnCertificate {
    pub cert_der: Vec<u8>,
    /// PKCS#8.
    pub key_der: Vec<u8>,
}

#[derive(Debug, Default)]
struct Table {
    http: HashMap<String, String>,
    alpn: HashMap<String, Arc<AlpnCertificate>>,
    /// The key authorization each ALPN certificate was made for (so a refresh reuses it).
    alpn_for: HashMap<String, String>,
}

/// What the data plane answers.
#[derive(Debug, Default)]
pub struct Challenges {
    table: ArcSwap<Table>,
}

impl Challenges {
    /// The HTTP-01 key authorization for `token`.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.table.load().http.get(token).cloned()
    }

    /// The TLS-ALPN-01 certificate for `host` (lowercase).
    pub fn alpn(&self, host: &str) -> Option<Arc<AlpnCertificate>> {
        self.table.load().alpn.get(host).cloned()
    }

    /// Replaces the table with `published`; certificates already made are kept.
    pub fn install(&self, published: &[Published]) {
        let old = self.table.load();
        if published.len() == old.http.len()
            && published
                .iter()
                .all(|p| old.http.get(&p.token) == Some(&p.key_authorization))
        {
            return;
        }
        let mut next = Table::default();
        for p in published {
            next.http
                .insert(p.token.clone(), p.key_authorization.clone());
            let reuse = old
                .alpn_for
                .get(&p.host)
                .filter(|k| **k == p.key_authorization)
                .and_then(|_| old.alpn.get(&p.host).cloned());
            let cert = match reuse {
                Some(c) => c,
                None => match alpn_certificate(&p.host, &p.key_authorization) {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        tracing::warn!(host = %p.host, error = %e, "cannot make the TLS-ALPN-01 certificate");
                        continue;
                    }
                },
            };
            next.alpn.insert(p.host.clone(), cert);
            next.alpn_for
                .insert(p.host.clone(), p.key_authorization.clone());
        }
        self.table.store(Arc::new(next));
    }
}

/// RFC 8737 §3: the SAN is the host, the critical `id-pe-acmeIdentifier` extension holds the
/// SHA-256 of the key authorization.
fn alpn_certificate(host: &str, key_authorization: &str) -> Result<AlpnCertificate, String> {
    use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P256_SHA256};
    let digest = sha256(key_authorization.as_bytes());
    let mut params = CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(&digest)];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(AlpnCertificate {
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_challenges_are_answered_and_withdrawn() {
        let c = Challenges::default();
        let p = Published {
            host: "a.example".into(),
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        };
        c.install(std::slice::from_ref(&p));
        assert_eq!(c.http01("tok").as_deref(), Some("tok.thumb"));
        let cert = c.alpn("a.example").expect("alpn cert");
        let parsed = model::ir::cert_info(&rustls_pki_types::CertificateDer::from(
            cert.cert_der.clone(),
        ))
        .expect("parse");
        assert_eq!(parsed.sans, ["a.example"]);
        c.install(&[]);
        assert!(c.http01("tok").is_none() && c.alpn("a.example").is_none());
    }
}
