//! The links sweep: each link a Subscription proves now is written down as a `PullSecretLink`
//! (created, or replaced when the Subscription was repointed), and each one whose CSV (by UID) is
//! gone is deleted. A CSV thus keeps its catalog after OLM's records of its install went (the
//! Subscription deleted while the CSV runs), and across restarts.

use std::collections::{HashMap, HashSet};

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tracing::info;

use super::{Pass, Reconciler, failed};
use crate::state::links::{LinkSpec, PullSecretLink, name_of};

impl Reconciler {
    pub(super) async fn links_sweep(&self, pass: &Pass<'_>) {
        let api = Api::<PullSecretLink>::all(self.ctx.client.clone());
        let written: HashMap<String, _> = self.ctx.caches().links().into_iter().map(|l| (l.name_any(), l)).collect();
        let mut wanted = HashSet::new();
        for (namespace, csv, uid, link) in pass.index.proven_links() {
            let name = name_of(namespace, csv);
            let spec = LinkSpec {
                csv_namespace: namespace.to_string(),
                csv_name: csv.to_string(),
                csv_uid: uid.to_string(),
                subscription: link.subscription.clone(),
                catalog_namespace: link.catalog_namespace.clone(),
                catalog_name: link.catalog_name.clone(),
            };
            if written.get(&name).is_some_and(|w| w.spec == spec) {
                wanted.insert(name);
                continue;
            }
            if pass.lost_lead() {
                return;
            }
            let object = json!({ "apiVersion": format!("{}/{}", crate::API_GROUP, crate::API_VERSION),
                "kind": "PullSecretLink", "metadata": { "name": name }, "spec": spec });
            let params = PatchParams::apply(crate::FIELD_MANAGER).force();
            match api.patch(&name, &params, &Patch::Apply(&object)).await {
                Ok(_) => {
                    info!(%namespace, %csv, catalog = %format!("{}/{}", spec.catalog_namespace, spec.catalog_name),
                    "link of a CSV to its catalog written down")
                }
                Err(e) => failed("write down the link of CSV", namespace, csv, e),
            }
            wanted.insert(name);
        }
        for (name, link) in &written {
            let spec = &link.spec;
            let csv_alive = pass.index.csv(&spec.csv_namespace, &spec.csv_name).is_some_and(|c| c.uid == spec.csv_uid);
            if wanted.contains(name) || csv_alive {
                continue;
            }
            if pass.lost_lead() {
                return;
            }
            let preconditions = Preconditions { uid: link.metadata.uid.clone(), resource_version: None };
            let params = DeleteParams { preconditions: Some(preconditions), ..Default::default() };
            match api.delete(name, &params).await {
                Ok(_) => info!(namespace = %spec.csv_namespace, csv = %spec.csv_name, "CSV gone: its link deleted"),
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(e) => failed("delete the link of CSV", &spec.csv_namespace, &spec.csv_name, e),
            }
        }
    }
}
