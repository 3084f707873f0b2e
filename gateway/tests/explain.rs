//! End-to-end tests of "why did my request go there?" against the real binary: for several
//! requests, the route `POST /debug/explain` names is the route id the access log records for the
//! same request actually sent, for a hand-picked set and for randomized tables (fixed seed); TLS
//! server selection by SNI through explain; `GET /debug/snapshot`
//! (generation, deterministic, no private key after a TLS Secret); both behind the admin token;
//! and `gateway explain` on the repository's examples.

mod common;
mod upstream;

use common::{eventually, Gateway, Opts, Rng};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use upstream::Upstream;

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
            gw.access_log()
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

// ----- randomized: explain equals the proxy -----

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

/// True with probability `n` in `d`.
fn chance(rng: &mut Rng, n: u64, d: u64) -> bool {
    rng.below(d) < n
}

const PATHS: &[&str] = &[
    "/", "/a", "/a/", "/a1", "/a12/x", "/a/x", "/ab", "/b", "/bx", "/api", "/api/v1", "/API/v1",
    "/c/d", "/a?x=1",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];
const VALUES: &[&str] = &["v1", "v2", "v10", "x"];

/// One random match entry: some of uri, method, header `x-a`, each with a random kind.
fn random_match(rng: &mut Rng) -> Value {
    let mut m = serde_json::Map::new();
    if chance(rng, 2, 3) {
        let uri = match rng.below(3) {
            0 => json!({"exact": pick(rng, &["/a", "/a/x", "/api/v1", "/bx", "/"])}),
            1 => json!({"prefix": pick(rng, &["/a", "/b", "/api", "/", "/a/"])}),
            _ => json!({"regex": pick(rng, &["/a[0-9]+(/.*)?", "/b.*", "/(a|api)/.*", "/[a-c]"])}),
        };
        m.insert("uri".into(), uri);
    }
    if chance(rng, 1, 3) {
        m.insert(
            "method".into(),
            json!({"exact": pick(rng, &["GET", "POST", "PUT"])}),
        );
    }
    if chance(rng, 1, 3) {
        let h = match rng.below(3) {
            0 => json!({"exact": pick(rng, &["v1", "v2"])}),
            1 => json!({"prefix": "v1"}),
            _ => json!({"regex": "v[0-9]"}),
        };
        m.insert("headers".into(), json!({"x-a": h}));
    }
    Value::Object(m)
}

/// A table: 3–6 VirtualServices over the table's hosts, each rule a directResponse whose body is
/// its own route id, or a route to the real upstream. Returns the manifest and the hosts.
fn random_table(rng: &mut Rng, t: u64, backend: &Upstream) -> (String, Vec<String>) {
    let hosts: Vec<String> = (0..2 + rng.below(2))
        .map(|i| format!("h{i}.t{t}.test"))
        .collect();
    let mut pool: Vec<String> = hosts.clone();
    pool.push(format!("*.t{t}.test"));
    let svc = format!("backend.t{t}.test");
    let mut docs = vec![json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": format!("backend-t{t}")},
        "spec": {"hosts": [svc], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                 "resolution": "STATIC",
                 "endpoints": [{"address": "127.0.0.1", "ports": {"http": backend.port()}}]},
    })];
    for v in 0..3 + rng.below(4) {
        let name = format!("t{t}-vs{v}");
        let mut vs_hosts: Vec<&str> = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let h = pool[rng.below(pool.len() as u64) as usize].as_str();
            if !vs_hosts.contains(&h) {
                vs_hosts.push(h);
            }
        }
        // A VirtualService may cover a host only once: the wildcard goes alone.
        if vs_hosts.len() > 1 && vs_hosts.iter().any(|h| h.starts_with('*')) {
            vs_hosts.retain(|h| h.starts_with('*'));
        }
        let mut http = Vec::new();
        for i in 0..1 + rng.below(4) {
            let mut rule = serde_json::Map::new();
            // Some catch-alls, anywhere in the list (a catch-all shadows what follows).
            if !chance(rng, 1, 5) {
                let n = 1 + rng.below(2);
                rule.insert(
                    "match".into(),
                    Value::Array((0..n).map(|_| random_match(rng)).collect()),
                );
            }
            if chance(rng, 1, 4) {
                rule.insert(
                    "route".into(),
                    json!([{"destination": {"host": svc, "port": {"number": 80}}}]),
                );
            } else {
                let id = format!("vs/default/{name}/http/{i}");
                rule.insert(
                    "directResponse".into(),
                    json!({"status": 200, "body": {"string": id}}),
                );
            }
            http.push(Value::Object(rule));
        }
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {"hosts": vs_hosts, "http": http},
        }));
    }
    let yaml = docs
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n");
    (yaml, hosts)
}

/// One request sent for real after being explained.
struct Sent {
    rid: String,
    what: String,
    explained: Value,
    status: u16,
    body: String,
}

#[test]
fn explain_equals_the_proxy_on_random_tables() {
    let backend = Upstream::start("backend");
    let gw = Gateway::start(Opts::default().token(TOKEN).arg("--access-log").arg("json"));
    let mut rng = Rng::new(0x005e_ede7_91a1);
    let mut all_routes: BTreeSet<Option<String>> = BTreeSet::new();
    for t in 0..3 {
        let started = Instant::now();
        let (yaml, hosts) = random_table(&mut rng, t, &backend);
        apply(&gw, &yaml);
        let mut targets: Vec<String> = hosts.clone();
        targets.push(format!("other.t{t}.test"));
        targets.push(format!("H0.T{t}.test:80"));
        targets.push("nobody.test".to_string());
        let mut sent = Vec::new();
        for n in 0..40 {
            let rid = format!("rand-{t}-{n}");
            let method = pick(&mut rng, METHODS);
            let host = targets[rng.below(targets.len() as u64) as usize].clone();
            let path = pick(&mut rng, PATHS);
            let header = if chance(&mut rng, 1, 2) {
                Some((pick(&mut rng, &["x-a", "X-A"]), pick(&mut rng, VALUES)))
            } else {
                None
            };
            let mut hs = serde_json::Map::new();
            hs.insert("x-request-id".into(), json!(rid));
            let mut headers: Vec<(&str, &str)> = vec![("Host", &host), ("x-request-id", &rid)];
            if let Some((k, v)) = header {
                hs.insert(k.into(), json!(v));
                headers.push((k, v));
            }
            let explained = explain(
                &gw,
                &json!({"port": 80, "host": host, "method": method, "path": path, "headers": hs}),
            );
            let resp = common::request(gw.http, method, path, &headers, b"").expect("request");
            sent.push(Sent {
                what: format!("{method} {host}{path} {header:?}"),
                rid,
                explained,
                status: resp.status,
                body: resp.text(),
            });
        }
        // Every request's access log line, read once they are all in.
        let lines = eventually(Duration::from_secs(10), || {
            let log = gw.access_log();
            let found: Vec<Value> = sent
                .iter()
                .filter_map(|s| {
                    log.iter()
                        .find(|l| l["request_id"] == s.rid.as_str())
                        .cloned()
                })
                .collect();
            (found.len() == sent.len()).then_some(found)
        })
        .unwrap_or_else(|| panic!("table {t}: access log lines missing\n{}", gw.logs()));
        let mut routes = BTreeSet::new();
        for (s, line) in sent.iter().zip(&lines) {
            let logged = line["route_name"]
                .as_str()
                .filter(|r| !r.is_empty() && *r != "-");
            let e = &s.explained;
            assert_eq!(
                e["route"].as_str(),
                logged,
                "table {t}, {} ({}): explain {e}\nlog {line}\ntable:\n{yaml}",
                s.what,
                s.rid
            );
            assert_eq!(line["response_code"], s.status, "{}: {line}", s.what);
            if e["action"] == "directResponse" {
                // The body names the route that answered: the proxy took the route explain names.
                assert_eq!(Some(s.body.as_str()), logged, "{}: {e}", s.what);
            }
            routes.insert(logged.map(str::to_string));
        }
        // The table made the requests spread over several routes, some unrouted: the comparison
        // distinguishes something.
        assert!(routes.len() >= 4, "table {t}: {routes:?}\n{yaml}");
        all_routes.extend(routes);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "table {t} took {:?}",
            started.elapsed()
        );
    }
    assert!(all_routes.contains(&None), "{all_routes:?}");
    // Some requests were proxied to the real upstream, not only answered directly.
    assert!(backend.hits() > 0, "{all_routes:?}");
}
