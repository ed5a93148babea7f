//! What the process tells its operators: Prometheus [`metrics`] and the JSON decision log
//! ([`logging`]), written off the hot path.

pub mod logging;
pub mod metrics;
