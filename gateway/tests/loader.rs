//! One loader behind every entry point: `POST /apply`, `--bootstrap` and `gateway validate` read
//! the same bundle the same way (kinds the gateway does not serve skipped with a warning, as
//! Istio's samples bundle them with Kubernetes objects), and give the same verdicts and messages.

mod common;

use common::{request, write_file, Gateway, Opts};
use std::process::Command;

/// What Istio's samples look like: Kubernetes objects and Istio kinds this gateway does not serve,
/// around the Gateway and VirtualService it does.
const BUNDLE: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-productpage
---
apiVersion: v1
kind: Service
metadata:
  name: productpage
  labels: {app: productpage}
spec:
  ports:
  - port: 9080
    name: http
  selector: {app: productpage}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: productpage-v1
spec:
  replicas: 1
  selector:
    matchLabels: {app: productpage}
  template:
    metadata:
      labels: {app: productpage}
    spec:
      containers:
      - name: productpage
        image: docker.io/istio/examples-bookinfo-productpage-v1:1.20.2
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  accessLogging:
  - providers:
    - name: envoy
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "bookinfo.example.com"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    directResponse:
      status: 200
      body:
        string: productpage
"#;

const SKIPPED: [&str; 4] = [
    "ServiceAccount bookinfo-productpage (v1)",
    "Service productpage (v1)",
    "Deployment productpage-v1 (apps/v1)",
    "Telemetry istio-system/mesh-default (telemetry.istio.io/v1)",
];

fn validate(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("validate")
        .arg(path)
        .output()
        .expect("run gateway validate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn productpage(gw: &Gateway) -> String {
    request(
        gw.http,
        "GET",
        "/productpage",
        &[("Host", "bookinfo.example.com")],
        b"",
    )
    .expect("request")
    .text()
}

#[test]
fn a_bundle_with_kubernetes_objects_applies_its_istio_resources_with_warnings() {
    let gw = Gateway::start(Opts::default());
    let r = gw.admin_call("POST", "/apply", "application/yaml", BUNDLE.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let items = r.json()["items"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    assert_eq!(kinds, ["Gateway", "VirtualService"]);
    let warnings = r.headers_named("warning").join("\n");
    for (i, s) in SKIPPED.iter().enumerate() {
        assert!(
            warnings.contains(&format!("items[{i}]: {s}")) && warnings.contains("skipped"),
            "no warning for {s}:\n{warnings}"
        );
    }
    assert_eq!(productpage(&gw), "productpage");
}

#[test]
fn bootstrap_and_validate_read_the_same_bundle_the_same_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A nested folder: every entry point walks folders the same way.
    std::fs::create_dir_all(dir.path().join("bookinfo")).expect("mkdir");
    write_file(&dir.path().join("bookinfo"), "bundle.yaml", BUNDLE);
    let (code, err) = validate(dir.path());
    assert_eq!(code, Some(0), "{err}");
    for s in SKIPPED {
        assert!(err.contains(s), "validate does not warn about {s}:\n{err}");
    }
    let gw = Gateway::start(Opts::default().bootstrap(dir.path()));
    assert_eq!(productpage(&gw), "productpage");
    let logs = gw.logs();
    for s in SKIPPED {
        assert!(
            logs.contains(s),
            "bootstrap does not warn about {s}:\n{logs}"
        );
    }
}

#[test]
fn validate_gives_the_verdicts_and_messages_of_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews.example.com]\n  http:\n  - route:\n    - destination: {host: a.example.com}\n      weight: -10\n    timeout: 1x\n---\napiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: typo}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: Bad_Name}\nspec: {host: a.example.com}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews.example.com]\n  http:\n  - route:\n    - destination: {host: b.example.com}\n";
    let path = write_file(dir.path(), "bad.yaml", bad);
    let (code, err) = validate(&path);
    assert_eq!(code, Some(1), "{err}");

    let gw = Gateway::start(Opts::default());
    let r = gw.admin_call("POST", "/apply", "application/yaml", bad.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    let causes = r.json()["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(causes.len() >= 4, "{}", r.text());
    for c in &causes {
        let field = c["field"].as_str().unwrap_or_default();
        let message = c["message"].as_str().unwrap_or_default();
        // The API names `items[i].spec…`; the file names `document i+1` and `spec…`.
        let (item, rest) = field
            .strip_prefix("items[")
            .and_then(|f| f.split_once(']'))
            .expect("a batch cause names its item");
        let n: usize = item.parse::<usize>().expect("item index") + 1;
        let rest = rest.trim_start_matches('.');
        // A duplicate names the first definition the way its medium names documents.
        let message = message.split_once(": items[").map_or(message, |(m, _)| m);
        let line = err
            .lines()
            .find(|l| l.contains(&format!("document {n}")) && l.contains(message))
            .unwrap_or_else(|| panic!("validate lacks {field}: {message}:\n{err}"));
        assert!(line.contains(rest), "{line} does not name {rest}");
    }
    assert!(
        err.lines().any(|l| l.contains("document 4")
            && l.contains("Duplicate value")
            && l.contains("document 1")),
        "{err}"
    );
    assert!(err.contains("VirtualServce"), "{err}");
}

#[test]
fn yaml_is_read_as_kubectl_reads_it() {
    let gw = Gateway::start(Opts::default());
    // An IPv6 address ending in `::` in a flow list is a string to kubectl (Go's yaml.v2).
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: v6}\nspec:\n  hosts: [v6.example.com]\n  addresses: [240.0.0.1, 2001:db8::]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n";
    let r = gw.admin_call("POST", "/apply", "application/yaml", se.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["items"][0]["spec"]["addresses"],
        serde_json::json!(["240.0.0.1", "2001:db8::"])
    );
    // Syntax errors name the line and column.
    let bad = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: x\n bad: indent\n";
    let r = gw.admin_call("POST", "/apply", "application/yaml", bad.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("line 5 column 2"), "{msg}");
}
