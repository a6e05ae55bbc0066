//! The resource-based permission that lets EventBridge invoke a consumer's Lambda function:
//! principal events.amazonaws.com, SourceArn = the rule's ARN, under a StatementId the engine
//! owns (`outbox-<hash>-<consumer>`). On a user's function only this statement is added and, on
//! delete, removed; the rest of its policy is never touched.
//!
//! SQS targets: the queue policy is the user's; the statement the queue needs is reported in
//! `status.requiredActions` instead ([`sqs_required_action`]).

use serde_json::{Value, json};

use super::context::Ctx;
use super::errors::{aws_error, is_not_found};
use super::{Component, EngineError, Verb};

pub const PRINCIPAL: &str = "events.amazonaws.com";
pub const ACTION: &str = "lambda:InvokeFunction";

fn as_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

/// Pure: does the function policy hold our statement, granting exactly what we want?
/// Returns None when the statement is absent, Some(true) when it matches.
pub fn statement_matches(policy: &Value, sid: &str, rule_arn: &str) -> Option<bool> {
    let statements = match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => vec![],
    };
    let s = statements.iter().find(|s| s["Sid"] == sid)?;
    let principal_ok = as_list(&s["Principal"]["Service"]) == [PRINCIPAL]
        || s["Principal"].as_str() == Some(PRINCIPAL);
    let action_ok = as_list(&s["Action"]) == [ACTION];
    let source = &s["Condition"]["ArnLike"]["AWS:SourceArn"];
    let source_ok = as_list(source) == [rule_arn];
    Some(principal_ok && action_ok && source_ok && s["Effect"] == "Allow")
}

async fn get_policy(ctx: &Ctx<'_>, function: &str) -> Result<Option<Value>, EngineError> {
    let resource = format!("policy of lambda function {function}");
    match ctx
        .clients
        .lambda
        .get_policy()
        .function_name(function)
        .send()
        .await
    {
        Ok(out) => Ok(out.policy().and_then(|p| serde_json::from_str(p).ok())),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(aws_error(&e, "GetPolicy", &resource)),
    }
}

/// Observe → diff → apply for our statement on `function` (name or ARN).
pub async fn reconcile(
    ctx: &mut Ctx<'_>,
    consumer: &str,
    function: &str,
    rule_arn: &str,
) -> Result<(), EngineError> {
    let sid = ctx.names.statement_id(consumer);
    let resource = format!("permission {sid} on lambda function {function}");
    let policy = get_policy(ctx, function).await?;
    let state = policy
        .as_ref()
        .and_then(|p| statement_matches(p, &sid, rule_arn));
    if state == Some(true) {
        return Ok(());
    }
    let lambda = ctx.clients.lambda.clone();
    if ctx.apply {
        if state == Some(false) {
            remove(ctx, function, &sid).await?;
        }
        match lambda
            .add_permission()
            .function_name(function)
            .statement_id(&sid)
            .action(ACTION)
            .principal(PRINCIPAL)
            .source_arn(rule_arn)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) => return Err(aws_error(&e, "AddPermission", &resource)),
        }
    }
    let verb = if state.is_none() {
        Verb::Create
    } else {
        Verb::Update
    };
    ctx.record(
        Component::Consumers,
        verb,
        &resource,
        format!("{PRINCIPAL} may invoke from {rule_arn}"),
    );
    Ok(())
}

async fn remove(ctx: &Ctx<'_>, function: &str, sid: &str) -> Result<bool, EngineError> {
    let resource = format!("permission {sid} on lambda function {function}");
    match ctx
        .clients
        .lambda
        .remove_permission()
        .function_name(function)
        .statement_id(sid)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(aws_error(&e, "RemovePermission", &resource)),
    }
}

/// Removes only our statement from `function`.
pub async fn delete(ctx: &mut Ctx<'_>, consumer: &str, function: &str) -> Result<(), EngineError> {
    let sid = ctx.names.statement_id(consumer);
    if remove(ctx, function, &sid).await? {
        ctx.record(
            Component::Consumers,
            Verb::Delete,
            format!("permission {sid} on lambda function {function}"),
            "",
        );
    }
    Ok(())
}

/// What the user must allow on an SQS queue the engine does not own, as a policy statement.
pub fn sqs_required_action(queue_arn: &str, rule_arn: &str, what: &str) -> String {
    let statement = json!({
        "Effect": "Allow",
        "Principal": {"Service": PRINCIPAL},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}
    });
    format!("add to the queue policy of {queue_arn} ({what}): {statement}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_checks_our_statement_only() {
        let policy = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "users-own", "Effect": "Allow", "Principal": "*", "Action": "lambda:InvokeFunction"},
            {"Sid": "ours", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
             "Action": "lambda:InvokeFunction", "Resource": "arn:f",
             "Condition": {"ArnLike": {"AWS:SourceArn": "arn:rule"}}}
        ]});
        assert_eq!(statement_matches(&policy, "ours", "arn:rule"), Some(true));
        assert_eq!(statement_matches(&policy, "ours", "arn:other"), Some(false));
        assert_eq!(statement_matches(&policy, "missing", "arn:rule"), None);
    }

    #[test]
    fn sqs_statement_names_queue_and_rule() {
        let s = sqs_required_action("arn:q", "arn:r", "target");
        assert!(s.contains("arn:q") && s.contains("arn:r") && s.contains("sqs:SendMessage"));
    }
}
