//! Lingering close on the traffic listeners: an answer the gateway makes before the request body
//! is read (a direct response, a redirect, a fault, 404 NR, 431, 503) is followed by reading and
//! discarding the rest of the body, within the admin API's bounds, before the connection closes.
//! Without it the close finds unread input, the kernel answers it with a reset, and a client
//! still uploading loses the response (Pingora closes such a connection without draining it).

use admin::linger::{Budget, Linger};
use pingora::proxy::Session;

/// Discards what is left of an HTTP/1 request body once the response has been written, unless
/// its framing is ambiguous (refused as a smuggling attempt: no framing can be trusted) or the
/// client asked `Expect: 100-continue` and, having had a final answer instead, sends nothing.
/// A body past a bound is left unread: the connection then closes with a reset, on purpose.
pub async fn discard_unread_body(session: &mut Session) {
    let answered = session
        .response_written()
        .is_some_and(|r| r.status.as_u16() >= 200);
    if !answered || session.as_http1().is_none() || session.was_upgraded() {
        return;
    }
    let downstream = session.as_downstream_mut();
    if downstream.is_body_done() {
        return;
    }
    let expects_continue = downstream
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && downstream.body_bytes_read() == 0 {
        return;
    }
    if !crate::hygiene::framing_is_clear(session) {
        return;
    }
    let mut budget = Budget::start(Linger::DEFAULT);
    let downstream = session.as_downstream_mut();
    while let Some(wait) = budget.wait() {
        match tokio::time::timeout(wait, downstream.read_request_body()).await {
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Ok(Ok(Some(b))) if budget.spend(b.len()) => {}
            Ok(Ok(Some(_))) | Err(_) => break,
        }
    }
    tracing::debug!(
        "closing a connection whose client is still sending the body of an answered request"
    );
}
