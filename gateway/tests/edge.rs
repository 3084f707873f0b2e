//! End-to-end tests of the edge: the client address behind a trusted proxy (`X-Forwarded-For`,
//! `gatewayTopology.numTrustedProxies`) and behind an L4 load balancer (PROXY protocol v1 and v2,
//! `gatewayTopology.proxyProtocol`), the request-header and request-body timeouts against
//! `slowhttptest` while a normal client keeps being served, the connection limit, and 413 for a
//! body over the limit before the upstream sees anything.

mod common;
mod upstream;

use common::{connect, read_response, request, write_file, Gateway, Opts};
use serde_json::json;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use upstream::Upstream;

fn apply_json(gw: &Gateway, items: serde_json::Value) {
    let r = gw.admin_call(
        "POST",
        "/apply",
        "application/json",
        items.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Every host on port 80 goes to `up`.
fn route_all_to(gw: &Gateway, up: &Upstream) {
    let host = "edge.upstream";
    apply_json(
        gw,
        json!([
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "edge-upstream"},
             "spec": {"hosts": [host], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                      "resolution": "STATIC", "endpoints": [{"address": "127.0.0.1", "ports": {"http": up.port()}}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "edge"},
             "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "edge"},
             "spec": {"hosts": ["*"], "gateways": ["edge"], "http": [{"route": [{"destination": {"host": host}}]}]}}
        ]),
    );
}

/// A gateway started with `mesh` as its `--mesh-config` (and `args`).
fn gateway_with_mesh(mesh: &str, args: &[&str]) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "mesh.yaml", mesh);
    let mut opts = Opts::default()
        .arg("--mesh-config")
        .arg(path.to_string_lossy());
    for a in args {
        opts = opts.arg(*a);
    }
    (Gateway::start(opts), dir)
}

fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    gw.get("/metrics")
        .text()
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The last access-log line whose path is `path`.
fn logged(gw: &Gateway, path: &str) -> Option<serde_json::Value> {
    common::eventually(Duration::from_secs(5), || {
        gw.access_log()
            .into_iter()
            .rev()
            .find(|l| l["path"] == path)
    })
}

fn header<'a>(seen: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    seen["headers"][name].as_str()
}

#[test]
fn one_trusted_proxy_names_the_client_in_x_forwarded_for() {
    let up = Upstream::start("xff");
    let (gw, _dir) = gateway_with_mesh(
        "defaultConfig:\n  gatewayTopology:\n    numTrustedProxies: 1\n",
        &[],
    );
    route_all_to(&gw, &up);
    let r = request(
        gw.http,
        "GET",
        "/trusted",
        &[
            ("X-Forwarded-For", "198.51.100.1, 203.0.113.7"),
            ("X-Envoy-External-Address", "6.6.6.6"),
        ],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.seen().pop().expect("the upstream got the request");
    // The header is kept and the peer appended, as Envoy does; the client is the hop the
    // trusted proxy appended, and what the client claimed itself is replaced.
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        Some("198.51.100.1, 203.0.113.7, 127.0.0.1")
    );
    assert_eq!(
        header(&seen, "x-envoy-external-address"),
        Some("203.0.113.7")
    );
    let line = logged(&gw, "/trusted").expect("access log line");
    assert_eq!(line["downstream_remote_address"], "203.0.113.7:0");
    assert_eq!(
        line["x_forwarded_for"],
        "198.51.100.1, 203.0.113.7, 127.0.0.1"
    );
}

#[test]
fn without_trusted_proxies_the_client_is_the_peer() {
    let up = Upstream::start("peer");
    let gw = Gateway::start(Opts::default());
    route_all_to(&gw, &up);
    let r = request(
        gw.http,
        "GET",
        "/untrusted",
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Envoy-External-Address", "6.6.6.6"),
        ],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.seen().pop().expect("the upstream got the request");
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    // The peer (loopback) is internal: no external address, and the client's own is dropped.
    assert_eq!(header(&seen, "x-envoy-external-address"), None);
    let line = logged(&gw, "/untrusted").expect("access log line");
    let remote: SocketAddr = line["downstream_remote_address"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("the peer address and port");
    assert_eq!(remote.ip().to_string(), "127.0.0.1");
    assert_ne!(remote.port(), 0);
}

/// Sends `preamble` (a PROXY header) then a GET of `path`, and reads the answer.
fn get_after(addr: SocketAddr, preamble: &[u8], path: &str) -> std::io::Result<common::Response> {
    let mut s = connect(addr)?;
    let mut bytes = preamble.to_vec();
    bytes.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    s.write_all(&bytes)?;
    read_response(&mut s)
}

/// A PROXY v2 header (PROXY command, TCP over IPv4) from `src` to 10.0.0.1:80.
fn proxy_v2(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[10, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

#[test]
fn proxy_protocol_gives_the_client_address_and_is_required() {
    let up = Upstream::start("pp");
    let (gw, _dir) = gateway_with_mesh(
        "defaultConfig:\n  gatewayTopology:\n    proxyProtocol: {}\n",
        &[],
    );
    route_all_to(&gw, &up);

    let r = get_after(
        gw.http,
        b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 80\r\n",
        "/v1",
    )
    .expect("request after a v1 header");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.seen().pop().expect("the upstream got the v1 request");
    assert_eq!(header(&seen, "x-forwarded-for"), Some("203.0.113.9"));
    assert_eq!(
        header(&seen, "x-envoy-external-address"),
        Some("203.0.113.9")
    );
    let line = logged(&gw, "/v1").expect("access log line");
    assert_eq!(line["downstream_remote_address"], "203.0.113.9:40000");

    let r = get_after(gw.http, &proxy_v2([198, 51, 100, 20], 41000), "/v2")
        .expect("request after a v2 header");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.seen().pop().expect("the upstream got the v2 request");
    assert_eq!(header(&seen, "x-forwarded-for"), Some("198.51.100.20"));
    let line = logged(&gw, "/v2").expect("access log line");
    assert_eq!(line["downstream_remote_address"], "198.51.100.20:41000");

    // The same on the TLS listener's port (decided per connection): a v1 header before the
    // ClientHello is read there too; here a plain request without a header is closed unanswered.
    let hits = up.hits();
    for addr in [gw.http, gw.https] {
        let mut s = connect(addr).expect("connect");
        s.write_all(b"GET /none HTTP/1.1\r\nHost: pp.test\r\n\r\n")
            .expect("write");
        let mut buf = Vec::new();
        let n = s.read_to_end(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "no answer without a PROXY header on {addr}: {buf:?}");
    }
    assert_eq!(up.hits(), hits, "nothing reached the upstream");
    let errors = metric(
        &gw,
        "gateway_downstream_proxy_protocol_errors_total{listener=\"http\"}",
    )
    .expect("series");
    assert!(errors >= 1.0, "{errors}");
}

#[test]
fn the_connection_limit_closes_connections_over_it() {
    let gw = Gateway::start(Opts::default().arg("--max-connections").arg("2"));
    apply_json(
        &gw,
        json!([{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "lim"},
            "spec": {"hosts": ["lim.test"], "http": [{"directResponse": {"status": 200, "body": {"string": "ok"}}}]}}]),
    );
    let open = || metric(&gw, "gateway_downstream_connections{listener=\"http\"}");
    let held: Vec<_> = (0..2).map(|_| connect(gw.http).expect("connect")).collect();
    assert!(
        common::eventually(Duration::from_secs(5), || (open() == Some(2.0))
            .then_some(()))
        .is_some(),
        "two connections held: {:?}",
        open()
    );
    let mut s = connect(gw.http).expect("the kernel accepts the third");
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: lim.test\r\n\r\n");
    let mut buf = Vec::new();
    assert_eq!(s.read_to_end(&mut buf).unwrap_or(0), 0, "closed unanswered");
    let refused = metric(
        &gw,
        "gateway_downstream_connections_refused_total{listener=\"http\"}",
    );
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");
    drop(held);
    let served = common::eventually(Duration::from_secs(5), || {
        request(gw.http, "GET", "/", &[("Host", "lim.test")], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(served.is_some(), "served again once under the limit");
}

#[test]
fn a_body_over_the_limit_is_refused_before_the_upstream() {
    let up = Upstream::start("big");
    let gw = Gateway::start(Opts::default().arg("--max-request-body-bytes").arg("1024"));
    route_all_to(&gw, &up);
    let r = request(gw.http, "POST", "/small", &[], &[b'a'; 1024]).expect("request");
    assert_eq!(r.status, 200, "at the limit: {}", r.text());
    let hits = up.hits();
    let r = request(gw.http, "POST", "/big", &[], &[b'a'; 4096]).expect("request");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        up.hits(),
        hits,
        "the upstream never saw the oversized request"
    );
    // A chunked body is cut when it crosses the limit.
    let mut s = connect(gw.http).expect("connect");
    let head = common::request_head(
        gw.http,
        "POST",
        "/chunked",
        &[("Transfer-Encoding", "chunked")],
        None,
    );
    s.write_all(&head).expect("head");
    let chunk = format!("400\r\n{}\r\n", "b".repeat(1024));
    s.write_all(chunk.as_bytes()).expect("first chunk");
    s.write_all(chunk.as_bytes()).expect("second chunk");
    let _ = s.write_all(b"0\r\n\r\n");
    let r = read_response(&mut s).expect("answer");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        up.seen()
            .iter()
            .all(|s| s["uri"] != "/chunked" || s["body_len"] != 2048),
        "the upstream never got the whole body"
    );
}

/// What one `slowhttptest` run showed.
struct SlowRun {
    /// The CSV statistics: seconds, closed, pending, connected, service available.
    rows: Vec<Vec<u64>>,
    /// The tool's report.
    stdout: String,
    /// Normal requests answered meanwhile.
    served: usize,
}

/// Runs `slowhttptest` with `args` against `url` while a normal client requests `probe` every
/// 100 ms (on until a second after the tool ends). Panics on a failed normal request.
fn slowhttptest_beside_a_client(args: &[&str], url: &str, probe: SocketAddr) -> SlowRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("stats");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                match request(probe, "GET", "/probe", &[("Host", "probe.test")], b"") {
                    Ok(r) if r.status == 200 && started.elapsed() < Duration::from_secs(3) => {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failures.lock().expect("lock").push(format!(
                        "{:?} after {:?}",
                        other.map(|r| r.status),
                        started.elapsed()
                    )),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = Command::new("slowhttptest")
        .args(args)
        .args(["-g", "-o"])
        .arg(&prefix)
        .args(["-u", url])
        .output()
        .expect("slowhttptest runs (scripts/setup test installs it)");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    client.join().expect("client thread");
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "the normal client failed {} times, first: {:?}",
        failures.len(),
        failures.first()
    );
    let csv = std::fs::read_to_string(prefix.with_extension("csv")).unwrap_or_else(|e| {
        panic!(
            "slowhttptest statistics: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let rows = csv
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .filter(|r| r.len() >= 4)
        .collect();
    SlowRun {
        rows,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        served: done.load(Ordering::SeqCst),
    }
}

fn slow_gateway(up: &Upstream) -> Gateway {
    let gw = Gateway::start(
        Opts::default()
            .arg("--request-headers-timeout")
            .arg("2s")
            .arg("--request-body-timeout")
            .arg("2s")
            .arg("--request-body-min-rate")
            .arg("1000"),
    );
    route_all_to(&gw, up);
    gw
}

/// The slow connections were all closed by the gateway long before the tool's 12 s were up: the
/// tool stopped because none was left, within a few seconds, and the normal client was served
/// meanwhile.
fn assert_closed_by_the_gateway(run: &SlowRun, connections: u64) {
    assert!(
        run.stdout.contains("No open connections left"),
        "{}",
        run.stdout
    );
    let ended = run
        .stdout
        .split("Test ended on ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the second the test ended on");
    let most = run.rows.iter().map(|r| r[3]).max().unwrap_or(0);
    assert!(
        ended < 9 && most >= connections * 9 / 10,
        "ended on second {ended}, at most {most} of {connections} connected: {:?}",
        run.rows
    );
    assert!(
        run.served >= 10,
        "the normal client was served: {}",
        run.served
    );
}

#[test]
fn slowloris_connections_are_closed_while_a_client_is_served() {
    let up = Upstream::start("slowloris");
    let gw = slow_gateway(&up);
    let url = format!("http://{}/", gw.http);
    // 100 connections that add a header line every second for 12 s: each is cut 2 s after its
    // first byte, long before it would finish.
    let run = slowhttptest_beside_a_client(
        &[
            "-H", "-c", "100", "-r", "100", "-i", "1", "-x", "10", "-l", "12", "-p", "3",
        ],
        &url,
        gw.http,
    );
    assert_closed_by_the_gateway(&run, 100);
    let fired = metric(
        &gw,
        "gateway_downstream_timeouts_total{kind=\"request_headers\"}",
    )
    .expect("series");
    assert!(fired >= 90.0, "{fired}");
}

#[test]
fn slow_bodies_are_cut_while_a_client_is_served() {
    let up = Upstream::start("rudy");
    let gw = slow_gateway(&up);
    let url = format!("http://{}/upload", gw.http);
    // 100 POSTs announcing 8 KiB and sending a few bytes a second.
    let run = slowhttptest_beside_a_client(
        &[
            "-B", "-c", "100", "-r", "100", "-i", "1", "-x", "10", "-s", "8192", "-l", "12", "-p",
            "3",
        ],
        &url,
        gw.http,
    );
    assert_closed_by_the_gateway(&run, 100);
    let fired = metric(
        &gw,
        "gateway_downstream_timeouts_total{kind=\"request_body\"}",
    )
    .expect("series");
    assert!(fired >= 90.0, "{fired}");
}

/// A TCP server that names itself to every client at once.
fn ident_server(name: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(name.as_bytes());
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    });
    port
}

#[test]
fn the_proxy_protocol_source_is_what_tcp_routes_match_by_source_subnet() {
    let (inside, outside) = (ident_server("inside"), ident_server("outside"));
    let tcp_port = common::free_port();
    let (gw, _dir) = gateway_with_mesh(
        "defaultConfig:\n  gatewayTopology:\n    proxyProtocol: {}\n",
        &["--listen", &format!("31400=127.0.0.1:{tcp_port}")],
    );
    let se = |name: &str, port: u16| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": name},
            "spec": {"hosts": [format!("{name}.internal")], "ports": [{"number": port, "name": "tcp", "protocol": "TCP"}],
                     "resolution": "STATIC", "endpoints": [{"address": "127.0.0.1"}]}})
    };
    apply_json(
        &gw,
        json!([
            se("inside", inside),
            se("outside", outside),
            {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "tcp"},
             "spec": {"servers": [{"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "tcp"},
             "spec": {"hosts": ["*"], "gateways": ["tcp"], "tcp": [
                {"match": [{"sourceSubnet": "203.0.113.0/24"}],
                 "route": [{"destination": {"host": "inside.internal", "port": {"number": inside}}}]},
                {"route": [{"destination": {"host": "outside.internal", "port": {"number": outside}}}]}]}}
        ]),
    );
    let via = |header: &[u8]| {
        let mut s = connect(SocketAddr::from(([127, 0, 0, 1], tcp_port))).expect("connect");
        s.write_all(header).expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    };
    assert_eq!(
        via(b"PROXY TCP4 203.0.113.50 10.0.0.1 40000 31400\r\n"),
        "inside"
    );
    assert_eq!(via(&proxy_v2([198, 51, 100, 1], 40001)), "outside");
    assert_eq!(via(&proxy_v2([203, 0, 113, 51], 40002)), "inside");
    assert_eq!(via(b"hello"), "", "no header: closed, no route taken");
}

#[test]
fn a_stalled_body_gets_408_and_a_steady_one_passes() {
    let up = Upstream::start("stall");
    let gw = Gateway::start(
        Opts::default()
            .arg("--request-body-timeout")
            .arg("1s")
            .arg("--request-body-min-rate")
            .arg("100"),
    );
    route_all_to(&gw, &up);
    let head = |path: &str| common::request_head(gw.http, "POST", path, &[], Some(300));
    // 10 bytes, then nothing: the deadline (1 s, plus nothing earned) passes.
    let mut s = connect(gw.http).expect("connect");
    s.write_all(&head("/stalled")).expect("head");
    s.write_all(&[b'x'; 10]).expect("some body");
    let started = Instant::now();
    let r = read_response(&mut s).expect("answer");
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // 300 bytes over 1.5 s, 100 every half second: each 100 bytes earn a second, so it passes.
    let mut s = connect(gw.http).expect("connect");
    s.write_all(&head("/steady")).expect("head");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        s.write_all(&[b'y'; 100]).expect("body");
    }
    let r = read_response(&mut s).expect("answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.seen();
    assert!(seen
        .iter()
        .any(|s| s["uri"] == "/steady" && s["body_len"] == 300));
    let fired = metric(
        &gw,
        "gateway_downstream_timeouts_total{kind=\"request_body\"}",
    );
    assert_eq!(fired, Some(1.0));
}
