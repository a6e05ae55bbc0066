//! The delete pass: every resource of a pipeline in reverse creation order, honouring the
//! deletion policies (a retained table or bus counts as done), and the clean-up of a consumer's
//! invoke permission on a user's function, shared with the removal of a consumer that left the spec.

use tracing::Instrument;

use crate::crd::OutboxPipeline;

use super::SETTLE_REQUEUE;
use crate::engine::context::{Ctx, Progress};
use crate::engine::{
    AwsClients, Component, DeleteOutcome, EngineConfig, EngineError, bucket, bus, function, iam,
    mapping, permission, rule, table, target,
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
            permission::delete(ctx, consumer, &t.arn).await?;
        }
    }
    Ok(())
}

/// One delete pass in reverse creation order.
pub async fn delete(
    clients: &AwsClients,
    config: &EngineConfig,
    pipeline: &OutboxPipeline,
) -> Result<DeleteOutcome, EngineError> {
    let span = tracing::info_span!(
        "pipeline_delete",
        namespace = pipeline.namespace_or_default(),
        name = pipeline.name_or_empty()
    );
    async move {
        let mut ctx = Ctx::new(clients, config, pipeline, true);
        let spec = &pipeline.spec;
        // The table's ARN tells account and region (the failure bucket's name depends on them).
        let table_name = ctx.names.table.clone();
        if let Some(env) = table::observe(&ctx, &table_name)
            .await?
            .and_then(|t| crate::engine::context::AwsEnv::from_arn(&t.arn))
        {
            ctx.env = env;
        }
        // Consumers: the spec's and any whose rule is still on the bus.
        let mut consumers: Vec<String> = spec.consumers.iter().map(|c| c.name.clone()).collect();
        let bus_exists = bus::observe(&ctx, &ctx.names.bus.clone()).await?.is_some();
        if bus_exists {
            for r in rule::list(&ctx).await? {
                if let Some(c) = ctx.names.consumer_of_rule(&r)
                    && !consumers.iter().any(|x| x == c)
                {
                    consumers.push(c.to_owned());
                }
            }
        }
        for c in &consumers {
            let user_fn = spec
                .consumers
                .iter()
                .find(|s| &s.name == c)
                .and_then(|s| s.target.lambda_function_arn.clone());
            if let Some(f) = user_fn {
                permission::delete(&mut ctx, c, &f).await?;
            }
            if bus_exists {
                let rule_name = ctx.names.rule(c);
                if !spec.consumers.iter().any(|s| &s.name == c) {
                    // A consumer that left the spec: its target tells a user's function.
                    remove_user_function_permissions(&mut ctx, c).await?;
                }
                rule::delete(&mut ctx, &rule_name).await?;
            }
        }
        bus::delete(&mut ctx).await?;
        let relay_fn = ctx.names.relay_function.clone();
        mapping::delete(&mut ctx, &relay_fn).await?;
        let mut functions = vec![
            (Component::Relay, relay_fn),
            (Component::Relay, ctx.names.writer_function.clone()),
        ];
        for c in &consumers {
            functions.push((Component::Consumers, ctx.names.consumer_function(c)));
        }
        for (component, f) in &functions {
            function::delete(&mut ctx, *component, f).await?;
        }
        for (component, f) in &functions {
            iam::delete(&mut ctx, *component, f).await?;
        }
        // Also when the spec now names its own destination: an earlier bucket may still be there.
        if ctx.env.is_known() {
            bucket::delete(&mut ctx).await?;
        }
        let mut waits: Vec<String> = Vec::new();
        if let Progress::Waiting(m) = table::delete(&mut ctx).await? {
            waits.push(m);
        }
        let done = waits.is_empty();
        Ok(DeleteOutcome {
            actions: ctx.actions,
            done,
            requeue_after: if done { None } else { Some(SETTLE_REQUEUE) },
        })
    }
    .instrument(span)
    .await
}
