//! One conformance suite for every `Store`: the file store, the memory store and the etcd store
//! (against a real `etcd` this test starts on free loopback ports) must agree on create, read,
//! list, replace, delete, preconditions, all-or-nothing batches, concurrent writers with one
//! expected version, and the order of watched changes. Revisions are compared, never assumed to
//! be particular numbers: etcd's revision is shared by every prefix of the cluster.
//!
//! Without an `etcd` binary the etcd part is skipped with a message, unless `CI` is set, where
//! it fails: CI must run it.

use admin::store::{Change, EtcdConfig, EtcdStore, Event, Op};
use admin::{FileStore, MemoryStore, Precondition, Store, StoreError};
use model::{Kind, Resource, ResourceKey};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

fn vs(name: &str, host: &str) -> Resource {
    let body = format!(
        r#"{{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{{"name":"{name}","namespace":"default"}},"spec":{{"hosts":["{host}"]}}}}"#
    );
    model::decode_resource(body.as_bytes(), model::Format::Json, None).expect("decode")
}

fn secret(name: &str) -> Resource {
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"{name}","namespace":"edge"}},"type":"kubernetes.io/tls","data":{{"tls.crt":"Y2VydA==","tls.key":"a2V5"}}}}"#
    );
    model::decode_resource(body.as_bytes(), model::Format::Json, None).expect("decode")
}

fn key(name: &str) -> ResourceKey {
    ResourceKey::new(Kind::VirtualService, "default", name)
}

fn rv(r: &Resource) -> u64 {
    admin::store::resource_version(r).expect("resourceVersion")
}

fn hosts(r: &Resource) -> String {
    r.spec_value()["hosts"][0]
        .as_str()
        .unwrap_or("")
        .to_string()
}

// ----- the suite -----

/// Every case on a fresh, empty store from `fresh`.
async fn suite<F, Fut>(what: &str, mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    eprintln!("{what}: create, read, list, replace, delete");
    crud(fresh().await).await;
    eprintln!("{what}: preconditions");
    preconditions(fresh().await).await;
    eprintln!("{what}: batches are all or nothing");
    batches(fresh().await).await;
    eprintln!("{what}: one winner among writers expecting one version");
    one_winner(fresh().await).await;
    eprintln!("{what}: watched changes come in commit order");
    watch_order(fresh().await).await;
}

async fn crud(s: Arc<dyn Store>) {
    let empty = s.list().await.expect("list");
    assert!(empty.items.is_empty(), "{:?}", empty.items);
    assert_eq!(s.get(&key("a")).await.expect("get"), None);

    let a = s
        .put(vs("a", "a1"), Precondition::Absent)
        .await
        .expect("create");
    assert!(rv(&a) > empty.revision);
    assert_eq!(s.get(&key("a")).await.expect("get"), Some(a.clone()));
    let sec = s
        .put(secret("tls"), Precondition::Any)
        .await
        .expect("secret");
    assert!(rv(&sec) > rv(&a));
    // Secrets are stored whole: the private key comes back.
    let Some(Resource::Secret(stored)) = s
        .get(&ResourceKey::new(Kind::Secret, "edge", "tls"))
        .await
        .expect("get")
    else {
        panic!("secret missing")
    };
    assert_eq!(stored.data.get("tls.key").map(String::as_str), Some("a2V5"));

    let listing = s.list().await.expect("list");
    assert_eq!(listing.items.len(), 2);
    assert!(listing.revision >= rv(&sec));
    assert_eq!(s.revision().await.expect("revision"), listing.revision);

    let a2 = s
        .put(vs("a", "a2"), Precondition::Version(rv(&a)))
        .await
        .expect("replace");
    assert!(rv(&a2) > rv(&sec));
    assert_eq!(hosts(&a2), "a2");
    let got = s.get(&key("a")).await.expect("get").expect("a");
    assert_eq!((rv(&got), hosts(&got)), (rv(&a2), "a2".to_string()));

    let old = s
        .delete(&key("a"), Precondition::Version(rv(&a2)))
        .await
        .expect("delete");
    assert_eq!(hosts(&old), "a2", "a delete returns the object as it was");
    assert_eq!(s.get(&key("a")).await.expect("get"), None);
    let after = s.list().await.expect("list");
    assert_eq!(after.items.len(), 1);
    assert!(after.revision > rv(&a2), "a delete is a revision too");
}

async fn preconditions(s: Arc<dyn Store>) {
    let a = s
        .put(vs("a", "a1"), Precondition::Absent)
        .await
        .expect("create");
    let err = s
        .put(vs("a", "x"), Precondition::Absent)
        .await
        .expect_err("exists");
    assert!(
        matches!(&err, StoreError::AlreadyExists { key: k } if *k == key("a")),
        "{err:?}"
    );
    let a2 = s
        .put(vs("a", "a2"), Precondition::Any)
        .await
        .expect("unconditional");
    let err = s
        .put(vs("a", "x"), Precondition::Version(rv(&a)))
        .await
        .expect_err("stale");
    match &err {
        StoreError::Conflict { key: k, found, .. } => {
            assert_eq!(*k, key("a"));
            assert_eq!(*found, Some(rv(&a2)));
        }
        other => panic!("{other:?}"),
    }
    let err = s
        .put(vs("b", "x"), Precondition::Version(rv(&a)))
        .await
        .expect_err("missing");
    assert!(
        matches!(&err, StoreError::Conflict { found: None, .. }),
        "{err:?}"
    );
    let err = s
        .delete(&key("zz"), Precondition::Any)
        .await
        .expect_err("missing");
    assert!(matches!(&err, StoreError::NotFound { .. }), "{err:?}");
    let err = s
        .delete(&key("a"), Precondition::Version(rv(&a)))
        .await
        .expect_err("stale delete");
    assert!(matches!(&err, StoreError::Conflict { .. }), "{err:?}");
    // Nothing of the above changed anything.
    let got = s.get(&key("a")).await.expect("get").expect("a");
    assert_eq!((rv(&got), hosts(&got)), (rv(&a2), "a2".to_string()));
    assert_eq!(s.get(&key("b")).await.expect("get"), None);
}

async fn batches(s: Arc<dyn Store>) {
    let a = s
        .put(vs("a", "a1"), Precondition::Absent)
        .await
        .expect("create");
    let before = s.list().await.expect("list");
    let err = s
        .commit(vec![
            Op::Put {
                resource: vs("b", "b1"),
                expected: Precondition::Absent,
            },
            Op::Delete {
                key: key("a"),
                expected: Precondition::Any,
            },
            Op::Put {
                resource: vs("c", "c1"),
                expected: Precondition::Version(rv(&a) + 1000),
            },
        ])
        .await
        .expect_err("the last op is stale");
    assert!(
        matches!(&err, StoreError::Conflict { key: k, .. } if *k == key("c")),
        "{err:?}"
    );
    let after = s.list().await.expect("list");
    assert_eq!(
        after.revision, before.revision,
        "a rejected batch is no revision"
    );
    assert_eq!(
        after.items, before.items,
        "a rejected batch changes nothing"
    );

    let c = s
        .commit(vec![
            Op::Put {
                resource: vs("b", "b1"),
                expected: Precondition::Absent,
            },
            Op::Put {
                resource: vs("a", "a2"),
                expected: Precondition::Version(rv(&a)),
            },
            Op::Put {
                resource: secret("tls"),
                expected: Precondition::Any,
            },
        ])
        .await
        .expect("batch");
    assert!(c.revision > before.revision);
    assert_eq!(c.objects.len(), 3);
    for o in &c.objects {
        assert_eq!(rv(o), c.revision, "one batch, one revision: {}", o.key());
    }
    let listing = s.list().await.expect("list");
    assert_eq!(listing.items.len(), 3);
    assert!(listing.items.iter().all(|o| rv(o) <= listing.revision));
    let empty = s.commit(Vec::new()).await.expect("empty commit");
    assert_eq!(
        empty.revision, listing.revision,
        "an empty commit writes nothing"
    );
}

async fn one_winner(s: Arc<dyn Store>) {
    let a = s
        .put(vs("a", "a0"), Precondition::Absent)
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let expected = Precondition::Version(rv(&a));
        tasks.push(tokio::spawn(async move {
            s.put(vs("a", &format!("w{i}")), expected).await
        }));
    }
    let mut wins = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => wins.push(r),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one writer wins: {wins:?}");
    let got = s.get(&key("a")).await.expect("get").expect("a");
    assert_eq!(got, wins[0]);
}

async fn next_change(rx: &mut broadcast::Receiver<Change>) -> Change {
    loop {
        let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a change within 5 s")
            .expect("channel open");
        // A relist signal carries no events; the suite has nothing to relist.
        if !c.events.is_empty() {
            return c;
        }
    }
}

async fn watch_order(s: Arc<dyn Store>) {
    let mut rx = s.watch();
    let a = s
        .put(vs("a", "a1"), Precondition::Absent)
        .await
        .expect("create");
    let batch = s
        .commit(vec![
            Op::Put {
                resource: vs("b", "b1"),
                expected: Precondition::Absent,
            },
            Op::Put {
                resource: vs("a", "a2"),
                expected: Precondition::Version(rv(&a)),
            },
        ])
        .await
        .expect("batch");
    let del = s
        .commit(vec![Op::Delete {
            key: key("b"),
            expected: Precondition::Any,
        }])
        .await
        .expect("delete");

    let c1 = next_change(&mut rx).await;
    assert_eq!(c1.revision, rv(&a));
    assert!(
        matches!(&c1.events[..], [Event::Put(r)] if *r == a),
        "{c1:?}"
    );
    let c2 = next_change(&mut rx).await;
    assert_eq!(c2.revision, batch.revision);
    match &c2.events[..] {
        [Event::Put(b), Event::Put(a2)] => {
            assert_eq!((b.key(), rv(b)), (key("b"), batch.revision));
            assert_eq!((a2.key(), hosts(a2)), (key("a"), "a2".to_string()));
        }
        other => panic!("{other:?}"),
    }
    let c3 = next_change(&mut rx).await;
    assert_eq!(c3.revision, del.revision);
    assert!(
        matches!(&c3.events[..], [Event::Delete(k)] if *k == key("b")),
        "{c3:?}"
    );
}

// ----- the stores -----

#[tokio::test]
async fn the_memory_store_conforms() {
    suite("memory", || async {
        Arc::new(MemoryStore::new()) as Arc<dyn Store>
    })
    .await;
}

#[tokio::test]
async fn the_file_store_conforms() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    let base = root.path().to_path_buf();
    suite("file", move || {
        n += 1;
        let dir = base.join(format!("store-{n}"));
        async move { Arc::new(FileStore::open(&dir).expect("open")) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_store_conforms() {
    let Some(etcd) = Etcd::start() else { return };
    let url = etcd.url();
    let mut n = 0;
    suite("etcd", move || {
        n += 1;
        let config = EtcdConfig::parse(&format!("{url}/conformance/{n}")).expect("url");
        async move { Arc::new(EtcdStore::connect(&config).await.expect("connect")) as Arc<dyn Store> }
    })
    .await;
}

/// Two stores on one prefix are two replicas: what one commits, the other reads and watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stores_on_one_prefix_share_everything() {
    let Some(etcd) = Etcd::start() else { return };
    let config = EtcdConfig::parse(&format!("{}/shared", etcd.url())).expect("url");
    let a = EtcdStore::connect(&config).await.expect("connect a");
    let b = EtcdStore::connect(&config).await.expect("connect b");
    let mut rx = b.watch();
    let put = a
        .put(vs("x", "x1"), Precondition::Absent)
        .await
        .expect("put");
    let seen = next_change(&mut rx).await;
    assert_eq!(seen.revision, rv(&put));
    assert_eq!(b.get(&key("x")).await.expect("get"), Some(put.clone()));
    let err = b
        .put(vs("x", "x2"), Precondition::Absent)
        .await
        .expect_err("exists");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    // Keys under the prefix that are not objects are ignored, not an error.
    let other = EtcdConfig::parse(&format!("{}/other", etcd.url())).expect("url");
    let c = EtcdStore::connect(&other).await.expect("connect c");
    assert!(c.list().await.expect("list").items.is_empty());
}

/// etcd gone: calls fail promptly with `Unavailable` and the store says it is disconnected;
/// etcd back: it reconnects by itself and a compacted history makes it signal a relist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_is_unavailable_and_recovers() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let config = EtcdConfig::parse(&format!("{}/outage", etcd.url())).expect("url");
    let s = EtcdStore::connect(&config).await.expect("connect");
    wait_for(|| s.connected(), "connected").await;
    let a = s
        .put(vs("a", "a1"), Precondition::Absent)
        .await
        .expect("put");
    let mut rx = s.watch();

    etcd.kill();
    wait_for(|| !s.connected(), "disconnected").await;
    let t = Instant::now();
    let err = s
        .put(vs("a", "a2"), Precondition::Any)
        .await
        .expect_err("etcd is down");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(s.list().await, Err(StoreError::Unavailable(_))));

    // History compacted past what the watch saw, while only the test can reach etcd (on another
    // port), so that the store cannot see the writes before they are compacted away.
    let private = etcd.restart_elsewhere();
    let other = EtcdStore::connect(&EtcdConfig::parse(&format!("{private}/outage")).expect("url"))
        .await
        .expect("connect other");
    let b = other
        .put(vs("b", "b1"), Precondition::Absent)
        .await
        .expect("put b");
    other
        .put(vs("a", "a3"), Precondition::Version(rv(&a)))
        .await
        .expect("put a");
    other.compact(rv(&b) + 1).await.expect("compact");
    drop(other);
    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let relist = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(c)) if c.events.is_empty() => break c,
            Ok(Ok(_)) => continue,
            other => panic!("no relist signal: {other:?}"),
        }
    };
    assert!(relist.revision > rv(&b), "{relist:?}");
    wait_for(|| s.connected(), "reconnected").await;
    let listing = s.list().await.expect("list after the outage");
    assert_eq!(listing.items.len(), 2);
}

async fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "not {what} within 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- a real etcd -----

/// An `etcd` process on free loopback ports with a private data dir; killed on drop.
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The client port everyone is given.
    client: u16,
    peer: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
        let mut e = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            client: free_port(),
            peer: free_port(),
        };
        e.spawn(e.client);
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while !healthy(port) {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                panic!("etcd not healthy within 20 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
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

    /// Same data dir on a client port nobody else knows; returns its URL.
    fn restart_elsewhere(&mut self) -> String {
        self.kill();
        let port = free_port();
        self.spawn(port);
        format!("etcd://127.0.0.1:{port}")
    }
}

/// `GET /health` answers `"health":"true"` once the member has a leader.
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
