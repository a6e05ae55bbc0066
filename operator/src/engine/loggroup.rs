//! The CloudWatch Logs group `/aws/lambda/<function>` of every function the pipeline deploys:
//! created before the function (so Lambda never creates one with infinite retention, and the
//! execution roles need no `logs:CreateLogGroup`), with `spec.monitoring.logRetentionDays`,
//! tagged, drift-repaired, and deleted after its function.
//!
//! A group that exists without our tags (e.g. one Lambda created before the operator managed
//! log groups) is left alone: no change, and the pipeline names it in `status.requiredActions`
//! (logs are not worth failing a pipeline for).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_cloudwatchlogs::types::LogGroup as AwsLogGroup;

use super::context::{AwsEnv, Ctx};
use super::driver::{Applied, Diff, Resource, Writer, delete_if_ours};
use super::errors::{AwsResultExt, FoundExt};
use super::names::Names;
use super::observe::{Listing, by_name};
use super::tags::{self, Owner, Ownership};
use super::{Component, EngineError, Verb};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The group's ARN without the trailing `:*` (what the tagging API takes).
    pub arn: String,
    /// None: never expire.
    pub retention_days: Option<i32>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    Retention { from: Option<i32>, to: i32 },
    Untag(Vec<String>),
    Tag(BTreeMap<String, String>),
    Delete,
}

/// The log group of one function.
#[derive(Clone, Debug)]
pub struct LogGroup {
    /// `/aws/lambda/<function>`.
    pub name: String,
    /// `arn:<partition>:logs:<region>:<account>:log-group:<name>` (no `:*`).
    pub arn: String,
    pub retention_days: i32,
    pub tags: BTreeMap<String, String>,
    pub component: Component,
}

impl LogGroup {
    /// A function's group as far as the delete pass needs it (name, ARN and component).
    pub fn of_function(env: &AwsEnv, function: &str, component: Component) -> LogGroup {
        LogGroup {
            name: Names::log_group(function),
            arn: env.log_group_arn(function),
            retention_days: 0,
            tags: BTreeMap::new(),
            component,
        }
    }
}

/// Pure: the group wanted vs what exists. A group that is not ours is left alone (no change;
/// see [`not_ours`]).
pub fn diff(d: &LogGroup, o: Option<&Observed>, owner: &Owner) -> Vec<Change> {
    let Some(o) = o else {
        return vec![
            Change::Create,
            Change::Retention {
                from: None,
                to: d.retention_days,
            },
        ];
    };
    if owner.classify(&o.tags) != Ownership::Ours {
        return Vec::new();
    }
    let mut out = Vec::new();
    if o.retention_days != Some(d.retention_days) {
        out.push(Change::Retention {
            from: o.retention_days,
            to: d.retention_days,
        });
    }
    out.extend(tags::changes(&d.tags, &o.tags, Change::Untag, Change::Tag));
    out
}

/// What the status says about a group that exists and is not ours (None when it is ours or
/// absent).
pub fn not_ours(name: &str, o: Option<&Observed>, owner: &Owner) -> Option<String> {
    let o = o?;
    let whose = match owner.classify(&o.tags) {
        Ownership::Ours => return None,
        Ownership::OtherPipeline { pipeline, .. } => {
            format!("it is managed for pipeline {pipeline}")
        }
        Ownership::Foreign => "it has no outbox-operator tags (Lambda may have created it before the operator managed log groups)".to_owned(),
    };
    let retention = o
        .retention_days
        .map_or("never expire".to_owned(), |d| format!("{d} days"));
    Some(format!(
        "log group {name} is left alone: {whose}; its retention ({retention}) is not managed. Delete it (aws logs delete-log-group --log-group-name {name}) to let the operator create and manage it"
    ))
}

/// Every log group of the pipeline's functions starts with this: each function is named
/// `outbox-<hash>-...` (see `names`).
pub fn prefix(names: &Names) -> String {
    Names::log_group(&format!("outbox-{}-", names.hash))
}

/// Every log group under `prefix` (every page), by name.
async fn list(ctx: &Ctx<'_>, prefix: &str) -> Result<Listing<AwsLogGroup>, EngineError> {
    let resource = format!("log groups {prefix}*");
    let mut groups = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let Some(page) = ctx
            .clients
            .logs
            .describe_log_groups()
            .log_group_name_prefix(prefix)
            .set_next_token(token.take())
            .send()
            .await
            .found("DescribeLogGroups", &resource)?
        else {
            break;
        };
        groups.extend(page.log_groups().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(Listing::new(
        prefix,
        by_name(groups, |g| g.log_group_name()),
    ))
}

/// The group `name` as AWS has it: from the pass's listing of the pipeline's groups (read once
/// per pass, at the first group observed), else read by name.
async fn find(ctx: &Ctx<'_>, name: &str) -> Result<Option<AwsLogGroup>, EngineError> {
    let prefix = prefix(&ctx.names);
    let listing = || list(ctx, &prefix);
    if let Some(listed) = ctx
        .seen
        .log_groups
        .take_or_list(&prefix, name, listing)
        .await?
    {
        return Ok(listed);
    }
    let resource = format!("log group {name}");
    let Some(out) = ctx
        .clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .found("DescribeLogGroups", &resource)?
    else {
        return Ok(None);
    };
    Ok(out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name))
        .cloned())
}

async fn observe(
    ctx: &Ctx<'_>,
    name: &str,
    fallback_arn: &str,
) -> Result<Option<Observed>, EngineError> {
    let resource = format!("log group {name}");
    let Some(group) = find(ctx, name).await? else {
        return Ok(None);
    };
    let arn = match (group.log_group_arn(), group.arn()) {
        (Some(a), _) => a.to_owned(),
        (None, Some(a)) => a.trim_end_matches(":*").to_owned(),
        (None, None) => fallback_arn.to_owned(),
    };
    let tags = ctx
        .clients
        .logs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .aws("ListTagsForResource", &resource)?
        .tags()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Some(Observed {
        arn,
        retention_days: group.retention_in_days(),
        tags,
    }))
}

fn hash_map(t: &BTreeMap<String, String>) -> HashMap<String, String> {
    t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl Resource for LogGroup {
    type Observed = Option<Observed>;
    type Change = Change;

    fn component(&self) -> Component {
        self.component
    }

    fn resource(&self) -> String {
        format!("log group {}", self.name)
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Option<Observed>, EngineError> {
        observe(ctx, &self.name, &self.arn).await
    }

    fn diff(&self, o: &Option<Observed>, owner: &Owner) -> Result<Diff<Change>, EngineError> {
        Ok(Diff::changes(diff(self, o.as_ref(), owner)))
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        match change {
            Change::Create => (Verb::Create, String::new()),
            Change::Retention { from, to } => {
                let from = from.map_or("never expire".to_owned(), |d| format!("{d} days"));
                (Verb::Update, format!("retention: {from} -> {to} days"))
            }
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
            Change::Delete => (Verb::Delete, String::new()),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        state: &mut Option<Observed>,
    ) -> Result<Applied, EngineError> {
        let logs = &w.clients().logs;
        let resource = self.resource();
        let arn = state
            .as_ref()
            .map_or_else(|| self.arn.clone(), |o| o.arn.clone());
        match change {
            Change::Create => {
                logs.create_log_group()
                    .log_group_name(&self.name)
                    .set_tags(Some(hash_map(&self.tags)))
                    .send()
                    .await
                    .aws("CreateLogGroup", &resource)?;
                *state = Some(Observed {
                    arn,
                    retention_days: None,
                    tags: self.tags.clone(),
                });
            }
            Change::Retention { to, .. } => {
                logs.put_retention_policy()
                    .log_group_name(&self.name)
                    .retention_in_days(*to)
                    .send()
                    .await
                    .aws("PutRetentionPolicy", &resource)?;
            }
            Change::Untag(keys) => {
                logs.untag_resource()
                    .resource_arn(&arn)
                    .set_tag_keys(Some(keys.clone()))
                    .send()
                    .await
                    .aws("UntagResource", &resource)?;
            }
            Change::Tag(t) => {
                logs.tag_resource()
                    .resource_arn(&arn)
                    .set_tags(Some(hash_map(t)))
                    .send()
                    .await
                    .aws("TagResource", &resource)?;
            }
            Change::Delete => {
                logs.delete_log_group()
                    .log_group_name(&self.name)
                    .send()
                    .await
                    .found("DeleteLogGroup", &resource)?;
            }
        }
        Ok(Applied::Done)
    }

    /// Deletes the group when it is ours (after its function, so Lambda cannot re-create it).
    async fn removal(
        &self,
        ctx: &Ctx<'_>,
        o: &Option<Observed>,
    ) -> Result<Diff<Change>, EngineError> {
        let tags = o.as_ref().map(|o| &o.tags);
        Ok(delete_if_ours(ctx, tags, &self.resource(), Change::Delete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(owner: &Owner) -> LogGroup {
        LogGroup {
            name: "/aws/lambda/outbox-x-relay".into(),
            arn: "arn:aws:logs:us-east-1:1:log-group:/aws/lambda/outbox-x-relay".into(),
            retention_days: 30,
            tags: owner.desired_tags(&BTreeMap::new()),
            component: Component::Relay,
        }
    }

    #[test]
    fn a_missing_group_is_created_with_its_retention() {
        let owner = tags::test_owner();
        assert_eq!(
            diff(&wanted(&owner), None, &owner),
            vec![Change::Create, Change::Retention { from: None, to: 30 }]
        );
    }

    #[test]
    fn retention_changed_by_hand_is_put_back_and_in_sync_is_left_alone() {
        let owner = tags::test_owner();
        let d = wanted(&owner);
        let mut o = Observed {
            arn: d.arn.clone(),
            retention_days: Some(30),
            tags: d.tags.clone(),
        };
        assert!(diff(&d, Some(&o), &owner).is_empty());
        o.retention_days = None;
        assert_eq!(
            diff(&d, Some(&o), &owner),
            vec![Change::Retention { from: None, to: 30 }]
        );
    }

    #[test]
    fn a_group_without_our_tags_is_left_alone_and_named() {
        let owner = tags::test_owner();
        let d = wanted(&owner);
        let o = Observed {
            arn: d.arn.clone(),
            retention_days: None,
            tags: BTreeMap::new(),
        };
        assert!(diff(&d, Some(&o), &owner).is_empty());
        let note = not_ours(&d.name, Some(&o), &owner).unwrap();
        assert!(note.contains("/aws/lambda/outbox-x-relay"), "{note}");
        assert!(note.contains("never expire"), "{note}");
        assert!(not_ours(&d.name, None, &owner).is_none());
    }
}
