//! Graceful drain on SIGTERM: readiness drops at once, listeners stop accepting, requests in flight
//! finish, and the process exits as soon as they have (or when the drain timeout ends) — instead of
//! Pingora's unconditional grace-period sleep.

use admin::Health;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// Watches SIGTERM (drain), SIGINT (fast exit) and SIGQUIT (treated as SIGTERM: no binary upgrade).
pub struct Drain {
    pub health: Arc<Health>,
    pub inflight: Arc<AtomicUsize>,
    pub timeout: Duration,
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
        tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = term.recv() => {}
            _ = quit.recv() => {}
        }
        tracing::info!(timeout = ?self.timeout, "SIGTERM: draining");
        self.health.set_draining();
        let inflight = self.inflight.clone();
        let deadline = Instant::now() + self.timeout;
        std::thread::spawn(move || {
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
        });
        ShutdownSignal::GracefulTerminate
    }
}
