//! End-to-end tests of Kubernetes Ingresses served by the real binary, as Istio serves them: the
//! class rules, `Exact` and element-wise `Prefix` paths, wildcard hosts, `defaultBackend`, TLS
//! by SNI from the `tls` entries' Secrets (real rustls client), what `POST /debug/explain` says
//! of Ingress routes, and CRUD at the `networking.k8s.io` paths (IngressClass cluster-scoped).

mod common;
mod upstream;

use common::tls::{handshake, http1, rt, secret_yaml, Ca, Client};
use common::{eventually, request, Gateway, Opts, Response};
use serde_json::json;
use std::time::Duration;
use upstream::Upstream;

fn apply(gw: &Gateway, yaml: &str) -> Response {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
    r
}

fn get(gw: &Gateway, host: &str, path: &str) -> Response {
    request(gw.http, "GET", path, &[("Host", host)], b"").expect("request")
}

/// Which upstream answered (`x-upstream`), or the status of a gateway-made response.
fn who(r: &Response) -> String {
    match r.header("x-upstream") {
        Some(u) => u.to_string(),
        None => r.status.to_string(),
    }
}

/// A STATIC ServiceEntry for the Kubernetes service `<name>.default`, port 80, on the upstream.
fn service(name: &str, u: &Upstream) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.default.svc.cluster.local]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n  - address: 127.0.0.1\n    ports: {{http: {}}}\n---\n",
        u.port()
    )
}

const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: istio}\nspec: {controller: istio.io/ingress-controller}\n---\n";

fn backend(svc: &str) -> String {
    format!("{{service: {{name: {svc}, port: {{number: 80}}}}}}")
}

#[test]
fn paths_hosts_and_default_backend_route_as_istio_does() {
    let ups: Vec<Upstream> = ["exact", "prefix", "wild", "fallback", "nginx"]
        .iter()
        .map(|n| Upstream::start(n))
        .collect();
    let gw = Gateway::start(Opts::default());
    let mut yaml = String::from(CLASS);
    for u in &ups {
        yaml.push_str(&service(&u.name, u));
    }
    yaml.push_str(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n  ingressClassName: istio\n  defaultBackend: {fallback}\n  rules:\n  - host: shop.example.com\n    http:\n      paths:\n      - {{path: /foo, pathType: Prefix, backend: {prefix}}}\n      - {{path: /exact, pathType: Exact, backend: {exact}}}\n  - host: \"*.example.com\"\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {wild}}}\n---\n",
        fallback = backend("fallback"),
        prefix = backend("prefix"),
        exact = backend("exact"),
        wild = backend("wild"),
    ));
    yaml.push_str(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: other\n  annotations: {{kubernetes.io/ingress.class: nginx}}\nspec:\n  rules:\n  - host: nginx.example.org\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {nginx}}}\n",
        nginx = backend("nginx"),
    ));
    let r = apply(&gw, &yaml);
    let warnings = r.headers_named("warning").join("\n");
    assert!(
        warnings.contains("class \\\"nginx\\\" is not \\\"istio\\\""),
        "{warnings}"
    );

    let cases = [
        ("shop.example.com", "/foo", "prefix"),
        ("shop.example.com", "/foo/bar", "prefix"),
        ("shop.example.com", "/exact", "exact"),
        ("shop.example.com", "/exact/more", "404"),
        ("shop.example.com", "/foobar", "404"),
        ("a.example.com", "/anything", "wild"),
        ("elsewhere.test", "/x", "fallback"),
        // The Ingress of another class is not served: its host falls to the default backend.
        ("nginx.example.org", "/", "fallback"),
    ];
    for (host, path, want) in cases {
        assert_eq!(who(&get(&gw, host, path)), want, "{host}{path}");
    }

    let other = gw.get("/apis/networking.k8s.io/v1/namespaces/default/ingresses/other");
    assert_eq!(other.status, 200, "{}", other.text());
    let conds = &other.json()["status"]["conditions"];
    assert_eq!(conds[0]["type"], "Accepted");
    assert_eq!(conds[0]["status"], "False");
    assert_eq!(conds[0]["reason"], "IngressClassNotIstio");
}

#[test]
fn crud_at_the_kubernetes_paths() {
    let up = Upstream::start("one");
    let gw = Gateway::start(Opts::default());
    apply(&gw, &service("one", &up));

    // IngressClass: cluster-scoped, no namespace in answers even when the body has one.
    let class = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "istio", "namespace": "ignored"},
        "spec": {"controller": "istio.io/ingress-controller"}
    });
    let r = gw.post("/apis/networking.k8s.io/v1/ingressclasses", &class);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        r.json()["metadata"].get("namespace").is_none(),
        "{}",
        r.text()
    );
    let r = gw.get("/apis/networking.k8s.io/v1/ingressclasses/istio");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["apiVersion"], "networking.k8s.io/v1");
    let list = gw.get("/apis/networking.k8s.io/v1/ingressclasses").json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(
        gw.get("/apis/networking.k8s.io/v1/namespaces/default/ingressclasses")
            .status,
        404
    );

    let ing = |path: &str| {
        serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web"},
            "spec": {"ingressClassName": "istio", "rules": [{"host": "crud.example.com", "http": {"paths": [
                {"path": path, "pathType": "Exact", "backend": {"service": {"name": "one", "port": {"number": 80}}}}
            ]}}]}
        })
    };
    let base = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
    let r = gw.post(base, &ing("/a"));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(who(&get(&gw, "crud.example.com", "/a")), "one");

    let r = gw.put(&format!("{base}/web"), &ing("/b"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(&get(&gw, "crud.example.com", "/b")), "one");
    assert_eq!(who(&get(&gw, "crud.example.com", "/a")), "404");

    let all = gw.get("/apis/networking.k8s.io/v1/ingresses").json();
    assert_eq!(all["items"][0]["metadata"]["namespace"], "default", "{all}");

    // A bad path is refused with its field path.
    let r = gw.post(base, &{
        let mut v = ing("relative");
        v["metadata"]["name"] = "bad".into();
        v
    });
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("spec.rules[0].http.paths[0].path"),
        "{}",
        r.text()
    );

    // Deleting the class stops the Ingress being served.
    let r = gw.delete("/apis/networking.k8s.io/v1/ingressclasses/istio");
    assert_eq!(r.status, 200, "{}", r.text());
    let gone = eventually(Duration::from_secs(5), || {
        (get(&gw, "crud.example.com", "/b").status == 404).then_some(())
    });
    assert!(gone.is_some(), "still served after its class was deleted");
    let r = gw.delete(&format!("{base}/web"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.get(&format!("{base}/web")).status, 404);
}

#[test]
fn tls_entries_serve_their_secret_by_sni() {
    let up = Upstream::start("secure");
    let ca = Ca::new("ingress ca");
    let leaf = ca.server(&["secure.example.com"]);
    let gw = Gateway::start(Opts::default());
    let mut yaml = String::from(CLASS);
    yaml.push_str(&service("secure", &up));
    yaml.push_str(&secret_yaml("secure-cert", &leaf, None));
    yaml.push_str(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: secure}}\nspec:\n  ingressClassName: istio\n  tls:\n  - {{hosts: [secure.example.com], secretName: secure-cert}}\n  rules:\n  - host: secure.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {b}}}\n---\n",
        b = backend("secure"),
    ));
    apply(&gw, &yaml);

    rt().block_on(async {
        let mut s = handshake(gw.https, &Client::sni("secure.example.com"))
            .await
            .unwrap_or_else(|e| panic!("handshake: {e}\n{}", gw.logs()));
        assert!(
            s.leaf == leaf.der.as_ref(),
            "the served certificate is not the Secret's"
        );
        let r = http1(&mut s.stream, "secure.example.com", "/hello", true)
            .await
            .unwrap_or_else(|e| panic!("request: {e}\n{}", gw.logs()));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream"), Some("secure"));
        assert_eq!(r.json()["uri"], "/hello");
        for sni in ["other.example.com", "example.com"] {
            assert!(
                handshake(gw.https, &Client::sni(sni)).await.is_err(),
                "{sni}: no Ingress or Gateway claims it, the handshake must fail"
            );
        }
    });
    assert_eq!(up.hits(), 1);
    // Plain HTTP still serves the rule's host.
    assert_eq!(who(&get(&gw, "secure.example.com", "/")), "secure");
}

#[test]
fn explain_names_the_ingress_route_and_why_a_prefix_skipped() {
    let ups: Vec<Upstream> = ["foo", "root"].iter().map(|n| Upstream::start(n)).collect();
    let gw = Gateway::start(Opts::default().arg("--access-log").arg("json"));
    let mut yaml = String::from(CLASS);
    for u in &ups {
        yaml.push_str(&service(&u.name, u));
    }
    yaml.push_str(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n  ingressClassName: istio\n  rules:\n  - host: shop.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {root}}}\n      - {{path: /foo, pathType: Prefix, backend: {foo}}}\n---\n",
        root = backend("root"),
        foo = backend("foo"),
    ));
    apply(&gw, &yaml);
    let explain = |path: &str| {
        let r = gw.post(
            "/debug/explain",
            &json!({"port": 80, "host": "shop.example.com", "path": path}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };

    // `/foo` (spec.rules[0].http.paths[1]) sorts before the `/` catch-all and takes `/foo/bar`.
    let e = explain("/foo/bar");
    assert_eq!(e["route"], "ing/default/web/0/1", "{e}");
    assert_eq!(e["action"], "route", "{e}");
    assert_eq!(
        e["destinations"][0]["host"], "foo.default.svc.cluster.local",
        "{e}"
    );
    assert_eq!(e["skipped"], json!([]), "{e}");
    assert_eq!(who(&sent(&gw, "/foo/bar", "ing-1")), "foo");
    assert_eq!(logged_route(&gw, "ing-1"), e["route"]);

    // Element-wise: `/foobar` is not under `/foo`, so the catch-all takes it, and says why.
    let e = explain("/foobar");
    assert_eq!(e["route"], "ing/default/web/0/0", "{e}");
    assert_eq!(
        e["skipped"],
        json!([{"route": "ing/default/web/0/1",
                "reason": "uri path prefix \"/foo\" does not match \"/foobar\""}]),
        "{e}"
    );
    assert_eq!(who(&sent(&gw, "/foobar", "ing-2")), "root");
    assert_eq!(logged_route(&gw, "ing-2"), e["route"]);
}

/// A GET for `shop.example.com` carrying `x-request-id: rid`.
fn sent(gw: &Gateway, path: &str, rid: &str) -> Response {
    request(
        gw.http,
        "GET",
        path,
        &[("Host", "shop.example.com"), ("x-request-id", rid)],
        b"",
    )
    .expect("request")
}

/// The `route_name` of the JSON access log line of request `rid`.
fn logged_route(gw: &Gateway, rid: &str) -> serde_json::Value {
    eventually(Duration::from_secs(10), || {
        gw.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["request_id"] == rid)
            .map(|l| l["route_name"].clone())
    })
    .unwrap_or_else(|| panic!("no access log line for {rid}\n{}", gw.logs()))
}
