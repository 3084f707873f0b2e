//! A request that failed before its answer began: Envoy's status, response flag and body for each
//! kind of failure, written as the gateway's own answer.

use super::ctx::{Ctx, LocalError};
use super::GatewayProxy;
use crate::routing::respond;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};
use pingora::ErrorType;
use std::time::Instant;

impl GatewayProxy {
    /// The gateway's answer to a request that failed before its response began.
    pub(super) async fn answer_failure(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let deadline_passed = ctx.deadline.is_some_and(|d| Instant::now() >= d);
        let (code, flag, body): LocalError = if let Some(l) = ctx.local_error.take() {
            l
        } else if let Some(l) = self.edge.body.local_error(e, &mut ctx.body) {
            l
        } else {
            match e.etype() {
                ErrorType::HTTPStatus(c) => (*c, "", ""),
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError
                | ErrorType::SocketError
                | ErrorType::TLSHandshakeFailure
                | ErrorType::TLSHandshakeTimedout
                | ErrorType::HandshakeError
                | ErrorType::InvalidCert => (
                    503,
                    "UF",
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                ),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
                    if matches!(e.esource(), pingora::ErrorSource::Upstream) || deadline_passed =>
                {
                    (504, "UT", "upstream request timeout")
                }
                _ => match e.esource() {
                    pingora::ErrorSource::Upstream => (
                        503,
                        "UC",
                        "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                    ),
                    pingora::ErrorSource::Downstream => match e.etype() {
                        ErrorType::WriteError
                        | ErrorType::ReadError
                        | ErrorType::ConnectionClosed => (0, "", ""),
                        _ => (400, "", ""),
                    },
                    _ => (500, "", ""),
                },
            }
        };
        if !flag.is_empty() {
            // The table's flag first, then the others (`UF,URX`).
            ctx.flags.retain(|f| *f != flag);
            ctx.flags.insert(0, flag);
        }
        if code > 0 && session.response_written().is_none() {
            let flags = ctx.flags_header();
            if let Err(err) = respond(session, code, &flags, body).await {
                tracing::debug!(error = %err, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
