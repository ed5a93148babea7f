//! The plain-HTTP admin port: `/healthz`, `/readyz` (every part ready, not draining; the body
//! names what is not) and `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::lifecycle::Readiness;

pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics::encode())
            }),
        )
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let not_ready = readiness.not_ready();
    if not_ready.is_empty() {
        (StatusCode::OK, "ready".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}", not_ready.join(", ")))
    }
}
