//! One pass over a pipeline: the resource steps in creation order (reconcile, plan, status),
//! and the status built from how each component ended. The delete pass is in [`teardown`].

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::Instrument;

use outbox_contract::{EventMapping, RelayConfig};

use crate::crd::{ConditionType, ConsumerSpec, OutboxPipeline, OutboxPipelineStatus, Reason};

mod teardown;
pub use teardown::delete;

use super::context::{Ctx, Progress};
use super::{
    AwsClients, Component, EngineConfig, EngineError, Outcome, bucket, bus, function, iam, mapping,
    permission, rule, table, target,
};

/// Requeue hint while AWS settles something (a function Pending, a table CREATING).
pub const SETTLE_REQUEUE: Duration = Duration::from_secs(5);
/// Requeue hint after a transient error the SDK's own retries did not overcome.
pub const TRANSIENT_REQUEUE: Duration = Duration::from_secs(15);

/// How a component ended in this pass.
#[derive(Clone, Debug)]
enum State {
    Ready,
    Waiting(String),
    Failed(EngineError),
}

/// How each component ended, and which components ran all their steps: a component whose
/// later steps were not reached (an error further up) is not Ready, whatever its first steps did.
#[derive(Default)]
struct States(
    BTreeMap<Component, State>,
    std::collections::BTreeSet<Component>,
);

impl States {
    /// Merges a step's progress into its component (waiting wins over ready).
    fn progress(&mut self, c: Component, p: Progress) {
        match p {
            Progress::Ready => {
                self.0.entry(c).or_insert(State::Ready);
            }
            Progress::Waiting(msg) => match self.0.get_mut(&c) {
                Some(State::Waiting(m)) => {
                    m.push_str("; ");
                    m.push_str(&msg);
                }
                Some(State::Failed(_)) => {}
                _ => {
                    self.0.insert(c, State::Waiting(msg));
                }
            },
        }
    }

    fn fail(&mut self, c: Component, e: EngineError) {
        self.0.insert(c, State::Failed(e));
    }

    /// Every step of `c` ran in this pass.
    fn finish(&mut self, c: Component) {
        self.1.insert(c);
    }

    /// The state to report: Ready only when the component finished.
    fn get(&self, c: Component) -> Option<&State> {
        match self.0.get(&c) {
            Some(State::Ready) if !self.1.contains(&c) => None,
            other => other,
        }
    }
}

/// A step's failure, with the component it belongs to.
type StepResult = Result<(), (Component, EngineError)>;

fn at(c: Component) -> impl FnOnce(EngineError) -> (Component, EngineError) {
    move |e| (c, e)
}

fn condition_type(c: Component) -> ConditionType {
    match c {
        Component::Table => ConditionType::TableReady,
        Component::Relay => ConditionType::RelayReady,
        Component::Bus => ConditionType::BusReady,
        Component::Consumers => ConditionType::ConsumersReady,
    }
}

const ORDER: [Component; 4] = [
    Component::Table,
    Component::Relay,
    Component::Bus,
    Component::Consumers,
];

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One reconcile (`apply`) or observe-only (`!apply`: plan, status) pass.
pub async fn run(
    clients: &AwsClients,
    config: &EngineConfig,
    pipeline: &OutboxPipeline,
    apply: bool,
) -> Outcome {
    let span = tracing::info_span!(
        "pipeline",
        namespace = pipeline.namespace_or_default(),
        name = pipeline.name_or_empty(),
        apply
    );
    async move {
        let mut ctx = Ctx::new(clients, config, pipeline, apply);
        let mut status = OutboxPipelineStatus {
            observed_generation: pipeline.metadata.generation,
            ..Default::default()
        };
        let mut states = States::default();
        // Pre-flight: what can fail without side effects fails before anything is created.
        let result = match super::preflight::check(&ctx).await {
            Ok(()) => steps(&mut ctx, &mut status, &mut states).await,
            Err(e) => Err(e),
        };
        let error = match result {
            Ok(()) => None,
            Err((c, e)) => {
                tracing::warn!(component = c.as_str(), error = %e, "reconcile step failed");
                states.fail(c, e.clone());
                Some(e)
            }
        };
        if !apply {
            // Observe only: a component with pending changes is not in sync.
            for c in ORDER {
                let pending: Vec<String> = ctx
                    .actions
                    .iter()
                    .filter(|a| a.component == c)
                    .map(|a| a.to_string())
                    .collect();
                if !pending.is_empty() && matches!(states.0.get(&c), Some(State::Ready) | None) {
                    states.0.insert(
                        c,
                        State::Waiting(format!("out of sync: {}", pending.join("; "))),
                    );
                }
            }
        }
        let requeue_after = conditions(&mut status, &states, pipeline.metadata.generation);
        Outcome {
            status,
            actions: ctx.actions,
            requeue_after,
            error,
        }
    }
    .instrument(span)
    .await
}

/// Sets the component conditions and Ready; returns the requeue hint.
fn conditions(
    status: &mut OutboxPipelineStatus,
    states: &States,
    generation: Option<i64>,
) -> Option<Duration> {
    let now = now();
    let mut first_bad: Option<(Reason, String)> = None;
    let mut blocker: Option<Component> = None;
    let mut requeue = None;
    for c in ORDER {
        let (ok, reason, message) = match states.get(c) {
            Some(State::Ready) => (true, Reason::Reconciled, format!("{} in sync", c.as_str())),
            Some(State::Waiting(m)) => {
                requeue = Some(SETTLE_REQUEUE);
                (false, Reason::Progressing, m.clone())
            }
            Some(State::Failed(e)) => {
                blocker = Some(c);
                if e.is_transient() {
                    requeue = Some(TRANSIENT_REQUEUE);
                }
                (false, e.reason(), e.to_string())
            }
            None => {
                // Not reached: the pass stopped earlier (a wait or an error sets the requeue).
                let msg = match blocker {
                    Some(b) => format!("waiting for {}", b.as_str()),
                    None => "waiting for earlier components".to_owned(),
                };
                (false, Reason::Progressing, msg)
            }
        };
        if !ok && first_bad.is_none() {
            first_bad = Some((reason, format!("{}: {message}", c.as_str())));
        }
        status.set_condition(condition_type(c), ok, reason, message, generation, &now);
    }
    match first_bad {
        None => status.set_condition(
            ConditionType::Ready,
            true,
            Reason::Reconciled,
            "every component is in sync",
            generation,
            &now,
        ),
        Some((reason, message)) => status.set_condition(
            ConditionType::Ready,
            false,
            reason,
            message,
            generation,
            &now,
        ),
    }
    requeue
}

/// The bundled consumer function's name of a consumer, when its target is the bundled one.
fn bundled(c: &ConsumerSpec) -> bool {
    c.target.lambda_function_arn.is_none() && c.target.sqs_queue_arn.is_none()
}

/// A placeholder for an ARN that exists only after apply (plan of a new pipeline).
fn after_apply(what: &str) -> String {
    format!("<{what} after apply>")
}

/// The resource steps in creation order: table → failure bucket → roles → functions →
/// mapping → bus → rules → targets → permissions.
async fn steps(
    ctx: &mut Ctx<'_>,
    status: &mut OutboxPipelineStatus,
    states: &mut States,
) -> StepResult {
    use Component::{Bus, Consumers, Relay, Table};
    let spec = ctx.spec;

    // Table with its stream.
    let (table_out, progress) = table::reconcile(ctx).await.map_err(at(Table))?;
    status.table_name = Some(ctx.names.table.clone());
    status.table_arn = table_out.arn.clone();
    status.stream_arn = table_out.stream_arn.clone();
    let table_waiting = !progress.is_ready();
    states.progress(Table, progress);
    states.finish(Table);
    if table_waiting && ctx.apply {
        return Ok(());
    }
    let table_arn = table_out.arn.clone().unwrap_or_else(|| {
        ctx.env
            .arn("dynamodb", &format!("table/{}", ctx.names.table))
    });
    let stream_arn = table_out
        .stream_arn
        .clone()
        .unwrap_or_else(|| after_apply("stream ARN"));
    let bus_arn = ctx.env.bus_arn(&ctx.names.bus);

    // Failure destination: the spec's, or our bucket.
    let failure_destination = match &spec.relay.on_failure_destination_arn {
        Some(arn) => arn.clone(),
        None => bucket::reconcile(ctx).await.map_err(at(Relay))?,
    };
    status.failure_destination_arn = Some(failure_destination.clone());

    // Execution roles.
    let relay_fn = ctx.names.relay_function.clone();
    let writer_fn = ctx.names.writer_function.clone();
    let relay_grants = iam::Grants::Relay {
        stream_arn: stream_arn.clone(),
        bus_arn,
        failure_destination_arn: failure_destination.clone(),
    };
    let relay_role = iam::reconcile(ctx, Relay, &relay_fn, &relay_grants)
        .await
        .map_err(at(Relay))?;
    let writer_role = if spec.writer.enabled {
        let grants = iam::Grants::Writer {
            table_arn: table_arn.clone(),
        };
        iam::reconcile(ctx, Relay, &writer_fn, &grants)
            .await
            .map_err(at(Relay))?
    } else {
        None
    };
    let mut consumer_roles = BTreeMap::new();
    for c in spec.consumers.iter().filter(|c| bundled(c)) {
        let f = ctx.names.consumer_function(&c.name);
        let role = iam::reconcile(ctx, Consumers, &f, &iam::Grants::Consumer)
            .await
            .map_err(at(Consumers))?;
        consumer_roles.insert(c.name.clone(), role);
    }

    // Functions.
    let arch = spec.relay.architecture;
    let relay_env = RelayConfig {
        bus_name: ctx.names.bus.clone(),
        events: spec
            .relay
            .events
            .iter()
            .map(|e| EventMapping {
                change: e.change,
                source: e.source.clone(),
                detail_type: e.detail_type.clone(),
                payload: e.payload,
            })
            .collect(),
        request_size_limit_bytes: usize::try_from(spec.relay.request_size_limit_bytes)
            .unwrap_or(outbox_contract::DEFAULT_REQUEST_SIZE_LIMIT_BYTES),
    }
    .to_env();
    let relay_desired = function::Desired {
        name: relay_fn.clone(),
        artifact: "relay",
        role_arn: relay_role.unwrap_or_else(|| after_apply("relay role ARN")),
        memory: spec.relay.memory_mb,
        timeout: spec.relay.timeout_seconds,
        architecture: arch,
        env: relay_env,
        tags: ctx.tags.clone(),
    };
    let relay_out = function::reconcile(ctx, Relay, &relay_desired)
        .await
        .map_err(at(Relay))?;
    status.relay_function_arn = relay_out.arn.clone();
    let relay_ready = relay_out.progress.is_ready() && relay_out.arn.is_some();
    states.progress(Relay, relay_out.progress);
    if spec.writer.enabled {
        let d = function::Desired {
            name: writer_fn.clone(),
            artifact: "writer",
            role_arn: writer_role.unwrap_or_else(|| after_apply("writer role ARN")),
            memory: function::SMALL_MEMORY_MB,
            timeout: function::SMALL_TIMEOUT_SECONDS,
            architecture: arch,
            env: BTreeMap::from([
                (
                    outbox_contract::env::TABLE_NAME.to_owned(),
                    ctx.names.table.clone(),
                ),
                (
                    outbox_contract::env::PARTITION_KEY.to_owned(),
                    spec.table.partition_key.name.clone(),
                ),
            ]),
            tags: ctx.tags.clone(),
        };
        let out = function::reconcile(ctx, Relay, &d)
            .await
            .map_err(at(Relay))?;
        status.writer_function_arn = out.arn;
        states.progress(Relay, out.progress);
    }
    if !spec.writer.enabled {
        // A writer switched off: remove it (and its role) if it is still there.
        function::delete(ctx, Relay, &writer_fn)
            .await
            .map_err(at(Relay))?;
        iam::delete(ctx, Relay, &writer_fn)
            .await
            .map_err(at(Relay))?;
    }
    let mut consumer_fns: BTreeMap<String, Option<String>> = BTreeMap::new();
    for c in spec.consumers.iter().filter(|c| bundled(c)) {
        let d = function::Desired {
            name: ctx.names.consumer_function(&c.name),
            artifact: "consumer",
            role_arn: consumer_roles
                .get(&c.name)
                .cloned()
                .flatten()
                .unwrap_or_else(|| after_apply("consumer role ARN")),
            memory: function::SMALL_MEMORY_MB,
            timeout: function::SMALL_TIMEOUT_SECONDS,
            architecture: arch,
            env: BTreeMap::new(),
            tags: ctx.tags.clone(),
        };
        let out = function::reconcile(ctx, Consumers, &d)
            .await
            .map_err(at(Consumers))?;
        if let Some(arn) = &out.arn {
            status
                .consumer_function_arns
                .insert(c.name.clone(), arn.clone());
        }
        consumer_fns.insert(c.name.clone(), out.arn);
        states.progress(Consumers, out.progress);
    }

    // Event source mapping: stream → relay, once the relay is Active.
    if relay_ready || !ctx.apply {
        let d = mapping::desired(ctx, table_out.stream_arn.clone(), failure_destination);
        let (uuid, progress) = mapping::reconcile(ctx, &relay_fn, &d)
            .await
            .map_err(at(Relay))?;
        status.event_source_mapping_uuid = uuid;
        states.progress(Relay, progress);
    }
    states.finish(Relay);

    // Bus.
    let bus_arn = bus::reconcile(ctx).await.map_err(at(Bus))?;
    status.bus_name = Some(ctx.names.bus.clone());
    status.bus_arn = bus_arn;
    states.progress(Bus, Progress::Ready);
    states.finish(Bus);

    // Rules, targets, permissions.
    for c in &spec.consumers {
        let rule_name = ctx.names.rule(&c.name);
        let rule_arn = rule::reconcile(ctx, &c.name, &c.event_pattern)
            .await
            .map_err(at(Consumers))?
            .unwrap_or_else(|| after_apply("rule ARN"));
        status.rule_arns.insert(c.name.clone(), rule_arn.clone());
        let (target_arn, invoke) = match (&c.target.lambda_function_arn, &c.target.sqs_queue_arn) {
            (Some(f), _) => (Some(f.clone()), Some(f.clone())),
            (None, Some(q)) => {
                status
                    .required_actions
                    .push(permission::sqs_required_action(
                        q,
                        &rule_arn,
                        &format!("target of consumer {}", c.name),
                    ));
                (Some(q.clone()), None)
            }
            (None, None) => {
                let arn = consumer_fns.get(&c.name).cloned().flatten();
                let arn = if ctx.apply {
                    arn
                } else {
                    arn.or_else(|| Some(after_apply("consumer function ARN")))
                };
                (arn, Some(ctx.names.consumer_function(&c.name)))
            }
        };
        if let Some(dlq) = &c.dead_letter_arn {
            status
                .required_actions
                .push(permission::sqs_required_action(
                    dlq,
                    &rule_arn,
                    &format!("dead-letter queue of consumer {}", c.name),
                ));
        }
        let Some(target_arn) = target_arn else {
            // The bundled function is not there yet (its role is not assumable): next pass.
            continue;
        };
        let d = target::Desired {
            arn: target_arn,
            retry_attempts: c.retry_policy.maximum_retry_attempts,
            max_age_seconds: c.retry_policy.maximum_event_age_seconds,
            dead_letter_arn: c.dead_letter_arn.clone(),
        };
        target::reconcile(ctx, &rule_name, &d)
            .await
            .map_err(at(Consumers))?;
        if let Some(function) = invoke {
            permission::reconcile(ctx, &c.name, &function, &rule_arn)
                .await
                .map_err(at(Consumers))?;
        }
    }
    // Consumers removed from the spec: their rule is how they are found.
    let wanted: Vec<String> = spec.consumers.iter().map(|c| c.name.clone()).collect();
    let rules = if status.bus_arn.is_some() {
        rule::list(ctx).await.map_err(at(Consumers))?
    } else {
        Vec::new()
    };
    for r in rules {
        let Some(consumer) = ctx.names.consumer_of_rule(&r).map(str::to_owned) else {
            continue;
        };
        if !wanted.contains(&consumer) {
            remove_consumer(ctx, &consumer)
                .await
                .map_err(at(Consumers))?;
        }
    }
    states.progress(Consumers, Progress::Ready);
    states.finish(Consumers);
    Ok(())
}

/// Removes what a consumer that left the spec had: our permission on a user's function, the
/// bundled function and its role, then the rule (last, so an interrupted removal is found again).
async fn remove_consumer(ctx: &mut Ctx<'_>, consumer: &str) -> Result<(), EngineError> {
    let rule_name = ctx.names.rule(consumer);
    if !ctx.apply {
        ctx.record(
            Component::Consumers,
            super::Verb::Delete,
            format!("eventbridge rule {rule_name}"),
            format!("consumer {consumer} is no longer in the spec"),
        );
        return Ok(());
    }
    let bundled_fn = ctx.names.consumer_function(consumer);
    teardown::remove_user_function_permissions(ctx, consumer).await?;
    function::delete(ctx, Component::Consumers, &bundled_fn).await?;
    iam::delete(ctx, Component::Consumers, &bundled_fn).await?;
    rule::delete(ctx, &rule_name).await
}
