//! UPDATE and DELETE of Secrets labelled as our copies (a registration scoped by objectSelector):
//! never refused, only noticed. A copy deleted, altered or taken over by someone else is marked in
//! the ledger; every replica forgets it and the reconciler makes it true again.
//!
//! What a review reports is a hint, never a fact: the reconciler probes the copy before it acts
//! on a mark, and a review may be forged (without a client CA, anyone who reaches the port can
//! send one). So a copy's mark is written at most once per [`MARK_INTERVAL`]: reports within it
//! are gathered into one write at its end, and a flood of reviews costs one write per copy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use tokio::time::Instant;

use crate::inject::ledger::Observed;
use crate::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_ANNOTATION};

#[derive(Deserialize)]
struct Envelope {
    request: Objects,
}

/// The two objects of a Secret review; the rest was read by [`super::review::parse`].
#[derive(Deserialize)]
pub struct Objects {
    #[serde(default)]
    pub object: Option<Secret>,
    #[serde(default, rename = "oldObject")]
    pub old_object: Option<Secret>,
}

/// The Secrets of a review body, or why they could not be read.
pub fn objects(body: &[u8]) -> Result<Objects, serde_json::Error> {
    serde_json::from_slice::<Envelope>(body).map(|envelope| envelope.request)
}

/// `<namespace>/<name>` of the source, if `secret` is labelled and annotated as our copy.
pub fn source_of(secret: &Secret) -> Option<&str> {
    let ours = secret.metadata.labels.as_ref()?.get(MANAGED_BY_LABEL).is_some_and(|v| v == MANAGED_BY_VALUE);
    ours.then(|| secret.metadata.annotations.as_ref()?.get(SOURCE_ANNOTATION).map(String::as_str))?
}

/// What happened to our copy `old`: deleted (`new` is `None`), taken over (our label or source
/// annotation gone or changed), altered (its data or type is not its source's), or nothing a
/// repair is needed for. `source` is the current source (`None`: gone, clean-up's business).
pub fn observation(old: &Secret, new: Option<&Secret>, source: Option<&Secret>) -> Option<Observed> {
    let old_source = source_of(old)?;
    let Some(new) = new else { return Some(Observed::Deleted) };
    if source_of(new) != Some(old_source) {
        return Some(Observed::Released);
    }
    let source = source?;
    (new.data != source.data || new.type_ != source.type_).then_some(Observed::Altered)
}

/// A copy's mark is written at most once per this long.
pub const MARK_INTERVAL: Duration = Duration::from_secs(10);
/// Copies whose last write is remembered: past this many at once (reviews naming made-up copies),
/// a report is written at once and not remembered.
const MAX_TRACKED: usize = 16_384;

/// When a report about a copy reaches the ledger.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// Now: nothing was written for the copy within the interval.
    Now,
    /// With the interval's one gathered write, after this long (this report starts the gathering).
    After(Duration),
    /// With a gathered write already due.
    Gathered,
}

/// The last mark written of each copy, and the report waiting for the next one.
#[derive(Default)]
pub struct Marks(Mutex<HashMap<String, Mark>>);

struct Mark {
    written: Instant,
    pending: Option<Observed>,
}

impl Marks {
    /// Notes a report of `observed` about the copy `namespace/name`; says when to write it.
    pub fn note(&self, namespace: &str, name: &str, observed: Observed) -> Pass {
        let key = format!("{namespace}/{name}");
        let mut marks = self.0.lock().expect("marks");
        if let Some(mark) = marks.get_mut(&key) {
            let since = mark.written.elapsed();
            if since < MARK_INTERVAL {
                let first = mark.pending.replace(observed).is_none();
                return if first { Pass::After(MARK_INTERVAL - since) } else { Pass::Gathered };
            }
        }
        if marks.len() >= MAX_TRACKED {
            marks.retain(|_, mark| mark.pending.is_some() || mark.written.elapsed() < MARK_INTERVAL);
        }
        if marks.len() < MAX_TRACKED {
            marks.insert(key, Mark { written: Instant::now(), pending: None });
        }
        Pass::Now
    }

    /// The gathered report of the copy, taken for its write (which counts from now).
    pub fn take_gathered(&self, namespace: &str, name: &str) -> Option<Observed> {
        let mut marks = self.0.lock().expect("marks");
        let mark = marks.get_mut(&format!("{namespace}/{name}"))?;
        mark.written = Instant::now();
        mark.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(labels: serde_json::Value, source: Option<&str>, token: &str) -> Secret {
        serde_json::from_value(json!({
            "metadata": { "name": "creds", "namespace": "t", "labels": labels,
                "annotations": source.map(|s| json!({ SOURCE_ANNOTATION: s })) },
            "type": "kubernetes.io/dockerconfigjson",
            "data": { ".dockerconfigjson": ByteString(token.as_bytes().to_vec()) }
        }))
        .unwrap()
    }

    fn copy(token: &str) -> Secret {
        secret(json!({ MANAGED_BY_LABEL: MANAGED_BY_VALUE }), Some("m/creds"), token)
    }

    #[test]
    fn what_happened_to_a_copy() {
        let source = secret(json!({}), None, "token-1");
        let (old, same) = (copy("token-1"), copy("token-1"));
        assert_eq!(observation(&old, Some(&same), Some(&source)), None, "a write that keeps it true");
        assert_eq!(observation(&old, None, Some(&source)), Some(Observed::Deleted));
        assert_eq!(observation(&old, Some(&copy("guess")), Some(&source)), Some(Observed::Altered));
        let mut retyped = copy("token-1");
        retyped.type_ = Some("Opaque".into());
        assert_eq!(observation(&old, Some(&retyped), Some(&source)), Some(Observed::Altered));
        let unlabelled = secret(json!({}), Some("m/creds"), "token-1");
        assert_eq!(observation(&old, Some(&unlabelled), Some(&source)), Some(Observed::Released));
        let repointed = secret(json!({ MANAGED_BY_LABEL: MANAGED_BY_VALUE }), Some("m/other"), "token-1");
        assert_eq!(observation(&old, Some(&repointed), Some(&source)), Some(Observed::Released));
        assert_eq!(observation(&old, Some(&copy("guess")), None), None, "no source: clean-up decides");
    }

    #[tokio::test(start_paused = true)]
    async fn one_write_per_copy_per_interval() {
        let marks = Marks::default();
        assert_eq!(marks.note("t", "creds", Observed::Altered), Pass::Now);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(marks.note("t", "creds", Observed::Deleted), Pass::After(Duration::from_secs(6)));
        for _ in 0..1000 {
            assert_eq!(marks.note("t", "creds", Observed::Altered), Pass::Gathered);
        }
        assert_eq!(marks.note("t", "other", Observed::Deleted), Pass::Now, "each copy has its own interval");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(marks.take_gathered("t", "creds"), Some(Observed::Altered), "the latest report");
        assert_eq!(marks.take_gathered("t", "creds"), None);
        assert_eq!(marks.note("t", "creds", Observed::Deleted), Pass::After(MARK_INTERVAL), "counted from that write");
        tokio::time::advance(MARK_INTERVAL).await;
        marks.take_gathered("t", "creds");
        tokio::time::advance(MARK_INTERVAL).await;
        assert_eq!(marks.note("t", "creds", Observed::Deleted), Pass::Now);
    }

    #[test]
    fn a_secret_that_was_not_our_copy_is_never_observed() {
        let tenants = secret(json!({ MANAGED_BY_LABEL: "someone-else" }), Some("m/creds"), "x");
        assert_eq!(observation(&tenants, None, None), None);
        // Labelled by the tenant after the fact: the objectSelector sends it, we still ignore it.
        let adopted = secret(json!({}), None, "x");
        assert_eq!(observation(&adopted, Some(&copy("x")), None), None);
    }
}
