//! Edge hygiene: requests whose framing two HTTP parsers could read differently (request smuggling)
//! are refused with 400 before routing, stricter than Pingora's defaults.

use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, Result};

fn bad(why: &'static str) -> Result<()> {
    Err(Error::explain(ErrorType::HTTPStatus(400), why))
}

/// Refuses ambiguous framing: both Content-Length and Transfer-Encoding, repeated or differing or
/// non-numeric Content-Length, a Transfer-Encoding whose codings do not end in one `chunked`, and
/// several Host headers.
pub fn check(req: &RequestHeader) -> Result<()> {
    let h = &req.headers;
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
        if first_cl.is_some() {
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
