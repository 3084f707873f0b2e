//! The pingora-proxy floor: a `ProxyHttp` with nothing in it but a fixed upstream peer, so every
//! request goes to `BENCH_UPSTREAM` over pingora-proxy's pooled keep-alive HTTP/1.1 connections.

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_floor::{server, Settings};
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare(SocketAddr);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let settings = Settings::from_env_or_exit("bare_proxy");
    let mut server = server(settings.workers);
    let mut svc = pingora_proxy::http_proxy_service(&server.configuration, Bare(settings.upstream));
    svc.add_tcp(&settings.listen);
    server.add_service(svc);
    server.run_forever();
}
