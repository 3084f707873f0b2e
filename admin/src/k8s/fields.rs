//! Field ownership (`metadata.managedFields`) and server-side apply. A field is a path of object
//! keys down to a leaf; lists are atomic (owned whole), as a CRD's lists are without a
//! `x-kubernetes-list-type`; `metadata` contributes only its labels and annotations. An update
//! (create, replace, a merge or JSON patch) gives its manager the fields whose value it changed; an
//! apply owns exactly the fields of its configuration, drops the ones it stops applying that
//! nobody else owns, and conflicts where another manager owns a field it would change.

use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

type Path = Vec<String>;
type Fields = BTreeSet<Path>;

/// Who writes, and how (`Update` or `Apply`).
#[derive(Debug, Clone)]
pub(crate) struct Manager<'a> {
    pub name: &'a str,
    pub operation: &'static str,
    pub api_version: &'a str,
    pub time: &'a str,
}

/// One conflict of an apply: the field and who owns it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Conflict {
    pub field: String,
    pub manager: String,
    pub api_version: String,
}

/// The message and causes Kubernetes writes for apply conflicts.
pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    let mut by_manager: Vec<(String, String, Vec<String>)> = Vec::new();
    for c in conflicts {
        match by_manager
            .iter_mut()
            .find(|(m, v, _)| *m == c.manager && *v == c.api_version)
        {
            Some((_, _, fs)) => fs.push(c.field.clone()),
            None => by_manager.push((
                c.manager.clone(),
                c.api_version.clone(),
                vec![c.field.clone()],
            )),
        }
    }
    let n = conflicts.len();
    let mut s = format!(
        "Apply failed with {n} conflict{}: ",
        if n == 1 { "" } else { "s" }
    );
    let parts: Vec<String> = by_manager
        .iter()
        .map(|(m, v, fs)| {
            if fs.len() == 1 {
                format!("conflict with {m:?} using {v}: {}", fs.join(""))
            } else {
                format!("conflicts with {m:?} using {v}:\n- {}", fs.join("\n- "))
            }
        })
        .collect();
    s.push_str(&parts.join("\n"));
    s
}

fn leaves(v: &Value, path: &mut Path, out: &mut Fields) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(k.clone());
                leaves(child, path, out);
                path.pop();
            }
        }
        Value::Null => {}
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The fields an object sets.
fn fields_of(o: &Value) -> Fields {
    let mut out = Fields::new();
    let Value::Object(m) = o else {
        return out;
    };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for sub in ["labels", "annotations"] {
                    if let Some(Value::Object(map)) = v.get(sub) {
                        for key in map.keys() {
                            out.insert(vec!["metadata".into(), sub.into(), key.clone()]);
                        }
                    }
                }
            }
            // A Secret's keys are owned as a whole: their names (`tls.key`) are never shown.
            "data" | "stringData" if m.get("kind").and_then(Value::as_str) == Some("Secret") => {
                out.insert(vec![k.clone()]);
            }
            _ => leaves(v, &mut vec![k.clone()], &mut out),
        }
    }
    out
}

fn at<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    p.iter().try_fold(v, |v, k| v.get(k))
}

fn remove_at(v: &mut Value, p: &[String]) {
    let Some((last, parent)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parent {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
    }
}

/// `fieldsV1` to a set of paths (list item keys `k:`/`v:` and `.` are owned as their list).
fn decode(v: &Value, path: &mut Path, out: &mut Fields) {
    let Value::Object(m) = v else {
        return;
    };
    if m.is_empty() {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (k, child) in m {
        if let Some(name) = k.strip_prefix("f:") {
            path.push(name.to_string());
            decode(child, path, out);
            path.pop();
        } else if !path.is_empty() && k != "." {
            out.insert(path.clone());
        }
    }
}

fn encode(fields: &Fields) -> Value {
    let mut root = Map::new();
    for p in fields {
        let mut cur = &mut root;
        for k in p {
            let entry = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else {
                break;
            };
            cur = next;
        }
    }
    Value::Object(root)
}

#[derive(Debug, Clone)]
struct Entry {
    raw: Value,
    manager: String,
    operation: String,
    api_version: String,
    fields: Fields,
}

fn entries(o: Option<&Value>) -> Vec<Entry> {
    let list = o
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array);
    list.map(|l| {
        l.iter()
            .map(|e| {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let mut fields = Fields::new();
                if let Some(f) = e.get("fieldsV1") {
                    decode(f, &mut Vec::new(), &mut fields);
                }
                Entry {
                    raw: e.clone(),
                    manager: s("manager"),
                    operation: s("operation"),
                    api_version: s("apiVersion"),
                    fields,
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn render(entries: &[Entry], mine: &Manager<'_>, mine_changed: bool) -> Value {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let is_mine = e.manager == mine.name && e.operation == mine.operation;
            if is_mine && mine_changed || e.raw.is_null() {
                json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": mine.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": encode(&e.fields),
                })
            } else {
                let mut raw = e.raw.clone();
                if let Value::Object(m) = &mut raw {
                    m.insert("fieldsV1".into(), encode(&e.fields));
                }
                raw
            }
        })
        .collect();
    Value::Array(list)
}

fn set_managed(o: &mut Value, managed: Value) {
    if let Some(Value::Object(m)) = o.get_mut("metadata") {
        m.insert("managedFields".into(), managed);
    } else if let Value::Object(m) = o {
        m.insert("metadata".into(), json!({ "managedFields": managed }));
    }
}

/// Without `managedFields` and the server-set metadata: what two versions compare on.
fn content(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(Value::Object(m)) = c.get_mut("metadata") {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
        ] {
            m.remove(k);
        }
    }
    if let Value::Object(m) = &mut c {
        m.remove("status");
    }
    c
}

/// Records an update by `manager` from `old` (None: a create) to `new`, in `new`'s
/// `managedFields` (whatever the client sent there is replaced). An update that changes nothing
/// keeps `old`'s record as it was.
pub(crate) fn update(old: Option<&Value>, new: &mut Value, manager: &Manager<'_>) {
    if let Some(old) = old {
        if content(old) == content(new) {
            let kept = old
                .pointer("/metadata/managedFields")
                .cloned()
                .unwrap_or_else(|| json!([]));
            set_managed(new, kept);
            return;
        }
    }
    let f_new = fields_of(new);
    let changed: Fields = match old {
        Some(old) => f_new
            .iter()
            .filter(|p| at(old, p) != at(new, p))
            .cloned()
            .collect(),
        None => f_new.clone(),
    };
    let mut es = entries(old);
    for e in &mut es {
        e.fields
            .retain(|p| f_new.contains(p) && !changed.iter().any(|c| related(c, p)));
    }
    match es
        .iter_mut()
        .find(|e| e.manager == manager.name && e.operation == manager.operation)
    {
        Some(e) => e.fields.extend(changed),
        None => es.push(Entry {
            raw: Value::Null,
            manager: manager.name.to_string(),
            operation: manager.operation.to_string(),
            api_version: manager.api_version.to_string(),
            fields: changed,
        }),
    }
    let managed = render(&es, manager, true);
    set_managed(new, managed);
}

/// Deep merge of an apply configuration: objects merge, anything else replaces.
fn merge_config(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, v) in c {
                if v.is_null() {
                    continue;
                }
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_config(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, c) => *t = c.clone(),
    }
}

/// Server-side apply of `config` by `manager` onto `current` (None: a create). The result
/// carries the new `managedFields`; conflicts are returned unless `force` takes the fields over.
pub(crate) fn apply(
    current: Option<&Value>,
    config: &Value,
    manager: &Manager<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let f_config = fields_of(config);
    let Some(current) = current else {
        let mut out = config.clone();
        let es = vec![Entry {
            raw: Value::Null,
            manager: manager.name.into(),
            operation: manager.operation.into(),
            api_version: manager.api_version.into(),
            fields: f_config,
        }];
        set_managed(&mut out, render(&es, manager, true));
        return Ok(out);
    };
    let mut es = entries(Some(current));
    let is_mine = |e: &Entry| e.manager == manager.name && e.operation == manager.operation;
    let previously: Fields = es
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut result = current.clone();
    for p in previously.difference(&f_config) {
        let others_own = es
            .iter()
            .filter(|e| !is_mine(e))
            .any(|e| e.fields.iter().any(|q| related(p, q)));
        if !others_own {
            remove_at(&mut result, p);
        }
    }
    merge_config(&mut result, config);
    let mut conflicts = Vec::new();
    for e in es.iter_mut().filter(|e| !is_mine(e)) {
        let mut lost = Vec::new();
        for p in &e.fields {
            let touched = f_config.iter().any(|q| related(p, q));
            if touched && at(current, p) != at(&result, p) {
                lost.push(p.clone());
            }
        }
        for p in lost {
            conflicts.push(Conflict {
                field: format!(".{}", p.join(".")),
                manager: e.manager.clone(),
                api_version: e.api_version.clone(),
            });
            e.fields.remove(&p);
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let ownership_same = previously == f_config;
    if content(&result) == content(current) && ownership_same && conflicts.is_empty() {
        return Ok(result);
    }
    match es.iter_mut().find(|e| is_mine(e)) {
        Some(e) => e.fields = f_config,
        None => es.push(Entry {
            raw: Value::Null,
            manager: manager.name.into(),
            operation: manager.operation.into(),
            api_version: manager.api_version.into(),
            fields: f_config,
        }),
    }
    let managed = render(&es, manager, true);
    set_managed(&mut result, managed);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<'a>(name: &'a str, op: &'static str) -> Manager<'a> {
        Manager {
            name,
            operation: op,
            api_version: "networking.istio.io/v1",
            time: "2026-01-01T00:00:00Z",
        }
    }

    fn vs(hosts: &[&str], gateways: Option<&[&str]>) -> Value {
        let mut v = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r"}, "spec": {"hosts": hosts}});
        if let Some(g) = gateways {
            v["spec"]["gateways"] = json!(g);
        }
        v
    }

    #[test]
    fn an_update_owns_what_it_changed() {
        let mut a = vs(&["a"], None);
        update(None, &mut a, &m("kubectl-create", "Update"));
        assert_eq!(
            a["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {"f:hosts": {}}})
        );
        let mut b = vs(&["a"], Some(&["gw"]));
        update(Some(&a), &mut b, &m("kubectl-edit", "Update"));
        let mf = b["metadata"]["managedFields"].as_array().expect("list");
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[1]["manager"], "kubectl-edit");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:spec": {"f:gateways": {}}}));
        let mut same = b.clone();
        update(Some(&b), &mut same, &m("other", "Update"));
        assert_eq!(
            same["metadata"]["managedFields"],
            b["metadata"]["managedFields"]
        );
    }

    #[test]
    fn apply_conflicts_and_force() {
        let mut cur = vs(&["a"], None);
        update(None, &mut cur, &m("kubectl-client-side-apply", "Update"));
        let e = apply(Some(&cur), &vs(&["b"], None), &m("kubectl", "Apply"), false)
            .expect_err("conflict");
        assert_eq!(e[0].field, ".spec.hosts");
        assert_eq!(e[0].manager, "kubectl-client-side-apply");
        assert_eq!(
            conflict_message(&e),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using networking.istio.io/v1: .spec.hosts"
        );
        // The same value is shared, not a conflict.
        let shared = apply(
            Some(&cur),
            &vs(&["a"], Some(&["g"])),
            &m("kubectl", "Apply"),
            false,
        )
        .expect("shared");
        assert_eq!(shared["spec"]["gateways"], json!(["g"]));
        let forced =
            apply(Some(&cur), &vs(&["b"], None), &m("kubectl", "Apply"), true).expect("forced");
        assert_eq!(forced["spec"]["hosts"], json!(["b"]));
        let mf = forced["metadata"]["managedFields"]
            .as_array()
            .expect("list");
        assert_eq!(mf.len(), 1, "{mf:?}");
        assert_eq!(mf[0]["manager"], "kubectl");
    }

    #[test]
    fn apply_drops_what_it_stops_applying() {
        let first = apply(
            None,
            &vs(&["a"], Some(&["g"])),
            &m("kubectl", "Apply"),
            false,
        )
        .expect("create");
        let second = apply(
            Some(&first),
            &vs(&["a"], None),
            &m("kubectl", "Apply"),
            false,
        )
        .expect("apply");
        assert!(second["spec"].get("gateways").is_none());
        let again = apply(
            Some(&second),
            &vs(&["a"], None),
            &m("kubectl", "Apply"),
            false,
        )
        .expect("noop");
        assert_eq!(again, second);
    }
}
