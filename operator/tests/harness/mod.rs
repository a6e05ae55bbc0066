//! The engine's wire-test harness against moto: an engine whose calls are recorded, the test's own
//! clients, convergence and steady-state checks, the check that docs/operator-iam-policy.json
//! allows every call the engine made, and readers of what AWS holds.
#![allow(dead_code)] // each test binary uses its own subset

pub mod check;
pub mod tags;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use outbox_operator::crd::OutboxPipeline;
use outbox_operator::engine::{AwsClients, CallInfo, Engine, EngineConfig, Outcome, Verb};

use crate::common::{emulator_sdk, engine_config, record_calls};

pub struct Harness {
    pub engine: Engine,
    pub clients: AwsClients,
    pub calls: Arc<Mutex<Vec<CallInfo>>>,
    /// Every call of the harness's life (for the IAM policy check).
    pub all_calls: Arc<Mutex<Vec<CallInfo>>>,
}

impl Harness {
    pub async fn new(endpoint: &str, cluster_id: &str, allow_adoption: bool) -> Harness {
        let sdk = emulator_sdk(endpoint).await;
        let calls: Arc<Mutex<Vec<CallInfo>>> = Arc::default();
        let all_calls: Arc<Mutex<Vec<CallInfo>>> = Arc::default();
        let sink = calls.clone();
        let all_sink = all_calls.clone();
        let engine = Engine::new(
            &sdk,
            EngineConfig {
                allow_adoption,
                ..engine_config(cluster_id)
            },
        )
        .with_call_observer(record_calls(vec![sink, all_sink]));
        // The test's own clients, without the observer: only the engine's calls are counted.
        let clients = AwsClients::from_conf(&sdk);
        Harness {
            engine,
            clients,
            calls,
            all_calls,
        }
    }

    /// docs/operator-iam-policy.json allows every operation the engine called: each called action
    /// is in an Allow statement whose Resource patterns match the ARN the engine addresses with
    /// that operation (`call_resources`). Conditions (boundary, ownership tags, PassedToService,
    /// lambda:Principal) are NOT evaluated: moto does not enforce IAM, and the call observer does
    /// not see request parameters; tests/iam_policy.rs checks the conditions' presence instead.
    pub fn assert_policy_covers_calls(&self) {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-iam-policy.json");
        let policy: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let allow: Vec<&serde_json::Value> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Effect"] == "Allow")
            .collect();
        for call in self.all_calls.lock().unwrap().iter() {
            let prefix = match call.service.to_ascii_lowercase().as_str() {
                "eventbridge" => "events".to_owned(),
                "cloudwatch logs" => "logs".to_owned(),
                "dynamodb streams" => "dynamodb".to_owned(),
                other => other.to_owned(),
            };
            let op = match call.operation.as_str() {
                "ListObjectsV2" => "ListBucket",
                op => op,
            };
            let action = format!("{prefix}:{op}");
            for arn in call_resources(&prefix, op) {
                assert!(
                    allow
                        .iter()
                        .any(|s| policy_list(&s["Action"]).contains(&action)
                            && policy_list(&s["Resource"])
                                .iter()
                                .any(|r| arn_like(r, &arn))),
                    "docs/operator-iam-policy.json lacks {action} on {arn}"
                );
            }
        }
    }

    pub fn take_calls(&self) -> Vec<CallInfo> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// Reconciles until Ready (moto settles at once, so a few passes at most).
    pub async fn converge(&self, p: &OutboxPipeline) -> Outcome {
        let mut last = None;
        for _ in 0..5 {
            let out = self.engine.reconcile(p).await;
            if let Some(e) = &out.error {
                panic!("reconcile failed: {e}\nstatus: {:#?}", out.status);
            }
            if out.status.is_ready() {
                return out;
            }
            last = Some(out);
        }
        panic!("not Ready after 5 passes: {:#?}", last.map(|o| o.status));
    }

    /// One more pass must change nothing.
    pub async fn assert_steady(&self, p: &OutboxPipeline) {
        self.take_calls();
        let reads = self.engine.artifact_reads();
        let out = self.engine.reconcile(p).await;
        assert_eq!(
            self.engine.artifact_reads(),
            reads,
            "a steady-state pass read a Lambda zip from disk"
        );
        assert!(out.error.is_none(), "{:?}", out.error);
        assert!(out.status.is_ready(), "{:#?}", out.status);
        assert!(
            out.actions.is_empty(),
            "unexpected actions: {:#?}",
            out.actions
        );
        let calls = self.take_calls();
        assert!(
            calls
                .iter()
                .any(|c| c.operation == "DescribeTable" && !c.mutating),
            "the call observer saw the pass: {calls:?}"
        );
        let mutating: Vec<String> = calls
            .into_iter()
            .filter(|c| c.mutating)
            .map(|c| c.operation)
            .collect();
        assert!(
            mutating.is_empty(),
            "steady-state pass made mutating calls: {mutating:?}"
        );
    }
}

pub fn policy_list(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(a) => vec![a.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// IAM's ArnLike/Resource wildcard match (`*` any run, `?` one character).
pub fn arn_like(pattern: &str, arn: &str) -> bool {
    pub fn go(p: &[u8], v: &[u8]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some((b'*', rest)) => (0..=v.len()).any(|i| go(rest, &v[i..])),
            Some((b'?', rest)) => !v.is_empty() && go(rest, &v[1..]),
            Some((c, rest)) => v.first() == Some(c) && go(rest, &v[1..]),
        }
    }
    go(pattern.as_bytes(), arn.as_bytes())
}

/// The ARNs (shapes) the engine addresses with an operation: an operation used on two kinds of
/// resource (tags on buses and rules, invoke permissions on our and users' functions) lists
/// both. An operation missing here fails the test, so a new call cannot go unchecked.
pub fn call_resources(service: &str, op: &str) -> Vec<String> {
    let (acct, region) = ("123456789012", "us-east-1");
    let function = |f: &str| format!("arn:aws:lambda:{region}:{acct}:function:{f}");
    let bus = format!("arn:aws:events:{region}:{acct}:event-bus/user-bus");
    let rule = format!("arn:aws:events:{region}:{acct}:rule/user-bus/outbox-0123abcd-audit");
    match (service, op) {
        // Replay reads a batch parked with metadata only back from the table's stream.
        ("dynamodb", "GetShardIterator" | "GetRecords") => vec![format!(
            "arn:aws:dynamodb:{region}:{acct}:table/user-table/stream/2026-11-29T05:00:00.000"
        )],
        ("dynamodb", _) => vec![format!("arn:aws:dynamodb:{region}:{acct}:table/user-table")],
        // Pre-flight reads the configured boundary policy.
        ("iam", "GetPolicy") => vec![format!("arn:aws:iam::{acct}:policy/outbox-role-boundary")],
        ("iam", _) => vec![format!(
            "arn:aws:iam::{acct}:role/outbox/outbox-0123abcd-relay"
        )],
        // Pre-flight looks up the queues a spec names (targets, dead-letter queues).
        ("sqs", "GetQueueUrl") => vec![format!("arn:aws:sqs:{region}:{acct}:users-queue")],
        // Health reads the depth of an SQS failure destination.
        ("sqs", "GetQueueAttributes") => vec![format!("arn:aws:sqs:{region}:{acct}:users-queue")],
        // Replay takes the batches parked in an SQS failure destination (a user's queue).
        ("sqs", "ReceiveMessage" | "DeleteMessage" | "ChangeMessageVisibility") => {
            vec![format!("arn:aws:sqs:{region}:{acct}:users-failures")]
        }
        ("logs", _) => vec![format!(
            "arn:aws:logs:{region}:{acct}:log-group:/aws/lambda/outbox-0123abcd-relay"
        )],
        // Neither takes a resource ARN (IAM: "*").
        ("cloudwatch", "DescribeAlarms" | "GetMetricData") => vec!["*".to_owned()],
        ("cloudwatch", _) => vec![format!(
            "arn:aws:cloudwatch:{region}:{acct}:alarm:outbox-0123abcd-default-p-relay-errors"
        )],
        // Replay reads and moves parked batches (objects), and records what it published.
        ("s3", "GetObject" | "PutObject" | "DeleteObject") => vec![
            "arn:aws:s3:::outbox-0123abcd4567-failures/aws/lambda/0f0e/shardId-1/2026/11/29/x"
                .to_owned(),
            "arn:aws:s3:::outbox-0123abcd4567-failures/replayed/aws/lambda/0f0e/shardId-1/x"
                .to_owned(),
        ],
        ("s3", _) => vec!["arn:aws:s3:::outbox-0123abcd4567-failures".to_owned()],
        ("lambda", "ListEventSourceMappings") => vec!["*".to_owned()],
        ("lambda", op) if op.ends_with("EventSourceMapping") => vec![format!(
            "arn:aws:lambda:{region}:{acct}:event-source-mapping:0f0e0d0c-0000-4000-8000-000000000000"
        )],
        ("lambda", "GetPolicy" | "AddPermission" | "RemovePermission") => {
            vec![
                function("outbox-0123abcd-audit"),
                function("users-own-function"),
            ]
        }
        // Pre-flight reads a user's target function (existence, the opt-in tag).
        ("lambda", "GetFunction" | "ListTags") => vec![
            function("outbox-0123abcd-relay"),
            function("users-own-function"),
        ],
        ("lambda", _) => vec![function("outbox-0123abcd-relay")],
        ("events", "ListRules") => vec!["*".to_owned()],
        // Pre-flight learns the account from the region's default bus.
        ("events", "DescribeEventBus") => {
            vec![
                bus,
                format!("arn:aws:events:{region}:{acct}:event-bus/default"),
            ]
        }
        // Replay publishes recovered events onto the pipeline's bus.
        ("events", "CreateEventBus" | "DeleteEventBus" | "PutEvents") => vec![bus],
        ("events", "TagResource" | "UntagResource" | "ListTagsForResource") => vec![bus, rule],
        ("events", _) => vec![rule],
        _ => panic!("call_resources: add the resource {service}:{op} is called on"),
    }
}

/// An example pipeline with names made unique to the test.
pub fn example(file: &str, id: &str) -> OutboxPipeline {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let docs =
        outbox_operator::manifest::read_path(&path.to_string_lossy()).expect("example parses");
    let mut p = docs.into_iter().next().expect("one document").pipeline;
    p.metadata.name = Some(format!("{}-{id}", p.metadata.name.unwrap_or_default()));
    p.spec.bus.name = Some(format!(
        "{}-{id}",
        p.spec.bus.name.clone().unwrap_or_default()
    ));
    p.metadata.generation = Some(1);
    p
}

pub fn tags_of_table(m: &[aws_sdk_dynamodb::types::Tag]) -> BTreeMap<String, String> {
    m.iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

pub fn has_action(out: &Outcome, verb: Verb, resource_part: &str) -> bool {
    out.actions
        .iter()
        .any(|a| a.verb == verb && a.resource.contains(resource_part))
}

pub async fn table_exists(h: &Harness, name: &str) -> bool {
    h.clients
        .dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .is_ok()
}

pub async fn function_exists(h: &Harness, name: &str) -> bool {
    h.clients
        .lambda
        .get_function()
        .function_name(name)
        .send()
        .await
        .is_ok()
}

pub async fn bus_exists(h: &Harness, name: &str) -> bool {
    h.clients
        .eventbridge
        .describe_event_bus()
        .name(name)
        .send()
        .await
        .is_ok()
}

pub async fn role_exists(h: &Harness, name: &str) -> bool {
    h.clients
        .iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .is_ok()
}

pub async fn create_foreign_table(h: &Harness, name: &str, stream: bool) {
    let mut req = h
        .clients
        .dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        );
    if stream {
        req = req.stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewImage)
                .build()
                .unwrap(),
        );
    }
    req.send().await.unwrap();
}

pub async fn table_tags(h: &Harness, name: &str) -> BTreeMap<String, String> {
    let t = h
        .clients
        .dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .unwrap();
    let arn = t.table().unwrap().table_arn().unwrap().to_owned();
    let tags = h
        .clients
        .dynamodb
        .list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    tags_of_table(tags.tags())
}

pub async fn function_policy(h: &Harness, function: &str) -> serde_json::Value {
    let p = h
        .clients
        .lambda
        .get_policy()
        .function_name(function)
        .send()
        .await
        .unwrap();
    serde_json::from_str(p.policy().unwrap()).unwrap()
}

/// Swaps the harness's engine for one with `boundary` configured (same observer sinks).
pub fn with_boundary(
    h: &mut Harness,
    sdk: &aws_types::SdkConfig,
    cluster: &str,
    boundary: Option<&str>,
) {
    let sink = h.calls.clone();
    let all_sink = h.all_calls.clone();
    h.engine = Engine::new(
        sdk,
        EngineConfig {
            permissions_boundary_arn: boundary.map(str::to_owned),
            ..engine_config(cluster)
        },
    )
    .with_call_observer(record_calls(vec![sink, all_sink]));
}

pub async fn role_boundary(h: &Harness, role: &str) -> Option<String> {
    h.clients
        .iam
        .get_role()
        .role_name(role)
        .send()
        .await
        .expect("GetRole")
        .role()
        .and_then(|r| r.permissions_boundary())
        .and_then(|b| b.permissions_boundary_arn())
        .map(str::to_owned)
}

pub async fn create_boundary_policy(h: &Harness, name: &str) -> String {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/outbox-role-boundary.json"),
    )
    .expect("boundary doc");
    h.clients
        .iam
        .create_policy()
        .policy_name(name)
        .policy_document(doc)
        .send()
        .await
        .expect("CreatePolicy")
        .policy()
        .and_then(|p| p.arn())
        .expect("policy arn")
        .to_owned()
}

pub fn has_delete_action(
    out: &outbox_operator::engine::DeleteOutcome,
    verb: Verb,
    part: &str,
) -> bool {
    out.actions
        .iter()
        .any(|a| a.verb == verb && a.detail.contains(part))
}
