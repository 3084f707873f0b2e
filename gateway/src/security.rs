//! Authentication and authorization of one request, before routing, in the order of the filters
//! Istio puts in front of an ingress gateway's router: `RequestAuthentication` (JWT: 401 when a
//! token does not verify, no identity when there is none), then `AuthorizationPolicy` (`CUSTOM`
//! through the external authorizer, then `DENY`, then `ALLOW`; 403 `RBAC: access denied`),
//! `AUDIT` and dry-run policies logged and counted only. What passes leaves its identity (claims
//! for routing, principals for the access log) and the header changes for the upstream request.

use crate::ext_authz::{Check, ExtAuthz};
use crate::jwks::JwksCache;
use crate::metrics;
use crate::routing::{authority_of, local_response, respond};
use bytes::Bytes;
use model::ir::authz::{Decision, GatewaySecurity, Outcome, RequestFacts};
use model::ir::jwt::{self, AuthnOutcome, Identity, JwksSource, JwtError, TokenSources};
use model::ir::Snapshot;
use pingora::proxy::Session;
use pingora::Result;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

/// Envoy's `jwt_authn` answer body for a token that does not verify (CONTRACT §4).
const JWT_FAILS: &str = "Jwt verification fails";
/// Envoy's RBAC answer body.
const RBAC_DENIED: &str = "RBAC: access denied";

/// What the data plane keeps for authentication and authorization across requests.
pub struct Security {
    pub jwks: Arc<JwksCache>,
    pub ext_authz: Arc<ExtAuthz>,
    pub metrics: metrics::Security,
}

/// The connection a request came on, as authorization sees it.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// The Gateway server port the request arrived on (`to.operation.ports`, `destination.port`).
    pub gateway_port: u16,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub sni: Option<Arc<str>>,
    /// The client certificate's identity (mTLS), `spiffe://…`.
    pub principal: Option<Arc<str>>,
    /// The client address for `remoteIpBlocks` and `remote.ip`: the peer, or the
    /// `X-Forwarded-For` hop the trusted proxies name (`crate::client_addr`).
    pub remote: Option<IpAddr>,
}

/// What authentication and authorization left for the rest of the request.
#[derive(Debug, Default)]
pub struct RequestAuth {
    pub identity: Option<Arc<Identity>>,
    /// `iss/sub` of the verified token, for the access log.
    pub request_principal: Option<String>,
    /// The client certificate's identity, for the access log.
    pub peer_principal: Option<Arc<str>>,
    /// The policy that decided (`ap/<ns>/<name>`), for the access log.
    pub policy: Option<String>,
    /// Headers to set on the upstream request (JWT outputs, the authorizer's headers).
    pub upstream_set: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Headers to remove from the upstream request (the token, unless forwarded).
    pub upstream_remove: Vec<String>,
    /// Headers to set on the client's answer (the authorizer's `headersToDownstreamOnAllow`).
    pub downstream_set: Vec<(http::HeaderName, http::HeaderValue)>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Security {
    /// Authenticates and authorizes; `Ok(true)` when the gateway answered (401, 403, or the
    /// authorizer's denial). `flags` gets the response flag of an answer.
    pub async fn check(
        &self,
        session: &mut Session,
        snapshot: &Snapshot,
        conn: &Conn,
        auth: &mut RequestAuth,
        flags: &mut Vec<&'static str>,
    ) -> Result<bool> {
        auth.peer_principal = conn.principal.clone();
        let sec = {
            let authority = authority_of(session.req_header());
            match snapshot.security_at(conn.gateway_port, authority) {
                Some(s) => s.clone(),
                None => return Ok(false),
            }
        };
        if !sec.jwt.is_empty() && self.authenticate(session, &sec, auth).await? {
            return Ok(true);
        }
        if sec.custom.is_empty()
            && sec.deny.is_empty()
            && sec.allow.is_empty()
            && sec.audit.is_empty()
        {
            return Ok(false);
        }
        self.authorize(session, snapshot, &sec, conn, auth, flags)
            .await
    }

    async fn authenticate(
        &self,
        session: &mut Session,
        sec: &GatewaySecurity,
        auth: &mut RequestAuth,
    ) -> Result<bool> {
        let mut outcome = self.verify(session, sec, false).await;
        if matches!(outcome, AuthnOutcome::Refused(JwtError::NoMatchingKey)) {
            // The issuer may have rotated its keys since they were fetched.
            outcome = self.verify(session, sec, true).await;
        }
        match outcome {
            AuthnOutcome::Anonymous => Ok(false),
            AuthnOutcome::Authenticated(id) => {
                for (name, value) in &id.headers_to_add {
                    if let (Ok(n), Ok(v)) = (
                        http::HeaderName::from_bytes(name.as_bytes()),
                        http::HeaderValue::from_str(value),
                    ) {
                        auth.upstream_set.push((n, v));
                    }
                }
                auth.upstream_remove.extend(id.header_to_remove.clone());
                auth.request_principal = id.claims.request_principal();
                auth.identity = Some(Arc::new(id));
                Ok(false)
            }
            AuthnOutcome::Refused(e) => {
                self.metrics
                    .jwt_failures
                    .with_label_values(&[e.reason()])
                    .inc();
                tracing::debug!(reason = e.reason(), error = %e, "JWT refused");
                let body = if e == JwtError::Missing {
                    e.message()
                } else {
                    JWT_FAILS
                };
                answer_401(session, body).await?;
                Ok(true)
            }
        }
    }

    /// One pass of [`jwt::authenticate`] with the keys of the rules whose token is present
    /// (fetched first if need be); `refetch`: ask the remote sets again.
    async fn verify(
        &self,
        session: &Session,
        sec: &GatewaySecurity,
        refetch: bool,
    ) -> AuthnOutcome {
        let req = session.req_header();
        let sources = TokenSources {
            headers: &req.headers,
            query: req.uri.query(),
        };
        let mut keys: HashMap<&str, Option<Arc<jwt::Jwks>>> = HashMap::new();
        for p in &sec.jwt {
            if jwt::find_token(p, sources).is_none() {
                continue;
            }
            let k = if refetch && !matches!(p.keys, JwksSource::Inline(_)) {
                Box::pin(self.jwks.refetch(p)).await
            } else {
                Box::pin(self.jwks.keys(p)).await
            };
            keys.insert(p.id.as_str(), k);
        }
        let lookup = |p: &jwt::JwtProvider| keys.get(p.id.as_str()).cloned().flatten();
        jwt::authenticate(&sec.jwt, &lookup, sources, now_secs())
    }

    async fn authorize(
        &self,
        session: &mut Session,
        snapshot: &Snapshot,
        sec: &GatewaySecurity,
        conn: &Conn,
        auth: &mut RequestAuth,
        flags: &mut Vec<&'static str>,
    ) -> Result<bool> {
        let remote = conn.remote;
        let mut decision = decide(session, sec, conn, auth, remote, false);
        self.report(&decision, session);
        if let Outcome::Custom { provider, policy } = &decision.outcome {
            let (provider, policy) = (provider.clone(), policy.clone());
            // Boxed: the HTTP client's future would size every checked request's future.
            match Box::pin(self.ext_authz.check(&provider, session, snapshot)).await {
                Check::Allow {
                    upstream,
                    downstream,
                } => {
                    auth.upstream_set.extend(upstream);
                    auth.downstream_set.extend(downstream);
                    decision = decide(session, sec, conn, auth, remote, true);
                }
                Check::Deny(answer) => {
                    self.denied(&policy, "CUSTOM");
                    auth.policy = Some(policy);
                    flags.push("UAEX");
                    crate::ext_authz::write_denial(session, answer, "UAEX").await?;
                    return Ok(true);
                }
                Check::Fail { status } => {
                    self.denied(&policy, "CUSTOM");
                    auth.policy = Some(policy);
                    flags.push("UAEX");
                    respond(session, status, "UAEX", "").await?;
                    return Ok(true);
                }
                Check::UnknownProvider => {
                    // Istio turns a CUSTOM policy whose provider MeshConfig lacks into deny-all.
                    self.denied(&policy, "CUSTOM");
                    auth.policy = Some(policy);
                    flags.push("RBAC");
                    respond(session, 403, "RBAC", RBAC_DENIED).await?;
                    return Ok(true);
                }
            }
        }
        match decision.outcome {
            Outcome::Allow { policy } => {
                auth.policy = policy;
                Ok(false)
            }
            Outcome::Deny { policy } => {
                let action = if policy.is_some() { "DENY" } else { "ALLOW" };
                self.denied(policy.as_deref().unwrap_or(""), action);
                auth.policy = policy;
                flags.push("RBAC");
                respond(session, 403, "RBAC", RBAC_DENIED).await?;
                Ok(true)
            }
            // `authorize_after_custom` never asks again.
            Outcome::Custom { .. } => Ok(false),
        }
    }

    fn denied(&self, policy: &str, action: &str) {
        self.metrics
            .denied
            .with_label_values(&[policy, action])
            .inc();
    }

    /// AUDIT and dry-run results: logged and counted, never enforced.
    fn report(&self, d: &Decision, session: &Session) {
        if d.audited_by.is_none() && d.dry_run_denied_by.is_none() {
            return;
        }
        let req = session.req_header();
        let (method, authority) = (req.method.as_str(), authority_of(req));
        let path = req.uri.path();
        if let Some(p) = &d.audited_by {
            self.metrics.audited.with_label_values(&[p]).inc();
            tracing::info!(policy = %p, method, authority, path, "AuthorizationPolicy AUDIT matched");
        }
        if let Some(p) = &d.dry_run_denied_by {
            self.metrics.dry_run_denied.with_label_values(&[p]).inc();
            tracing::info!(policy = %p, method, authority, path, "dry-run AuthorizationPolicy would deny");
        }
    }
}

/// Istio's decision for the request; `after_custom`: the CUSTOM provider allowed it.
fn decide(
    session: &Session,
    sec: &GatewaySecurity,
    conn: &Conn,
    auth: &RequestAuth,
    remote: Option<IpAddr>,
    after_custom: bool,
) -> Decision {
    let req = session.req_header();
    let empty: &[String] = &[];
    let facts = RequestFacts {
        host: authority_of(req),
        port: conn.gateway_port,
        method: req.method.as_str(),
        path: req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        headers: &req.headers,
        source_ip: conn.peer.map(|a| a.ip()),
        remote_ip: remote,
        destination_ip: conn.local.map(|a| a.ip()),
        principal: conn.principal.as_deref(),
        jwt: auth.identity.as_ref().map(|i| &i.claims),
        space_delimited_claims: auth
            .identity
            .as_ref()
            .map_or(empty, |i| i.space_delimited_claims.as_slice()),
        sni: conn.sni.as_deref(),
    };
    if after_custom {
        sec.authorize_after_custom(&facts)
    } else {
        sec.authorize(&facts)
    }
}

/// 401 with Envoy's `www-authenticate` challenge (a gRPC request gets UNAUTHENTICATED).
async fn answer_401(session: &mut Session, body: &'static str) -> Result<()> {
    if crate::grpc::is_grpc(session.req_header()) {
        return respond(session, 401, "", body).await;
    }
    let req = session.req_header();
    let realm = format!(
        "Bearer realm=\"http://{}{}\", error=\"invalid_token\"",
        authority_of(req),
        req.uri.path()
    );
    let mut resp = local_response(401, "", body.len())?;
    if let Ok(v) = http::HeaderValue::from_str(&realm) {
        resp.insert_header("www-authenticate", v)?;
    }
    resp.insert_header("content-type", "text/plain")?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await?;
    }
    Ok(())
}
