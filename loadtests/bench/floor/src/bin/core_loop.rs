//! The pingora-core floor: a hand-written HTTP/1 proxy loop, no pingora-proxy. Read the request,
//! take a pooled keep-alive connection to `BENCH_UPSTREAM`, forward header and body both ways,
//! give the connection back.

use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType};
use pingora_floor::{server, Settings};
use pingora_http::ResponseHeader;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Loop {
    peer: HttpPeer,
    connector: Connector,
}

impl Loop {
    async fn proxy(&self, down: &mut ServerSession) -> pingora_core::Result<()> {
        let (mut up, _reused) = self.connector.get_http_session(&self.peer).await?;
        let req = Box::new(down.req_header().clone());
        up.write_request_header(req).await?;
        while let Some(chunk) = down.read_request_body().await? {
            up.write_request_body(chunk, false).await?;
        }
        up.finish_request_body().await?;
        up.read_response_header().await?;
        let resp: ResponseHeader = up
            .response_header()
            .ok_or_else(|| {
                Error::explain(ErrorType::InvalidHTTPHeader, "no upstream response header")
            })?
            .clone();
        down.write_response_header(Box::new(resp)).await?;
        loop {
            let chunk = up.read_response_body().await?;
            let done = up.response_done();
            if let Some(b) = chunk {
                down.write_response_body(b, done).await?;
            }
            if done {
                break;
            }
        }
        down.finish_body().await?;
        self.connector
            .release_http_session(up, &self.peer, None)
            .await;
        Ok(())
    }
}

#[async_trait]
impl HttpServerApp for Loop {
    async fn process_new_http(
        self: &Arc<Self>,
        mut down: ServerSession,
        _s: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match down.read_request().await {
            Ok(true) => {}
            _ => return None,
        }
        if self.proxy(&mut down).await.is_err() {
            let _ = down.respond_error(502).await;
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&down);
        match down.finish().await {
            Ok(Some(s)) => Some(ReusedHttpStream::from_reusable_stream(s, settings)),
            _ => None,
        }
    }
}

fn main() {
    let settings = Settings::from_env_or_exit("core_loop");
    let mut server = server(settings.workers);
    let app = Loop {
        peer: HttpPeer::new(settings.upstream, false, String::new()),
        connector: Connector::new(None),
    };
    let mut svc = Service::new("core loop".to_string(), app);
    svc.add_tcp(&settings.listen);
    server.add_service(svc);
    server.run_forever();
}
