//! Scale-out end to end: a real `etcd` and three gateway processes (A, B, C) on loopback ports,
//! all with `--store etcd://…`. In order, on one cluster (to stay within about a minute):
//! 1. a write through A is served by B and C within 1 s: 100 writes, p50/p99/max printed;
//! 2. writes are accepted on any replica, also unconditional ones on a replica whose view is
//!    behind (it reloads and retries instead of answering 409);
//! 3. concurrent PUTs with one `resourceVersion` on the three replicas: one 200, two 409;
//! 4. etcd killed: every replica keeps serving (zero failed requests), `/readyz` stays 200,
//!    writes answer 503 with a clear message, `gateway_store_connected` drops to 0;
//! 5. meanwhile another writer changes the configuration and compacts etcd's history, then etcd
//!    comes back: every replica relists (its log says so) and converges on the same generation.
//!
//! Without an `etcd` binary the test is skipped with a message, unless `CI` is set: then it fails.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const VS: &str = "/apis/networking.istio.io/v1/namespaces/default/virtualservices";
const PREFIX: &str = "/e2e";
const WRITES: usize = 100;

/// A VirtualService answering `body` itself on `probe.example.com` (no upstream involved, so any
/// failure is the gateway's).
fn probe(body: &str, rv: Option<&str>) -> Value {
    let mut v = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "probe"},
        "spec": {"hosts": ["probe.example.com"],
                 "http": [{"directResponse": {"status": 200, "body": {"string": body}}}]}});
    if let Some(rv) = rv {
        v["metadata"]["resourceVersion"] = json!(rv);
    }
    v
}

/// What the data plane answers on the probe host: status and body.
fn served(g: &Gateway) -> Option<(u16, String)> {
    request(g.http, "GET", "/", &[("Host", "probe.example.com")], b"")
        .ok()
        .map(|r| (r.status, r.text()))
}

fn serves(g: &Gateway, body: &str) -> bool {
    served(g).is_some_and(|(s, b)| s == 200 && b == body)
}

fn metric(g: &Gateway, name: &str) -> Option<f64> {
    let text = g.get("/metrics").text();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

fn start_replica(url: &str) -> Gateway {
    Gateway::start(
        Opts::default()
            .arg("--store")
            .arg(url)
            .arg("--threads")
            .arg("1")
            .arg("--access-log")
            .arg("off"),
    )
}

fn put_probe(g: &Gateway, body: &str, rv: Option<&str>) -> Response {
    g.put(&format!("{VS}/probe"), &probe(body, rv))
}

fn resource_version(r: &Response) -> String {
    r.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no resourceVersion: {}", r.text()))
        .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

#[test]
fn three_replicas_share_one_etcd() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let url = format!("{}{PREFIX}", etcd.url());
    let t0 = Instant::now();
    let replicas = [
        start_replica(&url),
        start_replica(&url),
        start_replica(&url),
    ];
    let [a, b, c] = &replicas;

    // ----- 1. propagation -----
    let first = put_probe(a, "w0", None);
    assert!(matches!(first.status, 200 | 201), "{}", first.text());
    for g in [b, c] {
        assert!(
            eventually(Duration::from_secs(5), || serves(g, "w0").then_some(())).is_some(),
            "the first write never reached a replica: {:?}\n{}",
            served(g),
            g.logs()
        );
    }
    let mut lags = Vec::with_capacity(WRITES);
    for i in 1..=WRITES {
        let body = format!("w{i}");
        let r = put_probe(a, &body, None);
        assert_eq!(r.status, 200, "{}", r.text());
        let acked = Instant::now();
        let (mut on_b, mut on_c) = (false, false);
        while !(on_b && on_c) {
            on_b = on_b || serves(b, &body);
            on_c = on_c || serves(c, &body);
            assert!(
                acked.elapsed() < Duration::from_secs(5),
                "write {i} not served by B ({on_b}) and C ({on_c}) within 5 s"
            );
        }
        lags.push(acked.elapsed());
    }
    lags.sort();
    let p99 = percentile(&lags, 0.99);
    eprintln!(
        "propagation A -> B and C over {WRITES} writes: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&lags, 0.5),
        p99,
        lags[lags.len() - 1]
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    let generations: Vec<_> = replicas
        .iter()
        .map(|g| metric(g, "gateway_config_generation"))
        .collect();
    assert!(
        generations
            .iter()
            .all(|g| *g == generations[0] && g.is_some()),
        "{generations:?}"
    );
    for g in &replicas {
        assert_eq!(metric(g, "gateway_store_connected"), Some(1.0));
    }

    // ----- 2. writes on any replica, unconditional ones on a lagging view too -----
    for (n, g) in replicas.iter().cycle().take(30).enumerate() {
        // No waiting between writes: the next replica has usually not seen the last one yet.
        let r = put_probe(g, &format!("any{n}"), None);
        assert_eq!(r.status, 200, "write {n}: {}", r.text());
    }
    for g in &replicas {
        assert!(
            eventually(Duration::from_secs(5), || serves(g, "any29").then_some(())).is_some(),
            "{:?}",
            served(g)
        );
    }

    // ----- 3. one resourceVersion, three concurrent writers: one wins -----
    for round in 0..5 {
        let rv = resource_version(&a.get(&format!("{VS}/probe")));
        for g in [b, c] {
            // Everyone has seen `rv`, so a 409 can only come from the race itself.
            assert!(eventually(Duration::from_secs(5), || {
                (resource_version(&g.get(&format!("{VS}/probe"))) == rv).then_some(())
            })
            .is_some());
        }
        let barrier = Arc::new(Barrier::new(3));
        let codes: Vec<(u16, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = replicas
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let barrier = barrier.clone();
                    let rv = rv.clone();
                    s.spawn(move || {
                        let body = probe(&format!("race{round}-{i}"), Some(&rv)).to_string();
                        let path = format!("{VS}/probe");
                        let headers = [("Content-Type", "application/json")];
                        barrier.wait();
                        let r =
                            request(g.admin, "PUT", &path, &headers, body.as_bytes()).expect("PUT");
                        let reason = r.json()["reason"].as_str().unwrap_or("").to_string();
                        (r.status, reason)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("writer"))
                .collect()
        });
        let wins = codes.iter().filter(|(s, _)| *s == 200).count();
        let conflicts = codes
            .iter()
            .filter(|(s, r)| *s == 409 && r == "Conflict")
            .count();
        assert_eq!((wins, conflicts), (1, 2), "round {round}: {codes:?}");
    }

    // ----- 4. etcd down: serving goes on, writes are 503 -----
    let body = "before-outage";
    assert_eq!(put_probe(b, body, None).status, 200);
    for g in &replicas {
        assert!(eventually(Duration::from_secs(5), || serves(g, body).then_some(())).is_some());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic: Vec<_> = replicas
        .iter()
        .map(|g| {
            let (addr, stop, sent) = (g.http, stop.clone(), sent.clone());
            std::thread::spawn(move || traffic_until(addr, body, &stop, &sent))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    etcd.kill();
    let killed = Instant::now();
    for g in &replicas {
        assert!(
            eventually(Duration::from_secs(10), || {
                (metric(g, "gateway_store_connected") == Some(0.0)).then_some(())
            })
            .is_some(),
            "gateway_store_connected stayed 1"
        );
    }
    let writes: Vec<Response> = std::thread::scope(|s| {
        let hs: Vec<_> = replicas
            .iter()
            .map(|g| s.spawn(|| put_probe(g, "during-outage", None)))
            .collect();
        hs.into_iter().map(|h| h.join().expect("write")).collect()
    });
    for r in &writes {
        assert_eq!(r.status, 503, "{}", r.text());
        let v = r.json();
        assert_eq!(v["reason"], "ServiceUnavailable");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("store is unavailable")),
            "{v}"
        );
    }
    for g in &replicas {
        assert_eq!(
            request(g.admin, "GET", "/readyz", &[], b"")
                .map(|r| r.status)
                .ok(),
            Some(200)
        );
        // Reads are served from the last good view.
        assert_eq!(g.get(&format!("{VS}/probe")).status, 200);
    }
    // At least a second of traffic without etcd, however fast the checks above went.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(killed.elapsed()));
    stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = traffic
        .into_iter()
        .flat_map(|t| t.join().expect("traffic"))
        .collect();
    let total = sent.load(Ordering::SeqCst);
    eprintln!(
        "during the outage: {total} requests, {} failed",
        failures.len()
    );
    assert!(total >= 50, "too little traffic to mean anything: {total}");
    assert!(failures.is_empty(), "{failures:?}");

    // ----- 5. a compacted history while they were cut off: relist and converge -----
    // Another replica writes while only it can reach etcd (on a private port), then the history
    // is compacted past everything A, B and C have seen.
    let private = etcd.restart_elsewhere();
    let d = start_replica(&format!("{private}{PREFIX}"));
    let mut last = String::new();
    for n in 0..3 {
        let r = put_probe(&d, &format!("compacted{n}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        last = resource_version(&r);
    }
    drop(d);
    etcd.compact(&last);
    etcd.restart();
    for g in &replicas {
        assert!(
            eventually(Duration::from_secs(15), || serves(g, "compacted2")
                .then_some(()))
            .is_some(),
            "a replica did not converge after the compaction: {:?}\n{}",
            served(g),
            g.logs()
        );
    }
    let want: f64 = last.parse().expect("revision");
    for g in &replicas {
        assert!(
            eventually(Duration::from_secs(5), || g
                .logs()
                .contains("compacted past the watch; relisting")
                .then_some(()))
            .is_some(),
            "etcd's compaction never reached the watch:\n{}",
            g.logs()
        );
        assert!(
            eventually(Duration::from_secs(10), || {
                (metric(g, "gateway_store_connected") == Some(1.0)
                    && metric(g, "gateway_config_generation") == Some(want))
                .then_some(())
            })
            .is_some(),
            "generation {:?}, connected {:?}",
            metric(g, "gateway_config_generation"),
            metric(g, "gateway_store_connected")
        );
    }
    // Writable again, everywhere.
    assert_eq!(put_probe(c, "after", None).status, 200);
    for g in &replicas {
        assert!(eventually(Duration::from_secs(5), || serves(g, "after").then_some(())).is_some());
    }
    eprintln!("scale-out e2e done in {:?}", t0.elapsed());
}

/// Requests on the probe host until `stop`; returns every failure (anything but 200 + `body`).
fn traffic_until(
    addr: SocketAddr,
    body: &str,
    stop: &AtomicBool,
    sent: &AtomicUsize,
) -> Vec<String> {
    let mut failures = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        sent.fetch_add(1, Ordering::SeqCst);
        match request(addr, "GET", "/", &[("Host", "probe.example.com")], b"") {
            Ok(r) if r.status == 200 && r.text() == body => {}
            Ok(r) => failures.push(format!("{addr}: {} {}", r.status, r.text())),
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    failures
}

// ----- a real etcd -----

/// An `etcd` process on free loopback ports with a private data dir; killed on drop.
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The client port the replicas are given.
    client: u16,
    /// Where it listens now (another port during `restart_elsewhere`).
    current: u16,
    peer: u16,
}

impl Etcd {
    /// None (with a message) when there is no `etcd` binary and CI is not set.
    fn start() -> Option<Etcd> {
        let found = Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
                panic!("etcd is not installed (Debian: apt-get install etcd-server; scripts/setup does)");
            }
            eprintln!("skipped: no etcd binary (apt-get install etcd-server)");
            return None;
        }
        let client = free_port();
        let mut e = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            client,
            current: client,
            peer: free_port(),
        };
        e.spawn(client);
        Some(e)
    }

    fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client)
    }

    fn spawn(&mut self, port: u16) {
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("log");
        let child = Command::new("etcd")
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("default={peer}"))
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("error")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        self.current = port;
        let ok = eventually(Duration::from_secs(20), || {
            etcd_http(port, "GET", "/health", "")
                .filter(|b| b.contains("\"health\":\"true\""))
                .map(|_| ())
        });
        if ok.is_none() {
            let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
            panic!("etcd not healthy within 20 s:\n{log}");
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Same data dir, same ports.
    fn restart(&mut self) {
        self.kill();
        self.spawn(self.client);
    }

    /// Same data dir on a client port the replicas do not know; returns its URL.
    fn restart_elsewhere(&mut self) -> String {
        self.kill();
        let port = free_port();
        self.spawn(port);
        format!("etcd://127.0.0.1:{port}")
    }

    /// Compacts the history before `revision`, through etcd's JSON gateway.
    fn compact(&self, revision: &str) {
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let out = etcd_http(self.current, "POST", "/v3/kv/compaction", &body);
        assert!(
            out.as_deref().is_some_and(|b| b.contains("header")),
            "compaction failed: {out:?}"
        );
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request to etcd's client port; the response's body-and-all as text.
fn etcd_http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
