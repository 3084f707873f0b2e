//! The TLS listener seen by standard tools: `curl --http2` negotiates h2, `httpsRedirect` answers
//! 301 to `https://`, and `testssl` finds only TLS 1.2 and 1.3 offered and no known vulnerability.
//! The certificate is made at test time with rcgen.

mod common;

use common::{request, Gateway, Opts, Response};
use std::process::Command;

const HOST: &str = "secure.example.com";

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required under CI (scripts/setup installs it)"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

fn apply(gw: &Gateway, yaml: &str) -> Response {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
    r
}

/// A gateway serving `HOST` on 443 from a Secret, and redirecting it to https on port 80.
fn start() -> Gateway {
    let cert = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).expect("certificate");
    let gw = Gateway::start(Opts::default());
    let y = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: secure-cert}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: {:?}\n  tls.key: {:?}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [{HOST}]\n    tls: {{httpsRedirect: true}}\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [{HOST}]\n    tls: {{mode: SIMPLE, credentialName: secure-cert}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: secure}}\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - directResponse: {{status: 200, body: {{string: secure}}}}\n",
        cert.cert.pem(),
        cert.key_pair.serialize_pem()
    );
    apply(&gw, &y);
    gw
}

#[test]
fn https_redirect_answers_301_with_the_https_location() {
    let gw = start();
    let r = request(gw.http, "GET", "/a/b?c=d", &[("Host", HOST)], b"").expect("request");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://secure.example.com/a/b?c=d")
    );
}

#[test]
fn curl_http2_negotiates_h2() {
    if !tool("curl") {
        return;
    }
    let gw = start();
    let port = gw.https.port();
    let out = Command::new("curl")
        .args([
            "--http2",
            "-sk",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            " %{http_version}",
        ])
        .arg("--resolve")
        .arg(format!("{HOST}:{port}:127.0.0.1"))
        .arg(format!("https://{HOST}:{port}/"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "secure 2");
}

#[test]
fn testssl_finds_only_tls12_and_tls13_and_no_vulnerability() {
    if !tool("testssl") {
        return;
    }
    let gw = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("testssl.json");
    let out = Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--protocols",
            "--vulnerable",
        ])
        .arg("--ip")
        .arg("127.0.0.1")
        .arg("--jsonfile")
        .arg(&json)
        .arg(format!("{HOST}:{}", gw.https.port()))
        .output()
        .expect("testssl");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no testssl report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).expect("testssl JSON");
    let finding = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or("")
            .to_string()
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(
            finding(old).contains("not offered"),
            "{old}: {}",
            finding(old)
        );
    }
    for current in ["TLS1_2", "TLS1_3"] {
        let f = finding(current);
        assert!(f.starts_with("offered"), "{current}: {f}");
    }
    let bad: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| {
            matches!(
                f["severity"].as_str(),
                Some("LOW" | "MEDIUM" | "HIGH" | "CRITICAL")
            )
        })
        .collect();
    assert!(bad.is_empty(), "testssl found: {bad:#?}");
}
