//! `spec.consumers`: one EventBridge rule each and its target, retry policy and dead-letter
//! queue.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One consumer: an EventBridge rule on the bus and its target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Consumer name, unique in the pipeline; part of the rule's and bundled function's names
    /// (lowercase letters, digits and '-', at most 32 characters).
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// The rule's event pattern, a JSON object in EventBridge pattern syntax, e.g.
    /// {"source": ["myapp.users"], "detail-type": ["UserCreated"]}.
    #[schemars(schema_with = "event_pattern_schema")]
    pub event_pattern: serde_json::Value,

    /// Where matching events go: the bundled consumer Lambda (default, when empty), an existing
    /// Lambda function, or an SQS queue.
    #[serde(default)]
    pub target: ConsumerTarget,

    /// How EventBridge retries delivery to the target.
    #[serde(default)]
    pub retry_policy: RetryPolicy,

    /// SQS queue ARN for events EventBridge could not deliver after its retries. Its queue policy
    /// must allow events.amazonaws.com to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(
            pattern = r"^arn:aws[a-zA-Z-]*:sqs:[a-z0-9-]+:[0-9]{12}:[a-zA-Z0-9_-]{1,80}(\.fifo)?$"
        )
    )]
    pub dead_letter_arn: Option<String>,
}

fn event_pattern_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        // An empty pattern is refused by EventBridge; catch it at admission. CEL cannot look
        // inside a preserve-unknown-fields object on the API server (its unknown fields are
        // not declared to CEL), so the pattern's grammar is checked by the engine.
        "minProperties": 1,
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "The rule's event pattern, a JSON object in EventBridge pattern syntax, e.g. {\"source\": [\"myapp.users\"], \"detail-type\": [\"UserCreated\"]}."
    })
}

/// A consumer's target. Empty means the bundled consumer Lambda.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(
    validation = Rule::new("!(has(self.lambdaFunctionArn) && has(self.sqsQueueArn))")
        .message("set at most one of lambdaFunctionArn and sqsQueueArn")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumerTarget {
    /// An existing Lambda function (the operator only adds and removes its own invoke permission
    /// statement on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(
            pattern = r"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[a-zA-Z0-9_-]{1,64}(:[a-zA-Z0-9$_-]{1,128})?$"
        )
    )]
    pub lambda_function_arn: Option<String>,

    /// An existing SQS queue. Its queue policy must allow events.amazonaws.com sqs:SendMessage
    /// with the rule as source; the operator does not edit it and says so in the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(
            pattern = r"^arn:aws[a-zA-Z-]*:sqs:[a-z0-9-]+:[0-9]{12}:[a-zA-Z0-9_-]{1,80}(\.fifo)?$"
        )
    )]
    pub sqs_queue_arn: Option<String>,
}

/// EventBridge's retry policy for a target.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delivery attempts after the first (0..185, default 185).
    #[serde(default = "default_target_retries")]
    #[schemars(range(min = 0, max = 185))]
    pub maximum_retry_attempts: i32,
    /// Give up on an event older than this many seconds (60..86400, default 86400).
    #[serde(default = "default_event_age")]
    #[schemars(range(min = 60, max = 86400))]
    pub maximum_event_age_seconds: i32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            maximum_retry_attempts: default_target_retries(),
            maximum_event_age_seconds: default_event_age(),
        }
    }
}

fn default_target_retries() -> i32 {
    185
}
fn default_event_age() -> i32 {
    86_400
}
