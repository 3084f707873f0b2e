//! End-to-end tests of "why did my request go there?" against the real binary: for several
//! requests, the route `POST /debug/explain` names is the route id the access log records for the
//! same request actually sent; TLS server selection by SNI through explain; `GET /debug/snapshot`
//! (generation, deterministic, no private key after a TLS Secret); both behind the admin token;
//! and `gateway explain` on the repository's examples.

mod common;

use common::{eventually, Gateway, Opts};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const TOKEN: &str = "explain-test-token";

fn apply(gw: &Gateway, yaml: &str) {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
}

fn explain(gw: &Gateway, req: &Value) -> Value {
    let r = gw.post("/debug/explain", req);
    assert_eq!(r.status, 200, "explain {req}: {}", r.text());
    r.json()
}

/// Every JSON access log line in the gateway's output.
fn access_log(gw: &Gateway) -> Vec<Value> {
    gw.logs()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.test]
  http:
  - match: [{uri: {prefix: /api}, headers: {x-ver: {exact: v2}}}]
    directResponse: {status: 200, body: {string: api-v2}}
  - match: [{uri: {prefix: /api}}]
    directResponse: {status: 200, body: {string: api}}
  - match: [{method: {exact: POST}}]
    directResponse: {status: 201, body: {string: post}}
  - match: [{queryParams: {q: {exact: "1"}}}]
    directResponse: {status: 200, body: {string: query}}
  - match: [{uri: {exact: /exact}}]
    route: [{destination: {host: shop-backend, subset: missing}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [shop.test, "*.wild.test"]
  http:
  - match: [{uri: {regex: "/r[0-9]+"}}]
    directResponse: {status: 200, body: {string: regex}}
  - directResponse: {status: 200, body: {string: web}}
---
"#;

/// method, host, path, headers.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

#[test]
fn explain_names_the_route_the_access_log_records() {
    let gw = Gateway::start(Opts::default().token(TOKEN).arg("--access-log").arg("json"));
    apply(&gw, ROUTES);
    let cases: Vec<Case> = vec![
        ("GET", "shop.test", "/api/items", vec![("x-ver", "v2")]),
        ("GET", "shop.test", "/api/items", vec![("x-ver", "v3")]),
        ("POST", "shop.test", "/form", vec![]),
        ("GET", "shop.test", "/p?q=1", vec![]),
        ("GET", "shop.test", "/p?q=2", vec![]),
        ("GET", "shop.test", "/exact", vec![]),
        ("GET", "shop.test", "/r42", vec![]),
        ("GET", "a.wild.test", "/r42", vec![]),
        ("GET", "SHOP.test:80", "/home", vec![]),
        ("GET", "nobody.test", "/", vec![]),
    ];
    let mut explained = Vec::new();
    for (i, (method, host, path, headers)) in cases.iter().enumerate() {
        let rid = format!("explain-{i}");
        let mut hs: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        hs.insert("x-request-id".into(), json!(rid));
        let e = explain(
            &gw,
            &json!({"port": 80, "host": host, "method": method, "path": path, "headers": hs}),
        );
        let mut sent: Vec<(&str, &str)> = headers.clone();
        sent.push(("Host", host));
        sent.push(("x-request-id", &rid));
        let body: &[u8] = if *method == "POST" { b"x" } else { b"" };
        let resp = common::request(gw.http, method, path, &sent, body).expect("request");
        explained.push((rid, e, resp.status));
    }
    for (rid, e, status) in &explained {
        let line = eventually(Duration::from_secs(10), || {
            access_log(&gw)
                .into_iter()
                .find(|l| l["request_id"] == rid.as_str())
        })
        .unwrap_or_else(|| panic!("no access log line for {rid}\n{}", gw.logs()));
        let logged = line["route_name"]
            .as_str()
            .filter(|s| !s.is_empty() && *s != "-");
        assert_eq!(
            e["route"].as_str(),
            logged,
            "{rid}: explain {e}\nlog {line}"
        );
        assert_eq!(line["response_code"], *status, "{line}");
        if let Some(s) = e["status"].as_u64() {
            assert_eq!(u64::from(*status), s, "{rid}: explain {e}");
        }
    }
    // The requests reached different routes, a 404 among them: the comparison means something.
    let routes: BTreeSet<Option<String>> = explained
        .iter()
        .map(|(_, e, _)| e["route"].as_str().map(str::to_string))
        .collect();
    assert!(routes.len() >= 7, "{routes:?}");
    assert!(routes.contains(&None));

    let by = |i: usize| &explained[i].1;
    // x-ver v3: the v2 rule is skipped for its header.
    assert_eq!(by(1)["route"], "vs/default/shop/http/1");
    assert_eq!(
        by(1)["skipped"],
        json!([{"route": "vs/default/shop/http/0",
                "reason": "header x-ver: exact \"v2\" does not match \"v3\""}])
    );
    // The catch-all of `web`: every specific rule of both VirtualServices skipped, in order.
    let home = by(8);
    assert_eq!(home["route"], "vs/default/web/http/1");
    assert_eq!(home["action"], "directResponse");
    let skipped: Vec<&str> = home["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter_map(|s| s["route"].as_str())
        .collect();
    assert_eq!(
        skipped,
        [
            "vs/default/shop/http/0",
            "vs/default/shop/http/1",
            "vs/default/shop/http/2",
            "vs/default/shop/http/3",
            "vs/default/shop/http/4",
            "vs/default/web/http/0"
        ]
    );
    assert!(home["skipped"][2]["reason"]
        .as_str()
        .is_some_and(|r| r == "method GET is not POST"));
    // A subset no DestinationRule defines: 503 NC, the destination without a cluster.
    assert_eq!(by(5)["action"], "route");
    assert_eq!(by(5)["status"], 503);
    assert_eq!(by(5)["destinations"][0]["host"], "shop-backend");
    assert!(by(5)["destinations"][0]["cluster"].is_null());
    // No host: why.
    assert_eq!(by(9)["action"], "notFound");
    assert!(by(9)["reason"]
        .as_str()
        .is_some_and(|r| r.contains("nobody.test")));

    // Behind the token; bad descriptions answer 400 naming the field.
    let anon = common::request(
        gw.admin,
        "POST",
        "/debug/explain",
        &[("Content-Type", "application/json")],
        br#"{"host":"shop.test"}"#,
    )
    .expect("request");
    assert_eq!(anon.status, 401);
    let anon = common::request(gw.admin, "GET", "/debug/snapshot", &[], b"").expect("request");
    assert_eq!(anon.status, 401);
    let bad = gw.post("/debug/explain", &json!({"host": "shop.test", "port": "x"}));
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["details"]["causes"][0]["field"], "port");
    let bad = gw.post(
        "/debug/explain",
        &json!({"host": "shop.test", "headers": {"bad name": "v"}}),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(
        bad.json()["details"]["causes"][0]["field"],
        "headers.bad name"
    );
    let bad = gw.post("/debug/explain", &json!({"host": "shop.test", "bogus": 1}));
    assert_eq!(bad.status, 400, "{}", bad.text());
}

fn tls_setup() -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).expect("cert");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "a-cert", "namespace": "default"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert.cert.pem(), "tls.key": cert.key_pair.serialize_pem()},
    });
    format!(
        "{secret}\n---\n{}",
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.test]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a.test, b.test]
  gateways: [gw]
  http:
  - directResponse: {status: 200, body: {string: a}}
"#
    )
}

#[test]
fn explain_selects_the_tls_server_by_sni_and_the_snapshot_hides_keys() {
    let gw = Gateway::start(Opts::default().token(TOKEN).arg("--access-log").arg("off"));
    let before = gw.get("/debug/snapshot");
    assert_eq!(before.status, 200, "{}", before.text());
    let g0 = before.json()["generation"].as_u64().expect("generation");
    apply(&gw, &tls_setup());

    let e = explain(
        &gw,
        &json!({"port": 443, "host": "a.test", "sni": "a.test"}),
    );
    assert_eq!(e["tls"]["server"], "default/gw spec.servers[0]", "{e}");
    assert_eq!(e["tls"]["admitted"], true, "{e}");
    assert_eq!(e["route"], "vs/default/a/http/0", "{e}");
    // The SNI selects no server: the handshake fails, whatever the Host.
    let e = explain(
        &gw,
        &json!({"port": 443, "host": "a.test", "sni": "c.test"}),
    );
    assert!(e["tls"]["server"].is_null(), "{e}");
    assert_eq!(e["action"], "notFound", "{e}");
    assert!(e["route"].is_null(), "{e}");
    // b.test is routed on port 80, but not through the TLS server that a.test's SNI selects.
    let e = explain(
        &gw,
        &json!({"port": 443, "host": "b.test", "sni": "a.test"}),
    );
    assert_eq!(e["tls"]["admitted"], false, "{e}");
    assert!(e["route"].is_null(), "{e}");
    let e = explain(&gw, &json!({"port": 80, "host": "b.test"}));
    assert_eq!(e["route"], "vs/default/a/http/0", "{e}");

    let dump = gw.get("/debug/snapshot");
    assert_eq!(dump.status, 200);
    let text = dump.text();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let v = dump.json();
    assert!(v["generation"].as_u64().expect("generation") > g0, "{v}");
    assert_eq!(
        v["snapshot"]["tls"]["443"]["servers"][0]["certificates"][0]["sans"],
        json!(["a.test"]),
        "{v}"
    );
    assert!(v["snapshot"]["listeners"]["80"].is_object(), "{v}");
    // Deterministic: the same generation dumps the same bytes.
    assert_eq!(gw.get("/debug/snapshot").text(), text);
}

#[test]
fn gateway_explain_prints_the_route_of_the_examples() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("explain")
        .arg(&examples)
        .args(["--host", "hello.local", "--path", "/anything?x=1"])
        .output()
        .expect("run gateway explain");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(v["route"], "vs/default/hello/http/0", "{v}");
    assert_eq!(v["action"], "directResponse", "{v}");
    assert_eq!(v["gateway"], "default/edge", "{v}");

    // A host the examples do not serve, and a header that decides.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("explain")
        .arg(&examples)
        .args(["--host", "nobody.invalid", "--header", "x-a=1"])
        .output()
        .expect("run gateway explain");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(v["route"].is_null(), "{v}");
    assert_eq!(v["action"], "notFound", "{v}");

    // Invalid manifests: exit 1, the problem on stderr.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = common::write_file(
        dir.path(),
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [a]\n  http:\n  - route: [{destination: {host: b}, weight: -1}]\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["explain", &bad.display().to_string(), "--host", "a"])
        .output()
        .expect("run gateway explain");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("weight"));
}
