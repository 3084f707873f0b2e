//! API discovery in its legacy form (`/api`, `/apis`, `/api/v1`, `/apis/<group>[/<version>]`)
//! and `/version`: what kubectl reads to map `vs`, `virtualservice` or `istio-io` to a REST path.
//! Only what is served is listed, so every listed version answers.

use super::catalog::{self, Served};
use serde_json::{json, Value};

/// The verbs of every served resource.
const VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// `GET /api`.
pub(crate) fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{name}/{v}"), "version": v }))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `GET /apis`.
pub(crate) fn groups() -> Value {
    let groups: Vec<Value> = catalog::groups()
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `GET /apis/<group>`, if served.
pub(crate) fn group(name: &str) -> Option<Value> {
    let (g, vs) = catalog::groups().into_iter().find(|(g, _)| *g == name)?;
    let mut doc = group_doc(g, &vs);
    if let Value::Object(m) = &mut doc {
        m.insert("kind".into(), "APIGroup".into());
        m.insert("apiVersion".into(), "v1".into());
    }
    Some(doc)
}

fn resource(s: &Served) -> Value {
    let mut r = json!({
        "name": s.plural(),
        "singularName": s.singular,
        "namespaced": s.namespaced(),
        "kind": s.kind.as_str(),
        "verbs": VERBS,
    });
    if let Value::Object(m) = &mut r {
        if !s.short_names.is_empty() {
            m.insert("shortNames".into(), json!(s.short_names));
        }
        if !s.categories.is_empty() {
            m.insert("categories".into(), json!(s.categories));
        }
    }
    r
}

/// `GET /api/v1` (`group` empty) or `GET /apis/<group>/<version>`, if served.
pub(crate) fn resources(group: &str, version: &str) -> Option<Value> {
    let kinds = catalog::in_group_version(group, version);
    if kinds.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = kinds.into_iter().map(resource).collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// `GET /version`: the Kubernetes API this server speaks (kubectl checks the skew against it),
/// with the gateway's own version in `gitVersion`'s build metadata.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0+gateway-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_version_lists_its_kinds() {
        let g = groups();
        let groups = g["groups"].as_array().expect("groups");
        assert!(!groups.is_empty());
        for group in groups {
            for v in group["versions"].as_array().expect("versions") {
                let (name, version) = (
                    group["name"].as_str().expect("name"),
                    v["version"].as_str().expect("version"),
                );
                let r = resources(name, version).expect("served");
                assert!(!r["resources"].as_array().expect("list").is_empty());
            }
        }
        let core = resources("", "v1").expect("core");
        assert_eq!(core["resources"][0]["name"], "secrets");
        assert!(resources("networking.istio.io", "v2").is_none());
        assert!(group("security.istio.io").is_some());
        assert!(group("telemetry.istio.io").is_none());
    }
}
