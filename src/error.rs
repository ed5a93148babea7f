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
    #[error("{field} is longer than any the API server sends ({limit} bytes)")]
    TooLong { field: &'static str, limit: usize },
    #[error("request body is larger than {0} bytes or could not be read")]
    Body(usize),
}

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("looking up an owner failed: {0}")]
    OwnerLookup(#[source] kube::Error),
    #[error("writing the copy of pull secret {source_secret} failed: {error}")]
    Copy { source_secret: String, error: kube::Error },
    #[error("deleting the copy {namespace}/{name} failed: {error}")]
    CopyDelete { namespace: String, name: String, error: kube::Error },
    #[error("namespace {namespace} already has secrets named like the copy of {source_secret} that are not ours")]
    CopyNameTaken { namespace: String, source_secret: String },
    #[error("reconciler request failed: {0}")]
    Reconcile(#[source] kube::Error),
    #[error("writing the ledger of copies failed: {0}")]
    Ledger(#[source] kube::Error),
    #[error("no decision within the internal deadline of {0:?}")]
    Deadline(Duration),
    #[error("TLS material: {0}")]
    Tls(String),
    #[error("binding {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
}

impl Error {
    /// What whoever created the object is told: the secret concerned, never the API server's
    /// own words (they name identities, resources and policies). The log line has the whole error.
    pub fn public_message(&self) -> String {
        match self {
            Error::Copy { source_secret, .. } => {
                format!("could not copy pull secret {source_secret} into this namespace")
            }
            Error::CopyNameTaken { .. } | Error::Deadline(_) => self.to_string(),
            Error::OwnerLookup(_) => "could not verify the owners of the object with the API server".into(),
            Error::Ledger(_) => "could not record the copy of a pull secret".into(),
            Error::CopyDelete { .. } | Error::Reconcile(_) | Error::Tls(_) | Error::Bind { .. } => {
                "internal error".into()
            }
        }
    }
}
