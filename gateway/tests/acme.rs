//! ACME end to end against Debian's `pebble` (Let's Encrypt's test ACME server) on loopback ports
//! chosen at run time, with `pebble-challtestsrv` as its DNS (every name is 127.0.0.1) and its
//! validation ports pointed at the gateway's `--http`/`--https` listeners. Pebble's own TLS
//! certificate is made here and its CA given to the gateway with `--acme-ca-file`; the issued
//! chains are checked against pebble's root, fetched from its management interface.
//!
//! 1. File store: one Gateway with two hosts over HTTP-01 (its port-80 server redirects to
//!    HTTPS) and one with two hosts over TLS-ALPN-01 get their certificates, served by SNI; with
//!    `GATEWAY_ACME_TEST_RENEW_AFTER` they are renewed without a restart while a handshake loop
//!    sees no failure; with pebble down they keep serving and the orders are retried, and a
//!    pebble started again (which forgot the account) issues again.
//! 2. Two replicas on a real etcd: one order per certificate, both serve it.
//!
//! Without `pebble` (or `etcd` for 2) a test is skipped with a message, unless `CI` is set.

mod common;

use common::tls::{rt, Ca};
use common::{eventually, free_port, Gateway, Opts};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn have(binary: &str, package: &str) -> bool {
    let found = Command::new(binary)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if ci() {
            panic!("{binary} is not installed (Debian: apt-get install {package}; scripts/setup test does)");
        }
        eprintln!("skipped: no {binary} binary (apt-get install {package})");
    }
    found
}

// ----- pebble and its DNS -----

/// `pebble-challtestsrv` as a DNS server only: every A query is 127.0.0.1, no AAAA.
struct Dns {
    child: Child,
    port: u16,
}

impl Dns {
    fn start(dir: &Path) -> Dns {
        let port = free_port();
        let log = std::fs::File::create(dir.join("dns.log")).expect("log");
        let child = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn pebble-challtestsrv");
        Dns { child, port }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pebble process; its config file is written here. Killed on drop.
struct Pebble {
    child: Option<Child>,
    dir: PathBuf,
    /// The ACME (and management) listener's port.
    port: u16,
    management: u16,
    dns: u16,
    starts: u32,
}

impl Pebble {
    /// Pebble's TLS certificate (for 127.0.0.1 and localhost) signed by `ca`, in `dir`.
    fn new(dir: &Path, ca: &Ca, dns: u16) -> Pebble {
        let leaf = ca.server(&["localhost", "127.0.0.1"]);
        std::fs::write(dir.join("pebble.pem"), &leaf.pem).expect("cert");
        std::fs::write(dir.join("pebble.key"), &leaf.key_pem).expect("key");
        Pebble {
            child: None,
            dir: dir.to_path_buf(),
            port: free_port(),
            management: free_port(),
            dns,
            starts: 0,
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// Starts pebble validating on the gateway's listeners; waits until its directory answers.
    fn start(&mut self, http_port: u16, tls_port: u16) {
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.port),
            "managementListenAddress": format!("127.0.0.1:{}", self.management),
            "certificate": self.dir.join("pebble.pem"),
            "privateKey": self.dir.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let path = self.dir.join("pebble-config.json");
        std::fs::write(&path, config.to_string()).expect("config");
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("pebble-{}.log", self.starts)))
            .expect("log");
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&path)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", self.dns))
            // No random sleeps before validating, no random nonce rejections, and a fresh
            // authorization per order (so that every order is validated).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn pebble");
        self.child = Some(child);
        let up = eventually(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", self.port)).ok()?;
            TcpStream::connect(("127.0.0.1", self.management)).ok()?;
            Some(())
        });
        assert!(up.is_some(), "pebble did not start:\n{}", self.logs());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("pebble-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Pebble's root CA (PEM), which it makes anew at every start.
    fn root(&self) -> String {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.management));
        let r = rt()
            .block_on(common::tls::get(
                addr,
                &common::tls::Client::sni("localhost"),
                "localhost",
                "/roots/0",
            ))
            .expect("pebble's root");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

// ----- the gateway side -----

/// Two HTTPS servers (one host each) on one Gateway, opted in with `challenge`; `redirect` adds
/// a port-80 server that redirects to HTTPS.
fn gateway(name: &str, hosts: [&str; 2], challenge: &str, redirect: bool) -> Value {
    let mut servers: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({"port": {"number": 443, "name": format!("https-{h}"), "protocol": "HTTPS"},
                   "hosts": [h],
                   "tls": {"mode": "SIMPLE", "credentialName": format!("{}-cert", h.replace('.', "-"))}})
        })
        .collect();
    if redirect {
        servers.push(
            json!({"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                            "hosts": hosts, "tls": {"httpsRedirect": true}}),
        );
    }
    json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
           "metadata": {"name": name, "namespace": "default",
                        "annotations": {"acme.gateway/enabled": "true", "acme.gateway/challenge": challenge}},
           "spec": {"servers": servers}})
}

fn apply(g: &Gateway, items: Vec<Value>) {
    let r = g.post(
        "/apply",
        &json!({"apiVersion": "v1", "kind": "List", "items": items}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A handshake for `sni` that verifies the chain against `root` (PEM) only; the leaf (DER).
async fn verified(addr: SocketAddr, sni: &str, root: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default())
}

/// Waits until every host is served with a chain to `root`; the leaves, by host.
fn served_by_root(g: &Gateway, hosts: &[&str], root: &str, within: Duration) -> Vec<Vec<u8>> {
    let rt = rt();
    hosts
        .iter()
        .map(|h| {
            let mut last = String::new();
            eventually(within, || match rt.block_on(verified(g.https, h, root)) {
                Ok(leaf) => Some(leaf),
                Err(e) => {
                    last = e;
                    None
                }
            })
            .unwrap_or_else(|| {
                panic!(
                    "{h} never served a certificate chained to pebble's root (last: {last})\n--- gateway ---\n{}",
                    g.logs()
                )
            })
        })
        .collect()
}

/// The ACME conditions of a Gateway's status.
fn acme_conditions(g: &Gateway, name: &str) -> Vec<Value> {
    let r = g.get(&format!(
        "/apis/networking.istio.io/v1/namespaces/default/gateways/{name}"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["status"]["conditions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| {
                    c["type"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("AcmeCertificate/"))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn metric_sum(g: &Gateway, name: &str, label: &str) -> f64 {
    g.get("/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn acme_gateway(
    pebble: &Pebble,
    ca_file: &Path,
    store: Option<&str>,
    env: &[(&str, &str)],
) -> Gateway {
    let mut opts = Opts::default()
        .arg("--acme-directory")
        .arg(pebble.directory())
        .arg("--acme-ca-file")
        .arg(ca_file.to_string_lossy())
        .arg("--acme-email")
        .arg("ops@example.com")
        .arg("--access-log")
        .arg("off");
    if let Some(s) = store {
        opts = opts.arg("--store").arg(s);
    }
    opts.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Gateway::start(opts)
}

const WEB: [&str; 2] = ["a.acme.test", "b.acme.test"];
const ALPN: [&str; 2] = ["c.acme.test", "d.acme.test"];

#[test]
fn certificates_by_both_challenges_renew_and_survive_an_outage() {
    if !have("pebble", "pebble") || !have("pebble-challtestsrv", "pebble") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("pebble test CA");
    // A bundle whose first CA is not pebble's: every certificate of --acme-ca-file counts.
    let ca_file = dir.path().join("pebble-ca.pem");
    let other = Ca::new("some other CA");
    std::fs::write(&ca_file, format!("{}{}", other.pem(), ca.pem())).expect("ca");
    let dns = Dns::start(dir.path());
    let mut pebble = Pebble::new(dir.path(), &ca, dns.port);
    let g = acme_gateway(
        &pebble,
        &ca_file,
        None,
        &[("GATEWAY_ACME_TEST_RENEW_AFTER", "20s")],
    );
    pebble.start(g.http.port(), g.https.port());
    let root = pebble.root();
    apply(
        &g,
        vec![
            gateway("web", WEB, "http-01", true),
            gateway("alpn", ALPN, "tls-alpn-01", false),
        ],
    );
    let all: Vec<&str> = WEB.iter().chain(ALPN.iter()).copied().collect();

    // ----- 1. issued through both challenges, served by SNI -----
    let first = served_by_root(&g, &all, &root, Duration::from_secs(60));
    for (h, leaf) in all.iter().zip(&first) {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("leaf");
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|s| {
                s.value
                    .general_names
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert!(sans.iter().any(|s| s.contains(h)), "{h}: {sans:?}");
    }
    let logs = g.logs();
    assert!(
        logs.contains("answering an ACME HTTP-01 challenge"),
        "{logs}"
    );
    assert!(
        logs.contains("answering an ACME TLS-ALPN-01 challenge"),
        "{logs}"
    );
    assert!(
        metric_sum(
            &g,
            "gateway_acme_orders_total",
            "challenge=\"http-01\",result=\"issued\""
        ) >= 2.0
    );
    assert!(
        metric_sum(
            &g,
            "gateway_acme_orders_total",
            "challenge=\"tls-alpn-01\",result=\"issued\""
        ) >= 2.0
    );
    // Stored as the server's kubernetes.io/tls Secret, key material not shown.
    let s = g.get("/api/v1/namespaces/default/secrets/a-acme-test-cert");
    assert_eq!(s.status, 200, "{}", s.text());
    assert_eq!(s.json()["type"], "kubernetes.io/tls", "{}", s.text());
    assert!(!s.text().contains("PRIVATE KEY"), "{}", s.text());
    // The Gateway's status says, per server, that its certificate is issued.
    for gw in ["web", "alpn"] {
        // The conditions follow the store within a planning round (a second).
        let conds = eventually(Duration::from_secs(5), || {
            let c = acme_conditions(&g, gw);
            c.iter().all(|c| c["status"] == "True").then_some(c)
        })
        .unwrap_or_else(|| acme_conditions(&g, gw));
        assert_eq!(conds.len(), 2, "{gw}: {conds:?}");
        for c in &conds {
            assert_eq!(c["status"], "True", "{gw}: {c}");
            assert_eq!(c["reason"], "Issued", "{gw}: {c}");
            assert!(
                c["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("AcmeCertificate/servers[")),
                "{c}"
            );
        }
    }
    // The next renewal is published.
    assert!(
        metric_sum(
            &g,
            "gateway_acme_next_renewal_timestamp_seconds",
            "name=\"a-acme-test-cert\""
        ) > 0.0
    );

    // ----- 2. renewed without a restart, under a handshake loop that never fails -----
    let stop = Arc::new(AtomicBool::new(false));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let looper = {
        let (stop, handshakes, failures) = (stop.clone(), handshakes.clone(), failures.clone());
        let (addr, root, hosts) = (
            g.https,
            root.clone(),
            all.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        );
        std::thread::spawn(move || {
            let rt = rt();
            while !stop.load(Ordering::Relaxed) {
                for h in &hosts {
                    match rt.block_on(verified(addr, h, &root)) {
                        Ok(_) => {
                            handshakes.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().expect("lock").push(format!("{h}: {e}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let rtm = rt();
    let renewed = eventually(Duration::from_secs(90), || {
        let now: Vec<Vec<u8>> = all
            .iter()
            .map(|h| {
                rtm.block_on(verified(g.https, h, &root))
                    .unwrap_or_default()
            })
            .collect();
        now.iter()
            .zip(&first)
            .all(|(n, f)| !n.is_empty() && n != f)
            .then_some(now)
    });
    stop.store(true, Ordering::Relaxed);
    looper.join().expect("handshake loop");
    assert!(
        renewed.is_some(),
        "not every certificate was renewed:\n{}",
        g.logs()
    );
    let failed = failures.lock().expect("lock").clone();
    assert!(
        failed.is_empty(),
        "handshakes failed during renewal: {failed:?}"
    );
    assert!(
        handshakes.load(Ordering::Relaxed) > 20,
        "the handshake loop barely ran"
    );

    // ----- 3. pebble down: the certificates keep serving, the orders are retried -----
    let failed_before = metric_sum(&g, "gateway_acme_failures_total", "step=");
    pebble.stop();
    // A renewal that had its certificate just before the stop is stored within moments.
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<Vec<u8>> = served_by_root(&g, &all, &root, Duration::from_secs(5));
    let retried = eventually(Duration::from_secs(60), || {
        (metric_sum(&g, "gateway_acme_failures_total", "step=") >= failed_before + 2.0)
            .then_some(())
    });
    assert!(
        retried.is_some(),
        "no failed attempt while pebble was down:\n{}",
        g.logs()
    );
    let failing = eventually(Duration::from_secs(30), || {
        acme_conditions(&g, "web")
            .into_iter()
            .chain(acme_conditions(&g, "alpn"))
            .find(|c| c["reason"] == "RenewalFailing")
    })
    .expect("a RenewalFailing condition while pebble is down");
    // Still a valid certificate: the condition is True and says it keeps serving.
    assert_eq!(failing["status"], "True", "{failing}");
    assert!(
        failing["message"]
            .as_str()
            .is_some_and(|m| m.contains("keeps serving")),
        "{failing}"
    );
    assert!(
        failing["message"]
            .as_str()
            .is_some_and(|m| m.contains("retrying in")),
        "{failing}"
    );
    // Past the renewal time: still served, still the same certificates.
    let during = served_by_root(&g, &all, &root, Duration::from_secs(5));
    assert_eq!(
        before, during,
        "a certificate changed while the ACME server was down"
    );
    // Back (a new pebble: new root, no memory of the account): issued again on a retry.
    pebble.start(g.http.port(), g.https.port());
    let new_root = pebble.root();
    assert_ne!(new_root, root);
    served_by_root(&g, &all, &new_root, Duration::from_secs(120));
}

// ----- two replicas on etcd -----

#[test]
fn two_replicas_on_etcd_place_one_order_per_certificate() {
    if !have("pebble", "pebble") || !have("pebble-challtestsrv", "pebble") {
        return;
    }
    let Some(etcd) = common::etcd::Etcd::start() else {
        return;
    };
    let store = format!("{}/acme-replicas", etcd.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("pebble test CA");
    let ca_file = dir.path().join("pebble-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca");
    let dns = Dns::start(dir.path());
    let mut pebble = Pebble::new(dir.path(), &ca, dns.port);
    let a = acme_gateway(&pebble, &ca_file, Some(&store), &[]);
    let b = acme_gateway(&pebble, &ca_file, Some(&store), &[]);
    // Pebble validates on A's listeners only: an order B places is answered by A from the
    // challenges both share.
    pebble.start(a.http.port(), a.https.port());
    let root = pebble.root();
    apply(
        &b,
        vec![
            gateway("web", WEB, "http-01", false),
            gateway("alpn", ALPN, "tls-alpn-01", false),
        ],
    );
    let all: Vec<&str> = WEB.iter().chain(ALPN.iter()).copied().collect();
    let from_a = served_by_root(&a, &all, &root, Duration::from_secs(90));
    let from_b = served_by_root(&b, &all, &root, Duration::from_secs(30));
    assert_eq!(from_a, from_b, "the replicas serve different certificates");
    // Settled: one order per certificate in all, whichever replica placed it.
    std::thread::sleep(Duration::from_secs(3));
    let orders = |g: &Gateway| metric_sum(g, "gateway_acme_orders_total", "result=");
    let placed = orders(&a) + orders(&b);
    assert_eq!(
        placed,
        4.0,
        "expected one order per certificate (4), got {placed}\n--- A ---\n{}\n--- B ---\n{}",
        a.logs(),
        b.logs()
    );
}
