//! Errors of the library. `anyhow` is used only at the edges (the binary's commands).

use std::time::Duration;

/// A request body that is not an admission.k8s.io/v1 AdmissionReview: answered with HTTP 400.
#[derive(thiserror::Error, Debug)]
pub enum ReviewError {
    #[error("request body is not a valid AdmissionReview: {0}")]
    Json(#[source] serde_json::Error),
    #[error("unsupported apiVersion {0:?}: expected admission.k8s.io/v1")]
    ApiVersion(String),
    #[error("unsupported kind {0:?}: expected AdmissionReview")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has no uid")]
    MissingUid,
    #[error("request body is larger than {0} bytes or could not be read")]
    Body(usize),
}

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("looking up an owner failed: {0}")]
    OwnerLookup(#[source] kube::Error),
    #[error("writing a managed pull-secret copy failed: {0}")]
    Copy(#[source] kube::Error),
    #[error("namespace {namespace} already has secrets named like the copy of {source_secret} that are not ours")]
    CopyNameTaken { namespace: String, source_secret: String },
    #[error("reconciler request failed: {0}")]
    Reconcile(#[source] kube::Error),
    #[error("no decision within the internal deadline of {0:?}")]
    Deadline(Duration),
    #[error("TLS material: {0}")]
    Tls(String),
    #[error("binding {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
}
