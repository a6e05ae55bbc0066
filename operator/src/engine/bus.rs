//! The EventBridge bus the relay publishes to.

use std::collections::BTreeMap;

use aws_sdk_eventbridge::types::Tag;

use crate::crd::DeletionPolicy;

use super::context::Ctx;
use super::driver::{Applied, Diff, Resource, Writer};
use super::errors::{AwsResultExt, FoundExt};
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
    Delete,
    /// Delete keeps the bus, and says why.
    Keep(String),
}

/// The pipeline's bus: its name, tags and deletion policy.
#[derive(Clone, Debug)]
pub struct Bus {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub deletion_policy: DeletionPolicy,
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

/// Sets tags on an EventBridge resource (bus or rule).
pub async fn tag(
    eb: &aws_sdk_eventbridge::Client,
    arn: &str,
    t: &BTreeMap<String, String>,
    resource: &str,
) -> Result<(), EngineError> {
    eb.tag_resource()
        .resource_arn(arn)
        .set_tags(Some(eb_tags(t)?))
        .send()
        .await
        .aws("TagResource", resource)?;
    Ok(())
}

pub fn eb_tags(t: &BTreeMap<String, String>) -> Result<Vec<Tag>, EngineError> {
    tags::sdk_tags(t, "eventbridge", |k, v| {
        Tag::builder().key(k).value(v).build()
    })
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

/// The bus `name`: what pre-flight read of it this pass (see [`observe_for_pass`]), else AWS's.
pub async fn observe(ctx: &Ctx<'_>, name: &str) -> Result<Option<Observed>, EngineError> {
    if let Some(kept) = ctx.seen.bus.take(name) {
        return Ok(kept);
    }
    read(ctx, name).await
}

/// Reads the bus and keeps what was read for the next [`observe`] of it in this pass: pre-flight
/// reads the pipeline's own bus (ownership, and the account from its ARN) and the bus step gets
/// the same observation instead of reading the bus again.
pub async fn observe_for_pass(ctx: &Ctx<'_>, name: &str) -> Result<Option<Observed>, EngineError> {
    let observed = observe(ctx, name).await?;
    ctx.seen.bus.keep(name, observed.clone());
    Ok(observed)
}

async fn read(ctx: &Ctx<'_>, name: &str) -> Result<Option<Observed>, EngineError> {
    let resource = format!("eventbridge bus {name}");
    let Some(out) = ctx
        .clients
        .eventbridge
        .describe_event_bus()
        .name(name)
        .send()
        .await
        .found("DescribeEventBus", &resource)?
    else {
        return Ok(None);
    };
    let arn = out.arn().unwrap_or_default().to_owned();
    let tags = list_tags(ctx, &arn, &resource).await?;
    Ok(Some(Observed { arn, tags }))
}

impl Resource for Bus {
    type Observed = Option<Observed>;
    type Change = Change;

    fn component(&self) -> Component {
        Component::Bus
    }

    fn resource(&self) -> String {
        format!("eventbridge bus {}", self.name)
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Option<Observed>, EngineError> {
        observe(ctx, &self.name).await
    }

    fn diff(&self, o: &Option<Observed>, owner: &tags::Owner) -> Result<Diff<Change>, EngineError> {
        diff(&self.name, &self.tags, o.as_ref(), owner).map(Diff::changes)
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        match change {
            Change::Create => (Verb::Create, String::new()),
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
            Change::Delete => (Verb::Delete, String::new()),
            Change::Keep(why) => (Verb::Retain, why.clone()),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        state: &mut Option<Observed>,
    ) -> Result<Applied, EngineError> {
        let eb = &w.clients().eventbridge;
        let resource = self.resource();
        let arn = state.as_ref().map(|o| o.arn.clone()).unwrap_or_default();
        match change {
            Change::Create => {
                let out = eb
                    .create_event_bus()
                    .name(&self.name)
                    .set_tags(Some(eb_tags(&self.tags)?))
                    .send()
                    .await
                    .aws("CreateEventBus", &resource)?;
                *state = Some(Observed {
                    arn: out.event_bus_arn().unwrap_or_default().to_owned(),
                    tags: self.tags.clone(),
                });
            }
            Change::Untag(keys) => untag(eb, &arn, keys, &resource).await?,
            Change::Tag(t) => tag(eb, &arn, t, &resource).await?,
            Change::Delete => {
                eb.delete_event_bus()
                    .name(&self.name)
                    .send()
                    .await
                    .aws("DeleteEventBus", &resource)?;
            }
            Change::Keep(_) => {}
        }
        Ok(Applied::Done)
    }

    /// Deletes the bus (our rules are gone by now) unless its deletion policy is Retain or rules
    /// the operator does not own are still on it (then it is kept and reported).
    async fn removal(
        &self,
        ctx: &Ctx<'_>,
        o: &Option<Observed>,
    ) -> Result<Diff<Change>, EngineError> {
        if o.as_ref()
            .is_none_or(|o| ctx.owner.leaves_alone(&o.tags, &self.resource()))
        {
            return Ok(Diff::none());
        }
        if self.deletion_policy == DeletionPolicy::Retain {
            return Ok(Diff::changes(vec![Change::Keep(
                "deletionPolicy Retain".to_owned(),
            )]));
        }
        // Our rules are gone by now: any rule left belongs to someone else (a team subscribed to
        // this bus), and DeleteEventBus would take it with it.
        let foreign = super::rule::list_on_bus(ctx, None).await?;
        if !foreign.is_empty() {
            return Ok(Diff::changes(vec![Change::Keep(format!(
                "kept: it carries rules outbox-operator does not own ({}); to delete it, remove those rules and delete again, or delete the bus by hand",
                foreign.join(", ")
            ))]));
        }
        Ok(Diff::changes(vec![Change::Delete]))
    }
}

/// Pure: consumers are refused on a bus the pipeline does not own in another account (a rule
/// lives in its bus's account, where the operator has no say). `account` is the pipeline's
/// account, when known.
pub fn existing_allows_consumers(
    spec: &crate::crd::OutboxPipelineSpec,
    account: Option<&str>,
) -> Result<(), String> {
    let (Some((bus_account, _)), Some(account)) = (spec.bus.existing(), account) else {
        return Ok(());
    };
    if bus_account == account || spec.consumers.is_empty() {
        return Ok(());
    }
    let arn = spec.bus.existing_arn.as_deref().unwrap_or_default();
    Err(format!(
        "spec.consumers[0] ({}): spec.bus.existingArn {arn} is in account {bus_account}, the pipeline is in account {account}; rules must live in the bus's account, so consumers of another account's bus are created there by its owner (remove spec.consumers, or publish to a bus in account {account})",
        spec.consumers[0].name
    ))
}

/// What the owner of a bus in another account must allow: the relay's role may put events on
/// it (the statement to add to the bus's resource policy).
pub fn policy_required_action(bus_arn: &str, relay_role_arn: &str) -> String {
    let statement = serde_json::json!({
        "Sid": "AllowOutboxRelay",
        "Effect": "Allow",
        "Principal": {"AWS": relay_role_arn},
        "Action": "events:PutEvents",
        "Resource": bus_arn
    });
    format!(
        "add to the resource policy of event bus {bus_arn} (in another account; the operator does not change it): {statement}"
    )
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

    fn spec_with(existing: &str, consumers: usize) -> crate::crd::OutboxPipelineSpec {
        let mut v: serde_json::Value = serde_json::json!({
            "table": {"partitionKey": {"name": "pk", "type": "S"}},
            "bus": {"existingArn": existing},
            "relay": {"events": [{"change": "INSERT", "source": "s", "detailType": "D", "payload": "keys"}]},
            "consumers": []
        });
        for i in 0..consumers {
            v["consumers"].as_array_mut().unwrap().push(
                serde_json::json!({"name": format!("c{i}"), "eventPattern": {"source": ["s"]}}),
            );
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn consumers_on_an_existing_bus_of_another_account_are_refused_with_both_accounts_named() {
        let arn = "arn:aws:events:us-east-1:111122223333:event-bus/central";
        let e = existing_allows_consumers(&spec_with(arn, 1), Some("123456789012")).unwrap_err();
        assert!(e.contains("spec.consumers[0]"), "{e}");
        assert!(
            e.contains("111122223333") && e.contains("123456789012"),
            "{e}"
        );
        assert!(existing_allows_consumers(&spec_with(arn, 0), Some("123456789012")).is_ok());
        assert!(existing_allows_consumers(&spec_with(arn, 1), Some("111122223333")).is_ok());
    }

    #[test]
    fn bus_policy_statement_names_the_bus_and_the_relay_role() {
        let s = policy_required_action("arn:bus", "arn:role");
        assert!(s.contains(r#""Principal":{"AWS":"arn:role"}"#), "{s}");
        assert!(
            s.contains(r#""Action":"events:PutEvents""#) && s.contains(r#""Resource":"arn:bus""#)
        );
    }
}
