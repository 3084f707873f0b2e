//! End-to-end gRPC through the real binary, with a real gRPC client and server (Python grpcio, see
//! `tests/support/grpc_peer.py`): unary, server- and client-streaming calls, an error status with
//! its message and trailing metadata, answers the gateway makes (no route, injected faults,
//! timeouts) as gRPC statuses, `grpc-timeout` against the route timeout, upstream HTTP/2 in plain
//! text (h2c) and over TLS, downstream h2c and h2 over TLS, gRPC-Web (binary and text) on a
//! GRPC-WEB server, and mirrors to a gRPC upstream.
//!
//! grpcio comes from `scripts/setup test`, in a virtual environment under `target/test-venv`;
//! `GATEWAY_TEST_PYTHON` names another python3 that has it. Without it every test fails.

mod common;
mod upstream;

use common::tls::Ca;
use common::{eventually, Gateway, Opts, Response};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn python() -> PathBuf {
    let p = std::env::var_os("GATEWAY_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python3")
        });
    let ok = Command::new(&p)
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no python3 with grpcio at {}: run `scripts/setup test` (it makes target/test-venv) or set GATEWAY_TEST_PYTHON",
        p.display()
    );
    p
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/grpc_peer.py")
}

/// A running grpcio server and the calls it logged.
struct GrpcServer {
    child: Child,
    port: u16,
    calls: Arc<Mutex<Vec<Value>>>,
}

impl GrpcServer {
    fn start(name: &str, tls: Option<(&Path, &Path)>) -> GrpcServer {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script()).args(["server", name]);
        if let Some((cert, key)) = tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gRPC server");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("the server's port");
        let port = first
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("gRPC server said {first:?}"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            }
        });
        GrpcServer { child, port, calls }
    }

    fn calls(&self) -> Vec<Value> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The calls logged, once there are at least `n` (the log is read on a thread of its own, so
    /// a call's line may come a moment after its answer).
    fn wait_calls(&self, n: usize) -> Vec<Value> {
        eventually(Duration::from_secs(10), || {
            let c = self.calls();
            (c.len() >= n).then_some(c)
        })
        .unwrap_or_else(|| self.calls())
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call by the grpcio client through `addr` (h2c, or TLS trusting `ca`), as its JSON report.
fn call(
    addr: SocketAddr,
    authority: &str,
    method: &str,
    messages: &[&str],
    extra: &[&str],
) -> Value {
    let out = Command::new(python())
        .arg(peer_script())
        .args(["client", &addr.to_string(), authority, method])
        .args(extra)
        .arg("--")
        .args(messages)
        .output()
        .expect("run the gRPC client");
    assert!(
        out.status.success(),
        "gRPC client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "gRPC client printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn apply(gw: &Gateway, yaml: &str) {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
}

/// A STATIC ServiceEntry `host` with one port 9000 of `protocol` on `127.0.0.1:port`.
fn service(host: &str, protocol: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 9000, name: api, protocol: {protocol}}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{api: {port}}}}}]\n---\n",
        name = host.replace('.', "-")
    )
}

/// One gRPC message frame (uncompressed).
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The frames of a gRPC(-Web) body: `(flag, payload)`.
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let end = (5 + len).min(body.len());
        out.push((body[0], body[5..end].to_vec()));
        body = &body[end..];
    }
    out
}

/// A gRPC(-Web) call by hand over HTTP/1.1: one message, the content type and headers given.
fn http1_call(
    gw: &Gateway,
    host: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    message: &[u8],
) -> Response {
    let mut h = vec![("Host", host), ("content-type", content_type)];
    h.extend_from_slice(headers);
    common::request(gw.http, "POST", path, &h, &frame(0, message)).expect("request")
}

fn metrics(gw: &Gateway) -> String {
    gw.get("/metrics").text()
}

/// The value of the series whose line has every one of `labels`, summed.
fn series(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn grpc_passes_through_h2c_and_tls_upstreams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("grpc upstream ca");
    let leaf = ca.server(&["grpc.internal"]);
    let cert = common::write_file(dir.path(), "up.pem", &leaf.pem);
    let key = common::write_file(dir.path(), "up-key.pem", &leaf.key_pem);
    let ca_path = common::write_file(dir.path(), "ca.pem", &ca.pem());
    let plain = GrpcServer::start("plain", None);
    let secure = GrpcServer::start("secure", Some((&cert, &key)));
    let gw = Gateway::start(Opts::default());
    let mut y = service("plain.svc", "GRPC", plain.port);
    y.push_str(&service("secure.svc", "GRPC", secure.port));
    y.push_str(&format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure}}\nspec:\n  host: secure.svc\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {}, sni: grpc.internal}}\n---\n",
        ca_path.display()
    ));
    for (name, dest) in [("plain", "plain.svc"), ("secure", "secure.svc")] {
        y.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.example.com]\n  http:\n  - match: [{{headers: {{x-fault: {{exact: abort}}}}}}]\n    fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}}}\n    route: [{{destination: {{host: {dest}, port: {{number: 9000}}}}}}]\n  - match: [{{headers: {{x-fault: {{exact: http}}}}}}]\n    fault: {{abort: {{httpStatus: 403, percentage: {{value: 100}}}}}}\n    route: [{{destination: {{host: {dest}, port: {{number: 9000}}}}}}]\n  - route: [{{destination: {{host: {dest}, port: {{number: 9000}}}}}}]\n---\n"
        ));
    }
    apply(&gw, &y);

    for name in ["plain", "secure"] {
        let host = format!("{name}.example.com");
        let r = call(gw.http, &host, "Unary", &["hi"], &[]);
        assert_eq!(r["code"], "OK", "{name}: {r}\n{}", gw.logs());
        assert_eq!(r["responses"], serde_json::json!([format!("{name}:hi")]));
        assert_eq!(r["trailing"]["x-served-by"], name, "{name}: {r}");

        let r = call(gw.http, &host, "ServerStream", &["3"], &[]);
        assert_eq!(r["code"], "OK", "{name}: {r}");
        assert_eq!(
            r["responses"],
            serde_json::json!([
                format!("{name}:0"),
                format!("{name}:1"),
                format!("{name}:2")
            ])
        );

        let r = call(gw.http, &host, "ClientStream", &["a", "b", "c"], &[]);
        assert_eq!(r["code"], "OK", "{name}: {r}");
        assert_eq!(r["responses"], serde_json::json!([format!("{name}:a,b,c")]));

        let r = call(gw.http, &host, "Fail", &["nope"], &[]);
        assert_eq!(r["code"], "FAILED_PRECONDITION", "{name}: {r}");
        assert_eq!(r["details"], "precondition failed: nope");
        assert_eq!(r["trailing"]["x-detail"], "why", "{name}: {r}");

        let r = call(
            gw.http,
            &host,
            "Unary",
            &["hi"],
            &["--meta", "x-fault=abort"],
        );
        assert_eq!(r["code"], "UNAVAILABLE", "{name}: {r}");
        assert_eq!(r["details"], "fault filter abort");
        assert_eq!(r["trailing"]["x-gateway-error"], "FI", "{name}: {r}");
        // An HTTP abort to a gRPC request is that status's gRPC code (403: PERMISSION_DENIED).
        let r = call(
            gw.http,
            &host,
            "Unary",
            &["hi"],
            &["--meta", "x-fault=http"],
        );
        assert_eq!(r["code"], "PERMISSION_DENIED", "{name}: {r}");
        assert_eq!(r["trailing"]["x-gateway-error"], "FI", "{name}: {r}");
    }
    // Streams flow message by message both ways, never held until the end (the route has
    // Istio's default retries, so the retry buffer is on too).
    let r = call(
        gw.http,
        "plain.example.com",
        "ServerStream",
        &["3"],
        &["--meta", "x-gap-ms=700"],
    );
    assert_eq!(r["code"], "OK", "{r}");
    let at: Vec<i64> = r["arrivals_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    assert!(at.len() == 3 && at[2] - at[0] >= 1000, "{r}");
    let r = call(
        gw.http,
        "plain.example.com",
        "ClientStream",
        &["x", "y", "z"],
        &["--gap-ms", "700"],
    );
    assert_eq!(r["code"], "OK", "{r}");
    let spread = plain
        .wait_calls(6)
        .iter()
        .rev()
        .find(|c| c["method"] == "ClientStream")
        .and_then(|c| c["spread_ms"].as_i64());
    assert!(spread.is_some_and(|s| s >= 1000), "{spread:?}");
    // The upstream saw HTTP/2 calls with the client's authority (a gRPC server speaks nothing else).
    let seen = plain.wait_calls(6);
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(
        seen.iter().all(|c| c["authority"] == "plain.example.com"),
        "{seen:?}"
    );
    assert_eq!(secure.wait_calls(4).len(), 4);

    // Answers the gateway makes itself are gRPC statuses with the response flags.
    let r = call(gw.http, "nowhere.example.com", "Unary", &["hi"], &[]);
    assert_eq!(r["code"], "UNIMPLEMENTED", "{r}");
    assert_eq!(r["trailing"]["x-gateway-error"], "NR", "{r}");
    let dead = common::free_port();
    apply(
        &gw,
        &(service("dead.svc", "GRPC", dead)
            + "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: dead}\nspec:\n  hosts: [dead.example.com]\n  http:\n  - route: [{destination: {host: dead.svc, port: {number: 9000}}}]\n"),
    );
    let r = call(gw.http, "dead.example.com", "Unary", &["hi"], &[]);
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    assert!(
        r["trailing"]["x-gateway-error"]
            .as_str()
            .is_some_and(|f| f.starts_with("UF")),
        "{r}"
    );

    // gRPC requests are counted by route like any other.
    let m = metrics(&gw);
    for (route, code, n) in [
        ("vs/default/plain/http/2", "200", 6.0),
        ("vs/default/plain/http/0", "200", 1.0),
        ("vs/default/plain/http/1", "200", 1.0),
        ("vs/default/secure/http/2", "200", 4.0),
    ] {
        assert_eq!(
            series(
                &m,
                "gateway_requests_total",
                &[
                    &format!("route=\"{route}\""),
                    &format!("response_code=\"{code}\"")
                ]
            ),
            n,
            "{route}\n{m}"
        );
    }
    assert_eq!(
        series(
            &m,
            "gateway_requests_total",
            &["route=\"vs/default/plain/http/0\"", "response_flags=\"FI\""]
        ),
        1.0
    );
}

#[test]
fn grpc_over_tls_downstream_with_alpn_h2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("edge ca");
    let edge = ca.server(&["edge.example.com"]);
    let ca_path = common::write_file(dir.path(), "ca.pem", &ca.pem());
    let server = GrpcServer::start("behind-tls", None);
    let gw = Gateway::start(Opts::default());
    let mut y = common::tls::secret_yaml("edge", &edge, None);
    y.push_str("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: edge}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [edge.example.com]\n    tls: {mode: SIMPLE, credentialName: edge}\n---\n");
    y.push_str(&service("edge.svc", "GRPC", server.port));
    y.push_str("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: edge}\nspec:\n  hosts: [edge.example.com]\n  http:\n  - route: [{destination: {host: edge.svc, port: {number: 9000}}}]\n");
    apply(&gw, &y);
    let ca_arg = ca_path.display().to_string();
    let tls = ["--ca", ca_arg.as_str()];
    let r = call(gw.https, "edge.example.com", "Unary", &["sealed"], &tls);
    assert_eq!(r["code"], "OK", "{r}\n{}", gw.logs());
    assert_eq!(r["responses"], serde_json::json!(["behind-tls:sealed"]));
    assert_eq!(r["trailing"]["x-served-by"], "behind-tls");
    let r = call(gw.https, "edge.example.com", "ServerStream", &["2"], &tls);
    assert_eq!(
        r["responses"],
        serde_json::json!(["behind-tls:0", "behind-tls:1"]),
        "{r}"
    );
    let r = call(gw.https, "edge.example.com", "Fail", &["x"], &tls);
    assert_eq!(r["code"], "FAILED_PRECONDITION", "{r}");
    assert_eq!(r["trailing"]["x-detail"], "why", "{r}");
}

#[test]
fn the_upstream_protocol_is_chosen_as_istio_chooses_it() {
    let server = GrpcServer::start("h2", None);
    let gw = Gateway::start(Opts::default());
    let port_of = |name: &str, protocol: &str| {
        let protocol = if protocol.is_empty() {
            String::new()
        } else {
            format!(", protocol: {protocol}")
        };
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.svc]\n  ports: [{{number: 9000, name: {pname}{protocol}}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{{pname}: {port}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.example.com]\n  http:\n  - route: [{{destination: {{host: {name}.svc, port: {{number: 9000}}}}}}]\n---\n",
            pname = if name == "named" { "grpc-api" } else { "api" },
            port = server.port,
        )
    };
    let dr = |name: &str, http: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  host: {name}.svc\n  trafficPolicy:\n    connectionPool:\n      http: {http}\n---\n")
    };
    let mut y = String::new();
    y.push_str(&port_of("http1", "HTTP"));
    y.push_str(&port_of("http2", "HTTP2"));
    y.push_str(&port_of("named", ""));
    y.push_str(&port_of("upgraded", "HTTP"));
    y.push_str(&dr("upgraded", "{h2UpgradePolicy: UPGRADE}"));
    y.push_str(&port_of("client", "HTTP"));
    y.push_str(&dr("client", "{useClientProtocol: true}"));
    // DO_NOT_UPGRADE declines an upgrade; it does not make a GRPC port HTTP/1.1 (nor in Istio).
    y.push_str(&port_of("kept", "GRPC"));
    y.push_str(&dr("kept", "{h2UpgradePolicy: DO_NOT_UPGRADE, maxConcurrentStreams: 1, http2KeepAlive: {interval: 1s, timeout: 5s}}"));
    apply(&gw, &y);
    for name in ["http2", "named", "upgraded", "client", "kept"] {
        let r = call(
            gw.http,
            &format!("{name}.example.com"),
            "Unary",
            &[name],
            &[],
        );
        assert_eq!(r["code"], "OK", "{name}: {r}\n{}", gw.logs());
        assert_eq!(r["responses"], serde_json::json!([format!("h2:{name}")]));
    }
    // HTTP/1.1 to a gRPC server: it never sees the call.
    let before = server.calls().len();
    let r = call(gw.http, "http1.example.com", "Unary", &["http1"], &[]);
    assert_ne!(r["code"], "OK", "{r}");
    assert_eq!(server.calls().len(), before);
    // Streams share one connection up to maxConcurrentStreams: several calls at once all succeed.
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let addr = gw.http;
            std::thread::spawn(move || {
                call(
                    addr,
                    "kept.example.com",
                    "Unary",
                    &[&format!("c{i}")],
                    &["--meta", "x-delay-ms=200"],
                )
            })
        })
        .collect();
    for t in threads {
        let r = t.join().expect("client thread");
        assert_eq!(r["code"], "OK", "{r}");
    }
}

#[test]
fn route_timeout_and_grpc_timeout_answer_deadline_exceeded() {
    let server = GrpcServer::start("slow", None);
    // An upstream that knows nothing of `grpc-timeout` (a gRPC server would give up at that
    // deadline itself, hiding whether the gateway did).
    let ignorant = upstream::Upstream::start("ignorant");
    let gw = Gateway::start(Opts::default());
    let mut y = service("slow.svc", "GRPC", server.port);
    y.push_str(&service("ignorant.svc", "HTTP", ignorant.port()));
    for (name, dest, timeout) in [
        ("short", "slow.svc", "300ms"),
        ("short-h1", "ignorant.svc", "300ms"),
        ("long-h1", "ignorant.svc", "20s"),
    ] {
        y.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.example.com]\n  http:\n  - timeout: {timeout}\n    route: [{{destination: {{host: {dest}, port: {{number: 9000}}}}}}]\n---\n"
        ));
    }
    apply(&gw, &y);

    // The route timeout, shorter than the server's delay and than the client's deadline.
    let start = Instant::now();
    let r = call(
        gw.http,
        "short.example.com",
        "Unary",
        &["hi"],
        &["--meta", "x-delay-ms=6000", "--timeout", "20"],
    );
    assert_eq!(r["code"], "DEADLINE_EXCEEDED", "{r}");
    assert_eq!(r["details"], "upstream request timeout", "{r}");
    assert_eq!(r["trailing"]["x-gateway-error"], "UT", "{r}");
    // Well before the server's answer (the client's own start-up takes part of it).
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    // Within the timeout the call succeeds.
    let r = call(
        gw.http,
        "short.example.com",
        "Unary",
        &["hi"],
        &["--meta", "x-delay-ms=10"],
    );
    assert_eq!(r["code"], "OK", "{r}");

    // `grpc-timeout` shorter than the route timeout wins (sent by hand: a real client would give
    // up at its own deadline too, hiding who answered).
    let timed = |host: &str, grpc_timeout: &str| {
        let start = Instant::now();
        let r = http1_call(
            &gw,
            host,
            "/test.Echo/Unary",
            "application/grpc",
            &[("grpc-timeout", grpc_timeout), ("x-delay-ms", "6000")],
            b"hi",
        );
        (r, start.elapsed())
    };
    let (r, took) = timed("long-h1.example.com", "300m");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("grpc-status"), Some("4"), "{:?}", r.headers);
    assert_eq!(r.header("grpc-message"), Some("upstream request timeout"));
    assert_eq!(r.header("x-gateway-error"), Some("UT"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The route timeout wins when it is the shorter.
    let (r, took) = timed("short-h1.example.com", "10S");
    assert_eq!(r.header("grpc-status"), Some("4"), "{:?}", r.headers);
    assert_eq!(r.header("x-gateway-error"), Some("UT"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Without either, the slow answer arrives.
    let r = http1_call(
        &gw,
        "long-h1.example.com",
        "/test.Echo/Unary",
        "application/grpc",
        &[("x-delay-ms", "500")],
        b"hi",
    );
    assert_eq!((r.status, r.header("x-upstream")), (200, Some("ignorant")));
}

#[test]
fn retry_on_grpc_status_names() {
    let server = GrpcServer::start("flaky", None);
    let gw = Gateway::start(Opts::default());
    let mut y = service("flaky.svc", "GRPC", server.port);
    for (name, retries) in [
        // Istio's default policy retries `unavailable` (and `cancelled`).
        ("default", ""),
        (
            "named",
            "\n    retries: {attempts: 3, retryOn: unavailable}",
        ),
        (
            "other",
            "\n    retries: {attempts: 3, retryOn: \"5xx,internal\"}",
        ),
    ] {
        y.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.example.com]\n  http:\n  - route: [{{destination: {{host: flaky.svc, port: {{number: 9000}}}}}}]{retries}\n---\n"
        ));
    }
    apply(&gw, &y);
    // How many calls the server logged with `key`, once there are `want` (or after a while).
    let hits = |key: &str, want: usize| {
        let count = || {
            server
                .calls()
                .iter()
                .filter(|c| c["requests"] == serde_json::json!([key]))
                .count()
        };
        eventually(Duration::from_secs(10), || {
            let n = count();
            (n >= want).then_some(n)
        })
        .unwrap_or_else(count)
    };
    for name in ["default", "named"] {
        let r = call(
            gw.http,
            &format!("{name}.example.com"),
            "Flaky",
            &[name],
            &[],
        );
        assert_eq!(r["code"], "OK", "{name}: {r}");
        assert_eq!(r["responses"], serde_json::json!([format!("flaky:{name}")]));
        assert_eq!(hits(name, 2), 2, "{name}: {:?}", server.calls());
    }
    // UNAVAILABLE is neither a 5xx (the answer is a 200) nor `internal`: not retried.
    let r = call(gw.http, "other.example.com", "Flaky", &["other"], &[]);
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    assert_eq!(r["details"], "try again");
    assert_eq!(hits("other", 1), 1);
    let m = metrics(&gw);
    assert_eq!(
        series(
            &m,
            "gateway_upstream_retries_total",
            &["destination_service=\"flaky.svc\""]
        ),
        2.0,
        "{m}"
    );
}

#[test]
fn grpc_web_is_bridged_on_a_grpc_web_server() {
    let server = GrpcServer::start("web", None);
    let gw = Gateway::start(Opts::default());
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: web}\nspec:\n  servers:\n  - port: {number: 80, name: web, protocol: GRPC-WEB}\n    hosts: ['*']\n---\n",
    );
    y.push_str(&service("web.svc", "GRPC-WEB", server.port));
    y.push_str("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web.example.com]\n  gateways: [web]\n  http:\n  - route: [{destination: {host: web.svc, port: {number: 9000}}}]\n");
    apply(&gw, &y);

    let r = http1_call(
        &gw,
        "web.example.com",
        "/test.Echo/Unary",
        "application/grpc-web+proto",
        &[("x-grpc-web", "1")],
        b"from the browser",
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), gw.logs());
    // The upstream's `application/grpc` as gRPC-Web.
    assert_eq!(
        r.header("content-type"),
        Some("application/grpc-web"),
        "{:?}",
        r.headers
    );
    let f = frames(&r.body);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(
        (f[0].0, f[0].1.as_slice()),
        (0, &b"web:from the browser"[..])
    );
    // The trailers travel as the last frame of the body (flag 0x80), as gRPC-Web has them.
    assert_eq!(f[1].0, 0x80);
    let trailers = String::from_utf8_lossy(&f[1].1).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    assert!(trailers.contains("x-served-by:web"), "{trailers:?}");
    assert_eq!(
        server.wait_calls(1).first().map(|c| c["requests"].clone()),
        Some(serde_json::json!(["from the browser"]))
    );

    // An error status reaches the browser with its message.
    let r = http1_call(
        &gw,
        "web.example.com",
        "/test.Echo/Fail",
        "application/grpc-web+proto",
        &[],
        b"x",
    );
    assert_eq!(r.status, 200);
    let in_trailer_frame = frames(&r.body)
        .into_iter()
        .find(|(flag, _)| *flag == 0x80)
        .map(|(_, t)| String::from_utf8_lossy(&t).to_ascii_lowercase());
    let status_ok = r.header("grpc-status") == Some("9")
        || in_trailer_frame
            .as_deref()
            .is_some_and(|t| t.contains("grpc-status:9"));
    assert!(status_ok, "{:?} {in_trailer_frame:?}", r.headers);

    // The text variant: base64 both ways, the answer in padded pieces, trailers last.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.encode(frame(0, b"as text"));
    let r = common::request(
        gw.http,
        "POST",
        "/test.Echo/Unary",
        &[
            ("Host", "web.example.com"),
            ("content-type", "application/grpc-web-text"),
            ("accept", "application/grpc-web-text"),
        ],
        body.as_bytes(),
    )
    .expect("request");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), gw.logs());
    assert_eq!(
        r.header("content-type"),
        Some("application/grpc-web-text"),
        "{:?}",
        r.headers
    );
    let mut decoded = Vec::new();
    for quantum in r.body.chunks(4) {
        decoded.extend(b64.decode(quantum).expect("base64 answer"));
    }
    let f = frames(&decoded);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((f[0].0, f[0].1.as_slice()), (0, &b"web:as text"[..]));
    assert_eq!(f[1].0, 0x80);
    let trailers = String::from_utf8_lossy(&f[1].1).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    assert_eq!(
        server.wait_calls(3).last().map(|c| c["requests"].clone()),
        Some(serde_json::json!(["as text"]))
    );
}

#[test]
fn a_grpc_mirror_gets_a_copy_with_the_shadow_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("mirror ca");
    let leaf = ca.server(&["shadow.internal"]);
    let cert = common::write_file(dir.path(), "s.pem", &leaf.pem);
    let key = common::write_file(dir.path(), "s-key.pem", &leaf.key_pem);
    let ca_path = common::write_file(dir.path(), "ca.pem", &ca.pem());
    let main = GrpcServer::start("main", None);
    let shadow = GrpcServer::start("shadow", None);
    let shadow_tls = GrpcServer::start("shadow-tls", Some((&cert, &key)));
    let gw = Gateway::start(Opts::default());
    let mut y = service("main.svc", "GRPC", main.port);
    y.push_str(&service("shadow.svc", "GRPC", shadow.port));
    // A second mirror over TLS, per its DestinationRule, as a proxied request would go.
    y.push_str(&service("shadowtls.svc", "GRPC", shadow_tls.port));
    y.push_str(&format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: shadowtls}}\nspec:\n  host: shadowtls.svc\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {}, sni: shadow.internal}}\n---\n",
        ca_path.display()
    ));
    y.push_str("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: mirrored}\nspec:\n  hosts: [m.example.com]\n  http:\n  - route: [{destination: {host: main.svc, port: {number: 9000}}}]\n    mirrors:\n    - destination: {host: shadow.svc, port: {number: 9000}}\n    - destination: {host: shadowtls.svc, port: {number: 9000}}\n");
    apply(&gw, &y);

    let r = call(gw.http, "m.example.com", "Unary", &["copy me"], &[]);
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["responses"], serde_json::json!(["main:copy me"]));
    let got = eventually(Duration::from_secs(10), || shadow.calls().first().cloned())
        .unwrap_or_else(|| panic!("the mirror got nothing\n{}", gw.logs()));
    assert_eq!(got["method"], "Unary");
    assert_eq!(got["authority"], "m.example.com-shadow");
    assert_eq!(got["requests"], serde_json::json!(["copy me"]));
    let got = eventually(Duration::from_secs(10), || {
        shadow_tls.calls().first().cloned()
    })
    .unwrap_or_else(|| panic!("the TLS mirror got nothing\n{}", gw.logs()));
    assert_eq!(got["authority"], "m.example.com-shadow");
    assert_eq!(got["requests"], serde_json::json!(["copy me"]));
    let sent = eventually(Duration::from_secs(10), || {
        let m = metrics(&gw);
        let n = series(
            &m,
            "gateway_mirror_requests_total",
            &["destination_service=\"shadow.svc\"", "result=\"sent\""],
        );
        (n == 1.0).then_some(n)
    });
    assert_eq!(sent, Some(1.0), "{}", metrics(&gw));
    assert_eq!(main.wait_calls(1).len(), 1);

    // A body over the mirror limit (1 MiB) reaches the route's upstream but not the mirror, and
    // is counted.
    let big = vec![b'x'; (1 << 20) + 1];
    let r = http1_call(
        &gw,
        "m.example.com",
        "/test.Echo/Unary",
        "application/grpc",
        &[],
        &big,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(main.wait_calls(2).len(), 2);
    let skipped = eventually(Duration::from_secs(10), || {
        let n = series(
            &metrics(&gw),
            "gateway_mirror_requests_total",
            &[
                "destination_service=\"shadow.svc\"",
                "result=\"body_too_large\"",
            ],
        );
        (n == 1.0).then_some(n)
    });
    assert_eq!(skipped, Some(1.0), "{}", metrics(&gw));
    assert_eq!(shadow.calls().len(), 1);
}
