//! HTTP in: `POST /mutate` takes an AdmissionReview and answers one. A body that is not a review
//! gets HTTP 400 with a JSON error; nothing panics on bad input. What requests may hold is
//! bounded: one body's size and the time to receive it, the reviews in flight at once, and the
//! bytes of all bodies in flight together (a budget reserved before a byte is read). Past a
//! bound, a fast 503 rather than a queue.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
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
    /// Bytes of request bodies held at once: each request reserves its declared length (the
    /// body limit when it declares none) before its body is read.
    pub body_budget_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body_bytes: 3 * 1024 * 1024 + 256 * 1024,
            body_timeout: Duration::from_secs(10),
            max_in_flight: 512,
            body_budget_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A quarter of the memory limit of this process's cgroup (v2 `memory.max`, or v1), between 8
/// and 256 MiB; 64 MiB without a limit. The chart's 256 MiB limit gives 64 MiB: about 8,000 Pod
/// reviews of 8 KB at once, or 19 bodies of the largest size.
pub fn body_budget_from_memory_limit() -> usize {
    const MIB: usize = 1024 * 1024;
    let limit = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse::<usize>().ok());
    match limit {
        // v1 reports "no limit" as a huge number.
        Some(limit) if limit < 1 << 50 => (limit / 4).clamp(8 * MIB, 256 * MIB),
        _ => 64 * MIB,
    }
}

/// The budget is counted in KiB: a semaphore's permits are bounded.
const BUDGET_UNIT: usize = 1024;

struct Mutate {
    webhook: Arc<Webhook>,
    limits: RequestLimits,
    in_flight: Semaphore,
    body_budget: Semaphore,
}

pub fn router(webhook: Arc<Webhook>, limits: RequestLimits) -> Router {
    let in_flight = Semaphore::new(limits.max_in_flight);
    let body_budget = Semaphore::new(limits.body_budget_bytes.div_ceil(BUDGET_UNIT));
    let state = Mutate { webhook, limits, in_flight, body_budget };
    Router::new().route("/mutate", post(mutate)).with_state(Arc::new(state))
}

async fn mutate(State(state): State<Arc<Mutate>>, body: Body) -> Response {
    let Ok(_permit) = state.in_flight.try_acquire() else {
        crate::telemetry::metrics::review_refused();
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many reviews in flight; retry");
    };
    let limit = state.limits.max_body_bytes;
    // The declared length: hyper's body knows it from Content-Length, an in-process body its
    // size; a chunked body has none.
    let declared = axum::body::HttpBody::size_hint(&body).exact().and_then(|n| usize::try_from(n).ok());
    // Refused before a byte of it is read: a malformed review, like any other (400).
    if declared.is_some_and(|length| length > limit) {
        return error(StatusCode::BAD_REQUEST, &ReviewError::Body(limit).to_string());
    }
    // The body's bytes are reserved before it is read, and held while it is read and decided.
    let reserve = u32::try_from(declared.unwrap_or(limit).div_ceil(BUDGET_UNIT).max(1)).unwrap_or(u32::MAX);
    let Ok(_bytes) = state.body_budget.try_acquire_many(reserve) else {
        crate::telemetry::metrics::review_refused();
        return error(StatusCode::SERVICE_UNAVAILABLE, "request bodies in flight are at the memory budget; retry");
    };
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
