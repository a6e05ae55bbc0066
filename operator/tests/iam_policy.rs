//! The documented IAM policies, checked without AWS: the operator's own policy
//! (docs/operator-iam-policy.json) cannot make the operator an administrator, and the boundary
//! it must put on every execution role (docs/outbox-role-boundary.json) covers every statement
//! the engine writes into those roles.
//!
//! The matcher below evaluates Action and Resource wildcards (`*`, `?`) only; conditions are
//! checked for presence and value, not evaluated against requests.

use std::path::PathBuf;

use outbox_operator::engine::context::AwsEnv;
use outbox_operator::engine::iam::{Grants, inline_policy};
use outbox_operator::engine::names::{Names, ROLE_PATH};
use outbox_operator::manifest::read_path;
use serde_json::Value;

const BOUNDARY_PLACEHOLDER: &str = "arn:aws:iam::ACCOUNT_ID:policy/outbox-role-boundary";

fn doc(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn statements(policy: &Value) -> Vec<Value> {
    match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// IAM wildcard match: `*` any run of characters, `?` one character (actions case-insensitive).
fn wildcard(pattern: &str, value: &str) -> bool {
    fn go(p: &[char], v: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('*', rest)) => (0..=v.len()).any(|i| go(rest, &v[i..])),
            Some(('?', rest)) => !v.is_empty() && go(rest, &v[1..]),
            Some((c, rest)) => v.first() == Some(c) && go(rest, &v[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    go(&p, &v)
}

fn action_matches(pattern: &str, action: &str) -> bool {
    wildcard(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

/// True when an Allow statement of `policy` without conditions grants `action` on `resource`.
fn allows(policy: &Value, action: &str, resource: &str) -> bool {
    statements(policy).iter().any(|s| {
        s["Effect"] == "Allow"
            && s.get("Condition").is_none()
            && list(&s["Action"]).iter().any(|a| action_matches(a, action))
            && list(&s["Resource"]).iter().any(|r| wildcard(r, resource))
    })
}

fn operator_policy() -> Value {
    doc("operator-iam-policy.json")
}

fn allow_statements_with(policy: &Value, action: &str) -> Vec<Value> {
    statements(policy)
        .into_iter()
        .filter(|s| s["Effect"] == "Allow")
        .filter(|s| list(&s["Action"]).iter().any(|a| action_matches(a, action)))
        .collect()
}

#[test]
fn role_writing_actions_require_the_permissions_boundary() {
    let p = operator_policy();
    for action in [
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:AttachRolePolicy",
        "iam:PutRolePermissionsBoundary",
    ] {
        for s in allow_statements_with(&p, action) {
            assert_eq!(
                s["Condition"]["StringEquals"]["iam:PermissionsBoundary"], BOUNDARY_PLACEHOLDER,
                "{action} allowed without the boundary condition: {s}"
            );
        }
    }
    // The engine's calls are allowed at all (only under that condition).
    for action in [
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:PutRolePermissionsBoundary",
    ] {
        assert!(!allow_statements_with(&p, action).is_empty(), "{action}");
    }
}

#[test]
fn the_boundary_can_be_neither_lifted_nor_edited() {
    let p = operator_policy();
    assert!(allow_statements_with(&p, "iam:DeleteRolePermissionsBoundary").is_empty());
    for action in [
        "iam:CreatePolicy",
        "iam:CreatePolicyVersion",
        "iam:DeletePolicyVersion",
        "iam:SetDefaultPolicyVersion",
        "iam:DeletePolicy",
        "iam:AttachRolePolicy",
        "iam:PutUserPolicy",
        "iam:CreateUser",
        "iam:CreateAccessKey",
    ] {
        assert!(
            allow_statements_with(&p, action).is_empty(),
            "the operator policy allows {action}"
        );
    }
    // Explicit denies hold even if another policy on the operator's role would allow.
    let denied = |action: &str, resource: &str| {
        statements(&p).iter().any(|s| {
            s["Effect"] == "Deny"
                && list(&s["Action"]).iter().any(|a| action_matches(a, action))
                && list(&s["Resource"]).iter().any(|r| wildcard(r, resource))
        })
    };
    assert!(denied(
        "iam:DeleteRolePermissionsBoundary",
        "arn:aws:iam::123456789012:role/outbox/r"
    ));
    for action in ["iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion"] {
        assert!(denied(action, BOUNDARY_PLACEHOLDER), "{action}");
    }
}

#[test]
fn no_wildcard_actions_and_pass_role_only_to_lambda_for_outbox_roles() {
    let p = operator_policy();
    for s in statements(&p) {
        for a in list(&s["Action"]) {
            assert!(!a.contains('*'), "wildcard action {a} in {s}");
        }
        assert!(s.get("NotAction").is_none() && s.get("NotResource").is_none());
    }
    let pass = allow_statements_with(&p, "iam:PassRole");
    assert!(!pass.is_empty());
    for s in pass {
        let prefix = format!("arn:aws:iam::*:role{ROLE_PATH}*");
        assert_eq!(list(&s["Resource"]), vec![prefix], "{s}");
        assert_eq!(
            s["Condition"]["StringEquals"]["iam:PassedToService"], "lambda.amazonaws.com",
            "{s}"
        );
    }
}

/// The engine removes only spec.tags keys it applied; the policy makes sure no untag call can strip
/// an ownership tag (which would turn an owned resource foreign, or another cluster's into one
/// this pipeline could claim).
#[test]
fn ownership_tags_can_never_be_removed() {
    let p = operator_policy();
    for action in [
        "dynamodb:UntagResource",
        "lambda:UntagResource",
        "events:UntagResource",
        "iam:UntagRole",
    ] {
        let deny = statements(&p)
            .into_iter()
            .find(|s| {
                s["Effect"] == "Deny"
                    && list(&s["Action"]).iter().any(|a| action_matches(a, action))
                    && list(&s["Resource"]).iter().any(|r| r == "*")
            })
            .unwrap_or_else(|| panic!("no Deny for {action}"));
        assert_eq!(
            list(&deny["Condition"]["ForAnyValue:StringLike"]["aws:TagKeys"]),
            vec!["outbox.dev/*".to_owned()],
            "{action}: {deny}"
        );
    }
}

#[test]
fn mutations_of_existing_resources_are_scoped_by_the_ownership_tag() {
    let p = operator_policy();
    for action in [
        "dynamodb:UpdateTable",
        "dynamodb:DeleteTable",
        "dynamodb:UpdateContinuousBackups",
        "lambda:UpdateFunctionCode",
        "lambda:UpdateFunctionConfiguration",
        "lambda:DeleteFunction",
        "events:DeleteEventBus",
        "events:DeleteRule",
        "events:PutTargets",
        "events:RemoveTargets",
        "iam:DeleteRole",
        "iam:UpdateAssumeRolePolicy",
        "dynamodb:UntagResource",
        "lambda:UntagResource",
        "events:UntagResource",
        "iam:UntagRole",
    ] {
        let found = allow_statements_with(&p, action);
        assert!(!found.is_empty(), "{action} is not allowed at all");
        for s in found {
            assert_eq!(
                s["Condition"]["StringEquals"]["aws:ResourceTag/outbox.dev/managed-by"],
                "outbox-operator",
                "{action}: {s}"
            );
        }
    }
    for action in [
        "dynamodb:CreateTable",
        "lambda:CreateFunction",
        "events:CreateEventBus",
    ] {
        for s in allow_statements_with(&p, action) {
            assert_eq!(
                s["Condition"]["StringEquals"]["aws:RequestTag/outbox.dev/managed-by"],
                "outbox-operator",
                "{action}: {s}"
            );
        }
    }
}

/// Every statement the engine writes into an execution role, for a sample pipeline, in every
/// role kind, is within the boundary.
#[test]
fn every_generated_role_statement_is_within_the_boundary() {
    let boundary = doc("outbox-role-boundary.json");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/user-created.yaml");
    let pipeline = read_path(&path.to_string_lossy())
        .expect("example parses")
        .into_iter()
        .next()
        .expect("one document")
        .pipeline;
    let names = Names::new("cluster-1", &pipeline);
    let env = AwsEnv::from_arn("arn:aws:dynamodb:eu-west-1:123456789012:table/x").expect("env");
    let table_arn = env.arn("dynamodb", &format!("table/{}", names.table));
    let bucket = names.bucket(&env.account, &env.region);
    let mut roles = Vec::new();
    for destination in [
        env.bucket_arn(&bucket),
        "arn:aws:sqs:eu-west-1:123456789012:failed".to_owned(),
        "arn:aws:sns:eu-west-1:123456789012:failed".to_owned(),
    ] {
        roles.push((
            names.relay_function.clone(),
            Grants::Relay {
                stream_arn: format!("{table_arn}/stream/2026-11-29T00:00:00.000"),
                bus_arn: env.bus_arn(&names.bus),
                failure_destination_arn: destination,
            },
        ));
    }
    roles.push((
        names.writer_function.clone(),
        Grants::Writer {
            table_arn: table_arn.clone(),
        },
    ));
    roles.push((names.consumer_function("audit"), Grants::Consumer));
    let mut checked = 0;
    for (function, grants) in &roles {
        let policy = inline_policy(&env, function, grants);
        for s in statements(&policy) {
            for a in list(&s["Action"]) {
                for r in list(&s["Resource"]) {
                    assert!(
                        allows(&boundary, &a, &r),
                        "boundary lacks {a} on {r} ({function})"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 20, "{checked}");
    // The boundary grants nothing administrative.
    for s in statements(&boundary) {
        for a in list(&s["Action"]) {
            assert!(
                !a.contains('*') && !a.starts_with("iam:") && !a.starts_with("lambda:"),
                "{a}"
            );
        }
    }
    assert!(!allows(&boundary, "dynamodb:DeleteTable", &table_arn));
}

#[test]
fn the_matcher_is_honest() {
    assert!(wildcard("arn:aws:s3:::outbox-*", "arn:aws:s3:::outbox-1/x"));
    assert!(!wildcard("arn:aws:s3:::outbox-*", "arn:aws:s3:::other"));
    assert!(wildcard("a?c", "abc") && !wildcard("a?c", "ac"));
    assert!(action_matches("S3:PutObject", "s3:putobject"));
}

/// Replay (issue 11) reads and moves parked batches only in outbox-owned failure buckets, and
/// publishes only onto buses tagged as the operator's.
#[test]
fn replay_reaches_only_owned_failure_buckets_and_buses() {
    let p = operator_policy();
    let parked = "arn:aws:s3:::outbox-0123abcd4567-failures/aws/lambda/0f0e/shardId-1/2026/11/29/x";
    let moved = "arn:aws:s3:::outbox-0123abcd4567-failures/replayed/aws/lambda/0f0e/shardId-1/x";
    for action in ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"] {
        assert!(allows(&p, action, parked), "{action} on {parked}");
        assert!(allows(&p, action, moved), "{action} on {moved}");
        for foreign in [
            "arn:aws:s3:::someone-elses-bucket/aws/lambda/x",
            "arn:aws:s3:::outbox-0123abcd4567-failures/other/x",
        ] {
            assert!(!allows(&p, action, foreign), "{action} on {foreign}");
        }
    }
    let put = allow_statements_with(&p, "events:PutEvents");
    assert!(!put.is_empty(), "events:PutEvents is not allowed at all");
    for s in put {
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:ResourceTag/outbox.dev/managed-by"],
            "outbox-operator",
            "{s}"
        );
        assert!(
            list(&s["Resource"])
                .iter()
                .all(|r| r.starts_with("arn:aws:events:") && r.contains(":event-bus/")),
            "{s}"
        );
    }
}

/// Replay of batches parked with metadata only: it reads the table's stream (GetShardIterator,
/// GetRecords on stream ARNs only, never on tables) and takes messages from SQS failure
/// destinations; it can send nothing to a queue.
#[test]
fn replay_reads_streams_and_takes_parked_messages_only() {
    let p = operator_policy();
    let stream = "arn:aws:dynamodb:eu-west-1:123456789012:table/outbox-a-users/stream/2026-11-29T05:00:00.000";
    for action in ["dynamodb:GetShardIterator", "dynamodb:GetRecords"] {
        assert!(allows(&p, action, stream), "{action} on {stream}");
        let table = "arn:aws:dynamodb:eu-west-1:123456789012:table/outbox-a-users";
        assert!(!allows(&p, action, table), "{action} on {table}");
    }
    for action in ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query"] {
        assert!(!allows(&p, action, stream), "{action} on {stream}");
    }
    let queue = "arn:aws:sqs:eu-west-1:123456789012:relay-failures";
    for action in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
    ] {
        assert!(allows(&p, action, queue), "{action} on {queue}");
    }
    for action in ["sqs:SendMessage", "sqs:PurgeQueue", "sqs:DeleteQueue"] {
        assert!(!allows(&p, action, queue), "{action} on {queue}");
    }
}
