//! Ownership tags: every resource the engine creates carries them, and every resource it finds is
//! classified by them before it is touched.

use std::collections::BTreeMap;

use super::EngineError;

pub const MANAGED_BY: &str = "outbox.dev/managed-by";
pub const MANAGED_BY_VALUE: &str = "outbox-operator";
pub const CLUSTER_ID: &str = "outbox.dev/cluster-id";
pub const PIPELINE: &str = "outbox.dev/pipeline";
/// Set on a table a pipeline adopted: its deletion protection is never switched off, and it is
/// deleted only when the operator runs with `--allow-delete-adopted-tables`.
pub const ADOPTED: &str = "outbox.dev/adopted";

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
    /// The tags every resource of the pipeline gets: the spec's tags plus the ownership tags
    /// (which win; the CRD rejects reserved keys in spec.tags anyway).
    pub fn desired_tags(&self, spec_tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut tags = spec_tags.clone();
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
