//! Limits on a request's body: its size (`--max-request-body-bytes`, answered 413 before the
//! upstream is involved when `Content-Length` says so, or as soon as a chunked body crosses it)
//! and its pace (slow POST): the body must arrive within `--request-body-timeout` plus one second
//! per `--request-body-min-rate` bytes received (Apache's mod_reqtimeout rule), or the request
//! ends with 408. On HTTP/1 the wait for each read is bounded by that deadline (Pingora's read
//! timeout); on HTTP/2, where Pingora has no per-read bound, it is checked as data arrives.

use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use prometheus::IntCounter;
use std::time::{Duration, Instant};

/// Pingora's own per-read timeout, restored once the body is in.
const PINGORA_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The body limits of every request (from the command line).
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// 0: no limit.
    pub max_bytes: u64,
    /// Zero: no pace limit.
    pub timeout: Duration,
    /// Bytes per second that extend the deadline by one second; 0: the timeout is the whole
    /// body's.
    pub min_rate: u64,
    /// `gateway_downstream_timeouts_total{kind="request_body"}`.
    pub timeouts: IntCounter,
}

/// One request's body so far.
#[derive(Debug, Default)]
pub struct BodyState {
    /// When the header was read, if the body is paced.
    started: Option<Instant>,
    received: u64,
    /// The pace limit ended the request.
    timed_out: bool,
}

impl BodyState {
    /// The body was too slow: the connection closes without lingering over the rest of it.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }
}

fn status(code: u16, why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(code), why)
}

impl BodyLimits {
    /// At the parsed header: refuses a declared length over the limit (413), and starts the
    /// body's clock.
    pub fn start(&self, session: &mut Session, state: &mut BodyState) -> Result<()> {
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if self.max_bytes > 0 && declared.is_some_and(|n| n > self.max_bytes) {
            return Err(status(
                413,
                "request body larger than --max-request-body-bytes",
            ));
        }
        if self.timeout.is_zero()
            || session.is_upgrade_req()
            || session.as_downstream_mut().is_body_empty()
        {
            return Ok(());
        }
        state.started = Some(Instant::now());
        session.set_read_timeout(Some(self.timeout));
        Ok(())
    }

    /// At each piece of the body: the size limit, then the pace.
    pub fn on_body(
        &self,
        session: &mut Session,
        state: &mut BodyState,
        len: usize,
        end_of_stream: bool,
    ) -> Result<()> {
        state.received = state.received.saturating_add(len as u64);
        if self.max_bytes > 0 && state.received > self.max_bytes {
            return Err(status(
                413,
                "request body larger than --max-request-body-bytes",
            ));
        }
        let Some(started) = state.started else {
            return Ok(());
        };
        if end_of_stream {
            state.started = None;
            session.set_read_timeout(Some(PINGORA_READ_TIMEOUT));
            return Ok(());
        }
        let earned = state
            .received
            .checked_div(self.min_rate)
            .map_or(Duration::ZERO, Duration::from_secs);
        let deadline = started + self.timeout + earned;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out(state));
        }
        session.set_read_timeout(Some(left));
        Ok(())
    }

    fn timed_out(&self, state: &mut BodyState) -> Box<Error> {
        state.timed_out = true;
        self.timeouts.inc();
        status(408, "request body timeout")
    }

    /// The answer to a request that failed on its body's pace (a read timed out while the body
    /// was paced, or the pace check failed): 408, as Envoy answers a request timeout.
    pub fn local_error(
        &self,
        e: &Error,
        state: &mut BodyState,
    ) -> Option<(u16, &'static str, &'static str)> {
        let read_timed_out = matches!(e.etype(), ErrorType::ReadTimedout)
            && matches!(e.esource(), pingora::ErrorSource::Downstream);
        if read_timed_out && state.started.is_some() && !state.timed_out {
            let _ = self.timed_out(state);
        }
        state.timed_out.then_some((408, "", "request body timeout"))
    }
}
