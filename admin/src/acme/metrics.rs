//! The ACME client's metrics: orders by result, failures by step, and when each managed
//! certificate is next renewed.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct AcmeMetrics {
    /// `gateway_acme_orders_total{challenge,result}`: result `issued` or `failed`.
    pub orders: IntCounterVec,
    /// `gateway_acme_failures_total{step}`: account, lock, order, challenge, finalize, store.
    pub failures: IntCounterVec,
    /// `gateway_acme_next_renewal_timestamp_seconds{namespace,name}`: per managed Secret.
    pub next_renewal: IntGaugeVec,
}

impl AcmeMetrics {
    pub fn register(registry: &Registry) -> Result<AcmeMetrics, prometheus::Error> {
        let orders = IntCounterVec::new(
            Opts::new(
                "gateway_acme_orders_total",
                "ACME orders placed by this process, by challenge type and result",
            ),
            &["challenge", "result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "gateway_acme_failures_total",
                "ACME failures by step (account, order, challenge, finalize, store)",
            ),
            &["step"],
        )?;
        let next_renewal = IntGaugeVec::new(
            Opts::new(
                "gateway_acme_next_renewal_timestamp_seconds",
                "When the ACME certificate in this Secret is renewed next (Unix seconds)",
            ),
            &["namespace", "name"],
        )?;
        registry.register(Box::new(orders.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(next_renewal.clone()))?;
        Ok(AcmeMetrics {
            orders,
            failures,
            next_renewal,
        })
    }
}
