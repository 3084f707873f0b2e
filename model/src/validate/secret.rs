//! Secret: what Kubernetes' API server checks (key names, base64 `data`, total size, the keys a
//! `kubernetes.io/tls` Secret must have) plus what makes it a TLS credential as Istio reads one
//! (see [`crate::resource::Secret::key_pair`]): a certificate and key pair (`tls.crt`/`tls.key` or
//! `cert`/`key`), a CA (`ca.crt` or `cacert`), or both. Keys Istio ignores are accepted; keys it
//! would read but the gateway does not use are warned about. Values are never repeated in
//! messages (they may be private keys).
//!
//! PEM is parsed as the TLS layer will, for the values that are used: every certificate block must
//! be X.509, the key must be of a kind the gateway can sign with and belong to the first
//! certificate. Expiry depends on the clock, so it is not checked here (pure): the admin API checks
//! it on write with [`leaf_not_after`](crate::ir::leaf_not_after).

use super::common::{check_metadata, NameRule};
use super::findings::{Findings, Redacted};
use super::path::FieldPath;
use crate::ir::{parse_certificates, parse_private_key, served_certificate, PemError};
use crate::resource::{
    KeyPair, Secret, CA_CRL, CA_CRT, CRL, GENERIC_CACERT, OPAQUE_SECRET_TYPE, TLS_CRT, TLS_KEY,
    TLS_OCSP_STAPLE, TLS_SECRET_TYPE, UNREAD_SECRET_TYPES,
};
use std::collections::BTreeSet;

/// Kubernetes' limit on the decoded size of all values together (`MaxSecretSize`).
const MAX_SECRET_BYTES: usize = 1024 * 1024;
/// Kubernetes' limit on a key's length (`IsConfigMapKey`).
const MAX_KEY_CHARS: usize = 253;

/// What a key's PEM must contain, and how to say so.
fn pem_rule(is_key: bool) -> (&'static str, &'static str) {
    if is_key {
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

/// Kubernetes' `IsConfigMapKey`, the rule for Secret keys.
fn key_name_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return Some("must be 1 to 253 characters");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
    }
    if key == "." || key == ".." || key.starts_with("..") {
        return Some("must not be '.' or '..', nor start with '..'");
    }
    None
}

/// What goes in a key of a pair, for `Required value` messages.
fn describe(key: &str) -> &'static str {
    if key == TLS_CRT || key == crate::resource::GENERIC_CERT {
        "the certificate chain (PEM)"
    } else {
        "the private key (PEM)"
    }
}

pub(crate) fn validate_secret(s: &Secret, f: &mut Findings) {
    check_metadata(f, &s.metadata, NameRule::Subdomain);
    let data = FieldPath::root("data");
    if let Some(t) = &s.type_ {
        if UNREAD_SECRET_TYPES.contains(&t.as_str()) {
            f.not_supported_text(
                &FieldPath::root("type"),
                t.as_str(),
                format!(
                    "any type but {}, which Istio does not read (e.g. {TLS_SECRET_TYPE:?}, {OPAQUE_SECRET_TYPE:?})",
                    UNREAD_SECRET_TYPES
                        .iter()
                        .map(|t| format!("{t:?}"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            );
        }
    }
    check_stored_form(s, &data, f);

    // Field paths already reported as required, so that one missing key is said once.
    let mut required: BTreeSet<String> = BTreeSet::new();
    let require = |f: &mut Findings, required: &mut BTreeSet<String>, key: &str, detail: String| {
        let path = data.key(key);
        if required.insert(path.to_string()) {
            f.required(&path, detail);
        }
    };
    // Kubernetes: a kubernetes.io/tls Secret has both keys (their values may be empty).
    let tls_type = s.type_or_default() == TLS_SECRET_TYPE;
    if tls_type {
        for key in [TLS_CRT, TLS_KEY] {
            if !s.has_key(key) {
                require(
                    f,
                    &mut required,
                    key,
                    format!("{}, base64 in data[{key}] or as text in stringData[{key}] (a Secret of type {TLS_SECRET_TYPE} must have {TLS_CRT} and {TLS_KEY}; use type {OPAQUE_SECRET_TYPE} for cert and key)", describe(key)),
                );
            }
        }
    }

    let pair = s.key_pair();
    let ca = s.ca_key();
    for p in KeyPair::PREFERENCE {
        let (crt, key) = (s.has_value(p.cert()), s.has_value(p.key()));
        if crt == key {
            // Both halves, or neither: a complete pair that is not the one served is shadowed.
            if crt && pair != Some(p) {
                if let Some(served) = pair {
                    for k in [p.cert(), p.key()] {
                        f.warn(
                            &FieldPath::root(s.source(k)).key(k),
                            format!(
                                "ignored: {} and {} take precedence (as in Istio)",
                                served.cert(),
                                served.key()
                            ),
                        );
                    }
                }
            }
            continue;
        }
        let (have, missing) = if crt {
            (p.cert(), p.key())
        } else {
            (p.key(), p.cert())
        };
        match pair {
            Some(served) => f.warn(
                &FieldPath::root(s.source(have)).key(have),
                format!(
                    "ignored without {missing}: {} and {} are served",
                    served.cert(),
                    served.key()
                ),
            ),
            // A value that is not base64 is already reported.
            None if s.has_key(missing) && s.value(missing).is_none() => {}
            None => {
                let empty = if s.has_key(missing) {
                    " (it is empty)"
                } else {
                    ""
                };
                require(
                    f,
                    &mut required,
                    missing,
                    format!("{} that goes with {have}, base64 in data[{missing}] or as text in stringData[{missing}]{empty}", describe(missing)),
                );
            }
        }
    }
    // A value that is not base64 is already reported.
    let undecodable = KeyPair::PREFERENCE
        .into_iter()
        .flat_map(|p| [p.cert(), p.key(), p.ca()])
        .any(|k| s.has_key(k) && s.value(k).is_none());
    if pair.is_none() && ca.is_none() && required.is_empty() && !undecodable {
        // Keys that are there but empty, named; otherwise the whole of `data`.
        let empty: Vec<&str> = KeyPair::PREFERENCE
            .into_iter()
            .flat_map(|p| [p.cert(), p.key()])
            .filter(|k| s.value(k).is_some_and(|v| v.is_empty()))
            .collect();
        if empty.is_empty() {
            f.required(
                &data,
                "a TLS credential: tls.crt and tls.key, or cert and key (each may come with a CA in ca.crt or cacert), or only a CA (ca.crt or cacert, as in a <credentialName>-cacert Secret)",
            );
        } else {
            for k in empty {
                require(
                    f,
                    &mut required,
                    k,
                    format!(
                        "{}, base64 in data[{k}] or as text in stringData[{k}] (it is empty)",
                        describe(k)
                    ),
                );
            }
        }
    }
    if ca == Some(GENERIC_CACERT) && s.has_value(CA_CRT) {
        f.warn(
            &FieldPath::root(s.source(CA_CRT)).key(CA_CRT),
            "ignored: cacert takes precedence (as in Istio)",
        );
    }
    for (k, what) in [
        (CA_CRL, "no revocation check"),
        (CRL, "no revocation check"),
        (TLS_OCSP_STAPLE, "no OCSP stapling"),
    ] {
        if s.has_value(k) {
            f.warn(
                &FieldPath::root(s.source(k)).key(k),
                format!("{what}; accepted but not enforced yet"),
            );
        }
    }
    check_pem(s, pair, ca, f);
}

/// Key names, base64 in `data`, and the total size, as Kubernetes checks them (`stringData` is
/// merged into `data` before Kubernetes validates, so its keys follow the same rules).
fn check_stored_form(s: &Secret, data: &FieldPath, f: &mut Findings) {
    use base64::Engine as _;
    let string_data = FieldPath::root("stringData");
    for (root, map) in [(data, &s.data), (&string_data, &s.string_data)] {
        for key in map.keys() {
            if let Some(problem) = key_name_problem(key) {
                f.invalid(&root.key(key), key.as_str(), problem);
            }
        }
    }
    for (key, v) in &s.data {
        if base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .is_err()
        {
            f.invalid(&data.key(key), &Redacted, "must be base64");
        }
    }
    let keys: BTreeSet<&String> = s.data.keys().chain(s.string_data.keys()).collect();
    let total: usize = keys
        .into_iter()
        .filter_map(|k| s.value(k))
        .map(|v| v.len())
        .sum();
    if total > MAX_SECRET_BYTES {
        f.too_long(data, format!("must have at most {MAX_SECRET_BYTES} bytes"));
    }
}

/// Parses the values that are used: the served pair (certificates, the key, and that the key
/// belongs to the leaf) and the CA.
fn check_pem(s: &Secret, pair: Option<KeyPair>, ca: Option<&str>, f: &mut Findings) {
    let at = |k: &str| FieldPath::root(s.source(k)).key(k);
    // Only values that decode: bad base64 is already reported.
    let pem = |k: &str, is_key: bool, f: &mut Findings| -> Option<Vec<u8>> {
        let bytes = s.value(k)?;
        let (marker, rule) = pem_rule(is_key);
        if contains(&bytes, b"-----BEGIN ") && contains(&bytes, marker.as_bytes()) {
            Some(bytes)
        } else {
            f.invalid(&at(k), &Redacted, format!("must be {rule}"));
            None
        }
    };
    if let Some(k) = ca {
        if let Some(bytes) = pem(k, false, f) {
            if let Err(e) = parse_certificates(&bytes) {
                f.invalid(&at(k), &Redacted, e.to_string());
            }
        }
    }
    let Some(p) = pair else {
        return;
    };
    let crt = pem(p.cert(), false, f);
    let crt_ok = match &crt {
        Some(bytes) => match parse_certificates(bytes) {
            Ok(_) => true,
            Err(e) => {
                f.invalid(&at(p.cert()), &Redacted, e.to_string());
                false
            }
        },
        None => false,
    };
    let Some(key) = pem(p.key(), true, f) else {
        return;
    };
    let signer = parse_private_key(&key)
        .and_then(|k| crate::ir::signing_key(k).map_err(|e| PemError::BadKey(e.to_string())));
    if let Err(e) = signer {
        f.invalid(&at(p.key()), &Redacted, e.to_string());
        return;
    }
    if let (true, Some(crt)) = (crt_ok, crt) {
        if let Err((true, e)) = served_certificate(&crt, &key) {
            f.invalid(&at(p.key()), &Redacted, format!("{e} in {}", p.cert()));
        }
    }
}
