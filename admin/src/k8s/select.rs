//! The query of a read: `labelSelector` (Kubernetes' set-based grammar), `fieldSelector`
//! (`metadata.name` and `metadata.namespace`, as for a CRD), and `limit`/`continue` paging.

use crate::error::AdminError;
use base64::Engine as _;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

/// Splits on commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn bad_label(s: &str) -> AdminError {
    AdminError::bad_request(format!(
        "unable to parse requirement: {s:?}: invalid label selector"
    ))
}

fn key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn value_ok(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, AdminError> {
        let mut reqs = Vec::new();
        for t in terms(s) {
            let t = t.trim();
            if t.is_empty() {
                continue;
            }
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
                vals.iter().all(|v| value_ok(v)).then_some(vals)
            };
            let req = if let Some(k) = t.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_string())
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(rest).ok_or_else(|| bad_label(t))?)
            } else if let Some((k, rest)) = t.split_once(" in ") {
                Requirement::In(k.trim().into(), set(rest).ok_or_else(|| bad_label(t))?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Requirement::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else {
                Requirement::Exists(t.to_string())
            };
            let (key, value) = match &req {
                Requirement::Eq(k, v) | Requirement::NotEq(k, v) => (k, Some(v)),
                Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => (k, None),
            };
            if !key_ok(key) || value.is_some_and(|v| !value_ok(v)) {
                return Err(bad_label(t));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector on `metadata.name` / `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, AdminError> {
        let mut out = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = t.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                (f, true, v)
            } else {
                return Err(AdminError::bad_request(format!(
                    "invalid selector: {t:?}; can't understand {t:?}"
                )));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(AdminError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            out.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    /// Also requires `metadata.name` to be `name`.
    pub fn restrict_name(&mut self, name: &str) {
        self.0
            .push(("metadata.name".into(), true, name.to_string()));
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let got = match field.as_str() {
                "metadata.name" => object.pointer("/metadata/name"),
                _ => object.pointer("/metadata/namespace"),
            }
            .and_then(Value::as_str)
            .unwrap_or("");
            (got == value) == *eq
        })
    }
}

/// Both selectors of a request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selector {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// The opaque `continue` token: the key (namespace, name) after which the next page starts.
pub(crate) fn continue_token(object: &Value) -> String {
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{ns}/{name}"))
}

/// The (namespace, name) a `continue` token starts after.
pub(crate) fn parse_continue(token: &str) -> Result<(String, String), AdminError> {
    let bad = || AdminError::bad_request(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let (ns, name) = s.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}

/// The page of `items` (sorted by namespace, then name) after `after`, at most `limit` long, and
/// the token of the next page if there is one, with the count left after it.
pub(crate) fn page(
    items: Vec<Value>,
    after: Option<&(String, String)>,
    limit: Option<usize>,
) -> (Vec<Value>, Option<(String, usize)>) {
    let key = |o: &Value| {
        (
            o.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    let mut rest: Vec<Value> = match after {
        Some(a) => items.into_iter().filter(|o| key(o) > *a).collect(),
        None => items,
    };
    match limit {
        Some(n) if n > 0 && rest.len() > n => {
            let left = rest.len() - n;
            rest.truncate(n);
            let token = rest.last().map(continue_token).unwrap_or_default();
            (rest, Some((token, left)))
        }
        _ => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(ns: &str, name: &str, labels: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "labels": labels}})
    }

    #[test]
    fn label_selectors() {
        let o = obj("default", "a", json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).expect(s).matches(&o);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, api)"));
        assert!(!m("app notin (web)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(m("env notin (prod)"));
        assert!(LabelSelector::parse("a=(b").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = obj("ns1", "a", json!({}));
        let m = |s: &str| FieldSelector::parse(s).expect(s).matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("metadata.namespace==ns1,metadata.name!=b"));
        assert!(!m("metadata.name=b"));
        let e = FieldSelector::parse("spec.host=x").expect_err("unsupported");
        assert_eq!(e.code().as_u16(), 400);
    }

    #[test]
    fn pages_follow_each_other() {
        let items: Vec<Value> = (0..5)
            .map(|i| obj("d", &format!("o{i}"), json!({})))
            .collect();
        let (p1, next) = page(items.clone(), None, Some(2));
        assert_eq!(p1.len(), 2);
        let (token, left) = next.expect("more");
        assert_eq!(left, 3);
        let after = parse_continue(&token).expect("token");
        let (p2, _) = page(items.clone(), Some(&after), Some(2));
        assert_eq!(p2[0]["metadata"]["name"], "o2");
        let (p3, next) = page(items, Some(&("d".into(), "o3".into())), Some(2));
        assert_eq!(p3.len(), 1);
        assert!(next.is_none());
    }
}
