//! End-to-end tests of the hitless binary upgrade against the real binary: a new process started
//! with `--upgrade` takes the listening sockets of the running one on SIGQUIT while that one
//! drains, under steady keep-alive load, without a failed request; SIGQUIT with no new process
//! drains like SIGTERM; and a second process on a data dir in use is refused.

mod common;
mod upstream;

use common::{connect, read_response, request, request_head, Gateway, Opts, Response};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use upstream::Upstream;

fn apply(gw: &Gateway, yaml: &str) -> Response {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
    r
}

/// A ServiceEntry for `up` and a VirtualService for `u.test` whose answers carry `x-config: TAG`.
fn config(up: &Upstream, tag: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: up}}\nspec:\n  hosts: [up.svc]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: u}}\nspec:\n  hosts: [u.test]\n  http:\n  - headers: {{response: {{set: {{x-config: {tag}}}}}}}\n    route: [{{destination: {{host: up.svc}}}}]\n",
        port = up.port()
    )
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Reaps `child` within `timeout` (then kills it and returns None).
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the load saw: each answer's `x-config`, with when it came, and every failure.
#[derive(Default)]
struct Seen {
    answers: Vec<(Instant, String)>,
    failures: Vec<String>,
}

/// One client: a keep-alive connection sending `GET /` back to back, reconnecting only when an
/// answer says `Connection: close`. Anything but a 200 from the upstream is a failure, and so is a
/// kept-alive connection that breaks: the gateway must close it only after telling the client.
fn client(http: SocketAddr, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let head = request_head(
        http,
        "GET",
        "/",
        &[("Host", "u.test"), ("Connection", "keep-alive")],
        Some(0),
    );
    let mut conn = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let reused = conn.is_some();
        let mut s = match conn.take() {
            Some(s) => s,
            None => match connect(http) {
                Ok(s) => s,
                Err(e) => {
                    seen.lock()
                        .expect("seen")
                        .failures
                        .push(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let answer = std::io::Write::write_all(&mut s, &head).and_then(|()| read_response(&mut s));
        let mut seen = seen.lock().expect("seen");
        match answer {
            Ok(r) if r.status == 200 && r.header("x-upstream") == Some("up") => {
                let tag = r.header("x-config").unwrap_or("").to_string();
                seen.answers.push((Instant::now(), tag));
                if !r
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    conn = Some(s);
                }
            }
            Ok(r) => seen.failures.push(format!(
                "request {n}: status {} x-gateway-error {:?}: {}",
                r.status,
                r.header("x-gateway-error"),
                r.text()
            )),
            Err(e) => seen.failures.push(format!(
                "request {n} ({} connection): {e}",
                if reused { "kept-alive" } else { "new" }
            )),
        }
    }
}

#[test]
fn an_upgrade_under_load_loses_no_request_and_the_new_process_takes_config() {
    let up = Upstream::start("up");
    let mut gw = Gateway::start(
        Opts::default()
            .arg("--drain-timeout")
            .arg("10s")
            .arg("--access-log")
            .arg("off"),
    );
    apply(&gw, &config(&up, "before"));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (http, stop, seen) = (gw.http, stop.clone(), seen.clone());
            std::thread::spawn(move || client(http, stop, seen))
        })
        .collect();
    let answered = |seen: &Mutex<Seen>| seen.lock().expect("seen").answers.len();
    assert!(
        common::eventually(Duration::from_secs(10), || (answered(&seen) >= 100)
            .then_some(()))
        .is_some(),
        "the load does not flow: {:?}",
        seen.lock().expect("seen").failures
    );

    // The admin address changes hands too: watch how long it stops answering.
    let probing = Arc::new(AtomicBool::new(true));
    let prober = {
        let (admin, probing) = (gw.admin, probing.clone());
        std::thread::spawn(move || {
            let (mut longest, mut since): (Duration, Option<Instant>) = (Duration::ZERO, None);
            let mut statuses = Vec::new();
            while probing.load(Ordering::Relaxed) {
                match request(admin, "GET", "/readyz", &[], b"") {
                    Ok(r) => {
                        if statuses.last() != Some(&r.status) {
                            statuses.push(r.status);
                        }
                        if let Some(t) = since.take() {
                            longest = longest.max(t.elapsed());
                        }
                    }
                    Err(_) => {
                        since.get_or_insert_with(Instant::now);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some(t) = since {
                longest = longest.max(t.elapsed());
            }
            (longest, statuses)
        })
    };
    let mut old = gw.spawn_upgrade().expect("old process");
    let sock = gw.data_dir.join("upgrade.sock");
    assert!(
        common::eventually(Duration::from_secs(20), || sock.exists().then_some(())).is_some(),
        "the new process never waited on {}\n{}",
        sock.display(),
        gw.logs()
    );
    signal(old.id(), "QUIT");
    let quit = Instant::now();
    let status = wait_exit(&mut old, Duration::from_secs(30));
    let exited = Instant::now();
    assert!(
        status.is_some_and(|s| s.success()),
        "old process: {status:?}\n{}",
        gw.logs()
    );
    // Pingora keeps the old listeners open 5 s beside the new ones; then the drain (nothing slow
    // is in flight) is quick.
    assert!(
        exited - quit < Duration::from_secs(15),
        "the old process took {:?} to exit",
        exited - quit
    );
    gw.wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("new process: {e}\n{}", gw.logs()));
    probing.store(false, Ordering::Relaxed);
    let (admin_gap, readyz) = prober.join().expect("prober");
    // Only the moments between the old process closing its admin listener and the new one binding
    // it (taking the store's lock and loading it in between).
    assert!(
        admin_gap < Duration::from_millis(500),
        "the admin API did not answer for {admin_gap:?} (/readyz said {readyz:?})"
    );
    assert_eq!(readyz.last(), Some(&200), "/readyz said {readyz:?}");

    std::thread::sleep(Duration::from_secs(2));
    // The new process owns the store: a change through the admin API reaches the traffic.
    apply(&gw, &config(&up, "after"));
    let changed = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }

    let seen = seen.lock().expect("seen");
    assert!(
        seen.failures.is_empty(),
        "{} failed requests of {}: {:?}\n{}",
        seen.failures.len(),
        seen.failures.len() + seen.answers.len(),
        &seen.failures[..seen.failures.len().min(20)],
        gw.logs()
    );
    let count = |from: Instant, to: Instant, tag: &str| {
        seen.answers
            .iter()
            .filter(|(t, g)| *t >= from && *t < to && g == tag)
            .count()
    };
    let end = Instant::now();
    let during = count(quit, exited, "before");
    let after_exit = count(exited, changed, "before");
    // Allow the first answers after the change to have been read before it.
    let new_config = count(changed + Duration::from_millis(500), end, "after");
    let stale = count(changed + Duration::from_millis(500), end, "before");
    assert!(during > 0, "nothing answered during the hand-over");
    assert!(new_config > 0, "the change never reached the traffic");
    assert_eq!(stale, 0, "answers on the old config after the change");
    assert!(
        after_exit + new_config > 0,
        "nothing answered after the old process exited"
    );
    eprintln!(
        "answered {} requests: {during} during the hand-over, {after_exit} after the old exited, {new_config} on the new config; admin API unanswered for {admin_gap:?} at most, /readyz said {readyz:?}",
        seen.answers.len()
    );
}

#[test]
fn sigquit_without_a_new_process_drains_like_sigterm() {
    let up = Upstream::start("up");
    let mut gw = Gateway::start(Opts::default().arg("--drain-timeout").arg("20s"));
    apply(&gw, &config(&up, "x"));
    let http = gw.http;
    let slow = std::thread::spawn(move || {
        request(
            http,
            "GET",
            "/",
            &[("Host", "u.test"), ("x-delay-ms", "1500")],
            b"",
        )
        .map(|r| r.status)
        .map_err(|e| e.to_string())
    });
    assert!(
        common::eventually(Duration::from_secs(10), || (up.hits() >= 1).then_some(())).is_some(),
        "the slow request never reached the upstream"
    );
    let pid = gw.pid().expect("running");
    let sent = Instant::now();
    signal(pid, "QUIT");
    std::thread::sleep(Duration::from_millis(100));
    let ready = request(gw.admin, "GET", "/readyz", &[], b"").map(|r| r.status);
    assert!(
        matches!(ready, Ok(503)),
        "/readyz must answer 503 at once: {ready:?}"
    );
    assert_eq!(slow.join().expect("client"), Ok(200));
    let status = gw.stop_within(Duration::from_secs(25));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "drain took {:?}",
        sent.elapsed()
    );
    assert!(gw.logs().contains("no new process waits"), "{}", gw.logs());
}

#[test]
fn a_second_gateway_on_a_data_dir_in_use_is_refused() {
    let gw = Gateway::start(Opts::default());
    let port = || format!("127.0.0.1:{}", common::free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--admin", &port(), "--http", &port(), "--https", &port()])
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .env_remove("GATEWAY_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run the gateway binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let pid = gw.pid().expect("running").to_string();
    assert!(
        stderr.contains(&format!("in use by process {pid}")) && stderr.contains("--upgrade"),
        "{stderr}"
    );
    // The running one is untouched.
    assert_eq!(gw.get("/readyz").status, 200);
}
