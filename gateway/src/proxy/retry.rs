//! Retries and outlier detection: what each failed attempt (connect failure, reset, timeout,
//! retriable status) means, whether it is tried again, and what the endpoint's record learns.

use super::ctx::Ctx;
use super::GatewayProxy;
use crate::metrics::{method_label, RequestLabels};
use crate::policy::{self, Failure};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorType;
use std::time::Instant;

impl GatewayProxy {
    /// Decides whether a failed attempt is retried (and takes a retry slot if so).
    pub(super) fn decide_retry(&self, session: &Session, ctx: &mut Ctx, f: Failure) -> bool {
        let Some(route) = ctx.route.clone() else {
            return false;
        };
        if ctx.retries_left == 0
            || session.retry_buffer_truncated()
            || !policy::retriable(&route.retries, f)
            || ctx.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return false;
        }
        let (Some(cluster), Some(state)) = (ctx.cluster.clone(), ctx.state.clone()) else {
            return false;
        };
        let Some(slot) = state.admit_retry(&cluster.policy) else {
            return false;
        };
        ctx.slots.push(slot);
        ctx.retries_left -= 1;
        self.metrics
            .upstream_retries
            .with_label_values(&ctx.labels())
            .inc();
        true
    }

    /// What the attempt's endpoint learns for outlier detection (`None`: no status, a failure).
    pub(super) fn record_attempt(&self, ctx: &Ctx, status: Option<u16>) {
        if let (Some(cluster), Some(state), Some(addr)) =
            (&ctx.cluster, &ctx.state, ctx.tried.last())
        {
            state.record(*addr, status, cluster.policy.outlier.as_ref());
        }
    }

    /// A connection to the endpoint failed: counted, recorded, retried if the policy says so.
    pub(super) fn connect_failed(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.metrics
            .connect_failures
            .with_label_values(&ctx.labels())
            .inc();
        self.record_attempt(ctx, None);
        ctx.endpoint_slot = None;
        let retry = self.decide_retry(session, ctx, Failure::Connect);
        e.set_retry(retry);
        e
    }

    /// An attempt failed after connecting (reset, timeout, or a retriable status marked by
    /// [`GatewayProxy::upstream_response`]): retried if the policy says so.
    pub(super) fn attempt_failed(
        &self,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        ctx.endpoint_slot = None;
        if ctx.status_retry {
            // Our own marker: a retriable status, already counted and decided.
            ctx.status_retry = false;
            e.set_retry(true);
            return e;
        }
        // A pooled connection the upstream had closed: retry once on a fresh one, as Pingora does.
        let stale = client_reused && matches!(e.retry, pingora::RetryType::ReusedOnly);
        if stale && !session.retry_buffer_truncated() {
            e.set_retry(true);
            return e;
        }
        let failure = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
            _ => Failure::Reset,
        };
        self.record_attempt(ctx, None);
        let retry = self.decide_retry(session, ctx, failure);
        e.set_retry(retry);
        e
    }

    /// The upstream's response head: recorded for outlier detection and the upstream metrics, and
    /// turned into a retry when its status is retriable.
    pub(super) fn upstream_response(
        &self,
        session: &mut Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        self.record_attempt(ctx, Some(status));
        if let (Some(start), Some(route)) = (ctx.upstream_start, &ctx.route) {
            let took = start.elapsed();
            ctx.upstream_service_time = Some(took);
            let [destination, subset] = ctx.labels();
            let labels = RequestLabels {
                gateway: &route.gateway,
                virtual_service: &route.virtual_service,
                route: &route.id,
                destination,
                subset,
                method: method_label(&session.req_header().method),
            };
            let dest = ctx.dest.unwrap_or(usize::MAX);
            self.metrics
                .observe_upstream(route, dest, &labels, took.as_secs_f64());
        }
        let grpc_status = crate::grpc::response_status(resp);
        let failure = Failure::Status(status, grpc_status);
        // A gRPC error answers 200 with its status in the headers (trailers-only): retried on by
        // the gRPC names of `retryOn`. A status in the trailers comes after the response started.
        let failed = status >= 400 || grpc_status.is_some_and(|c| c != 0);
        let retriable = ctx
            .route
            .as_ref()
            .is_some_and(|r| failed && policy::retriable(&r.retries, failure));
        if retriable && self.decide_retry(session, ctx, failure) {
            ctx.status_retry = true;
            ctx.endpoint_slot = None;
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "retriable upstream status",
            ));
        }
        Ok(())
    }
}
