//! Property-based requests against the running admin API from its own OpenAPI document
//! (`GET /openapi.json`): schemathesis (PyPI, in `target/test-venv` from `scripts/setup test`)
//! generates requests from every operation's schema, valid and invalid, and checks each answer:
//! no 5xx, the status, media type and body as documented, invalid data refused, 405 with
//! `Allow`, the token enforced. The served document must be the checked-in `admin/openapi.json`.
//! Settings and hooks are in `tests/support/schemathesis.{toml,_hooks.py}`.

mod common;

use common::tls::{secret_yaml, Ca};
use common::{write_file, Gateway, Opts};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "schemathesis-token";

fn schemathesis() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/schemathesis");
    assert!(
        p.exists(),
        "no schemathesis at {}: run `scripts/setup test` (it makes target/test-venv)",
        p.display()
    );
    p
}

/// One object of every served kind, named `reviews` (the name the run's reads and patches use),
/// so that reads and patches reach real objects, not only 404s.
fn seed(dir: &Path) -> PathBuf {
    let ca = Ca::new("schemathesis CA");
    let leaf = ca.server(&["reviews.example.com"]);
    let mut y = secret_yaml("reviews", &leaf, None).replace(
        "metadata: {name: reviews}",
        "metadata: {name: reviews, namespace: default}",
    );
    y.push_str(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: reviews, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["reviews.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: ["reviews.example.com"]
  gateways: [reviews]
  http:
  - match: [{uri: {prefix: /v1}}]
    route:
    - {destination: {host: reviews.default.svc.cluster.local, subset: v1}, weight: 80}
    - {destination: {host: reviews.default.svc.cluster.local, subset: v2}, weight: 20}
    timeout: 2s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews, namespace: default}
spec:
  address: 127.0.0.1
  labels: {app: reviews, version: v1}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: reviews, namespace: default}
spec:
  jwtRules:
  - issuer: https://issuer.example.com
    jwks: '{"keys":[]}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: reviews}
spec: {controller: istio.io/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: reviews, namespace: default}
spec:
  ingressClassName: reviews
  rules:
  - host: ingress.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: reviews, port: {number: 80}}}}
"#,
    );
    write_file(dir, "seed.yaml", &y)
}

#[test]
fn schemathesis_finds_no_failure_in_the_admin_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = Gateway::start(
        Opts::default()
            .token(TOKEN)
            .bootstrap(seed(dir.path()))
            .arg("--access-log")
            .arg("off"),
    );
    let served = g.get("/openapi.json");
    assert_eq!(served.status, 200);
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../admin/openapi.json"),
        )
        .expect("admin/openapi.json"),
    )
    .expect("admin/openapi.json is JSON");
    assert!(
        served.json() == checked_in,
        "the served document differs from admin/openapi.json"
    );

    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let base = format!("http://{}", g.admin);
    let out = Command::new(schemathesis())
        .current_dir(dir.path())
        .env("PYTHONPATH", &support)
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(support.join("schemathesis.toml"))
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "10", "--seed", "1", "--workers", "2"])
        .args(["--request-timeout", "10", "--wait-for-schema", "10"])
        // The v1beta1 and v1alpha3 paths are aliases of v1, served by the same code: one version
        // of each kind keeps the run within minutes.
        .args(["--exclude-path-regex", "/(v1alpha3|v1beta1)(/|$)"])
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("Tested:"),
        "schemathesis ran no operation:\n{stdout}"
    );

    // The run left the gateway serving, its seed in place.
    assert_eq!(g.get("/readyz").status, 200);
    let mut g = g;
    std::thread::sleep(Duration::from_millis(100));
    let logs = g.logs();
    assert!(!logs.contains("panicked"), "the gateway panicked:\n{logs}");
    g.stop();
}
