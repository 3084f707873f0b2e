//! Secret: type `kubernetes.io/tls`, only the keys `tls.crt`, `tls.key` and `ca.crt`, `tls.crt` and
//! `tls.key` present (in `data` or `stringData`), `data` values base64, and values that look like PEM.
//! Values are never repeated in messages (they may be private keys).
//!
//! PEM is parsed as the TLS layer will: every certificate block must be X.509, the key must be of a
//! kind the gateway can sign with and belong to the first certificate of `tls.crt`. Expiry depends
//! on the clock, so it is not checked here (pure): the admin API checks it on write with
//! [`leaf_not_after`](crate::ir::leaf_not_after).

use super::common::{check_metadata, NameRule};
use super::findings::{Findings, Redacted};
use super::path::FieldPath;
use crate::ir::{parse_certificates, parse_private_key, served_certificate, PemError};
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
    let mut parsed: Vec<(&str, FieldPath, Vec<u8>)> = Vec::new();
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
            continue;
        }
        parsed.push((key, path, bytes));
    }
    check_pem(&parsed, f);
}

/// Parses what looks like PEM: certificates, the key, and that the key belongs to the leaf.
fn check_pem(parsed: &[(&str, FieldPath, Vec<u8>)], f: &mut Findings) {
    let find = |k: &str| parsed.iter().find(|(key, _, _)| *key == k);
    let mut crt_ok = false;
    for k in [TLS_CRT, CA_CRT] {
        if let Some((_, path, bytes)) = find(k) {
            match parse_certificates(bytes) {
                Ok(_) => crt_ok |= k == TLS_CRT,
                Err(e) => f.invalid(path, &Redacted, e.to_string()),
            }
        }
    }
    let Some((_, key_path, key)) = find(TLS_KEY) else {
        return;
    };
    let signer = parse_private_key(key).and_then(|k| {
        rustls::crypto::ring::sign::any_supported_type(&k)
            .map_err(|e| PemError::BadKey(e.to_string()))
    });
    if let Err(e) = signer {
        f.invalid(key_path, &Redacted, e.to_string());
        return;
    }
    if let (true, Some((_, _, crt))) = (crt_ok, find(TLS_CRT)) {
        if let Err((true, e)) = served_certificate(crt, key) {
            f.invalid(key_path, &Redacted, format!("{e} in {TLS_CRT}"));
        }
    }
}
