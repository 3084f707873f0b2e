//! Observability and the compose stack, end to end against the real binary:
//! - the `/metrics` exposition passes `promtool check metrics` after real traffic;
//! - a real Prometheus, configured from `deploy/prometheus/prometheus.yml`, scrapes the gateway
//!   with the admin token, and EVERY PromQL expression of every dashboard under `dashboards/`
//!   parses, and returns data whenever the metrics it reads are exported (traffic metrics must be),
//!   with every label it groups by;
//!   (TCP connections through a `--listen` TCP port included);
//! - the JSON access log names the route, the flags and the upstream of a routed request, a 404
//!   and an injected abort;
//! - `compose.yaml` passes `docker-compose config` and the Compose Specification's schema, and the
//!   dashboards and Grafana provisioning are consistent with it.
//!
//! External tools (`promtool`, `prometheus`, `docker-compose`, Python with jsonschema) come from
//! Debian packages (`scripts/setup`). A test whose tool is missing is skipped with a message,
//! unless `CI` is set: then it fails.

mod common;
mod upstream;

use common::{
    eventually, free_port, request, Gateway, Opts, Response, TEST_CERT_PEM, TEST_KEY_PEM,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use upstream::Upstream;

/// The workspace root (compose.yaml, dashboards/, deploy/).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// True when running in CI, where a missing tool is a failure rather than a skip.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The path of `name` on `PATH`, or `None` after printing why the caller skips (panics under CI).
fn tool(name: &str, purpose: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "`{name}` is required under CI ({purpose}); scripts/setup installs it"
        );
        eprintln!("SKIPPED {purpose}: `{name}` is not installed (scripts/setup installs it)");
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The configuration every traffic test applies.

const SHOP_HOST: &str = "shop.obs.test";
const FAULT_HOST: &str = "fault.obs.test";
const DEAD_HOST: &str = "dead.obs.test";
const MISSING_HOST: &str = "nothing.obs.test";
const GRPC_HOST: &str = "grpc.obs.test";
const SHOP_ROUTE: &str = "vs/default/shop/http/0";
const FAULT_ROUTE: &str = "vs/default/faulty/http/0";
const DEAD_ROUTE: &str = "vs/default/dead/http/0";
const TCP_ROUTE: &str = "vs/default/tcp-echo/tcp/0";

/// A TCP server on a fresh port that echoes each connection's bytes until the client closes.
fn tcp_echo() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                if let Ok(mut r) = c.try_clone() {
                    let _ = std::io::copy(&mut r, &mut c);
                }
                let _ = c.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// A Gateway TCP server (port 31400) and a `tcp` route from it to a TCP echo server.
fn tcp_resources(echo_port: u16) -> Vec<Value> {
    vec![
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "tcp-edge"},
         "spec": {"servers": [
            {"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}]}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "tcp-echo"},
         "spec": {"hosts": ["echo.internal"],
                  "ports": [{"number": echo_port, "name": "tcp", "protocol": "TCP"}],
                  "resolution": "STATIC", "endpoints": [{"address": "127.0.0.1"}]}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "tcp-echo"},
         "spec": {"hosts": ["*"], "gateways": ["tcp-edge"], "tcp": [{"route": [
            {"destination": {"host": "echo.internal", "port": {"number": echo_port}}}]}]}}),
    ]
}

/// One TCP connection through the gateway: a line out, the same line back.
fn tcp_round_trip(addr: SocketAddr) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the TCP listener");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"ping over tcp\n").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read");
    assert_eq!(back, b"ping over tcp\n");
}

/// A service with two versions split 90/10 by subset, a route with an injected abort, a route to a
/// subset whose endpoint is a port nobody listens on (connect failures and retries), and a Gateway
/// whose HTTPS server names the TLS Secret of `put_secret`.
fn resources(v1: &Upstream, v2: &Upstream, dead_port: u16) -> Value {
    let endpoint = |u: &Upstream, version: &str| {
        json!({"address": "127.0.0.1", "ports": {"http": u.port()},
               "labels": {"version": version}})
    };
    json!([
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "edge"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]},
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
             "tls": {"mode": "SIMPLE", "credentialName": "obs-cert"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "shop"},
         "spec": {"hosts": ["shop.internal"],
                  "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                  "resolution": "STATIC",
                  "endpoints": [endpoint(v1, "v1"), endpoint(v2, "v2"),
                      {"address": "127.0.0.1", "ports": {"http": dead_port},
                       "labels": {"version": "down"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "shop"},
         "spec": {"host": "shop.internal", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
            {"name": "down", "labels": {"version": "down"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "shop"},
         "spec": {"hosts": [SHOP_HOST], "http": [{"name": "split", "route": [
            {"destination": {"host": "shop.internal", "subset": "v1"}, "weight": 90},
            {"destination": {"host": "shop.internal", "subset": "v2"}, "weight": 10}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "faulty"},
         "spec": {"hosts": [FAULT_HOST], "http": [{
            "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}},
            "route": [{"destination": {"host": "shop.internal", "subset": "v1"}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "grpc-fault"},
         "spec": {"hosts": [GRPC_HOST], "http": [{
            "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
            "route": [{"destination": {"host": "shop.internal", "subset": "v1"}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "dead"},
         "spec": {"hosts": [DEAD_HOST], "http": [{
            "route": [{"destination": {"host": "shop.internal", "subset": "down"}}]}]}}
    ])
}

fn apply(gw: &Gateway, items: &Value) {
    let r = gw.admin_call(
        "POST",
        "/apply",
        "application/json",
        items.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "apply: {}", r.text());
}

/// The TLS Secret the Gateway's HTTPS server names (so that certificate metrics have a subject).
fn put_secret(gw: &Gateway) {
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "obs-cert", "namespace": "default"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": TEST_CERT_PEM, "tls.key": TEST_KEY_PEM}});
    let r = gw.put("/api/v1/namespaces/default/secrets/obs-cert", &secret);
    assert!(
        r.status == 200 || r.status == 201,
        "secret: {} {}",
        r.status,
        r.text()
    );
}

fn send(gw: &Gateway, host: &str, path: &str) -> Response {
    request(gw.http, "GET", path, &[("Host", host)], b"")
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}\n--- logs ---\n{}", gw.logs()))
}

/// The first flag of `x-gateway-error` (the one CONTRACT §4's table names).
fn first_flag(r: &Response) -> String {
    r.header("x-gateway-error")
        .unwrap_or("")
        .split(',')
        .next()
        .unwrap_or("")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Access log.

fn log_line_for(gw: &Gateway, path: &str) -> Value {
    eventually(Duration::from_secs(10), || {
        gw.access_log().into_iter().find(|v| v["path"] == path)
    })
    .unwrap_or_else(|| panic!("no access log line for {path}\n--- logs ---\n{}", gw.logs()))
}

#[test]
fn access_log_names_route_flags_and_upstream() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let dead_port = free_port();
    let gw = Gateway::start(Opts::default().arg("--access-log").arg("json"));
    put_secret(&gw);
    apply(&gw, &resources(&v1, &v2, dead_port));

    let routed = send(&gw, SHOP_HOST, "/obs/routed?q=1");
    assert_eq!(routed.status, 200, "{}", routed.text());
    let missing = send(&gw, MISSING_HOST, "/obs/missing");
    assert_eq!(missing.status, 404);
    assert_eq!(first_flag(&missing), "NR");
    let dead = send(&gw, DEAD_HOST, "/obs/dead");
    assert_eq!(dead.status, 503);
    assert_eq!(first_flag(&dead), "UF");
    let aborted = send(&gw, FAULT_HOST, "/obs/abort");

    // A routed request: its route id, the endpoint that answered, no flags.
    let line = log_line_for(&gw, "/obs/routed?q=1");
    assert_eq!(line["response_code"], 200, "{line}");
    assert_eq!(line["route_name"], SHOP_ROUTE, "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["authority"], SHOP_HOST, "{line}");
    let upstream_host = line["upstream_host"].as_str().unwrap_or("");
    let endpoints = [v1.addr.to_string(), v2.addr.to_string()];
    assert!(
        endpoints.iter().any(|e| e == upstream_host),
        "upstream_host {upstream_host:?} is not one of {endpoints:?}: {line}"
    );
    assert!(
        matches!(line["response_flags"].as_str(), Some("-" | "")),
        "{line}"
    );
    assert!(
        line["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{line}"
    );
    assert!(line["upstream_service_time"].is_u64(), "{line}");
    assert!(
        line["start_time"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{line}"
    );

    // No route: NR, no route id, no upstream.
    let line = log_line_for(&gw, "/obs/missing");
    assert_eq!(line["response_code"], 404, "{line}");
    assert_eq!(line["response_flags"], "NR", "{line}");
    assert!(
        line["route_name"].as_str().unwrap_or("").is_empty(),
        "{line}"
    );
    assert!(line["upstream_host"].is_null(), "{line}");

    // Connect failure after retries: UF first, the route id, the endpoint that was tried.
    let line = log_line_for(&gw, "/obs/dead");
    assert_eq!(line["response_code"], 503, "{line}");
    assert!(
        line["response_flags"]
            .as_str()
            .is_some_and(|f| f.split(',').next() == Some("UF")),
        "{line}"
    );
    assert_eq!(line["route_name"], DEAD_ROUTE, "{line}");
    assert_eq!(
        line["upstream_host"],
        format!("127.0.0.1:{dead_port}"),
        "{line}"
    );

    // Injected abort (fault injection, flag FI): the configured status, the route id, no upstream.
    assert_eq!(
        (aborted.status, first_flag(&aborted).as_str()),
        (503, "FI"),
        "injected abort: {} {:?} {}",
        aborted.status,
        aborted.header("x-gateway-error"),
        aborted.text()
    );
    let line = log_line_for(&gw, "/obs/abort");
    assert_eq!(line["response_code"], 503, "{line}");
    assert_eq!(line["response_flags"], "FI", "{line}");
    assert_eq!(line["route_name"], FAULT_ROUTE, "{line}");
    assert!(line["upstream_host"].is_null(), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Metrics, Prometheus and the dashboards.

/// A Prometheus server on a loopback port, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(bin: &Path, config: &Path, dir: &Path) -> Prometheus {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("prometheus log");
        let err = out.try_clone().expect("prometheus log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn prometheus");
        Prometheus { child, addr, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=…` at the current time: the whole JSON answer (error answers
    /// included), or why there is none.
    fn try_query(&self, promql: &str) -> Result<Value, String> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let r = request(self.addr, "GET", &path, &[], b"").map_err(|e| e.to_string())?;
        serde_json::from_slice(&r.body)
            .map_err(|e| format!("status {} not JSON ({e}): {}", r.status, r.text()))
    }

    fn query(&self, promql: &str) -> Value {
        self.try_query(promql)
            .unwrap_or_else(|e| panic!("query {promql}: {e}\n{}", self.logs()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The scrape configuration shipped for compose, pointed at this gateway: same job, same bearer
/// token mechanism (a credentials file), scraped every second.
fn prometheus_config(admin: SocketAddr, token_file: &Path) -> String {
    let shipped = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml"))
        .expect("deploy/prometheus/prometheus.yml");
    let mut cfg: serde_json::Value = serde_saphyr::from_str(&shipped).expect("prometheus.yml");
    cfg["global"]["scrape_interval"] = "1s".into();
    let jobs = cfg["scrape_configs"]
        .as_array_mut()
        .expect("scrape_configs");
    jobs.retain(|j| j["job_name"] == "gateway");
    assert_eq!(jobs.len(), 1, "prometheus.yml has one `gateway` job");
    let job = &mut jobs[0];
    assert_eq!(
        job["authorization"]["type"], "Bearer",
        "the gateway job sends the admin token"
    );
    job["authorization"]["credentials_file"] = token_file.display().to_string().into();
    job["scrape_interval"] = "1s".into();
    let targets = &mut job["static_configs"][0]["targets"];
    *targets = serde_json::Value::Array(vec![admin.to_string().into()]);
    serde_saphyr::to_string(&cfg).expect("yaml")
}

/// Grafana's built-in and dashboard variables, as the test evaluates them: every instance and
/// route, a range long enough to cover the whole test.
fn substitute(expr: &str) -> String {
    let values: BTreeMap<&str, &str> = [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "5m"),
        ("__range_s", "300"),
        ("instance", ".*"),
        ("route", ".*"),
    ]
    .into_iter()
    .collect();
    let var = regex::Regex::new(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]").expect("regex");
    var.replace_all(expr, |c: &regex::Captures<'_>| {
        let name = c
            .get(1)
            .or_else(|| c.get(2))
            .or_else(|| c.get(3))
            .map_or("", |m| m.as_str());
        match values.get(name) {
            Some(v) => (*v).to_string(),
            None => panic!("dashboard variable ${name} unknown to the test (in {expr}); add it to substitute()"),
        }
    })
    .into_owned()
}

/// Every PromQL expression of a dashboard: panel targets (rows included), annotations, and query
/// variables (`label_values(metric, label)` becomes `count by (label) (metric)`).
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                let here = m
                    .get("title")
                    .or_else(|| m.get("name"))
                    .and_then(Value::as_str)
                    .map_or_else(|| at.to_string(), |t| format!("{at}/{t}"));
                if let Some(e) = m.get("expr").and_then(Value::as_str) {
                    let r = m.get("refId").and_then(Value::as_str).unwrap_or("-");
                    out.push((format!("{here} [{r}]"), e.to_string()));
                }
                for (k, child) in m {
                    if k != "templating" {
                        walk(child, &here, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, at, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, "", &mut out);
    let label_values =
        regex::Regex::new(r"^\s*label_values\((.+),\s*(\w+)\s*\)\s*$").expect("regex");
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .or_else(|| var["definition"].as_str())
            .unwrap_or("");
        let name = format!("variable ${}", var["name"].as_str().unwrap_or("?"));
        match label_values.captures(q) {
            Some(c) => out.push((name, format!("count by ({}) ({})", &c[2], &c[1]))),
            None => panic!("{name}: unsupported variable query {q:?}"),
        }
    }
    out
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("dashboards/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&p).expect("read dashboard");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            out.push((
                p.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                v,
            ));
        }
    }
    assert!(!out.is_empty(), "no dashboard under dashboards/");
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The labels of every `by (…)` clause of a query, less `le` (which histogram_quantile consumes).
fn grouping_labels(promql: &str) -> BTreeSet<String> {
    let by = regex::Regex::new(r"\bby\s*\(([^)]*)\)").expect("regex");
    by.captures_iter(promql)
        .flat_map(|c| {
            c[1].split(',')
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty() && l != "le")
        .collect()
}

/// Sample names in a Prometheus text exposition (`gateway_x_bucket`, `gateway_y_total`, …).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// CONTRACT §5's series, as the sample names that prove each is exported.
const CONTRACT_SAMPLES: [&str; 16] = [
    "gateway_requests_total",
    "gateway_request_duration_seconds_bucket",
    "gateway_upstream_request_duration_seconds_bucket",
    "gateway_upstream_retries_total",
    "gateway_upstream_connect_failures_total",
    "gateway_outlier_ejections_active",
    "gateway_open_connections",
    "gateway_tls_handshake_failures_total",
    "gateway_config_generation",
    "gateway_config_reloads_total",
    "gateway_config_last_reload_success_timestamp_seconds",
    "gateway_tls_certificate_expiry_timestamp_seconds",
    "gateway_build_info",
    "gateway_tcp_connections_total",
    "gateway_tcp_sent_bytes_total",
    "gateway_tcp_received_bytes_total",
];

/// The ones this test's traffic must produce: requests, latencies, retries and connect failures,
/// TCP connections and bytes, gRPC requests, the configuration, the build.
const TRAFFIC_SAMPLES: [&str; 13] = [
    "gateway_requests_total",
    "gateway_request_duration_seconds_bucket",
    "gateway_upstream_request_duration_seconds_bucket",
    "gateway_upstream_retries_total",
    "gateway_upstream_connect_failures_total",
    "gateway_config_generation",
    "gateway_config_reloads_total",
    "gateway_config_last_reload_success_timestamp_seconds",
    "gateway_build_info",
    "gateway_tcp_connections_total",
    "gateway_tcp_sent_bytes_total",
    "gateway_tcp_received_bytes_total",
    "gateway_grpc_requests_total",
];

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The sample values of an instant query's answer (vector or scalar).
fn values(answer: &Value) -> Vec<f64> {
    let data = &answer["data"];
    let parse = |pair: &Value| pair[1].as_str().and_then(|s| s.parse::<f64>().ok());
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| parse(&s["value"]))
            .collect(),
        Some("scalar") => parse(&data["result"]).into_iter().collect(),
        _ => Vec::new(),
    }
}

#[test]
fn metrics_pass_promtool_and_every_dashboard_query_runs_on_prometheus() {
    let token = "obs-test-token";
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let dead_port = free_port();
    let tcp_port = free_port();
    let gw = Gateway::start(
        Opts::default()
            .token(token)
            .arg("--access-log")
            .arg("off")
            .arg("--listen")
            .arg(format!("31400=127.0.0.1:{tcp_port}")),
    );
    let tcp_addr = SocketAddr::from(([127, 0, 0, 1], tcp_port));
    put_secret(&gw);
    let mut items = resources(&v1, &v2, dead_port);
    if let Some(list) = items.as_array_mut() {
        list.extend(tcp_resources(tcp_echo()));
    }
    apply(&gw, &items);

    let promtool = tool("promtool", "promtool check metrics / check config");
    let prometheus_bin = tool("prometheus", "dashboard queries against a real Prometheus");

    // Prometheus first, so that the traffic below spans several scrapes and rates are non-zero.
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = prometheus_bin.as_ref().map(|bin| {
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, token).expect("token file");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, prometheus_config(gw.admin, &token_file)).expect("config");
        if let Some(pt) = &promtool {
            let out = Command::new(pt)
                .arg("check")
                .arg("config")
                .arg(&config)
                .output()
                .expect("promtool check config");
            assert!(
                out.status.success(),
                "promtool check config (deploy/prometheus/prometheus.yml pointed at the test gateway):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let p = Prometheus::start(bin, &config, dir.path());
        let up = eventually(Duration::from_secs(20), || {
            let a = p.try_query(r#"up{job="gateway"}"#).ok()?;
            (values(&a) == [1.0]).then_some(())
        });
        assert!(
            up.is_some(),
            "Prometheus never scraped the gateway (up{{job=\"gateway\"}} != 1)\n--- prometheus ---\n{}\n--- gateway ---\n{}",
            p.logs(),
            gw.logs()
        );
        p
    });

    // A few hundred requests over ~4 s: routed (90/10), no route, abort, connect failure; one
    // accepted and one rejected configuration change on the way.
    let started = Instant::now();
    let (mut by_upstream, mut i) = (BTreeMap::<String, usize>::new(), 0usize);
    while started.elapsed() < Duration::from_secs(4) || i < 300 {
        let r = send(&gw, SHOP_HOST, "/shop");
        assert_eq!(r.status, 200, "{}", r.text());
        *by_upstream
            .entry(r.header("x-upstream").unwrap_or("?").to_string())
            .or_default() += 1;
        if i % 10 == 0 {
            let nr = send(&gw, MISSING_HOST, "/nothing");
            assert_eq!((nr.status, first_flag(&nr).as_str()), (404, "NR"));
            let _ = send(&gw, FAULT_HOST, "/fault");
            let uf = send(&gw, DEAD_HOST, "/dead");
            assert_eq!((uf.status, first_flag(&uf).as_str()), (503, "UF"));
            // Some TLS handshake failures for the HTTPS listener's counter (when it is served).
            let _ = request(gw.https, "GET", "/", &[], b"");
            tcp_round_trip(tcp_addr);
            // A gRPC call (one empty message) that the fault answers UNAVAILABLE.
            let g = request(
                gw.http,
                "POST",
                "/obs.Svc/Call",
                &[
                    ("Host", GRPC_HOST),
                    ("Content-Type", "application/grpc"),
                    ("TE", "trailers"),
                ],
                &[0, 0, 0, 0, 0],
            )
            .expect("gRPC request");
            assert_eq!(
                (g.status, g.header("grpc-status")),
                (200, Some("14")),
                "{}",
                g.text()
            );
        }
        if i == 100 {
            let bad = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "bad"},
                "spec": {"hosts": ["bad.obs.test"], "http": [{"route": [
                    {"destination": {"host": "shop.internal"}, "weight": -10}]}]}});
            let r = gw.post(
                "/apis/networking.istio.io/v1/namespaces/default/virtualservices",
                &bad,
            );
            assert_eq!(r.status, 422, "{}", r.text());
        }
        if i == 200 {
            apply(&gw, &items);
            let mut vs = items[3].clone();
            vs["spec"]["http"][0]["headers"] = json!({"response": {"set": {"x-obs": "changed"}}});
            let r = gw.put(
                "/apis/networking.istio.io/v1/namespaces/default/virtualservices/shop",
                &vs,
            );
            assert_eq!(r.status, 200, "{}", r.text());
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let traffic_end = unix_now();
    let (n1, n2) = (
        by_upstream.get("v1").copied().unwrap_or(0),
        by_upstream.get("v2").copied().unwrap_or(0),
    );
    assert!(n2 > 0 && n1 > 4 * n2, "a 90/10 split gave {by_upstream:?}");

    // (a) The exposition after traffic passes promtool's checks and lints.
    let metrics = gw.get("/metrics");
    assert_eq!(metrics.status, 200);
    let exposition = metrics.text();
    if let Some(pt) = &promtool {
        let mut child = Command::new(pt)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn promtool");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(exposition.as_bytes())
                .expect("write metrics");
        }
        let out = child.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}\n--- exposition ---\n{exposition}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let exported = sample_names(&exposition);
    for name in TRAFFIC_SAMPLES {
        assert!(
            exported.contains(name),
            "{name} missing from /metrics after traffic\n{exposition}"
        );
    }
    let missing: Vec<_> = CONTRACT_SAMPLES
        .iter()
        .filter(|n| !exported.contains(**n))
        .collect();
    if !missing.is_empty() {
        eprintln!("NOTE: CONTRACT §5 series not exported by the binary yet: {missing:?}");
    }
    assert!(
        exposition.contains(&format!("route=\"{SHOP_ROUTE}\"")),
        "requests carry the route id label"
    );
    assert!(exposition.contains("response_flags=\"NR\""));
    assert!(
        exposition.contains(&format!("route=\"{TCP_ROUTE}\"")),
        "TCP series carry the route id label"
    );

    // (b) Every dashboard query against the real Prometheus.
    let Some(prom) = prom else {
        return;
    };
    // Wait for a scrape that saw all of the traffic.
    let scraped = eventually(Duration::from_secs(15), || {
        let a = prom.query(r#"timestamp(up{job="gateway"})"#);
        values(&a)
            .first()
            .is_some_and(|t| *t > traffic_end + 1.0)
            .then_some(())
    });
    assert!(
        scraped.is_some(),
        "no scrape after the traffic\n{}",
        prom.logs()
    );

    let metric_name = regex::Regex::new(r"\bgateway_[a-z_]+\b").expect("regex");
    let mut failures = Vec::new();
    let (mut checked, mut with_data) = (0, 0);
    let mut parse_only = BTreeSet::new();
    for (file, dash) in dashboards() {
        for (place, expr) in dashboard_queries(&dash) {
            checked += 1;
            let promql = substitute(&expr);
            let answer = prom.query(&promql);
            if answer["status"] != "success" {
                failures.push(format!(
                    "{file}{place}: does not run: {}\n    {promql}",
                    answer["error"]
                ));
                continue;
            }
            let reads: BTreeSet<&str> =
                metric_name.find_iter(&promql).map(|m| m.as_str()).collect();
            let must_have_data = !reads.is_empty() && reads.iter().all(|m| exported.contains(*m));
            let vals = values(&answer);
            if !must_have_data {
                parse_only.extend(
                    reads
                        .iter()
                        .filter(|m| !exported.contains(**m))
                        .map(|m| m.to_string()),
                );
            } else if vals.iter().any(|v| v.is_finite()) {
                with_data += 1;
                // Every label the query groups by exists on the series it reads: some sample
                // of the answer carries it.
                for label in grouping_labels(&promql) {
                    let carried = answer["data"]["result"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| s["metric"].get(&label).is_some());
                    if !carried {
                        failures.push(format!(
                            "{file}{place}: groups by `{label}`, which no answer carries\n    {promql}"
                        ));
                    }
                }
            } else {
                failures.push(format!(
                    "{file}{place}: no data (reads {reads:?}, all exported): {vals:?}\n    {promql}"
                ));
            }
        }
    }
    eprintln!(
        "{checked} dashboard queries ran: {with_data} returned data, the others read series not exported yet: {parse_only:?}"
    );
    assert!(checked > 20, "only {checked} dashboard queries found");
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The response flags the traffic produced reach Prometheus with their labels.
    let flags =
        prom.query(r#"sum by (response_flags) (gateway_requests_total{response_flags!~"-?"})"#);
    let seen: BTreeSet<String> = flags["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metric"]["response_flags"].as_str().map(str::to_string))
        .collect();
    assert!(seen.contains("NR"), "flags in Prometheus: {seen:?}");
    assert!(
        seen.contains("FI"),
        "injected aborts in Prometheus: {seen:?}"
    );
    assert!(
        seen.iter().any(|f| f.starts_with("UF")),
        "flags in Prometheus: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Dashboards and provisioning, statically.

#[test]
fn dashboards_use_a_datasource_variable_and_chart_every_contract_metric() {
    let mut all_exprs = String::new();
    let mut uids = BTreeSet::new();
    for (file, dash) in dashboards() {
        assert!(
            dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{file}: Grafana 10+ schema"
        );
        let uid = dash["uid"].as_str().unwrap_or("");
        assert!(
            !uid.is_empty() && uids.insert(uid.to_string()),
            "{file}: unique uid"
        );
        let vars = dash["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            vars.iter().any(|v| v["type"] == "datasource"
                && v["name"] == "datasource"
                && v["query"] == "prometheus"),
            "{file}: a `datasource` variable of type datasource (prometheus)"
        );
        // Every panel and target picks its datasource through the variable.
        let mut ids = BTreeSet::new();
        let mut panels: Vec<Value> = dash["panels"].as_array().cloned().unwrap_or_default();
        while let Some(p) = panels.pop() {
            if let Some(inner) = p["panels"].as_array() {
                panels.extend(inner.iter().cloned());
            }
            let id = p["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{file}: panel id {id} repeated");
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or("?");
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{file}: panel {title}"
            );
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{file}: panel {title} has no query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{file}: panel {title}"
                );
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{file}: {title}"
                );
            }
        }
        for (_, q) in dashboard_queries(&dash) {
            // Parses as far as the test can tell without Prometheus: variables are known.
            substitute(&q);
            all_exprs.push_str(&q);
            all_exprs.push('\n');
        }
    }
    for name in CONTRACT_SAMPLES {
        assert!(
            all_exprs.contains(name),
            "no dashboard query charts {name} (CONTRACT §5)"
        );
    }
    assert!(
        all_exprs.contains("count by (route) (gateway_requests_total"),
        "a `route` variable: label_values(gateway_requests_total…, route)"
    );
    for q in [0.5, 0.95, 0.99] {
        assert!(
            all_exprs.contains(&format!("histogram_quantile({q}, sum by (le, route)")),
            "p{} latency per route",
            q * 100.0
        );
    }

    // Grafana provisioning: a Prometheus datasource and a file provider reading the folder that
    // compose mounts the dashboards at.
    let prov = root().join("deploy/grafana/provisioning");
    let ds: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(prov.join("datasources/prometheus.yaml")).expect("datasource"),
    )
    .expect("datasource yaml");
    assert_eq!(ds["datasources"][0]["type"], "prometheus");
    let dp: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(prov.join("dashboards/gateway.yaml")).expect("provider"),
    )
    .expect("provider yaml");
    let path = dp["providers"][0]["options"]["path"]
        .as_str()
        .expect("path");
    let compose = std::fs::read_to_string(root().join("compose.yaml")).expect("compose.yaml");
    assert!(
        compose.contains(&format!("./dashboards:{path}")),
        "compose mounts dashboards/ at the provider's path {path}"
    );
}

// ---------------------------------------------------------------------------------------------
// compose.yaml.

/// Copies a file, or a folder recursively, to `dst`.
fn copy_tree(src: &Path, dst: &Path) {
    if src.is_dir() {
        std::fs::create_dir_all(dst).expect("mkdir");
        for e in std::fs::read_dir(src).expect("read_dir") {
            let p = e.expect("entry").path();
            copy_tree(&p, &dst.join(p.file_name().expect("name")));
        }
    } else {
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::copy(src, dst)
            .unwrap_or_else(|e| panic!("{} (mounted by compose.yaml): {e}", src.display()));
    }
}

#[test]
fn compose_file_is_valid_and_wires_the_stack() {
    let root = root();
    let text = std::fs::read_to_string(root.join("compose.yaml")).expect("compose.yaml");
    let compose: serde_json::Value = serde_saphyr::from_str(&text).expect("compose.yaml is YAML");
    assert!(compose.get("name").is_none(), "no top-level `name:`");
    assert!(compose.get("version").is_none(), "no top-level `version:`");

    let services = &compose["services"];
    let gateway = &services["gateway"];
    assert!(
        gateway.get("build").is_some(),
        "the gateway builds from the Dockerfile"
    );
    assert!(root.join("Dockerfile").is_file());
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let ports = strings(&gateway["ports"]);
    for p in ["80:8080", "443:8443", "127.0.0.1:9901:9901"] {
        assert!(
            ports.iter().any(|q| q == p),
            "gateway publishes {p}: {ports:?}"
        );
    }
    // Nothing but traffic is published beyond loopback.
    for (name, svc) in services.as_object().expect("services") {
        for p in strings(&svc["ports"]) {
            assert!(
                p == "80:8080" || p == "443:8443" || p.starts_with("127.0.0.1:"),
                "{name:?} publishes {p} beyond loopback"
            );
        }
    }
    let command = strings(&gateway["command"]).join(" ");
    assert!(command.contains("--admin=0.0.0.0:9901"), "{command}");
    assert!(
        gateway["environment"]["GATEWAY_ADMIN_TOKEN"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "the admin is off loopback in the container: a token is required"
    );
    assert!(
        strings(&gateway["healthcheck"]["test"])
            .join(" ")
            .contains("/readyz"),
        "health check on /readyz"
    );
    let volumes = strings(&gateway["volumes"]);
    let data = volumes
        .iter()
        .find_map(|v| v.strip_suffix(":/var/lib/gateway"))
        .expect("a volume on the data dir");
    assert!(
        compose["volumes"].get(data).is_some(),
        "the store is on a named volume ({data})"
    );
    let bootstrap = command
        .split(' ')
        .find_map(|a| a.strip_prefix("--bootstrap="))
        .expect("--bootstrap")
        .to_string();
    for svc in ["whoami-v1", "whoami-v2", "prometheus", "grafana"] {
        assert!(services.get(svc).is_some(), "service {svc}");
    }
    assert!(
        strings(&services["prometheus"]["volumes"])
            .iter()
            .any(|v| v.starts_with("./deploy/prometheus/prometheus.yml:")),
        "Prometheus uses deploy/prometheus/prometheus.yml"
    );

    // What the container's --bootstrap sees, rebuilt from the bind mounts under its path: the
    // real binary applies it at start (no name defined twice, every reference sound) and serves
    // the demo's VirtualService.
    let staged = tempfile::tempdir().expect("tempdir");
    let mut mounted = 0;
    for v in &volumes {
        let mut parts = v.splitn(3, ':');
        let (src, dst) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let Some(rel) = dst.strip_prefix(bootstrap.as_str()) else {
            continue;
        };
        let src = root.join(src.trim_start_matches("./"));
        let dst = staged.path().join(rel.trim_start_matches('/'));
        copy_tree(&src, &dst);
        mounted += 1;
    }
    assert!(
        volumes.iter().any(|v| v.starts_with("./examples/compose:")) && mounted > 0,
        "examples/compose is mounted under {bootstrap}: {volumes:?}"
    );
    let gw = Gateway::start(Opts::default().bootstrap(staged.path()));
    let demo = gw.get("/apis/networking.istio.io/v1/namespaces/default/virtualservices/demo");
    assert_eq!(demo.status, 200, "{}", demo.text());
    let hosts = demo.json()["spec"]["http"][1]["route"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|d| d["destination"]["host"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert_eq!(
        hosts,
        ["whoami-v1", "whoami-v2"],
        "the demo splits between the compose services"
    );
    let hello = send(&gw, "hello.local", "/");
    assert_eq!(hello.status, 200, "{}", hello.text());
    // The demo's route matches (its upstreams only resolve inside compose: 503, never 404 NR).
    let demo = send(&gw, "demo.local", "/");
    assert_ne!(
        demo.status,
        404,
        "demo.local is not routed: {:?}",
        demo.header("x-gateway-error")
    );
    drop(gw);

    // examples/compose lives under examples/, which scripts/run bootstraps as a whole.
    let gw = Gateway::start(Opts::default().bootstrap(root.join("examples")));
    drop(gw);

    // docker-compose's own validation (interpolation, its schema).
    if let Some(dc) = tool("docker-compose", "docker-compose -f compose.yaml config -q") {
        let out = Command::new(dc)
            .args(["-f", "compose.yaml", "config", "-q"])
            .current_dir(&root)
            .env_remove("GATEWAY_ADMIN_TOKEN")
            .output()
            .expect("docker-compose");
        assert!(
            out.status.success(),
            "docker-compose config -q:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The Compose Specification's JSON schema (vendored in deploy/schema).
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import jsonschema, yaml"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    match python {
        Some(py) => {
            let out = Command::new(py)
                .arg("deploy/check_compose_schema.py")
                .arg("compose.yaml")
                .current_dir(&root)
                .output()
                .expect("schema check");
            assert!(
                out.status.success(),
                "compose-spec schema:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => {
            assert!(
                !in_ci(),
                "Python 3 with jsonschema and yaml is required under CI (python3-jsonschema, python3-yaml)"
            );
            eprintln!("SKIPPED compose-spec schema check: no python3 with jsonschema and yaml");
        }
    }
}
