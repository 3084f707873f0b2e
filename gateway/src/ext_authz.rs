//! The HTTP external authorizer of `CUSTOM` AuthorizationPolicies (MeshConfig
//! `extensionProviders[].envoyExtAuthzHttp`), as Envoy's `ext_authz` filter asks it: the request's
//! method and `pathPrefix` + path, with Host, the headers `includeRequestHeadersInCheck` names and
//! `includeAdditionalHeadersInCheck`, no body. A 200 allows (the answer's headers named by
//! `headersToUpstreamOnAllow` go upstream); any other status denies, and that status, body and the
//! headers `headersToDownstreamOnDeny` names (all by default) reach the client. An authorizer
//! that cannot be reached in `timeout` allows with `failOpen`, else answers `statusOnError`.
//! The service is reached like any destination: a cluster of the snapshot for that host and port
//! (ServiceEntry endpoints, DestinationRule TLS) or DNS, through Pingora's connector and a peer
//! built by [`crate::peer`].

use crate::outbound::{self, Answer};
use crate::upstream::Upstreams;
use bytes::Bytes;
use model::ir::{Cluster, ClusterPolicy, Discovery, Snapshot};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A header name pattern as Istio writes them: `exact`, `prefix*`, `*suffix`, `*`; case ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPattern(String);

impl HeaderPattern {
    pub fn new(p: &str) -> HeaderPattern {
        HeaderPattern(p.to_ascii_lowercase())
    }

    pub fn matches(&self, name: &str) -> bool {
        let p = self.0.as_str();
        let name = name.to_ascii_lowercase();
        if p == "*" {
            true
        } else if let Some(s) = p.strip_prefix('*') {
            name.ends_with(s)
        } else if let Some(s) = p.strip_suffix('*') {
            name.starts_with(s)
        } else {
            name == p
        }
    }
}

/// One `envoyExtAuthzHttp` provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// The authorizer's host (`ext-authz.foo.svc.cluster.local`, a ServiceEntry host, a DNS name).
    pub service: String,
    pub port: u16,
    pub timeout: Duration,
    pub path_prefix: String,
    pub fail_open: bool,
    /// The status when the authorizer cannot be reached and `failOpen` is false (Istio: 403).
    pub status_on_error: u16,
    pub include_request_headers: Vec<HeaderPattern>,
    pub additional_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub headers_to_upstream_on_allow: Vec<HeaderPattern>,
    /// Empty: every header of the denial (but Host).
    pub headers_to_downstream_on_deny: Vec<HeaderPattern>,
    pub headers_to_downstream_on_allow: Vec<HeaderPattern>,
}

impl Provider {
    /// The providers of a MeshConfig; a warning for each that cannot be served here.
    pub fn from_mesh(mesh: &model::mesh::MeshConfig) -> (Vec<Provider>, Vec<String>) {
        use model::mesh::ProviderKind;
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for (i, p) in mesh.extension_providers.iter().enumerate() {
            let h = match &p.kind {
                ProviderKind::ExtAuthzHttp(h) => h,
                ProviderKind::Other(kind) => {
                    warnings.push(format!("extensionProviders[{i}] ({}): {kind} is not served by this gateway; CUSTOM policies naming it deny", p.name));
                    continue;
                }
            };
            if h.include_request_body_in_check.is_some() {
                warnings.push(format!("extensionProviders[{i}].envoyExtAuthzHttp.includeRequestBodyInCheck ({}): the request body is not sent to the authorizer: accepted but not enforced yet", p.name));
            }
            let patterns = |v: &[String]| v.iter().map(|s| HeaderPattern::new(s)).collect();
            let additional_headers = h
                .include_additional_headers_in_check
                .iter()
                .filter_map(|(n, v)| {
                    Some((
                        http::HeaderName::from_bytes(n.as_bytes()).ok()?,
                        http::HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect();
            // `namespace/host`: there are no namespaces of Services here, only hosts.
            let service = h.service.rsplit('/').next().unwrap_or_default().to_string();
            out.push(Provider {
                name: p.name.clone(),
                service,
                port: h.port,
                timeout: h.timeout,
                path_prefix: h.path_prefix.clone().unwrap_or_default(),
                fail_open: h.fail_open,
                status_on_error: h.status_on_error,
                include_request_headers: patterns(&h.include_request_headers_in_check),
                additional_headers,
                headers_to_upstream_on_allow: patterns(&h.headers_to_upstream_on_allow),
                headers_to_downstream_on_deny: patterns(&h.headers_to_downstream_on_deny),
                headers_to_downstream_on_allow: patterns(&h.headers_to_downstream_on_allow),
            });
        }
        (out, warnings)
    }
}

/// What the authorizer said.
#[derive(Debug)]
pub enum Check {
    /// Allowed: these headers go on the upstream request, and these on the client's answer.
    Allow {
        upstream: Vec<(http::HeaderName, http::HeaderValue)>,
        downstream: Vec<(http::HeaderName, http::HeaderValue)>,
    },
    /// Denied: the authorizer's answer, its headers already filtered.
    Deny(Answer),
    /// Unreachable, `failOpen` false: answer this status.
    Fail { status: u16 },
    /// No provider of that name in MeshConfig.
    UnknownProvider,
}

/// The providers and the client that asks them.
pub struct ExtAuthz {
    providers: HashMap<String, Provider>,
    connector: Connector,
    upstreams: Arc<Upstreams>,
    metrics: crate::metrics::Security,
}

/// Headers never copied from one message to another here (framing and hop-by-hop).
const FRAMING: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "host",
];

impl ExtAuthz {
    pub fn new(
        providers: Vec<Provider>,
        upstreams: Arc<Upstreams>,
        metrics: crate::metrics::Security,
    ) -> Arc<ExtAuthz> {
        Arc::new(ExtAuthz {
            providers: providers.into_iter().map(|p| (p.name.clone(), p)).collect(),
            connector: Connector::new(None),
            upstreams,
            metrics,
        })
    }

    /// Asks provider `name` about the request.
    pub async fn check(&self, name: &str, session: &Session, snapshot: &Snapshot) -> Check {
        let Some(p) = self.providers.get(name) else {
            self.metrics
                .ext_authz_errors
                .with_label_values(&[name, "unknown_provider"])
                .inc();
            tracing::warn!(
                provider = name,
                "CUSTOM policy names a provider MeshConfig does not declare: denied"
            );
            return Check::UnknownProvider;
        };
        let start = Instant::now();
        let asked = self.ask(p, session, snapshot).await;
        self.metrics
            .ext_authz_duration
            .with_label_values(&[name])
            .observe(start.elapsed().as_secs_f64());
        match asked {
            Ok(answer) if answer.status == 200 => Check::Allow {
                upstream: picked(&answer.headers, &p.headers_to_upstream_on_allow, false),
                downstream: picked(&answer.headers, &p.headers_to_downstream_on_allow, false),
            },
            // Envoy counts a 5xx of an HTTP authorizer as a failure to authorize (failOpen applies).
            Ok(answer) if answer.status >= 500 => {
                self.failed(p, "status", &format!("answered {}", answer.status))
            }
            Ok(mut answer) => {
                let headers = picked(&answer.headers, &p.headers_to_downstream_on_deny, true);
                answer.headers = http::HeaderMap::new();
                for (n, v) in headers {
                    answer.headers.append(n, v);
                }
                Check::Deny(answer)
            }
            Err((reason, why)) => self.failed(p, reason, &why),
        }
    }

    fn failed(&self, p: &Provider, reason: &str, why: &str) -> Check {
        self.metrics
            .ext_authz_errors
            .with_label_values(&[p.name.as_str(), reason])
            .inc();
        tracing::warn!(provider = %p.name, error = %why, fail_open = p.fail_open, "external authorizer failed");
        if p.fail_open {
            Check::Allow {
                upstream: Vec::new(),
                downstream: Vec::new(),
            }
        } else {
            Check::Fail {
                status: p.status_on_error,
            }
        }
    }

    /// The check request and its answer; `Err((reason label, detail))`.
    async fn ask(
        &self,
        p: &Provider,
        session: &Session,
        snapshot: &Snapshot,
    ) -> Result<Answer, (&'static str, String)> {
        let deadline = Instant::now() + p.timeout;
        let req = session.req_header();
        let path = format!(
            "{}{}",
            p.path_prefix,
            req.uri.path_and_query().map_or("/", |pq| pq.as_str())
        );
        let mut head = RequestHeader::build(req.method.clone(), path.as_bytes(), None)
            .map_err(|e| ("connect", e.to_string()))?;
        for (n, v) in &req.headers {
            let name = n.as_str();
            if !FRAMING.contains(&name) && p.include_request_headers.iter().any(|h| h.matches(name))
            {
                head.append_header(n.clone(), v.clone())
                    .map_err(|e| ("connect", e.to_string()))?;
            }
        }
        for (n, v) in &p.additional_headers {
            head.insert_header(n.clone(), v.clone())
                .map_err(|e| ("connect", e.to_string()))?;
        }
        let cluster = cluster_for(snapshot, &p.service, p.port);
        let endpoints = tokio::time::timeout_at(deadline.into(), self.upstreams.resolve(&cluster))
            .await
            .map_err(|_| ("timeout", format!("resolving {}", p.service)))?;
        let Some(ep) = endpoints.first() else {
            return Err((
                "connect",
                format!("{}:{} has no endpoint", p.service, p.port),
            ));
        };
        let mut peer =
            crate::peer::build(&cluster, ep.addr, &p.service, false).map_err(|e| ("connect", e))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        peer.options.connection_timeout = Some(remaining);
        // The Host the authorizer sees: the request's, as Envoy's check request carries it.
        let authority = crate::routing::authority_of(req).to_string();
        let authority = if authority.is_empty() {
            p.service.clone()
        } else {
            authority
        };
        outbound::send_to_peer(
            &self.connector,
            &peer,
            &authority,
            head,
            Bytes::new(),
            remaining,
        )
        .await
        .map_err(|e| {
            let reason = if e.starts_with("timed out") {
                "timeout"
            } else {
                "connect"
            };
            (reason, e)
        })
    }
}

/// The snapshot's cluster for the authorizer (ServiceEntry endpoints, DestinationRule), else DNS.
fn cluster_for(snapshot: &Snapshot, host: &str, port: u16) -> Arc<Cluster> {
    match snapshot.cluster_for_service(host, port) {
        Some(c) => c.clone(),
        None => Arc::new(Cluster {
            name: format!("outbound|{port}||{host}"),
            host: host.to_string(),
            port,
            subset: None,
            discovery: Discovery::Dns {
                host: host.to_string(),
                port,
            },
            policy: ClusterPolicy::default(),
        }),
    }
}

/// The headers of `from` that `patterns` name (all, when `all_if_empty` and there are none).
fn picked(
    from: &http::HeaderMap,
    patterns: &[HeaderPattern],
    all_if_empty: bool,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    from.iter()
        .filter(|(n, _)| !FRAMING.contains(&n.as_str()))
        .filter(|(n, _)| {
            (all_if_empty && patterns.is_empty()) || patterns.iter().any(|p| p.matches(n.as_str()))
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// Writes the authorizer's denial to the client, with `x-gateway-error: FLAG`.
pub async fn write_denial(
    session: &mut Session,
    answer: Answer,
    flag: &str,
) -> pingora::Result<()> {
    let mut resp =
        pingora::http::ResponseHeader::build(answer.status, Some(answer.headers.len() + 2))?;
    for (n, v) in &answer.headers {
        resp.append_header(n.clone(), v.clone())?;
    }
    resp.insert_header("x-gateway-error", flag)?;
    resp.insert_header("content-length", answer.body.len().to_string())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    let empty = answer.body.is_empty() || head_only;
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(answer.body), true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_patterns_are_istios_string_forms_ignoring_case() {
        assert!(HeaderPattern::new("X-Ext-Authz").matches("x-ext-authz"));
        assert!(!HeaderPattern::new("x-ext-authz").matches("x-ext-authz-2"));
        assert!(HeaderPattern::new("x-*").matches("X-User"));
        assert!(!HeaderPattern::new("x-*").matches("authorization"));
        assert!(HeaderPattern::new("*-id").matches("x-user-id"));
        assert!(HeaderPattern::new("*").matches("anything"));
    }

    #[test]
    fn denial_headers_default_to_all_but_framing() {
        let mut h = http::HeaderMap::new();
        h.insert("x-reason", http::HeaderValue::from_static("no"));
        h.insert("content-length", http::HeaderValue::from_static("2"));
        let all = picked(&h, &[], true);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "x-reason");
        assert!(picked(&h, &[], false).is_empty());
        let named = picked(&h, &[HeaderPattern::new("x-other")], true);
        assert!(named.is_empty());
    }
}
