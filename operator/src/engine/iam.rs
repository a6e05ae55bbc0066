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
use super::errors::{AwsResultExt, aws_error, is_not_found, local};
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
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
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
    let out = match iam.get_role().role_name(name).send().await {
        Ok(o) => o,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(aws_error(&e, "GetRole", &resource)),
    };
    let Some(role) = out.role() else {
        return Ok(None);
    };
    let tags = role
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    let policy_raw = match iam
        .get_role_policy()
        .role_name(name)
        .policy_name(POLICY_NAME)
        .send()
        .await
    {
        Ok(p) => Some(p.policy_document().to_owned()),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(aws_error(&e, "GetRolePolicy", &resource)),
    };
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
    t.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| local("building iam tag", e))
        })
        .collect()
}

/// Observe → desired → diff → apply for one function's role; returns the role ARN (None only
/// in plan mode for a new role).
pub async fn reconcile(
    ctx: &mut Ctx<'_>,
    component: Component,
    function: &str,
    grants: &Grants,
) -> Result<Option<String>, EngineError> {
    let name = ctx.names.role(function);
    let resource = format!("iam role {name}");
    let d = Desired {
        name: name.clone(),
        trust: trust_policy(),
        policy: inline_policy(&ctx.env, function, grants),
        boundary: ctx.config.permissions_boundary_arn.clone(),
        tags: ctx.tags.clone(),
    };
    let observed = observe(ctx, &name).await?;
    let changes = diff(&d, observed.as_ref(), &ctx.owner)?;
    if let Some(kept) = observed.as_ref().and_then(|o| o.boundary.as_deref())
        && d.boundary.is_none()
    {
        tracing::warn!(
            role = %name,
            boundary = %kept,
            "no permissions boundary configured: the role keeps its boundary (the operator never removes one)"
        );
    }
    let mut arn = observed.map(|o| o.arn);
    let iam = ctx.clients.iam.clone();
    let doc = |v: &Value| serde_json::to_string(v).map_err(|e| local("serializing policy", e));
    for change in changes {
        let (verb, detail) = match &change {
            Change::Create => (Verb::Create, format!("path {ROLE_PATH}")),
            Change::Trust => (Verb::Update, "trust policy".to_owned()),
            Change::Boundary(b) => (Verb::Update, format!("permissions boundary: -> {b}")),
            Change::Policy => (Verb::Update, format!("inline policy {POLICY_NAME}")),
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
        };
        if ctx.apply {
            match &change {
                Change::Create => {
                    let out = iam
                        .create_role()
                        .role_name(&name)
                        .path(ROLE_PATH)
                        .assume_role_policy_document(doc(&d.trust)?)
                        .description(format!(
                            "outbox-operator: execution role of {function} ({})",
                            ctx.owner.pipeline
                        ))
                        .set_permissions_boundary(d.boundary.clone())
                        .set_tags(Some(iam_tags(&d.tags)?))
                        .send()
                        .await
                        .aws("CreateRole", &resource)?;
                    arn = out.role().map(|r| r.arn().to_owned());
                }
                Change::Trust => {
                    iam.update_assume_role_policy()
                        .role_name(&name)
                        .policy_document(doc(&d.trust)?)
                        .send()
                        .await
                        .aws("UpdateAssumeRolePolicy", &resource)?;
                }
                Change::Boundary(b) => {
                    iam.put_role_permissions_boundary()
                        .role_name(&name)
                        .permissions_boundary(b)
                        .send()
                        .await
                        .aws("PutRolePermissionsBoundary", &resource)?;
                }
                Change::Policy => {
                    iam.put_role_policy()
                        .role_name(&name)
                        .policy_name(POLICY_NAME)
                        .policy_document(doc(&d.policy)?)
                        .send()
                        .await
                        .aws("PutRolePolicy", &resource)?;
                }
                Change::Untag(keys) => {
                    iam.untag_role()
                        .role_name(&name)
                        .set_tag_keys(Some(keys.clone()))
                        .send()
                        .await
                        .aws("UntagRole", &resource)?;
                }
                Change::Tag(t) => {
                    iam.tag_role()
                        .role_name(&name)
                        .set_tags(Some(iam_tags(t)?))
                        .send()
                        .await
                        .aws("TagRole", &resource)?;
                }
            }
        }
        ctx.record(component, verb, &resource, detail);
    }
    Ok(arn)
}

/// Deletes a function's role (inline policies first) when it is ours.
pub async fn delete(
    ctx: &mut Ctx<'_>,
    component: Component,
    function: &str,
) -> Result<(), EngineError> {
    let name = ctx.names.role(function);
    let resource = format!("iam role {name}");
    let Some(o) = observe(ctx, &name).await? else {
        return Ok(());
    };
    if ctx.owner.leaves_alone(&o.tags, &resource) {
        return Ok(());
    }
    if !ctx.apply {
        ctx.record(component, Verb::Delete, &resource, "no longer in the spec");
        return Ok(());
    }
    let iam = ctx.clients.iam.clone();
    let policies = iam
        .list_role_policies()
        .role_name(&name)
        .send()
        .await
        .aws("ListRolePolicies", &resource)?;
    for p in policies.policy_names() {
        match iam
            .delete_role_policy()
            .role_name(&name)
            .policy_name(p)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(aws_error(&e, "DeleteRolePolicy", &resource)),
        }
    }
    match iam.delete_role().role_name(&name).send().await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(aws_error(&e, "DeleteRole", &resource)),
    }
    ctx.record(component, Verb::Delete, &resource, "");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tags::Owner;

    fn env() -> AwsEnv {
        AwsEnv::from_arn("arn:aws:dynamodb:eu-west-1:123456789012:table/t").unwrap()
    }

    fn relay() -> Grants {
        Grants::Relay {
            stream_arn: "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026".into(),
            bus_arn: "arn:aws:events:eu-west-1:123456789012:event-bus/b".into(),
            failure_destination_arn: "arn:aws:s3:::bucket".into(),
        }
    }

    fn actions_and_resources(policy: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for s in policy["Statement"].as_array().unwrap() {
            let n = normalize(s);
            for a in n["Action"].as_array().unwrap() {
                for r in n["Resource"].as_array().unwrap() {
                    out.push((
                        a.as_str().unwrap().to_owned(),
                        r.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn relay_policy_is_least_privilege() {
        let p = inline_policy(&env(), "fn-relay", &relay());
        let grants = actions_and_resources(&p);
        let stream = "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026";
        for a in [
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
        ] {
            assert!(grants.contains(&(a.into(), stream.into())), "{a}");
        }
        assert!(grants.contains(&(
            "events:PutEvents".into(),
            "arn:aws:events:eu-west-1:123456789012:event-bus/b".into()
        )));
        assert!(grants.contains(&("s3:PutObject".into(), "arn:aws:s3:::bucket/*".into())));
        assert!(grants.contains(&(
            "logs:PutLogEvents".into(),
            "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/fn-relay:*".into()
        )));
        // No wildcard resources, no wildcard actions.
        assert!(grants.iter().all(|(a, r)| r != "*" && !a.ends_with('*')));
    }

    #[test]
    fn writer_may_only_put_items_and_consumer_only_log() {
        let w = inline_policy(
            &env(),
            "fn-writer",
            &Grants::Writer {
                table_arn: "arn:t".into(),
            },
        );
        let g = actions_and_resources(&w);
        assert!(g.contains(&("dynamodb:PutItem".into(), "arn:t".into())));
        assert!(
            g.iter()
                .all(|(a, _)| a == "dynamodb:PutItem" || a.starts_with("logs:"))
        );
        let c = inline_policy(&env(), "fn-c", &Grants::Consumer);
        assert!(
            actions_and_resources(&c)
                .iter()
                .all(|(a, _)| a.starts_with("logs:"))
        );
    }

    #[test]
    fn url_encoded_policy_compares_equal() {
        let p = inline_policy(&env(), "fn-relay", &relay());
        let raw = serde_json::to_string(&p).unwrap();
        let encoded = urlencoding::encode(&raw).into_owned();
        assert!(encoded.starts_with("%7B"));
        assert!(same_document(&p, &encoded));
        assert!(same_document(&p, &raw));
        // Single strings vs lists and statement order do not matter.
        let reordered = json!({"Version": "2012-10-17", "Statement": {
            "Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": ["sts:AssumeRole"]}});
        assert!(same_document(&trust_policy(), &reordered.to_string()));
        // A real difference is seen.
        let other = inline_policy(&env(), "fn-other", &relay());
        assert!(!same_document(
            &p,
            &encoded.replace("fn-relay", "fn-other2")
        ));
        assert!(!same_document(&other, &encoded));
    }

    #[test]
    fn role_diff() {
        let owner = Owner {
            cluster_id: "c".into(),
            pipeline: "default/p".into(),
        };
        let d = Desired {
            name: "r".into(),
            trust: trust_policy(),
            policy: inline_policy(&env(), "f", &Grants::Consumer),
            boundary: None,
            tags: owner.desired_tags(&BTreeMap::new()),
        };
        assert_eq!(
            diff(&d, None, &owner).unwrap(),
            vec![Change::Create, Change::Policy]
        );
        let mut o = Observed {
            arn: "arn".into(),
            trust_raw: Some(urlencoding::encode(&d.trust.to_string()).into_owned()),
            policy_raw: Some(urlencoding::encode(&d.policy.to_string()).into_owned()),
            boundary: None,
            tags: d.tags.clone(),
        };
        assert!(diff(&d, Some(&o), &owner).unwrap().is_empty());
        o.policy_raw = None;
        o.boundary = Some("arn:b".into());
        // A boundary the configuration does not name is kept, never removed.
        assert_eq!(diff(&d, Some(&o), &owner).unwrap(), vec![Change::Policy]);
        // A different configured boundary replaces it.
        let mut d2 = d.clone();
        d2.boundary = Some("arn:b2".into());
        assert_eq!(
            diff(&d2, Some(&o), &owner).unwrap(),
            vec![Change::Boundary("arn:b2".into()), Change::Policy]
        );
        o.boundary = Some("arn:b2".into());
        assert_eq!(diff(&d2, Some(&o), &owner).unwrap(), vec![Change::Policy]);
        o.tags.clear();
        assert_eq!(
            diff(&d, Some(&o), &owner).unwrap_err().reason(),
            crate::crd::Reason::Conflict
        );
    }
}
