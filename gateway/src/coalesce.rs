//! Small writes held until the writer flushes, so that TLS seals one record where the HTTP layer
//! wrote several pieces.
//!
//! Pingora's HTTP/1 server writes a response head, then its body, and flushes when the body is
//! complete (at once for chunked, close-delimited and 1xx writes: it flushes what must go out
//! now). Over TLS each write was sealed as its own record: two AEAD seals and two record headers
//! for a small response, and the client's two opens. Holding small writes here until the flush
//! makes the head and a small body one record, as nginx sends them. Whatever must leave at once
//! is flushed by its writer: Pingora's socket below the TLS layer already holds unflushed writes
//! (1,460 bytes of them) on the same contract. At most [`HOLD`] bytes wait here: a response head
//! with a small body, not a slow upstream's stream.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most held: a response head and a small body (one TLS record carries up to 16 KiB), and
/// no more than a few segments of a body that streams with a known length.
pub const HOLD: usize = 4 * 1024;

/// A writer whose writes wait, up to [`HOLD`] bytes in all, for the next flush or shutdown.
/// Writes that do not fit go through after what is held.
pub struct Coalesced<W> {
    inner: W,
    held: Vec<u8>,
}

impl<W> Coalesced<W> {
    pub fn new(inner: W) -> Self {
        Coalesced {
            inner,
            held: Vec::new(),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: AsyncWrite + Unpin> Coalesced<W> {
    /// Hands what is held to the inner writer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        // An idle kept-alive connection keeps no more than a small response's worth.
        if self.held.capacity() > HOLD {
            self.held = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for Coalesced<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Coalesced<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if this.held.len() + len > HOLD {
            ready!(this.poll_drain(cx))?;
            if len >= HOLD {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        for b in bufs {
            this.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records every write the wrapped writer receives.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>, usize);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.1 += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_head_and_a_small_body_go_down_as_one_write_at_the_flush() {
        let mut c = Coalesced::new(Writes::default());
        c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            .await
            .expect("write");
        c.write_all(b"hello").await.expect("write");
        assert!(c.get_ref().0.is_empty(), "nothing leaves before the flush");
        c.flush().await.expect("flush");
        assert_eq!(
            c.get_ref().0,
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec()]
        );
        assert_eq!(c.get_ref().1, 1);
    }

    #[tokio::test]
    async fn what_does_not_fit_goes_through_after_what_is_held() {
        let mut c = Coalesced::new(Writes::default());
        c.write_all(b"head").await.expect("write");
        let big = vec![7u8; HOLD + 1];
        c.write_all(&big).await.expect("write");
        assert_eq!(c.get_ref().0, vec![b"head".to_vec(), big]);
        c.write_all(&[1; 100]).await.expect("write");
        c.write_all(&[2; HOLD - 100]).await.expect("write");
        assert_eq!(c.get_ref().0.len(), 2, "a full record is still held");
        c.write_all(b"x").await.expect("write");
        assert_eq!(c.get_ref().0.len(), 3, "the next byte drains it");
        assert_eq!(c.get_ref().0[2].len(), HOLD);
        c.shutdown().await.expect("shutdown");
        assert_eq!(c.get_ref().0[3], b"x".to_vec(), "shutdown drains");
    }
}
