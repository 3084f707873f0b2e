//! The core `v1` `Secret` that carries server and client certificates, and how its keys are read:
//! exactly as Istio reads them (`pilot/pkg/credentials/kube/secrets.go`).
//!
//! Two layouts: `tls.crt`/`tls.key` with an optional `ca.crt` (what `kubectl create secret tls`
//! makes) and `cert`/`key` with an optional `cacert` (Istio's "generic" Secret). When both pairs
//! hold values, `cert`/`key` win (Istio's `ExtractCertInfo`); when both CAs do, `cacert` wins
//! (`ExtractRoot`). A key with an empty value counts as absent, as Istio's `hasValue` has it.

use super::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The Secret type of `kubectl create secret tls`; Kubernetes requires `tls.crt` and `tls.key`.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// The type of `kubectl create secret generic`, and what an absent `type` means.
pub const OPAQUE_SECRET_TYPE: &str = "Opaque";
/// Types Istio never reads (its Secret watch leaves them out), so they can hold no credential.
pub const UNREAD_SECRET_TYPES: &[&str] =
    &["kubernetes.io/service-account-token", "helm.sh/release.v1"];

/// Keys of the `kubernetes.io/tls` layout.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
/// Keys of Istio's generic layout.
pub const GENERIC_CERT: &str = "cert";
pub const GENERIC_KEY: &str = "key";
pub const GENERIC_CACERT: &str = "cacert";
/// Keys Istio reads that the gateway does not use: CRLs (`ca.crl` with `ca.crt`, `crl` with
/// `cacert`) and the OCSP staple.
pub const CA_CRL: &str = "ca.crl";
pub const CRL: &str = "crl";
pub const TLS_OCSP_STAPLE: &str = "tls.ocsp-staple";
/// The suffix of the Secret that holds the client CA of a credential: `<credentialName>-cacert`.
pub const CA_SECRET_SUFFIX: &str = "-cacert";

/// The keys that hold private keys: never shown by a read.
pub const PRIVATE_KEY_KEYS: &[&str] = &[TLS_KEY, GENERIC_KEY];

/// One of the two layouts of a certificate and its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPair {
    /// `tls.crt` and `tls.key` (CA `ca.crt`).
    Tls,
    /// `cert` and `key` (CA `cacert`).
    Generic,
}

impl KeyPair {
    /// The key of the certificate chain.
    pub fn cert(self) -> &'static str {
        match self {
            KeyPair::Tls => TLS_CRT,
            KeyPair::Generic => GENERIC_CERT,
        }
    }

    /// The key of the private key.
    pub fn key(self) -> &'static str {
        match self {
            KeyPair::Tls => TLS_KEY,
            KeyPair::Generic => GENERIC_KEY,
        }
    }

    /// The key of the CA that belongs to this layout.
    pub fn ca(self) -> &'static str {
        match self {
            KeyPair::Tls => CA_CRT,
            KeyPair::Generic => GENERIC_CACERT,
        }
    }

    /// In Istio's order of preference.
    pub const PREFERENCE: [KeyPair; 2] = [KeyPair::Generic, KeyPair::Tls];
}

/// A core `v1` Secret. `data` values are base64; `stringData` values are plain PEM and are folded
/// into `data` when stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

impl Secret {
    /// The decoded bytes of one key, looking at `stringData` first (it wins in Kubernetes too).
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        if let Some(v) = self.string_data.get(key) {
            return Some(v.as_bytes().to_vec());
        }
        self.data.get(key).and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
    }

    /// Whether a key holds a non-empty value (Istio's `hasValue`).
    pub fn has_value(&self, key: &str) -> bool {
        self.value(key).is_some_and(|v| !v.is_empty())
    }

    /// Whether a key is there at all, empty or not (Istio's `hasKeys`).
    pub fn has_key(&self, key: &str) -> bool {
        self.string_data.contains_key(key) || self.data.contains_key(key)
    }

    /// Where a key's value is read from, as the root of its field path: `stringData` or `data`.
    pub fn source(&self, key: &str) -> &'static str {
        if self.string_data.contains_key(key) {
            "stringData"
        } else {
            "data"
        }
    }

    /// The layout whose certificate and key are served: `cert`/`key` when both hold a value,
    /// else `tls.crt`/`tls.key` when both do (Istio's `ExtractCertInfo`).
    pub fn key_pair(&self) -> Option<KeyPair> {
        KeyPair::PREFERENCE
            .into_iter()
            .find(|p| self.has_value(p.cert()) && self.has_value(p.key()))
    }

    /// The key that holds the CA: `cacert` when it has a value, else `ca.crt` (Istio's
    /// `ExtractRoot`; the CA's key does not depend on which pair is served).
    pub fn ca_key(&self) -> Option<&'static str> {
        KeyPair::PREFERENCE
            .into_iter()
            .map(KeyPair::ca)
            .find(|k| self.has_value(k))
    }

    /// The served certificate chain and private key (PEM), when the Secret has a pair.
    pub fn certificate_and_key(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let p = self.key_pair()?;
        Some((self.value(p.cert())?, self.value(p.key())?))
    }

    /// The CA certificates (PEM), when the Secret has one.
    pub fn ca(&self) -> Option<Vec<u8>> {
        self.value(self.ca_key()?)
    }

    /// The type, with Kubernetes' default.
    pub fn type_or_default(&self) -> &str {
        self.type_
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or(OPAQUE_SECRET_TYPE)
    }

    /// Moves `stringData` into base64 `data`, the stored form.
    pub fn normalize(&mut self) {
        use base64::Engine as _;
        for (k, v) in std::mem::take(&mut self.string_data) {
            self.data.insert(
                k,
                base64::engine::general_purpose::STANDARD.encode(v.as_bytes()),
            );
        }
    }

    /// A copy that is safe to return to a reader: no private key material at all.
    pub fn redacted(&self) -> Secret {
        let mut s = self.clone();
        for k in PRIVATE_KEY_KEYS {
            s.data.remove(*k);
            s.string_data.remove(*k);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn secret(data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        Secret {
            api_version: "v1".into(),
            kind: "Secret".into(),
            metadata: ObjectMeta::default(),
            type_: None,
            data: data.iter().map(|(k, v)| (k.to_string(), b64(v))).collect(),
            string_data: string_data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            immutable: None,
        }
    }

    #[test]
    fn generic_pair_wins_over_tls_pair_as_in_istio() {
        let s = secret(
            &[("tls.crt", "T"), ("tls.key", "TK"), ("cert", "G")],
            &[("key", "GK")],
        );
        assert_eq!(s.key_pair(), Some(KeyPair::Generic));
        assert_eq!(
            s.certificate_and_key(),
            Some((b"G".to_vec(), b"GK".to_vec()))
        );
    }

    #[test]
    fn an_empty_value_counts_as_absent() {
        let s = secret(
            &[
                ("tls.crt", "T"),
                ("tls.key", "TK"),
                ("cert", ""),
                ("key", ""),
            ],
            &[],
        );
        assert_eq!(s.key_pair(), Some(KeyPair::Tls));
        let s = secret(&[("tls.crt", ""), ("tls.key", "TK")], &[]);
        assert_eq!(s.key_pair(), None);
        assert!(s.has_key(TLS_CRT));
    }

    #[test]
    fn cacert_wins_over_ca_crt_whatever_the_pair() {
        let s = secret(&[("tls.crt", "T"), ("tls.key", "TK"), ("ca.crt", "C")], &[]);
        assert_eq!(s.ca_key(), Some(CA_CRT));
        let s = secret(
            &[("tls.crt", "T"), ("tls.key", "TK"), ("ca.crt", "C")],
            &[("cacert", "G")],
        );
        assert_eq!(s.ca_key(), Some(GENERIC_CACERT));
        assert_eq!(s.ca(), Some(b"G".to_vec()));
        let s = secret(&[("ca.crt", "")], &[]);
        assert_eq!(s.ca(), None);
    }

    #[test]
    fn string_data_wins_per_key() {
        let s = secret(&[("cert", "old")], &[("cert", "new")]);
        assert_eq!(s.value(GENERIC_CERT), Some(b"new".to_vec()));
        assert_eq!(s.source(GENERIC_CERT), "stringData");
        assert_eq!(s.source(GENERIC_KEY), "data");
    }

    #[test]
    fn redaction_drops_both_private_key_keys() {
        let s = secret(&[("tls.key", "a"), ("cert", "c")], &[("key", "b")]).redacted();
        assert_eq!(s.data.keys().collect::<Vec<_>>(), ["cert"]);
        assert!(s.string_data.is_empty());
    }
}
