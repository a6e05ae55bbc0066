//! The `OutboxPipeline` status: conditions (standard shape), their types and reasons, and the
//! ARNs of what the pipeline made. Written by the engine, patched by the controller.

use std::collections::BTreeMap;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of the pipeline.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutboxPipelineStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, TableReady, RelayReady, BusReady, ConsumersReady and Healthy.
    #[serde(default)]
    #[schemars(
        with = "Vec<ConditionSchema>",
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// Name of the DynamoDB table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    /// ARN of the DynamoDB table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_arn: Option<String>,
    /// ARN of the table's current stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
    /// ARN of the relay function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_function_arn: Option<String>,
    /// ARN of the writer function, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_function_arn: Option<String>,
    /// ARNs of the bundled consumer functions, by consumer name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumer_function_arns: BTreeMap<String, String>,
    /// UUID of the event source mapping (stream to relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source_mapping_uuid: Option<String>,
    /// Name of the EventBridge bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_name: Option<String>,
    /// ARN of the EventBridge bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_arn: Option<String>,
    /// ARNs of the rules, by consumer name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rule_arns: BTreeMap<String, String>,
    /// Where batches the relay could not publish end up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_destination_arn: Option<String>,
    /// What the user must do outside the operator's reach (e.g. an SQS queue policy to allow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_actions: Vec<String>,
    /// Whether events flow: the mapping's state, the relay's and rules' recent metrics and the
    /// parked batches, read at `checkedAt` (the Healthy condition is the verdict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<super::DataPlaneStatus>,
    /// The last replay of parked batches, asked for with the annotation `outbox.dev/replay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStatus>,
}

/// Annotation that asks the controller to replay the pipeline's parked batches once per value
/// (a token: any new value runs it again), e.g. `outbox.dev/replay: "2026-11-29-1"`.
pub const REPLAY_ANNOTATION: &str = "outbox.dev/replay";

/// A replay of parked batches run by the controller (the same as `outbox-operator replay`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStatus {
    /// The value of the annotation `outbox.dev/replay` this replay ran for.
    pub token: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339); absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Batches republished in full and moved under `replayed/` in the failure bucket.
    #[serde(default)]
    pub batches_replayed: i64,
    /// Events published by this replay.
    #[serde(default)]
    pub events_published: i64,
    /// Parked batches left after it (a batch that failed part-way and every later one).
    #[serde(default)]
    pub batches_left: i64,
    /// Running, Succeeded (nothing left parked), Partial (batches left parked) or Failed.
    pub outcome: String,
    /// What happened, e.g. why a batch was left parked.
    #[serde(default)]
    pub message: String,
}

// The schema of one condition in `status.conditions`: the shape of k8s-openapi's `Condition`
// (the type the code uses), with descriptions that name this CRD's condition types and reasons
// instead of the generic upstream ones. Only the CRD schema is derived from it.
/// A condition in the standard Kubernetes shape.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
struct ConditionSchema {
    /// Ready, TableReady, RelayReady, BusReady, ConsumersReady or Healthy.
    #[serde(rename = "type")]
    type_: String,
    /// "True", "False" or "Unknown".
    status: String,
    /// One of Reconciled, Progressing, InvalidSpec, Conflict, AccessDenied, AwsError, InternalError (a defect in the operator, not in the spec), Deleting, Paused; for Healthy one of Flowing, Idle, Lagging, RelayFailing, BatchesParked, ConsumerFailing, MappingDisabled, Unknown.
    reason: String,
    /// Human-readable detail.
    #[serde(default)]
    message: String,
    /// When the status last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    last_transition_time: String,
    /// The spec generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
}

/// The current time as a condition's `lastTransitionTime` takes it: RFC 3339, whole seconds, UTC.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `now` (RFC 3339) as a [`Time`]; the current time if `now` does not parse (callers pass
/// [`now()`] or a literal, so that is a defect, not input).
fn parse_time(now: &str) -> Time {
    now.parse()
        .map(Time)
        .unwrap_or_else(|_| Time(k8s_openapi::jiff::Timestamp::now()))
}

/// Condition types, one per component plus the overall Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionType {
    Ready,
    TableReady,
    RelayReady,
    BusReady,
    ConsumersReady,
    /// Whether events flow (data plane), apart from Ready (provisioned and in sync).
    Healthy,
}

impl ConditionType {
    pub const COMPONENTS: [ConditionType; 4] = [
        ConditionType::TableReady,
        ConditionType::RelayReady,
        ConditionType::BusReady,
        ConditionType::ConsumersReady,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::TableReady => "TableReady",
            ConditionType::RelayReady => "RelayReady",
            ConditionType::BusReady => "BusReady",
            ConditionType::ConsumersReady => "ConsumersReady",
            ConditionType::Healthy => "Healthy",
        }
    }
}

/// The one fixed set of reasons, used in conditions, CLI output, Events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reason {
    Reconciled,
    Progressing,
    InvalidSpec,
    Conflict,
    AccessDenied,
    AwsError,
    /// A defect in the operator itself (a bug), not in the spec: the user cannot fix it by
    /// editing the pipeline; the log has it at error level.
    InternalError,
    Deleting,
    Paused,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Reconciled,
        Reason::Progressing,
        Reason::InvalidSpec,
        Reason::Conflict,
        Reason::AccessDenied,
        Reason::AwsError,
        Reason::InternalError,
        Reason::Deleting,
        Reason::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reconciled => "Reconciled",
            Reason::Progressing => "Progressing",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::Conflict => "Conflict",
            Reason::AccessDenied => "AccessDenied",
            Reason::AwsError => "AwsError",
            Reason::InternalError => "InternalError",
            Reason::Deleting => "Deleting",
            Reason::Paused => "Paused",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reasons of the Healthy condition: the verdict on whether events flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HealthReason {
    /// Records were read recently, nothing fails.
    Flowing,
    /// No records read recently, nothing fails.
    Idle,
    /// The relay's iterator age is above `spec.monitoring.maxLagSeconds`.
    Lagging,
    /// The relay failed invocations, or the mapping reports a problem.
    RelayFailing,
    /// Batches the relay could not publish wait in the failure destination.
    BatchesParked,
    /// A consumer rule failed to deliver events.
    ConsumerFailing,
    /// The event source mapping is disabled (or missing): nothing is read from the stream.
    MappingDisabled,
    /// The figures could not be read (e.g. a permission is missing).
    Unknown,
}

impl HealthReason {
    pub const ALL: [HealthReason; 8] = [
        HealthReason::Flowing,
        HealthReason::Idle,
        HealthReason::Lagging,
        HealthReason::RelayFailing,
        HealthReason::BatchesParked,
        HealthReason::ConsumerFailing,
        HealthReason::MappingDisabled,
        HealthReason::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HealthReason::Flowing => "Flowing",
            HealthReason::Idle => "Idle",
            HealthReason::Lagging => "Lagging",
            HealthReason::RelayFailing => "RelayFailing",
            HealthReason::BatchesParked => "BatchesParked",
            HealthReason::ConsumerFailing => "ConsumerFailing",
            HealthReason::MappingDisabled => "MappingDisabled",
            HealthReason::Unknown => "Unknown",
        }
    }

    pub fn parse(s: &str) -> Option<HealthReason> {
        HealthReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The condition status: "True" (Flowing, Idle), "Unknown", or "False".
    pub fn status(self) -> &'static str {
        match self {
            HealthReason::Flowing | HealthReason::Idle => "True",
            HealthReason::Unknown => "Unknown",
            _ => "False",
        }
    }
}

impl std::fmt::Display for HealthReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl OutboxPipelineStatus {
    /// The condition of the given type, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_.as_str())
    }

    /// True when the Ready condition is "True".
    pub fn is_ready(&self) -> bool {
        self.condition(ConditionType::Ready)
            .is_some_and(|c| c.status == "True")
    }

    /// Sets a condition, keeping lastTransitionTime when the status did not change; `now` is
    /// RFC 3339 text such as [`now()`] returns.
    pub fn set_condition(
        &mut self,
        type_: ConditionType,
        ok: bool,
        reason: Reason,
        message: impl Into<String>,
        generation: Option<i64>,
        now: &str,
    ) {
        let status = if ok { "True" } else { "False" };
        self.put_condition(type_, status, reason.as_str(), message, generation, now);
    }

    /// Sets a condition with any status ("True", "False", "Unknown") and reason text, keeping
    /// lastTransitionTime when the status did not change.
    pub fn put_condition(
        &mut self,
        type_: ConditionType,
        status: &str,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
        now: &str,
    ) {
        let message = message.into();
        match self
            .conditions
            .iter_mut()
            .find(|c| c.type_ == type_.as_str())
        {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = parse_time(now);
                }
                c.status = status.to_owned();
                c.reason = reason.to_owned();
                c.message = message;
                c.observed_generation = generation;
            }
            None => self.conditions.push(Condition {
                type_: type_.as_str().to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                last_transition_time: parse_time(now),
                observed_generation: generation,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: &OutboxPipelineStatus) -> (String, String, String) {
        let c = status.condition(ConditionType::Ready).cloned();
        let c = c.unwrap_or_else(|| panic!("no Ready in {status:?}"));
        let time = serde_json::to_value(&c.last_transition_time).unwrap_or_default();
        (
            c.status,
            c.reason,
            time.as_str().unwrap_or_default().to_owned(),
        )
    }

    #[test]
    fn set_condition_moves_the_transition_time_only_when_the_status_changes() {
        let mut status = OutboxPipelineStatus::default();
        let t0 = "2026-01-01T00:00:00Z";
        status.set_condition(
            ConditionType::Ready,
            false,
            Reason::Progressing,
            "a",
            Some(1),
            t0,
        );
        status.set_condition(
            ConditionType::Ready,
            false,
            Reason::AwsError,
            "b",
            Some(2),
            "2026-01-01T00:01:00Z",
        );
        assert_eq!(
            ready(&status),
            ("False".into(), "AwsError".into(), t0.into())
        );
        let t2 = "2026-01-01T00:02:00Z";
        status.set_condition(
            ConditionType::Ready,
            true,
            Reason::Reconciled,
            "c",
            Some(2),
            t2,
        );
        assert_eq!(
            ready(&status),
            ("True".into(), "Reconciled".into(), t2.into())
        );
        assert_eq!(status.conditions.len(), 1);
        assert!(status.is_ready());
    }

    #[test]
    fn now_is_what_a_condition_time_reads_and_writes_unchanged() {
        let now = now();
        let mut status = OutboxPipelineStatus::default();
        status.set_condition(
            ConditionType::Ready,
            true,
            Reason::Reconciled,
            "",
            None,
            &now,
        );
        assert_eq!(ready(&status).2, now);
    }
}
