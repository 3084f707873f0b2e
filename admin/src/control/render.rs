//! How a stored object is shown: the served `apiVersion`, `status.conditions` from the latest
//! translation, and for Secrets never a private key (nor one kept in kubectl's last-applied
//! annotation).

use model::translate::Condition;
use model::{Kind, Resource, ResourceKey};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An object as the API returns it: served `apiVersion`, `status.conditions` from the latest
/// translation, and for Secrets never the private key.
pub(super) fn render(r: &Resource, statuses: &BTreeMap<ResourceKey, Vec<Condition>>) -> Value {
    let mut v = match r {
        Resource::Secret(s) => Resource::Secret(Arc::new(redact_secret(s))).to_value(),
        other => other.to_value(),
    };
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), r.kind().api_version().into());
        if r.kind() != Kind::Secret {
            if let Some(conds) = statuses.get(&r.key()) {
                m.insert("status".into(), json!({ "conditions": conds }));
            }
        }
    }
    v
}

/// kubectl's record of what it applied: a Secret's holds its keys too.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Secret as it may be shown: no private key in `data`, nor in the last-applied annotation
/// (which is stored exactly as kubectl wrote it).
fn redact_secret(s: &model::Secret) -> model::Secret {
    let mut out = redact(s);
    if let Some(a) = out.metadata.annotations.get_mut(LAST_APPLIED) {
        let shown = serde_json::from_str::<Value>(a)
            .ok()
            .and_then(|v| model::resource_from_value(v, Some(Kind::Secret)).ok())
            .and_then(|r| match r {
                Resource::Secret(applied) => {
                    serde_json::to_string(&Resource::Secret(Arc::new(redact(&applied)))).ok()
                }
                _ => None,
            });
        // An annotation that does not read as a Secret is not shown at all: it may hold a key.
        *a = shown.unwrap_or_default();
    }
    out
}

/// `Secret::redacted`, and belt and braces: any other key whose value is a PEM private key.
fn redact(s: &model::Secret) -> model::Secret {
    use base64::Engine as _;
    let mut out = s.redacted();
    let is_key = |v: &[u8]| v.windows(11).any(|w| w == b"PRIVATE KEY");
    out.data.retain(|_, v| {
        base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_or(true, |b| !is_key(&b))
    });
    out.string_data.retain(|_, v| !is_key(v.as_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_every_private_key() {
        use base64::Engine as _;
        let pem = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"s"}},"data":{{"tls.crt":"Y2VydA==","tls.key":"{b64}","other":"{b64}","key":"a2V5"}},"stringData":{{"more":{pem:?}}}}}"#
        );
        let r = model::decode_resource(body.as_bytes(), model::Format::Json, None).expect("decode");
        let Resource::Secret(s) = r else {
            panic!("not a secret")
        };
        let shown = redact(&s);
        assert_eq!(shown.data.keys().collect::<Vec<_>>(), ["tls.crt"]);
        assert!(shown.string_data.is_empty());
    }
}
