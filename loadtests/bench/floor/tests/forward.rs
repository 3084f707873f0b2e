//! The floor proxies do what bench.py counts on: every request, whatever its host and path, goes to
//! `BENCH_UPSTREAM` with its body, over a pooled keep-alive upstream connection; without their
//! settings they stop with exit status 2 and say which one is missing.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the test upstream saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// A request or response head and body, read off a keep-alive HTTP/1.1 stream (Content-Length only).
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one message; `None` at a clean end of stream.
fn read_message(r: &mut impl BufRead) -> Option<Message> {
    let mut start = String::new();
    if r.read_line(&mut start).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut m = Message {
        start: start.trim_end().to_string(),
        headers,
        body: Vec::new(),
    };
    let len: usize = m
        .header("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    m.body = vec![0; len];
    r.read_exact(&mut m.body).ok()?;
    Some(m)
}

/// An HTTP/1.1 keep-alive upstream on loopback: answers every request 200 with the request's
/// body (or `ok\n` when it has none) and its path and host in `x-path` and `x-host`.
fn upstream() -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let port = listener.local_addr().expect("its address").port();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let counts = counts.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone the upstream socket");
                let mut r = BufReader::new(conn);
                while let Some(req) = read_message(&mut r) {
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                    let path = req.start.split(' ').nth(1).unwrap_or("?").to_string();
                    let host = req.header("host").unwrap_or("").to_string();
                    let body = if req.body.is_empty() {
                        b"ok\n".to_vec()
                    } else {
                        req.body
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nx-path: {path}\r\nx-host: {host}\r\n\r\n",
                        body.len()
                    );
                    if w.write_all(head.as_bytes()).is_err() || w.write_all(&body).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// A floor binary, killed when dropped.
struct Floor(Child);

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

fn start(binary: &str, up: u16, port: u16) -> Floor {
    let child = Command::new(binary)
        .env("BENCH_UPSTREAM", format!("127.0.0.1:{up}"))
        .env("BENCH_HTTP_PORT", port.to_string())
        .env("BENCH_WORKERS", "1")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the floor binary");
    Floor(child)
}

fn connect(port: u16) -> TcpStream {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("read timeout");
                return s;
            }
            Err(e) if Instant::now() > end => panic!("the floor does not listen on {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Sends one request on `s` and reads the response.
fn exchange(s: &mut TcpStream, method: &str, path: &str, host: &str, body: &[u8]) -> Message {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write the request");
    s.write_all(body).expect("write the body");
    let mut r = BufReader::new(s.try_clone().expect("clone the client socket"));
    read_message(&mut r).expect("a response")
}

fn forwards_over_a_pooled_connection(binary: &str) {
    let (up, seen) = upstream();
    let port = free_port();
    let _floor = start(binary, up, port);
    // Two client connections, requests one after the other: one upstream connection serves them all.
    for (host, paths) in [
        ("bench.local", ["/bench/small", "/bench/big"]),
        ("other.example", ["/", "/anything?q=1"]),
    ] {
        let mut s = connect(port);
        for path in paths {
            let r = exchange(&mut s, "GET", path, host, b"");
            assert!(r.start.starts_with("HTTP/1.1 200"), "{path}: {}", r.start);
            assert_eq!(r.body, b"ok\n", "{path}");
            assert_eq!(r.header("x-path"), Some(path));
            assert_eq!(r.header("x-host"), Some(host));
        }
        let r = exchange(&mut s, "POST", "/bench/post", host, b"hello floor");
        assert!(r.start.starts_with("HTTP/1.1 200"), "POST: {}", r.start);
        assert_eq!(r.body, b"hello floor", "the request body goes upstream");
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 6);
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "{binary}: one pooled keep-alive connection to the upstream"
    );
}

#[test]
fn bare_proxy_forwards_everything_over_a_pooled_connection() {
    forwards_over_a_pooled_connection(env!("CARGO_BIN_EXE_bare_proxy"));
}

#[test]
fn core_loop_forwards_everything_over_a_pooled_connection() {
    forwards_over_a_pooled_connection(env!("CARGO_BIN_EXE_core_loop"));
}

#[test]
fn without_settings_they_stop_with_status_2() {
    for binary in [
        env!("CARGO_BIN_EXE_bare_proxy"),
        env!("CARGO_BIN_EXE_core_loop"),
    ] {
        let out = Command::new(binary)
            .env_remove("BENCH_UPSTREAM")
            .env("BENCH_HTTP_PORT", "1")
            .output()
            .expect("run the floor binary");
        assert_eq!(out.status.code(), Some(2), "{binary}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("BENCH_UPSTREAM"), "{binary}: {err}");
    }
}
