//! In-process tests of the Kubernetes API semantics kubectl relies on: discovery documents,
//! paging and selectors, Tables, every PATCH type, server-side apply conflicts, fieldValidation,
//! DeleteOptions, and that a refused or dry-run write changes nothing.

use admin::{router, ControlPlane, Health, MemoryStore};
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use model::ir::Snapshot;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

const VS: &str = "/apis/networking.istio.io/v1/namespaces/default/virtualservices";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
/// A self-signed certificate (until 2126), as a CA.
const CRT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBtzCCAVygAwIBAgIUOQZ/qxgHAzmmcSupYH2YDx1FWQQwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPZTJlLmV4YW1wbGUuY29tMCAXDTI2MTEyMTIyMjA1NVoYDzIx
MjYxMDI4MjIyMDU1WjAaMRgwFgYDVQQDDA9lMmUuZXhhbXBsZS5jb20wWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAThumLABgRzbb4XDusC5tZnU3dx/c7cpjn6RtQu
PvEc8Jx0DdIXA0YvcZaZZlqpNpbE1rJPoJgdJt65JjMF1b27o34wfDAdBgNVHQ4E
FgQUcn9QwR5DPbckxK+c9fQNjdLlitowHwYDVR0jBBgwFoAUcn9QwR5DPbckxK+c
9fQNjdLlitowDwYDVR0TAQH/BAUwAwEB/zApBgNVHREEIjAggg9lMmUuZXhhbXBs
ZS5jb22CDSouZXhhbXBsZS5jb20wCgYIKoZIzj0EAwIDSQAwRgIhAMswq5XQwbAV
msax913UuRauMSdXGKH4BDFqxigh2vVDAiEAkxMC90yNYqXxkcYRnHvCl7Z6Folk
3K3kBCZfALoCvVg=
-----END CERTIFICATE-----
";

async fn app() -> Router {
    let cp = ControlPlane::open(
        Arc::new(MemoryStore::new()),
        prometheus::Registry::new(),
        Arc::new(ArcSwap::from_pointee(Snapshot::default())),
        model::translate::DEFAULT_GATEWAY_NAMESPACE.to_string(),
    )
    .await
    .expect("open");
    let health = Health::new();
    health.set_ready(true);
    router(cp, health, None)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn warnings(&self) -> Vec<String> {
        self.headers
            .get_all("warning")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Resp {
    call(app, Method::GET, uri, &[], "").await
}

async fn patch(app: &Router, uri: &str, ct: &str, body: &str) -> Resp {
    call(app, Method::PATCH, uri, &[("content-type", ct)], body).await
}

fn vs(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "labels": labels},
        "spec": {"hosts": [format!("{name}.example.com")], "http": [{"directResponse": {"status": 200}}]}})
}

async fn create(app: &Router, v: &Value) -> Resp {
    let r = call(
        app,
        Method::POST,
        VS,
        &[("content-type", "application/json")],
        &v.to_string(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r
}

#[tokio::test]
async fn discovery_lists_only_what_is_served() {
    let a = app().await;
    assert_eq!(get(&a, "/api").await.json()["versions"], json!(["v1"]));
    let groups = get(&a, "/apis").await.json();
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "networking.istio.io",
            "security.istio.io",
            "networking.k8s.io"
        ]
    );
    for v in ["v1", "v1beta1"] {
        let r = get(&a, &format!("/apis/security.istio.io/{v}"))
            .await
            .json();
        let short: Vec<(&str, &str)> = r["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| Some((r["name"].as_str()?, r["shortNames"][0].as_str()?)))
            .collect();
        assert_eq!(
            short,
            [
                ("requestauthentications", "ra"),
                ("authorizationpolicies", "ap")
            ]
        );
    }
    assert_eq!(groups["groups"][0]["preferredVersion"]["version"], "v1");
    let core = get(&a, "/api/v1").await.json();
    assert_eq!(core["resources"][0]["name"], "secrets");
    assert_eq!(core["resources"][0]["namespaced"], true);
    for v in ["v1", "v1beta1", "v1alpha3"] {
        let r = get(&a, &format!("/apis/networking.istio.io/{v}"))
            .await
            .json();
        let vs = r["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == "virtualservices")
            .cloned()
            .expect("vs");
        assert_eq!(vs["kind"], "VirtualService");
        assert_eq!(vs["singularName"], "virtualservice");
        assert_eq!(vs["shortNames"], json!(["vs"]));
        assert_eq!(vs["categories"], json!(["istio-io", "networking-istio-io"]));
        assert!(vs["verbs"]
            .as_array()
            .expect("verbs")
            .contains(&json!("patch")));
    }
    let k8s = get(&a, "/apis/networking.k8s.io/v1").await.json();
    let ic = k8s["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "ingressclasses")
        .cloned()
        .expect("ic");
    assert_eq!(ic["namespaced"], false);
    assert_eq!(
        get(&a, "/apis/telemetry.istio.io/v1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&a, "/apis/networking.k8s.io/v1beta1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&a, "/version").await.json()["major"], "1");
    let root = get(&a, "/openapi/v3").await.json();
    let url = root["paths"]["apis/networking.istio.io/v1"]["serverRelativeURL"]
        .as_str()
        .expect("url")
        .to_string();
    let doc = get(&a, &url).await.json();
    assert!(
        doc["components"]["schemas"]["io.istio.networking.v1.VirtualService"]["properties"]["spec"]
            .is_object()
    );
}

#[tokio::test]
async fn lists_page_select_and_answer_tables() {
    let a = app().await;
    for (i, n) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        create(
            &a,
            &vs(
                n,
                json!({"tier": if i % 2 == 0 { "front" } else { "back" }}),
            ),
        )
        .await;
    }
    let mut names = Vec::new();
    let mut uri = format!("{VS}?limit=2");
    let mut pages = 0;
    loop {
        let page = get(&a, &uri).await.json();
        pages += 1;
        names.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(t) => {
                assert!(page["metadata"]["remainingItemCount"]
                    .as_u64()
                    .is_some_and(|n| n > 0));
                uri = format!("{VS}?limit=2&continue={t}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    let front = get(&a, &format!("{VS}?labelSelector=tier%3Dfront"))
        .await
        .json();
    assert_eq!(front["items"].as_array().map(Vec::len), Some(3));
    let not_front = get(&a, &format!("{VS}?labelSelector=tier%20notin%20(front)"))
        .await
        .json();
    assert_eq!(not_front["items"].as_array().map(Vec::len), Some(2));
    let named = get(&a, "/apis/networking.istio.io/v1/virtualservices?fieldSelector=metadata.name%3Dc,metadata.namespace%3Ddefault").await.json();
    assert_eq!(named["items"][0]["metadata"]["name"], "c");
    assert_eq!(
        get(&a, &format!("{VS}?fieldSelector=spec.hosts%3Dx"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&a, &format!("{VS}?labelSelector=a%3D(b")).await.status,
        StatusCode::BAD_REQUEST
    );

    let t = call(
        &a,
        Method::GET,
        VS,
        &[(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )],
        "",
    )
    .await
    .json();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .expect("cols")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(cols, ["Name", "Gateways", "Hosts", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "a");
    assert_eq!(t["rows"][0]["cells"][2], "[\"a.example.com\"]");
    assert_eq!(
        t["rows"][0]["object"]["metadata"]["labels"]["tier"],
        "front"
    );
}

#[tokio::test]
async fn patches_of_every_kind() {
    let a = app().await;
    let item = format!("{VS}/p");
    assert_eq!(
        patch(&a, &item, "application/merge-patch+json", "{}")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    create(&a, &vs("p", json!({"x": "1"}))).await;

    let r = patch(
        &a,
        &item,
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"x":null,"y":"2"}},"spec":{"gateways":["g"]}}"#,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let o = r.json();
    assert_eq!(o["metadata"]["labels"], json!({"y": "2"}));
    assert_eq!(o["spec"]["gateways"], json!(["g"]));
    assert_eq!(o["metadata"]["generation"], 2);

    let r = patch(
        &a,
        &item,
        "application/json-patch+json",
        r#"[{"op":"replace","path":"/spec/hosts/0","value":"q.example.com"}]"#,
    )
    .await;
    assert_eq!(r.json()["spec"]["hosts"], json!(["q.example.com"]));
    let before = get(&a, &item).await.json();
    // A failed test, a missing path, a dry run: nothing changes.
    let r = patch(&a, &item, "application/json-patch+json", r#"[{"op":"replace","path":"/spec/hosts/0","value":"z"},{"op":"test","path":"/spec/hosts/0","value":"nope"}]"#).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = patch(
        &a,
        &item,
        "application/json-patch+json",
        r#"[{"op":"remove","path":"/spec/tcp"}]"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = patch(
        &a,
        &format!("{item}?dryRun=All"),
        "application/merge-patch+json",
        r#"{"spec":{"hosts":["dry.example.com"]}}"#,
    )
    .await;
    assert_eq!(r.json()["spec"]["hosts"], json!(["dry.example.com"]));
    // An invalid result is a 422 naming the field.
    let r = patch(
        &a,
        &item,
        "application/merge-patch+json",
        r#"{"spec":{"http":[{"route":[{"destination":{"host":"a"},"weight":-1}]}]}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json()["details"]["causes"][0]["field"],
        "spec.http[0].route[0].weight"
    );
    // A stale resourceVersion in the patch is a precondition: 409.
    let r = patch(
        &a,
        &item,
        "application/merge-patch+json",
        r#"{"metadata":{"resourceVersion":"1"},"spec":{"hosts":["s.example.com"]}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(get(&a, &item).await.json(), before);

    // Strategic merge is for built-in kinds only.
    assert_eq!(
        patch(&a, &item, "application/strategic-merge-patch+json", "{}")
            .await
            .status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        patch(&a, &item, "text/plain", "{}").await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test]
async fn strategic_merge_on_a_secret_ignores_directives() {
    let a = app().await;
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ca-cacert"}, "stringData": {"ca.crt": CRT_PEM}});
    let r = call(
        &a,
        Method::POST,
        SECRETS,
        &[("content-type", "application/json")],
        &s.to_string(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = patch(
        &a,
        &format!("{SECRETS}/ca-cacert"),
        "application/strategic-merge-patch+json",
        r#"{"$setElementOrder/x":[],"metadata":{"labels":{"a":"b"},"$retainKeys":["labels"]}}"#,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["metadata"]["labels"], json!({"a": "b"}));
}

#[tokio::test]
async fn server_side_apply_creates_owns_and_conflicts() {
    let a = app().await;
    let item = format!("{VS}/s");
    let cfg = vs("s", json!({}));
    let ct = "application/apply-patch+yaml";
    let r = patch(&a, &item, ct, &cfg.to_string()).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "fieldManager is required"
    );
    let r = patch(
        &a,
        &format!("{item}?fieldManager=alice"),
        ct,
        &cfg.to_string(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let rv = r.json()["metadata"]["resourceVersion"].clone();
    // The same configuration again changes nothing.
    let r = patch(
        &a,
        &format!("{item}?fieldManager=alice"),
        ct,
        &cfg.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["metadata"]["resourceVersion"], rv);
    let mut other = cfg.clone();
    other["spec"]["hosts"] = json!(["bob.example.com"]);
    let r = patch(
        &a,
        &format!("{item}?fieldManager=bob"),
        ct,
        &other.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let s = r.json();
    assert_eq!(s["reason"], "Conflict");
    assert_eq!(s["details"]["causes"][0]["reason"], "FieldManagerConflict");
    assert_eq!(s["details"]["causes"][0]["field"], ".spec.hosts");
    assert_eq!(s["message"], "Apply failed with 1 conflict: conflict with \"alice\" using networking.istio.io/v1: .spec.hosts");
    let r = patch(
        &a,
        &format!("{item}?fieldManager=bob&force=true"),
        ct,
        &other.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let o = r.json();
    assert_eq!(o["spec"]["hosts"], json!(["bob.example.com"]));
    let managers: Vec<&str> = o["metadata"]["managedFields"]
        .as_array()
        .expect("mf")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["alice", "bob"]);
    // An apply configuration does not set ownership itself.
    let mut owned = cfg.clone();
    owned["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    let r = patch(
        &a,
        &format!("{item}?fieldManager=alice"),
        ct,
        &owned.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // force is for apply only.
    let r = patch(
        &a,
        &format!("{item}?force=true"),
        "application/merge-patch+json",
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn field_validation_refuses_warns_or_ignores() {
    let a = app().await;
    let mut v = vs("f", json!({}));
    v["spec"]["colour"] = json!("blue");
    let post = |q: &'static str| {
        let a = a.clone();
        let body = v.to_string();
        async move {
            call(
                &a,
                Method::POST,
                &format!("{VS}{q}"),
                &[("content-type", "application/json")],
                &body,
            )
            .await
        }
    };
    let r = post("?fieldValidation=Strict").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or("")
        .contains("unknown field \"spec.colour\""));
    assert_eq!(
        get(&a, &format!("{VS}/f")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = post("?fieldValidation=Warn&dryRun=All").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.warnings(),
        ["299 - \"unknown field \\\"spec.colour\\\"\""]
    );
    assert_eq!(
        get(&a, &format!("{VS}/f")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = post("?fieldValidation=Ignore").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.warnings().is_empty());
    assert!(r.json()["spec"].get("colour").is_none());
    assert_eq!(
        post("?fieldValidation=Loose").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn delete_options_are_read() {
    let a = app().await;
    create(&a, &vs("d", json!({}))).await;
    let item = format!("{VS}/d");
    let ct = [("content-type", "application/json")];
    let r = call(
        &a,
        Method::DELETE,
        &item,
        &ct,
        r#"{"propagationPolicy":"Sideways"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &a,
        Method::DELETE,
        &item,
        &ct,
        r#"{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"resourceVersion":"99"}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = call(
        &a,
        Method::DELETE,
        &item,
        &ct,
        r#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "Success");
    assert_eq!(get(&a, &item).await.status, StatusCode::NOT_FOUND);
}
