//! `spec.monitoring` (alarms, log retention) and `status.dataPlane` (whether events flow).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The retention periods CloudWatch Logs accepts, in days.
pub const LOG_RETENTION_DAYS: [i32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Alarms on the pipeline's data plane and the retention of its functions' logs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MonitoringSpec {
    /// CloudWatch alarms for the pipeline (default true): relay iterator age, relay errors,
    /// failed deliveries per consumer rule, messages in SQS dead-letter queues. Switched off,
    /// the pipeline's alarms are deleted. Log groups are managed either way.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// The relay iterator-age alarm fires when the oldest record the relay read was older than
    /// this many seconds for 3 of 5 minutes (60..86400, default 300); `status.dataPlane` reports
    /// the pipeline Lagging above it.
    #[serde(default = "default_max_lag")]
    #[schemars(range(min = 60, max = 86400))]
    pub max_lag_seconds: i32,

    /// Retention of every function's log group `/aws/lambda/<function>` in days (default 30).
    /// Only the values CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365,
    /// 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653.
    #[serde(default = "default_retention")]
    #[schemars(extend("enum" = LOG_RETENTION_DAYS))]
    pub log_retention_days: i32,

    /// SNS topic ARNs every alarm notifies (ALARM state), at most 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 5),
        inner(
            length(max = 2048),
            regex(
                pattern = r"^arn:aws[a-zA-Z-]*:sns:[a-z0-9-]+:[0-9]{12}:[a-zA-Z0-9_-]{1,256}(\.fifo)?$"
            )
        )
    )]
    pub alarm_actions: Vec<String>,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        MonitoringSpec {
            enabled: true,
            max_lag_seconds: default_max_lag(),
            log_retention_days: default_retention(),
            alarm_actions: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_max_lag() -> i32 {
    300
}
fn default_retention() -> i32 {
    30
}

/// What the data plane did recently: read every reconcile (read calls only).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneStatus {
    /// When these figures were read (RFC 3339). They are read again every pass, but a reading
    /// that gives the same figures is not written: this is the time of the first reading that
    /// gave them (`outbox-operator status` reads them afresh).
    pub checked_at: String,
    /// The event source mapping's State (Enabled, Disabled, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_state: Option<String>,
    /// The mapping's LastProcessingResult (e.g. "OK", "PROBLEM: Function call failed").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_processing_result: Option<String>,
    /// The relay's IteratorAge, maximum over the last 5 minutes, in seconds (absent: no
    /// datapoint, no records read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterator_age_seconds: Option<i64>,
    /// The relay's Errors, sum over the last 15 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_errors: Option<i64>,
    /// The relay's Throttles, sum over the last 15 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_throttles: Option<i64>,
    /// FailedInvocations of each consumer's rule, sum over the last 15 minutes, by consumer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumer_failed_invocations: BTreeMap<String, i64>,
    /// Batches parked in the failure destination: the object count of the owned failure bucket
    /// ("≥1000" when there are more), or an SQS destination's ApproximateNumberOfMessages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_batches: Option<String>,
    /// When the newest parked batch was written (failure bucket only, RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_parked_at: Option<String>,
    /// Figures that could not be read, and why (e.g. the permission missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}
