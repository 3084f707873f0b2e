//! Lingering close, end to end: an answer made before the request body is read (the admin API's
//! 413, and the gateway's own answers on a traffic listener: direct response, 404 NR, 431) reaches
//! a client that sends its whole body before reading, instead of being destroyed by a reset; and a
//! client that never stops sending is cut off once the bounds are reached.

mod common;

use common::{connect, read_response, request_head, Gateway, Opts, Response};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A body a little over the admin API's 1 MiB limit.
const OVER_LIMIT: usize = 1_100_000;
const PIECE: usize = 64 * 1024;
/// The lingering bounds of the gateway (64 MiB, 30 s), plus room for the socket buffers between
/// the client and the server's reads.
const LINGER_BYTES: usize = 64 * 1024 * 1024;
const BUFFER_SLACK: usize = 32 * 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(30);

/// Writes `head`, then `len` bytes of body (raw, or `chunked` in 64 KiB chunks) and only then
/// reads the answer, as `curl --data-binary @file` does when it does not wait for 100-continue.
/// A short pause between pieces lets the server answer, and close, while the client still writes.
fn upload_then_read(addr: SocketAddr, head: &[u8], len: usize, chunked: bool) -> Response {
    let mut s = connect(addr).expect("connect");
    s.write_all(head).expect("head");
    let piece = vec![b'x'; PIECE];
    let mut sent = 0;
    while sent < len {
        let n = PIECE.min(len - sent);
        let r = if chunked {
            s.write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|_| s.write_all(&piece[..n]))
                .and_then(|_| s.write_all(b"\r\n"))
        } else {
            s.write_all(&piece[..n])
        };
        if let Err(e) = r {
            panic!("the server reset the connection after {sent} body bytes: {e}");
        }
        sent += n;
        std::thread::sleep(Duration::from_millis(2));
    }
    if chunked {
        s.write_all(b"0\r\n\r\n").expect("last chunk");
    }
    read_response(&mut s).expect("the answer, after the whole body was sent")
}

/// Sends a body that never ends (a huge `Content-Length`) as fast as the server takes it, while
/// the main thread reads the answer. Returns the answer, how many body bytes were written before
/// the server cut the connection, and how long that took.
fn endless_upload(addr: SocketAddr, head: &[u8]) -> (Response, usize, Duration) {
    let mut s = connect(addr).expect("connect");
    let reader = s.try_clone().expect("clone");
    s.write_all(head).expect("head");
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let piece = vec![b'x'; PIECE];
        let mut sent = 0usize;
        // The guard only stops a broken test: the bounds end the loop long before.
        while start.elapsed() < LINGER_TIME * 3 {
            if s.write_all(&piece).is_err() {
                return (sent, start.elapsed());
            }
            sent += PIECE;
        }
        panic!("still sending after {:?}: {sent} bytes", start.elapsed());
    });
    let resp = read_response(reader).expect("the answer while the client is still sending");
    let (sent, took) = writer.join().expect("writer");
    (resp, sent, took)
}

fn admin_post_head(g: &Gateway, len: Option<usize>) -> Vec<u8> {
    let extra: &[(&str, &str)] = if len.is_none() {
        &[
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
        ]
    } else {
        &[("Content-Type", "application/json")]
    };
    request_head(
        g.admin,
        "POST",
        "/apis/networking.istio.io/v1/namespaces/default/virtualservices",
        extra,
        len,
    )
}

fn expect_413_status(r: &Response) {
    assert_eq!(r.status, 413, "{}", r.text());
    let v = r.json();
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["reason"], "RequestEntityTooLarge", "{v}");
    assert_eq!(v["code"], 413, "{v}");
}

#[test]
fn admin_413_on_content_length_reaches_a_client_that_sends_the_whole_body_first() {
    let g = Gateway::start(Opts::default());
    let head = admin_post_head(&g, Some(OVER_LIMIT));
    expect_413_status(&upload_then_read(g.admin, &head, OVER_LIMIT, false));
    assert_eq!(g.get("/healthz").status, 200);
}

#[test]
fn admin_413_on_a_chunked_body_reaches_a_client_that_sends_the_whole_body_first() {
    let g = Gateway::start(Opts::default());
    let head = admin_post_head(&g, None);
    expect_413_status(&upload_then_read(g.admin, &head, 4 * OVER_LIMIT, true));
}

/// An endless upload was cut once the byte bound was read, well before the time bound.
fn assert_cut_at_the_byte_bound(sent: usize, took: std::time::Duration) {
    assert!(
        sent <= LINGER_BYTES + BUFFER_SLACK,
        "{sent} bytes were taken before the cut"
    );
    assert!(
        sent >= LINGER_BYTES,
        "cut after {sent} bytes, before the bound"
    );
    assert!(took < LINGER_TIME, "cut only after {took:?}");
}

#[test]
fn admin_cuts_off_a_client_that_never_stops_sending() {
    let g = Gateway::start(Opts::default());
    let head = admin_post_head(&g, Some(usize::MAX / 2));
    let (r, sent, took) = endless_upload(g.admin, &head);
    expect_413_status(&r);
    assert_cut_at_the_byte_bound(sent, took);
}

const DIRECT: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d}\nspec:\n  hosts: [d.test]\n  http:\n  - match: [{uri: {prefix: /direct}}]\n    directResponse: {status: 200, body: {string: direct answer}}\n";

fn with_direct_route() -> Gateway {
    let g = Gateway::start(Opts::default().arg("--access-log").arg("off"));
    let r = g.admin_call("POST", "/apply", "application/yaml", DIRECT.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    g
}

fn proxy_post_head(
    g: &Gateway,
    host: &str,
    path: &str,
    len: usize,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut h = vec![("Host", host)];
    h.extend_from_slice(extra);
    request_head(g.http, "POST", path, &h, Some(len))
}

#[test]
fn a_direct_response_reaches_a_client_uploading_a_large_body() {
    let g = with_direct_route();
    let len = 4 * 1024 * 1024;
    let head = proxy_post_head(&g, "d.test", "/direct", len, &[]);
    let r = upload_then_read(g.http, &head, len, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "direct answer");
}

#[test]
fn a_404_nr_reaches_a_client_uploading_a_large_body() {
    let g = with_direct_route();
    let len = 4 * 1024 * 1024;
    let head = proxy_post_head(&g, "unknown.test", "/", len, &[]);
    let r = upload_then_read(g.http, &head, len, false);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-gateway-error"), Some("NR"));
    let head = proxy_post_head(&g, "d.test", "/elsewhere", len, &[]);
    let r = upload_then_read(g.http, &head, len, false);
    assert_eq!(r.status, 404, "no route of d.test matches");
}

#[test]
fn a_431_reaches_a_client_uploading_a_large_body() {
    let g = with_direct_route();
    let names: Vec<String> = (0..120).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let len = 2 * 1024 * 1024;
    let head = proxy_post_head(&g, "d.test", "/direct", len, &many);
    let r = upload_then_read(g.http, &head, len, false);
    assert_eq!(r.status, 431);
}

#[test]
fn the_gateway_cuts_off_a_client_that_never_stops_sending() {
    let g = with_direct_route();
    let head = proxy_post_head(&g, "d.test", "/direct", usize::MAX / 2, &[]);
    let (r, sent, took) = endless_upload(g.http, &head);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "direct answer");
    assert_cut_at_the_byte_bound(sent, took);
    // The gateway still serves.
    let mut s: TcpStream = connect(g.http).expect("connect");
    s.write_all(&request_head(
        g.http,
        "GET",
        "/direct",
        &[("Host", "d.test")],
        None,
    ))
    .expect("request");
    assert_eq!(read_response(&mut s).expect("response").status, 200);
}
