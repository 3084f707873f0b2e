//! The OpenAPI document of the whole admin API (`GET /openapi.json`, checked in as
//! `admin/openapi.json`): the resource paths of every served kind and version, built from the
//! same catalog that dispatches them and that `/openapi/v3` gives kubectl, plus discovery and the
//! gateway's own endpoints. Every failure is documented as the `Status` it answers.

use crate::k8s::openapi::{self, STATUS};
use crate::k8s::{catalog, discovery};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// The path this document is served at.
pub const PATH: &str = "/openapi.json";

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn object(description: &str) -> Value {
    json!({ "type": "object", "description": description })
}

/// A JSON answer of `schema`.
fn ok_json(schema: Value, fails: &[u16]) -> Value {
    openapi::responses(&[200], &schema, fails)
}

fn text(description: &str) -> Value {
    json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } })
}

fn get(summary: &str, responses: Value) -> Value {
    json!({ "get": { "summary": summary, "responses": responses } })
}

/// A discovery document of `kind` (`APIGroupList`, `APIResourceList`, …).
fn discovery_schema(kind: &str) -> Value {
    json!({
        "type": "object",
        "required": ["kind"],
        "properties": { "kind": { "type": "string", "enum": [kind] } },
    })
}

fn discovery_paths(paths: &mut Map<String, Value>) {
    paths.insert(
        "/api".into(),
        get(
            "The core group's versions.",
            ok_json(discovery_schema("APIVersions"), &[401]),
        ),
    );
    paths.insert(
        "/apis".into(),
        get(
            "The served groups and their versions.",
            ok_json(discovery_schema("APIGroupList"), &[401]),
        ),
    );
    let mut versions = vec![("".to_string(), "v1".to_string())];
    for (group, vs) in catalog::groups() {
        paths.insert(
            format!("/apis/{group}"),
            get(
                &format!("The versions of {group}."),
                ok_json(discovery_schema("APIGroup"), &[401]),
            ),
        );
        versions.extend(vs.iter().map(|v| (group.to_string(), v.to_string())));
    }
    for (group, version) in versions {
        if discovery::resources(&group, &version).is_none() {
            continue;
        }
        let path = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        paths.insert(
            path,
            get(
                "The kinds served at this group and version.",
                ok_json(discovery_schema("APIResourceList"), &[401]),
            ),
        );
    }
    paths.insert(
        "/version".into(),
        get(
            "The version, as a Kubernetes API server reports it.",
            ok_json(
                json!({
                    "type": "object",
                    "required": ["major", "minor", "gitVersion"],
                    "properties": {
                        "major": { "type": "string" },
                        "minor": { "type": "string" },
                        "gitVersion": { "type": "string" },
                    },
                }),
                &[401],
            ),
        ),
    );
}

fn openapi_paths(paths: &mut Map<String, Value>) {
    paths.insert(
        "/openapi/v3".into(),
        get(
            "The index of the group-version documents kubectl reads.",
            ok_json(
                json!({ "type": "object", "required": ["paths"], "properties": { "paths": { "type": "object" } } }),
                &[401],
            ),
        ),
    );
    for (key, _) in openapi::all() {
        paths.insert(
            format!("/openapi/v3/{key}"),
            get(
                "One group-version document: its kinds' paths and schemas.",
                ok_json(object("An OpenAPI 3.0 document."), &[401]),
            ),
        );
    }
    paths.insert(
        PATH.into(),
        get(
            "This document.",
            ok_json(object("An OpenAPI 3.0 document."), &[401]),
        ),
    );
}

fn gateway_paths(paths: &mut Map<String, Value>) {
    let dry_run = json!({ "name": "dryRun", "in": "query", "description": "All: validate and answer, persist nothing.", "schema": { "type": "string", "enum": ["All"] } });
    let kinds: Vec<&str> = catalog::served().iter().map(|s| s.kind.as_str()).collect();
    let object = json!({
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": { "type": "string" },
            "kind": { "type": "string", "enum": kinds },
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": { "name": { "type": "string" }, "namespace": { "type": "string" } },
            },
        },
    });
    let batch = json!({
        "description": "A List of objects, or a JSON array of them.",
        "oneOf": [
            { "type": "array", "items": object },
            {
                "type": "object",
                "required": ["kind", "items"],
                "properties": {
                    "kind": { "type": "string", "enum": ["List"] },
                    "items": { "type": "array", "items": object },
                },
            },
        ],
    });
    paths.insert(
        "/apply".into(),
        json!({ "post": {
            "summary": "Creates or replaces every object of a batch, all or nothing.",
            "parameters": [dry_run],
            "requestBody": { "required": true, "content": {
                "application/json": { "schema": batch },
                "application/yaml": { "schema": { "description": "Multi-document YAML: each document an object or a List; empty documents are skipped." } },
            } },
            "responses": ok_json(
                json!({
                    "type": "object",
                    "required": ["kind", "items"],
                    "properties": {
                        "kind": { "type": "string", "enum": ["List"] },
                        "apiVersion": { "type": "string" },
                        "items": { "type": "array", "items": { "type": "object" } },
                    },
                }),
                &[400, 401, 409, 413, 415, 422],
            ),
        } }),
    );
    let headers = json!({
        "type": "object",
        "additionalProperties": { "oneOf": [
            { "type": "string" },
            { "type": "array", "items": { "type": "string" } },
        ] },
    });
    paths.insert(
        "/debug/explain".into(),
        json!({ "post": {
            "summary": "What the data plane would do with the described request under the current snapshot, without sending it.",
            "requestBody": { "required": true, "content": { "application/json": { "schema": {
                "type": "object",
                "required": ["host"],
                "additionalProperties": false,
                "properties": {
                    "port": { "type": "integer", "minimum": 0, "maximum": 65535, "default": 80 },
                    "host": { "type": "string" },
                    "method": { "type": "string", "default": "GET" },
                    "path": { "type": "string", "default": "/" },
                    "headers": headers,
                    "sni": { "type": "string", "nullable": true },
                    "clientAddress": { "type": "string", "nullable": true },
                },
            } } } },
            "responses": ok_json(
                json!({
                    "type": "object",
                    "required": ["generation", "action", "destinations"],
                    "properties": {
                        "generation": { "type": "integer" },
                        "route": { "type": "string", "nullable": true },
                        "action": { "type": "string", "enum": ["route", "redirect", "directResponse", "notFound"] },
                        "destinations": { "type": "array", "items": { "type": "object" } },
                        "skipped": { "type": "array", "items": { "type": "object" } },
                    },
                }),
                &[400, 401, 413, 415],
            ),
        } }),
    );
    paths.insert(
        "/debug/snapshot".into(),
        get(
            "The compiled configuration the data plane serves, with its generation (no private keys).",
            ok_json(
                json!({
                    "type": "object",
                    "required": ["generation", "snapshot"],
                    "properties": { "generation": { "type": "integer" }, "snapshot": { "type": "object" } },
                }),
                &[401],
            ),
        ),
    );
    paths.insert(
        "/metrics".into(),
        get(
            "Prometheus metrics (CONTRACT §5).",
            json!({ "200": text("The text exposition format."), "401": { "$ref": "#/components/responses/401" } }),
        ),
    );
    for (path, summary) in [
        ("/healthz", "Liveness: 200 while the process serves."),
        (
            "/readyz",
            "Readiness: 503 until the config is loaded and the listeners are bound, and while draining.",
        ),
    ] {
        let mut responses = json!({ "200": text("ok") });
        if path == "/readyz" {
            responses["503"] = text("not ready, or draining");
        }
        paths.insert(
            path.into(),
            json!({ "get": { "summary": summary, "security": [], "responses": responses } }),
        );
    }
}

fn build() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for (_, doc) in openapi::all() {
        if let Some(p) = doc["paths"].as_object() {
            paths.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(s) = doc["components"]["schemas"].as_object() {
            schemas.extend(s.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    discovery_paths(&mut paths);
    openapi_paths(&mut paths);
    gateway_paths(&mut paths);
    let responses = openapi::status_components(&mut schemas);
    debug_assert!(schemas.contains_key(STATUS));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "gateway admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The control plane of the gateway: Istio's kinds, Secrets and Ingresses at Kubernetes paths (kubectl is a client), batch apply, debugging and health. Every failure is a Kubernetes Status object.",
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "GATEWAY_ADMIN_TOKEN, when the gateway is started with one." },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The checked-in copy is the generated document; `UPDATE_OPENAPI=1` rewrites it.
    #[test]
    fn checked_in_document_is_current() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let mut text = serde_json::to_string_pretty(document()).expect("serializes");
        text.push('\n');
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&file, &text).expect("writes admin/openapi.json");
        }
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            on_disk == text,
            "admin/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p admin api_doc` and commit it"
        );
    }

    #[test]
    fn every_served_kind_has_its_paths_and_every_ref_resolves() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        for s in catalog::served() {
            for v in &s.versions {
                let prefix = if s.group.is_empty() {
                    format!("/api/{v}")
                } else {
                    format!("/apis/{}/{v}", s.group)
                };
                let item = if s.namespaced() {
                    format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", s.plural())
                } else {
                    format!("{prefix}/{}/{{name}}", s.plural())
                };
                let ops = paths.get(&item).unwrap_or_else(|| panic!("{item}"));
                for m in ["get", "put", "patch", "delete"] {
                    assert!(ops.get(m).is_some(), "{m} {item}");
                }
            }
        }
        for p in ["/apply", "/debug/explain", "/metrics", "/healthz", PATH] {
            assert!(paths.contains_key(p), "{p}");
        }
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = r.split('"').next().expect("ref");
            let (section, name) = target.split_once('/').expect("section/name");
            assert!(
                doc["components"][section].get(name).is_some(),
                "dangling $ref {target}"
            );
        }
    }
}
