//! The delete pass: every resource of a pipeline in reverse creation order through the driver's
//! [`remove`], honouring the deletion policies (a retained table or bus counts as done), and the
//! clean-up of a consumer's invoke permission on a user's function, shared with the removal of a
//! consumer that left the spec.

use std::sync::Arc;

use tracing::Instrument;

use crate::crd::OutboxPipeline;

use super::desired::{self, Inputs};
use super::status::SETTLE_REQUEUE;
use crate::engine::artifacts::Artifacts;
use crate::engine::context::{AwsEnv, Ctx, Progress};
use crate::engine::driver::remove;
use crate::engine::{
    AwsClients, Component, DeleteOutcome, EngineConfig, EngineError, alarm, bus, function, iam,
    loggroup, permission, rule, table, target,
};

/// Removes our invoke permission from every user's Lambda function the consumer's rule targets
/// (the bundled consumer function goes with its own deletion).
pub(super) async fn remove_user_function_permissions(
    ctx: &mut Ctx<'_>,
    consumer: &str,
) -> Result<(), EngineError> {
    let rule_name = ctx.names.rule(consumer);
    let bundled_fn = ctx.names.consumer_function(consumer);
    for t in target::observe(ctx, &rule_name).await? {
        if t.arn.contains(":lambda:") && !t.arn.ends_with(&format!(":function:{bundled_fn}")) {
            remove_permission(ctx, consumer, &t.arn).await?;
        }
    }
    Ok(())
}

async fn remove_permission(
    ctx: &mut Ctx<'_>,
    consumer: &str,
    function: &str,
) -> Result<(), EngineError> {
    let p = permission::Permission {
        sid: ctx.names.statement_id(consumer),
        function: function.to_owned(),
        rule_arn: String::new(),
    };
    remove(ctx, &p).await?;
    Ok(())
}

/// The consumers to remove: the spec's and any whose rule is still on the bus.
async fn consumers(ctx: &Ctx<'_>, bus_exists: bool) -> Result<Vec<String>, EngineError> {
    let mut consumers: Vec<String> = ctx.spec.consumers.iter().map(|c| c.name.clone()).collect();
    if bus_exists {
        for r in rule::list(ctx).await? {
            if let Some(c) = ctx.names.consumer_of_rule(&r)
                && !consumers.iter().any(|x| x == c)
            {
                consumers.push(c.to_owned());
            }
        }
    }
    Ok(consumers)
}

/// Rules (with their targets) and our permissions on users' functions.
async fn remove_consumers(
    ctx: &mut Ctx<'_>,
    consumers: &[String],
    bus_exists: bool,
) -> Result<(), EngineError> {
    for c in consumers {
        let spec = ctx.spec.consumers.iter().find(|s| &s.name == c);
        if let Some(f) = spec.and_then(|s| s.target.lambda_function_arn.clone()) {
            remove_permission(ctx, c, &f).await?;
        }
        if bus_exists {
            if spec.is_none() {
                // A consumer that left the spec: its target tells a user's function.
                remove_user_function_permissions(ctx, c).await?;
            }
            let r = rule::Rule::named(ctx.names.rule(c), ctx.names.bus.clone());
            remove(ctx, &r).await?;
        }
    }
    Ok(())
}

/// Functions first, then their log groups (Lambda cannot re-create one any more) and roles.
async fn remove_functions(ctx: &mut Ctx<'_>, consumers: &[String]) -> Result<(), EngineError> {
    let mut functions = vec![
        (Component::Relay, ctx.names.relay_function.clone()),
        (Component::Relay, ctx.names.writer_function.clone()),
    ];
    for c in consumers {
        functions.push((Component::Consumers, ctx.names.consumer_function(c)));
    }
    for (component, f) in &functions {
        remove(ctx, &function::Function::named(f, *component, "")).await?;
    }
    for (component, f) in &functions {
        let group = loggroup::LogGroup::of_function(&ctx.env, f, *component);
        remove(ctx, &group).await?;
    }
    for (component, f) in &functions {
        remove(ctx, &iam::Role::named(ctx.names.role(f), *component, "")).await?;
    }
    Ok(())
}

/// One delete pass in reverse creation order.
pub async fn delete(
    clients: &AwsClients,
    config: &EngineConfig,
    artifacts: &Arc<Artifacts>,
    pipeline: &OutboxPipeline,
) -> Result<DeleteOutcome, EngineError> {
    let span = tracing::info_span!(
        "pipeline_delete",
        namespace = pipeline.namespace_or_default(),
        name = pipeline.name_or_empty()
    );
    async move {
        let mut ctx = Ctx::new(clients, config, artifacts, pipeline, true);
        // The table's ARN tells account and region (the failure bucket's name depends on them).
        let table_name = ctx.names.table.clone();
        if let Some(env) = table::observe(&ctx, &table_name)
            .await?
            .and_then(|t| AwsEnv::from_arn(&t.arn))
        {
            ctx.env = env;
        }
        // Alarms first: they watch what the rest of the pass deletes.
        let prefix = ctx.names.alarm_prefix();
        for name in alarm::list(&ctx, &prefix).await? {
            remove(&mut ctx, &alarm::Alarm::named(name, Component::Consumers)).await?;
        }
        // A bus the pipeline does not own is never deleted; our rules on it are, when it is in
        // the pipeline's account (there are none on another account's bus).
        let reachable = match ctx.spec.bus.existing() {
            Some((account, _)) => !ctx.env.is_known() || ctx.env.account == account,
            None => true,
        };
        let bus_exists = reachable && bus::observe(&ctx, &ctx.names.bus.clone()).await?.is_some();
        let consumers = consumers(&ctx, bus_exists).await?;
        remove_consumers(&mut ctx, &consumers, bus_exists).await?;
        if let Some(bus) = desired::owned_bus(&Inputs::of(&ctx)) {
            remove(&mut ctx, &bus).await?;
        }
        let mapping = desired::mapping(&Inputs::of(&ctx), &Default::default());
        remove(&mut ctx, &mapping).await?;
        remove_functions(&mut ctx, &consumers).await?;
        // Also when the spec now names its own destination: an earlier bucket may still be there.
        if ctx.env.is_known() {
            let bucket = crate::engine::bucket::Bucket {
                name: Some(ctx.names.bucket(&ctx.env.account, &ctx.env.region)),
                region: ctx.env.region.clone(),
                tags: ctx.tags.clone(),
            };
            remove(&mut ctx, &bucket).await?;
        }
        let table = desired::table(&Inputs::of(&ctx));
        let progress = remove(&mut ctx, &table).await?;
        let done = progress == Progress::Ready;
        Ok(DeleteOutcome {
            actions: ctx.actions,
            done,
            requeue_after: if done { None } else { Some(SETTLE_REQUEUE) },
        })
    }
    .instrument(span)
    .await
}
