//! Secret: type `kubernetes.io/tls`, only the keys `tls.crt`, `tls.key` and `ca.crt`, `tls.crt` and
//! `tls.key` present (in `data` or `stringData`), `data` values base64, and values that look like PEM.
//! Values are never repeated in messages (they may be private keys).
//!
//! PEM is only checked for its `-----BEGIN …-----` markers here; parsing the certificates is left
//! to the TLS layer.

use super::common::{check_metadata, NameRule};
use super::findings::{Findings, Redacted};
use super::path::FieldPath;
use crate::resource::{Secret, CA_CRT, TLS_CRT, TLS_KEY, TLS_SECRET_TYPE};

const KEYS: &[&str] = &[TLS_CRT, TLS_KEY, CA_CRT];

/// What a key's PEM must contain, and how to say so.
fn pem_rule(key: &str) -> (&'static str, &'static str) {
    if key == TLS_KEY {
        (
            "PRIVATE KEY-----",
            "a PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA/EC PRIVATE KEY-----)",
        )
    } else {
        (
            "-----BEGIN CERTIFICATE-----",
            "PEM with at least one -----BEGIN CERTIFICATE----- block",
        )
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn looks_like_pem(key: &str, bytes: &[u8]) -> bool {
    let (marker, _) = pem_rule(key);
    contains(bytes, b"-----BEGIN ") && contains(bytes, marker.as_bytes())
}

pub(crate) fn validate_secret(s: &Secret, f: &mut Findings) {
    use base64::Engine as _;
    check_metadata(f, &s.metadata, NameRule::Subdomain);
    if let Some(t) = &s.type_ {
        if t != TLS_SECRET_TYPE {
            f.not_supported(&FieldPath::root("type"), t.as_str(), &[TLS_SECRET_TYPE]);
        }
    }
    let data = FieldPath::root("data");
    let string_data = FieldPath::root("stringData");
    for (root, map) in [(&data, &s.data), (&string_data, &s.string_data)] {
        for key in map.keys() {
            if !KEYS.contains(&key.as_str()) {
                f.not_supported(&root.key(key), key.as_str(), KEYS);
            }
        }
    }
    for key in [TLS_CRT, TLS_KEY] {
        if !s.data.contains_key(key) && !s.string_data.contains_key(key) {
            let what = if key == TLS_CRT {
                "the certificate chain (PEM)"
            } else {
                "the private key (PEM)"
            };
            f.required(
                &data.key(key),
                format!("{what}, base64 in data[{key}] or as text in stringData[{key}]"),
            );
        }
    }
    for key in KEYS {
        // stringData wins over data, as in Kubernetes; data must still be valid base64.
        let decoded =
            s.data.get(*key).and_then(|v| {
                match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
                    Ok(bytes) => Some(bytes),
                    Err(_) => {
                        f.invalid(&data.key(key), &Redacted, "must be base64");
                        None
                    }
                }
            });
        let (path, bytes) = match (s.string_data.get(*key), decoded) {
            (Some(text), _) => (string_data.key(key), text.as_bytes().to_vec()),
            (None, Some(bytes)) => (data.key(key), bytes),
            (None, None) => continue,
        };
        if !looks_like_pem(key, &bytes) {
            f.invalid(&path, &Redacted, format!("must be {}", pem_rule(key).1));
        }
    }
}
