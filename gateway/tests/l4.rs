//! TCP and TLS on `--listen` ports, end to end against the real binary: TLS passthrough by SNI to
//! a real `openssl s_server` (the client sees the backend's own certificate, the backend saw the
//! SNI, an unknown SNI is closed), weighted `tcp` routes across two real TCP servers, HTTPS by
//! SNI and TLS termination then `tcp` routes on `--listen` ports, half-close, and the TCP series in
//! `/metrics` and the access log. Certificates are made at test time.

mod common;

use common::tls::{handshake, rt, secret_yaml, Ca, Client};
use common::{eventually, free_port, Gateway, Opts};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn apply(gw: &Gateway, yaml: &str) {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A TCP server on a fresh port: for each connection, `answer` gets what the client sent (read
/// to its end of stream) and returns the reply, written before the server closes.
fn tcp_server(answer: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let _ = c.read_to_end(&mut got);
                let _ = c.write_all(&answer(&got));
                let _ = c.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// A TCP server that names itself to every client at once (without waiting for its data).
fn ident_server(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(name.as_bytes());
            let _ = c.shutdown(Shutdown::Both);
        }
    });
    port
}

/// Sends `data`, closes the write side, reads the whole answer.
fn exchange(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(data)?;
    s.shutdown(Shutdown::Write)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

fn service_entry(name: &str, host: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: {port}, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n---\n"
    )
}

#[test]
fn tcp_routes_split_connections_by_weight_and_pass_half_closes_on() {
    let (a, b) = (ident_server("A"), ident_server("B"));
    let echo = tcp_server(|got| {
        let mut v = format!("got {} bytes: ", got.len()).into_bytes();
        v.extend(got.iter().rev());
        v
    });
    let (split_port, echo_port) = (free_port(), free_port());
    let gw = Gateway::start(
        Opts::default()
            .arg("--listen")
            .arg(format!("31400=127.0.0.1:{split_port}"))
            .arg("--listen")
            .arg(format!("31401=127.0.0.1:{echo_port}")),
    );
    let y = format!(
        "{}{}{}apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: tcp}}\nspec:\n  servers:\n  - port: {{number: 31400, name: tcp, protocol: TCP}}\n    hosts: ['*']\n  - port: {{number: 31401, name: echo, protocol: TCP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcp}}\nspec:\n  hosts: ['*']\n  gateways: [tcp]\n  tcp:\n  - match: [{{port: 31400}}]\n    route:\n    - destination: {{host: a.internal, port: {{number: {a}}}}}\n      weight: 80\n    - destination: {{host: b.internal, port: {{number: {b}}}}}\n      weight: 20\n  - match: [{{port: 31401}}]\n    route:\n    - destination: {{host: echo.internal, port: {{number: {echo}}}}}\n",
        service_entry("a", "a.internal", a),
        service_entry("b", "b.internal", b),
        service_entry("echo", "echo.internal", echo),
    );
    apply(&gw, &y);

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..800 {
        let got = exchange(local(split_port), b"").expect("connection");
        *seen
            .entry(String::from_utf8_lossy(&got).into_owned())
            .or_default() += 1;
    }
    let (na, nb) = (
        seen.get("A").copied().unwrap_or(0),
        seen.get("B").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 800, "every connection reached a server: {seen:?}");
    assert!(
        (600..=680).contains(&na),
        "80/20 within ±5% of 800: {seen:?}"
    );

    // Half-close: the client's end of stream reaches the server, whose answer (sent after it)
    // still reaches the client.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let got = exchange(local(echo_port), &data).expect("echo");
    let mut want = format!("got {} bytes: ", data.len()).into_bytes();
    want.extend(data.iter().rev());
    assert_eq!(got.len(), want.len(), "the whole answer arrives");
    assert!(got == want, "the answer arrives intact");

    // The TCP series and one access-log line per connection.
    let metrics = gw.get("/metrics").text();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("gateway_tcp_connections_total{")
                && l.contains("route=\"vs/default/tcp/tcp/0\"")
                && l.contains("destination_service=\"a.internal\"")
        })
        .unwrap_or_else(|| panic!("no TCP connection series for a.internal:\n{metrics}"));
    assert!(line.ends_with(&format!(" {na}")), "{line}");
    let received = metrics
        .lines()
        .find(|l| {
            l.starts_with("gateway_tcp_received_bytes_total{")
                && l.contains("destination_service=\"echo.internal\"")
        })
        .unwrap_or_else(|| panic!("no received bytes for echo.internal:\n{metrics}"));
    assert!(
        received.ends_with(&format!(" {}", data.len())),
        "{received}"
    );
    let sent = metrics
        .lines()
        .find(|l| {
            l.starts_with("gateway_tcp_sent_bytes_total{")
                && l.contains("destination_service=\"echo.internal\"")
        })
        .unwrap_or_else(|| panic!("no sent bytes for echo.internal:\n{metrics}"));
    assert!(sent.ends_with(&format!(" {}", want.len())), "{sent}");
    assert!(metrics.contains("gateway_open_connections{listener=\"31400\"}"));
    let logged = eventually(Duration::from_secs(5), || {
        gw.access_log()
            .into_iter()
            .find(|l| l["route_name"] == "vs/default/tcp/tcp/1")
    })
    .expect("an access-log line for the echo connection");
    assert_eq!(logged["bytes_received"], data.len());
    assert_eq!(logged["bytes_sent"], want.len());
    assert_eq!(
        logged["upstream_host"],
        format!("127.0.0.1:{echo}"),
        "{logged}"
    );
    assert!(logged["duration"].is_u64(), "{logged}");
}

#[test]
fn a_connection_no_route_takes_is_closed() {
    let port = free_port();
    let gw = Gateway::start(
        Opts::default()
            .arg("--listen")
            .arg(format!("31400=127.0.0.1:{port}")),
    );
    apply(&gw, "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tcp}\nspec:\n  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: elsewhere}\nspec:\n  hosts: ['*']\n  gateways: [tcp]\n  tcp:\n  - match: [{destinationSubnets: [192.0.2.0/24]}]\n    route:\n    - destination: {host: nowhere.internal, port: {number: 9}}\n");
    // Closed without an answer: an end of stream, or a reset (the gateway read nothing).
    match exchange(local(port), b"hello") {
        Ok(got) => assert!(got.is_empty(), "closed without an answer: {got:?}"),
        // Which error depends on when the close lands: during the write, the half-close or
        // the read.
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::NotConnected
            ),
            "{e}"
        ),
    }
    let logged = eventually(Duration::from_secs(5), || {
        gw.access_log()
            .into_iter()
            .find(|l| l["response_flags"] == "NR")
    });
    assert!(logged.is_some(), "the closed connection is logged with NR");
}

/// An `openssl s_server` with a default certificate and, for SNI `sni`, another one: which one
/// the client gets shows whether the backend saw the SNI.
struct SServer {
    child: Child,
    port: u16,
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl_installed() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is required under CI (scripts/setup installs it)"
        );
        eprintln!("skipping: openssl is not installed");
    }
    ok
}

fn s_server(dir: &Path, sni: &str) -> (SServer, Vec<u8>, Vec<u8>) {
    let make = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("certificate");
        std::fs::write(dir.join(format!("{name}.crt")), c.cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), c.key_pair.serialize_pem()).expect("write");
        c.cert.der().to_vec()
    };
    let default_der = make("default.backend");
    let sni_der = make(sni);
    let port = free_port();
    let child = Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-cert",
            "default.backend.crt",
            "-key",
            "default.backend.key",
        ])
        .args([
            "-cert2",
            &format!("{sni}.crt"),
            "-key2",
            &format!("{sni}.key"),
        ])
        .args(["-servername", sni, "-www", "-quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let up = eventually(Duration::from_secs(10), || {
        TcpStream::connect(local(port)).ok().map(|_| ())
    });
    assert!(up.is_some(), "s_server never listened");
    (SServer { child, port }, default_der, sni_der)
}

#[test]
fn passthrough_by_sni_reaches_the_backend_and_its_certificate() {
    if !openssl_installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, default_der, sni_der) = s_server(dir.path(), "pt.example.com");
    let (port, plain_port) = (free_port(), free_port());
    let gw = Gateway::start(
        Opts::default()
            .arg("--listen")
            .arg(format!("31443=127.0.0.1:{port}"))
            .arg("--listen")
            .arg(format!("31402=127.0.0.1:{plain_port}")),
    );
    apply(&gw, &format!("{}apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: pt}}\nspec:\n  servers:\n  - port: {{number: 31443, name: tls, protocol: TLS}}\n    hosts: ['*.example.com']\n    tls: {{mode: PASSTHROUGH}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: pt}}\nspec:\n  hosts: ['*.example.com']\n  gateways: [pt]\n  tls:\n  - match: [{{sniHosts: [pt.example.com]}}]\n    route:\n    - destination: {{host: backend.internal, port: {{number: {}}}}}\n", service_entry("backend", "backend.internal", backend.port), backend.port));
    // The same backend behind a plain TCP port, the gateway originating TLS (DestinationRule).
    apply(&gw, &format!("{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: backend-tls}}\nspec:\n  host: backend-tls.internal\n  trafficPolicy:\n    tls: {{mode: SIMPLE, sni: pt.example.com, insecureSkipVerify: true}}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: plain}}\nspec:\n  servers:\n  - port: {{number: 31402, name: tcp, protocol: TCP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: plain}}\nspec:\n  hosts: ['*']\n  gateways: [plain]\n  tcp:\n  - route:\n    - destination: {{host: backend-tls.internal, port: {{number: {}}}}}\n", service_entry("backend-tls", "backend-tls.internal", backend.port), backend.port));
    assert_ne!(default_der, sni_der);
    rt().block_on(async {
        let mut shook = handshake(local(port), &Client::sni("pt.example.com"))
            .await
            .expect("handshake through the gateway");
        assert!(
            shook.leaf == sni_der,
            "the backend's certificate for the SNI it saw reaches the client"
        );
        // Bytes flow both ways inside the backend's TLS: s_server -www answers a GET.
        shook
            .stream
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), shook.stream.read_to_end(&mut body))
            .await;
        let body = String::from_utf8_lossy(&body);
        assert!(body.starts_with("HTTP/1.0 200"), "{body}");

        let unknown = handshake(local(port), &Client::sni("other.example.com")).await;
        assert!(unknown.is_err(), "an SNI no route takes is closed");
        let none = handshake(local(port), &Client::default()).await;
        assert!(none.is_err(), "no SNI, no route: closed");
    });
    // Plain bytes in, TLS to the backend: s_server answers only inside its TLS.
    let answer = exchange(local(plain_port), b"GET / HTTP/1.0\r\n\r\n").expect("exchange");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let logged = eventually(Duration::from_secs(5), || {
        gw.access_log()
            .into_iter()
            .find(|l| l["route_name"] == "vs/default/pt/tls/0")
    })
    .expect("an access-log line for the passthrough connection");
    assert_eq!(logged["requested_server_name"], "pt.example.com");
    assert!(logged["bytes_sent"].as_u64().unwrap_or(0) > 0, "{logged}");
}

#[test]
fn https_and_terminated_tls_on_listen_ports() {
    let ca = Ca::new("l4 test CA");
    let web = ca.server(&["web.example.com"]);
    let db = ca.server(&["db.example.com"]);
    let echo = tcp_server(|got| [b"echo:".as_slice(), got].concat());
    let (https_port, tls_port) = (free_port(), free_port());
    let gw = Gateway::start(
        Opts::default()
            .arg("--listen")
            .arg(format!("8443=127.0.0.1:{https_port}"))
            .arg("--listen")
            .arg(format!("31444=127.0.0.1:{tls_port}")),
    );
    let y = format!(
        "{}{}{}apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: edge}}\nspec:\n  servers:\n  - port: {{number: 8443, name: https, protocol: HTTPS}}\n    hosts: [web.example.com]\n    tls: {{mode: SIMPLE, credentialName: web-cert}}\n  - port: {{number: 31444, name: tls, protocol: TLS}}\n    hosts: [db.example.com]\n    tls: {{mode: SIMPLE, credentialName: db-cert}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [web.example.com]\n  gateways: [edge]\n  http:\n  - directResponse: {{status: 200, body: {{string: web-over-tls}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: db}}\nspec:\n  hosts: [db.example.com]\n  gateways: [edge]\n  tcp:\n  - route:\n    - destination: {{host: echo.internal, port: {{number: {echo}}}}}\n",
        secret_yaml("web-cert", &web, None),
        secret_yaml("db-cert", &db, None),
        service_entry("echo", "echo.internal", echo),
    );
    apply(&gw, &y);
    rt().block_on(async {
        // HTTPS on a --listen port: the certificate by SNI, then HTTP.
        let mut shook = handshake(local(https_port), &Client::sni("web.example.com"))
            .await
            .expect("HTTPS handshake");
        assert!(shook.leaf == web.der.as_ref(), "the web certificate");
        let r = common::tls::http1(&mut shook.stream, "web.example.com", "/", true)
            .await
            .expect("request");
        assert_eq!((r.status, r.text().as_str()), (200, "web-over-tls"));
        assert!(
            handshake(local(https_port), &Client::sni("db.example.com"))
                .await
                .is_err(),
            "a name no server on that port claims fails the handshake"
        );

        // TLS terminated, then a tcp route: the decrypted bytes reach the echo server.
        let mut shook = handshake(local(tls_port), &Client::sni("db.example.com"))
            .await
            .expect("TLS handshake");
        assert!(shook.leaf == db.der.as_ref(), "the db certificate");
        assert_eq!(
            shook.alpn, None,
            "a TLS server offers no application protocol"
        );
        shook.stream.write_all(b"select 1").await.expect("write");
        shook.stream.shutdown().await.expect("close_notify");
        let mut got = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), shook.stream.read_to_end(&mut got)).await;
        assert_eq!(String::from_utf8_lossy(&got), "echo:select 1");
    });
    let metrics = gw.get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_tcp_connections_total{")
                && l.contains("route=\"vs/default/db/tcp/0\"")),
        "{metrics}"
    );
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("gateway_tls_handshake_failures_total{listener=\"8443\"}"))
        .unwrap_or_else(|| panic!("no handshake failures for listener 8443:\n{metrics}"));
    assert!(failures.ends_with(" 1"), "{failures}");
}

#[test]
fn destination_rule_policy_applies_to_tcp_connections() {
    // One endpoint refuses connections, the other holds each connection until the client closes.
    let dead = free_port();
    let live = tcp_server(|got| [b"answer:".as_slice(), got].concat());
    let port = free_port();
    let gw = Gateway::start(
        Opts::default()
            .arg("--listen")
            .arg(format!("31400=127.0.0.1:{port}")),
    );
    apply(&gw, &format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.internal]\n  ports: [{{number: 5432, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{tcp: {dead}}}}}\n  - {{address: 127.0.0.1, ports: {{tcp: {live}}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: db}}\nspec:\n  host: db.internal\n  trafficPolicy:\n    loadBalancer: {{simple: ROUND_ROBIN}}\n    connectionPool:\n      tcp: {{maxConnections: 2, connectTimeout: 1s, idleTimeout: 1s}}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: tcp}}\nspec:\n  servers:\n  - port: {{number: 31400, name: tcp, protocol: TCP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: db}}\nspec:\n  hosts: ['*']\n  gateways: [tcp]\n  tcp:\n  - route:\n    - destination: {{host: db.internal, port: {{number: 5432}}}}\n"));

    // A refused connect is retried on the other endpoint: every connection is answered.
    for i in 0..6 {
        let got = exchange(local(port), format!("q{i}").as_bytes()).expect("connection");
        assert_eq!(String::from_utf8_lossy(&got), format!("answer:q{i}"));
    }

    // maxConnections: with two connections open, a third is closed unanswered.
    let hold = || {
        let s = TcpStream::connect(local(port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    };
    let (mut first, _second) = (hold(), hold());
    // Both are proxied once the upstream connections are up.
    std::thread::sleep(Duration::from_millis(300));
    let mut third = hold();
    let mut buf = [0u8; 16];
    let n = third.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the connection over maxConnections is closed");
    let overflow = eventually(Duration::from_secs(5), || {
        gw.access_log()
            .into_iter()
            .find(|l| l["response_flags"] == "UO")
    });
    assert!(overflow.is_some(), "logged with UO");

    // idleTimeout: a connection on which nothing moves for 1 s is closed.
    let started = std::time::Instant::now();
    let n = first.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the idle connection is closed");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "closed by the idle timeout, after {waited:?}"
    );
    let idle = eventually(Duration::from_secs(5), || {
        gw.access_log()
            .into_iter()
            .find(|l| l["response_flags"] == "IT")
    });
    assert!(idle.is_some(), "logged with IT");
}

#[test]
fn sigterm_lets_an_open_tcp_connection_finish_within_the_drain_timeout() {
    let echo = tcp_server(|got| got.to_vec());
    let port = free_port();
    let mut gw = Gateway::start(
        Opts::default()
            .arg("--listen")
            .arg(format!("31400=127.0.0.1:{port}"))
            .arg("--drain-timeout")
            .arg("20s"),
    );
    apply(&gw, &format!("{}apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: tcp}}\nspec:\n  servers:\n  - port: {{number: 31400, name: tcp, protocol: TCP}}\n    hosts: ['*']\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcp}}\nspec:\n  hosts: ['*']\n  gateways: [tcp]\n  tcp:\n  - route:\n    - destination: {{host: echo.internal, port: {{number: {echo}}}}}\n", service_entry("echo", "echo.internal", echo)));
    let mut s = TcpStream::connect(local(port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"before ").expect("write");
    let pid = gw.pid().expect("running");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    // Well after the HTTP side has drained (nothing in flight there), the connection still
    // carries bytes both ways.
    std::thread::sleep(Duration::from_secs(2));
    s.write_all(b"after").expect("write after SIGTERM");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"before after");
    let status = gw.stop_within(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
}
