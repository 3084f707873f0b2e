//! The ACME client's loop on one process: reads the published challenges into [`Challenges`]
//! (every replica), works out which managed Secrets are due (missing, not covering the server's
//! hosts, expired, or past two thirds of their lifetime) and orders them, one replica at a time
//! per Secret, retrying failures with exponential backoff and jitter while the current
//! certificate keeps serving.

use super::challenges::{Challenges, Published};
use super::client::{self, Failure, CHALLENGE_PREFIX};
use super::kv::Kv;
use super::metrics::AcmeMetrics;
use super::{AcmeConfig, POLL};
use crate::control::ControlPlane;
use instant_acme::Account;
use model::acme::Challenge;
use model::translate::Condition;
use model::{Format, Kind, Resource, ResourceKey};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an order lock holds without being released (a replica that died mid-order).
const LOCK_TTL_SECS: i64 = 300;
/// How soon a replica that found the lock taken looks again.
const LOCK_BUSY_RETRY: Duration = Duration::from_secs(2);
/// How often the managed Secrets are checked.
const PLAN_EVERY: Duration = Duration::from_secs(1);

/// One managed Secret and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    secret: ResourceKey,
    /// The Gateway whose status says how it goes.
    gateway_key: ResourceKey,
    /// `namespace/gateway` and server name, for logs.
    gateway: String,
    server: String,
    hosts: Vec<String>,
    challenge: Challenge,
}

/// What this process knows of a target between attempts.
#[derive(Debug, Default)]
struct Attempts {
    running: bool,
    failures: u32,
    not_before: Option<Instant>,
    /// What the status says while there is no valid certificate: (failing, why).
    why: Option<(bool, String)>,
}

#[derive(Serialize, Deserialize)]
struct Lock {
    holder: String,
    until: i64,
}

/// The record the orderer leaves after storing a certificate, read (strongly, from the shared
/// state) by a replica that gets the lock next, so that a replica whose view of the store lags
/// does not order the same certificate again.
#[derive(Serialize, Deserialize)]
struct IssuedRecord {
    hosts: Vec<String>,
    not_before: i64,
    not_after: i64,
}

struct Manager {
    cp: Arc<ControlPlane>,
    kv: Arc<dyn Kv>,
    config: AcmeConfig,
    challenges: Arc<Challenges>,
    metrics: AcmeMetrics,
    holder: String,
    account: tokio::sync::Mutex<Option<Account>>,
    attempts: Mutex<HashMap<ResourceKey, Attempts>>,
    /// The Gateways whose status has ACME conditions.
    shown: Mutex<BTreeSet<ResourceKey>>,
}

/// Starts the client on the current tokio runtime: challenges are answered from now on, and
/// managed certificates ordered as they come due.
pub fn start(
    cp: Arc<ControlPlane>,
    kv: Arc<dyn Kv>,
    config: AcmeConfig,
    challenges: Arc<Challenges>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let metrics = AcmeMetrics::register(cp.registry()).map_err(|e| e.to_string())?;
    let m = Arc::new(Manager {
        cp,
        kv,
        config,
        challenges,
        metrics,
        holder: uuid::Uuid::new_v4().to_string(),
        account: tokio::sync::Mutex::new(None),
        attempts: Mutex::new(HashMap::new()),
        shown: Mutex::new(BTreeSet::new()),
    });
    tracing::info!(directory = %m.config.directory, "ACME enabled");
    Ok(tokio::spawn(async move { m.run().await }))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Manager {
    async fn run(self: Arc<Self>) {
        let mut last_plan = Instant::now() - PLAN_EVERY;
        loop {
            self.refresh_challenges().await;
            if last_plan.elapsed() >= PLAN_EVERY {
                last_plan = Instant::now();
                self.plan();
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn refresh_challenges(&self) {
        match self.kv.list(CHALLENGE_PREFIX).await {
            Ok(items) => {
                let published: Vec<Published> = items
                    .iter()
                    .filter_map(|(_, v)| serde_json::from_str(v).ok())
                    .collect();
                self.challenges.install(&published);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the published ACME challenges"),
        }
    }

    fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for r in self.cp.resources(Kind::Gateway) {
            let Resource::Gateway(g) = r else { continue };
            let (servers, _) = model::acme::servers(&g);
            let (challenge, _) = model::acme::challenge(&g);
            let ns = g
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string());
            for s in servers {
                out.push(Target {
                    secret: ResourceKey::new(Kind::Secret, &ns, &s.credential_name),
                    gateway_key: ResourceKey::new(Kind::Gateway, &ns, &g.metadata.name),
                    gateway: format!("{ns}/{}", g.metadata.name),
                    server: s.name,
                    hosts: s.hosts,
                    challenge,
                });
            }
        }
        out
    }

    /// When the stored certificate of `t` is due (Unix seconds), or `None` if it is due now.
    fn due_at(&self, t: &Target) -> Option<i64> {
        let Some(Resource::Secret(s)) = self.cp.resource(&t.secret) else {
            return None;
        };
        let pem = s.value(model::TLS_CRT)?;
        let (not_before, not_after, sans) = leaf_validity(&pem)?;
        if !t
            .hosts
            .iter()
            .all(|h| sans.iter().any(|s| s.eq_ignore_ascii_case(h)))
        {
            return None;
        }
        let at = self.renewal_time(not_before, not_after);
        (now_unix() < at && now_unix() < not_after).then_some(at)
    }

    fn renewal_time(&self, not_before: i64, not_after: i64) -> i64 {
        let two_thirds = not_before + (not_after - not_before) * 2 / 3;
        match self.config.renew_after {
            Some(d) => two_thirds.min(not_before + d.as_secs() as i64),
            None => two_thirds,
        }
    }

    fn plan(self: &Arc<Self>) {
        let mut conditions: BTreeMap<ResourceKey, Vec<Condition>> = BTreeMap::new();
        for t in self.targets() {
            let due = self.due_at(&t);
            conditions
                .entry(t.gateway_key.clone())
                .or_default()
                .push(self.condition(&t, due));
            if let Some(at) = due {
                self.metrics
                    .next_renewal
                    .with_label_values(&[t.secret.namespace.as_str(), t.secret.name.as_str()])
                    .set(at);
                continue;
            }
            {
                let Ok(mut attempts) = self.attempts.lock() else {
                    return;
                };
                let a = attempts.entry(t.secret.clone()).or_default();
                if a.running || a.not_before.is_some_and(|n| Instant::now() < n) {
                    continue;
                }
                a.running = true;
            }
            let me = self.clone();
            tokio::spawn(async move { me.attempt(t).await });
        }
        let Ok(mut shown) = self.shown.lock() else {
            return;
        };
        for gone in shown.iter().filter(|k| !conditions.contains_key(*k)) {
            self.cp.set_extra_conditions(gone, Vec::new());
        }
        *shown = conditions.keys().cloned().collect();
        for (key, conds) in conditions {
            self.cp.set_extra_conditions(&key, conds);
        }
    }

    /// The Gateway status condition of one managed server: `AcmeCertificate/<server>`, True
    /// while a valid certificate is served (`Issued`; `Renewing` or `RenewalFailing` once due),
    /// else False with `Pending` (and why) or `Failing` (the last error; retried with backoff).
    fn condition(&self, t: &Target, due: Option<i64>) -> Condition {
        let type_ = format!("AcmeCertificate/{}", t.server);
        let at = |secs: i64| {
            crate::rfc3339(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
        };
        if let Some(renew) = due {
            return Condition {
                type_: type_.into(),
                status: "True".into(),
                reason: "Issued".into(),
                message: format!(
                    "certificate for {} in Secret {}/{}; renewal from {}",
                    t.hosts.join(", "),
                    t.secret.namespace,
                    t.secret.name,
                    at(renew)
                ),
            };
        }
        let why = self
            .attempts
            .lock()
            .ok()
            .and_then(|a| a.get(&t.secret).and_then(|a| a.why.clone()));
        // Due for renewal while still valid: it keeps serving, so the server is still issued.
        let current = match self.cp.resource(&t.secret) {
            Some(Resource::Secret(s)) => s
                .value(model::TLS_CRT)
                .and_then(|pem| leaf_validity(&pem))
                .filter(|(_, not_after, _)| now_unix() < *not_after),
            _ => None,
        };
        if let Some((_, not_after, _)) = current {
            let mut message = format!(
                "renewing; the current certificate (valid until {}) keeps serving",
                at(not_after)
            );
            let mut reason = "Renewing";
            if let Some((failing, w)) = &why {
                message.push_str(&format!(": {w}"));
                if *failing {
                    reason = "RenewalFailing";
                }
            }
            return Condition {
                type_: type_.into(),
                status: "True".into(),
                reason: reason.into(),
                message,
            };
        }
        let (failing, message) = why.unwrap_or_else(|| {
            (
                false,
                format!(
                    "no valid certificate for {} in Secret {}/{} yet: ordering",
                    t.hosts.join(", "),
                    t.secret.namespace,
                    t.secret.name
                ),
            )
        });
        Condition {
            type_: type_.into(),
            status: "False".into(),
            reason: if failing { "Failing" } else { "Pending" }.into(),
            message,
        }
    }

    async fn attempt(self: Arc<Self>, t: Target) {
        let result = self.obtain(&t).await;
        let Ok(mut attempts) = self.attempts.lock() else {
            return;
        };
        let a = attempts.entry(t.secret.clone()).or_default();
        a.running = false;
        match result {
            Ok(Outcome::Issued) | Ok(Outcome::Fresh) => {
                a.failures = 0;
                a.not_before = None;
                a.why = None;
            }
            Ok(Outcome::Busy) => {
                a.not_before = Some(Instant::now() + LOCK_BUSY_RETRY);
                a.why = Some((false, "another replica is ordering this certificate".into()));
            }
            Err(f) => {
                a.failures = a.failures.saturating_add(1);
                let delay = backoff(&self.config, a.failures);
                a.not_before = Some(Instant::now() + delay);
                a.why = Some((
                    true,
                    format!(
                        "{} failed ({} in a row): {}; retrying in {}s",
                        f.step,
                        a.failures,
                        f.message,
                        delay.as_secs()
                    ),
                ));
                self.metrics.failures.with_label_values(&[f.step]).inc();
                tracing::warn!(gateway = %t.gateway, server = %t.server, hosts = ?t.hosts, step = f.step, error = %f.message, retry_in = ?delay, "ACME certificate not obtained; the current certificate (if any) keeps serving");
            }
        }
    }

    async fn obtain(&self, t: &Target) -> Result<Outcome, Failure> {
        let lock_key = format!("lock/{}/{}", t.secret.namespace, t.secret.name);
        if !self.lock(&lock_key).await? {
            tracing::info!(gateway = %t.gateway, server = %t.server, "another replica is ordering this certificate");
            return Ok(Outcome::Busy);
        }
        let r = self.obtain_locked(t).await;
        self.unlock(&lock_key).await;
        r
    }

    async fn obtain_locked(&self, t: &Target) -> Result<Outcome, Failure> {
        let issued_key = format!("issued/{}/{}", t.secret.namespace, t.secret.name);
        let kv_err = |e: String| Failure {
            step: "lock",
            message: e,
        };
        if let Some((body, _)) = self.kv.get(&issued_key).await.map_err(kv_err)? {
            if let Ok(rec) = serde_json::from_str::<IssuedRecord>(&body) {
                let at = self.renewal_time(rec.not_before, rec.not_after);
                if rec.hosts == t.hosts && now_unix() < at {
                    tracing::debug!(gateway = %t.gateway, server = %t.server, "certificate already renewed by another replica");
                    return Ok(Outcome::Fresh);
                }
            }
        }
        let account = self.account().await?;
        tracing::info!(gateway = %t.gateway, server = %t.server, hosts = ?t.hosts, challenge = t.challenge.as_str(), "ordering an ACME certificate");
        let issued = match client::order(&account, self.kv.as_ref(), &t.hosts, t.challenge).await {
            Ok(i) => i,
            Err(f) => {
                self.metrics
                    .orders
                    .with_label_values(&[t.challenge.as_str(), "failed"])
                    .inc();
                if f.message.contains("accountDoesNotExist") {
                    // The ACME server forgot the account (a reset test CA, a deactivation):
                    // the next attempt registers a new one for every replica.
                    tracing::warn!(
                        "the ACME server does not know the stored account: registering a new one"
                    );
                    *self.account.lock().await = None;
                    client::forget_account(self.kv.as_ref()).await;
                }
                return Err(f);
            }
        };
        self.metrics
            .orders
            .with_label_values(&[t.challenge.as_str(), "issued"])
            .inc();
        self.store(t, &issued).await?;
        if let Some((not_before, not_after, _)) = leaf_validity(issued.chain_pem.as_bytes()) {
            let rec = IssuedRecord {
                hosts: t.hosts.clone(),
                not_before,
                not_after,
            };
            if let Ok(body) = serde_json::to_string(&rec) {
                let current = self.kv.get(&issued_key).await.map_err(kv_err)?;
                let _ = self
                    .kv
                    .cas(&issued_key, body, current.map(|(_, v)| v))
                    .await;
            }
            let at = self.renewal_time(not_before, not_after);
            self.metrics
                .next_renewal
                .with_label_values(&[t.secret.namespace.as_str(), t.secret.name.as_str()])
                .set(at);
            tracing::info!(gateway = %t.gateway, server = %t.server, hosts = ?t.hosts, secret = %t.secret, not_after, renew_at = at, "ACME certificate issued and stored");
        }
        Ok(Outcome::Issued)
    }

    /// Writes the certificate as the server's `kubernetes.io/tls` Secret, through the pipeline.
    async fn store(&self, t: &Target, issued: &client::Issued) -> Result<(), Failure> {
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": t.secret.name,
                "namespace": t.secret.namespace,
                "annotations": { "acme.gateway/issued-for": t.gateway },
            },
            "type": "kubernetes.io/tls",
            "stringData": { "tls.crt": issued.chain_pem, "tls.key": issued.key_pem },
        });
        let bytes = serde_json::to_vec(&body).map_err(|e| Failure {
            step: "store",
            message: e.to_string(),
        })?;
        self.cp
            .replace(
                Kind::Secret,
                &t.secret.namespace,
                &t.secret.name,
                &bytes,
                Format::Json,
                false,
            )
            .await
            .map(|_| ())
            .map_err(|e| Failure {
                step: "store",
                message: e.to_string(),
            })
    }

    async fn account(&self) -> Result<Account, Failure> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let a = client::account(&self.config, self.kv.as_ref()).await?;
        *slot = Some(a.clone());
        Ok(a)
    }

    async fn lock(&self, key: &str) -> Result<bool, Failure> {
        let err = |e: String| Failure {
            step: "lock",
            message: e,
        };
        let body = serde_json::to_string(&Lock {
            holder: self.holder.clone(),
            until: now_unix() + LOCK_TTL_SECS,
        })
        .map_err(|e| err(e.to_string()))?;
        let expected = match self.kv.get(key).await.map_err(err)? {
            None => None,
            Some((current, version)) => {
                let held = serde_json::from_str::<Lock>(&current)
                    .is_ok_and(|l| l.holder != self.holder && l.until > now_unix());
                if held {
                    return Ok(false);
                }
                Some(version)
            }
        };
        self.kv.cas(key, body, expected).await.map_err(err)
    }

    async fn unlock(&self, key: &str) {
        if let Ok(Some((current, _))) = self.kv.get(key).await {
            if serde_json::from_str::<Lock>(&current).is_ok_and(|l| l.holder == self.holder) {
                if let Err(e) = self.kv.delete(key).await {
                    tracing::warn!(key, error = %e, "cannot release the ACME order lock (it expires)");
                }
            }
        }
    }
}

enum Outcome {
    Issued,
    /// Another replica renewed it meanwhile.
    Fresh,
    /// Another replica holds the lock.
    Busy,
}

/// `backoff_min · 2^(n-1)`, at most `backoff_max`, plus up to half of it again at random (so
/// that replicas and certificates that failed together do not retry together).
fn backoff(config: &AcmeConfig, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = config
        .backoff_min
        .saturating_mul(1u32 << exp)
        .min(config.backoff_max);
    let jitter = rand::thread_rng().gen_range(0.0..0.5);
    base + base.mul_f64(jitter)
}

/// `notBefore`, `notAfter` (Unix seconds) and DNS SANs of the first certificate of a PEM chain.
fn leaf_validity(pem: &[u8]) -> Option<(i64, i64, Vec<String>)> {
    let chain = model::ir::parse_certificates(pem).ok()?;
    let der = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let info = model::ir::cert_info(der).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
        info.sans,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut c = AcmeConfig::new("https://acme.invalid/dir".into());
        c.backoff_min = Duration::from_secs(2);
        c.backoff_max = Duration::from_secs(20);
        for (n, base) in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 20), (30, 20)] {
            let d = backoff(&c, n);
            let base = Duration::from_secs(base);
            assert!(d >= base && d < base.mul_f64(1.5), "{n}: {d:?}");
        }
    }
}
