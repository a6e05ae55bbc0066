//! Ownership tags: every resource the engine creates carries them, and every resource it finds is
//! classified by them before it is touched.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::EngineError;

pub const MANAGED_BY: &str = "outbox.dev/managed-by";
pub const MANAGED_BY_VALUE: &str = "outbox-operator";
pub const CLUSTER_ID: &str = "outbox.dev/cluster-id";
pub const PIPELINE: &str = "outbox.dev/pipeline";
/// Set on a table a pipeline adopted: its deletion protection is never switched off, and it is
/// deleted only when the operator runs with `--allow-delete-adopted-tables`.
pub const ADOPTED: &str = "outbox.dev/adopted";
/// The record of which `spec.tags` keys the operator applied, so that a key later dropped from
/// the spec is removed again and a tag someone else set never is. AWS tag values allow only
/// letters, digits, space and `_.:/=+-@`, at most 256 characters, and keys may hold all of
/// those: so the value is not the keys but a space-separated, sorted list of fingerprints, the
/// first 30 bits of each key's SHA-256 as 5 base64 characters (40 keys, the CRD's maximum, take
/// 239 characters). A foreign key matches a recorded fingerprint with odds of about 1 in 10^8.
pub const MANAGED_TAGS: &str = "outbox.dev/managed-tags";

/// Who the engine acts for: an operator installation and one pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub cluster_id: String,
    /// `<namespace>/<name>`.
    pub pipeline: String,
}

/// Whose an observed resource is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Tagged for this cluster and this pipeline.
    Ours,
    /// Managed by outbox-operator, but for another pipeline or another cluster.
    OtherPipeline {
        cluster_id: String,
        pipeline: String,
    },
    /// Not created by outbox-operator.
    Foreign,
}

impl Owner {
    /// The tags every resource of the pipeline gets: the spec's tags, the record of their keys
    /// ([`MANAGED_TAGS`]) and the ownership tags (which win; the CRD rejects reserved keys in
    /// spec.tags anyway).
    pub fn desired_tags(&self, spec_tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut tags = spec_tags.clone();
        tags.insert(MANAGED_TAGS.to_owned(), record(spec_tags.keys()));
        tags.insert(MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned());
        tags.insert(CLUSTER_ID.to_owned(), self.cluster_id.clone());
        tags.insert(PIPELINE.to_owned(), self.pipeline.clone());
        tags
    }

    pub fn classify(&self, observed: &BTreeMap<String, String>) -> Ownership {
        if observed.get(MANAGED_BY).map(String::as_str) != Some(MANAGED_BY_VALUE) {
            return Ownership::Foreign;
        }
        let cluster = observed.get(CLUSTER_ID).cloned().unwrap_or_default();
        let pipeline = observed.get(PIPELINE).cloned().unwrap_or_default();
        if cluster == self.cluster_id && pipeline == self.pipeline {
            Ownership::Ours
        } else {
            Ownership::OtherPipeline {
                cluster_id: cluster,
                pipeline,
            }
        }
    }

    /// Before changing a resource: Ok when it is ours, the Conflict error naming it otherwise.
    pub fn require_ours(
        &self,
        observed: &BTreeMap<String, String>,
        resource: &str,
    ) -> Result<(), EngineError> {
        match self.classify(observed) {
            Ownership::Ours => Ok(()),
            other => Err(conflict(resource, &other)),
        }
    }

    /// Before deleting a resource: true (and logged) when it is not ours and must be left alone.
    pub fn leaves_alone(&self, observed: &BTreeMap<String, String>, resource: &str) -> bool {
        let foreign = self.classify(observed) != Ownership::Ours;
        if foreign {
            tracing::warn!(%resource, "not owned by this pipeline: left alone");
        }
        foreign
    }
}

/// The owner the engine modules' unit tests use.
#[cfg(test)]
pub(crate) fn test_owner() -> Owner {
    Owner {
        cluster_id: "c".into(),
        pipeline: "default/p".into(),
    }
}

/// The Conflict error for a resource that is not ours.
pub fn conflict(resource: &str, ownership: &Ownership) -> EngineError {
    let detail = match ownership {
        Ownership::Ours => "owned by this pipeline".to_owned(),
        Ownership::OtherPipeline {
            cluster_id,
            pipeline,
        } => format!("managed by outbox-operator for pipeline {pipeline} of cluster id {cluster_id}"),
        Ownership::Foreign => {
            "it has no outbox-operator ownership tags; rename the pipeline's resource or remove the existing one".to_owned()
        }
    };
    EngineError::Conflict {
        resource: resource.to_owned(),
        detail,
    }
}

/// Tags of `desired` that are absent from or different in `observed` (extra tags are left alone:
/// they may be the user's).
pub fn missing(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    desired
        .iter()
        .filter(|(k, v)| observed.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The [`MANAGED_TAGS`] value for these keys.
fn record<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let mut prints: Vec<String> = keys.map(|k| fingerprint(k)).collect();
    prints.sort();
    prints.join(" ")
}

/// The first 30 bits of the key's SHA-256, as 5 characters of the standard base64 alphabet
/// (all of which AWS allows in a tag value).
fn fingerprint(key: &str) -> String {
    use base64::Engine as _;
    let digest = Sha256::digest(key.as_bytes());
    let mut text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..4]);
    text.truncate(5);
    text
}

/// Tags on `observed` that the operator applied earlier (their keys' fingerprints are in the
/// observed [`MANAGED_TAGS`] record) and that `desired` no longer has: to be removed. A tag
/// without a record (set by someone else, or applied before the record existed) is never listed,
/// nor is a reserved key.
pub fn stale(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
) -> Vec<String> {
    let Some(recorded) = observed.get(MANAGED_TAGS) else {
        return Vec::new();
    };
    let recorded: BTreeSet<&str> = recorded.split_whitespace().collect();
    observed
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .filter(|k| !k.starts_with("outbox.dev/") && !k.starts_with("aws:"))
        .filter(|k| recorded.contains(fingerprint(k).as_str()))
        .cloned()
        .collect()
}

/// The tag changes that bring `observed` to `desired`, in the order they must run: first remove
/// the [`stale`] keys (the old record still lists them, so a failed removal is retried on the next
/// pass), then set what is [`missing`], the new record with it, in one call.
pub fn changes<C>(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
    untag: impl FnOnce(Vec<String>) -> C,
    tag: impl FnOnce(BTreeMap<String, String>) -> C,
) -> Vec<C> {
    let mut out = Vec::new();
    let stale = stale(desired, observed);
    if !stale.is_empty() {
        out.push(untag(stale));
    }
    let missing = missing(desired, observed);
    if !missing.is_empty() {
        out.push(tag(missing));
    }
    out
}

/// `remove tags: k, ...` for action details.
pub fn describe_removal(keys: &[String]) -> String {
    format!("remove tags: {}", keys.join(", "))
}

/// A tag map as the SDK's tag list of a service: `build` is that service's `Tag` builder.
pub fn sdk_tags<T, E: std::fmt::Display>(
    tags: &BTreeMap<String, String>,
    service: &str,
    build: impl Fn(&str, &str) -> Result<T, E>,
) -> Result<Vec<T>, EngineError> {
    tags.iter()
        .map(|(k, v)| {
            build(k, v)
                .map_err(|e| super::errors::internal(format!("building {service} tag {k}"), e))
        })
        .collect()
}

/// `k=v, ...` for action details.
pub fn describe(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            cluster_id: "c1".into(),
            pipeline: "default/users".into(),
        }
    }

    #[test]
    fn desired_tags_carry_ownership_and_spec_tags() {
        let spec = BTreeMap::from([("team".to_owned(), "identity".to_owned())]);
        let tags = owner().desired_tags(&spec);
        assert_eq!(tags[MANAGED_BY], MANAGED_BY_VALUE);
        assert_eq!(tags[CLUSTER_ID], "c1");
        assert_eq!(tags[PIPELINE], "default/users");
        assert_eq!(tags["team"], "identity");
        assert_eq!(owner().classify(&tags), Ownership::Ours);
    }

    #[test]
    fn classifies_foreign_and_other_pipelines() {
        assert_eq!(owner().classify(&BTreeMap::new()), Ownership::Foreign);
        let other_cluster = Owner {
            cluster_id: "c2".into(),
            pipeline: "default/users".into(),
        }
        .desired_tags(&BTreeMap::new());
        assert!(matches!(
            owner().classify(&other_cluster),
            Ownership::OtherPipeline { cluster_id, .. } if cluster_id == "c2"
        ));
        let other_pipeline = Owner {
            cluster_id: "c1".into(),
            pipeline: "team/users".into(),
        }
        .desired_tags(&BTreeMap::new());
        assert!(matches!(
            owner().classify(&other_pipeline),
            Ownership::OtherPipeline { pipeline, .. } if pipeline == "team/users"
        ));
    }

    #[test]
    fn conflict_names_the_resource() {
        let e = conflict("dynamodb table t", &Ownership::Foreign);
        assert_eq!(e.reason(), crate::crd::Reason::Conflict);
        assert!(e.to_string().contains("dynamodb table t"));
    }

    #[test]
    fn the_record_fits_forty_keys_of_any_allowed_characters_in_one_tag_value() {
        let spec: BTreeMap<String, String> = (0..40)
            .map(|i| {
                (
                    format!("key {i} with spaces/slashes:+=@-_.{}", "x".repeat(90)),
                    String::new(),
                )
            })
            .collect();
        let value = owner().desired_tags(&spec)[MANAGED_TAGS].clone();
        assert!(value.chars().count() <= 256, "{}", value.len());
        assert_eq!(value.split(' ').count(), 40);
        assert!(
            value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c)),
            "{value}"
        );
        assert_eq!(owner().desired_tags(&BTreeMap::new())[MANAGED_TAGS], "");
    }

    #[test]
    fn stale_lists_only_keys_the_operator_recorded_and_the_spec_dropped() {
        let before = BTreeMap::from([
            ("team".to_owned(), "a".to_owned()),
            ("cost center".to_owned(), "b".to_owned()),
        ]);
        let mut observed = owner().desired_tags(&before);
        observed.insert("hand-added".into(), "x".into());
        let after = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
        let desired = owner().desired_tags(&after);
        assert_eq!(stale(&desired, &observed), vec!["cost center".to_owned()]);
        assert!(stale(&observed, &observed).is_empty());
        // No record (a resource from before the record existed, or someone else's): nothing goes.
        observed.remove(MANAGED_TAGS);
        assert!(stale(&desired, &observed).is_empty());
        // Reserved keys are never removed, whatever the record says.
        let mut forged = owner().desired_tags(&BTreeMap::new());
        forged.insert(MANAGED_TAGS.into(), fingerprint(ADOPTED));
        forged.insert(ADOPTED.into(), "true".into());
        assert!(stale(&owner().desired_tags(&BTreeMap::new()), &forged).is_empty());
    }

    #[test]
    fn missing_reports_only_absent_or_changed_tags() {
        let desired = owner().desired_tags(&BTreeMap::from([("a".to_owned(), "1".to_owned())]));
        let mut observed = desired.clone();
        observed.insert("user".into(), "x".into());
        assert!(missing(&desired, &observed).is_empty());
        observed.insert("a".into(), "2".into());
        assert_eq!(
            missing(&desired, &observed),
            BTreeMap::from([("a".to_owned(), "1".to_owned())])
        );
    }
}
