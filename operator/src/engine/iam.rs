//! One execution role per function, under the path `/outbox/` (one iam:PassRole statement
//! covers them all), with an optional permissions boundary and one least-privilege inline policy:
//! - relay: read this table's stream, events:PutEvents on this bus, write to the on-failure
//!   destination;
//! - writer: dynamodb:PutItem on this table;
//! - consumer: nothing beyond logging;
//! - all: CloudWatch Logs for their own log group only.
//!
//! The boundary is only ever set (CreateRole, PutRolePermissionsBoundary), never removed: the
//! documented operator policy denies iam:DeleteRolePermissionsBoundary, so a role keeps the
//! boundary it has when the operator runs without one (a warning says so).
//!
//! IAM returns policy documents URL-encoded: they are decoded, parsed and compared as
//! normalised JSON, so an unchanged policy is never rewritten.

use std::collections::BTreeMap;

use aws_sdk_iam::types::Tag;
use serde_json::{Value, json};

use super::context::{AwsEnv, Ctx};
use super::driver::{Applied, Diff, Resource, Writer};
use super::errors::{AwsResultExt, FoundExt, internal};
use super::names::{POLICY_NAME, ROLE_PATH};
use super::tags;
use super::{Component, EngineError, Verb};

/// What a function's role must allow, besides its own logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grants {
    Relay {
        stream_arn: String,
        bus_arn: String,
        failure_destination_arn: String,
    },
    Writer {
        table_arn: String,
    },
    Consumer,
}

/// The trust policy: Lambda may assume the role.
pub fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    })
}

/// The statement that lets a Lambda function write to an on-failure destination.
fn destination_statement(arn: &str) -> Value {
    if arn.contains(":s3:::") {
        json!({
            "Sid": "OnFailureDestination",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:ListBucket"],
            "Resource": [arn, format!("{arn}/*")]
        })
    } else if arn.contains(":sns:") {
        json!({"Sid": "OnFailureDestination", "Effect": "Allow", "Action": "sns:Publish", "Resource": arn})
    } else {
        json!({"Sid": "OnFailureDestination", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": arn})
    }
}

/// The inline policy of a function's role (pure).
pub fn inline_policy(env: &AwsEnv, function: &str, grants: &Grants) -> Value {
    let log_group = env.log_group_arn(function);
    let mut statements = vec![json!({
        "Sid": "OwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [log_group.clone(), format!("{log_group}:*")]
    })];
    match grants {
        Grants::Relay {
            stream_arn,
            bus_arn,
            failure_destination_arn,
        } => {
            statements.push(json!({
                "Sid": "ReadTableStream",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:ListStreams"
                ],
                "Resource": stream_arn
            }));
            statements.push(json!({
                "Sid": "PublishEvents",
                "Effect": "Allow",
                "Action": "events:PutEvents",
                "Resource": bus_arn
            }));
            statements.push(destination_statement(failure_destination_arn));
        }
        Grants::Writer { table_arn } => statements.push(json!({
            "Sid": "PutItems",
            "Effect": "Allow",
            "Action": "dynamodb:PutItem",
            "Resource": table_arn
        })),
        Grants::Consumer => {}
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

const LIST_KEYS: [&str; 7] = [
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Service",
    "AWS",
    "Federated",
];

/// Normalises a policy document for comparison: single values become one-element lists, lists
/// (actions, resources, statements) are sorted.
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, val) in map {
                let val = match (k.as_str(), val) {
                    ("Statement", Value::Object(_)) => Value::Array(vec![val.clone()]),
                    (key, Value::String(_)) if LIST_KEYS.contains(&key) => {
                        Value::Array(vec![val.clone()])
                    }
                    _ => val.clone(),
                };
                out.insert(k.clone(), normalize(&val));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(normalize).collect();
            items.sort_by_key(|i| i.to_string());
            Value::Array(items)
        }
        other => other.clone(),
    }
}

/// Parses a policy document as IAM returns it (URL-encoded JSON) or as JSON.
pub fn parse_document(raw: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(raw) {
        return Some(v);
    }
    let decoded = urlencoding::decode(raw).ok()?;
    serde_json::from_str(&decoded).ok()
}

/// True when the observed document (raw, possibly URL-encoded) means the same as `wanted`.
pub fn same_document(wanted: &Value, observed_raw: &str) -> bool {
    parse_document(observed_raw).is_some_and(|o| normalize(&o) == normalize(wanted))
}

#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub name: String,
    pub trust: Value,
    pub policy: Value,
    pub boundary: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub arn: String,
    pub trust_raw: Option<String>,
    pub policy_raw: Option<String>,
    pub boundary: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    Trust,
    /// Sets the configured boundary (never removes one).
    Boundary(String),
    Policy,
    Untag(Vec<String>),
    Tag(BTreeMap<String, String>),
    /// Delete the role, its inline policies first.
    Delete(Vec<String>),
}

/// One function's execution role.
#[derive(Clone, Debug)]
pub struct Role {
    pub desired: Desired,
    pub component: Component,
    /// `outbox-operator: execution role of <function> (<namespace>/<pipeline>)`.
    pub description: String,
    /// The detail of a delete action (why it goes).
    pub gone_because: &'static str,
}

pub fn diff(
    d: &Desired,
    o: Option<&Observed>,
    owner: &tags::Owner,
) -> Result<Vec<Change>, EngineError> {
    let Some(o) = o else {
        return Ok(vec![Change::Create, Change::Policy]);
    };
    owner.require_ours(&o.tags, &format!("iam role {}", d.name))?;
    let mut changes = Vec::new();
    if !o
        .trust_raw
        .as_deref()
        .is_some_and(|t| same_document(&d.trust, t))
    {
        changes.push(Change::Trust);
    }
    if let Some(b) = &d.boundary
        && o.boundary.as_ref() != Some(b)
    {
        changes.push(Change::Boundary(b.clone()));
    }
    if !o
        .policy_raw
        .as_deref()
        .is_some_and(|p| same_document(&d.policy, p))
    {
        changes.push(Change::Policy);
    }
    changes.extend(tags::changes(&d.tags, &o.tags, Change::Untag, Change::Tag));
    Ok(changes)
}

pub async fn observe(ctx: &Ctx<'_>, name: &str) -> Result<Option<Observed>, EngineError> {
    let resource = format!("iam role {name}");
    let iam = &ctx.clients.iam;
    let Some(out) = iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .found("GetRole", &resource)?
    else {
        return Ok(None);
    };
    let Some(role) = out.role() else {
        return Ok(None);
    };
    let tags = role
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    let policy_raw = iam
        .get_role_policy()
        .role_name(name)
        .policy_name(POLICY_NAME)
        .send()
        .await
        .found("GetRolePolicy", &resource)?
        .map(|p| p.policy_document().to_owned());
    Ok(Some(Observed {
        arn: role.arn().to_owned(),
        trust_raw: role.assume_role_policy_document().map(str::to_owned),
        policy_raw,
        boundary: role
            .permissions_boundary()
            .and_then(|b| b.permissions_boundary_arn())
            .map(str::to_owned),
        tags,
    }))
}

fn iam_tags(t: &BTreeMap<String, String>) -> Result<Vec<Tag>, EngineError> {
    tags::sdk_tags(t, "iam", |k, v| Tag::builder().key(k).value(v).build())
}

fn doc(v: &Value) -> Result<String, EngineError> {
    serde_json::to_string(v).map_err(|e| internal("serializing policy", e))
}

impl Resource for Role {
    type Observed = Option<Observed>;
    type Change = Change;

    fn component(&self) -> Component {
        self.component
    }

    fn resource(&self) -> String {
        format!("iam role {}", self.desired.name)
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Option<Observed>, EngineError> {
        let observed = observe(ctx, &self.desired.name).await?;
        if let Some(kept) = observed.as_ref().and_then(|o| o.boundary.as_deref())
            && self.desired.boundary.is_none()
        {
            tracing::warn!(
                role = %self.desired.name,
                boundary = %kept,
                "no permissions boundary configured: the role keeps its boundary (the operator never removes one)"
            );
        }
        Ok(observed)
    }

    fn diff(&self, o: &Option<Observed>, owner: &tags::Owner) -> Result<Diff<Change>, EngineError> {
        diff(&self.desired, o.as_ref(), owner).map(Diff::changes)
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        match change {
            Change::Create => (Verb::Create, format!("path {ROLE_PATH}")),
            Change::Trust => (Verb::Update, "trust policy".to_owned()),
            Change::Boundary(b) => (Verb::Update, format!("permissions boundary: -> {b}")),
            Change::Policy => (Verb::Update, format!("inline policy {POLICY_NAME}")),
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
            Change::Delete(_) => (Verb::Delete, self.gone_because.to_owned()),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        state: &mut Option<Observed>,
    ) -> Result<Applied, EngineError> {
        let iam = &w.clients().iam;
        let (d, resource) = (&self.desired, self.resource());
        match change {
            Change::Create => {
                let out = iam
                    .create_role()
                    .role_name(&d.name)
                    .path(ROLE_PATH)
                    .assume_role_policy_document(doc(&d.trust)?)
                    .description(&self.description)
                    .set_permissions_boundary(d.boundary.clone())
                    .set_tags(Some(iam_tags(&d.tags)?))
                    .send()
                    .await
                    .aws("CreateRole", &resource)?;
                *state = out.role().map(|r| Observed {
                    arn: r.arn().to_owned(),
                    trust_raw: None,
                    policy_raw: None,
                    boundary: d.boundary.clone(),
                    tags: d.tags.clone(),
                });
            }
            Change::Trust => {
                iam.update_assume_role_policy()
                    .role_name(&d.name)
                    .policy_document(doc(&d.trust)?)
                    .send()
                    .await
                    .aws("UpdateAssumeRolePolicy", &resource)?;
            }
            Change::Boundary(b) => {
                iam.put_role_permissions_boundary()
                    .role_name(&d.name)
                    .permissions_boundary(b)
                    .send()
                    .await
                    .aws("PutRolePermissionsBoundary", &resource)?;
            }
            Change::Policy => {
                iam.put_role_policy()
                    .role_name(&d.name)
                    .policy_name(POLICY_NAME)
                    .policy_document(doc(&d.policy)?)
                    .send()
                    .await
                    .aws("PutRolePolicy", &resource)?;
            }
            other => self.apply_tags_or_delete(iam, other).await?,
        }
        Ok(Applied::Done)
    }

    /// Deletes the role (inline policies first) when it is ours.
    async fn removal(
        &self,
        ctx: &Ctx<'_>,
        o: &Option<Observed>,
    ) -> Result<Diff<Change>, EngineError> {
        let resource = self.resource();
        if o.as_ref()
            .is_none_or(|o| ctx.owner.leaves_alone(&o.tags, &self.resource()))
        {
            return Ok(Diff::none());
        }
        let policies = ctx
            .clients
            .iam
            .list_role_policies()
            .role_name(&self.desired.name)
            .send()
            .await
            .aws("ListRolePolicies", &resource)?;
        Ok(Diff::changes(vec![Change::Delete(
            policies.policy_names().to_vec(),
        )]))
    }
}

impl Role {
    /// A role that is only removed (`why` is the delete action's detail).
    pub fn named(name: String, component: Component, why: &'static str) -> Role {
        Role {
            desired: Desired {
                name,
                trust: Value::Null,
                policy: Value::Null,
                boundary: None,
                tags: BTreeMap::new(),
            },
            component,
            description: String::new(),
            gone_because: why,
        }
    }

    async fn apply_tags_or_delete(
        &self,
        iam: &aws_sdk_iam::Client,
        change: &Change,
    ) -> Result<(), EngineError> {
        let (name, resource) = (&self.desired.name, self.resource());
        match change {
            Change::Untag(keys) => {
                iam.untag_role()
                    .role_name(name)
                    .set_tag_keys(Some(keys.clone()))
                    .send()
                    .await
                    .aws("UntagRole", &resource)?;
            }
            Change::Tag(t) => {
                iam.tag_role()
                    .role_name(name)
                    .set_tags(Some(iam_tags(t)?))
                    .send()
                    .await
                    .aws("TagRole", &resource)?;
            }
            Change::Delete(policies) => {
                for p in policies {
                    iam.delete_role_policy()
                        .role_name(name)
                        .policy_name(p)
                        .send()
                        .await
                        .found("DeleteRolePolicy", &resource)?;
                }
                iam.delete_role()
                    .role_name(name)
                    .send()
                    .await
                    .found("DeleteRole", &resource)?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
