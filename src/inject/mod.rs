//! What injection writes: the managed [`copies`] of a catalog's pull secrets in tenant
//! namespaces, the [`ledger`] that records them, and the JSON [`patch`]es that list them in
//! `imagePullSecrets`.

pub mod copies;
pub mod ledger;
pub mod patch;
