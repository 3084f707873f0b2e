//! `/openapi/v3` and its group-version documents: each served kind's paths (their PATCH taking
//! `fieldValidation`, which tells kubectl to validate on the server instead of downloading the
//! v2 document) and its schema, Istio's own for the Istio kinds, so `kubectl explain vs.spec.http`
//! prints Istio's field docs.

use super::catalog::{self, Served};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// `apis/networking.istio.io/v1`-style keys of the root document, with their documents.
fn documents() -> &'static Vec<(String, Value)> {
    static DOCS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut keys: Vec<(String, &str, &str)> = vec![("api/v1".into(), "", "v1")];
        for (g, vs) in catalog::groups() {
            for v in vs {
                keys.push((format!("apis/{g}/{v}"), g, v));
            }
        }
        keys.into_iter()
            .map(|(k, g, v)| {
                let doc = group_version(g, v);
                (k, doc)
            })
            .collect()
    })
}

/// FNV-1a of the document: the `hash` kubectl caches a document by.
fn hash(v: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// `GET /openapi/v3`.
pub(crate) fn root() -> Value {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|(k, doc)| {
            (
                k.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{k}?hash={}", hash(doc)) }),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// `GET /openapi/v3/<key>` (`api/v1`, `apis/<group>/<version>`).
pub(crate) fn document(key: &str) -> Option<&'static Value> {
    documents().iter().find(|(k, _)| k == key).map(|(_, d)| d)
}

/// The schema name of a kind (`io.istio.networking.v1.VirtualService`).
fn schema_name(s: &Served, version: &str) -> String {
    match s.group {
        "" => format!("io.k8s.api.core.{version}.{}", s.kind.as_str()),
        "networking.k8s.io" => format!("io.k8s.api.networking.{version}.{}", s.kind.as_str()),
        g => {
            let rev: Vec<&str> = g.split('.').rev().collect();
            format!("{}.{version}.{}", rev.join("."), s.kind.as_str())
        }
    }
}

fn gvk(s: &Served, version: &str) -> Value {
    json!({ "group": s.group, "version": version, "kind": s.kind.as_str() })
}

fn query_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": "string", "uniqueItems": true } })
}

fn operation(s: &Served, version: &str, action: &str, id: &str, params: Vec<Value>) -> Value {
    let reference = json!({ "$ref": format!("#/components/schemas/{}", schema_name(s, version)) });
    let mut op = json!({
        "operationId": id,
        "parameters": params,
        "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": reference } } } },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(s, version),
    });
    if matches!(action, "put" | "post" | "patch") {
        op["requestBody"] =
            json!({ "content": { "application/json": { "schema": reference } }, "required": true });
    }
    op
}

fn write_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "When present, indicates that modifications should not be persisted. The only valid value is All."),
        query_param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
        query_param("fieldValidation", "How the server handles unknown fields: Ignore, Warn or Strict (the default here)."),
    ]
}

fn paths_of(s: &Served, version: &str, paths: &mut Map<String, Value>) {
    let prefix = if s.group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{}/{version}", s.group)
    };
    let kind = s.kind.as_str();
    let id = |verb: &str| format!("{verb}{}{}{kind}", s.group.replace(['.', '-'], ""), version);
    let collection = if s.namespaced() {
        format!("{prefix}/namespaces/{{namespace}}/{}", s.plural())
    } else {
        format!("{prefix}/{}", s.plural())
    };
    let mut patch_params = write_params();
    patch_params.push(query_param(
        "force",
        "Force is going to \"force\" Apply requests.",
    ));
    paths.insert(
        collection.clone(),
        json!({
            "get": operation(s, version, "list", &id("list"), vec![
                query_param("labelSelector", "A selector to restrict the list of returned objects by their labels."),
                query_param("fieldSelector", "A selector on metadata.name and metadata.namespace."),
                query_param("limit", "The maximum number of responses to return for a list call."),
                query_param("continue", "The token of the next page of a list."),
                query_param("watch", "Watch for changes to the described resources."),
                query_param("resourceVersion", "Where a watch starts."),
            ]),
            "post": operation(s, version, "post", &id("create"), write_params()),
        }),
    );
    paths.insert(
        format!("{collection}/{{name}}"),
        json!({
            "get": operation(s, version, "get", &id("read"), vec![]),
            "put": operation(s, version, "put", &id("replace"), write_params()),
            "patch": operation(s, version, "patch", &id("patch"), patch_params),
            "delete": operation(s, version, "delete", &id("delete"), vec![query_param("dryRun", "When present, nothing is persisted.")]),
        }),
    );
    if s.namespaced() {
        paths.insert(
            format!("{prefix}/{}", s.plural()),
            json!({ "get": operation(s, version, "list", &id("listAllNamespaces"), vec![]) }),
        );
    }
}

/// The schema of one kind at one version: the CRD's, with the envelope fields every object has.
fn schema_of(s: &Served, version: &str) -> Value {
    let mut schema = s
        .schemas
        .iter()
        .find(|(v, _)| v == version)
        .map(|(_, sc)| sc.clone())
        .unwrap_or_else(
            || json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
        );
    if let Value::Object(m) = &mut schema {
        let props = m.entry("properties").or_insert_with(|| json!({}));
        if let Value::Object(p) = props {
            p.insert("apiVersion".into(), json!({ "type": "string", "description": "APIVersion defines the versioned schema of this representation of an object." }));
            p.insert("kind".into(), json!({ "type": "string", "description": "Kind is a string value representing the REST resource this object represents." }));
            p.insert("metadata".into(), json!({ "type": "object", "description": "Standard object's metadata: name, namespace, labels, annotations." }));
        }
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([gvk(s, version)]),
        );
        if m.get("description").is_none() {
            m.insert(
                "description".into(),
                json!(format!("{} as the gateway serves it.", s.kind.as_str())),
            );
        }
    }
    schema
}

fn group_version(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for s in catalog::in_group_version(group, version) {
        paths_of(s, version, &mut paths);
        schemas.insert(schema_name(s, version), schema_of(s, version));
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.32.0" },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_root_entry_is_a_document_with_schemas() {
        let r = root();
        let paths = r["paths"].as_object().expect("paths");
        assert!(paths.contains_key("apis/networking.istio.io/v1"));
        for (k, v) in paths {
            let url = v["serverRelativeURL"].as_str().expect("url");
            assert!(url.starts_with(&format!("/openapi/v3/{k}?hash=")));
            let doc = document(k).expect("served");
            assert!(!doc["components"]["schemas"]
                .as_object()
                .expect("schemas")
                .is_empty());
        }
        let doc = document("apis/networking.istio.io/v1").expect("doc");
        let vs = &doc["components"]["schemas"]["io.istio.networking.v1.VirtualService"];
        assert!(vs
            .pointer("/properties/spec/properties/http/description")
            .is_some());
        let patch = &doc["paths"]
            ["/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "VirtualService"
        );
        assert!(patch["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
    }
}
