//! Fire-and-forget request mirroring: a copy of the request as it goes upstream (head and body)
//! is sent to each chosen mirror cluster with the Host suffixed `-shadow` (Envoy's shadows), on a
//! task of its own with a deadline, so a slow or dead mirror never delays or fails the client. The
//! copy goes through Pingora's connector with a peer built by [`crate::peer`], as proxied requests
//! do: TLS and HTTP/2 per the mirror's DestinationRule. Its response is read and discarded.
//!
//! The body is held until it is complete, up to [`MAX_MIRROR_BODY`]; a larger request is not
//! mirrored, and every outcome is counted in `gateway_mirror_requests_total{destination_service,
//! result}` (`sent`, `failed`, `no_endpoint`, `body_too_large`).

use crate::balancer::{Balancers, Pick};
use crate::upstream::Upstreams;
use bytes::Bytes;
use model::ir::{Cluster, Target};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use prometheus::IntCounterVec;
use std::sync::Arc;
use std::time::Duration;

/// How long a mirror may take in all; it never affects the client.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body mirrored (it is held in memory until complete): 1 MiB.
pub const MAX_MIRROR_BODY: usize = 1 << 20;

/// A request to mirror once its body is complete.
pub struct Pending {
    pub clusters: Vec<Arc<Cluster>>,
    /// The request as sent upstream (after rewrites and header operations), once known.
    pub head: Option<Box<RequestHeader>>,
    /// The Host of the request, without port.
    pub host: String,
    /// The client spoke HTTP/2 (for a mirror cluster with `useClientProtocol`).
    pub client_h2: bool,
    pub body: Vec<u8>,
    /// The body grew past [`MAX_MIRROR_BODY`].
    pub overflow: bool,
}

impl Pending {
    pub fn new(clusters: Vec<Arc<Cluster>>, host: String, client_h2: bool) -> Pending {
        Pending {
            clusters,
            head: None,
            host,
            client_h2,
            body: Vec::new(),
            overflow: false,
        }
    }

    /// Keeps a chunk of the request body, up to the limit.
    pub fn add_body(&mut self, chunk: &[u8]) {
        if self.overflow || self.body.len() + chunk.len() > MAX_MIRROR_BODY {
            self.overflow = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(chunk);
        }
    }
}

/// Which mirrors of a route fire for this request (each by its own percentage).
pub fn chosen(mirrors: &[model::ir::Mirror]) -> Vec<Arc<Cluster>> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    mirrors
        .iter()
        .filter(|m| m.percent >= 100.0 || rng.gen_range(0.0..100.0) < m.percent)
        .filter_map(|m| match &m.target {
            Target::Cluster(c) => Some(c.clone()),
            Target::NoCluster { .. } => None,
        })
        .collect()
}

/// What mirrors share: the connector (its pools), endpoint discovery and balancing, the counter.
pub struct Mirrors {
    connector: Connector,
    upstreams: Arc<Upstreams>,
    balancers: Arc<Balancers>,
    results: IntCounterVec,
}

impl Mirrors {
    pub fn new(
        upstreams: Arc<Upstreams>,
        balancers: Arc<Balancers>,
        results: IntCounterVec,
    ) -> Arc<Mirrors> {
        Arc::new(Mirrors {
            connector: Connector::new(None),
            upstreams,
            balancers,
            results,
        })
    }

    fn count(&self, cluster: &Cluster, result: &str) {
        self.results
            .with_label_values(&[cluster.host.as_str(), result])
            .inc();
    }

    /// The request as it goes upstream becomes the copies' head (the first attempt's: a retry
    /// does not change it); a request without a body is mirrored at once.
    pub fn on_upstream_head(
        self: &Arc<Self>,
        pending: &mut Option<Pending>,
        head: &RequestHeader,
        no_body: bool,
    ) {
        if let Some(m) = pending.as_mut() {
            if m.head.is_none() {
                m.head = Some(Box::new(head.clone()));
            }
        }
        if no_body {
            if let Some(m) = pending.take() {
                self.fire(m);
            }
        }
    }

    /// A chunk of the request body is kept for the copies; at the body's end, with the head
    /// known, they go.
    pub fn on_body(
        self: &Arc<Self>,
        pending: &mut Option<Pending>,
        chunk: Option<&[u8]>,
        end: bool,
    ) {
        if let (Some(m), Some(b)) = (pending.as_mut(), chunk) {
            m.add_body(b);
        }
        if end && pending.as_ref().is_some_and(|m| m.head.is_some()) {
            if let Some(m) = pending.take() {
                self.fire(m);
            }
        }
    }

    /// Sends the mirrored copies in the background.
    pub fn fire(self: &Arc<Self>, p: Pending) {
        let Some(head) = p.head else {
            return;
        };
        if p.overflow {
            for c in &p.clusters {
                self.count(c, "body_too_large");
            }
            return;
        }
        let body = Bytes::from(p.body);
        for cluster in p.clusters {
            let this = self.clone();
            let (head, host, body) = (head.clone(), p.host.clone(), body.clone());
            let client_h2 = p.client_h2;
            tokio::spawn(async move {
                let sent = tokio::time::timeout(
                    MIRROR_TIMEOUT,
                    this.send(&cluster, head, &host, client_h2, body),
                )
                .await;
                let result = match sent {
                    Ok(Ok(result)) => result,
                    Ok(Err(e)) => {
                        tracing::debug!(cluster = %cluster.name, error = %e, "mirror request failed");
                        "failed"
                    }
                    Err(_) => "failed",
                };
                this.count(&cluster, result);
            });
        }
    }

    async fn send(
        &self,
        cluster: &Cluster,
        mut head: Box<RequestHeader>,
        host: &str,
        client_h2: bool,
        body: Bytes,
    ) -> pingora::Result<&'static str> {
        let eps = self.upstreams.resolve(cluster).await;
        let state = self.balancers.get(&cluster.name);
        let Pick::Endpoint(addr) = state.pick(&cluster.policy, &eps, &[], None) else {
            return Ok("no_endpoint");
        };
        let peer = match crate::peer::build(cluster, addr, host, client_h2) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(cluster = %cluster.name, reason = %why, "mirror TLS unusable");
                return Ok("failed");
            }
        };
        let (mut session, _reused) = self.connector.get_http_session(&peer).await?;
        let shadow = format!("{host}-shadow");
        let path = head
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        for h in ["host", "content-length", "transfer-encoding", "connection"] {
            head.remove_header(h);
        }
        if session.as_http2().is_some() {
            // HTTP/2 carries the host as `:authority`, from the URI.
            let scheme = if cluster.policy.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let uri = http::Uri::builder()
                .scheme(scheme)
                .authority(shadow.as_str())
                .path_and_query(path.as_str())
                .build()
                .map_err(|e| {
                    pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "mirror URI", e)
                })?;
            head.set_uri(uri);
            head.set_version(http::Version::HTTP_2);
        } else {
            let uri = path.parse::<http::Uri>().map_err(|e| {
                pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "mirror URI", e)
            })?;
            head.set_uri(uri);
            head.set_version(http::Version::HTTP_11);
            head.insert_header("host", shadow.as_str())?;
            head.remove_header("te");
        }
        head.insert_header("content-length", body.len().to_string())?;
        session.write_request_header(head).await?;
        if !body.is_empty() {
            session.write_request_body(body, true).await?;
        }
        session.finish_request_body().await?;
        session.read_response_header().await?;
        while session.read_response_body().await?.is_some() {}
        self.connector
            .release_http_session(session, &peer, cluster.policy.idle_timeout)
            .await;
        Ok("sent")
    }
}
