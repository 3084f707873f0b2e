//! Fire-and-forget request mirroring: a copy of the request (head and body) goes to the mirror
//! destination with the Host suffixed `-shadow`, on a task of its own with short timeouts, so a
//! slow or dead mirror never delays or fails the client. Its response is read and discarded.

use crate::balancer::Balancers;
use crate::upstream::Upstreams;
use bytes::Bytes;
use model::ir::{Cluster, Target};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a mirror may take in all; it never affects the client.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);
/// Bodies larger than this are not mirrored (they would have to be held in memory).
pub const MAX_MIRROR_BODY: usize = 1 << 20;

/// A request to mirror once its body is complete.
pub struct Pending {
    pub clusters: Vec<Arc<Cluster>>,
    /// Request line and headers, without Host, Content-Length, Transfer-Encoding and Connection.
    pub head: Vec<u8>,
    pub host: String,
    pub body: Vec<u8>,
    pub overflow: bool,
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

/// Sends the mirrored copies in the background.
pub fn fire(p: Pending, upstreams: Arc<Upstreams>, balancers: Arc<Balancers>) {
    if p.overflow {
        return;
    }
    let body = Bytes::from(p.body);
    for cluster in p.clusters {
        let (head, host, body) = (p.head.clone(), p.host.clone(), body.clone());
        let (upstreams, balancers) = (upstreams.clone(), balancers.clone());
        tokio::spawn(async move {
            let r = tokio::time::timeout(MIRROR_TIMEOUT, async {
                let eps = upstreams.resolve(&cluster).await;
                let state = balancers.get(&cluster.name);
                let crate::balancer::Pick::Endpoint(addr) =
                    state.pick(&cluster.policy, &eps, &[], None)
                else {
                    return Ok::<(), std::io::Error>(());
                };
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                let mut req = head;
                req.extend_from_slice(format!("Host: {host}-shadow\r\n").as_bytes());
                req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                req.extend_from_slice(b"Connection: close\r\n\r\n");
                s.write_all(&req).await?;
                s.write_all(&body).await?;
                let mut sink = [0u8; 4096];
                while s.read(&mut sink).await? > 0 {}
                Ok(())
            })
            .await;
            if let Ok(Err(e)) = r {
                tracing::debug!(error = %e, "mirror request failed");
            }
        });
    }
}
