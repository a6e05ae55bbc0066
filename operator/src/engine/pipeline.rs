//! One pass over a pipeline: the resources in creation order, each built by [`desired`] and run
//! through the driver ([`step`]), and the status built from how each component ended
//! ([`status`]). The delete pass is in [`teardown`].
//!
//! Creation order: table → failure bucket → roles → (log group → function) each → mapping →
//! bus → rules → targets → permissions, then the clean-up of consumers that left the spec, then
//! the alarms (and the removal of those no longer desired). The data-plane health is read after
//! the pass (`engine::health`).

use std::sync::Arc;

use tracing::Instrument;

use crate::crd::{OutboxPipeline, OutboxPipelineStatus};

pub(super) mod desired;
mod status;
mod teardown;
pub use teardown::delete;

use desired::{Inputs, Known, after_apply, bundled};
use status::States;

use super::artifacts::Artifacts;
use super::context::{AwsEnv, Ctx, Progress};
use super::driver::{remove, step};
use super::{
    AwsClients, Component, EngineConfig, EngineError, Outcome, alarm, function, loggroup, rule,
};

/// A step's failure, with the component it belongs to.
type StepResult<T = ()> = Result<T, (Component, EngineError)>;

fn at(c: Component) -> impl FnOnce(EngineError) -> (Component, EngineError) {
    move |e| (c, e)
}

/// One reconcile (`apply`) or observe-only (`!apply`: plan, status) pass.
pub async fn run(
    clients: &AwsClients,
    config: &EngineConfig,
    artifacts: &Arc<Artifacts>,
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
        let mut ctx = Ctx::new(clients, config, artifacts, pipeline, apply);
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
            status::pending_is_waiting(&mut states, &ctx.actions);
        }
        let requeue_after = status::conditions(&mut status, &states, pipeline.metadata.generation);
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

/// The outcome of a pass refused before any AWS call (e.g. its account cannot be reached):
/// every component fails with `e`.
pub fn refused(pipeline: &OutboxPipeline, e: EngineError) -> Outcome {
    let mut status = OutboxPipelineStatus {
        observed_generation: pipeline.metadata.generation,
        ..Default::default()
    };
    let mut states = States::default();
    states.fail(Component::Table, e.clone());
    let requeue_after = status::conditions(&mut status, &states, pipeline.metadata.generation);
    Outcome {
        status,
        actions: Vec::new(),
        requeue_after,
        error: Some(e),
    }
}

/// The resource steps in creation order.
async fn steps(
    ctx: &mut Ctx<'_>,
    status: &mut OutboxPipelineStatus,
    states: &mut States,
) -> StepResult {
    let Some(mut known) = table_step(ctx, status, states).await? else {
        return Ok(());
    };
    relay_steps(ctx, status, states, &mut known).await?;
    bus_step(ctx, status, &known).await?;
    states.progress(Component::Bus, Progress::Ready);
    states.finish(Component::Bus);
    consumer_steps(ctx, status, &known).await?;
    removed_consumers(ctx, status).await?;
    alarm_steps(ctx).await?;
    states.progress(Component::Consumers, Progress::Ready);
    states.finish(Component::Consumers);
    Ok(())
}

/// The pipeline's own bus, or (`spec.bus.existingArn`) the bus it publishes to without owning
/// it: never created or tagged; when it is in another account, the status names the statement
/// its owner must add to the bus's resource policy.
async fn bus_step(
    ctx: &mut Ctx<'_>,
    status: &mut OutboxPipelineStatus,
    known: &Known,
) -> StepResult {
    status.bus_name = Some(ctx.names.bus.clone());
    if let Some(bus) = desired::owned_bus(&Inputs::of(ctx)) {
        let observed = step(ctx, &bus).await.map_err(at(Component::Bus))?;
        status.bus_arn = observed.state.map(|o| o.arn);
        return Ok(());
    }
    let arn = desired::bus_arn(&Inputs::of(ctx));
    if !existing_bus_is_ours_account(ctx) {
        let role = known
            .roles
            .get(&ctx.names.relay_function)
            .cloned()
            .unwrap_or_else(|| after_apply("relay role ARN"));
        status
            .required_actions
            .push(super::bus::policy_required_action(&arn, &role));
    }
    status.bus_arn = Some(arn);
    Ok(())
}

/// True unless `spec.bus.existingArn` names a bus in another account than the pipeline's (an
/// unknown account, in a plan of a new pipeline, counts as the pipeline's).
fn existing_bus_is_ours_account(ctx: &Ctx<'_>) -> bool {
    match ctx.spec.bus.existing() {
        Some((account, _)) => !ctx.env.is_known() || ctx.env.account == account,
        None => true,
    }
}

/// The table with its stream. None when reconcile must wait for it before going on.
async fn table_step(
    ctx: &mut Ctx<'_>,
    status: &mut OutboxPipelineStatus,
    states: &mut States,
) -> StepResult<Option<Known>> {
    let table = desired::table(&Inputs::of(ctx));
    let out = step(ctx, &table).await.map_err(at(Component::Table))?;
    let (arn, stream_arn) = match &out.state {
        Some(o) => (Some(o.arn.clone()), o.stream_arn.clone()),
        None => (None, None),
    };
    if let Some(env) = arn.as_deref().and_then(AwsEnv::from_arn) {
        ctx.env = env;
    }
    status.table_name = Some(ctx.names.table.clone());
    status.table_arn = arn.clone();
    status.stream_arn = stream_arn.clone();
    let waiting = !out.progress.is_ready();
    states.progress(Component::Table, out.progress);
    states.finish(Component::Table);
    if waiting && ctx.applies() {
        return Ok(None);
    }
    Ok(Some(Known {
        table_arn: arn,
        stream_arn,
        ..Known::default()
    }))
}

/// Failure bucket, roles, functions and the mapping (once the relay is Active).
async fn relay_steps(
    ctx: &mut Ctx<'_>,
    status: &mut OutboxPipelineStatus,
    states: &mut States,
    known: &mut Known,
) -> StepResult {
    use Component::Relay;
    if let Some(bucket) = desired::bucket(&Inputs::of(ctx)) {
        step(ctx, &bucket).await.map_err(at(Relay))?;
    }
    status.failure_destination_arn = Some(desired::failure_destination(&Inputs::of(ctx)));
    for (function, role) in desired::roles(&Inputs::of(ctx), known) {
        let out = step(ctx, &role).await.map_err(at(role.component))?;
        if let Some(o) = out.state {
            known.roles.insert(function, o.arn);
        }
    }
    let relay_ready = function_steps(ctx, status, states, known).await?;
    if !ctx.spec.writer.enabled {
        // A writer switched off: remove it (and its role) if it is still there.
        let writer = ctx.names.writer_function.clone();
        remove_function(ctx, Relay, &writer)
            .await
            .map_err(at(Relay))?;
    }
    // Event source mapping: stream → relay, once the relay is Active.
    if relay_ready || !ctx.applies() {
        let mapping = desired::mapping(&Inputs::of(ctx), known);
        let out = step(ctx, &mapping).await.map_err(at(Relay))?;
        if let Some(m) = mapping.current(&out.state) {
            status.event_source_mapping_uuid = Some(m.uuid.clone());
            // What the data-plane health reports of the mapping, as this step read it.
            status.data_plane = Some(crate::crd::DataPlaneStatus {
                mapping_state: Some(m.state.clone()),
                last_processing_result: m.last_processing_result.clone(),
                ..Default::default()
            });
        }
        states.progress(Relay, out.progress);
    }
    states.finish(Relay);
    Ok(())
}

/// The functions; returns whether the relay is there and Active.
async fn function_steps(
    ctx: &mut Ctx<'_>,
    status: &mut OutboxPipelineStatus,
    states: &mut States,
    known: &mut Known,
) -> StepResult<bool> {
    let mut relay_ready = false;
    let consumers: Vec<(String, String)> = ctx
        .spec
        .consumers
        .iter()
        .filter(|c| bundled(c))
        .map(|c| (ctx.names.consumer_function(&c.name), c.name.clone()))
        .collect();
    for (component, d) in desired::functions(&Inputs::of(ctx), known) {
        log_group_step(ctx, status, component, &d.name).await?;
        let description = format!("outbox-operator {} of {}", d.artifact, ctx.owner.pipeline);
        let dir = &ctx.config.artifacts_dir;
        let f = function::Function::with_code(d, component, description, dir, ctx.artifacts)
            .map_err(at(component))?;
        let out = step(ctx, &f).await.map_err(at(component))?;
        let arn = out.state.map(|o| o.arn);
        let name = &f.desired.name;
        if *name == ctx.names.relay_function {
            relay_ready = out.progress.is_ready() && arn.is_some();
            status.relay_function_arn = arn;
        } else if *name == ctx.names.writer_function {
            status.writer_function_arn = arn;
        } else if let Some((_, consumer)) = consumers.iter().find(|(f, _)| f == name) {
            if let Some(a) = arn {
                status
                    .consumer_function_arns
                    .insert(consumer.clone(), a.clone());
                known.consumer_functions.insert(consumer.clone(), a);
            } else if !ctx.applies() {
                // Plan of a new function: its target is planned with a placeholder.
                let placeholder = after_apply("consumer function ARN");
                known
                    .consumer_functions
                    .insert(consumer.clone(), placeholder);
            }
        }
        states.progress(component, out.progress);
    }
    Ok(relay_ready)
}

/// A function's log group, before the function; one that is not ours is named in the status.
async fn log_group_step(
    ctx: &mut Ctx<'_>,
    status: &mut OutboxPipelineStatus,
    component: Component,
    function: &str,
) -> StepResult {
    let group = desired::log_group(&Inputs::of(ctx), component, function);
    let out = step(ctx, &group).await.map_err(at(component))?;
    if let Some(note) = loggroup::not_ours(&group.name, out.state.as_ref(), &ctx.owner) {
        tracing::warn!(log_group = %group.name, "{note}");
        status.required_actions.push(note);
    }
    Ok(())
}

/// Rules, targets and invoke permissions of the spec's consumers.
async fn consumer_steps(
    ctx: &mut Ctx<'_>,
    status: &mut OutboxPipelineStatus,
    known: &Known,
) -> StepResult {
    for c in &ctx.spec.consumers.clone() {
        let rule = desired::rule(&Inputs::of(ctx), c);
        let out = step(ctx, &rule).await.map_err(at(Component::Consumers))?;
        let rule_arn = out
            .state
            .map(|o| o.arn)
            .unwrap_or_else(|| after_apply("rule ARN"));
        status.rule_arns.insert(c.name.clone(), rule_arn.clone());
        let delivery = desired::delivery(&Inputs::of(ctx), known, c, &rule_arn);
        status.required_actions.extend(delivery.required_actions);
        if let Some(target) = &delivery.target {
            step(ctx, target).await.map_err(at(Component::Consumers))?;
        }
        if let Some(permission) = &delivery.permission {
            step(ctx, permission)
                .await
                .map_err(at(Component::Consumers))?;
        }
    }
    Ok(())
}

/// The pipeline's alarms, then the removal of those that left the desired set (monitoring
/// switched off, a consumer or a dead-letter queue removed).
async fn alarm_steps(ctx: &mut Ctx<'_>) -> StepResult {
    let alarms = desired::alarms(&Inputs::of(ctx));
    for a in &alarms {
        step(ctx, a).await.map_err(at(a.component))?;
    }
    let at = at(Component::Consumers);
    let prefix = ctx.names.alarm_prefix();
    let mut gone = alarm::list(ctx, &prefix).await.map_err(at)?;
    gone.retain(|name| !alarms.iter().any(|a| &a.name == name));
    for name in gone {
        let a = alarm::Alarm::named(name, Component::Consumers);
        remove(ctx, &a)
            .await
            .map_err(|e| (Component::Consumers, e))?;
    }
    Ok(())
}

/// Consumers removed from the spec: their rule on the bus is how they are found.
async fn removed_consumers(ctx: &mut Ctx<'_>, status: &OutboxPipelineStatus) -> StepResult {
    let at = at(Component::Consumers);
    if status.bus_arn.is_none() || !existing_bus_is_ours_account(ctx) {
        return Ok(());
    }
    let rules = rule::list(ctx).await.map_err(at)?;
    for r in rules {
        let Some(consumer) = ctx.names.consumer_of_rule(&r).map(str::to_owned) else {
            continue;
        };
        if !ctx.spec.consumers.iter().any(|c| c.name == consumer) {
            remove_consumer(ctx, &consumer)
                .await
                .map_err(|e| (Component::Consumers, e))?;
        }
    }
    Ok(())
}

/// Removes what a consumer that left the spec had: our permission on a user's function, the
/// bundled function and its role, then the rule (last, so an interrupted removal is found again).
async fn remove_consumer(ctx: &mut Ctx<'_>, consumer: &str) -> Result<(), EngineError> {
    let bundled_fn = ctx.names.consumer_function(consumer);
    teardown::remove_user_function_permissions(ctx, consumer).await?;
    remove_function(ctx, Component::Consumers, &bundled_fn).await?;
    let rule = rule::Rule::named(ctx.names.rule(consumer), ctx.names.bus.clone());
    remove(ctx, &rule).await?;
    Ok(())
}

/// Removes a function that left the spec, then its log group and its role.
async fn remove_function(
    ctx: &mut Ctx<'_>,
    component: Component,
    name: &str,
) -> Result<(), EngineError> {
    let why = "no longer in the spec";
    remove(ctx, &function::Function::named(name, component, why)).await?;
    remove(
        ctx,
        &loggroup::LogGroup::of_function(&ctx.env, name, component),
    )
    .await?;
    let role = super::iam::Role::named(ctx.names.role(name), component, why);
    remove(ctx, &role).await?;
    Ok(())
}
