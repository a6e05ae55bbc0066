//! The failure bucket: where the relay's event source mapping puts batches it could not publish
//! after its retries, when the spec names no on-failure destination. S3 receives the full
//! invocation record, so nothing is lost.
//!
//! Ownership: tagged like every resource. The name embeds a hash of cluster id, namespace, name,
//! account and region, so an untagged bucket of exactly that name in our account can only be
//! one whose creation was interrupted before tagging: it is tagged, not reported as a conflict.
//! Delete: an empty bucket is deleted; a bucket that still holds failed batches is RETAINED
//! (reported as a retain action) — failed records are never lost silently. Delete it by hand
//! after dealing with them.

use std::collections::BTreeMap;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration, Tag, Tagging};

use super::context::Ctx;
use super::driver::{Applied, Diff, Resource, Writer};
use super::errors::{AwsResultExt, FoundExt, aws_error, code_of, internal, is_not_found};
use super::tags::{self, Ownership};
use super::{Component, EngineError, Verb};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    Missing,
    /// Exists in our account; its tags (empty when it has none).
    Exists(BTreeMap<String, String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    /// PutBucketTagging replaces the whole set: the tags the bucket is to carry, and the keys
    /// that leave it (the operator's own, dropped from spec.tags).
    Tag(BTreeMap<String, String>, Vec<String>),
    Delete,
    /// Delete keeps a bucket that holds failed batches.
    Keep,
}

/// Pure: wanted tags vs the bucket.
pub fn diff(
    name: &str,
    wanted: &BTreeMap<String, String>,
    o: &Observed,
    owner: &tags::Owner,
) -> Result<Vec<Change>, EngineError> {
    match o {
        Observed::Missing => Ok(vec![Change::Create, Change::Tag(wanted.clone(), vec![])]),
        Observed::Exists(t) if t.is_empty() => Ok(vec![Change::Tag(wanted.clone(), vec![])]),
        Observed::Exists(t) => match owner.classify(t) {
            Ownership::Ours => {
                let stale = tags::stale(wanted, t);
                let missing = tags::missing(wanted, t);
                Ok(if missing.is_empty() && stale.is_empty() {
                    vec![]
                } else {
                    // Someone else's tags stay: the bucket's set minus ours that left the spec,
                    // plus what is missing.
                    let mut all = t.clone();
                    all.retain(|k, _| !stale.contains(k));
                    all.extend(missing);
                    vec![Change::Tag(all, stale)]
                })
            }
            other => Err(tags::conflict(&format!("s3 bucket {name}"), &other)),
        },
    }
}

pub async fn observe(ctx: &Ctx<'_>, name: &str) -> Result<Observed, EngineError> {
    let resource = format!("s3 bucket {name}");
    match ctx
        .clients
        .s3
        .get_bucket_tagging()
        .bucket(name)
        .send()
        .await
    {
        Ok(out) => Ok(Observed::Exists(
            out.tag_set()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect(),
        )),
        Err(e) if code_of(&e) == Some("NoSuchTagSet") => Ok(Observed::Exists(BTreeMap::new())),
        Err(e) if is_not_found(&e) => Ok(Observed::Missing),
        Err(e) => Err(aws_error(&e, "GetBucketTagging", &resource)),
    }
}

fn tagging(t: &BTreeMap<String, String>) -> Result<Tagging, EngineError> {
    let tags = tags::sdk_tags(t, "s3", |k, v| Tag::builder().key(k).value(v).build())?;
    Tagging::builder()
        .set_tag_set(Some(tags))
        .build()
        .map_err(|e| internal("building s3 tagging", e))
}

/// The failure bucket. `name` is None while the account is unknown (plan of a new pipeline:
/// the name is derived from the account, known once the table exists).
#[derive(Clone, Debug)]
pub struct Bucket {
    pub name: Option<String>,
    pub region: String,
    pub tags: BTreeMap<String, String>,
}

impl Bucket {
    fn name(&self) -> Result<&str, EngineError> {
        self.name
            .as_deref()
            .ok_or_else(|| internal("s3 bucket", "the account is not known yet"))
    }

    async fn create(&self, s3: &aws_sdk_s3::Client) -> Result<(), EngineError> {
        let name = self.name()?;
        let resource = self.resource();
        let mut req = s3.create_bucket().bucket(name);
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) if code_of(&e) == Some("BucketAlreadyExists") => Err(EngineError::Conflict {
                resource,
                detail: "the name is taken by another AWS account; set spec.relay.onFailureDestinationArn".to_owned(),
            }),
            Err(e) => Err(aws_error(&e, "CreateBucket", &resource)),
        }
    }
}

impl Resource for Bucket {
    type Observed = Observed;
    type Change = Change;

    fn component(&self) -> Component {
        Component::Relay
    }

    fn resource(&self) -> String {
        match &self.name {
            Some(n) => format!("s3 bucket {n}"),
            None => "s3 bucket (name derived from the account after apply)".to_owned(),
        }
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Observed, EngineError> {
        match &self.name {
            Some(n) => observe(ctx, n).await,
            None => Ok(Observed::Missing),
        }
    }

    fn diff(&self, o: &Observed, owner: &tags::Owner) -> Result<Diff<Change>, EngineError> {
        if self.name.is_none() {
            return Ok(Diff::changes(vec![Change::Create]));
        }
        diff(self.name()?, &self.tags, o, owner).map(Diff::changes)
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        match change {
            Change::Create => (Verb::Create, "failure destination of the relay".to_owned()),
            Change::Tag(t, removed) if removed.is_empty() => {
                (Verb::Update, format!("tags: {}", tags::describe(t)))
            }
            Change::Tag(t, removed) => (
                Verb::Update,
                format!(
                    "tags: {}; {}",
                    tags::describe(t),
                    tags::describe_removal(removed)
                ),
            ),
            Change::Delete => (Verb::Delete, "empty".to_owned()),
            Change::Keep => (
                Verb::Retain,
                "it holds batches the relay could not publish; kept so no failed record is lost (inspect and delete it by hand)".to_owned(),
            ),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        _state: &mut Observed,
    ) -> Result<Applied, EngineError> {
        let s3 = &w.clients().s3;
        let resource = self.resource();
        match change {
            Change::Create => self.create(s3).await?,
            Change::Tag(t, _) => {
                s3.put_bucket_tagging()
                    .bucket(self.name()?)
                    .tagging(tagging(t)?)
                    .send()
                    .await
                    .aws("PutBucketTagging", &resource)?;
            }
            Change::Delete => {
                s3.delete_bucket()
                    .bucket(self.name()?)
                    .send()
                    .await
                    .found("DeleteBucket", &resource)?;
            }
            Change::Keep => {}
        }
        Ok(Applied::Done)
    }

    /// Deletes the bucket when it is ours and empty; keeps it (and says so) when it holds records.
    async fn removal(&self, ctx: &Ctx<'_>, o: &Observed) -> Result<Diff<Change>, EngineError> {
        let (Some(name), Observed::Exists(tags)) = (&self.name, o) else {
            return Ok(Diff::none());
        };
        let resource = self.resource();
        if ctx.owner.leaves_alone(tags, &resource) {
            return Ok(Diff::none());
        }
        let listing = ctx
            .clients
            .s3
            .list_objects_v2()
            .bucket(name)
            .max_keys(1)
            .send()
            .await
            .aws("ListObjectsV2", &resource)?;
        let holds_records = listing.key_count().unwrap_or(0) > 0 || !listing.contents().is_empty();
        Ok(Diff::changes(vec![if holds_records {
            Change::Keep
        } else {
            Change::Delete
        }]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tags::Owner;

    fn owner() -> Owner {
        tags::test_owner()
    }

    #[test]
    fn missing_bucket_is_created_and_tagged() {
        let t = owner().desired_tags(&BTreeMap::new());
        assert_eq!(
            diff("b", &t, &Observed::Missing, &owner()).unwrap(),
            vec![Change::Create, Change::Tag(t.clone(), vec![])]
        );
        assert!(
            diff("b", &t, &Observed::Exists(t.clone()), &owner())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_tag_dropped_from_the_spec_leaves_the_set_and_a_hand_added_one_stays() {
        let team = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
        let mut observed = owner().desired_tags(&team);
        observed.insert("hand".into(), "x".into());
        let wanted = owner().desired_tags(&BTreeMap::new());
        let mut expected = wanted.clone();
        expected.insert("hand".into(), "x".into());
        assert_eq!(
            diff("b", &wanted, &Observed::Exists(observed), &owner()).unwrap(),
            vec![Change::Tag(expected.clone(), vec!["team".into()])]
        );
        assert!(
            diff("b", &wanted, &Observed::Exists(expected), &owner())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bucket_of_another_pipeline_is_a_conflict() {
        let t = owner().desired_tags(&BTreeMap::new());
        let other = Owner {
            cluster_id: "x".into(),
            pipeline: "default/p".into(),
        }
        .desired_tags(&BTreeMap::new());
        assert!(diff("b", &t, &Observed::Exists(other), &owner()).is_err());
    }
}
