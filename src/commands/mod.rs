//! The commands besides `serve`: [`dev`] (the local control plane with the webhook registered),
//! [`explain`] (why an object has or lacks its pull secrets) and [`certs`] (a development pair).
//! They call the runtime and the resolver; nothing below calls them.

pub mod certs;
pub mod dev;
pub mod explain;
