//! Serving: the HTTPS listener ([`https`]) with its certificate reloaded from disk ([`tls`]), the
//! plain-HTTP admin port ([`admin`]), and the readiness and shutdown every part obeys
//! ([`lifecycle`]).

pub mod admin;
pub mod https;
pub mod lifecycle;
pub mod tls;
pub mod write_timeout;
