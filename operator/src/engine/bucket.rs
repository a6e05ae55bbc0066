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
use super::errors::{AwsResultExt, aws_error, code_of, is_not_found, local};
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
    let tags = t
        .iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| local("building s3 tag", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Tagging::builder()
        .set_tag_set(Some(tags))
        .build()
        .map_err(|e| local("building s3 tagging", e))
}

/// Observe → diff → apply; returns the bucket ARN.
pub async fn reconcile(ctx: &mut Ctx<'_>) -> Result<String, EngineError> {
    if !ctx.env.is_known() {
        // Plan of a new pipeline: the name depends on the account, known once the table exists.
        ctx.record(
            Component::Relay,
            Verb::Create,
            "s3 bucket (name derived from the account after apply)",
            "failure destination of the relay",
        );
        return Ok("<failure bucket ARN after apply>".to_owned());
    }
    let name = ctx.names.bucket(&ctx.env.account, &ctx.env.region);
    let arn = ctx.env.bucket_arn(&name);
    let resource = format!("s3 bucket {name}");
    let observed = observe(ctx, &name).await?;
    let changes = diff(&name, &ctx.tags, &observed, &ctx.owner)?;
    let s3 = ctx.clients.s3.clone();
    for change in changes {
        match change {
            Change::Create => {
                if ctx.apply {
                    let mut req = s3.create_bucket().bucket(&name);
                    if ctx.env.region != "us-east-1" {
                        req = req.create_bucket_configuration(
                            CreateBucketConfiguration::builder()
                                .location_constraint(BucketLocationConstraint::from(
                                    ctx.env.region.as_str(),
                                ))
                                .build(),
                        );
                    }
                    match req.send().await {
                        Ok(_) => {}
                        Err(e) if code_of(&e) == Some("BucketAlreadyOwnedByYou") => {}
                        Err(e) if code_of(&e) == Some("BucketAlreadyExists") => {
                            return Err(EngineError::Conflict {
                                resource,
                                detail: "the name is taken by another AWS account; set spec.relay.onFailureDestinationArn".to_owned(),
                            });
                        }
                        Err(e) => return Err(aws_error(&e, "CreateBucket", &resource)),
                    }
                }
                ctx.record(
                    Component::Relay,
                    Verb::Create,
                    &resource,
                    "failure destination of the relay",
                );
            }
            Change::Tag(t, removed) => {
                if ctx.apply {
                    s3.put_bucket_tagging()
                        .bucket(&name)
                        .tagging(tagging(&t)?)
                        .send()
                        .await
                        .aws("PutBucketTagging", &resource)?;
                }
                ctx.record(
                    Component::Relay,
                    Verb::Update,
                    &resource,
                    if removed.is_empty() {
                        format!("tags: {}", tags::describe(&t))
                    } else {
                        format!(
                            "tags: {}; {}",
                            tags::describe(&t),
                            tags::describe_removal(&removed)
                        )
                    },
                );
            }
        }
    }
    Ok(arn)
}

/// Deletes the bucket when it is ours and empty; retains it (and says so) when it holds records.
pub async fn delete(ctx: &mut Ctx<'_>) -> Result<(), EngineError> {
    let name = ctx.names.bucket(&ctx.env.account, &ctx.env.region);
    let resource = format!("s3 bucket {name}");
    let tags = match observe(ctx, &name).await? {
        Observed::Missing => return Ok(()),
        Observed::Exists(t) => t,
    };
    if ctx.owner.leaves_alone(&tags, &resource) {
        return Ok(());
    }
    let s3 = ctx.clients.s3.clone();
    let listing = s3
        .list_objects_v2()
        .bucket(&name)
        .max_keys(1)
        .send()
        .await
        .aws("ListObjectsV2", &resource)?;
    if listing.key_count().unwrap_or(0) > 0 || !listing.contents().is_empty() {
        ctx.record(
            Component::Relay,
            Verb::Retain,
            &resource,
            "it holds batches the relay could not publish; kept so no failed record is lost (inspect and delete it by hand)",
        );
        return Ok(());
    }
    match s3.delete_bucket().bucket(&name).send().await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(aws_error(&e, "DeleteBucket", &resource)),
    }
    ctx.record(Component::Relay, Verb::Delete, &resource, "empty");
    Ok(())
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
