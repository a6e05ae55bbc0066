//! The `OutboxPipeline` API (group `outbox.dev`, version `v1alpha1`).
//!
//! Every field's `///` doc becomes its description in the CRD (what `kubectl explain` shows).
//! Admission-time rules live here too: schema bounds (enums, ranges, patterns) and CEL rules
//! (`x-kubernetes-validations`) for cross-field checks and immutability. Every string and list a
//! CEL rule reads is bounded (`maxLength` / `maxItems`), or the API server rejects the rule as
//! too expensive.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
pub use outbox_contract::{ChangeType, Payload};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod account;
mod consumer;
mod events;
mod monitoring;
mod status;
pub use account::*;
pub use consumer::*;
pub use events::*;
pub use monitoring::*;
pub use status::*;

/// API group of the custom resources.
pub const GROUP: &str = "outbox.dev";
/// Annotation that pauses reconciliation of one pipeline when set to "true".
pub const PAUSED_ANNOTATION: &str = "outbox.dev/paused";
/// Finalizer the controller puts on every pipeline so AWS is cleaned before it goes.
pub const FINALIZER: &str = "outbox.dev/cleanup";

/// Desired state of a transactional outbox pipeline: a DynamoDB table with a stream, a relay
/// Lambda that turns stream changes into domain events on an EventBridge bus, and the rules that
/// route those events to consumers.
#[allow(clippy::duplicated_attributes)] // kube's printcolumn(...) repeats type_ by design
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "outbox.dev",
    version = "v1alpha1",
    kind = "OutboxPipeline",
    plural = "outboxpipelines",
    singular = "outboxpipeline",
    shortname = "obp",
    category = "outbox",
    namespaced,
    cel,
    status = "OutboxPipelineStatus",
    doc = "An OutboxPipeline: a DynamoDB table whose stream a relay Lambda turns, losslessly and in order per item, into domain events on an EventBridge bus, routed by rules to consumers.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Healthy")].reason"#
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.dataPlane.iteratorAgeSeconds"
    ),
    printcolumn(name = "Table", type_ = "string", json_path = ".status.tableName"),
    printcolumn(name = "Bus", type_ = "string", json_path = ".status.busName"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!self.writer.enabled || (self.table.partitionKey.type == 'S' && !has(self.table.sortKey))")
        .message("the bundled writer needs a string (S) partition key and no sort key in spec.table")
        .field_path(".writer.enabled"),
    validation = Rule::new("self.relay.events.all(e, !(e.change == 'REMOVE' && e.payload == 'newImage'))")
        .message("a REMOVE record has no new image; use payload oldImage (NEW_AND_OLD_IMAGES stream) or keys")
        .field_path(".relay.events"),
    validation = Rule::new("self.relay.events.all(e, !(e.change == 'INSERT' && e.payload == 'oldImage'))")
        .message("an INSERT record has no old image; use payload newImage or keys")
        .field_path(".relay.events"),
    validation = Rule::new("self.table.streamViewType != 'NEW_IMAGE' || self.relay.events.all(e, e.payload != 'oldImage')")
        .message("payload oldImage needs spec.table.streamViewType NEW_AND_OLD_IMAGES (a NEW_IMAGE stream carries no old image)")
        .field_path(".relay.events"),
    validation = Rule::new("self.table.streamViewType != 'KEYS_ONLY' || self.relay.events.all(e, e.payload == 'keys')")
        .message("a KEYS_ONLY stream carries only keys; every payload must be keys")
        .field_path(".relay.events"),
    validation = Rule::new("has(self.accountRef) == has(oldSelf.accountRef) && (!has(self.accountRef) || self.accountRef.name == oldSelf.accountRef.name)")
        .message("field is immutable: moving a pipeline's resources to another account is not a reconcile; create a new pipeline")
        .field_path(".accountRef"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboxPipelineSpec {
    /// The OutboxAccount (cluster-scoped) whose role the operator assumes to reconcile this
    /// pipeline, when its namespace is allowed there. Absent: the operator's own account.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_ref: Option<AccountRef>,

    /// AWS region of every resource of this pipeline (e.g. eu-west-1). When absent, the
    /// operator's AWS configuration decides (AWS_REGION, profile, instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$")
    )]
    pub region: Option<String>,

    /// The DynamoDB table the application writes to (the outbox), with its change stream.
    pub table: TableSpec,

    /// The EventBridge bus the relay publishes domain events to.
    #[serde(default)]
    pub bus: BusSpec,

    /// The relay Lambda: which stream changes become which events, and how the stream is read.
    pub relay: RelaySpec,

    /// The bundled example writer Lambda (creates users in the table).
    #[serde(default)]
    pub writer: WriterSpec,

    /// Consumers: one EventBridge rule each, routing matching events to a target.
    #[serde(default)]
    #[schemars(length(max = 50))]
    #[x_kube(
        validation = Rule::new("self.all(c, self.exists_one(d, d.name == c.name))")
            .message("consumer names must be unique")
    )]
    pub consumers: Vec<ConsumerSpec>,

    /// CloudWatch alarms and the retention of the functions' log groups.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// Tags applied to every AWS resource of this pipeline, besides the operator's ownership
    /// tags. Keys may not start with "aws:" or "outbox.dev/" (reserved).
    #[serde(default)]
    #[schemars(schema_with = "tags_schema")]
    pub tags: BTreeMap<String, String>,
}

fn tags_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 40,
        "additionalProperties": {"type": "string", "maxLength": 256},
        "x-kubernetes-validations": [{
            "rule": "self.all(k, size(k) <= 128 && !k.startsWith('aws:') && !k.startsWith('outbox.dev/'))",
            "message": "keys are at most 128 characters and may not start with 'aws:' or 'outbox.dev/' (reserved)"
        }]
    })
}

/// The DynamoDB table with its stream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)")
        .message("field is immutable: a pipeline cannot move to another table")
        .field_path(".name"),
    validation = Rule::new("has(self.sortKey) == has(oldSelf.sortKey) && (!has(self.sortKey) || self.sortKey == oldSelf.sortKey)")
        .message("field is immutable: a table's key schema cannot change")
        .field_path(".sortKey"),
    // On the table, not the field: a rule on an optional field does not run when the field is
    // added or removed. An absent view type is the default NEW_IMAGE (what the engine uses).
    validation = Rule::new("(has(self.streamViewType) ? self.streamViewType : 'NEW_IMAGE') == (has(oldSelf.streamViewType) ? oldSelf.streamViewType : 'NEW_IMAGE')")
        .message("field is immutable: changing it replaces the stream and loses changes")
        .field_path(".streamViewType"),
    validation = Rule::new("self.billingMode == 'PROVISIONED' ? has(self.provisionedThroughput) : !has(self.provisionedThroughput)")
        .message("required with billingMode PROVISIONED and not allowed with PAY_PER_REQUEST")
        .field_path(".provisionedThroughput")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TableSpec {
    /// Table name. When absent it is derived from the operator's cluster id and the pipeline's
    /// namespace and name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 255),
        regex(pattern = r"^[a-zA-Z0-9_.-]{3,255}$")
    )]
    pub name: Option<String>,

    /// The partition (hash) key attribute. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable: a table's key schema cannot change"))]
    pub partition_key: KeyAttribute,

    /// Optional sort (range) key attribute. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<KeyAttribute>,

    /// PAY_PER_REQUEST (on-demand, default) or PROVISIONED (then provisionedThroughput is required).
    #[serde(default)]
    pub billing_mode: BillingMode,

    /// Read and write capacity units; only with billingMode PROVISIONED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_throughput: Option<ProvisionedThroughput>,

    /// What the stream records carry: NEW_IMAGE (default), NEW_AND_OLD_IMAGES or KEYS_ONLY.
    /// Immutable: a new view type means a new stream, and changes written in between would be lost.
    #[serde(default)]
    pub stream_view_type: StreamViewType,

    /// Continuous backups with point-in-time recovery (default true).
    #[serde(default = "default_true")]
    pub point_in_time_recovery: bool,

    /// Protects the table against DeleteTable (default true). Must be false for
    /// deletionPolicy Delete to remove the table.
    #[serde(default = "default_true")]
    pub deletion_protection: bool,

    /// What happens to the table when the pipeline is deleted: Retain (default) keeps it and its
    /// data; Delete removes it.
    #[serde(default = "default_retain")]
    pub deletion_policy: DeletionPolicy,

    /// Adopt a pre-existing table of this name that the operator did not create: it is tagged
    /// and managed from then on. Also needs the operator flag --allow-adoption.
    #[serde(default)]
    pub adopt_existing: bool,
}

/// A key attribute of the table.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyAttribute {
    /// Attribute name.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// Attribute type: S (string), N (number) or B (binary).
    #[serde(rename = "type")]
    pub attribute_type: KeyType,
}

/// DynamoDB scalar key type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[schemars(extend("maxLength" = 1))]
pub enum KeyType {
    S,
    N,
    B,
}

/// DynamoDB billing mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[schemars(extend("maxLength" = 15))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingMode {
    #[default]
    PayPerRequest,
    Provisioned,
}

/// Provisioned capacity of the table.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisionedThroughput {
    /// Read capacity units (1..40000).
    #[schemars(range(min = 1, max = 40000))]
    pub read_capacity_units: i64,
    /// Write capacity units (1..40000).
    #[schemars(range(min = 1, max = 40000))]
    pub write_capacity_units: i64,
}

/// DynamoDB stream view type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[schemars(extend("maxLength" = 18))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamViewType {
    #[default]
    NewImage,
    NewAndOldImages,
    KeysOnly,
}

impl StreamViewType {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamViewType::NewImage => "NEW_IMAGE",
            StreamViewType::NewAndOldImages => "NEW_AND_OLD_IMAGES",
            StreamViewType::KeysOnly => "KEYS_ONLY",
        }
    }
}

/// What happens to an AWS resource when its pipeline is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[schemars(extend("maxLength" = 6))]
pub enum DeletionPolicy {
    Retain,
    Delete,
}

fn default_true() -> bool {
    true
}
fn default_retain() -> DeletionPolicy {
    DeletionPolicy::Retain
}
fn default_delete() -> DeletionPolicy {
    DeletionPolicy::Delete
}

/// The EventBridge bus.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!(has(self.name) && has(self.existingArn))")
        .message("name (a bus the pipeline owns) and existingArn (a bus it does not own) exclude each other")
        .field_path(".existingArn"),
    // On the bus, not the field: a rule on an optional field does not run when it is added or
    // removed. Switching between an owned and an existing bus moves the relay and the rules.
    validation = Rule::new("has(self.existingArn) == has(oldSelf.existingArn) && (!has(self.existingArn) || self.existingArn == oldSelf.existingArn)")
        .message("field is immutable: a pipeline cannot move to another bus")
        .field_path(".existingArn")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BusSpec {
    /// Bus name. When absent it is derived from the operator's cluster id and the pipeline's
    /// namespace and name. The account's "default" bus cannot be owned by a pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9._-]{1,256}$")
    )]
    #[x_kube(validation = Rule::new("self != 'default'").message("the account's default bus cannot be owned by a pipeline; choose another name"))]
    pub name: Option<String>,

    /// Publish to a bus the pipeline does not own: the account's default bus or a central bus,
    /// possibly in another account (e.g. arn:aws:events:eu-west-1:111122223333:event-bus/central).
    /// The operator never creates, tags, changes or deletes it; the relay may put events on
    /// exactly this ARN. Consumers need the bus in the pipeline's own account (rules live in the
    /// bus's account). A bus in another account must allow the relay's role in its resource
    /// policy (status.requiredActions says how). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 1600),
        regex(
            pattern = r"^arn:aws[a-zA-Z-]*:events:[a-z0-9-]+:[0-9]{12}:event-bus/[A-Za-z0-9._-]{1,256}$"
        )
    )]
    pub existing_arn: Option<String>,

    /// What happens to the bus when the pipeline is deleted: Delete (default) or Retain. A bus
    /// given by existingArn is never deleted.
    #[serde(default = "default_delete")]
    pub deletion_policy: DeletionPolicy,
}

impl Default for BusSpec {
    fn default() -> Self {
        BusSpec {
            name: None,
            existing_arn: None,
            deletion_policy: DeletionPolicy::Delete,
        }
    }
}

impl BusSpec {
    /// `(account, name)` of `existingArn`, when set and well-formed.
    pub fn existing(&self) -> Option<(&str, &str)> {
        let arn = self.existing_arn.as_deref()?;
        let account = arn.split(':').nth(4).filter(|a| !a.is_empty())?;
        let name = arn.rsplit_once(":event-bus/")?.1;
        (!name.is_empty()).then_some((account, name))
    }
}

/// The relay Lambda and its event source mapping on the table's stream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelaySpec {
    /// Which stream changes become which events, tried in order: a record becomes the event of
    /// the first entry whose change type and match conditions it meets. 1 to 20 entries; each
    /// change type at most once without match. Records no entry takes are skipped, and filtered
    /// out before they reach the relay where the event source mapping's filter can tell.
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(
        validation = Rule::new("self.all(e, has(e.match) || self.exists_one(f, !has(f.match) && f.change == e.change))")
            .message("each change type (INSERT, MODIFY, REMOVE) may be mapped at most once without match conditions (such an entry takes every record of its change type)")
    )]
    pub events: Vec<EventMappingSpec>,

    /// Records per relay invocation (1..10000, default 100).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: i32,

    /// Seconds to gather records before invoking the relay (0..300, default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 300))]
    pub maximum_batching_window_seconds: i32,

    /// Where a new mapping starts reading: TRIM_HORIZON (default: every change still in the
    /// stream) or LATEST (can miss changes made while the mapping is created).
    #[serde(default)]
    pub starting_position: StartingPosition,

    /// Retries of a failed batch before it goes to the on-failure destination (0..10000, default 10).
    #[serde(default = "default_max_retry_attempts")]
    #[schemars(range(min = 0, max = 10000))]
    pub maximum_retry_attempts: i32,

    /// Oldest record age in seconds the relay still processes (60..604800, default 86400).
    #[serde(default = "default_max_record_age")]
    #[schemars(range(min = 60, max = 604800))]
    pub maximum_record_age_seconds: i32,

    /// Split a failing batch in two to isolate a poison record (default true).
    #[serde(default = "default_true")]
    pub bisect_batch_on_function_error: bool,

    /// Concurrent batches per shard (1..10, default 1); order per item is kept.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 10))]
    pub parallelization_factor: i32,

    /// SQS queue, SNS topic or S3 bucket ARN that receives batches the relay could not publish
    /// after its retries. When absent the operator creates and owns an S3 bucket for them, so a
    /// record is kept rather than dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(
            pattern = r"^arn:aws[a-zA-Z-]*:(sqs:[a-z0-9-]+:[0-9]{12}:[a-zA-Z0-9_-]{1,80}(\.fifo)?|sns:[a-z0-9-]+:[0-9]{12}:[a-zA-Z0-9_-]{1,256}(\.fifo)?|s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])$"
        )
    )]
    pub on_failure_destination_arn: Option<String>,

    /// Upper bound of one PutEvents request in bytes (1024..1048576, default 262144). Raise it
    /// only where the account accepts 1 MB requests.
    #[serde(default = "default_request_size_limit")]
    #[schemars(range(min = 1024, max = 1048576))]
    pub request_size_limit_bytes: i32,

    /// Memory of the relay function in MB (128..10240, default 256).
    #[serde(default = "default_memory")]
    #[schemars(range(min = 128, max = 10240))]
    pub memory_mb: i32,

    /// Timeout of the relay function in seconds (3..900, default 60); retries of throttled
    /// events happen within it.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 3, max = 900))]
    pub timeout_seconds: i32,

    /// CPU architecture of the relay, writer and bundled consumers: x86_64 (default) or arm64.
    #[serde(default)]
    pub architecture: Architecture,
}

fn default_batch_size() -> i32 {
    100
}
fn default_max_retry_attempts() -> i32 {
    10
}
fn default_max_record_age() -> i32 {
    86_400
}
fn default_one() -> i32 {
    1
}
fn default_request_size_limit() -> i32 {
    262_144
}
fn default_memory() -> i32 {
    256
}
fn default_timeout() -> i32 {
    60
}

/// One stream change type (optionally narrowed by conditions on the record) and the event it
/// becomes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!has(self.fields) || self.payload != 'keys'")
        .message("fields needs payload newImage or oldImage (a keys payload carries only keys)")
        .field_path(".fields")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventMappingSpec {
    /// The stream change: INSERT, MODIFY or REMOVE.
    #[schemars(extend("maxLength" = 6))]
    pub change: ChangeType,
    /// The event's source (e.g. myapp.users). May not start with "aws.".
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9._/-]{1,256}$")
    )]
    #[x_kube(validation = Rule::new("!self.startsWith('aws.')").message("may not start with 'aws.' (reserved for AWS services)"))]
    pub source: String,
    /// The event's detail-type (e.g. UserCreated).
    #[schemars(length(min = 1, max = 128))]
    pub detail_type: String,
    /// Which part of the record becomes the event's item: newImage, oldImage or keys.
    #[schemars(extend("maxLength" = 8))]
    pub payload: Payload,
    /// Conditions on the record (key prefixes, attribute values); absent: every record of the
    /// change type.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<EventMatchSpec>,
    /// Which attributes the event's item carries (include or exclude; keys always); absent:
    /// the whole image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldsSpec>,
}

/// Where a new event source mapping starts reading the stream.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[schemars(extend("maxLength" = 12))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPosition {
    #[default]
    TrimHorizon,
    Latest,
}

/// Lambda CPU architecture.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[schemars(extend("maxLength" = 6))]
pub enum Architecture {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
}

impl Architecture {
    /// The folder name under the artifacts directory and the Lambda API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// The bundled example writer Lambda.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriterSpec {
    /// Deploy the bundled writer, which creates users (id, username, email) in the table. It
    /// needs a string partition key and no sort key.
    #[serde(default)]
    pub enabled: bool,
}

impl OutboxPipeline {
    /// The pipeline's namespace; a manifest without one is in "default", as kubectl does.
    pub fn namespace_or_default(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The pipeline's name ("" when the manifest has none; validation rejects that).
    pub fn name_or_empty(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}
