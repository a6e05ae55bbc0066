//! The desired state of every resource of a pipeline: pure functions from the spec, the derived
//! names, the account/region, the operator's settings and what earlier steps learnt ([`Known`]:
//! ARNs that exist only once their resource does). No AWS call and no file read here; the
//! pipeline runs what these return through the driver, in creation order.

use std::collections::BTreeMap;

use outbox_contract::RelayConfig;

use crate::crd::{ConsumerSpec, EventMappingSpec, OutboxPipelineSpec};
use crate::engine::context::{AwsEnv, Ctx};
use crate::engine::names::Names;
use crate::engine::{
    Component, EngineConfig, alarm, bucket, bus, function, iam, loggroup, mapping, permission,
    rule, table, target,
};

/// What the desired state is built from.
pub struct Inputs<'a> {
    pub spec: &'a OutboxPipelineSpec,
    pub names: &'a Names,
    pub env: &'a AwsEnv,
    pub config: &'a EngineConfig,
    /// Every resource's tags (spec tags, their record and the ownership tags).
    pub tags: &'a BTreeMap<String, String>,
    /// `<namespace>/<name>`.
    pub pipeline: &'a str,
}

impl<'a> Inputs<'a> {
    pub fn of(ctx: &'a Ctx<'_>) -> Inputs<'a> {
        Inputs {
            spec: ctx.spec,
            names: &ctx.names,
            env: &ctx.env,
            config: ctx.config,
            tags: &ctx.tags,
            pipeline: &ctx.owner.pipeline,
        }
    }
}

/// ARNs learnt from earlier steps (None: not there yet, e.g. in a plan of a new pipeline).
#[derive(Clone, Debug, Default)]
pub struct Known {
    pub table_arn: Option<String>,
    pub stream_arn: Option<String>,
    /// Role ARNs by function name.
    pub roles: BTreeMap<String, String>,
    /// Bundled consumer function ARNs by consumer name.
    pub consumer_functions: BTreeMap<String, String>,
}

/// A placeholder for an ARN that exists only after apply (plan of a new pipeline).
pub fn after_apply(what: &str) -> String {
    format!("<{what} after apply>")
}

/// True when the consumer's target is the bundled consumer function.
pub fn bundled(c: &ConsumerSpec) -> bool {
    c.target.lambda_function_arn.is_none() && c.target.sqs_queue_arn.is_none()
}

pub fn table(i: &Inputs<'_>) -> table::Table {
    table::Table {
        desired: table::desired(
            &i.spec.table,
            &i.names.table,
            i.tags,
            i.config.allow_adoption,
        ),
        deletion_policy: i.spec.table.deletion_policy,
        allow_delete_adopted: i.config.allow_delete_adopted_tables,
    }
}

/// The failure bucket, unless the spec names its own destination.
pub fn bucket(i: &Inputs<'_>) -> Option<bucket::Bucket> {
    i.spec
        .relay
        .on_failure_destination_arn
        .is_none()
        .then(|| bucket::Bucket {
            name: i
                .env
                .is_known()
                .then(|| i.names.bucket(&i.env.account, &i.env.region)),
            region: i.env.region.clone(),
            tags: i.tags.clone(),
        })
}

/// Where the relay's failed batches go: the spec's destination or the failure bucket.
pub fn failure_destination(i: &Inputs<'_>) -> String {
    match (&i.spec.relay.on_failure_destination_arn, i.env.is_known()) {
        (Some(arn), _) => arn.clone(),
        (None, true) => i
            .env
            .bucket_arn(&i.names.bucket(&i.env.account, &i.env.region)),
        (None, false) => after_apply("failure bucket ARN"),
    }
}

/// The functions of the pipeline with the component each counts for: relay, writer (when
/// enabled), and one bundled consumer per consumer without its own target.
pub fn function_names(i: &Inputs<'_>) -> Vec<(Component, String)> {
    let mut out = vec![(Component::Relay, i.names.relay_function.clone())];
    if i.spec.writer.enabled {
        out.push((Component::Relay, i.names.writer_function.clone()));
    }
    for c in i.spec.consumers.iter().filter(|c| bundled(c)) {
        out.push((Component::Consumers, i.names.consumer_function(&c.name)));
    }
    out
}

/// The execution roles, one per function (function name, role), each with its least-privilege
/// grants.
pub fn roles(i: &Inputs<'_>, known: &Known) -> Vec<(String, iam::Role)> {
    let table_arn = known
        .table_arn
        .clone()
        .unwrap_or_else(|| i.env.arn("dynamodb", &format!("table/{}", i.names.table)));
    function_names(i)
        .into_iter()
        .map(|(component, f)| {
            let grants = if f == i.names.relay_function {
                iam::Grants::Relay {
                    stream_arn: known
                        .stream_arn
                        .clone()
                        .unwrap_or_else(|| after_apply("stream ARN")),
                    bus_arn: bus_arn(i),
                    failure_destination_arn: failure_destination(i),
                }
            } else if f == i.names.writer_function {
                iam::Grants::Writer {
                    table_arn: table_arn.clone(),
                }
            } else {
                iam::Grants::Consumer
            };
            let role = iam::Role {
                desired: iam::Desired {
                    name: i.names.role(&f),
                    trust: iam::trust_policy(),
                    policy: iam::inline_policy(i.env, &f, &grants),
                    boundary: i.config.permissions_boundary_arn.clone(),
                    tags: i.tags.clone(),
                },
                component,
                description: format!("outbox-operator: execution role of {f} ({})", i.pipeline),
                gone_because: "",
            };
            (f, role)
        })
        .collect()
}

/// The relay's environment: the bus, the change → event mappings and the request size limit.
fn relay_env(i: &Inputs<'_>) -> BTreeMap<String, String> {
    let relay = &i.spec.relay;
    RelayConfig {
        // PutEvents takes a bus's name or ARN; a bus in another account only by its ARN.
        bus_name: i
            .spec
            .bus
            .existing_arn
            .clone()
            .unwrap_or_else(|| i.names.bus.clone()),
        events: relay
            .events
            .iter()
            .map(EventMappingSpec::to_contract)
            .collect(),
        request_size_limit_bytes: usize::try_from(relay.request_size_limit_bytes)
            .unwrap_or(outbox_contract::DEFAULT_REQUEST_SIZE_LIMIT_BYTES),
        pipeline: Some(i.names.pipeline()),
    }
    .to_env()
}

/// The functions with their configuration (their code is read when they are reconciled).
pub fn functions(i: &Inputs<'_>, known: &Known) -> Vec<(Component, function::Desired)> {
    let spec = i.spec;
    function_names(i)
        .into_iter()
        .map(|(component, name)| {
            let (artifact, memory, timeout, env) = if name == i.names.relay_function {
                let r = &spec.relay;
                ("relay", r.memory_mb, r.timeout_seconds, relay_env(i))
            } else if name == i.names.writer_function {
                let env = BTreeMap::from([
                    (
                        outbox_contract::env::TABLE_NAME.to_owned(),
                        i.names.table.clone(),
                    ),
                    (
                        outbox_contract::env::PARTITION_KEY.to_owned(),
                        spec.table.partition_key.name.clone(),
                    ),
                ]);
                (
                    "writer",
                    function::SMALL_MEMORY_MB,
                    function::SMALL_TIMEOUT_SECONDS,
                    env,
                )
            } else {
                (
                    "consumer",
                    function::SMALL_MEMORY_MB,
                    function::SMALL_TIMEOUT_SECONDS,
                    BTreeMap::new(),
                )
            };
            let role_arn = known
                .roles
                .get(&name)
                .cloned()
                .unwrap_or_else(|| after_apply(&format!("{artifact} role ARN")));
            let desired = function::Desired {
                name,
                artifact,
                role_arn,
                memory,
                timeout,
                architecture: spec.relay.architecture,
                env,
                tags: i.tags.clone(),
            };
            (component, desired)
        })
        .collect()
}

/// The log group of a function, created before it.
pub fn log_group(i: &Inputs<'_>, component: Component, function: &str) -> loggroup::LogGroup {
    loggroup::LogGroup {
        name: Names::log_group(function),
        arn: i.env.log_group_arn(function),
        retention_days: i.spec.monitoring.log_retention_days,
        tags: i.tags.clone(),
        component,
    }
}

/// The pipeline's alarms (none when `spec.monitoring.enabled` is false): relay iterator age
/// and errors, failed deliveries per consumer rule, visible messages in SQS dead-letter queues
/// and an SQS failure destination.
pub fn alarms(i: &Inputs<'_>) -> Vec<alarm::Alarm> {
    let m = &i.spec.monitoring;
    if !m.enabled {
        return Vec::new();
    }
    let relay = vec![("FunctionName".to_owned(), i.names.relay_function.clone())];
    let lag_ms = f64::from(m.max_lag_seconds) * 1000.0;
    let mut out = vec![
        alarm_of(
            i,
            Component::Relay,
            "relay-iterator-age",
            format!(
                "relay iterator age above {} s for 3 of 5 minutes",
                m.max_lag_seconds
            ),
            (
                "AWS/Lambda",
                "IteratorAge",
                relay.clone(),
                "Maximum",
                60,
                5,
                3,
                lag_ms,
            ),
        ),
        alarm_of(
            i,
            Component::Relay,
            "relay-errors",
            "relay errors in the last 15 minutes".to_owned(),
            ("AWS/Lambda", "Errors", relay, "Sum", 900, 1, 1, 0.0),
        ),
    ];
    if let Some(q) = i
        .spec
        .relay
        .on_failure_destination_arn
        .as_deref()
        .and_then(queue_name)
    {
        out.push(alarm_of(
            i,
            Component::Relay,
            "relay-failed-batches",
            format!("batches parked in the failure queue {q}"),
            queue_metric(q),
        ));
    }
    for c in &i.spec.consumers {
        out.extend(consumer_alarms(i, c));
    }
    out
}

/// A consumer's alarms: its rule's failed deliveries, and its SQS dead-letter queue's depth.
fn consumer_alarms(i: &Inputs<'_>, c: &ConsumerSpec) -> Vec<alarm::Alarm> {
    let mut out = Vec::new();
    let rule = vec![
        ("EventBusName".to_owned(), i.names.bus.clone()),
        ("RuleName".to_owned(), i.names.rule(&c.name)),
    ];
    out.push(alarm_of(
        i,
        Component::Consumers,
        &format!("c-{}-failed", c.name),
        format!("failed deliveries of consumer {}", c.name),
        (
            "AWS/Events",
            "FailedInvocations",
            rule,
            "Sum",
            300,
            1,
            1,
            0.0,
        ),
    ));
    if let Some(q) = c.dead_letter_arn.as_deref().and_then(queue_name) {
        out.push(alarm_of(
            i,
            Component::Consumers,
            &format!("c-{}-dlq", c.name),
            format!("events in the dead-letter queue {q} of consumer {}", c.name),
            queue_metric(q),
        ));
    }
    out
}

/// One alarm of the pipeline: tagged, notifying `spec.monitoring.alarmActions`.
fn alarm_of(
    i: &Inputs<'_>,
    component: Component,
    what: &str,
    about: String,
    metric: Metric,
) -> alarm::Alarm {
    let mut actions = i.spec.monitoring.alarm_actions.clone();
    actions.sort();
    actions.dedup();
    alarm::Alarm {
        name: i.names.alarm(what),
        settings: Some(alarm::Settings {
            description: format!("outbox-operator: {about} of pipeline {}", i.pipeline),
            namespace: metric.0.to_owned(),
            metric: metric.1.to_owned(),
            dimensions: metric.2,
            statistic: metric.3.to_owned(),
            period: metric.4,
            evaluation_periods: metric.5,
            datapoints_to_alarm: metric.6,
            threshold: metric.7,
            actions,
            comparison: alarm::COMPARISON.to_owned(),
            treat_missing_data: alarm::NOT_BREACHING.to_owned(),
        }),
        tags: i.tags.clone(),
        component,
    }
}

/// (namespace, metric, dimensions, statistic, period, evaluation periods, datapoints, threshold)
type Metric = (
    &'static str,
    &'static str,
    Vec<(String, String)>,
    &'static str,
    i32,
    i32,
    i32,
    f64,
);

/// An SQS ARN's queue name (None for other services).
fn queue_name(arn: &str) -> Option<&str> {
    arn.contains(":sqs:")
        .then(|| arn.rsplit(':').next())
        .flatten()
}

fn queue_metric(queue: &str) -> Metric {
    let dims = vec![("QueueName".to_owned(), queue.to_owned())];
    (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        dims,
        "Maximum",
        300,
        1,
        1,
        0.0,
    )
}

/// The stream → relay mapping.
pub fn mapping(i: &Inputs<'_>, known: &Known) -> mapping::Mapping {
    mapping::Mapping {
        function: i.names.relay_function.clone(),
        desired: mapping::desired(
            &i.spec.relay,
            known.stream_arn.clone(),
            failure_destination(i),
        ),
    }
}

/// The bus the relay publishes to: `spec.bus.existingArn`, or the pipeline's own bus.
pub fn bus_arn(i: &Inputs<'_>) -> String {
    i.spec
        .bus
        .existing_arn
        .clone()
        .unwrap_or_else(|| i.env.bus_arn(&i.names.bus))
}

/// The pipeline's own bus; None for a bus it does not own (`spec.bus.existingArn`), which is
/// never created, tagged, changed or deleted.
pub fn owned_bus(i: &Inputs<'_>) -> Option<bus::Bus> {
    i.spec.bus.existing_arn.is_none().then(|| bus(i))
}

fn bus(i: &Inputs<'_>) -> bus::Bus {
    bus::Bus {
        name: i.names.bus.clone(),
        tags: i.tags.clone(),
        deletion_policy: i.spec.bus.deletion_policy,
    }
}

pub fn rule(i: &Inputs<'_>, c: &ConsumerSpec) -> rule::Rule {
    rule::Rule {
        name: i.names.rule(&c.name),
        bus: i.names.bus.clone(),
        pattern: c.event_pattern.clone(),
        tags: i.tags.clone(),
        description: format!("outbox-operator: consumer {} of {}", c.name, i.pipeline),
    }
}

/// What a consumer's rule routes to, once the rule's ARN is known.
#[derive(Debug)]
pub struct Delivery {
    /// None while the bundled function is not there yet (its role not assumable): next pass.
    pub target: Option<target::RuleTarget>,
    /// Our invoke statement on the target function (Lambda targets).
    pub permission: Option<permission::Permission>,
    /// What the user must allow on queues the operator does not own.
    pub required_actions: Vec<String>,
}

/// The target, the invoke permission and the queue statements of a consumer.
pub fn delivery(i: &Inputs<'_>, known: &Known, c: &ConsumerSpec, rule_arn: &str) -> Delivery {
    let mut required_actions = Vec::new();
    let (target_arn, invoke) = match (&c.target.lambda_function_arn, &c.target.sqs_queue_arn) {
        (Some(f), _) => (Some(f.clone()), Some(f.clone())),
        (None, Some(q)) => {
            required_actions.push(permission::sqs_required_action(
                q,
                rule_arn,
                &format!("target of consumer {}", c.name),
            ));
            (Some(q.clone()), None)
        }
        (None, None) => (
            known.consumer_functions.get(&c.name).cloned(),
            Some(i.names.consumer_function(&c.name)),
        ),
    };
    if let Some(dlq) = &c.dead_letter_arn {
        required_actions.push(permission::sqs_required_action(
            dlq,
            rule_arn,
            &format!("dead-letter queue of consumer {}", c.name),
        ));
    }
    let target = target_arn.map(|arn| target::RuleTarget {
        rule: i.names.rule(&c.name),
        bus: i.names.bus.clone(),
        desired: target::Desired {
            arn,
            retry_attempts: c.retry_policy.maximum_retry_attempts,
            max_age_seconds: c.retry_policy.maximum_event_age_seconds,
            dead_letter_arn: c.dead_letter_arn.clone(),
        },
    });
    Delivery {
        permission: target
            .as_ref()
            .and(invoke)
            .map(|function| permission::Permission {
                sid: i.names.statement_id(&c.name),
                function,
                rule_arn: rule_arn.to_owned(),
            }),
        target,
        required_actions,
    }
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
