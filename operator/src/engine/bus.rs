//! The EventBridge bus the relay publishes to.

use std::collections::BTreeMap;

use aws_sdk_eventbridge::types::Tag;

use crate::crd::DeletionPolicy;

use super::context::Ctx;
use super::errors::{AwsResultExt, aws_error, is_not_found, local};
use super::tags;
use super::{Component, EngineError, Verb};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub arn: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    Untag(Vec<String>),
    Tag(BTreeMap<String, String>),
}

/// Pure: the bus wanted (`name`, `tags`) vs what exists.
pub fn diff(
    name: &str,
    tags_wanted: &BTreeMap<String, String>,
    o: Option<&Observed>,
    owner: &tags::Owner,
) -> Result<Vec<Change>, EngineError> {
    let Some(o) = o else {
        return Ok(vec![Change::Create]);
    };
    owner.require_ours(&o.tags, &format!("eventbridge bus {name}"))?;
    Ok(tags::changes(
        tags_wanted,
        &o.tags,
        Change::Untag,
        Change::Tag,
    ))
}

/// Removes tags from an EventBridge resource (bus or rule).
pub async fn untag(
    eb: &aws_sdk_eventbridge::Client,
    arn: &str,
    keys: &[String],
    resource: &str,
) -> Result<(), EngineError> {
    eb.untag_resource()
        .resource_arn(arn)
        .set_tag_keys(Some(keys.to_vec()))
        .send()
        .await
        .aws("UntagResource", resource)?;
    Ok(())
}

pub fn eb_tags(t: &BTreeMap<String, String>) -> Result<Vec<Tag>, EngineError> {
    t.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| local("building eventbridge tag", e))
        })
        .collect()
}

/// Tags of an EventBridge resource (bus or rule).
pub async fn list_tags(
    ctx: &Ctx<'_>,
    arn: &str,
    resource: &str,
) -> Result<BTreeMap<String, String>, EngineError> {
    let out = ctx
        .clients
        .eventbridge
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .aws("ListTagsForResource", resource)?;
    Ok(out
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect())
}

pub async fn observe(ctx: &Ctx<'_>, name: &str) -> Result<Option<Observed>, EngineError> {
    let resource = format!("eventbridge bus {name}");
    let out = match ctx
        .clients
        .eventbridge
        .describe_event_bus()
        .name(name)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(aws_error(&e, "DescribeEventBus", &resource)),
    };
    let arn = out.arn().unwrap_or_default().to_owned();
    let tags = list_tags(ctx, &arn, &resource).await?;
    Ok(Some(Observed { arn, tags }))
}

/// Observe → diff → apply; returns the bus ARN (None only in plan mode for a new bus).
pub async fn reconcile(ctx: &mut Ctx<'_>) -> Result<Option<String>, EngineError> {
    let name = ctx.names.bus.clone();
    let resource = format!("eventbridge bus {name}");
    let observed = observe(ctx, &name).await?;
    let changes = diff(&name, &ctx.tags, observed.as_ref(), &ctx.owner)?;
    let mut arn = observed.map(|o| o.arn);
    let eb = ctx.clients.eventbridge.clone();
    for change in changes {
        match change {
            Change::Create => {
                if ctx.apply {
                    let out = eb
                        .create_event_bus()
                        .name(&name)
                        .set_tags(Some(eb_tags(&ctx.tags)?))
                        .send()
                        .await
                        .aws("CreateEventBus", &resource)?;
                    arn = out.event_bus_arn().map(str::to_owned);
                }
                ctx.record(Component::Bus, Verb::Create, &resource, "");
            }
            Change::Untag(keys) => {
                if ctx.apply {
                    untag(&eb, arn.as_deref().unwrap_or_default(), &keys, &resource).await?;
                }
                ctx.record(
                    Component::Bus,
                    Verb::Update,
                    &resource,
                    tags::describe_removal(&keys),
                );
            }
            Change::Tag(t) => {
                if ctx.apply {
                    eb.tag_resource()
                        .resource_arn(arn.clone().unwrap_or_default())
                        .set_tags(Some(eb_tags(&t)?))
                        .send()
                        .await
                        .aws("TagResource", &resource)?;
                }
                ctx.record(
                    Component::Bus,
                    Verb::Update,
                    &resource,
                    format!("tags: {}", tags::describe(&t)),
                );
            }
        }
    }
    Ok(arn)
}

/// Deletes the bus (our rules are gone by now) unless its deletion policy is Retain or rules
/// the operator does not own are still on it (then it is kept and reported).
pub async fn delete(ctx: &mut Ctx<'_>) -> Result<(), EngineError> {
    let name = ctx.names.bus.clone();
    let resource = format!("eventbridge bus {name}");
    let Some(o) = observe(ctx, &name).await? else {
        return Ok(());
    };
    if ctx.owner.leaves_alone(&o.tags, &resource) {
        return Ok(());
    }
    if ctx.spec.bus.deletion_policy == DeletionPolicy::Retain {
        ctx.record(
            Component::Bus,
            Verb::Retain,
            &resource,
            "deletionPolicy Retain",
        );
        return Ok(());
    }
    // Our rules are gone by now: any rule left belongs to someone else (a team subscribed to
    // this bus), and DeleteEventBus would take it with it.
    let foreign = super::rule::list_on_bus(ctx, None).await?;
    if !foreign.is_empty() {
        ctx.record(
            Component::Bus,
            Verb::Retain,
            &resource,
            format!(
                "kept: it carries rules outbox-operator does not own ({}); to delete it, remove those rules and delete again, or delete the bus by hand",
                foreign.join(", ")
            ),
        );
        return Ok(());
    }
    ctx.clients
        .eventbridge
        .delete_event_bus()
        .name(&name)
        .send()
        .await
        .aws("DeleteEventBus", &resource)?;
    ctx.record(Component::Bus, Verb::Delete, &resource, "");
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
    fn bus_is_created_when_missing_and_left_alone_when_in_sync() {
        let t = owner().desired_tags(&BTreeMap::new());
        assert_eq!(diff("b", &t, None, &owner()).unwrap(), vec![Change::Create]);
        let o = Observed {
            arn: "arn".into(),
            tags: t.clone(),
        };
        assert!(diff("b", &t, Some(&o), &owner()).unwrap().is_empty());
    }

    #[test]
    fn foreign_bus_is_a_conflict() {
        let t = owner().desired_tags(&BTreeMap::new());
        let o = Observed {
            arn: "arn".into(),
            tags: BTreeMap::new(),
        };
        let e = diff("b", &t, Some(&o), &owner()).unwrap_err();
        assert!(e.to_string().contains("eventbridge bus b"));
    }
}
