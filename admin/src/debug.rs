//! Debugging endpoints of the admin API: `POST /debug/explain` (what the data plane would do with
//! a described request, from `Snapshot::explain`) and `GET /debug/snapshot` (the compiled
//! configuration with its generation, like Envoy's config_dump). Read-only; both sit behind the
//! admin token like every admin path. The snapshot never serializes private keys.

use crate::body::{media_type, read_body};
use crate::control::ControlPlane;
use crate::error::{AdminError, Cause};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use model::ir::{ExplainRequest, Snapshot};
use model::Format;
use serde::Serialize;

/// The answer to `GET /debug/snapshot`.
#[derive(Serialize)]
struct Dump<'s> {
    generation: u64,
    snapshot: &'s Snapshot,
}

/// `POST /debug/explain`: a JSON request description in, the explanation out.
pub async fn explain(
    cp: &ControlPlane,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, AdminError> {
    if media_type(headers)? != Format::Json {
        return Err(AdminError::bad_request(
            "/debug/explain reads a JSON body (Content-Type: application/json)",
        ));
    }
    let (bytes, _) = read_body(headers, body).await?;
    let req = decode(&bytes)?;
    let (generation, snapshot) = cp.served().await;
    let explanation = snapshot.explain(&req).map_err(|e| {
        AdminError::bad_request_causes(
            e.to_string(),
            vec![Cause::new(&e.field, "FieldValueInvalid", &e.message)],
        )
    })?;
    let body = serde_json::to_vec(&WithGeneration {
        generation,
        explanation: &explanation,
    })
    .map_err(|e| AdminError::internal(format!("encoding the explanation: {e}")))?;
    Ok(json(body))
}

/// The explanation with the generation it was computed under.
#[derive(Serialize)]
struct WithGeneration<'a, T: Serialize> {
    generation: u64,
    #[serde(flatten)]
    explanation: &'a T,
}

/// `GET /debug/snapshot`.
pub async fn snapshot(cp: &ControlPlane) -> Result<Response, AdminError> {
    let (generation, snapshot) = cp.served().await;
    let body = serde_json::to_vec(&Dump {
        generation,
        snapshot: &snapshot,
    })
    .map_err(|e| AdminError::internal(format!("encoding the snapshot: {e}")))?;
    Ok(json(body))
}

fn decode(bytes: &[u8]) -> Result<ExplainRequest, AdminError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || field == "." {
            AdminError::bad_request(format!("the request description does not parse: {inner}"))
        } else {
            let message = inner.to_string();
            AdminError::bad_request_causes(
                format!("{field}: {message}"),
                vec![Cause::new(field, "FieldValueInvalid", message)],
            )
        }
    })
}

fn json(body: Vec<u8>) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
