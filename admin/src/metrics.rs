//! The control plane's metrics, registered on the registry the binary passes in (never the
//! process default): config generation, reloads by result, the time of the last success, and
//! whether the store is reachable. Replicas sharing a store have converged when their
//! `gateway_config_generation` (the store revision they serve) is equal.

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts, Registry};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub(crate) struct ConfigMetrics {
    generation: IntGauge,
    reloads: IntCounterVec,
    last_success: Gauge,
    store_connected: IntGauge,
}

impl ConfigMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let generation = IntGauge::new(
            "gateway_config_generation",
            "Store revision of the configuration the data plane serves.",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "gateway_config_reloads_total",
                "Configuration changes, by result (failure: rejected by validation or the store).",
            ),
            &["result"],
        )?;
        let last_success = Gauge::new(
            "gateway_config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration change that was applied.",
        )?;
        let store_connected = IntGauge::new(
            "gateway_store_connected",
            "1 while the configuration store is reachable (always for the file store), else 0.",
        )?;
        registry.register(Box::new(generation.clone()))?;
        registry.register(Box::new(store_connected.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        // Both series exist from the start, so that rate() and alerts see a 0, not a gap.
        reloads.with_label_values(&["success"]);
        reloads.with_label_values(&["failure"]);
        store_connected.set(1);
        Ok(ConfigMetrics {
            generation,
            reloads,
            last_success,
            store_connected,
        })
    }

    pub fn success(&self, generation: u64) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.reloads.with_label_values(&["success"]).inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_success.set(now);
    }

    pub fn store_connected(&self, connected: bool) {
        self.store_connected.set(i64::from(connected));
    }

    pub fn failure(&self) {
        self.reloads.with_label_values(&["failure"]).inc();
    }
}
