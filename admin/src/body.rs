//! Request bodies: the media type (JSON unless said otherwise; YAML accepted) and a hard size
//! limit enforced before and while reading, so an oversized body is refused without being
//! buffered whole.

use crate::error::AdminError;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use model::Format;

/// The largest body the API reads: 1 MiB (CONTRACT §3 allows up to 2 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The body format from `Content-Type`; a missing header means JSON.
pub fn media_type(headers: &HeaderMap) -> Result<Format, AdminError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Json);
    };
    let raw = String::from_utf8_lossy(v.as_bytes());
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/json" => Ok(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Ok(Format::Yaml),
        _ => Err(AdminError::unsupported_media_type(&raw)),
    }
}

/// Reads the whole body, at most [`MAX_BODY_BYTES`]: refused up front on `Content-Length`,
/// and reading stops at the first byte past the limit of a chunked body.
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<(Bytes, Format), AdminError> {
    read_limited(headers, body, MAX_BODY_BYTES).await
}

pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Bytes, Format), AdminError> {
    let format = media_type(headers)?;
    Ok((read_bytes(headers, body, limit).await?, format))
}

/// The whole body within [`MAX_BODY_BYTES`], whatever its media type (the caller reads it).
pub(crate) async fn read_raw(headers: &HeaderMap, body: Body) -> Result<Bytes, AdminError> {
    read_bytes(headers, body, MAX_BODY_BYTES).await
}

async fn read_bytes(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, AdminError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AdminError::too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(AdminError::too_large(limit))
        }
        Err(e) => Err(AdminError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_type(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(t).expect("value"),
        );
        h
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type(&HeaderMap::new()).ok(), Some(Format::Json));
        assert_eq!(
            media_type(&with_type("application/json; charset=utf-8")).ok(),
            Some(Format::Json)
        );
        for y in [
            "application/yaml",
            "Application/X-YAML",
            "text/yaml;charset=utf-8",
        ] {
            assert_eq!(media_type(&with_type(y)).ok(), Some(Format::Yaml), "{y}");
        }
        let e = media_type(&with_type("text/plain")).expect_err("415");
        assert_eq!(e.code().as_u16(), 415);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5242880"));
        let e = read_limited(&h, Body::empty(), 1024)
            .await
            .expect_err("413");
        assert_eq!(e.code().as_u16(), 413);
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused() {
        let body = Body::from(vec![b'x'; 2048]);
        let e = read_limited(&HeaderMap::new(), body, 1024)
            .await
            .expect_err("413");
        assert_eq!(e.code().as_u16(), 413);
        let body = Body::from(vec![b'x'; 1024]);
        let (b, _) = read_limited(&HeaderMap::new(), body, 1024)
            .await
            .expect("at the limit");
        assert_eq!(b.len(), 1024);
    }
}
