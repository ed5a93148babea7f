//! The trusted chain: from an admitted object to the CatalogSources whose secrets it needs.
//!
//! Only verified ownerReferences (the owner exists with the referenced UID), OLM-written status,
//! CSV specs and admin-owned CatalogSources are believed. Labels and annotations never are.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::owners::{OwnerQuery, Owners, Verified, builtin_plural};
use super::{Kind, Subject};
use crate::error::Error;
use crate::state::index::Index;
use crate::state::olm;

/// Owner chains longer than this are dropped (Pod → ReplicaSet → Deployment → CR is 3).
pub const MAX_DEPTH: usize = 8;
/// At most this many ownerReferences of one object are followed (real objects have one or two).
pub const MAX_OWNER_REFERENCES: usize = 16;
/// At most this many owners are looked at for one object, however the paths branch.
pub const MAX_STEPS: usize = 64;
/// Longer names are not object names: such a reference is dropped without a lookup.
const MAX_NAME: usize = 253;
/// Longer UIDs are no object's (the API server's are 36 characters): dropped without a lookup,
/// so a made-up one is never remembered either.
const MAX_UID: usize = 128;

/// A catalog the object resolved to, with the path that led there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub catalog_namespace: String,
    pub catalog_name: String,
    pub chain: String,
}

/// Every path followed from one object.
#[derive(Debug, Default)]
pub struct Chains {
    pub found: Vec<Found>,
    /// Why paths were dropped, for the decision log.
    pub dropped: Vec<String>,
}

impl Chains {
    /// The secrets of every catalog found, deduplicated, as (catalog namespace, secret name).
    pub fn secrets<'i>(&self, index: &'i Index) -> Vec<(&'i str, &'i str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for found in &self.found {
            let Some(catalog) = index.catalog(&found.catalog_namespace, &found.catalog_name) else { continue };
            for secret in &catalog.secrets {
                let pair = (catalog.namespace.as_str(), secret.as_str());
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
        out
    }
}

#[derive(Clone)]
struct Step {
    owner: super::owners::OwnerRef,
    path: String,
    depth: usize,
    seen: Vec<String>,
    /// The owner whose (possibly cached) metadata named this one: looked up again, once, when
    /// this path dead-ends, since an owner's references change in place (OLM hands a Deployment
    /// from one CSV to the next, same UID).
    parent: Option<Arc<Step>>,
}

/// After a dead end at `step`: its parent's cached metadata is forgotten and the parent
/// followed again, once per parent and review.
fn look_again(step: &Step, owners: &Owners, namespace: &str, refreshed: &mut Vec<String>, stack: &mut Vec<Step>) {
    let Some(parent) = step.parent.as_deref() else { return };
    if refreshed.contains(&parent.owner.uid) {
        return;
    }
    let Some(plural) = builtin_plural(&parent.owner.api_version, &parent.owner.kind) else { return };
    refreshed.push(parent.owner.uid.clone());
    owners.forget(query(&parent.owner, plural, namespace));
    stack.push(parent.clone());
}

/// A CSV a path ended at, with the path up to and including it.
struct Anchor {
    csv_namespace: String,
    csv_name: String,
    path: String,
}

/// Walks the object's verified owners up to CSVs, and the CSVs to their catalogs.
pub async fn follow(
    index: &Index,
    owners: &Owners,
    subject: &Subject<'_>,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<Chains, Error> {
    let ns = subject.namespace;
    let mut chains = Chains::default();
    let mut anchors: Vec<Anchor> = Vec::new();
    let references = followed(&subject.owner_references, subject.kind.as_str(), &mut chains);
    let mut stack: Vec<Step> = references
        .iter()
        .map(|r| Step {
            owner: r.clone(),
            path: subject.kind.as_str().to_string(),
            depth: 1,
            seen: Vec::new(),
            parent: None,
        })
        .collect();
    let mut refreshed: Vec<String> = Vec::new();

    let mut steps = 0;
    while let Some(step) = stack.pop() {
        let Step { owner, path, depth, seen, .. } = &step;
        steps += 1;
        if steps > MAX_STEPS {
            chains.dropped.push(format!("more than {MAX_STEPS} owners to follow: the rest were not"));
            break;
        }
        if owner.name.len() > MAX_NAME
            || owner.kind.len() > MAX_NAME
            || owner.api_version.len() > MAX_NAME
            || owner.uid.len() > MAX_UID
        {
            chains.dropped.push(format!("{path}<-{}: not a valid object reference", clip(&owner.kind)));
            continue;
        }
        let here = format!("{path}<-{}/{}", owner.kind, owner.name);
        if *depth > MAX_DEPTH {
            chains.dropped.push(format!("{here}: deeper than {MAX_DEPTH}"));
            continue;
        }
        if seen.contains(&owner.uid) {
            chains.dropped.push(format!("{here}: ownership cycle"));
            continue;
        }
        let group = owner.api_version.split_once('/').map_or("", |(g, _)| g);

        if group == olm::GROUP && owner.kind == "ClusterServiceVersion" {
            let anchor = Anchor {
                csv_namespace: ns.to_string(),
                csv_name: owner.name.clone(),
                path: format!("{path}<-CSV/{}", owner.name),
            };
            match index.csv(ns, &owner.name) {
                Some(csv) if csv.uid == owner.uid => anchors.push(anchor),
                Some(_) => {
                    chains.dropped.push(format!("{here}: UID does not match the CSV"));
                    look_again(&step, owners, ns, &mut refreshed, &mut stack);
                }
                // Not delivered by the watch yet (OLM creates the operator's ServiceAccount right
                // after its CSV): verified by a GET like any other owner, so it is decided now
                // rather than left to the reconciler's backfill.
                None => match owners.verified(query(owner, "clusterserviceversions", ns), &owner.uid).await? {
                    Verified::Owner(_) => anchors.push(anchor),
                    Verified::NotFound => {
                        chains.dropped.push(format!("{here}: no such CSV"));
                        look_again(&step, owners, ns, &mut refreshed, &mut stack);
                    }
                    Verified::Forbidden { resource } => chains.dropped.push(not_allowed(&here, &resource)),
                },
            }
            continue;
        }

        let crd_owners = index.crd_owners(group, &owner.kind);
        if !crd_owners.is_empty() {
            let in_scope: Vec<_> = crd_owners.iter().filter(|o| index.in_scope(&o.csv_namespace, ns)).collect();
            if in_scope.is_empty() {
                chains.dropped.push(format!("{here}: no operator owning {} reaches namespace {ns}", owner.kind));
                continue;
            }
            let query = query(owner, &in_scope[0].plural, ns);
            match owners.verified(query, &owner.uid).await? {
                Verified::Owner(_) => {
                    for o in in_scope {
                        anchors.push(Anchor {
                            csv_namespace: o.csv_namespace.clone(),
                            csv_name: o.csv_name.clone(),
                            path: format!("{here}<-CSV/{}", o.csv_name),
                        });
                    }
                }
                Verified::NotFound => chains.dropped.push(format!("{here}: owner not found with that UID")),
                Verified::Forbidden { resource } => chains.dropped.push(not_allowed(&here, &resource)),
            }
            continue;
        }

        let Some(plural) = builtin_plural(&owner.api_version, &owner.kind) else {
            chains.dropped.push(format!("{here}: owner kind not followed"));
            continue;
        };
        let alongside = deployment_named_by(owner).map(|name| OwnerQuery {
            api_version: "apps/v1",
            kind: "Deployment",
            plural: "deployments",
            namespace: ns,
            name,
        });
        match owners.verified_prefetching(query(owner, plural, ns), &owner.uid, alongside).await? {
            Verified::Owner(meta) => {
                if meta.owner_references.is_empty() {
                    chains.dropped.push(format!("{here}: no operator above"));
                }
                let mut seen = seen.clone();
                seen.push(owner.uid.clone());
                let depth = depth + 1;
                // The step itself is the parent of what it names: moved, not copied.
                let parent = Arc::new(step);
                for next in followed(&meta.owner_references, &here, &mut chains) {
                    stack.push(Step {
                        owner: next.clone(),
                        path: here.clone(),
                        depth,
                        seen: seen.clone(),
                        parent: Some(parent.clone()),
                    });
                }
            }
            Verified::NotFound => {
                chains.dropped.push(format!("{here}: owner not found with that UID"));
                look_again(&step, owners, ns, &mut refreshed, &mut stack);
            }
            Verified::Forbidden { resource } => chains.dropped.push(not_allowed(&here, &resource)),
        }
    }

    // A service account with no usable owner: the install strategy of a CSV in its namespace
    // (written by OLM from the bundle) may name it.
    if subject.kind == Kind::ServiceAccount && anchors.is_empty() && !subject.name.is_empty() {
        for csv in index.csvs_naming_service_account(ns, subject.name) {
            anchors.push(Anchor {
                csv_namespace: ns.to_string(),
                csv_name: csv.to_string(),
                path: format!("ServiceAccount/{}<-CSV/{csv}(install strategy)", subject.name),
            });
        }
    }

    for Anchor { csv_namespace, csv_name, path } in anchors {
        let links = index.catalogs_of(&csv_namespace, &csv_name);
        if links.is_empty() {
            chains.dropped.push(format!("{path}: {}", index.missing_link(&csv_namespace, &csv_name)));
        }
        for link in links {
            let remembered = if link.remembered { "(remembered)" } else { "" };
            let chain = format!(
                "{path}<-Subscription/{}{remembered}<-CatalogSource/{}/{}",
                link.subscription, link.catalog_namespace, link.catalog_name
            );
            match index.catalog(&link.catalog_namespace, &link.catalog_name) {
                None if !index.catalog_exists(&link.catalog_namespace, &link.catalog_name) => {
                    chains.dropped.push(format!("{chain}: no such CatalogSource"))
                }
                None => chains.dropped.push(format!("{chain}: catalog has no secrets or is disabled")),
                Some(catalog) if !catalog.admits(namespace_labels) => {
                    chains.dropped.push(format!("{chain}: namespace not selected by the catalog"))
                }
                Some(_) => {
                    let found = Found {
                        catalog_namespace: link.catalog_namespace.clone(),
                        catalog_name: link.catalog_name.clone(),
                        chain,
                    };
                    if !chains.found.contains(&found) {
                        chains.found.push(found);
                    }
                }
            }
        }
    }
    Ok(chains)
}

fn query<'a>(owner: &'a super::owners::OwnerRef, plural: &'a str, namespace: &'a str) -> OwnerQuery<'a> {
    OwnerQuery { api_version: &owner.api_version, kind: &owner.kind, plural, namespace, name: &owner.name }
}

/// The Deployment a ReplicaSet's name says owns it (`<deployment>-<pod-template-hash>`), to be
/// fetched alongside the ReplicaSet. A guess that only saves a round trip: a wrong one costs one
/// GET (in the tenant's own namespace), and what it did not find is not remembered.
fn deployment_named_by(owner: &super::owners::OwnerRef) -> Option<&str> {
    if owner.api_version != "apps/v1" || owner.kind != "ReplicaSet" {
        return None;
    }
    owner.name.rsplit_once('-').map(|(deployment, _)| deployment).filter(|d| !d.is_empty())
}

fn not_allowed(path: &str, resource: &str) -> String {
    format!("{path}: not allowed to get {resource} (grant it through the chart value operandOwnerRules)")
}

/// The ownerReferences of one object that are followed: at most [`MAX_OWNER_REFERENCES`].
fn followed<'r>(
    references: &'r [super::owners::OwnerRef],
    path: &str,
    chains: &mut Chains,
) -> &'r [super::owners::OwnerRef] {
    if references.len() > MAX_OWNER_REFERENCES {
        chains.dropped.push(format!(
            "{}: more than {MAX_OWNER_REFERENCES} ownerReferences; the rest were not followed",
            clip(path)
        ));
    }
    &references[..references.len().min(MAX_OWNER_REFERENCES)]
}

/// A tenant-supplied text, cut to a bounded length for a reason or a log line.
pub fn clip(text: &str) -> &str {
    const MAX: usize = 512;
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
