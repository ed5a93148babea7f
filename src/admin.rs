//! The plain-HTTP admin port: `/healthz`, `/readyz` (caches synced, TLS loaded, not draining)
//! and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::caches::Caches;

pub struct Readiness {
    pub caches: Arc<Caches>,
    pub draining: AtomicBool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.caches.synced() && !self.draining.load(Ordering::SeqCst)
    }
}

pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::encode()) }),
        )
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    if readiness.ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}
