//! Edge hygiene: requests whose framing two HTTP parsers could read differently (request smuggling)
//! are refused with 400 before routing, stricter than Pingora's defaults.

use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

/// Envoy's defaults: at most 100 request headers, 60 KiB of them.
pub const MAX_HEADER_COUNT: usize = 100;
pub const MAX_HEADER_BYTES: usize = 60 * 1024;

fn too_large(why: &'static str) -> Result<()> {
    Err(Error::explain(ErrorType::HTTPStatus(431), why))
}

fn bad(why: &'static str) -> Result<()> {
    Err(Error::explain(ErrorType::HTTPStatus(400), why))
}

/// Refuses ambiguous framing: both Content-Length and Transfer-Encoding, repeated or differing or
/// non-numeric Content-Length, a Transfer-Encoding whose codings do not end in one `chunked`, and
/// several Host headers; and header blocks over the size or count limits (431).
pub fn check(session: &Session) -> Result<()> {
    let h = &session.req_header().headers;
    if h.len() > MAX_HEADER_COUNT {
        return too_large("too many request headers");
    }
    let size = match session.as_http1() {
        Some(h1) => h1.get_headers_raw_bytes().len(),
        None => h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum(),
    };
    if size > MAX_HEADER_BYTES {
        return too_large("request headers too large");
    }
    framing(session)
}

/// Whether the body's framing is unambiguous, so that it can be read (and discarded) safely.
pub fn framing_is_clear(session: &Session) -> bool {
    framing(session).is_ok()
}

/// The framing and Host checks of [`check`].
fn framing(session: &Session) -> Result<()> {
    let h = &session.req_header().headers;
    let mut cl = h.get_all(http::header::CONTENT_LENGTH).iter();
    let first_cl = cl.next();
    if cl.next().is_some() {
        return bad("repeated Content-Length");
    }
    if let Some(v) = first_cl {
        let b = v.as_bytes();
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return bad("invalid Content-Length");
        }
    }
    let mut te_present = false;
    let mut last_chunked = false;
    let mut chunked_count = 0;
    for v in h.get_all(http::header::TRANSFER_ENCODING) {
        te_present = true;
        let Ok(s) = v.to_str() else {
            return bad("invalid Transfer-Encoding");
        };
        for coding in s.split(',') {
            let c = coding.trim();
            if c.is_empty() {
                return bad("invalid Transfer-Encoding");
            }
            last_chunked = c.eq_ignore_ascii_case("chunked");
            if last_chunked {
                chunked_count += 1;
            }
        }
    }
    if te_present {
        // Pingora drops Content-Length when Transfer-Encoding is present: look at the raw bytes.
        let raw_cl = session
            .as_http1()
            .is_some_and(|h1| raw_has_header(&h1.get_headers_raw_bytes(), b"content-length"));
        if first_cl.is_some() || raw_cl {
            return bad("both Content-Length and Transfer-Encoding");
        }
        if !last_chunked || chunked_count != 1 {
            return bad("Transfer-Encoding must end with one chunked");
        }
    }
    if h.get_all(http::header::HOST).iter().nth(1).is_some() {
        return bad("several Host headers");
    }
    Ok(())
}

/// Whether a raw HTTP/1 header block has a header line named `name` (lowercase ASCII).
fn raw_has_header(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b':')
    })
}

#[cfg(test)]
mod tests {
    use super::raw_has_header;

    #[test]
    fn finds_header_lines_by_name_only() {
        let raw = b"POST /content-length: HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n";
        assert!(raw_has_header(raw, b"content-length"));
        assert!(!raw_has_header(
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\n\r\n",
            b"content-length"
        ));
    }
}
