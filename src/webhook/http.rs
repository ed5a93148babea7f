//! HTTP in: `POST /mutate` takes an AdmissionReview and answers one. A body that is not a review
//! gets HTTP 400 with a JSON error; nothing panics on bad input. What one request may hold is
//! bounded: its body's size and the time to receive it, and the reviews in flight at once (past
//! that, a fast 503 rather than a queue).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::Semaphore;

use crate::error::ReviewError;
use crate::webhook::Webhook;

/// Bounds on requests to `/mutate`.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    /// The API server refuses request bodies over 3 MiB, so a Pod or ServiceAccount is at most
    /// that; an UPDATE review carries the object twice, each at most etcd's 1.5 MiB. Plus room
    /// for the review's own fields.
    pub max_body_bytes: usize,
    /// The whole body must arrive within this (the API server sends it at once).
    pub body_timeout: Duration,
    pub max_in_flight: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body_bytes: 3 * 1024 * 1024 + 256 * 1024,
            body_timeout: Duration::from_secs(10),
            max_in_flight: 512,
        }
    }
}

struct Mutate {
    webhook: Arc<Webhook>,
    limits: RequestLimits,
    in_flight: Semaphore,
}

pub fn router(webhook: Arc<Webhook>, limits: RequestLimits) -> Router {
    let in_flight = Semaphore::new(limits.max_in_flight);
    Router::new().route("/mutate", post(mutate)).with_state(Arc::new(Mutate { webhook, limits, in_flight }))
}

async fn mutate(State(state): State<Arc<Mutate>>, headers: HeaderMap, body: Body) -> Response {
    let Ok(_permit) = state.in_flight.try_acquire() else {
        crate::telemetry::metrics::review_refused();
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many reviews in flight; retry");
    };
    let limit = state.limits.max_body_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    // Refused before a byte of it is read: a malformed review, like any other (400).
    if declared.is_some_and(|length| length > limit) {
        return error(StatusCode::BAD_REQUEST, &ReviewError::Body(limit).to_string());
    }
    let bytes = match tokio::time::timeout(state.limits.body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return error(StatusCode::BAD_REQUEST, &ReviewError::Body(limit).to_string()),
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
    };
    match state.webhook.review(&bytes).await {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
