//! End-to-end tests of the live behaviour of the data plane: reloads under load with no request
//! lost, Istio's request-routing and traffic-shifting walkthrough applied as JSON, ambiguous
//! framing refused at the edge, and a SIGTERM drain that lets slow requests finish.

mod common;
mod upstream;

use common::{connect, read_response, request, Gateway, Opts, Response};
use serde_json::json;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use upstream::Upstream;

fn send(gw: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut h: Vec<(&str, &str)> = vec![("Host", host)];
    h.extend_from_slice(headers);
    request(gw.http, "GET", path, &h, b"").expect("request")
}

fn registry(ups: &[&Upstream], host: &str) -> serde_json::Value {
    let endpoints: Vec<_> = ups
        .iter()
        .map(|u| json!({"address": "127.0.0.1", "ports": {"http": u.port()}, "labels": {"version": u.name}}))
        .collect();
    json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": host.replace('.', "-")},
        "spec": {"hosts": [host], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                 "resolution": "STATIC", "endpoints": endpoints}})
}

fn apply_json(gw: &Gateway, items: serde_json::Value) {
    let r = gw.admin_call(
        "POST",
        "/apply",
        "application/json",
        items.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A VirtualService sending `reload.test` to one upstream and stamping the config version.
fn versioned_vs(version: usize, host: &str) -> serde_json::Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reload"},
        "spec": {"hosts": ["reload.test"], "http": [{
            "headers": {"response": {"set": {"x-config-version": version.to_string()}}},
            "route": [{"destination": {"host": host}}]}]}})
}

#[test]
fn two_hundred_changes_under_load_lose_no_request() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(Opts::default());
    apply_json(
        &gw,
        json!([
            registry(&[&a], "a.svc"),
            registry(&[&b], "b.svc"),
            versioned_vs(0, "a.svc")
        ]),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let total = Arc::new(Mutex::new(0usize));
    let http = gw.http;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, total) = (stop.clone(), failures.clone(), total.clone());
        clients.push(std::thread::spawn(move || {
            let mut last = 0usize;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                match request(http, "GET", "/", &[("Host", "reload.test")], b"") {
                    Ok(r) => {
                        let v: usize = r
                            .header("x-config-version")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(usize::MAX);
                        let up = r.header("x-upstream").unwrap_or("").to_string();
                        let want = if v.is_multiple_of(2) { "a" } else { "b" };
                        if r.status != 200 || v == usize::MAX || up != want || v < last {
                            failures.lock().expect("lock").push(format!(
                                "status {} version {v} (last {last}) upstream {up}",
                                r.status
                            ));
                        }
                        last = v.max(last);
                    }
                    Err(e) => failures.lock().expect("lock").push(e.to_string()),
                }
                n += 1;
            }
            *total.lock().expect("lock") += n;
        }));
    }
    let started = Instant::now();
    for v in 1..=200 {
        let host = if v % 2 == 0 { "a.svc" } else { "b.svc" };
        let r = gw.put(
            "/apis/networking.istio.io/v1/namespaces/default/virtualservices/reload",
            &versioned_vs(v, host),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        // The next request after the API answered sees the change.
        let seen = send(&gw, "reload.test", "/", &[]);
        assert_eq!(
            seen.header("x-config-version"),
            Some(v.to_string().as_str())
        );
        let pause = Duration::from_millis(50).saturating_sub(Duration::from_millis(0));
        std::thread::sleep(pause);
    }
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let failures = failures.lock().expect("lock");
    let total = *total.lock().expect("lock");
    eprintln!(
        "requests during reloads: {total}, failures: {}",
        failures.len()
    );
    assert!(total > 200, "load was too light: {total}");
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn a_change_is_seen_by_the_next_request_on_a_kept_alive_connection() {
    let gw = Gateway::start(Opts::default());
    let vs = |body: &str| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "ka"},
            "spec": {"hosts": ["ka.test"], "http": [{"directResponse": {"status": 200, "body": {"string": body}}}]}})
    };
    apply_json(&gw, json!([vs("old")]));
    let mut s = connect(gw.http).expect("connect");
    let req = b"GET / HTTP/1.1\r\nHost: ka.test\r\n\r\n";
    s.write_all(req).expect("write");
    let r = read_response(&mut s).expect("first");
    assert_eq!(r.text(), "old");
    apply_json(&gw, json!([vs("new")]));
    s.write_all(req).expect("write on the same connection");
    assert_eq!(read_response(&mut s).expect("second").text(), "new");
    let open = || {
        gw.get("/metrics")
            .text()
            .lines()
            .find(|l| l.starts_with("gateway_open_connections{listener=\"http\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
    };
    assert_eq!(open(), Some(1), "the kept-alive connection is open");
    drop(s);
    assert!(
        common::eventually(Duration::from_secs(5), || (open() == Some(0)).then_some(())).is_some(),
        "closed connections are not counted: {:?}",
        open()
    );
}

#[test]
fn istio_request_routing_then_traffic_shifting_without_restart() {
    let (v1, v2, v3) = (
        Upstream::start("v1"),
        Upstream::start("v2"),
        Upstream::start("v3"),
    );
    let gw = Gateway::start(Opts::default());
    let host = "reviews.default.svc.cluster.local";
    let dr = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {"host": host, "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
            {"name": "v3", "labels": {"version": "v3"}}]}});
    apply_json(&gw, json!([registry(&[&v1, &v2, &v3], host), dr]));
    let path = "/apis/networking.istio.io/v1/namespaces/default/virtualservices/reviews";
    // Request routing: end-user jason goes to v2, everyone else to v1.
    let routing = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": [host], "http": [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": host, "subset": "v2"}}]},
            {"route": [{"destination": {"host": host, "subset": "v1"}}]}]}});
    assert_eq!(gw.put(path, &routing).status, 201);
    for _ in 0..20 {
        let j = send(&gw, host, "/reviews/0", &[("end-user", "jason")]);
        assert_eq!(j.header("x-upstream"), Some("v2"));
        let anon = send(&gw, host, "/reviews/0", &[]);
        assert_eq!(anon.header("x-upstream"), Some("v1"));
    }
    // Traffic shifting: 90/10, then 50/50, then 100% v3.
    let shift = |w1: i64, w3: i64| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {"hosts": [host], "http": [{"route": [
                {"destination": {"host": host, "subset": "v1"}, "weight": w1},
                {"destination": {"host": host, "subset": "v3"}, "weight": w3}]}]}})
    };
    for (w1, w3, lo, hi) in [
        (90, 10, 0.05, 0.16),
        (50, 50, 0.42, 0.58),
        (0, 100, 1.0, 1.0),
    ] {
        let r = gw.put(path, &shift(w1, w3));
        assert_eq!(r.status, 200, "{}", r.text());
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..400 {
            let r = send(&gw, host, "/reviews/0", &[]);
            *counts
                .entry(r.header("x-upstream").unwrap_or("?").to_string())
                .or_default() += 1;
        }
        let share = counts.get("v3").copied().unwrap_or(0) as f64 / 400.0;
        assert!(
            (lo..=hi).contains(&share),
            "{w1}/{w3}: v3 share {share}: {counts:?}"
        );
        assert_eq!(
            counts.keys().filter(|k| *k != "v1" && *k != "v3").count(),
            0,
            "{counts:?}"
        );
    }
}

/// Sends raw bytes and returns what came back and whether the server closed the connection.
fn raw(gw: &Gateway, bytes: &[u8]) -> (String, bool) {
    let mut s = connect(gw.http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[test]
fn ambiguous_framing_gets_400_and_the_connection_closes() {
    let gw = Gateway::start(Opts::default());
    apply_json(
        &gw,
        json!([{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "f"},
            "spec": {"hosts": ["*"], "http": [{"directResponse": {"status": 200, "body": {"string": "ok"}}}]}}]),
    );
    let (ok, _) = raw(
        &gw,
        b"GET / HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let cases: [(&str, &[u8]); 7] = [
        ("CL and TE", b"POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("differing CL", b"POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("repeated CL", b"POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("TE not chunked", b"POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
        ("TE chunked not final", b"POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: f\r\nX-Folded: a\r\n  b\r\n\r\n"),
        ("two Host", b"GET / HTTP/1.1\r\nHost: f\r\nHost: g\r\n\r\n"),
    ];
    for (name, bytes) in cases {
        let (out, closed) = raw(&gw, bytes);
        assert!(out.starts_with("HTTP/1.1 400"), "{name}: {out:?}");
        assert!(closed, "{name}: connection must close");
    }
}

#[test]
fn header_limits_answer_431() {
    let gw = Gateway::start(Opts::default());
    let mut many = String::from("GET / HTTP/1.1\r\nHost: f\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (out, closed) = raw(&gw, many.as_bytes());
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    assert!(closed);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: f\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (out, closed) = raw(&gw, big.as_bytes());
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    assert!(closed);
}

#[test]
fn sigterm_lets_fifty_slow_requests_finish_and_exits_zero() {
    let up = Upstream::start("slow");
    let mut gw = Gateway::start(Opts::default().arg("--drain-timeout").arg("20s"));
    apply_json(
        &gw,
        json!([registry(&[&up], "slow.svc"),
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "s"},
             "spec": {"hosts": ["slow.test"], "http": [{"route": [{"destination": {"host": "slow.svc"}}]}]}}]),
    );
    let http = gw.http;
    let clients: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                request(
                    http,
                    "GET",
                    "/",
                    &[("Host", "slow.test"), ("x-delay-ms", "1500")],
                    b"",
                )
                .map(|r| r.status)
                .map_err(|e| e.to_string())
            })
        })
        .collect();
    // Every request is upstream before the signal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.hits() < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(up.hits(), 50, "requests did not all reach the upstream");
    let pid = gw.pid().expect("running");
    let sent = Instant::now();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    std::thread::sleep(Duration::from_millis(100));
    let ready = request(gw.admin, "GET", "/readyz", &[], b"").map(|r| r.status);
    assert!(
        !matches!(ready, Ok(200)),
        "/readyz must stop answering 200 at once: {ready:?}"
    );
    let statuses: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    let status = gw
        .stop_within(Duration::from_secs(25))
        .expect("exit status");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "drain took {:?}",
        sent.elapsed()
    );
}
