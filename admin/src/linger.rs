//! Lingering close (nginx's `lingering_close`): the admin API answers some requests before reading
//! their body (413 on `Content-Length`, 401, 404, 415), and closing a socket with unread input
//! makes the kernel send a reset that destroys the answer in flight, so a client still uploading
//! sees "connection reset" or "broken pipe" instead of the `Status`. Every admin connection is
//! therefore closed by shutting down our sending side first and then reading and discarding what
//! the client still sends, within [`Linger::DEFAULT`], before the socket is released.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long and how much a closing connection keeps reading: bounded, so that a client that
/// sends forever is cut off (with the reset lingering avoids for everyone else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// The whole lingering read (nginx's `lingering_time`).
    pub total: Duration,
    /// The longest wait for more input (nginx's `lingering_timeout`).
    pub idle: Duration,
    /// The most bytes discarded.
    pub bytes: u64,
}

impl Linger {
    /// nginx's defaults (30 s, 5 s), and 64 MiB: an upload answered early (a redirect, a 413) is
    /// read to its end unless it is larger than that.
    pub const DEFAULT: Linger = Linger {
        total: Duration::from_secs(30),
        idle: Duration::from_secs(5),
        bytes: 64 * 1024 * 1024,
    };
}

/// What is left of a [`Linger`] while a connection lingers: the caller reads in a loop, waiting
/// at most [`Budget::wait`] for each piece and reporting its size to [`Budget::spend`].
#[derive(Debug, Clone)]
pub struct Budget {
    deadline: Instant,
    idle: Duration,
    bytes_left: u64,
}

impl Budget {
    pub fn start(limits: Linger) -> Budget {
        Budget {
            deadline: Instant::now() + limits.total,
            idle: limits.idle,
            bytes_left: limits.bytes,
        }
    }

    /// How long the next read may wait; `None` once the time is up.
    pub fn wait(&self) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| left.min(self.idle))
    }

    /// Counts `n` discarded bytes; `false` once the byte bound is reached.
    pub fn spend(&mut self, n: usize) -> bool {
        self.bytes_left = self.bytes_left.saturating_sub(n as u64);
        self.bytes_left > 0
    }
}

/// A TCP listener whose connections close lingering (module doc). For `axum::serve`.
#[derive(Debug)]
pub struct LingeringListener {
    inner: TcpListener,
    limits: Linger,
}

impl LingeringListener {
    pub fn new(inner: TcpListener, limits: Linger) -> LingeringListener {
        LingeringListener { inner, limits }
    }
}

impl axum::serve::Listener for LingeringListener {
    type Io = LingeringStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (
            LingeringStream {
                inner: Some(stream),
                limits: self.limits,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; dropping it hands the socket to a lingering task.
#[derive(Debug)]
pub struct LingeringStream {
    /// Always `Some` until dropped.
    inner: Option<TcpStream>,
    limits: Linger,
}

impl LingeringStream {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(stream) = self.inner.take() else {
            return;
        };
        // Outside a runtime (process exit) the socket just closes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(stream, self.limits));
        }
    }
}

/// Sends our FIN (the answer is complete), then discards the client's input until it closes its
/// side or a bound is reached; the socket closes when this returns.
async fn linger(mut stream: TcpStream, limits: Linger) {
    // Already shut down when the server closed gracefully: the error is expected then.
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 16 * 1024];
    let mut budget = Budget::start(limits);
    while let Some(wait) = budget.wait() {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) if budget.spend(n) => {}
            Ok(Ok(_)) | Err(_) => break,
        }
    }
    tracing::debug!(
        peer = ?stream.peer_addr().ok(),
        "admin connection closed while the client was still sending"
    );
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total_ms: u64, idle_ms: u64, bytes: u64) -> Linger {
        Linger {
            total: Duration::from_millis(total_ms),
            idle: Duration::from_millis(idle_ms),
            bytes,
        }
    }

    #[test]
    fn the_byte_bound_is_reached_by_the_piece_that_fills_it() {
        let mut b = Budget::start(limits(10_000, 1000, 100));
        assert!(b.spend(30));
        assert!(b.spend(30));
        assert!(b.spend(30));
        assert!(!b.spend(30));
    }

    #[test]
    fn each_wait_is_at_most_idle_and_none_after_the_total() {
        let b = Budget::start(limits(300, 200, u64::MAX));
        assert!(b.wait().is_some_and(|w| w <= Duration::from_millis(200)));
        std::thread::sleep(Duration::from_millis(200));
        assert!(b.wait().is_some_and(|w| w <= Duration::from_millis(100)));
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(b.wait(), None);
    }
}
