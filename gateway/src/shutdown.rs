//! Graceful drain on SIGTERM and SIGQUIT: readiness drops at once, listeners stop accepting,
//! requests in flight finish, and the process exits as soon as they have (or when the drain
//! timeout ends) — instead of Pingora's unconditional grace-period sleep. SIGQUIT with a new
//! process waiting (`--upgrade`) first hands the listening sockets over (binary upgrade).

use crate::upgrade::HandOver;
use admin::Health;
use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

/// Watches SIGTERM (drain), SIGINT (fast exit) and SIGQUIT (hand over, then drain).
pub struct Drain {
    pub health: Arc<Health>,
    pub inflight: Arc<AtomicUsize>,
    pub timeout: Duration,
    /// Where a new process started with `--upgrade` waits for the listening sockets.
    pub upgrade_sock: PathBuf,
    /// The server's execution phases, subscribed to before it ran.
    pub phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    pub hand_over: Arc<HandOver>,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; exiting");
            return ShutdownSignal::FastShutdown;
        };
        let upgrade = tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = term.recv() => false,
            _ = quit.recv() => true,
        };
        self.health.set_draining();
        // The new process removes the socket once it has the listeners, so one that exists has a
        // process waiting on it (or left by one that died: then Pingora's send fails after its
        // retries and this process drains all the same).
        let phases = self.phases.lock().ok().and_then(|mut p| p.take());
        match phases {
            Some(phases) if upgrade && self.upgrade_sock.exists() => {
                tracing::info!(sock = %self.upgrade_sock.display(), timeout = ?self.timeout, "SIGQUIT: handing the listening sockets to the new process, then draining");
                let inflight = self.inflight.clone();
                let timeout = self.timeout;
                let hand_over = self.hand_over.clone();
                std::thread::spawn(move || {
                    follow_upgrade(phases, &hand_over);
                    exit_when_drained(&inflight, timeout);
                });
                ShutdownSignal::GracefulUpgrade
            }
            _ => {
                if upgrade {
                    tracing::warn!(sock = %self.upgrade_sock.display(), "SIGQUIT but no new process waits for the listening sockets (start it with --upgrade first); draining as for SIGTERM");
                }
                tracing::info!(timeout = ?self.timeout, "draining");
                let inflight = self.inflight.clone();
                let timeout = self.timeout;
                std::thread::spawn(move || exit_when_drained(&inflight, timeout));
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}

/// Blocks through Pingora's hand-over: once the sockets are sent, the admin API and the store go
/// to the new process; the listeners keep accepting alongside it for Pingora's fixed close
/// timeout (5 s), and this returns when they stop.
fn follow_upgrade(mut phases: broadcast::Receiver<ExecutionPhase>, hand_over: &HandOver) {
    let mut handed = false;
    loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::GracefulUpgradeCloseTimeout) => {
                tracing::info!("listening sockets sent; handing the admin API and the store over");
                hand_over.run();
                handed = true;
            }
            Ok(ExecutionPhase::ShutdownStarted) | Err(broadcast::error::RecvError::Closed) => break,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
        }
    }
    if !handed {
        hand_over.run();
    }
}

/// Exits once no request is in flight, or when the drain timeout ends.
fn exit_when_drained(inflight: &AtomicUsize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    // A request accepted just before the listeners closed may not have a context yet.
    std::thread::sleep(Duration::from_millis(200));
    while inflight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = inflight.load(Ordering::Acquire);
    if left > 0 {
        tracing::warn!(left, "drain timeout reached with requests in flight");
    } else {
        tracing::info!("drained; exiting");
    }
    std::process::exit(0);
}
