//! WebSocket upgrades pass through routing and survive configuration reloads: an established
//! connection keeps talking to its upstream while new connections follow the new routes.

mod common;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use common::{Gateway, Opts};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server that echoes each text message prefixed with its name.
async fn ws_upstream(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().fallback(move |ws: WebSocketUpgrade| async move {
        ws.on_upgrade(move |mut socket| async move {
            while let Some(Ok(msg)) = socket.recv().await {
                if let WsMessage::Text(t) = msg {
                    let reply = format!("{name}:{}", t.as_str());
                    if socket.send(WsMessage::Text(reply.into())).await.is_err() {
                        break;
                    }
                }
            }
        })
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn route_to(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ws}}\nspec:\n  hosts: [ws.test]\n  http:\n  - route: [{{destination: {{host: 127.0.0.1, port: {{number: {port}}}}}}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_proxied_and_survive_reloads() {
    let one = ws_upstream("one").await;
    let two = ws_upstream("two").await;
    let gw = tokio::task::spawn_blocking(|| Gateway::start(Opts::default()))
        .await
        .expect("start");
    let apply = |gw: &Gateway, y: String| {
        let r = gw.admin_call("POST", "/apply", "application/yaml", y.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    };
    apply(&gw, route_to(one));
    let connect = |addr: std::net::SocketAddr| async move {
        let mut req = format!("ws://{addr}/chat")
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("host", "ws.test".parse().expect("host"));
        tokio_tungstenite::connect_async(req)
            .await
            .expect("upgrade")
    };
    let (mut a, resp) = connect(gw.http).await;
    assert_eq!(resp.status(), 101);
    a.send(Message::Text("hello".into())).await.expect("send");
    let got = a.next().await.expect("reply").expect("frame");
    assert_eq!(got.into_text().expect("text").as_str(), "one:hello");

    // Twenty configuration changes: the open connection keeps talking to its upstream.
    for i in 0..20 {
        apply(&gw, route_to(if i % 2 == 0 { two } else { one }));
        let msg = format!("still-{i}");
        a.send(Message::Text(msg.clone().into()))
            .await
            .expect("send after reload");
        let got = a.next().await.expect("reply").expect("frame");
        assert_eq!(
            got.into_text().expect("text").as_str(),
            format!("one:{msg}"),
            "the established connection keeps its upstream"
        );
    }
    apply(&gw, route_to(two));
    let (mut b, _) = connect(gw.http).await;
    b.send(Message::Text("new".into())).await.expect("send");
    let got = b.next().await.expect("reply").expect("frame");
    assert_eq!(got.into_text().expect("text").as_str(), "two:new");
    tokio::task::spawn_blocking(move || drop(gw))
        .await
        .expect("stop");
}
