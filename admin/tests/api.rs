//! In-process tests of the admin API: the router driven with `tower::ServiceExt::oneshot`, over a
//! memory or file store, checking the pipeline, preconditions, dry runs, batches, redaction, auth
//! and body limits as CONTRACT §3 states them.

use admin::{router, ControlPlane, FileStore, Health, MemoryStore, Store};
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use model::ir::Snapshot;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

struct Api {
    app: Router,
    cp: Arc<ControlPlane>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    registry: prometheus::Registry,
}

async fn api_with(store: Arc<dyn Store>, token: Option<&str>) -> Api {
    let registry = prometheus::Registry::new();
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let cp = ControlPlane::open(
        store,
        registry.clone(),
        snapshot.clone(),
        model::translate::DEFAULT_GATEWAY_NAMESPACE.to_string(),
    )
    .await
    .expect("open");
    let health = Health::new();
    health.set_ready(true);
    Api {
        app: router(cp.clone(), health, token.map(str::to_string)),
        cp,
        snapshot,
        registry,
    }
}

async fn api() -> Api {
    api_with(Arc::new(MemoryStore::new()), None).await
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

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn warnings(&self) -> Vec<String> {
        self.headers
            .get_all("warning")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

impl Api {
    async fn call(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Body) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).expect("request"))
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

    async fn send(&self, method: Method, uri: &str, body: &Value) -> Resp {
        self.call(
            method,
            uri,
            &[("content-type", "application/json")],
            Body::from(body.to_string()),
        )
        .await
    }

    async fn get(&self, uri: &str) -> Resp {
        self.call(Method::GET, uri, &[], Body::empty()).await
    }
}

const VS: &str = "/apis/networking.istio.io/v1/namespaces/default/virtualservices";

fn vs(name: &str, host: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": "backend"}}]}]}
    })
}

// A real self-signed P-256 pair (e2e.example.com, valid until 2126): Secrets must parse.
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGXSvwDt8ssQEQRlz
+ejbwzsHMFiLFJyqqjC8OSEN6OGhRANCAAThumLABgRzbb4XDusC5tZnU3dx/c7c
pjn6RtQuPvEc8Jx0DdIXA0YvcZaZZlqpNpbE1rJPoJgdJt65JjMF1b27
-----END PRIVATE KEY-----
";
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

fn secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name},
        "stringData": {"tls.crt": CRT_PEM, "tls.key": KEY_PEM}
    })
}

#[tokio::test]
async fn create_read_replace_delete() {
    let a = api().await;
    let r = a
        .send(Method::POST, VS, &vs("reviews", "reviews.example.com"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let created = r.json();
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["generation"], 1);
    assert_eq!(created["apiVersion"], "networking.istio.io/v1");
    let rv = meta["resourceVersion"].as_str().expect("rv").to_string();
    let uid = meta["uid"].as_str().expect("uid").to_string();
    let ts = meta["creationTimestamp"].as_str().expect("ts").to_string();
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");

    let r = a.get(&format!("{VS}/reviews")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["spec"], created["spec"]);

    // Replace with a new spec: generation +1, uid and creationTimestamp kept.
    let mut body = vs("reviews", "reviews2.example.com");
    body["metadata"]["resourceVersion"] = json!(rv);
    let r = a.send(Method::PUT, &format!("{VS}/reviews"), &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let replaced = r.json();
    assert_eq!(replaced["metadata"]["generation"], 2);
    assert_eq!(replaced["metadata"]["uid"], uid.as_str());
    assert_eq!(replaced["metadata"]["creationTimestamp"], ts.as_str());
    assert_ne!(replaced["metadata"]["resourceVersion"], rv.as_str());

    // Labels only: no new generation.
    let mut body = vs("reviews", "reviews2.example.com");
    body["metadata"]["labels"] = json!({"team": "a"});
    let r = a.send(Method::PUT, &format!("{VS}/reviews"), &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["metadata"]["generation"], 2);

    // The same object again: nothing written, resourceVersion kept.
    let before = r.json()["metadata"]["resourceVersion"].clone();
    let r = a.send(Method::PUT, &format!("{VS}/reviews"), &body).await;
    assert_eq!(r.json()["metadata"]["resourceVersion"], before);

    // PUT of a new name creates: 201.
    let r = a
        .send(
            Method::PUT,
            &format!("{VS}/other"),
            &vs("other", "o.example.com"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let r = a
        .call(Method::DELETE, &format!("{VS}/reviews"), &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "Success");
    let r = a.get(&format!("{VS}/reviews")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let s = r.json();
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["reason"], "NotFound");
    assert_eq!(
        s["message"],
        "virtualservices.networking.istio.io \"reviews\" not found"
    );
    let r = a
        .call(Method::DELETE, &format!("{VS}/reviews"), &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn version_aliases_and_lists() {
    let a = api().await;
    for (ns, name) in [("b", "x"), ("a", "y"), ("a", "x")] {
        let uri = format!("/apis/networking.istio.io/v1beta1/namespaces/{ns}/virtualservices");
        let mut body = vs(name, "h.example.com");
        body["apiVersion"] = json!("networking.istio.io/v1alpha3");
        let r = a.send(Method::POST, &uri, &body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        assert_eq!(r.json()["apiVersion"], "networking.istio.io/v1");
    }
    let r = a.get("/apis/networking.istio.io/v1/virtualservices").await;
    let list = r.json();
    assert_eq!(list["kind"], "VirtualServiceList");
    assert_eq!(list["apiVersion"], "networking.istio.io/v1");
    assert_eq!(list["metadata"]["resourceVersion"], "3");
    let names: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap_or(""),
                i["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(names, ["a/x", "a/y", "b/x"]);
    let r = a
        .get("/apis/networking.istio.io/v1alpha3/namespaces/a/virtualservices")
        .await;
    assert_eq!(r.json()["items"].as_array().map(Vec::len), Some(2));
    let r = a
        .get("/apis/networking.istio.io/v1/namespaces/a/gateways")
        .await;
    assert_eq!(r.json()["kind"], "GatewayList");
    assert_eq!(r.json()["items"], json!([]));
}

#[tokio::test]
async fn unknown_paths_and_methods_are_status_objects() {
    let a = api().await;
    for uri in [
        "/apis/networking.istio.io/v1/widgets",
        "/apis/networking.istio.io/v2/virtualservices",
        "/apis/networking.istio.io/v1/namespaces/default/secrets",
        "/nope",
    ] {
        let r = a.get(uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(r.json()["reason"], "NotFound", "{uri}");
    }
    let r = a
        .call(Method::POST, &format!("{VS}/x"), &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json()["reason"], "MethodNotAllowed");
    // A PATCH in no patch format is refused for its media type.
    let r = a
        .call(Method::PATCH, &format!("{VS}/x"), &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn conflicts() {
    let a = api().await;
    let r = a.send(Method::POST, VS, &vs("r", "r.example.com")).await;
    let rv = r.json()["metadata"]["resourceVersion"].clone();
    let r = a.send(Method::POST, VS, &vs("r", "r.example.com")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["reason"], "AlreadyExists");
    assert_eq!(
        r.json()["message"],
        "virtualservices.networking.istio.io \"r\" already exists"
    );

    let mut body = vs("r", "r2.example.com");
    body["metadata"]["resourceVersion"] = rv.clone();
    assert_eq!(
        a.send(Method::PUT, &format!("{VS}/r"), &body).await.status,
        StatusCode::OK
    );
    // The same, now stale, resourceVersion.
    let r = a.send(Method::PUT, &format!("{VS}/r"), &body).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["reason"], "Conflict");
    assert_eq!(
        r.json()["message"],
        "Operation cannot be fulfilled on virtualservices.networking.istio.io \"r\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // Without resourceVersion: unconditional.
    let r = a
        .send(Method::PUT, &format!("{VS}/r"), &vs("r", "r3.example.com"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // A version on an object that does not exist is stale too.
    let mut body = vs("ghost", "g.example.com");
    body["metadata"]["resourceVersion"] = json!("1");
    let r = a.send(Method::PUT, &format!("{VS}/ghost"), &body).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn path_and_body_must_agree() {
    let a = api().await;
    let r = a
        .send(Method::PUT, &format!("{VS}/a"), &vs("b", "h.example.com"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let mut body = vs("a", "h.example.com");
    body["metadata"]["namespace"] = json!("other");
    let r = a.send(Method::PUT, &format!("{VS}/a"), &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let mut body = vs("a", "h.example.com");
    body["kind"] = json!("Gateway");
    let r = a.send(Method::POST, VS, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // Name taken from the path when the body has none.
    let mut body = vs("", "h.example.com");
    body["metadata"] = json!({});
    let r = a.send(Method::PUT, &format!("{VS}/from-path"), &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["metadata"]["name"], "from-path");
    // POST without a name, and a name that is not RFC 1123: 422 on metadata.name.
    let r = a.send(Method::POST, VS, &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let s = r.json();
    assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    let r = a
        .send(Method::POST, VS, &vs("Bad_Name", "h.example.com"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut body = vs("rv", "h.example.com");
    body["metadata"]["resourceVersion"] = json!("abc");
    let r = a.send(Method::POST, VS, &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json()["details"]["causes"][0]["field"],
        "metadata.resourceVersion"
    );
}

#[tokio::test]
async fn server_managed_metadata_cannot_be_forged() {
    let a = api().await;
    let mut body = vs("f", "h.example.com");
    body["metadata"]["uid"] = json!("forged");
    body["metadata"]["generation"] = json!(40);
    body["metadata"]["creationTimestamp"] = json!("1999-01-01T00:00:00Z");
    let r = a.send(Method::POST, VS, &body).await;
    let m = &r.json()["metadata"];
    assert_ne!(m["uid"], "forged");
    assert_eq!(m["generation"], 1);
    assert_ne!(m["creationTimestamp"], "1999-01-01T00:00:00Z");
}

#[tokio::test]
async fn decode_errors_are_400_with_position_or_path() {
    let a = api().await;
    let r = a
        .call(
            Method::POST,
            VS,
            &[("content-type", "application/json")],
            Body::from("{\n  \"kind\": \"VirtualService\",\n  \"metadata\": {\"name\": \"x\"\n"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let s = r.json();
    assert_eq!(s["reason"], "BadRequest");
    let msg = s["message"].as_str().expect("message");
    assert!(msg.contains("line 4") && msg.contains("column"), "{msg}");

    let mut body = vs("x", "h.example.com");
    body["spec"]["http"][0]["foo"] = json!(1);
    let r = a.send(Method::POST, VS, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let s = r.json();
    assert_eq!(
        s["message"],
        "strict decoding error: unknown field \"spec.http[0].foo\""
    );
    assert_eq!(s["details"]["causes"][0]["field"], "spec.http[0].foo");

    let mut body = vs("x", "h.example.com");
    body["spec"]["hosts"] = json!("not-a-list");
    let r = a.send(Method::POST, VS, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["details"]["causes"][0]["field"], "spec.hosts");
    // Nothing was stored by any of these.
    assert_eq!(a.cp.generation(), 0);
}

#[tokio::test]
async fn yaml_bodies() {
    let a = api().await;
    let y = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: yv\nspec:\n  hosts: [y.example.com]\n  http:\n  - route:\n    - destination: {host: backend}\n";
    let r = a
        .call(
            Method::POST,
            VS,
            &[("content-type", "application/yaml")],
            Body::from(y),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // YAML 1.1 scalars, as kubectl (Go's yaml.v2) reads them: `y` is a boolean, not a name.
    let r = a
        .call(
            Method::POST,
            VS,
            &[("content-type", "application/yaml")],
            Body::from(y.replace("name: yv", "name: y")),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["details"]["causes"][0]["field"], "metadata.name");
    let r = a
        .call(
            Method::POST,
            VS,
            &[("content-type", "text/yaml; charset=utf-8")],
            Body::from("kind: VirtualService\nmetadata: {name: z\n"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["message"].as_str().unwrap_or("").contains("line"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn media_types_and_body_limits() {
    let a = api().await;
    let r = a
        .call(
            Method::POST,
            VS,
            &[("content-type", "text/plain")],
            Body::from("x"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.json()["reason"], "UnsupportedMediaType");

    let big = vec![b' '; 2 * 1024 * 1024];
    let r = a.call(Method::POST, VS, &[], Body::from(big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["reason"], "RequestEntityTooLarge");
    let r = a
        .call(
            Method::POST,
            "/apply",
            &[("content-length", "5242880")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Missing Content-Type means JSON.
    let r = a
        .call(
            Method::POST,
            VS,
            &[],
            Body::from(vs("j", "j.example.com").to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn dry_run_persists_nothing() {
    let store = Arc::new(MemoryStore::new());
    let a = api_with(store.clone(), None).await;
    let gen0 = a.cp.generation();
    let snap0 = a.snapshot.load_full();
    let r = a
        .send(
            Method::POST,
            &format!("{VS}?dryRun=All"),
            &vs("d", "d.example.com"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["metadata"]["name"], "d");
    assert_eq!(
        a.get(&format!("{VS}/d")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(store.revision().await.expect("rev"), 0);
    assert_eq!(a.cp.generation(), gen0);
    assert!(
        Arc::ptr_eq(&snap0, &a.snapshot.load_full()),
        "snapshot swapped"
    );

    a.send(Method::POST, VS, &vs("d", "d.example.com")).await;
    let r = a
        .call(
            Method::DELETE,
            &format!("{VS}/d?dryRun=All"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(a.get(&format!("{VS}/d")).await.status, StatusCode::OK);
    let r = a
        .send(
            Method::POST,
            "/apply?dryRun=All",
            &json!([vs("e", "e.example.com")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        a.get(&format!("{VS}/e")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn writes_swap_the_snapshot_and_count() {
    let a = api().await;
    let snap0 = a.snapshot.load_full();
    a.send(Method::POST, VS, &vs("m", "m.example.com")).await;
    assert!(!Arc::ptr_eq(&snap0, &a.snapshot.load_full()));
    assert_eq!(a.cp.generation(), 1);
    let r = a
        .send(
            Method::POST,
            VS,
            &json!({"kind": "VirtualService", "metadata": {}}),
        )
        .await;
    assert!(r.status.is_client_error());
    let r = a.get("/metrics").await;
    let text = r.text();
    assert!(text.contains("gateway_config_generation 1"), "{text}");
    // open() counts as the first success.
    assert!(
        text.contains("gateway_config_reloads_total{result=\"success\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("gateway_config_reloads_total{result=\"failure\"} 1"),
        "{text}"
    );
    assert!(text.contains("gateway_config_last_reload_success_timestamp_seconds"));
    assert!(a.registry.gather().len() >= 3);
}

#[tokio::test]
async fn apply_is_all_or_nothing() {
    let a = api().await;
    a.send(Method::POST, VS, &vs("keep", "k.example.com")).await;
    let before = a
        .get("/apis/networking.istio.io/v1/virtualservices")
        .await
        .json();

    // Item 2 does not decode: 400 naming items[2], nothing applied.
    let mut bad = vs("c", "c.example.com");
    bad["spec"]["http"][0]["bogus"] = json!(true);
    let batch = json!({"apiVersion": "v1", "kind": "List", "items": [vs("a", "a.example.com"), secret("s"), bad]});
    let r = a.send(Method::POST, "/apply", &batch).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(
        r.json()["details"]["causes"][0]["field"],
        "items[2].spec.http[0].bogus"
    );

    // Duplicates and a bad name: 422 naming each item.
    let batch = json!([
        vs("a", "a.example.com"),
        vs("a", "a.example.com"),
        vs("B", "b.example.com")
    ]);
    let r = a.send(Method::POST, "/apply", &batch).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let fields: Vec<String> = r.json()["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|c| c["field"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        fields.contains(&"items[1].metadata.name".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"items[2].metadata.name".to_string()),
        "{fields:?}"
    );

    // A stale version in one item: 409, nothing applied.
    let mut stale = vs("keep", "k2.example.com");
    stale["metadata"]["resourceVersion"] = json!("999");
    let r = a
        .send(
            Method::POST,
            "/apply",
            &json!([vs("a", "a.example.com"), stale]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let after = a
        .get("/apis/networking.istio.io/v1/virtualservices")
        .await
        .json();
    assert_eq!(before, after);
    assert_eq!(
        a.get("/api/v1/namespaces/default/secrets/s").await.status,
        StatusCode::NOT_FOUND
    );

    // A good batch in YAML: every object applied in one revision.
    let y = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: keep}\nspec:\n  hosts: [k3.example.com]\n  http:\n  - route:\n    - destination: {host: backend}\n";
    let r = a
        .call(
            Method::POST,
            "/apply",
            &[("content-type", "application/yaml")],
            Body::from(y),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let list = r.json();
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0]["metadata"]["resourceVersion"],
        items[1]["metadata"]["resourceVersion"]
    );
    assert_eq!(items[1]["metadata"]["generation"], 2);
}

#[tokio::test]
async fn secrets_never_show_the_private_key() {
    let a = api().await;
    let key_b64 = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t";
    let check = |r: &Resp| {
        let t = r.text();
        assert!(!t.contains("PRIVATE KEY"), "{t}");
        assert!(!t.contains(key_b64), "{t}");
        assert!(!t.contains("tls.key"), "{t}");
    };
    let r = a
        .send(
            Method::POST,
            "/api/v1/namespaces/default/secrets",
            &secret("cert"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    check(&r);
    assert!(r.json()["data"]["tls.crt"].is_string(), "{}", r.text());
    assert_eq!(r.json()["apiVersion"], "v1");
    check(&a.get("/api/v1/namespaces/default/secrets/cert").await);
    check(&a.get("/api/v1/namespaces/default/secrets").await);
    let r = a.get("/api/v1/secrets").await;
    assert_eq!(r.json()["kind"], "SecretList");
    check(&r);
    let r = a
        .send(
            Method::PUT,
            "/api/v1/namespaces/default/secrets/cert",
            &secret("cert"),
        )
        .await;
    check(&r);
    let r = a
        .send(Method::POST, "/apply", &json!([secret("cert2")]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    check(&r);
}

#[tokio::test]
async fn auth_needs_the_bearer_token() {
    let a = api_with(Arc::new(MemoryStore::new()), Some("s3cret")).await;
    let r = a.get(VS).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["reason"], "Unauthorized");
    assert_eq!(
        r.headers.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer realm=\"gateway-admin\""[..])
    );
    for bad in ["Bearer wrong", "Bearer s3cret2", "Basic s3cret", "s3cret"] {
        let r = a
            .call(Method::GET, VS, &[("authorization", bad)], Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let r = a
        .call(
            Method::GET,
            VS,
            &[("authorization", "Bearer s3cret")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Unknown paths are not revealed without the token.
    assert_eq!(a.get("/nope").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.get("/metrics").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(a.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn readiness_follows_health() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let registry = prometheus::Registry::new();
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let cp = ControlPlane::open(
        store,
        registry,
        snapshot,
        model::translate::DEFAULT_GATEWAY_NAMESPACE.to_string(),
    )
    .await
    .expect("open");
    let health = Health::new();
    let app = router(cp, health.clone(), None);
    let status = |app: Router| async move {
        app.oneshot(Request::get("/readyz").body(Body::empty()).expect("req"))
            .await
            .expect("resp")
            .status()
    };
    assert_eq!(status(app.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
    health.set_ready(true);
    assert_eq!(status(app.clone()).await, StatusCode::OK);
    health.set_draining();
    assert_eq!(status(app.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_unavailable_store_is_a_503_and_changes_nothing() {
    let store = Arc::new(MemoryStore::new());
    let a = api_with(store.clone(), None).await;
    store.set_unavailable(true);
    let r = a.send(Method::POST, VS, &vs("u", "u.example.com")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["reason"], "ServiceUnavailable");
    assert!(!r.text().contains("memory store"), "internal detail leaked");
    store.set_unavailable(false);
    assert_eq!(
        a.get(&format!("{VS}/u")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(a.cp.generation(), 0);
}

#[tokio::test]
async fn file_store_restores_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rv, uid, ts) = {
        let store = Arc::new(FileStore::open(dir.path()).expect("open"));
        let a = api_with(store, None).await;
        let r = a.send(Method::POST, VS, &vs("p", "p.example.com")).await;
        let m = r.json()["metadata"].clone();
        a.send(
            Method::POST,
            "/api/v1/namespaces/default/secrets",
            &secret("c"),
        )
        .await;
        (
            m["resourceVersion"].clone(),
            m["uid"].clone(),
            m["creationTimestamp"].clone(),
        )
    };
    let store = Arc::new(FileStore::open(dir.path()).expect("reopen"));
    let a = api_with(store, None).await;
    let m = a.get(&format!("{VS}/p")).await.json()["metadata"].clone();
    assert_eq!(
        (
            m["resourceVersion"].clone(),
            m["uid"].clone(),
            m["creationTimestamp"].clone()
        ),
        (rv, uid, ts)
    );
    assert_eq!(a.cp.generation(), 2);
    let raw = std::fs::read_to_string(dir.path().join("state.json")).expect("state");
    assert!(raw.contains("tls.key"), "the stored Secret keeps its key");
}

#[tokio::test]
async fn bootstrap_applies_a_folder_and_reports_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a.yaml"),
        "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: a}\nspec:\n  hosts: [a.example.com]\n  http:\n  - route:\n    - destination: {host: backend}\n---\nkind: Gateway\napiVersion: networking.istio.io/v1\nmetadata: {name: g, namespace: edge}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b.json"),
        vs("b", "b.example.com").to_string(),
    )
    .expect("write");
    std::fs::write(dir.path().join("README.md"), "not a manifest").expect("write");
    let a = api().await;
    let n = a.cp.bootstrap(dir.path()).await.expect("bootstrap");
    assert_eq!(n, 3);
    assert_eq!(a.get(&format!("{VS}/b")).await.status, StatusCode::OK);
    assert_eq!(
        a.get("/apis/networking.istio.io/v1/namespaces/edge/gateways/g")
            .await
            .status,
        StatusCode::OK
    );
    // Again: nothing changes, versions are kept.
    let gen = a.cp.generation();
    a.cp.bootstrap(dir.path()).await.expect("again");
    assert_eq!(a.cp.generation(), gen);

    let bad = tempfile::tempdir().expect("tempdir");
    std::fs::write(bad.path().join("x.json"), "{\"kind\": \"VirtualService\",").expect("write");
    let mut v = vs("y", "y.example.com");
    v["spec"]["nope"] = json!(1);
    std::fs::write(bad.path().join("y.json"), v.to_string()).expect("write");
    let err = a.cp.bootstrap(bad.path()).await.expect_err("bad");
    let text = err.to_string();
    assert!(text.contains("x.json") && text.contains("line"), "{text}");
    assert!(
        text.contains("y.json") && text.contains("spec.nope"),
        "{text}"
    );
    assert_eq!(a.cp.generation(), gen);
}

#[tokio::test]
async fn dangling_references_warn_and_show_in_status() {
    let a = api().await;
    let body = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "w"},
        "spec": {"hosts": ["w.example.com"], "gateways": ["missing-gw"],
                 "http": [{"route": [{"destination": {"host": "backend", "subset": "v9"}}]}]}
    });
    let r = a.send(Method::POST, VS, &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let w = r.warnings();
    assert!(
        w.iter()
            .all(|w| w.starts_with("299 - \"") && w.ends_with('"')),
        "{w:?}"
    );
    assert!(w.iter().any(|w| w.contains("v9")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("missing-gw")), "{w:?}");
    let got = a.get(&format!("{VS}/w")).await.json();
    let conds = got["status"]["conditions"].as_array().expect("conditions");
    assert!(!conds.is_empty(), "{got}");
    // The same through /apply, named by object.
    let r = a.send(Method::POST, "/apply", &json!([body])).await;
    assert!(
        r.warnings()
            .iter()
            .any(|w| w.contains("VirtualService default/w")),
        "{:?}",
        r.warnings()
    );
}

#[tokio::test]
async fn a_follower_sees_writes_of_another_replica() {
    let store = Arc::new(MemoryStore::new());
    let a = api_with(store.clone(), None).await;
    let b = api_with(store.clone(), None).await;
    let _follow = b.cp.follow();
    let r = a
        .send(Method::POST, VS, &vs("shared", "s.example.com"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while b.get(&format!("{VS}/shared")).await.status != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "replica b never saw the write"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(b.cp.generation(), 1);
    let r = b
        .send(
            Method::PUT,
            &format!("{VS}/shared"),
            &vs("shared", "s2.example.com"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let rv_b = r.json()["metadata"]["resourceVersion"].clone();
    // a's view is now behind b's write (a does not follow). An unconditional PUT reloads and
    // applies on top of b's write instead of failing on a's stale view.
    let r = a
        .send(
            Method::PUT,
            &format!("{VS}/shared"),
            &vs("shared", "s3.example.com"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["metadata"]["generation"], 3, "b's change counted");
    // A client that sends a version it read before b's write still gets its 409.
    let mut stale = vs("shared", "s4.example.com");
    stale["metadata"]["resourceVersion"] = rv_b;
    let r = b.send(Method::PUT, &format!("{VS}/shared"), &stale).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
}

#[tokio::test]
async fn delete_honours_delete_options_preconditions() {
    let a = api().await;
    let r = a.send(Method::POST, VS, &vs("d", "d.example.com")).await;
    let rv = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // kubectl's body: no precondition.
    let opts =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"});
    let stale = json!({"preconditions": {"resourceVersion": "999"}});
    let r = a.send(Method::DELETE, &format!("{VS}/d"), &stale).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let good = json!({"preconditions": {"resourceVersion": rv}});
    let r = a.send(Method::DELETE, &format!("{VS}/d"), &good).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    a.send(Method::POST, VS, &vs("d", "d.example.com")).await;
    let r = a.send(Method::DELETE, &format!("{VS}/d"), &opts).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
