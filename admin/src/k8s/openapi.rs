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

/// Every group-version document, `api/v1` first.
pub(crate) fn all() -> impl Iterator<Item = &'static (String, Value)> {
    documents().iter()
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

/// The `Status` every failure answers (CONTRACT §3).
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": schema })
}

fn string() -> Value {
    json!({ "type": "string" })
}

/// A boolean query parameter as Kubernetes reads it: `0` and `false` (any case) are false, any
/// other value true (see `rest::boolean`).
fn boolean() -> Value {
    json!({ "type": "string", "description": "0 or false (any case) is false; any other value is true" })
}

fn integer() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

/// What each kind of operation answers besides its success: a `Status` for every failure.
fn failures(action: &str) -> &'static [u16] {
    match action {
        "list" | "get" => &[400, 401, 404, 410],
        "delete" => &[400, 401, 404, 409, 413, 415],
        _ => &[400, 401, 404, 409, 413, 415, 422],
    }
}

/// The answers of an operation whose success is `ok` with `schema`.
pub(crate) fn responses(ok: &[u16], schema: &Value, fails: &[u16]) -> Value {
    let mut r = Map::new();
    for code in ok {
        r.insert(
            code.to_string(),
            json!({ "description": "OK", "content": { "application/json": { "schema": schema } } }),
        );
    }
    for code in fails {
        r.insert(
            code.to_string(),
            json!({ "$ref": format!("#/components/responses/{code}") }),
        );
    }
    Value::Object(r)
}

/// The failure answers `responses` refers to, and the `Status` schema.
pub(crate) fn status_components(schemas: &mut Map<String, Value>) -> Value {
    schemas.insert(
        STATUS.into(),
        json!({
            "type": "object",
            "description": "Status is a return value for calls that don't return other objects.",
            "required": ["kind", "apiVersion", "status"],
            "properties": {
                "kind": { "type": "string", "enum": ["Status"] },
                "apiVersion": { "type": "string", "enum": ["v1"] },
                "metadata": { "type": "object" },
                "status": { "type": "string", "enum": ["Failure", "Success"] },
                "code": { "type": "integer" },
                "reason": { "type": "string" },
                "message": { "type": "string" },
                "details": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "group": { "type": "string" },
                        "kind": { "type": "string" },
                        "causes": { "type": "array", "items": {
                            "type": "object",
                            "properties": {
                                "field": { "type": "string" },
                                "reason": { "type": "string" },
                                "message": { "type": "string" },
                            },
                        } },
                    },
                },
            },
        }),
    );
    let reasons = [
        (
            400,
            "BadRequest: the body, the query or a selector does not parse",
        ),
        (401, "Unauthorized: the admin token is missing or wrong"),
        (
            404,
            "NotFound: no such object, or nothing is served at the path",
        ),
        (405, "MethodNotAllowed"),
        (
            409,
            "AlreadyExists, or Conflict: a stale resourceVersion or a server-side apply conflict",
        ),
        (
            410,
            "Expired: the continue token or the watch's resourceVersion is too old",
        ),
        (413, "RequestEntityTooLarge: the body is over the limit"),
        (415, "UnsupportedMediaType"),
        (422, "Invalid: every problem, each naming its field"),
        (503, "ServiceUnavailable"),
    ];
    let status = json!({ "allOf": [
        { "$ref": format!("#/components/schemas/{STATUS}") },
        {
            "required": ["code", "reason", "message"],
            "properties": { "status": { "type": "string", "enum": ["Failure"] } },
        },
    ] });
    let mut out = Map::new();
    for (code, description) in reasons {
        out.insert(
            code.to_string(),
            json!({ "description": description, "content": { "application/json": { "schema": status } } }),
        );
    }
    Value::Object(out)
}

fn operation(s: &Served, version: &str, action: &str, id: &str, params: Vec<Value>) -> Value {
    let reference = json!({ "$ref": format!("#/components/schemas/{}", schema_name(s, version)) });
    let ok: &[u16] = match action {
        "post" => &[200, 201],
        "put" | "patch" => &[200, 201],
        _ => &[200],
    };
    let answer = if action == "list" {
        json!({ "$ref": format!("#/components/schemas/{}List", schema_name(s, version)) })
    } else if action == "delete" {
        json!({ "$ref": format!("#/components/schemas/{STATUS}") })
    } else {
        reference.clone()
    };
    let mut op = json!({
        "operationId": id,
        "parameters": params,
        "responses": responses(ok, &answer, failures(action)),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(s, version),
    });
    match action {
        "put" | "post" => {
            op["requestBody"] = json!({
                "content": {
                    "application/json": { "schema": reference },
                    "application/yaml": { "schema": reference },
                },
                "required": true,
            })
        }
        "patch" => op["requestBody"] = patch_body(s, &reference),
        "delete" => {
            let options = json!({
                "type": "object",
                "description": "DeleteOptions: propagationPolicy is accepted (nothing here owns anything); preconditions.resourceVersion is checked.",
                "properties": {
                    "kind": { "type": "string" },
                    "apiVersion": { "type": "string" },
                    "propagationPolicy": { "type": "string", "enum": ["Orphan", "Background", "Foreground"] },
                    "preconditions": { "type": "object", "properties": {
                        "resourceVersion": { "type": "string", "pattern": "^[0-9]+$" },
                    } },
                },
            });
            op["requestBody"] = json!({ "content": { "application/json": { "schema": options } }, "required": false });
        }
        _ => {}
    }
    op
}

/// The patch bodies kubectl sends: merge patches (partial objects), JSON patches (operation
/// lists), server-side apply (the object as YAML or JSON), and for Secrets strategic merge.
fn patch_body(s: &Served, reference: &Value) -> Value {
    let json_patch = json!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["op", "path"],
            "properties": {
                "op": { "type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"] },
                "path": { "type": "string" },
                "from": { "type": "string" },
                "value": {},
            },
        },
    });
    let mut content = json!({
        "application/merge-patch+json": { "schema": { "type": "object" } },
        "application/json-patch+json": { "schema": json_patch },
        "application/apply-patch+yaml": { "schema": reference },
    });
    if s.kind == model::Kind::Secret {
        content["application/strategic-merge-patch+json"] =
            json!({ "schema": { "type": "object" } });
    }
    json!({ "content": content, "required": true })
}

fn write_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "When present, indicates that modifications should not be persisted. The only valid value is All.", json!({ "type": "string", "enum": ["All"] })),
        query_param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes.", json!({ "type": "string", "maxLength": 128 })),
        query_param("fieldValidation", "How the server handles unknown fields: Ignore, Warn or Strict (the default here).", json!({ "type": "string", "enum": ["Ignore", "Warn", "Strict"] })),
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
        boolean(),
    ));
    let list_params = || {
        vec![
            query_param("labelSelector", "A selector to restrict the list of returned objects by their labels.", string()),
            query_param("fieldSelector", "A selector on metadata.name and metadata.namespace.", string()),
            query_param("limit", "The maximum number of responses to return for a list call.", integer()),
            query_param("continue", "The token of the next page of a list.", string()),
            query_param("watch", "Watch for changes to the described resources: a stream of ADDED, MODIFIED and DELETED events (application/json;stream=watch) instead of the list.", boolean()),
            query_param("resourceVersion", "Where a watch starts.", string()),
            query_param("allowWatchBookmarks", "A watch also sends BOOKMARK events.", boolean()),
            query_param("sendInitialEvents", "A watch starts with an ADDED event per existing object.", boolean()),
            query_param("timeoutSeconds", "How long a watch lasts.", integer()),
        ]
    };
    paths.insert(
        collection.clone(),
        json!({
            "get": operation(s, version, "list", &id("list"), list_params()),
            "post": operation(s, version, "post", &id("create"), write_params()),
        }),
    );
    let mut item = json!({
        "get": operation(s, version, "get", &id("read"), vec![]),
        "put": operation(s, version, "put", &id("replace"), write_params()),
        "patch": operation(s, version, "patch", &id("patch"), patch_params),
        "delete": operation(s, version, "delete", &id("delete"), vec![query_param("dryRun", "When present, nothing is persisted.", json!({ "type": "string", "enum": ["All"] }))]),
    });
    let names = namespace_and_name(s.namespaced());
    item["parameters"] = names.clone();
    paths.insert(format!("{collection}/{{name}}"), item);
    if s.namespaced() {
        if let Some(c) = paths.get_mut(&collection) {
            c["parameters"] = json!([names[0]]);
        }
        paths.insert(
            format!("{prefix}/{}", s.plural()),
            json!({ "get": operation(s, version, "list", &id("listAllNamespaces"), list_params()) }),
        );
    }
}

/// The path parameters of an object's path.
fn namespace_and_name(namespaced: bool) -> Value {
    let name = json!({ "name": "name", "in": "path", "required": true, "description": "name of the object", "schema": { "type": "string", "minLength": 1 } });
    if namespaced {
        json!([
            { "name": "namespace", "in": "path", "required": true, "description": "object name and auth scope", "schema": { "type": "string", "minLength": 1 } },
            name,
        ])
    } else {
        json!([name])
    }
}

/// The list of a kind (`VirtualServiceList`).
fn list_schema(s: &Served, version: &str) -> Value {
    json!({
        "type": "object",
        "description": format!("A list of {}.", s.kind.as_str()),
        "required": ["apiVersion", "kind", "metadata", "items"],
        "properties": {
            "apiVersion": { "type": "string" },
            "kind": { "type": "string", "enum": [format!("{}List", s.kind.as_str())] },
            "metadata": {
                "type": "object",
                "properties": {
                    "resourceVersion": { "type": "string" },
                    "continue": { "type": "string" },
                    "remainingItemCount": { "type": "integer" },
                },
            },
            "items": { "type": "array", "items": { "$ref": format!("#/components/schemas/{}", schema_name(s, version)) } },
        },
    })
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
        schemas.insert(
            format!("{}List", schema_name(s, version)),
            list_schema(s, version),
        );
    }
    let responses = status_components(&mut schemas);
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.32.0" },
        "paths": paths,
        "components": { "schemas": schemas, "responses": responses },
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
