//! Hitless binary upgrade, the parts Pingora does not do: Pingora hands the traffic listeners from
//! the old process to the new one (`--upgrade` waits on the upgrade socket; SIGQUIT sends them);
//! here the old process stops its admin API and releases the data dir once the sockets are sent,
//! and the new one waits for both before it opens the store and binds the admin address.
//!
//! The admin listener is not passed along with the traffic sockets: two processes taking admin
//! writes at once would each apply them to their own copy of the store. Instead the store's lock
//! orders the two: the old process closes its admin listener, lets its admin requests in flight
//! finish (1 s at most), then releases the lock; the new one binds the admin address as soon as it
//! is free (requests queue there), takes the lock and loads the configuration, which now holds
//! every write the old one acknowledged, before it answers them.

use admin::FileStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long the new process waits for the old one to release the data dir and the admin address.
pub const TAKE_OVER_WAIT: Duration = Duration::from_secs(30);

/// How long the old process waits for the new one to pick the sockets up: Pingora's close window,
/// after which the old process stops accepting anyway.
const PICK_UP_WAIT: Duration = Duration::from_secs(5);

/// How long the old process lets admin requests in flight finish before it releases the store
/// (a slow one's write, if any, then fails as unavailable).
const ADMIN_FINISH_WAIT: Duration = Duration::from_secs(1);

/// The longest path a Unix socket address holds (`sun_path` less its terminating NUL).
const MAX_SOCK_PATH: usize = 107;

/// The old process's side: what to do once its listening sockets are sent.
pub struct HandOver {
    /// The upgrade socket, which the new process removes once it holds the sockets.
    pub upgrade_sock: PathBuf,
    /// Set to true to close the admin listener.
    pub admin_stop: watch::Sender<bool>,
    /// Admin requests being answered (until their response head: a watch stream does not count).
    pub admin_inflight: Arc<AtomicUsize>,
    /// The file store to release (etcd is shared by design: nothing to release).
    pub store: Option<FileStore>,
}

impl HandOver {
    /// Once the new process holds the sockets, closes the admin listener, waits a moment for its
    /// requests, and releases the data dir.
    pub fn run(&self) {
        // Pingora's send returns once the sockets are queued on the Unix socket; the new process
        // polls for them once a second, and only then gets on to the store and the admin address.
        let deadline = Instant::now() + PICK_UP_WAIT;
        while self.upgrade_sock.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.admin_stop.send(true);
        let deadline = Instant::now() + ADMIN_FINISH_WAIT;
        while self.admin_inflight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(store) = &self.store {
            store.hand_over();
        }
    }
}

/// Counts the admin requests in flight into `n`.
pub fn count_requests(router: axum::Router, n: Arc<AtomicUsize>) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let guard = Inflight::new(n.clone());
            async move {
                let response = next.run(req).await;
                drop(guard);
                response
            }
        },
    ))
}

/// One request in flight: counted from creation until dropped, however the request ends.
struct Inflight(Arc<AtomicUsize>);

impl Inflight {
    fn new(n: Arc<AtomicUsize>) -> Inflight {
        n.fetch_add(1, Ordering::AcqRel);
        Inflight(n)
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Checks, before Pingora binds or connects to it, that the upgrade socket can exist there.
pub fn check_sock(path: &Path, upgrade: bool) -> Result<(), String> {
    let len = path.as_os_str().len();
    if len > MAX_SOCK_PATH {
        return Err(format!(
            "--data-dir: the upgrade socket {} is {len} bytes long, more than a Unix socket path may be ({MAX_SOCK_PATH}); use a shorter --data-dir",
            path.display()
        ));
    }
    if upgrade && !path.parent().is_some_and(Path::is_dir) {
        return Err(format!(
            "--upgrade: {} does not exist, so no gateway runs on this --data-dir to take over from",
            path.parent().unwrap_or(path).display()
        ));
    }
    Ok(())
}

/// Binds the admin address; while taking over, retries for as long as the old process holds it.
pub fn bind_admin(addr: SocketAddr, wait: Duration) -> Result<std::net::TcpListener, String> {
    let deadline = Instant::now() + wait;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(format!("cannot bind --admin {addr}: {e}")),
        }
    }
}
