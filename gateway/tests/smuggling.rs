//! The request-smuggling corpus (`tests/smuggling/corpus.json`) sent as raw bytes to the real
//! gateway in front of a recording upstream: each case must be refused (its status, then the
//! connection closed, and no complete request upstream), or forwarded unambiguously (the upstream
//! sees exactly the expected requests, each well framed with one canonical Content-Length or
//! chunked, and the client gets one answer per request, in order).

mod common;

use common::{Gateway, Opts};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the upstream read it.
#[derive(Debug, Clone)]
enum Seen {
    Request {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The connection ended (or broke the upstream's strict parser) inside a request.
    Partial(String),
}

/// A strict HTTP/1.1 server that records every request it reads and answers each `200 ok`.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(c, &s));
            }
        });
        Recorder { addr, seen }
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn serve(c: TcpStream, seen: &Mutex<Vec<Seen>>) {
    let mut w = match c.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(c);
    loop {
        match read_one(&mut r) {
            Ok(None) => return,
            Ok(Some(req)) => {
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
            Err(why) => {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Seen::Partial(why));
                return;
            }
        }
    }
}

fn line<R: BufRead>(r: &mut R) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf).map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    let Some(l) = buf.strip_suffix(b"\r\n") else {
        return Err(format!(
            "line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&buf)
        ));
    };
    String::from_utf8(l.to_vec())
        .map(Some)
        .map_err(|_| "non-UTF-8 line".to_string())
}

fn read_one<R: BufRead>(r: &mut R) -> Result<Option<Seen>, String> {
    let Some(start) = line(r)? else {
        return Ok(None);
    };
    let parts: Vec<&str> = start.split(' ').collect();
    let [method, target, "HTTP/1.1"] = parts[..] else {
        return Err(format!("bad request line {start:?}"));
    };
    let mut headers = Vec::new();
    loop {
        let l = line(r)?.ok_or("eof in the head")?;
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').ok_or(format!("bad header {l:?}"))?;
        headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    let named = |n: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(h, _)| h == n)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let (cl, te) = (named("content-length"), named("transfer-encoding"));
    let mut body = Vec::new();
    match (cl.as_slice(), te.as_slice()) {
        ([], []) => {}
        ([n], []) => {
            let canonical = n.parse::<u64>().ok().filter(|v| v.to_string() == *n);
            let len = canonical.ok_or(format!("non-canonical Content-Length {n:?}"))?;
            body.resize(len as usize, 0);
            r.read_exact(&mut body)
                .map_err(|e| format!("body cut short: {e}"))?;
        }
        ([], [t]) if t == "chunked" => loop {
            let size = line(r)?.ok_or("eof in a chunk size")?;
            let size = size.split(';').next().unwrap_or_default();
            let n = usize::from_str_radix(size, 16).map_err(|_| format!("chunk size {size:?}"))?;
            if n == 0 {
                while !line(r)?.ok_or("eof in trailers")?.is_empty() {}
                break;
            }
            let at = body.len();
            body.resize(at + n, 0);
            r.read_exact(&mut body[at..])
                .map_err(|e| format!("chunk cut short: {e}"))?;
            if line(r)? != Some(String::new()) {
                return Err("chunk not ended by CRLF".to_string());
            }
        },
        _ => return Err(format!("ambiguous framing: CL {cl:?} TE {te:?}")),
    }
    Ok(Some(Seen::Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body,
    }))
}

/// The case's bytes: `${N*text}` stands for `text` repeated N times.
fn expand(raw: &str) -> Vec<u8> {
    let rx = regex::Regex::new(r"\$\{(\d+)\*([^}]*)\}").expect("regex");
    rx.replace_all(raw, |c: &regex::Captures| {
        c[2].repeat(c[1].parse().expect("count"))
    })
    .into_owned()
    .into_bytes()
}

/// What the client got: the statuses of the responses, in order, and whether the gateway closed.
fn exchange(addr: SocketAddr, bytes: &[u8], want: usize) -> (Vec<u16>, bool) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    // A gateway that refuses early may close before taking every byte: that is an answer too.
    let _ = c.write_all(bytes);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = false;
    let mut buf = [0u8; 65536];
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                quiet_since = None;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => {
                closed = true;
                break;
            }
            Err(_) => {
                // Once every expected answer is in, a short quiet spell shows nothing else comes.
                if statuses(&got).len() >= want {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_millis(300) {
                        break;
                    }
                }
            }
        }
    }
    (statuses(&got), closed)
}

/// The status of each complete response in `bytes` (Content-Length framed, as both the gateway's
/// own answers and the recorder's are).
fn statuses(mut bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if bytes.len() < end + 4 + len {
            break;
        }
        out.push(status);
        bytes = &bytes[end + 4 + len..];
    }
    out
}

fn check(case: &Value, addr: SocketAddr, up: &Recorder) -> Result<(), String> {
    let raw = expand(case["raw"].as_str().ok_or("raw")?);
    let expect = &case["expect"];
    let forwards = expect["forward"].as_array().cloned().unwrap_or_default();
    up.take();
    // A refusal after the forwarded requests (pipelined behind them).
    let then_reject = expect["then_reject"].as_u64().map(|s| s as u16);
    let answers = forwards.len() + usize::from(then_reject.is_some());
    let (got, closed) = exchange(addr, &raw, answers.max(1));
    // Requests reach the upstream before the client reads the answer, but give a straggler time.
    std::thread::sleep(Duration::from_millis(50));
    let seen = up.take();
    let complete: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Request { .. }))
        .collect();
    if let Some(status) = expect["reject"].as_u64() {
        if got != [status as u16] || !closed {
            return Err(format!(
                "want {status} and a close, got {got:?} (closed: {closed})"
            ));
        }
        if !complete.is_empty() {
            return Err(format!("refused, yet the upstream saw {complete:?}"));
        }
        return Ok(());
    }
    let mut want = vec![200; forwards.len()];
    want.extend(then_reject);
    if got != want || (then_reject.is_some() && !closed) {
        return Err(format!(
            "want {want:?}{}, got {got:?} (closed: {closed}); upstream: {seen:?}",
            if then_reject.is_some() {
                " and a close"
            } else {
                ""
            }
        ));
    }
    // Only a refused request may have left a fragment upstream, never a forwarded one.
    if complete.len() != forwards.len() || (then_reject.is_none() && seen.len() != complete.len()) {
        return Err(format!("upstream saw {seen:?}, want {forwards:?}"));
    }
    for (s, want) in complete.iter().zip(&forwards) {
        let (method, target, headers, body) = match s {
            Seen::Request {
                method,
                target,
                headers,
                body,
            } => (method, target, headers, body),
            Seen::Partial(why) => return Err(format!("upstream: {why}")),
        };
        let host: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n == "host")
            .map(|(_, v)| v.as_str())
            .collect();
        let ok = want["method"] == method.as_str()
            && want["target"] == target.as_str()
            && host == [want["host"].as_str().unwrap_or_default()]
            && want["body"] == String::from_utf8_lossy(body).as_ref();
        if !ok {
            return Err(format!("upstream saw {s:?}, want {want}"));
        }
    }
    Ok(())
}

#[test]
fn the_smuggling_corpus_is_refused_or_forwarded_unambiguously() {
    let up = Recorder::start();
    let gw = Gateway::start(Opts::default().arg("--access-log").arg("off"));
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: all}}\nspec:\n  hosts: [\"*\"]\n  http:\n  - route:\n    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}\n",
        up.addr.port()
    );
    let r = gw.admin_call("POST", "/apply", "application/yaml", vs.as_bytes());
    assert_eq!(r.status, 200, "apply: {}", r.text());
    let corpus: Vec<Value> =
        serde_json::from_str(include_str!("smuggling/corpus.json")).expect("corpus.json is JSON");
    assert!(corpus.len() > 50, "the corpus is all there");
    let failures: Vec<String> = corpus
        .iter()
        .filter_map(|case| {
            check(case, gw.http, &up)
                .err()
                .map(|e| format!("{}: {e}", case["name"]))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
