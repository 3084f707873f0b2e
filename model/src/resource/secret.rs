//! The core `v1` `Secret` of type `kubernetes.io/tls` that carries server and client certificates.

use super::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The only Secret type the gateway stores.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Keys a TLS Secret may carry.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";

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
        s.data.remove(TLS_KEY);
        s.string_data.remove(TLS_KEY);
        s
    }
}
