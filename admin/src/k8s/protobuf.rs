//! The protobuf bodies kubectl sends for built-in kinds (`application/vnd.kubernetes.protobuf`,
//! `kubectl create secret|ingress`): the `k8s\0` envelope (`runtime.Unknown`), then a `core/v1`
//! `Secret` or a `networking/v1` `Ingress`. A hand decoder of the fields those kinds have (field
//! numbers of Kubernetes' `generated.proto`): metadata's name, namespace, labels, annotations and
//! resourceVersion; a Secret's `data`, `stringData`, `type`, `immutable`; an Ingress's spec.
//! Any other kind in the envelope is refused with 415, never guessed at.

use crate::error::AdminError;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use base64::Engine as _;
use bytes::Bytes;
use model::{Format, Kind};
use serde_json::{json, Map, Value};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\x00";

/// The body and its format: Some(JSON or YAML) as `body::media_type` says, None for protobuf.
pub(crate) async fn read_object(
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Option<Format>), AdminError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(PROTOBUF) {
        return Ok((crate::body::read_raw(headers, body).await?, None));
    }
    let (bytes, format) = crate::body::read_body(headers, body).await?;
    Ok((bytes, Some(format)))
}

fn bad(what: &str) -> AdminError {
    AdminError::bad_request(format!("the protobuf body could not be decoded: {what}"))
}

/// One field of a message: its number and its value (a varint, or the bytes of a
/// length-delimited field).
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, AdminError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&byte, rest) = self
                .b
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn next(&mut self) -> Result<Option<Field<'a>>, AdminError> {
        if self.b.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).map_err(|_| bad("field number"))?;
        match tag & 7 {
            0 => Ok(Some(Field::Varint(number, self.varint()?))),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| bad("length"))?;
                if len > self.b.len() {
                    return Err(bad("truncated field"));
                }
                let (v, rest) = self.b.split_at(len);
                self.b = rest;
                Ok(Some(Field::Bytes(number, v)))
            }
            1 => {
                self.skip(8)?;
                self.next()
            }
            5 => {
                self.skip(4)?;
                self.next()
            }
            w => Err(bad(&format!("wire type {w}"))),
        }
    }

    fn skip(&mut self, n: usize) -> Result<(), AdminError> {
        if n > self.b.len() {
            return Err(bad("truncated field"));
        }
        self.b = &self.b[n..];
        Ok(())
    }
}

fn fields(b: &[u8]) -> Result<Vec<Field<'_>>, AdminError> {
    let mut r = Reader { b };
    let mut out = Vec::new();
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, AdminError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("a string is not UTF-8"))
}

/// A `map<string, T>` entry: key (1) and value (2).
fn entry(b: &[u8]) -> Result<(String, &[u8]), AdminError> {
    let (mut k, mut v): (String, &[u8]) = (String::new(), &[]);
    for f in fields(b)? {
        match f {
            Field::Bytes(1, x) => k = text(x)?,
            Field::Bytes(2, x) => v = x,
            _ => {}
        }
    }
    Ok((k, v))
}

fn metadata(b: &[u8]) -> Result<Value, AdminError> {
    let mut m = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for f in fields(b)? {
        // Go's encoder writes empty strings too: an empty field is an absent one.
        match f {
            Field::Bytes(_, []) => {}
            Field::Bytes(1, x) => {
                m.insert("name".into(), json!(text(x)?));
            }
            Field::Bytes(2, x) => {
                m.insert("generateName".into(), json!(text(x)?));
            }
            Field::Bytes(3, x) => {
                m.insert("namespace".into(), json!(text(x)?));
            }
            Field::Bytes(6, x) => {
                m.insert("resourceVersion".into(), json!(text(x)?));
            }
            Field::Bytes(11, x) => {
                let (k, v) = entry(x)?;
                labels.insert(k, json!(text(v)?));
            }
            Field::Bytes(12, x) => {
                let (k, v) = entry(x)?;
                annotations.insert(k, json!(text(v)?));
            }
            // uid, selfLink, generation, timestamps: set by the server, ignored as in JSON.
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(m))
}

fn secret(b: &[u8]) -> Result<Value, AdminError> {
    let mut o = Map::new();
    o.insert("apiVersion".into(), json!("v1"));
    o.insert("kind".into(), json!("Secret"));
    let (mut data, mut string_data) = (Map::new(), Map::new());
    for f in fields(b)? {
        match f {
            Field::Bytes(1, x) => {
                o.insert("metadata".into(), metadata(x)?);
            }
            Field::Bytes(2, x) => {
                let (k, v) = entry(x)?;
                data.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                );
            }
            Field::Bytes(3, x) if !x.is_empty() => {
                o.insert("type".into(), json!(text(x)?));
            }
            Field::Bytes(4, x) => {
                let (k, v) = entry(x)?;
                string_data.insert(k, json!(text(v)?));
            }
            Field::Varint(5, v) => {
                o.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        o.insert("data".into(), Value::Object(data));
    }
    if !string_data.is_empty() {
        o.insert("stringData".into(), Value::Object(string_data));
    }
    Ok(Value::Object(o))
}

fn strings_into(m: &mut Map<String, Value>, key: &str, v: String) {
    let list = m.entry(key).or_insert_with(|| json!([]));
    if let Value::Array(a) = list {
        a.push(json!(v));
    }
}

fn push(m: &mut Map<String, Value>, key: &str, v: Value) {
    let list = m.entry(key).or_insert_with(|| json!([]));
    if let Value::Array(a) = list {
        a.push(v);
    }
}

/// A message of string fields only, by field number.
fn named_strings(b: &[u8], names: &[(u32, &str)]) -> Result<Map<String, Value>, AdminError> {
    let mut m = Map::new();
    for f in fields(b)? {
        if let Field::Bytes(n, x) = f {
            if let Some((_, name)) = names.iter().find(|(k, _)| *k == n) {
                if !x.is_empty() {
                    m.insert((*name).into(), json!(text(x)?));
                }
            }
        }
    }
    Ok(m)
}

/// `IngressBackend`: `resource` (3, a TypedLocalObjectReference), `service` (4).
fn ingress_backend(b: &[u8]) -> Result<Value, AdminError> {
    let mut m = Map::new();
    for f in fields(b)? {
        match f {
            Field::Bytes(3, x) => {
                let r = named_strings(x, &[(1, "apiGroup"), (2, "kind"), (3, "name")])?;
                m.insert("resource".into(), Value::Object(r));
            }
            Field::Bytes(4, x) => {
                let mut svc = Map::new();
                for g in fields(x)? {
                    match g {
                        Field::Bytes(1, n) if !n.is_empty() => {
                            svc.insert("name".into(), json!(text(n)?));
                        }
                        Field::Bytes(2, p) => {
                            let mut port = Map::new();
                            for h in fields(p)? {
                                match h {
                                    Field::Bytes(1, n) if !n.is_empty() => {
                                        port.insert("name".into(), json!(text(n)?));
                                    }
                                    Field::Varint(2, n) if n != 0 => {
                                        port.insert("number".into(), json!(n));
                                    }
                                    _ => {}
                                }
                            }
                            svc.insert("port".into(), Value::Object(port));
                        }
                        _ => {}
                    }
                }
                m.insert("service".into(), Value::Object(svc));
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

/// `IngressRule`: `host` (1), `ingressRuleValue` (2, embedded: its `http` is 1, whose `paths` are
/// 1, each `path` 1, `backend` 2, `pathType` 3).
fn ingress_rule(b: &[u8]) -> Result<Value, AdminError> {
    let mut m = Map::new();
    for f in fields(b)? {
        match f {
            Field::Bytes(1, x) if !x.is_empty() => {
                m.insert("host".into(), json!(text(x)?));
            }
            Field::Bytes(2, value) => {
                for g in fields(value)? {
                    let Field::Bytes(1, http) = g else { continue };
                    let mut paths = Map::new();
                    paths.insert("paths".into(), json!([]));
                    for h in fields(http)? {
                        let Field::Bytes(1, p) = h else { continue };
                        let mut path = Map::new();
                        for i in fields(p)? {
                            match i {
                                Field::Bytes(1, x) if !x.is_empty() => {
                                    path.insert("path".into(), json!(text(x)?));
                                }
                                Field::Bytes(2, x) => {
                                    path.insert("backend".into(), ingress_backend(x)?);
                                }
                                Field::Bytes(3, x) if !x.is_empty() => {
                                    path.insert("pathType".into(), json!(text(x)?));
                                }
                                _ => {}
                            }
                        }
                        push(&mut paths, "paths", Value::Object(path));
                    }
                    m.insert("http".into(), Value::Object(paths));
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn ingress(b: &[u8]) -> Result<Value, AdminError> {
    let mut o = Map::new();
    o.insert("apiVersion".into(), json!("networking.k8s.io/v1"));
    o.insert("kind".into(), json!("Ingress"));
    let mut spec = Map::new();
    for f in fields(b)? {
        match f {
            Field::Bytes(1, x) => {
                o.insert("metadata".into(), metadata(x)?);
            }
            Field::Bytes(2, x) => {
                for g in fields(x)? {
                    match g {
                        Field::Bytes(1, y) => {
                            spec.insert("defaultBackend".into(), ingress_backend(y)?);
                        }
                        Field::Bytes(2, y) => {
                            let mut tls = Map::new();
                            for h in fields(y)? {
                                match h {
                                    Field::Bytes(1, z) => strings_into(&mut tls, "hosts", text(z)?),
                                    Field::Bytes(2, z) if !z.is_empty() => {
                                        tls.insert("secretName".into(), json!(text(z)?));
                                    }
                                    _ => {}
                                }
                            }
                            push(&mut spec, "tls", Value::Object(tls));
                        }
                        Field::Bytes(3, y) => push(&mut spec, "rules", ingress_rule(y)?),
                        Field::Bytes(4, y) => {
                            spec.insert("ingressClassName".into(), json!(text(y)?));
                        }
                        _ => {}
                    }
                }
            }
            // status (3): computed by the server.
            _ => {}
        }
    }
    o.insert("spec".into(), Value::Object(spec));
    Ok(Value::Object(o))
}

/// A protobuf body as the JSON object it stands for: Secrets and Ingresses, what kubectl sends
/// as protobuf to this server.
pub(crate) fn decode(kind: Kind, body: &[u8]) -> Result<Value, AdminError> {
    let unsupported = || AdminError::unsupported_media_type(PROTOBUF);
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("no k8s envelope"))?;
    let (mut api_version, mut kind_str, mut raw): (String, String, &[u8]) = Default::default();
    for f in fields(rest)? {
        match f {
            Field::Bytes(1, type_meta) => {
                for t in fields(type_meta)? {
                    match t {
                        Field::Bytes(1, x) => api_version = text(x)?,
                        Field::Bytes(2, x) => kind_str = text(x)?,
                        _ => {}
                    }
                }
            }
            Field::Bytes(2, x) => raw = x,
            Field::Bytes(3, x) if !x.is_empty() => return Err(unsupported()),
            _ => {}
        }
    }
    match (kind, kind_str.as_str(), api_version.as_str()) {
        (Kind::Secret, "Secret", "v1") => secret(raw),
        (Kind::Ingress, "Ingress", "networking.k8s.io/v1") => ingress(raw),
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field(n: u32, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(n) << 3 | 2, &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }

    #[test]
    fn a_tls_secret_decodes() {
        let meta = [
            field(1, b"web"),
            field(3, b"prod"),
            field(11, &[field(1, b"app"), field(2, b"x")].concat()),
        ]
        .concat();
        let data = [field(1, b"tls.crt"), field(2, b"CERT")].concat();
        let secret = [
            field(1, &meta),
            field(2, &data),
            field(3, b"kubernetes.io/tls"),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &secret)].concat();
        let v = decode(Kind::Secret, &body).expect("decodes");
        assert_eq!(v["metadata"]["name"], "web");
        assert_eq!(v["metadata"]["namespace"], "prod");
        assert_eq!(v["metadata"]["labels"]["app"], "x");
        assert_eq!(v["type"], "kubernetes.io/tls");
        assert_eq!(v["data"]["tls.crt"], "Q0VSVA==");
        assert!(decode(Kind::VirtualService, &body).is_err());
        assert!(decode(Kind::Secret, &body[..body.len() - 3]).is_err());
    }
}
