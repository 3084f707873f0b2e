//! The RFC 8555 conversation, on `instant-acme`: the account (registered once, its key kept in
//! the shared ACME state so that a restart or another replica reuses it), and one order for a
//! server's exact hosts: publish the challenge of each authorization, tell the server it is
//! ready, finalize with a fresh ECDSA P-256 key, download the chain.

use super::challenges::Published;
use super::kv::Kv;
use super::AcmeConfig;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use model::acme::Challenge;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The key of the account in the ACME state.
const ACCOUNT_KEY: &str = "account";
/// The prefix of published challenges.
pub const CHALLENGE_PREFIX: &str = "challenge/";

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Why a step failed: the step names the metric label and the status condition.
#[derive(Debug)]
pub struct Failure {
    pub step: &'static str,
    pub message: String,
}

fn fail(step: &'static str) -> impl Fn(instant_acme::Error) -> Failure {
    move |e| Failure {
        step,
        message: e.to_string(),
    }
}

fn builder(config: &AcmeConfig) -> Result<instant_acme::AccountBuilder, Failure> {
    match &config.ca_file {
        Some(path) => Ok(Account::builder_with_http(Box::new(client_with_roots(
            path,
        )?))),
        None => Account::builder().map_err(fail("account")),
    }
}

/// An HTTPS client that trusts every certificate of the PEM bundle at `path` (and nothing
/// else), on ring. instant-acme's own `builder_with_root` reads only the first one.
fn client_with_roots(
    path: &std::path::Path,
) -> Result<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        instant_acme::BodyWrapper<bytes::Bytes>,
    >,
    Failure,
> {
    use rustls_pki_types::pem::PemObject as _;
    let err = |message: String| Failure {
        step: "account",
        message: format!("--acme-ca-file {}: {message}", path.display()),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?
    {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in it".into()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// The account: the stored one for this directory, or a new registration stored for the others
/// (if another replica registered first, its account is used instead).
pub async fn account(config: &AcmeConfig, kv: &dyn Kv) -> Result<Account, Failure> {
    let kv_err = |e: String| Failure {
        step: "account",
        message: format!("ACME state: {e}"),
    };
    let stored = kv.get(ACCOUNT_KEY).await.map_err(kv_err)?;
    let mut version = None;
    if let Some((body, v)) = &stored {
        version = Some(*v);
        match serde_json::from_str::<StoredAccount>(body) {
            Ok(a) if a.directory == config.directory => {
                let account = builder(config)?
                    .from_credentials(a.credentials)
                    .await
                    .map_err(fail("account"))?;
                tracing::info!(directory = %config.directory, id = account.id(), "ACME account loaded from the store");
                return Ok(account);
            }
            Ok(_) => {
                tracing::info!(directory = %config.directory, "the stored ACME account is for another directory: registering")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the stored ACME account is unreadable: registering a new one")
            }
        }
    }
    let contact: Vec<String> = config.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = config
        .eab
        .as_ref()
        .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
    let (account, credentials) = builder(config)?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(fail("account"))?;
    let body = serde_json::to_string(&StoredAccount {
        directory: config.directory.clone(),
        credentials,
    })
    .map_err(|e| Failure {
        step: "account",
        message: e.to_string(),
    })?;
    if kv.cas(ACCOUNT_KEY, body, version).await.map_err(kv_err)? {
        tracing::info!(directory = %config.directory, id = account.id(), "ACME account registered and stored");
        return Ok(account);
    }
    // Another replica stored its account meanwhile: use that one, so that all share one.
    tracing::info!("another replica registered the ACME account first: using it");
    Box::pin(account_from_store(config, kv)).await
}

/// Drops the stored account, so that the next order registers a new one.
pub async fn forget_account(kv: &dyn Kv) {
    if let Err(e) = kv.delete(ACCOUNT_KEY).await {
        tracing::warn!(error = %e, "cannot drop the stored ACME account");
    }
}

async fn account_from_store(config: &AcmeConfig, kv: &dyn Kv) -> Result<Account, Failure> {
    let (body, _) = kv
        .get(ACCOUNT_KEY)
        .await
        .map_err(|e| Failure {
            step: "account",
            message: e,
        })?
        .ok_or_else(|| Failure {
            step: "account",
            message: "the stored account vanished".into(),
        })?;
    let a: StoredAccount = serde_json::from_str(&body).map_err(|e| Failure {
        step: "account",
        message: e.to_string(),
    })?;
    builder(config)?
        .from_credentials(a.credentials)
        .await
        .map_err(fail("account"))
}

/// A certificate chain and its key, PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// How long the ACME server may take to validate and issue.
fn patience() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(Duration::from_secs(90))
}

/// One order for `hosts`, answered with `challenge`. The challenges are published in `kv` for
/// every replica while the order runs, and withdrawn after, whatever the outcome.
pub async fn order(
    account: &Account,
    kv: &dyn Kv,
    hosts: &[String],
    challenge: Challenge,
) -> Result<Issued, Failure> {
    let mut published: Vec<String> = Vec::new();
    let r = order_inner(account, kv, hosts, challenge, &mut published).await;
    for key in published {
        if let Err(e) = kv.delete(&key).await {
            tracing::warn!(key, error = %e, "cannot withdraw an ACME challenge");
        }
    }
    r
}

async fn order_inner(
    account: &Account,
    kv: &dyn Kv,
    hosts: &[String],
    challenge: Challenge,
    published: &mut Vec<String>,
) -> Result<Issued, Failure> {
    let ids: Vec<Identifier> = hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(fail("order"))?;
    tracing::info!(hosts = ?hosts, url = order.url(), "ACME order placed");
    let kind = match challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(fail("order"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(Failure {
                    step: "challenge",
                    message: format!("authorization is {other:?}"),
                })
            }
        }
        let host = authz.identifier().to_string();
        let mut ch = authz.challenge(kind.clone()).ok_or_else(|| Failure {
            step: "challenge",
            message: format!(
                "the ACME server offers no {} challenge for {host}",
                challenge.as_str()
            ),
        })?;
        let p = Published {
            host: host.clone(),
            token: ch.token.clone(),
            key_authorization: ch.key_authorization().as_str().to_string(),
        };
        let key = format!("{CHALLENGE_PREFIX}{host}");
        let body = serde_json::to_string(&p).map_err(|e| Failure {
            step: "challenge",
            message: e.to_string(),
        })?;
        // Replace whatever an interrupted order of ours left for this host.
        let current = kv.get(&key).await.map_err(|e| Failure {
            step: "challenge",
            message: e,
        })?;
        let written = kv
            .cas(&key, body, current.map(|(_, v)| v))
            .await
            .map_err(|e| Failure {
                step: "challenge",
                message: e,
            })?;
        if !written {
            return Err(Failure {
                step: "challenge",
                message: format!("the challenge of {host} changed while publishing it"),
            });
        }
        published.push(key);
        // Every replica polls the shared state; give them a moment to answer.
        tokio::time::sleep(super::PUBLISH_DELAY).await;
        tracing::info!(
            host,
            challenge = challenge.as_str(),
            "ACME challenge published; telling the server it is ready"
        );
        ch.set_ready().await.map_err(fail("challenge"))?;
    }
    let status = order
        .poll_ready(&patience())
        .await
        .map_err(fail("challenge"))?;
    if status != OrderStatus::Ready {
        let why = order
            .state()
            .error
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        return Err(Failure {
            step: "challenge",
            message: format!("order is {status:?} {why}").trim().to_string(),
        });
    }
    tracing::info!(hosts = ?hosts, "ACME authorizations valid; finalizing");
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Failure {
            step: "finalize",
            message: e.to_string(),
        })?;
    let params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| Failure {
        step: "finalize",
        message: e.to_string(),
    })?;
    let csr = params.serialize_request(&key).map_err(|e| Failure {
        step: "finalize",
        message: e.to_string(),
    })?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(fail("finalize"))?;
    let chain_pem = order
        .poll_certificate(&patience())
        .await
        .map_err(fail("finalize"))?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}
