//! The resource-based permission that lets EventBridge invoke a consumer's Lambda function:
//! principal events.amazonaws.com, SourceArn = the rule's ARN, under a StatementId the engine
//! owns (`outbox-<hash>-<consumer>`). On a user's function only this statement is added and, on
//! delete, removed; the rest of its policy is never touched.
//!
//! SQS targets: the queue policy is the user's; the statement the queue needs is reported in
//! `status.requiredActions` instead ([`sqs_required_action`]).

use serde_json::{Value, json};

use super::context::Ctx;
use super::driver::{Applied, Diff, Resource, Writer};
use super::errors::{AwsResultExt, FoundExt};
use super::tags::Owner;
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

/// Our statement on a function (name or ARN): the bundled consumer function's or a user's.
#[derive(Clone, Debug)]
pub struct Permission {
    pub sid: String,
    pub function: String,
    /// The rule that may invoke (unused when the permission is only removed).
    pub rule_arn: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add the statement; `replace`: a statement of that id with other grants is removed first.
    Add {
        replace: bool,
    },
    Remove,
}

impl Resource for Permission {
    /// The function's resource policy (None: it has none, or the function is gone).
    type Observed = Option<Value>;
    type Change = Change;

    fn component(&self) -> Component {
        Component::Consumers
    }

    fn resource(&self) -> String {
        format!(
            "permission {} on lambda function {}",
            self.sid, self.function
        )
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Option<Value>, EngineError> {
        let resource = format!("policy of lambda function {}", self.function);
        let out = ctx
            .clients
            .lambda
            .get_policy()
            .function_name(&self.function)
            .send()
            .await
            .found("GetPolicy", &resource)?;
        Ok(out.and_then(|o| o.policy().and_then(|p| serde_json::from_str(p).ok())))
    }

    fn diff(&self, policy: &Option<Value>, _owner: &Owner) -> Result<Diff<Change>, EngineError> {
        let state = policy
            .as_ref()
            .and_then(|p| statement_matches(p, &self.sid, &self.rule_arn));
        Ok(match state {
            Some(true) => Diff::none(),
            Some(false) => Diff::changes(vec![Change::Add { replace: true }]),
            None => Diff::changes(vec![Change::Add { replace: false }]),
        })
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        match change {
            Change::Add { replace } => (
                if *replace { Verb::Update } else { Verb::Create },
                format!("{PRINCIPAL} may invoke from {}", self.rule_arn),
            ),
            Change::Remove => (Verb::Delete, String::new()),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        _policy: &mut Option<Value>,
    ) -> Result<Applied, EngineError> {
        let lambda = &w.clients().lambda;
        let resource = self.resource();
        if matches!(change, Change::Remove | Change::Add { replace: true }) {
            lambda
                .remove_permission()
                .function_name(&self.function)
                .statement_id(&self.sid)
                .send()
                .await
                .found("RemovePermission", &resource)?;
        }
        if let Change::Add { .. } = change {
            lambda
                .add_permission()
                .function_name(&self.function)
                .statement_id(&self.sid)
                .action(ACTION)
                .principal(PRINCIPAL)
                .source_arn(&self.rule_arn)
                .send()
                .await
                .aws("AddPermission", &resource)?;
        }
        Ok(Applied::Done)
    }

    /// Removes only our statement, when the function's policy has it.
    async fn removal(
        &self,
        _ctx: &Ctx<'_>,
        policy: &Option<Value>,
    ) -> Result<Diff<Change>, EngineError> {
        let has_ours = policy
            .as_ref()
            .is_some_and(|p| statement_matches(p, &self.sid, "").is_some());
        Ok(if has_ours {
            Diff::changes(vec![Change::Remove])
        } else {
            Diff::none()
        })
    }
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
