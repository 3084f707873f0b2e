//! The request-header timeout of HTTP/1 downstream connections (slowloris): a stream wrapper
//! that closes the connection when a request's header, once its first byte has arrived, is not
//! complete within the timeout. Pingora bounds each read (its keep-alive timeout), never the whole
//! header, so a client sending one byte every few seconds would otherwise hold its connection and
//! its task forever.
//!
//! The proxy tells the wrapper where requests begin and end ([`header_done`] when the header is
//! parsed, [`request_done`] when the request is logged); between the two, the body's own limits
//! apply (see `request_limits`). HTTP/2 connections (the h2c preface, or ALPN `h2`) turn the timer
//! off: their requests are streams of one connection, bounded by the HTTP/2 idle timeout.

use async_trait::async_trait;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN, IO,
};
use pingora::proxy::Session;
use prometheus::IntCounter;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Waiting for a request header (before its first byte: Pingora's keep-alive timeout applies).
const AWAITING: u8 = 0;
/// Between a parsed header and the end of its request.
const IN_REQUEST: u8 = 1;
/// HTTP/2: no per-request timer on the connection.
const OFF: u8 = 2;

/// Before the first byte of a connection, how long it may stay silent (Pingora's keep-alive
/// timeout, which bounds the wait for every later request the same way).
const FIRST_BYTE_WAIT: Duration = Duration::from_secs(60);

/// The HTTP/2 connection preface starts so; an HTTP/1 request line never does.
const H2_PREFACE_START: &[u8] = b"PRI ";

/// A downstream stream with the request-header timer.
pub struct HeaderTimer {
    inner: Stream,
    phase: AtomicU8,
    timeout: Duration,
    /// When the header being read must be complete (armed at its first byte).
    deadline: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
    /// Whether any byte was read on the connection yet (the h2c preface is looked for there).
    seen_any: bool,
    /// `gateway_downstream_timeouts_total{kind="request_headers"}`.
    fired: Arc<IntCounter>,
}

impl HeaderTimer {
    /// Wraps `inner`, the decrypted (or plain) stream about to be served as HTTP.
    pub fn wrap(inner: Stream, timeout: Duration, fired: Arc<IntCounter>) -> Stream {
        let phase = if matches!(inner.selected_alpn_proto(), Some(ALPN::H2)) {
            OFF
        } else {
            AWAITING
        };
        Box::new(HeaderTimer {
            inner,
            phase: AtomicU8::new(phase),
            timeout,
            deadline: None,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            seen_any: false,
            fired,
        })
    }

    fn timed_out(&self) -> std::io::Error {
        self.fired.inc();
        tracing::debug!(timeout = ?self.timeout, "request headers timeout: closing the connection");
        std::io::Error::new(std::io::ErrorKind::TimedOut, "request headers timeout")
    }

    fn set_phase(&self, from: u8, to: u8) {
        let _ = self
            .phase
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The wrapper of the connection a request came on, if it has one (HTTP/1 only).
fn of(session: &Session) -> Option<&HeaderTimer> {
    session
        .as_downstream()
        .stream()
        .and_then(|s| s.as_any().downcast_ref::<HeaderTimer>())
}

/// The request's header has been parsed: its timer stops.
pub fn header_done(session: &Session) {
    if let Some(t) = of(session) {
        t.set_phase(AWAITING, IN_REQUEST);
    }
}

/// The request has ended: the next bytes on the connection start a new header.
pub fn request_done(session: &Session) {
    if let Some(t) = of(session) {
        t.set_phase(IN_REQUEST, AWAITING);
    }
}

impl std::fmt::Debug for HeaderTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderTimer")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for HeaderTimer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let phase = self.phase.load(Ordering::Acquire);
        if phase != AWAITING {
            self.deadline = None;
        } else if self.deadline.is_some() && self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(self.timed_out()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().get(before..).unwrap_or_default();
        if matches!(res, Poll::Ready(Ok(()))) && !read.is_empty() {
            if !self.seen_any {
                self.seen_any = true;
                if read.starts_with(H2_PREFACE_START) {
                    self.phase.store(OFF, Ordering::Release);
                    return res;
                }
            }
            if phase == AWAITING && self.deadline.is_none() {
                let deadline = Instant::now() + self.timeout;
                self.deadline = Some(deadline);
                self.sleep.as_mut().reset(deadline);
                // Registers the timer's waker, so that a client that goes silent now is noticed.
                let _ = self.sleep.as_mut().poll(cx);
            }
        }
        res
    }
}

impl AsyncWrite for HeaderTimer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderTimer {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeaderTimer {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderTimer {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderTimer {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for HeaderTimer {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeaderTimer {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for HeaderTimer {
    /// Pingora peeks for the h2c preface before reading anything: bounded here as a read would
    /// be (the first byte within the keep-alive wait, the rest within the header timeout), or a
    /// client sending fewer bytes than the preface, slowly, would never be timed out.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if self.phase.load(Ordering::Acquire) != AWAITING {
            return self.inner.try_peek(buf).await;
        }
        let Some(first) = buf.get_mut(..1) else {
            return Ok(false);
        };
        match tokio::time::timeout(FIRST_BYTE_WAIT, self.inner.try_peek(first)).await {
            Ok(Ok(true)) => {}
            Ok(other) => return other,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "idle connection",
                ))
            }
        }
        match tokio::time::timeout(self.timeout, self.inner.try_peek(buf)).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        }
    }
}

// Compile-time check that the wrapper is a Pingora stream.
const _: fn(HeaderTimer) -> Box<dyn IO> = |c| Box::new(c);
