//! HTTP in: `POST /mutate` takes an AdmissionReview and answers one. A body that is not a review
//! gets HTTP 400 with a JSON error; nothing panics on bad input.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::error::ReviewError;
use crate::webhook::Webhook;

/// The API server sends at most ~3 MiB objects, twice for an UPDATE; anything larger is not a review.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new().route("/mutate", post(mutate)).with_state(webhook)
}

async fn mutate(State(webhook): State<Arc<Webhook>>, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return bad_request(&ReviewError::Body(MAX_BODY_BYTES)),
    };
    match webhook.review(&bytes).await {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => bad_request(&e),
    }
}

fn bad_request(error: &ReviewError) -> Response {
    let body = serde_json::json!({ "error": error.to_string() }).to_string();
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
