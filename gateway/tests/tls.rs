//! End-to-end TLS tests against the real binary with real TLS clients (tokio-rustls) on ephemeral
//! ports: certificate selection by SNI (exact, wildcard, `*` for clients without SNI), rotation of
//! a Secret under a handshake loop, mutual TLS, protocol versions and cipher suites, ALPN h2, TLS
//! to upstreams (SIMPLE and MUTUAL against a real TLS server), Secret validation (422) and the TLS
//! metrics, session resumption across reloads (OpenSSL's s_client), a small response sealed as one
//! record; Secrets as Istio reads them (`Opaque` with `cert`/`key`, the client CA from
//! `<credentialName>-cacert`) and found where an Istio ingress pod finds them (the Gateway's
//! namespace, then `--namespace`). Certificates are made at test time with rcgen; no key is
//! committed.

mod common;
mod upstream;

use common::tls::{get, handshake, http1, rt, secret_json, secret_yaml, Ca, Client, Leaf};
use common::{Gateway, Opts, Response};
use rcgen::ExtendedKeyUsagePurpose;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upstream::Upstream;

/// A directResponse VirtualService answering `body` for `host`.
fn direct(name: &str, host: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [gw]\n  http:\n  - directResponse: {{status: 200, body: {{string: {body}}}}}\n---\n"
    )
}

/// One HTTPS server (port 443) of Gateway `gw`.
fn https_server(name: &str, hosts: &str, tls: &str) -> String {
    format!("  - port: {{number: 443, name: {name}, protocol: HTTPS}}\n    hosts: {hosts}\n    tls: {tls}\n")
}

fn gateway_yaml(servers: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  servers:\n{servers}---\n")
}

fn apply(gw: &Gateway, yaml: &str) -> Response {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
    r
}

fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let text = gw.get("/metrics").text();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ----- tests -----

#[test]
fn sni_selects_among_three_hosts_and_a_wildcard() {
    let ca = Ca::new("edge ca");
    let (a, b, c, w) = (
        ca.server(&["a.example.com"]),
        ca.server(&["b.example.com"]),
        ca.server(&["c.example.org"]),
        ca.server(&["*.example.com"]),
    );
    let gw = Gateway::start(Opts::default());
    let mut y = String::new();
    for (n, l) in [("a", &a), ("b", &b), ("c", &c), ("w", &w)] {
        y.push_str(&secret_yaml(n, l, None));
    }
    y.push_str(&gateway_yaml(
        &(https_server("a", "[a.example.com]", "{mode: SIMPLE, credentialName: a}")
            + &https_server("b", "[b.example.com]", "{mode: SIMPLE, credentialName: b}")
            + &https_server("c", "[c.example.org]", "{mode: SIMPLE, credentialName: c}")
            + &https_server(
                "w",
                "[\"*.example.com\"]",
                "{mode: SIMPLE, credentialName: w}",
            )),
    ));
    for (n, h) in [
        ("a", "a.example.com"),
        ("b", "b.example.com"),
        ("c", "c.example.org"),
        ("w", "*.example.com"),
    ] {
        y.push_str(&direct(n, h, &format!("hello-{n}")));
    }
    apply(&gw, &y);
    let rt = rt();
    rt.block_on(async {
        for (sni, want) in [
            ("a.example.com", &a),
            ("B.Example.com", &b),
            ("c.example.org", &c),
            ("x.example.com", &w),
            ("deep.x.example.com", &w),
        ] {
            let s = handshake(gw.https, &Client::sni(sni))
                .await
                .unwrap_or_else(|e| panic!("{sni}: {e}\n{}", gw.logs()));
            assert!(s.leaf == want.der.as_ref(), "{sni}: wrong certificate");
        }
        for sni in ["example.com", "nope.test"] {
            assert!(
                handshake(gw.https, &Client::sni(sni)).await.is_err(),
                "{sni}: no server claims it, the handshake must fail"
            );
        }
        assert!(
            handshake(gw.https, &Client::default()).await.is_err(),
            "no SNI and no `*` server: the handshake fails"
        );
        // HTTP routing after the handshake, restricted to the hosts of the selected server.
        let r = get(
            gw.https,
            &Client::sni("a.example.com"),
            "a.example.com",
            "/",
        )
        .await
        .expect("request");
        assert_eq!((r.status, r.text().as_str()), (200, "hello-a"));
        let r = get(
            gw.https,
            &Client::sni("x.example.com"),
            "y.example.com",
            "/",
        )
        .await
        .expect("request");
        assert_eq!((r.status, r.text().as_str()), (200, "hello-w"));
        let r = get(
            gw.https,
            &Client::sni("a.example.com"),
            "b.example.com",
            "/",
        )
        .await
        .expect("request");
        assert_eq!(r.status, 404, "b's host is not served through a's server");
        assert_eq!(r.header("x-gateway-error"), Some("NR"));
    });
    // The access log names the SNI of the connection.
    assert!(
        common::eventually(Duration::from_secs(10), || {
            gw.logs()
                .contains("\"requested_server_name\":\"x.example.com\"")
                .then_some(())
        })
        .is_some(),
        "{}",
        gw.logs()
    );
    assert_eq!(
        metric(
            &gw,
            "gateway_tls_handshake_failures_total{listener=\"https\"}"
        ),
        Some(3.0)
    );
}

#[test]
fn no_sni_client_gets_the_star_server_once_one_exists() {
    let ca = Ca::new("edge ca");
    let (a, any) = (ca.server(&["a.example.com"]), ca.server(&["fallback"]));
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(secret_yaml("a", &a, None)
            + &secret_yaml("any", &any, None)
            + &gateway_yaml(&https_server(
                "a",
                "[a.example.com]",
                "{mode: SIMPLE, credentialName: a}",
            ))
            + &direct("a", "*", "star")),
    );
    let rt = rt();
    rt.block_on(async {
        assert!(handshake(gw.https, &Client::default()).await.is_err());
    });
    // A Gateway change reaches the next handshake.
    apply(
        &gw,
        &gateway_yaml(
            &(https_server("a", "[a.example.com]", "{mode: SIMPLE, credentialName: a}")
                + &https_server("any", "[\"*\"]", "{mode: SIMPLE, credentialName: any}")),
        ),
    );
    rt.block_on(async {
        let s = handshake(gw.https, &Client::default())
            .await
            .expect("no SNI now gets the `*` server");
        assert!(s.leaf == any.der.as_ref());
        let s = handshake(gw.https, &Client::sni("unknown.test"))
            .await
            .expect("`*` claims every SNI");
        assert!(s.leaf == any.der.as_ref());
        let r = get(gw.https, &Client::default(), "whatever.test", "/")
            .await
            .expect("request");
        assert_eq!((r.status, r.text().as_str()), (200, "star"));
    });
}

#[test]
fn rotation_under_load_sees_old_then_new_and_no_failed_handshake() {
    let ca = Ca::new("edge ca");
    let (old, new) = (ca.server(&["a.example.com"]), ca.server(&["a.example.com"]));
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(secret_yaml("a", &old, None)
            + &gateway_yaml(&https_server(
                "a",
                "[a.example.com]",
                "{mode: SIMPLE, credentialName: a}",
            ))
            + &direct("a", "a.example.com", "ok")),
    );
    let rt = rt();
    // A connection established before the rotation stays up and keeps serving.
    let mut kept = rt
        .block_on(handshake(gw.https, &Client::sni("a.example.com")))
        .expect("handshake");
    let r = rt
        .block_on(http1(&mut kept.stream, "a.example.com", "/", false))
        .expect("first request");
    assert_eq!(r.status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let addr = gw.https;
    let (old_der, new_der) = (old.der.as_ref().to_vec(), new.der.as_ref().to_vec());
    let loop_stop = stop.clone();
    let client = std::thread::spawn(move || {
        let rt = self::rt();
        let mut seen: Vec<char> = Vec::new();
        let mut failures = Vec::new();
        while !loop_stop.load(Ordering::SeqCst) || seen.last() != Some(&'N') {
            match rt.block_on(handshake(addr, &Client::sni("a.example.com"))) {
                Ok(s) if s.leaf == old_der => seen.push('O'),
                Ok(s) if s.leaf == new_der => seen.push('N'),
                Ok(_) => seen.push('?'),
                Err(e) => failures.push(e),
            }
            if seen.len() > 100_000 {
                break;
            }
        }
        (seen, failures)
    });
    // Let the loop run on the old certificate, replace the Secret, let it run on the new one.
    std::thread::sleep(Duration::from_millis(300));
    let r = gw.put(
        "/api/v1/namespaces/default/secrets/a",
        &secret_json("a", &new),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (seen, failures) = client.join().expect("client loop");
    assert!(failures.is_empty(), "failed handshakes: {failures:?}");
    let text: String = seen.iter().collect();
    let switch = text.find('N').expect("the new certificate was served");
    assert!(switch > 0, "the old certificate was served first");
    assert!(
        text[..switch].chars().all(|c| c == 'O') && text[switch..].chars().all(|c| c == 'N'),
        "old then new only, got {} handshakes: {}",
        text.len(),
        text
    );
    let r = rt
        .block_on(http1(&mut kept.stream, "a.example.com", "/", true))
        .expect("the established connection was not cut");
    assert_eq!(r.status, 200);
    // Deleting the Secret fails the next handshake for its hosts.
    assert_eq!(
        gw.delete("/api/v1/namespaces/default/secrets/a").status,
        200
    );
    assert!(rt
        .block_on(handshake(gw.https, &Client::sni("a.example.com")))
        .is_err());
}

#[test]
fn mutual_tls_accepts_a_good_client_certificate_and_refuses_none_or_a_wrong_ca() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let other_ca = Ca::new("other ca");
    let srv = server_ca.server(&["m.example.com", "o.example.com", "s.example.com"]);
    let good = client_ca.client("good", &["spiffe://example.com/good"]);
    let other_san = client_ca.client("other", &["spiffe://example.com/other"]);
    let wrong = other_ca.client("good", &["spiffe://example.com/good"]);
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(secret_yaml("m", &srv, Some(&client_ca.pem()))
            + &gateway_yaml(
                &(https_server("m", "[m.example.com]", "{mode: MUTUAL, credentialName: m}")
                    + &https_server(
                        "o",
                        "[o.example.com]",
                        "{mode: OPTIONAL_MUTUAL, credentialName: m}",
                    )
                    + &https_server(
                        "s",
                        "[s.example.com]",
                        "{mode: MUTUAL, credentialName: m, subjectAltNames: [\"spiffe://example.com/good\"]}",
                    )),
            )
            + &direct("m", "*.example.com", "in")),
    );
    let with = |sni: &str, cert: Option<&Leaf>| Client {
        sni: Some(sni.to_string()),
        cert: cert.cloned(),
        ..Client::default()
    };
    let rt = rt();
    rt.block_on(async {
        let r = get(
            gw.https,
            &with("m.example.com", Some(&good)),
            "m.example.com",
            "/",
        )
        .await
        .expect("good client certificate");
        assert_eq!((r.status, r.text().as_str()), (200, "in"));
        for (what, c) in [("no certificate", None), ("wrong CA", Some(&wrong))] {
            for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
                let mut client = with("m.example.com", c);
                client.versions = vec![version];
                assert!(
                    get(gw.https, &client, "m.example.com", "/").await.is_err(),
                    "MUTUAL must refuse {what} ({version:?})"
                );
            }
        }
        // OPTIONAL_MUTUAL: none is fine, a bad one is not.
        let r = get(gw.https, &with("o.example.com", None), "o.example.com", "/")
            .await
            .expect("optional: no certificate");
        assert_eq!(r.status, 200);
        assert!(get(
            gw.https,
            &with("o.example.com", Some(&wrong)),
            "o.example.com",
            "/"
        )
        .await
        .is_err());
        // subjectAltNames.
        let r = get(
            gw.https,
            &with("s.example.com", Some(&good)),
            "s.example.com",
            "/",
        )
        .await
        .expect("SAN listed");
        assert_eq!(r.status, 200);
        assert!(
            get(
                gw.https,
                &with("s.example.com", Some(&other_san)),
                "s.example.com",
                "/"
            )
            .await
            .is_err(),
            "SAN not listed"
        );
    });
    // The client can see a refused handshake before the server has finished counting it.
    let counted = common::eventually(Duration::from_secs(5), || {
        metric(
            &gw,
            "gateway_tls_handshake_failures_total{listener=\"https\"}",
        )
        .filter(|n| *n >= 6.0)
    });
    assert!(counted.is_some(), "{}", gw.get("/metrics").text());
}

#[test]
fn tls12_only_and_tls13_only_servers_and_cipher_suites() {
    let ca = Ca::new("edge ca");
    let srv = ca.server(&["old.example.com", "new.example.com", "suite.example.com"]);
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(secret_yaml("s", &srv, None)
            + &gateway_yaml(
                &(https_server(
                    "old",
                    "[old.example.com]",
                    "{mode: SIMPLE, credentialName: s, maxProtocolVersion: TLSV1_2}",
                ) + &https_server(
                    "new",
                    "[new.example.com]",
                    "{mode: SIMPLE, credentialName: s, minProtocolVersion: TLSV1_3}",
                ) + &https_server(
                    "suite",
                    "[suite.example.com]",
                    "{mode: SIMPLE, credentialName: s, maxProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-ECDSA-CHACHA20-POLY1305]}",
                )),
            )
            + &direct("s", "*.example.com", "v")),
    );
    let only = |sni: &str, v: &'static rustls::SupportedProtocolVersion| Client {
        sni: Some(sni.to_string()),
        versions: vec![v],
        ..Client::default()
    };
    let rt = rt();
    rt.block_on(async {
        let s = handshake(gw.https, &Client::sni("old.example.com"))
            .await
            .expect("1.2 server");
        assert_eq!(s.version, Some(rustls::ProtocolVersion::TLSv1_2));
        assert!(
            handshake(gw.https, &only("old.example.com", &rustls::version::TLS13))
                .await
                .is_err()
        );
        let s = handshake(gw.https, &Client::sni("new.example.com"))
            .await
            .expect("1.3 server");
        assert_eq!(s.version, Some(rustls::ProtocolVersion::TLSv1_3));
        assert!(
            handshake(gw.https, &only("new.example.com", &rustls::version::TLS12))
                .await
                .is_err()
        );
        let s = handshake(gw.https, &Client::sni("suite.example.com"))
            .await
            .expect("suite server");
        assert_eq!(
            s.suite,
            Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
        );
    });
}

#[test]
fn alpn_h2_end_to_end() {
    let ca = Ca::new("edge ca");
    let srv = ca.server(&["h2.example.com"]);
    let up = Upstream::start("h2-backend");
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(secret_yaml("h", &srv, None)
            + &gateway_yaml(&https_server(
                "h",
                "[h2.example.com]",
                "{mode: SIMPLE, credentialName: h}",
            ))
            + &format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: h}}\nspec:\n  hosts: [h2.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}\n",
                up.port()
            )),
    );
    let rt = rt();
    rt.block_on(async {
        let mut c = Client::sni("h2.example.com");
        c.alpn = vec!["h2", "http/1.1"];
        let s = handshake(gw.https, &c).await.expect("handshake");
        assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]));
        let (send, conn) = h2::client::handshake(s.stream).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.expect("h2 ready");
        let req = http::Request::builder()
            .uri("https://h2.example.com/over-h2")
            .body(())
            .expect("request");
        let (resp, _) = send.send_request(req, true).expect("send");
        let resp = resp.await.expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok()),
            Some("h2-backend")
        );
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["uri"], "/over-h2");
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");

        let mut c = Client::sni("h2.example.com");
        c.alpn = vec!["http/1.1"];
        let mut s = handshake(gw.https, &c).await.expect("handshake");
        assert_eq!(s.alpn.as_deref(), Some(&b"http/1.1"[..]));
        let r = http1(&mut s.stream, "h2.example.com", "/h1", true)
            .await
            .expect("h1 request");
        assert_eq!(r.status, 200);
    });
}

/// A TLS upstream: answers every request with what it saw of the connection.
fn tls_upstream(cert: &Leaf, client_ca: Option<&Ca>) -> SocketAddr {
    let chain = vec![cert.der.clone()];
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let config = match client_ca {
        None => b.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert.der().clone()).expect("root");
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            b.with_client_cert_verifier(v)
        }
    }
    .with_single_cert(chain, key)
    .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = rt();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(l.local_addr().expect("addr")).expect("send");
            loop {
                let Ok((tcp, _)) = l.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else { return };
                    let (sni, client) = {
                        let c = s.get_ref().1;
                        (
                            c.server_name().unwrap_or("").to_string(),
                            c.peer_certificates().is_some_and(|p| !p.is_empty()),
                        )
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = format!("sni={sni} client-cert={client}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-upstream: tls\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
    });
    rx.recv().expect("upstream address")
}

#[test]
fn upstream_simple_and_mutual_tls_against_a_real_tls_upstream() {
    let up_ca = Ca::new("upstream ca");
    let client_ca = Ca::new("gateway client ca");
    let up_cert = up_ca.server(&["up.internal"]);
    let simple = tls_upstream(&up_cert, None);
    let mutual = tls_upstream(&up_cert, Some(&client_ca));
    let gw_client = client_ca.client("gateway", &["gateway.internal"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = common::write_file(dir.path(), "up-ca.pem", &up_ca.pem());
    let ca_path = ca_path.display();
    let gw = Gateway::start(Opts::default());
    let route = |name: &str, host: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{https: {port}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.example.com]\n  http:\n  - route: [{{destination: {{host: {host}, port: {{number: 443}}}}}}]\n---\n"
        )
    };
    let dr = |name: &str, host: &str, tls: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  host: {host}\n  trafficPolicy:\n    tls: {tls}\n---\n")
    };
    let mut y = String::new();
    y.push_str(&secret_yaml("gw-client", &gw_client, Some(&up_ca.pem())));
    for (name, host, port, tls) in [
        (
            "simple",
            "simple.svc",
            simple.port(),
            format!("{{mode: SIMPLE, caCertificates: {ca_path}, sni: up.internal}}"),
        ),
        (
            "sans",
            "sans.svc",
            simple.port(),
            format!("{{mode: SIMPLE, caCertificates: {ca_path}, subjectAltNames: [up.internal]}}"),
        ),
        (
            "untrusted",
            "untrusted.svc",
            simple.port(),
            "{mode: SIMPLE, sni: up.internal}".to_string(),
        ),
        (
            "wrongname",
            "wrongname.svc",
            simple.port(),
            format!("{{mode: SIMPLE, caCertificates: {ca_path}, sni: other.internal}}"),
        ),
        (
            "insecure",
            "insecure.svc",
            simple.port(),
            "{mode: SIMPLE, sni: up.internal, insecureSkipVerify: true}".to_string(),
        ),
        (
            "mutual",
            "mutual.svc",
            mutual.port(),
            "{mode: MUTUAL, credentialName: gw-client, sni: up.internal}".to_string(),
        ),
        (
            "nocert",
            "nocert.svc",
            mutual.port(),
            format!("{{mode: SIMPLE, caCertificates: {ca_path}, sni: up.internal}}"),
        ),
        (
            "missing",
            "missing.svc",
            mutual.port(),
            "{mode: MUTUAL, credentialName: nope, sni: up.internal}".to_string(),
        ),
    ] {
        y.push_str(&route(name, host, port));
        y.push_str(&dr(name, host, &tls));
    }
    apply(&gw, &y);
    let get = |name: &str| {
        common::request(
            gw.http,
            "GET",
            "/",
            &[("Host", &format!("{name}.example.com"))],
            b"",
        )
        .expect("request")
    };
    for (name, status, body) in [
        ("simple", 200, "sni=up.internal client-cert=false"),
        ("sans", 200, "sni=up.internal client-cert=false"),
        ("insecure", 200, "sni=up.internal client-cert=false"),
        ("mutual", 200, "sni=up.internal client-cert=true"),
    ] {
        let r = get(name);
        assert_eq!(
            (r.status, r.text().as_str()),
            (status, body),
            "{name}: {}",
            gw.logs()
        );
    }
    for name in ["untrusted", "wrongname", "missing"] {
        let r = get(name);
        assert_eq!(r.status, 503, "{name} must fail: {}", r.text());
        assert!(
            r.header("x-gateway-error")
                .is_some_and(|f| f.starts_with("UF")),
            "{name}: {:?}",
            r.header("x-gateway-error")
        );
    }
    // Without a client certificate, a TLS 1.3 upstream refuses after the client's side of the
    // handshake is done: the failure shows on the first read (a reset, not a connect failure).
    let r = get("nocert");
    assert_eq!(r.status, 503, "nocert must fail: {}", r.text());
}

#[test]
fn invalid_secrets_get_422_naming_the_key_and_dangling_credentials_warn() {
    let ca = Ca::new("edge ca");
    let gw = Gateway::start(Opts::default());
    let good = ca.server(&["late.example.com"]);
    let expired = ca.issue_with(
        "old.example.com",
        &["old.example.com"],
        ExtendedKeyUsagePurpose::ServerAuth,
        |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        },
    );
    let other = ca.server(&["late.example.com"]);
    let cases = [
        (
            "expired",
            secret_json("expired", &expired),
            "stringData[tls.crt]",
            "expired",
        ),
        (
            "expired-generic",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "expired-generic"},
                "type": "Opaque",
                "stringData": {"tls.crt": good.pem, "tls.key": good.key_pem, "cert": expired.pem, "key": expired.key_pem}}),
            "stringData[cert]",
            "expired",
        ),
        (
            "mismatch",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mismatch"},
                "type": "kubernetes.io/tls",
                "stringData": {"tls.crt": good.pem, "tls.key": other.key_pem}}),
            "stringData[tls.key]",
            "does not match",
        ),
        (
            "garbage",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "garbage"},
                "type": "kubernetes.io/tls",
                "stringData": {"tls.crt": "-----BEGIN CERTIFICATE-----\nMIIBnotacert\n-----END CERTIFICATE-----\n", "tls.key": good.key_pem}}),
            "stringData[tls.crt]",
            "",
        ),
    ];
    for (name, body, field, words) in cases {
        let r = gw.post("/api/v1/namespaces/default/secrets", &body);
        assert_eq!(r.status, 422, "{name}: {}", r.text());
        let v = r.json();
        let causes = v["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            causes
                .iter()
                .any(|c| c["field"] == field
                    && c["message"].as_str().is_some_and(|m| m.contains(words))),
            "{name}: {v}"
        );
        assert!(
            !r.text().contains("PRIVATE KEY"),
            "no key material in errors"
        );
    }
    // A Gateway whose credentialName does not resolve: accepted with a warning; its hosts fail
    // the handshake until the Secret arrives.
    let r = gw.admin_call(
        "POST",
        "/apply",
        "application/yaml",
        (gateway_yaml(&https_server(
            "late",
            "[late.example.com]",
            "{mode: SIMPLE, credentialName: late}",
        )) + &direct("late", "late.example.com", "late"))
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.headers_named("warning")
            .iter()
            .any(|w| w.contains("credentialName") && w.contains("not found")),
        "{:?}",
        r.headers
    );
    let rt = rt();
    assert!(rt
        .block_on(handshake(gw.https, &Client::sni("late.example.com")))
        .is_err());
    assert_eq!(
        gw.post(
            "/api/v1/namespaces/default/secrets",
            &secret_json("late", &good)
        )
        .status,
        201
    );
    let r = rt
        .block_on(get(
            gw.https,
            &Client::sni("late.example.com"),
            "late.example.com",
            "/",
        ))
        .expect("the Secret arrived");
    assert_eq!((r.status, r.text().as_str()), (200, "late"));
    // The expiry metric follows the Secret.
    let not_after = metric(
        &gw,
        "gateway_tls_certificate_expiry_timestamp_seconds{namespace=\"default\",secret=\"late\"}",
    )
    .expect("expiry series");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(not_after > now, "{not_after} vs {now}");
}

// ----- Secrets as Istio reads them, found where an Istio ingress pod finds them -----

/// A Secret of any layout: `entries` go to `stringData` as they are.
fn secret_in(ns: &str, name: &str, type_: &str, entries: &[(&str, &str)]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: {type_}\nstringData:\n"
    );
    for (k, v) in entries {
        y.push_str(&format!("  {k}: {v:?}\n"));
    }
    y.push_str("---\n");
    y
}

/// The `kubernetes.io/tls` keys of a certificate.
fn tls_pair(l: &Leaf) -> [(&'static str, &str); 2] {
    [("tls.crt", &l.pem), ("tls.key", &l.key_pem)]
}

/// Whether the handshake for `sni` serves exactly `want`.
async fn serves(addr: SocketAddr, sni: &str, want: &Leaf) -> Result<(), String> {
    let s = handshake(addr, &Client::sni(sni)).await?;
    if s.leaf == want.der.as_ref() {
        Ok(())
    } else {
        Err(format!("{sni}: another certificate was served"))
    }
}

#[test]
fn opaque_secrets_with_cert_and_key_serve_by_sni_and_never_show_the_key() {
    use base64::Engine as _;
    let ca = Ca::new("edge ca");
    let (a, b) = (ca.server(&["a.example.com"]), ca.server(&["b.example.com"]));
    let gw = Gateway::start(Opts::default());
    // What `kubectl create secret generic --from-file=cert --from-file=key` sends: base64 data.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let r = gw.post(
        "/api/v1/namespaces/default/secrets",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}, "type": "Opaque",
            "data": {"cert": b64(&a.pem), "key": b64(&a.key_pem)},
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    apply(
        &gw,
        &(secret_in(
            "default",
            "b",
            "Opaque",
            &[("cert", &b.pem), ("key", &b.key_pem)],
        ) + &gateway_yaml(
            &(https_server("a", "[a.example.com]", "{mode: SIMPLE, credentialName: a}")
                + &https_server("b", "[b.example.com]", "{mode: SIMPLE, credentialName: b}")),
        ) + &direct("ab", "*.example.com", "generic")),
    );
    let rt = rt();
    rt.block_on(async {
        serves(gw.https, "a.example.com", &a).await.expect("a");
        serves(gw.https, "b.example.com", &b).await.expect("b");
        let r = get(
            gw.https,
            &Client::sni("b.example.com"),
            "b.example.com",
            "/",
        )
        .await
        .expect("request");
        assert_eq!((r.status, r.text().as_str()), (200, "generic"));
    });
    // Reads show the certificate, never the key.
    for path in [
        "/api/v1/namespaces/default/secrets/a",
        "/api/v1/namespaces/default/secrets",
    ] {
        let r = gw.get(path);
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(text.contains("\"cert\""), "{path}: {text}");
        assert!(!text.contains("\"key\""), "{path}: {text}");
        assert!(!text.contains(&b64(&a.key_pem)), "{path}");
        assert!(!text.contains(&b64(&b.key_pem)), "{path}");
    }
}

#[test]
fn a_secret_in_istio_system_serves_a_gateway_in_default_unless_default_has_one() {
    let ca = Ca::new("edge ca");
    let (shared, local, fallback) = (
        ca.server(&["shared.example.com"]),
        ca.server(&["local.example.com"]),
        ca.server(&["local.example.com"]),
    );
    let gw = Gateway::start(Opts::default());
    let y = secret_in(
        "istio-system",
        "shared",
        "kubernetes.io/tls",
        &tls_pair(&shared),
    ) + &secret_in(
        "istio-system",
        "local",
        "kubernetes.io/tls",
        &tls_pair(&fallback),
    ) + &secret_in("default", "local", "kubernetes.io/tls", &tls_pair(&local))
        + &secret_in(
            "other",
            "elsewhere",
            "kubernetes.io/tls",
            &tls_pair(&shared),
        );
    let r = gw.admin_call(
        "POST",
        "/apply",
        "application/yaml",
        (y + &gateway_yaml(
            &(https_server(
                "shared",
                "[shared.example.com]",
                "{mode: SIMPLE, credentialName: shared}",
            ) + &https_server(
                "local",
                "[local.example.com]",
                "{mode: SIMPLE, credentialName: local}",
            ) + &https_server(
                "elsewhere",
                "[elsewhere.example.com]",
                "{mode: SIMPLE, credentialName: elsewhere}",
            )),
        ) + &direct("all", "*.example.com", "found"))
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.headers_named("warning").iter().any(|w| w.contains(
            "Secret \\\"elsewhere\\\" not found in namespace \\\"default\\\" or \\\"istio-system\\\""
        )),
        "{:?}",
        r.headers
    );
    let rt = rt();
    rt.block_on(async {
        serves(gw.https, "shared.example.com", &shared)
            .await
            .expect("from istio-system");
        serves(gw.https, "local.example.com", &local)
            .await
            .expect("the Gateway's namespace first");
        assert!(
            handshake(gw.https, &Client::sni("elsewhere.example.com"))
                .await
                .is_err(),
            "a Secret in a third namespace is not looked at"
        );
    });
    // Without the Gateway's own, the gateway's namespace serves.
    assert_eq!(
        gw.delete("/api/v1/namespaces/default/secrets/local").status,
        200
    );
    rt.block_on(async {
        serves(gw.https, "local.example.com", &fallback)
            .await
            .expect("istio-system after default");
    });
}

#[test]
fn mutual_tls_takes_the_client_ca_from_the_cacert_secret() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let other_ca = Ca::new("other ca");
    let srv = server_ca.server(&["m.example.com"]);
    let good = client_ca.client("good", &["spiffe://example.com/good"]);
    let wrong = other_ca.client("good", &["spiffe://example.com/good"]);
    let gw = Gateway::start(Opts::default());
    // The credential has no CA; `m-cacert`, in the gateway's namespace, has the client CA.
    apply(
        &gw,
        &(secret_in(
            "default",
            "m",
            "Opaque",
            &[("cert", &srv.pem), ("key", &srv.key_pem)],
        ) + &secret_in(
            "istio-system",
            "m-cacert",
            "Opaque",
            &[("cacert", &client_ca.pem())],
        ) + &gateway_yaml(&https_server(
            "m",
            "[m.example.com]",
            "{mode: MUTUAL, credentialName: m}",
        )) + &direct("m", "m.example.com", "in")),
    );
    let with = |cert: Option<&Leaf>, version: &'static rustls::SupportedProtocolVersion| Client {
        sni: Some("m.example.com".to_string()),
        cert: cert.cloned(),
        versions: vec![version],
        ..Client::default()
    };
    let rt = rt();
    rt.block_on(async {
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let r = get(gw.https, &with(Some(&good), version), "m.example.com", "/")
                .await
                .unwrap_or_else(|e| panic!("signed by the -cacert CA ({version:?}): {e}"));
            assert_eq!((r.status, r.text().as_str()), (200, "in"));
            for (what, c) in [
                ("a certificate of another CA", Some(&wrong)),
                ("none", None),
            ] {
                assert!(
                    get(gw.https, &with(c, version), "m.example.com", "/")
                        .await
                        .is_err(),
                    "MUTUAL must refuse {what} ({version:?})"
                );
            }
        }
    });
    // The -cacert Secret wins over the credential's own CA (Istio's order): with the other CA
    // in the credential, the client CA still comes from m-cacert.
    apply(
        &gw,
        &secret_in(
            "default",
            "m",
            "Opaque",
            &[
                ("cert", &srv.pem),
                ("key", &srv.key_pem),
                ("cacert", &other_ca.pem()),
            ],
        ),
    );
    rt.block_on(async {
        let r = get(
            gw.https,
            &with(Some(&good), &rustls::version::TLS13),
            "m.example.com",
            "/",
        )
        .await
        .expect("still the -cacert CA");
        assert_eq!(r.status, 200);
        assert!(get(
            gw.https,
            &with(Some(&wrong), &rustls::version::TLS13),
            "m.example.com",
            "/"
        )
        .await
        .is_err());
    });
    // Without m-cacert, the credential's own CA is the client CA.
    assert_eq!(
        gw.delete("/api/v1/namespaces/istio-system/secrets/m-cacert")
            .status,
        200
    );
    rt.block_on(async {
        let r = get(
            gw.https,
            &with(Some(&wrong), &rustls::version::TLS13),
            "m.example.com",
            "/",
        )
        .await
        .expect("the credential's cacert now");
        assert_eq!(r.status, 200);
        assert!(get(
            gw.https,
            &with(Some(&good), &rustls::version::TLS13),
            "m.example.com",
            "/"
        )
        .await
        .is_err());
    });
}

#[test]
fn namespace_flag_moves_the_fallback_namespace() {
    let ca = Ca::new("edge ca");
    let (moved, stale) = (
        ca.server(&["moved.example.com"]),
        ca.server(&["stale.example.com"]),
    );
    let gw = Gateway::start(Opts::default().arg("--namespace").arg("other"));
    let r = gw.admin_call(
        "POST",
        "/apply",
        "application/yaml",
        (secret_in("other", "moved", "kubernetes.io/tls", &tls_pair(&moved))
            + &secret_in(
                "istio-system",
                "stale",
                "kubernetes.io/tls",
                &tls_pair(&stale),
            )
            + &gateway_yaml(
                &(https_server(
                    "moved",
                    "[moved.example.com]",
                    "{mode: SIMPLE, credentialName: moved}",
                ) + &https_server(
                    "stale",
                    "[stale.example.com]",
                    "{mode: SIMPLE, credentialName: stale}",
                )),
            )
            + &direct("all", "*.example.com", "ok"))
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.headers_named("warning").iter().any(|w| w.contains(
            "Secret \\\"stale\\\" not found in namespace \\\"default\\\" or \\\"other\\\""
        )),
        "{:?}",
        r.headers
    );
    let rt = rt();
    rt.block_on(async {
        serves(gw.https, "moved.example.com", &moved)
            .await
            .expect("from --namespace other");
        assert!(
            handshake(gw.https, &Client::sni("stale.example.com"))
                .await
                .is_err(),
            "istio-system is not the fallback under --namespace other"
        );
    });
}

/// One `openssl s_client` session to the HTTPS listener: a request for `sni`, the session saved
/// to `sess` (and resumed from it when it exists); whether the handshake resumed.
fn openssl_session(
    port: u16,
    sni: &str,
    sess: &std::path::Path,
    cert: Option<(&std::path::Path, &std::path::Path)>,
) -> bool {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        sni,
        "-ign_eof",
    ]);
    if sess.exists() {
        cmd.arg("-sess_in").arg(sess);
    }
    cmd.arg("-sess_out").arg(sess);
    if let Some((c, k)) = cert {
        cmd.arg("-cert").arg(c).arg("-key").arg(k);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client (Debian package openssl)");
    // The request makes the server answer and close, so that s_client reads the session tickets
    // TLS 1.3 sends after the handshake before it saves the session.
    let req = format!("GET / HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), req.as_bytes())
        .expect("request");
    let out = child.wait_with_output().expect("s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("HTTP/1.1 200"),
        "no answer through s_client: {text}"
    );
    text.lines().any(|l| l.starts_with("Reused,"))
}

#[test]
fn sessions_resume_across_reloads_but_not_on_mutual_tls_servers() {
    let ca = Ca::new("resume ca");
    let client_ca = Ca::new("resume client ca");
    let srv = ca.server(&["r.example.com", "m.example.com"]);
    let client = client_ca.client("c", &["spiffe://example.com/c"]);
    let gw = Gateway::start(Opts::default());
    let servers = https_server("r", "[r.example.com]", "{mode: SIMPLE, credentialName: r}")
        + &https_server("m", "[m.example.com]", "{mode: MUTUAL, credentialName: m}");
    apply(
        &gw,
        &(secret_yaml("r", &srv, None)
            + &secret_yaml("m", &srv, Some(&client_ca.pem()))
            + &gateway_yaml(&servers)
            + &direct("r", "*.example.com", "one")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert, &client.pem).expect("write");
    std::fs::write(&key, &client.key_pem).expect("write");
    let (simple, mutual) = (
        dir.path().join("simple.sess"),
        dir.path().join("mutual.sess"),
    );
    let port = gw.https.port();
    assert!(
        !openssl_session(port, "r.example.com", &simple, None),
        "a first session is full"
    );
    assert!(
        openssl_session(port, "r.example.com", &simple, None),
        "the ticket resumes"
    );
    let with_cert = Some((cert.as_path(), key.as_path()));
    assert!(!openssl_session(port, "m.example.com", &mutual, with_cert));
    assert!(
        openssl_session(port, "m.example.com", &mutual, with_cert),
        "mTLS resumes until a reload"
    );
    // A reload (a new snapshot, new server configurations): SIMPLE sessions survive it; a
    // verified client certificate must be verified again against the configuration now served.
    apply(&gw, &direct("r", "*.example.com", "two"));
    assert!(
        openssl_session(port, "r.example.com", &simple, None),
        "resumed across the reload"
    );
    assert!(
        !openssl_session(port, "m.example.com", &mutual, with_cert),
        "mTLS verifies again"
    );
}

#[test]
fn a_client_naming_an_ip_address_in_its_sni_is_served_without_a_log_line() {
    // wrk and some health checkers send the address they dialled as the SNI, which RFC 6066
    // forbids; rustls ignores it (no SNI: the `*` server answers) and warns, once per handshake.
    let ca = Ca::new("ip sni ca");
    let srv = ca.server(&["any.example.com"]);
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(secret_yaml("any", &srv, None)
            + &gateway_yaml(&https_server(
                "any",
                "[\"*\"]",
                "{mode: SIMPLE, credentialName: any}",
            ))
            + &direct("any", "*", "any")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..3 {
        openssl_session(
            gw.https.port(),
            "127.0.0.1",
            &dir.path().join(format!("{i}.sess")),
            None,
        );
    }
    let logs = gw.logs();
    assert!(
        !logs.contains("Illegal SNI"),
        "a client-chosen SNI logged a line per handshake:\n{logs}"
    );
}

/// A client socket that counts the TLS records the server sends (their 5-byte headers give each
/// one's length), for tests of how responses are framed.
struct RecordCounter {
    tcp: tokio::net::TcpStream,
    records: Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes left of the record header being read, then of its body.
    header: Vec<u8>,
    body_left: usize,
}

impl RecordCounter {
    fn count(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 5 {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header.clear();
                self.records.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

impl tokio::io::AsyncRead for RecordCounter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf);
        let fresh = buf.filled()[before..].to_vec();
        self.count(&fresh);
        r
    }
}

impl tokio::io::AsyncWrite for RecordCounter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[test]
fn a_small_response_is_one_tls_record() {
    let ca = Ca::new("records ca");
    let srv = ca.server(&["rec.example.com"]);
    let up = Upstream::start("records");
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(secret_yaml("rec", &srv, None)
            + &gateway_yaml(&https_server(
                "rec",
                "[rec.example.com, direct.rec.example.com]",
                "{mode: SIMPLE, credentialName: rec}",
            ))
            + &direct("direct", "direct.rec.example.com", "fixed")
            + &format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: rec}}\nspec:\n  hosts: [rec.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}\n",
                up.port()
            )),
    );
    rt().block_on(async {
        let records = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tcp = tokio::net::TcpStream::connect(gw.https)
            .await
            .expect("connect");
        let io = RecordCounter {
            tcp,
            records: records.clone(),
            header: Vec::new(),
            body_left: 0,
        };
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(Client::sni("rec.example.com").config()));
        let name = rustls::pki_types::ServerName::try_from("rec.example.com").expect("name");
        let mut s = connector.connect(name, io).await.expect("handshake");
        // The first request also carries the session tickets the server sends after the
        // handshake; the ones after it see only their response.
        for (i, (host, want)) in [
            ("rec.example.com", "records"),
            ("rec.example.com", "records"),
            ("direct.rec.example.com", "fixed"),
        ]
        .into_iter()
        .enumerate()
        {
            let before = records.load(Ordering::SeqCst);
            let r = http1(&mut s, host, "/r", false).await.expect("a response");
            assert_eq!(r.status, 200, "{host}");
            assert!(r.text().contains(want), "{host}: {}", r.text());
            let n = records.load(Ordering::SeqCst) - before;
            assert!(
                i == 0 || n == 1,
                "{host}: the response came in {n} TLS records, want one (head and body sealed together)"
            );
        }
    });
}
