//! The patch formats kubectl sends: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and
//! strategic merge patch for the built-in kinds, applied as a merge patch with its `$` directives
//! (`$setElementOrder/…`, `$retainKeys`, `$patch`) dropped: the gateway's built-in kinds have no
//! list whose elements a strategic merge would merge by key.

use crate::error::AdminError;
use serde_json::{Map, Value};

/// The patch media types (`Content-Type` of a PATCH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<PatchType, AdminError> {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            _ => Err(AdminError::unsupported_patch(ct)),
        }
    }
}

/// RFC 7386: objects merge, `null` deletes, anything else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// A strategic merge patch without its directives, recursively.
pub(crate) fn strip_directives(patch: &Value) -> Value {
    match patch {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                // A list element that is only directives (`{"$patch": "delete"}`…) is dropped.
                .filter(|v| {
                    !v.as_object()
                        .is_some_and(|m| !m.is_empty() && m.keys().all(|k| k.starts_with('$')))
                })
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn invalid(msg: impl Into<String>) -> AdminError {
    AdminError::unprocessable_patch(msg)
}

/// RFC 6901 tokens of a JSON pointer.
fn pointer_tokens(p: &str) -> Result<Vec<String>, AdminError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| invalid(format!("invalid JSON pointer {p:?}")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent_mut<'a>(
    doc: &'a mut Value,
    tokens: &[String],
    path: &str,
) -> Result<&'a mut Value, AdminError> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| invalid(format!("doc is missing path: {path:?}")))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), AdminError> {
    let tokens = pointer_tokens(path)?;
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parent, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| invalid(format!("add operation index out of range: {path:?}")))?
            };
            a.insert(i, value);
            Ok(())
        }
        _ => Err(invalid(format!("doc is missing path: {path:?}"))),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, AdminError> {
    let tokens = pointer_tokens(path)?;
    let Some((last, parent)) = tokens.split_last() else {
        return Err(invalid("cannot remove the whole document"));
    };
    let missing = || {
        invalid(format!(
            "remove operation does not apply: doc is missing path: {path:?}"
        ))
    };
    match parent_mut(doc, parent, path)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

fn get<'a>(doc: &'a Value, path: &str) -> Result<&'a Value, AdminError> {
    let tokens = pointer_tokens(path)?;
    let mut cur = doc;
    for t in &tokens {
        cur = match cur {
            Value::Object(m) => m.get(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| invalid(format!("doc is missing path: {path:?}")))?;
    }
    Ok(cur)
}

/// RFC 6902, every operation or none (the document is changed in place only on success).
pub(crate) fn json_patch(doc: &Value, patch: &Value) -> Result<Value, AdminError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| AdminError::bad_request("a JSON patch must be an array of operations"))?;
    let mut out = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        let field = |k: &str| op.get(k).and_then(Value::as_str);
        let name = field("op").ok_or_else(|| invalid(format!("operation {i}: missing \"op\"")))?;
        let path =
            field("path").ok_or_else(|| invalid(format!("operation {i}: missing \"path\"")))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| invalid(format!("operation {i} ({name}): missing \"value\"")))
        };
        let from = || {
            field("from")
                .ok_or_else(|| invalid(format!("operation {i} ({name}): missing \"from\"")))
        };
        match name {
            "add" => add(&mut out, path, value()?)?,
            "remove" => {
                remove(&mut out, path)?;
            }
            "replace" => {
                remove(&mut out, path)?;
                add(&mut out, path, value()?)?;
            }
            "move" => {
                let v = remove(&mut out, from()?)?;
                add(&mut out, path, v)?;
            }
            "copy" => {
                let v = get(&out, from()?)?.clone();
                add(&mut out, path, v)?;
            }
            "test" => {
                if *get(&out, path)? != value()? {
                    return Err(invalid(format!("testing value {path} failed")));
                }
            }
            other => return Err(invalid(format!("operation {i}: unknown op {other:?}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patches() {
        let mut t = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge(&mut t, &json!({"a": {"b": null, "c": [3]}, "e": "x"}));
        assert_eq!(t, json!({"a": {"c": [3]}, "d": 1, "e": "x"}));
    }

    #[test]
    fn json_patches() {
        let doc = json!({"spec": {"hosts": ["a"], "x": 1}});
        let p = json!([
            {"op": "add", "path": "/spec/hosts/-", "value": "b"},
            {"op": "replace", "path": "/spec/x", "value": 2},
            {"op": "test", "path": "/spec/x", "value": 2},
            {"op": "copy", "from": "/spec/x", "path": "/spec/y"},
            {"op": "move", "from": "/spec/y", "path": "/spec/z"},
            {"op": "remove", "path": "/spec/hosts/0"}
        ]);
        assert_eq!(
            json_patch(&doc, &p).expect("applies"),
            json!({"spec": {"hosts": ["b"], "x": 2, "z": 2}})
        );
        let e = json_patch(&doc, &json!([{"op": "remove", "path": "/spec/nope"}]))
            .expect_err("missing");
        assert_eq!(e.code().as_u16(), 422);
        assert!(json_patch(
            &doc,
            &json!([{"op": "test", "path": "/spec/x", "value": 9}])
        )
        .is_err());
    }

    #[test]
    fn strategic_directives_are_dropped() {
        let p = json!({"$setElementOrder/data": [{"k": "a"}], "data": {"a": "x", "$retainKeys": ["a"]}, "l": [{"$patch": "delete"}, 1]});
        assert_eq!(strip_directives(&p), json!({"data": {"a": "x"}, "l": [1]}));
    }
}
