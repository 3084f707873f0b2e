//! The real kubectl against the real gateway binary: discovery, client-side and server-side
//! apply, re-apply, get (all namespaces, wide, yaml, json, the `istio-io` category), describe,
//! diff, delete -f, edit with a scripted editor, get -w seeing another client's change, create
//! secret tls, explain, warnings and 422 field paths on stderr; and traffic following a change
//! made through kubectl. kubectl must be on PATH: without it these tests fail, loudly.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn quiet() -> Opts {
    Opts::default()
        .arg("--threads")
        .arg("1")
        .arg("--access-log")
        .arg("off")
}

/// kubectl pointed at one gateway through a kubeconfig in a temporary home (its discovery cache
/// lives there too, so no test sees another's).
struct Kubectl {
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(server: &str, token: Option<&str>, insecure: bool) -> Kubectl {
        let home = tempfile::tempdir().expect("tempdir");
        let mut user = String::from("- name: admin\n  user:");
        match token {
            Some(t) => user.push_str(&format!("\n    token: {t}\n")),
            None => user.push_str(" {}\n"),
        }
        let cluster_tls = if insecure {
            "\n    insecure-skip-tls-verify: true"
        } else {
            ""
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gateway\n  cluster:\n    server: {server}{cluster_tls}\nusers:\n{user}contexts:\n- name: gateway\n  context:\n    cluster: gateway\n    user: admin\ncurrent-context: gateway\n"
        );
        let kubeconfig = write_file(home.path(), "kubeconfig", &text);
        Kubectl { home, kubeconfig }
    }

    fn for_gateway(g: &Gateway) -> Kubectl {
        Kubectl::new(&format!("http://{}", g.admin), None, false)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl());
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(Stdio::null());
        c
    }

    fn output(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap_or_else(|e| {
            panic!("cannot run kubectl (it must be on PATH for these tests): {e}")
        });
        if let Some(input) = stdin {
            use std::io::Write;
            let mut s = child.stdin.take().expect("stdin");
            s.write_all(input).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.output(args, None);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs kubectl and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.output(args, None);
        assert!(
            !o.status.success(),
            "kubectl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn dir(&self) -> &Path {
        self.home.path()
    }
}

fn vs_yaml(name: &str, host: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  labels:\n    app: web\nspec:\n  hosts:\n  - {host}\n  http:\n  - directResponse:\n      status: 200\n      body:\n        string: {body}\n"
    )
}

/// What the data plane answers for `host` (a direct response's body).
fn body_for(g: &Gateway, host: &str) -> String {
    request(g.http, "GET", "/", &[("Host", host)], b"")
        .map(|r| r.text())
        .unwrap_or_default()
}

fn serves(g: &Gateway, host: &str, body: &str) -> bool {
    eventually(Duration::from_secs(5), || {
        (body_for(g, host) == body).then_some(())
    })
    .is_some()
}

/// The kubectl under test: `GATEWAY_TEST_KUBECTL`, else the one on PATH (scripts/test runs these
/// tests again with the oldest supported minor this way, without changing PATH, which would make
/// cargo rebuild the workspace).
fn kubectl() -> std::ffi::OsString {
    std::env::var_os("GATEWAY_TEST_KUBECTL").unwrap_or_else(|| "kubectl".into())
}

#[test]
fn kubectl_is_on_path() {
    let o = Command::new(kubectl())
        .args(["version", "--client", "-o", "json"])
        .output()
        .unwrap_or_else(|e| panic!("kubectl must be on PATH for the kubectl tests: {e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["clientVersion"]["major"], "1");
}

#[test]
fn apply_get_describe_diff_delete_and_traffic_follows() {
    let g = Gateway::start(quiet());
    let k = Kubectl::for_gateway(&g);
    let v1 = write_file(k.dir(), "vs.yaml", &vs_yaml("web", "web.example.com", "v1"));
    let v1s = v1.to_str().expect("path");

    // Validation stays on: kubectl reads /openapi/v3 and validates on the server.
    let out = k.ok(&["apply", "-f", v1s]);
    assert_eq!(out.trim(), "virtualservice.networking.istio.io/web created");
    assert!(serves(&g, "web.example.com", "v1"));
    let out = k.ok(&["apply", "-f", v1s]);
    assert_eq!(
        out.trim(),
        "virtualservice.networking.istio.io/web unchanged"
    );

    // get: Istio's columns, short names, categories, all namespaces, wide, yaml, json.
    let out = k.ok(&["get", "vs"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "GATEWAYS", "HOSTS", "AGE"]);
    let row = lines.next().expect("row");
    assert!(
        row.starts_with("web ") && row.contains(r#"["web.example.com"]"#),
        "{out}"
    );
    let out = k.ok(&["get", "virtualservices", "-A", "-o", "wide"]);
    assert!(out.starts_with("NAMESPACE"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("default ") && l.contains(" web ")),
        "{out}"
    );
    let out = k.ok(&["get", "istio-io"]);
    assert!(
        out.contains("virtualservice.networking.istio.io/web"),
        "{out}"
    );
    let yaml = k.ok(&["get", "vs", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{yaml}"
    );
    assert!(yaml.contains("resourceVersion:"), "{yaml}");
    let json: Value =
        serde_json::from_str(&k.ok(&["get", "vs", "web", "-o", "json"])).expect("json");
    assert_eq!(json["spec"]["hosts"][0], "web.example.com");
    let out = k.ok(&["get", "vs", "-l", "app=web", "-o", "name"]);
    assert_eq!(out.trim(), "virtualservice.networking.istio.io/web");
    let out = k.ok(&["get", "vs", "-l", "app=other", "-o", "name"]);
    assert_eq!(out.trim(), "");
    let out = k.ok(&[
        "get",
        "vs",
        "--field-selector",
        "metadata.name=web",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "virtualservice.networking.istio.io/web");
    let out = k.ok(&["describe", "vs", "web"]);
    assert!(
        out.contains("Name:         web") && out.contains("web.example.com"),
        "{out}"
    );

    // diff: 0 without a change, 1 with one.
    let o = k.output(&["diff", "-f", v1s], None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v2 = write_file(
        k.dir(),
        "vs2.yaml",
        &vs_yaml("web", "web.example.com", "v2"),
    );
    let v2s = v2.to_str().expect("path");
    let o = k.output(&["diff", "-f", v2s], None);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let diff = String::from_utf8_lossy(&o.stdout);
    assert!(
        diff.contains("-        string: v1") && diff.contains("+        string: v2"),
        "{diff}"
    );
    // The diff was a dry run.
    assert!(serves(&g, "web.example.com", "v1"));

    let out = k.ok(&["apply", "-f", v2s]);
    assert_eq!(
        out.trim(),
        "virtualservice.networking.istio.io/web configured"
    );
    assert!(serves(&g, "web.example.com", "v2"));

    let out = k.ok(&["delete", "-f", v2s]);
    assert_eq!(
        out.trim(),
        "virtualservice.networking.istio.io \"web\" deleted"
    );
    let err = k.fails(&["get", "vs", "web"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    assert!(eventually(Duration::from_secs(5), || {
        (body_for(&g, "web.example.com") != "v2").then_some(())
    })
    .is_some());
}

#[test]
fn server_side_apply_owns_fields_and_reports_conflicts() {
    let g = Gateway::start(quiet());
    let k = Kubectl::for_gateway(&g);
    let v1 = write_file(
        k.dir(),
        "vs.yaml",
        &vs_yaml("ssa", "ssa.example.com", "one"),
    );
    let v1s = v1.to_str().expect("path");
    let out = k.ok(&["apply", "--server-side", "-f", v1s]);
    assert_eq!(
        out.trim(),
        "virtualservice.networking.istio.io/ssa serverside-applied"
    );
    assert!(serves(&g, "ssa.example.com", "one"));
    let json: Value =
        serde_json::from_str(&k.ok(&["get", "vs", "ssa", "-o", "json", "--show-managed-fields"]))
            .expect("json");
    let mf = json["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields");
    assert!(
        mf.iter()
            .any(|m| m["manager"] == "kubectl" && m["operation"] == "Apply"),
        "{mf:?}"
    );

    // Another manager changes the body: kubectl's own apply now conflicts on that field.
    let other = write_file(
        k.dir(),
        "other.yaml",
        &vs_yaml("ssa", "ssa.example.com", "two"),
    );
    let others = other.to_str().expect("path");
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager",
        "ops",
        "--force-conflicts",
        "-f",
        others,
    ]);
    assert!(serves(&g, "ssa.example.com", "two"));
    let v3 = write_file(
        k.dir(),
        "vs3.yaml",
        &vs_yaml("ssa", "ssa.example.com", "three"),
    );
    let v3s = v3.to_str().expect("path");
    let err = k.fails(&["apply", "--server-side", "-f", v3s]);
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"ops\""),
        "{err}"
    );
    assert!(err.contains(".spec.http"), "{err}");
    assert!(serves(&g, "ssa.example.com", "two"));
    let out = k.ok(&["apply", "--server-side", "--force-conflicts", "-f", v3s]);
    assert_eq!(
        out.trim(),
        "virtualservice.networking.istio.io/ssa serverside-applied"
    );
    assert!(serves(&g, "ssa.example.com", "three"));
}

#[test]
fn edit_with_a_scripted_editor_round_trips() {
    let g = Gateway::start(quiet());
    let k = Kubectl::for_gateway(&g);
    let f = write_file(
        k.dir(),
        "vs.yaml",
        &vs_yaml("ed", "ed.example.com", "before"),
    );
    k.ok(&["apply", "-f", f.to_str().expect("path")]);
    let editor = write_file(
        k.dir(),
        "editor.sh",
        "#!/bin/sh\nsed -i 's/string: before/string: after/' \"$1\"\n",
    );
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    let mut c = k.command(&["edit", "vs", "ed"]);
    c.env("EDITOR", &editor).env("KUBE_EDITOR", &editor);
    let o = c.output().expect("kubectl edit");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "virtualservice.networking.istio.io/ed edited"
    );
    assert!(serves(&g, "ed.example.com", "after"));
    let json: Value =
        serde_json::from_str(&k.ok(&["get", "vs", "ed", "-o", "json", "--show-managed-fields"]))
            .expect("json");
    let mf = json["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields");
    assert!(mf.iter().any(|m| m["manager"] == "kubectl-edit"), "{mf:?}");
}

/// `kubectl get vs --watch …` on `k`, its stdout lines on a channel; killed on drop.
struct Watching {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watching {
    fn start(k: &Kubectl, extra: &[&str]) -> Watching {
        let mut args = vec!["get", "vs", "--watch"];
        args.extend_from_slice(extra);
        let mut c = k.command(&args);
        c.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = c.spawn().expect("kubectl must be on PATH");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watching { child, lines }
    }

    /// The next `n` lines, within 10 s.
    fn next(&self, n: usize) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < n && std::time::Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                seen.push(l);
            }
        }
        seen
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn get_watch_sees_a_change_made_by_another_client() {
    let g = Gateway::start(quiet());
    let k = Kubectl::for_gateway(&g);
    let r = g.post(VS_PATH, &direct_vs("seed", 200));
    assert_eq!(r.status, 201, "{}", r.text());
    let w = Watching::start(&k, &["--output-watch-events"]);
    // The header (Istio's columns) and the listed object: kubectl is watching from here on.
    let seen = w.next(2);
    let words: Vec<Vec<&str>> = seen
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(words.len(), 2, "{seen:?}");
    assert_eq!(
        words[0],
        ["EVENT", "NAME", "GATEWAYS", "HOSTS", "AGE"],
        "{seen:?}"
    );
    assert_eq!(&words[1][..2], ["ADDED", "seed"], "{seen:?}");

    let r = g.post(VS_PATH, &direct_vs("watched", 204));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = g.delete(&format!("{VS_PATH}/watched"));
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = w.next(2);
    let words: Vec<Vec<&str>> = seen
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(words.len(), 2, "{seen:?}");
    assert_eq!(&words[0][..2], ["ADDED", "watched"], "{seen:?}");
    assert_eq!(&words[1][..2], ["DELETED", "watched"], "{seen:?}");
    assert!(seen[0].contains(r#"["watched.example.com"]"#), "{seen:?}");
}

#[test]
fn create_secret_tls_straight_and_through_apply() {
    let g = Gateway::start(quiet());
    let k = Kubectl::for_gateway(&g);
    let ca = common::tls::Ca::new("kubectl test CA");
    let leaf = ca.server(&["s.example.com"]);
    let cert = write_file(k.dir(), "tls.crt", &leaf.pem);
    let key = write_file(k.dir(), "tls.key", &leaf.key_pem);
    let (cert, key) = (cert.to_str().expect("path"), key.to_str().expect("path"));
    let out = k.ok(&[
        "create", "secret", "tls", "straight", "--cert", cert, "--key", key,
    ]);
    assert_eq!(out.trim(), "secret/straight created");
    let generated = k.ok(&[
        "create",
        "secret",
        "tls",
        "piped",
        "--cert",
        cert,
        "--key",
        key,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let o = k.output(&["apply", "-f", "-"], Some(generated.as_bytes()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "secret/piped created"
    );
    let out = k.ok(&["get", "secrets"]);
    assert!(
        out.contains("straight") && out.contains("piped") && out.contains("kubernetes.io/tls"),
        "{out}"
    );
    for name in ["straight", "piped"] {
        let yaml = k.ok(&["get", "secret", name, "-o", "yaml"]);
        assert!(yaml.contains("tls.crt"), "{yaml}");
        assert!(
            !yaml.contains("tls.key") && !yaml.contains("PRIVATE KEY"),
            "{yaml}"
        );
    }
    // Traffic follows: an HTTPS server whose credentialName is the Secret kubectl made serves it.
    let edge = write_file(
        k.dir(),
        "edge.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: edge\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [s.example.com]\n    tls: {mode: SIMPLE, credentialName: straight}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: s\nspec:\n  hosts: [s.example.com]\n  gateways: [edge]\n  http:\n  - directResponse: {status: 200, body: {string: tls-ok}}\n",
    );
    k.ok(&["apply", "-f", edge.to_str().expect("path")]);
    let rt = common::tls::rt();
    let client = common::tls::Client::sni("s.example.com");
    let served = eventually(Duration::from_secs(5), || {
        rt.block_on(async {
            let shook = common::tls::handshake(g.https, &client).await.ok()?;
            let r = common::tls::get(g.https, &client, "s.example.com", "/")
                .await
                .ok()?;
            (r.text() == "tls-ok").then_some(shook.leaf)
        })
    });
    assert_eq!(
        served.as_deref(),
        Some(leaf.der.as_ref()),
        "the Secret's certificate is served"
    );

    // Opaque, as `create secret generic` makes it, with Istio's key names.
    let crt = format!("--from-file=tls.crt={cert}");
    let k2 = format!("--from-file=tls.key={key}");
    let out = k.ok(&["create", "secret", "generic", "opaque", &crt, &k2]);
    assert_eq!(out.trim(), "secret/opaque created");
    let out = k.ok(&["get", "secret", "opaque"]);
    assert!(out.contains("Opaque"), "{out}");
}

#[test]
fn explain_prints_istios_field_docs() {
    let g = Gateway::start(quiet());
    let k = Kubectl::for_gateway(&g);
    let out = k.ok(&["explain", "vs.spec.http"]);
    assert!(out.contains("KIND:       VirtualService"), "{out}");
    assert!(
        out.contains("An ordered list of route rules for HTTP traffic."),
        "{out}"
    );
    let out = k.ok(&["explain", "destinationrules.spec.trafficPolicy"]);
    assert!(out.contains("loadBalancer"), "{out}");
    let out = k.ok(&["explain", "ingress.spec.rules.http.paths"]);
    assert!(out.contains("pathType"), "{out}");
    let out = k.ok(&["api-resources", "--api-group", "networking.istio.io"]);
    for short in [" gw ", " vs ", " dr ", " se ", " we "] {
        assert!(out.contains(short), "{short}: {out}");
    }
}

#[test]
fn warnings_and_invalid_fields_reach_kubectl_in_its_words() {
    let g = Gateway::start(quiet());
    let k = Kubectl::for_gateway(&g);
    // A subset no DestinationRule defines: accepted, with a warning on stderr.
    let warned = write_file(
        k.dir(),
        "warn.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: warned\nspec:\n  hosts: [w.example.com]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v9}\n",
    );
    let o = k.output(&["apply", "-f", warned.to_str().expect("path")], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Warning: ") && err.contains("v9"), "{err}");

    // A negative weight: 422, the field path as kubectl prints it.
    let bad = write_file(
        k.dir(),
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: bad\nspec:\n  hosts: [b.example.com]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: -10\n",
    );
    let err = k.fails(&["apply", "-f", bad.to_str().expect("path")]);
    assert!(
        err.contains("The VirtualService \"bad\" is invalid"),
        "{err}"
    );
    assert!(err.contains("spec.http[0].route[0].weight"), "{err}");
    let err = k.fails(&["get", "vs", "bad"]);
    assert!(err.contains("not found"), "{err}");

    // An unknown field: refused by default, warned about with --validate=warn, and dropped.
    let unknown = write_file(
        k.dir(),
        "unknown.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: unknown\nspec:\n  hosts: [u.example.com]\n  colour: blue\n  http:\n  - directResponse: {status: 200}\n",
    );
    let us = unknown.to_str().expect("path");
    let err = k.fails(&["apply", "-f", us]);
    assert!(err.contains("unknown field \"spec.colour\""), "{err}");
    let o = k.output(&["apply", "--validate=warn", "-f", us], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Warning: unknown field \"spec.colour\""),
        "{err}"
    );
}

/// Reads `n` watch events (JSON lines) from a raw `?watch=true` request, within 10 s.
fn watch_events(g: &Gateway, path_and_query: &str, n: usize) -> Vec<Value> {
    use std::io::{Read, Write};
    let mut s = connect(g.admin).expect("connect");
    s.write_all(&request_head(g.admin, "GET", path_and_query, &[], None))
        .expect("send");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let events = |buf: &[u8]| -> Vec<Value> {
        String::from_utf8_lossy(buf)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .filter(|v| v.get("type").is_some())
            .collect()
    };
    while events(&buf).len() < n && std::time::Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(_) => {}
        }
    }
    events(&buf)
}

const VS_PATH: &str = "/apis/networking.istio.io/v1/namespaces/default/virtualservices";

fn direct_vs(name: &str, status: u16) -> Value {
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": [format!("{name}.example.com")], "http": [{"directResponse": {"status": status}}]}
    })
}

#[test]
fn watches_resume_from_a_resource_version_send_bookmarks_and_expire() {
    let mut g = Gateway::start(quiet());
    let r = g.post(VS_PATH, &direct_vs("a", 200));
    let rv_a = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    g.post(VS_PATH, &direct_vs("b", 200));
    g.put(&format!("{VS_PATH}/a"), &direct_vs("a", 201));
    g.delete(&format!("{VS_PATH}/b"));

    // Resuming after a's creation: b added, a modified, b deleted, in order.
    let ev = watch_events(
        &g,
        &format!("{VS_PATH}?watch=true&resourceVersion={rv_a}"),
        3,
    );
    let seen: Vec<(String, String)> = ev
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let want = [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")];
    assert_eq!(
        seen,
        want.map(|(t, n)| (t.to_string(), n.to_string())),
        "{ev:?}"
    );
    // A selector narrows the stream.
    let ev = watch_events(
        &g,
        &format!("{VS_PATH}?watch=true&resourceVersion={rv_a}&fieldSelector=metadata.name%3Da"),
        1,
    );
    assert_eq!(ev[0]["type"], "MODIFIED", "{ev:?}");
    // So does the path of one object.
    let ev = watch_events(
        &g,
        &format!("{VS_PATH}/b?watch=true&resourceVersion={rv_a}"),
        2,
    );
    let types: Vec<&str> = ev.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ADDED", "DELETED"], "{ev:?}");

    // Initial events, then the bookmark that ends them, when asked.
    let ev = watch_events(
        &g,
        &format!("{VS_PATH}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"),
        2,
    );
    assert_eq!(ev[0]["type"], "ADDED");
    assert_eq!(ev[0]["object"]["metadata"]["name"], "a");
    assert_eq!(ev[1]["type"], "BOOKMARK", "{ev:?}");
    assert_eq!(
        ev[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // timeoutSeconds ends the stream; an absurd one is cut, never a crash.
    let started = std::time::Instant::now();
    let r = request(
        g.admin,
        "GET",
        &format!("{VS_PATH}?watch=true&timeoutSeconds=1"),
        &[],
        b"",
    )
    .expect("a watch that ends");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"ADDED\""), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(10));
    let ev = watch_events(
        &g,
        &format!("{VS_PATH}?watch=true&timeoutSeconds=18446744073709551615"),
        1,
    );
    assert_eq!(ev[0]["type"], "ADDED", "{ev:?}");
    assert_eq!(g.get("/healthz").status, 200);

    // After a restart the history before it is gone: 410 Expired, as an ERROR event.
    g.restart();
    let ev = watch_events(
        &g,
        &format!("{VS_PATH}?watch=true&resourceVersion={rv_a}"),
        1,
    );
    assert_eq!(ev[0]["type"], "ERROR", "{ev:?}");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["reason"], "Expired");
}

#[test]
fn get_watch_on_one_replica_sees_a_write_on_another_through_etcd() {
    let Some(etcd) = common::etcd::Etcd::start() else {
        return;
    };
    let replica = || Gateway::start(quiet().arg("--store").arg(etcd.url()));
    let (a, b) = (replica(), replica());
    let r = a.post(VS_PATH, &direct_vs("seed", 200));
    assert_eq!(r.status, 201, "{}", r.text());
    // B has the seed (through etcd), so kubectl lists it: from then on it is watching.
    let synced = eventually(Duration::from_secs(10), || {
        (b.get(&format!("{VS_PATH}/seed")).status == 200).then_some(())
    });
    assert!(synced.is_some(), "B never saw what A wrote");
    let k = Kubectl::for_gateway(&b);
    let w = Watching::start(&k, &["-o", "name"]);
    assert_eq!(w.next(1), ["virtualservice.networking.istio.io/seed"]);
    let r = a.post(VS_PATH, &direct_vs("shared", 200));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(w.next(1), ["virtualservice.networking.istio.io/shared"]);
}

#[test]
fn a_token_reaches_the_gateway_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = common::tls::Ca::new("admin CA");
    // An IP address SAN: the test does not depend on how the machine resolves `localhost`.
    let leaf = ca.server(&["127.0.0.1", "localhost"]);
    let ca_file = write_file(dir.path(), "ca.crt", &ca.pem());
    let cert = write_file(dir.path(), "admin.crt", &leaf.pem);
    let key = write_file(dir.path(), "admin.key", &leaf.key_pem);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    /// Kills the gateway when the test ends, however it ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _gateway = Kill(
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--http")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--https")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--access-log", "off", "--threads", "1"])
            .arg("--admin-tls-cert")
            .arg(&cert)
            .arg("--admin-tls-key")
            .arg(&key)
            .env("GATEWAY_ADMIN_TOKEN", "t0ken")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("gateway.log")).expect("log"),
            ))
            .spawn()
            .expect("spawn the gateway"),
    );

    let server = format!("https://{admin}");
    let good = Kubectl::new(&server, Some("t0ken"), false);
    // The CA of the admin certificate, as a kubeconfig names it.
    let text = std::fs::read_to_string(&good.kubeconfig)
        .expect("kubeconfig")
        .replace(
            "    server:",
            &format!(
                "    certificate-authority: {}\n    server:",
                ca_file.display()
            ),
        );
    std::fs::write(&good.kubeconfig, text).expect("kubeconfig");
    let ready = eventually(Duration::from_secs(30), || {
        good.output(&["get", "--raw", "/readyz"], None)
            .status
            .success()
            .then_some(())
    });
    assert!(ready.is_some(), "the gateway never answered over TLS");
    let f = write_file(
        dir.path(),
        "vs.yaml",
        &vs_yaml("tls", "tls.example.com", "ok"),
    );
    let out = good.ok(&["apply", "-f", f.to_str().expect("path")]);
    assert_eq!(out.trim(), "virtualservice.networking.istio.io/tls created");
    let out = good.ok(&["get", "vs", "-o", "name"]);
    assert_eq!(out.trim(), "virtualservice.networking.istio.io/tls");
    // The same through --token on the command line, and a wrong token is refused.
    let no_token = Kubectl::new(&server, None, true);
    let out = no_token.ok(&["--token", "t0ken", "get", "vs", "-o", "name"]);
    assert_eq!(out.trim(), "virtualservice.networking.istio.io/tls");
    let err = no_token.fails(&["--token", "wrong", "get", "vs"]);
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
    assert!(err.contains("Unauthorized"), "{err}\n{log}");
}

#[test]
fn create_ingress_in_protobuf_stores_what_its_json_says() {
    let g = Gateway::start(quiet());
    let k = Kubectl::for_gateway(&g);
    let args = [
        "create",
        "ingress",
        "web",
        "--class=istio",
        "--rule=a.example.com/api*=svc:80,tls=web-tls",
        "--rule=b.example.com/=other:http",
        "--default-backend=def:8080",
        "--annotation=team=edge",
    ];
    // kubectl sends built-in kinds as protobuf; its client-side dry run prints the same object.
    let mut dry = args.to_vec();
    dry.extend(["--dry-run=client", "-o", "json"]);
    let want: Value = serde_json::from_str(&k.ok(&dry)).expect("json");
    let out = k.ok(&args);
    assert_eq!(out.trim(), "ingress.networking.k8s.io/web created");
    let got: Value =
        serde_json::from_str(&k.ok(&["get", "ingress", "web", "-o", "json"])).expect("json");
    assert_eq!(got["spec"], want["spec"]);
    assert_eq!(got["metadata"]["annotations"]["team"], "edge");
    let out = k.ok(&["get", "ingress"]);
    assert!(
        out.contains("a.example.com,b.example.com") && out.contains("80, 443"),
        "{out}"
    );
}
