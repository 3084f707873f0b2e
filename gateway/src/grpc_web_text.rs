//! gRPC-Web's text variant (`application/grpc-web-text`: the binary frames base64-encoded), bridged
//! to gRPC and back, which Pingora's gRPC-Web bridge does not do: the request body is decoded as it
//! streams (a quantum of four characters at a time, padding allowed between messages), the answer's
//! chunks and its trailers frame are encoded, each chunk padded on its own, as gRPC-Web servers
//! send them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::ErrorType;

const TEXT: &str = "application/grpc-web-text";

/// Whether the request is a gRPC-Web text request.
pub fn is_text(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..TEXT.len()))
        .is_some_and(|p| p.eq_ignore_ascii_case(TEXT.as_bytes()))
}

/// One request's bridge state.
#[derive(Debug, Default)]
pub struct Bridge {
    /// Request characters not yet a whole quantum.
    pending: Vec<u8>,
    /// The answer is gRPC and is being encoded.
    encoding: bool,
}

impl Bridge {
    /// The request as gRPC: `application/grpc` with the same suffix (`+proto`), `te: trailers`,
    /// and no `content-length` (the decoded body is shorter). Called once per attempt.
    pub fn request_header(&mut self, req: &mut RequestHeader) -> Result<()> {
        self.pending.clear();
        let suffix = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.get(TEXT.len()..))
            .unwrap_or("")
            .to_string();
        req.insert_header(
            http::header::CONTENT_TYPE,
            format!("application/grpc{suffix}"),
        )?;
        req.insert_header("te", "trailers")?;
        req.remove_header(&http::header::CONTENT_LENGTH);
        Ok(())
    }

    /// Decodes a request body chunk; whatever does not make a whole quantum waits for the next.
    pub fn request_body(&mut self, body: &mut Option<Bytes>) -> Result<()> {
        let Some(chunk) = body.as_ref() else {
            return Ok(());
        };
        self.pending
            .extend(chunk.iter().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.pending.len() / 4 * 4;
        let mut out = Vec::with_capacity(whole / 4 * 3);
        for quantum in self.pending[..whole].chunks(4) {
            let decoded = STANDARD.decode(quantum).map_err(|e| {
                Error::because(ErrorType::InvalidHTTPHeader, "gRPC-Web text body", e)
            })?;
            out.extend_from_slice(&decoded);
        }
        self.pending.drain(..whole);
        *body = Some(Bytes::from(out));
        Ok(())
    }

    /// The answer as gRPC-Web text, when the upstream answered gRPC.
    pub fn response_header(
        &mut self,
        resp: &mut ResponseHeader,
        downstream_h1: bool,
    ) -> Result<()> {
        let ct = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(suffix) = ct.strip_prefix("application/grpc") else {
            return Ok(());
        };
        let ct = format!("{TEXT}{suffix}");
        resp.insert_header(http::header::CONTENT_TYPE, ct)?;
        resp.remove_header(&http::header::CONTENT_LENGTH);
        if downstream_h1 {
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        self.encoding = true;
        Ok(())
    }

    /// Encodes an answer chunk.
    pub fn response_body(&self, body: &mut Option<Bytes>) {
        if !self.encoding {
            return;
        }
        if let Some(chunk) = body.as_ref().filter(|c| !c.is_empty()) {
            *body = Some(Bytes::from(STANDARD.encode(chunk)));
        }
    }

    /// The trailers as gRPC-Web's trailers frame (flag 0x80, `name:value\r\n` lines), encoded, to
    /// end the body.
    pub fn response_trailers(&self, trailers: &HeaderMap) -> Option<Bytes> {
        if !self.encoding {
            return None;
        }
        let mut lines = BytesMut::new();
        for (k, v) in trailers {
            lines.put_slice(k.as_str().as_bytes());
            lines.put_slice(b":");
            lines.put_slice(v.as_bytes());
            lines.put_slice(b"\r\n");
        }
        let mut frame = BytesMut::with_capacity(5 + lines.len());
        frame.put_u8(0x80);
        frame.put_u32(u32::try_from(lines.len()).unwrap_or(u32::MAX));
        frame.put_slice(&lines);
        Some(Bytes::from(STANDARD.encode(&frame)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_across_chunks_and_padded_messages() {
        let mut b = Bridge::default();
        let text = format!(
            "{}{}",
            STANDARD.encode(b"\0\0\0\0\x01a"),
            STANDARD.encode(b"xy")
        );
        let (first, rest) = text.split_at(5);
        let mut out = Vec::new();
        for part in [first, rest] {
            let mut body = Some(Bytes::from(part.to_string()));
            b.request_body(&mut body).expect("decodes");
            out.extend_from_slice(&body.expect("a body"));
        }
        assert_eq!(out, b"\0\0\0\0\x01axy");
        let mut bad = Some(Bytes::from_static(b"!!!!"));
        assert!(b.request_body(&mut bad).is_err());
    }

    #[test]
    fn encodes_the_answer_and_its_trailers() {
        let mut b = Bridge::default();
        let mut resp = ResponseHeader::build(200, None).expect("test value");
        resp.insert_header("content-type", "application/grpc+proto")
            .expect("test value");
        resp.insert_header("content-length", "7")
            .expect("test value");
        b.response_header(&mut resp, true).expect("test value");
        assert_eq!(
            resp.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/grpc-web-text+proto"[..])
        );
        assert!(resp.headers.get("content-length").is_none());
        let mut body = Some(Bytes::from_static(b"\0\0\0\0\x02hi"));
        b.response_body(&mut body);
        assert_eq!(
            body.as_deref(),
            Some(STANDARD.encode(b"\0\0\0\0\x02hi").as_bytes())
        );
        let mut t = HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frame = STANDARD
            .decode(b.response_trailers(&t).expect("a frame"))
            .expect("base64");
        assert_eq!(frame, b"\x80\0\0\0\x0fgrpc-status:0\r\n");
    }
}
