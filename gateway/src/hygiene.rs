//! Edge hygiene: requests whose framing two HTTP parsers could read differently (request smuggling)
//! are refused with 400 before routing, stricter than Pingora's defaults; the few forms that are
//! valid but ambiguous to an upstream (absolute-form targets, `Content-Length: 0010`) are rewritten
//! into their one canonical form before the request is forwarded.
//!
//! Every rule is a pure function over bytes (unit- and property-tested); [`prepare`] applies them to
//! a Pingora session.

use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

/// Envoy's defaults: at most 100 request headers, 60 KiB of them.
pub const MAX_HEADER_COUNT: usize = 100;
pub const MAX_HEADER_BYTES: usize = 60 * 1024;

/// Why a request head is refused: the status to answer and a reason for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: &'static str,
}

const fn bad(why: &'static str) -> Refusal {
    Refusal { status: 400, why }
}

/// How the body of an accepted request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Neither Content-Length nor Transfer-Encoding: no body.
    None,
    /// `Content-Length`, as its canonical number.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The verdict on a raw request head: its framing, or why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    pub framing: Framing,
    /// The raw `Content-Length` value when it is not canonical (`0010`), to be rewritten.
    pub non_canonical_length: Option<&'a [u8]>,
}

/// Whether `b` may appear in a header name (an RFC 9110 token character).
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `b` may appear in a header value: visible ASCII, space, tab and obs-text; no control
/// byte (NUL, CR, LF, DEL, ...).
pub fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Splits a raw head (request line, header lines, blank line) into lines. Every line must end with
/// CRLF: a bare LF or a bare CR is a line ending some parsers see and others do not.
pub fn lines(raw: &[u8]) -> Result<Vec<&[u8]>, Refusal> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            return Err(bad("unterminated header line"));
        };
        if lf == 0 || rest[lf - 1] != b'\r' {
            return Err(bad("bare LF in the request head"));
        }
        let line = &rest[..lf - 1];
        if line.contains(&b'\r') {
            return Err(bad("bare CR in the request head"));
        }
        out.push(line);
        rest = &rest[lf + 1..];
    }
    Ok(out)
}

/// One header line as `(name, value)` with the value's surrounding whitespace trimmed. Refuses
/// obs-fold (a line starting with whitespace), whitespace before the colon, an empty or non-token
/// name and control bytes in the value.
pub fn header_line(line: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return Err(bad("obsolete line folding"));
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(bad("header line without a colon"));
    };
    let name = &line[..colon];
    if name.is_empty() {
        return Err(bad("empty header name"));
    }
    if !name.iter().all(|&b| is_token_byte(b)) {
        return Err(bad("invalid header name"));
    }
    let value = trim_ows(&line[colon + 1..]);
    if !value.iter().all(|&b| is_value_byte(b)) {
        return Err(bad("control byte in a header value"));
    }
    Ok((name, value))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A `Content-Length` value as a number: one or more digits and nothing else (no sign, no space,
/// no list), leading zeros allowed, at most `u64::MAX`.
pub fn content_length(v: &[u8]) -> Result<u64, Refusal> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(bad("invalid Content-Length"));
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(bad("Content-Length too large"))
    })
}

/// Whether a `Transfer-Encoding` value is exactly one `chunked` coding (any case, optional
/// whitespace). Anything else (`xchunked`, `chunked, identity`, `gzip, chunked`) is refused: the
/// gateway decodes only chunked, and a list is where parsers disagree.
pub fn is_plain_chunked(v: &[u8]) -> bool {
    trim_ows(v).eq_ignore_ascii_case(b"chunked")
}

/// The verdict on a raw HTTP/1 request head (request line included, as read from the wire):
/// line endings, header syntax, the header count and size limits (431), and the framing rules:
/// at most one Content-Length, at most one Transfer-Encoding which is `chunked`, never both, no
/// Transfer-Encoding in HTTP/1.0, at most one Host.
pub fn check_head(raw: &[u8], http10: bool) -> Result<Head<'_>, Refusal> {
    head(raw, http10, true)
}

/// [`check_head`] without the size and count limits: whether the body's framing can be known.
pub fn framing_of(raw: &[u8], http10: bool) -> Result<Head<'_>, Refusal> {
    head(raw, http10, false)
}

fn head(raw: &[u8], http10: bool, limits: bool) -> Result<Head<'_>, Refusal> {
    if limits && raw.len() > MAX_HEADER_BYTES {
        return Err(Refusal {
            status: 431,
            why: "request headers too large",
        });
    }
    // A server ignores empty lines before the request line (RFC 9112 §2.2), and so does Pingora.
    let mut raw = raw;
    while let [b'\r', b'\n', rest @ ..] = raw {
        raw = rest;
    }
    let all = lines(raw)?;
    // The request line, then the headers, then the blank line that ends the head.
    let headers = match all.split_first() {
        Some((_, rest)) => match rest.split_last() {
            Some((&[], headers)) => headers,
            _ => return Err(bad("request head without its blank line")),
        },
        None => return Err(bad("empty request head")),
    };
    if limits && headers.len() > MAX_HEADER_COUNT {
        return Err(Refusal {
            status: 431,
            why: "too many request headers",
        });
    }
    let mut cl: Option<&[u8]> = None;
    let mut te = false;
    let mut host = false;
    for line in headers {
        let (name, value) = header_line(line)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            if cl.replace(value).is_some() {
                return Err(bad("repeated Content-Length"));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te {
                return Err(bad("repeated Transfer-Encoding"));
            }
            te = true;
            if !is_plain_chunked(value) {
                return Err(bad("Transfer-Encoding other than chunked"));
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            if host {
                return Err(bad("several Host headers"));
            }
            host = true;
        }
    }
    match (cl, te) {
        (Some(_), true) => Err(bad("both Content-Length and Transfer-Encoding")),
        (None, true) if http10 => Err(bad("Transfer-Encoding in HTTP/1.0")),
        (None, true) => Ok(Head {
            framing: Framing::Chunked,
            non_canonical_length: None,
        }),
        (Some(v), false) => {
            let n = content_length(v)?;
            let canonical = v.len() == 1 || v[0] != b'0';
            Ok(Head {
                framing: Framing::Length(n),
                non_canonical_length: (!canonical).then_some(v),
            })
        }
        (None, false) => Ok(Head {
            framing: Framing::None,
            non_canonical_length: None,
        }),
    }
}

/// An absolute-form target (`http://host:port/path?q`, RFC 9112 §3.2.2) split into its authority
/// and the origin-form target to forward (`/path?q`, `/` when the path is empty). `None` for any
/// other form (origin, asterisk, authority).
pub fn absolute_form(target: &[u8]) -> Option<(&[u8], Vec<u8>)> {
    let rest = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))?;
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // A fragment is never sent in a request target; drop it if a client does.
    let tail = match tail.iter().position(|&b| b == b'#') {
        Some(i) => &tail[..i],
        None => tail,
    };
    let mut origin = Vec::with_capacity(tail.len() + 1);
    if !tail.starts_with(b"/") {
        origin.push(b'/');
    }
    origin.extend_from_slice(tail);
    Some((authority, origin))
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Applies the hygiene rules to a request just read: refuses what [`check_head`] refuses, turns an
/// absolute-form target into origin-form with its authority as Host, writes a non-canonical
/// Content-Length canonically, and lets the connection serve requests the client pipelined
/// behind this one (in order, RFC 9112 §9.3.2) instead of dropping them.
pub fn prepare(session: &mut Session) -> Result<()> {
    let Some(h1) = session.as_http1() else {
        return check(session);
    };
    let raw = h1.get_headers_raw_bytes();
    let http10 = session.req_header().version == http::Version::HTTP_10;
    let canonical = match check_head(&raw, http10) {
        Err(r) => return Err(Error::explain(ErrorType::HTTPStatus(r.status), r.why)),
        Ok(Head {
            framing: Framing::Length(n),
            non_canonical_length: Some(_),
        }) => Some(n),
        Ok(_) => None,
    };
    session.set_pipelining_enabled(true);
    let req = session.req_header_mut();
    if let Some(n) = canonical {
        req.insert_header(http::header::CONTENT_LENGTH, n.to_string())?;
    }
    if let Some((authority, origin)) = absolute_form(req.raw_path()) {
        // Pingora has already refused a Host that differs from the target's authority; a
        // request without Host gets the authority as its Host.
        let authority = authority.to_vec();
        let uri = http::Uri::try_from(origin)
            .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "invalid request target"))?;
        req.set_uri(uri);
        if !req.headers.contains_key(http::header::HOST) {
            req.insert_header(http::header::HOST, authority)?;
        }
    }
    Ok(())
}

/// Refuses what [`check_head`] refuses (HTTP/1: on the raw head; HTTP/2: the count and size
/// limits on the decoded headers).
pub fn check(session: &Session) -> Result<()> {
    let verdict = match session.as_http1() {
        Some(h1) => {
            let raw = h1.get_headers_raw_bytes();
            let http10 = session.req_header().version == http::Version::HTTP_10;
            check_head(&raw, http10).map(|_| ())
        }
        None => h2_limits(session),
    };
    verdict.map_err(|r| Error::explain(ErrorType::HTTPStatus(r.status), r.why))
}

fn h2_limits(session: &Session) -> Result<(), Refusal> {
    let h = &session.req_header().headers;
    if h.len() > MAX_HEADER_COUNT {
        return Err(Refusal {
            status: 431,
            why: "too many request headers",
        });
    }
    let size: usize = h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if size > MAX_HEADER_BYTES {
        return Err(Refusal {
            status: 431,
            why: "request headers too large",
        });
    }
    Ok(())
}

/// Whether the body's framing is unambiguous, so that it can be read (and discarded) safely, even
/// when the request is refused for its size (431).
pub fn framing_is_clear(session: &Session) -> bool {
    match session.as_http1() {
        Some(h1) => {
            let http10 = session.req_header().version == http::Version::HTTP_10;
            framing_of(&h1.get_headers_raw_bytes(), http10).is_ok()
        }
        None => true,
    }
}

#[cfg(test)]
#[path = "hygiene_tests.rs"]
mod tests;
