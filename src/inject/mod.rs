//! What injection writes: the managed [`copies`] of a catalog's pull secrets in tenant
//! namespaces, and the JSON [`patch`]es that list them in `imagePullSecrets`.

pub mod copies;
pub mod patch;
