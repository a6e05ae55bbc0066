//! Objects that no longer deserialize into the current `OutboxPipeline` type (stored before a
//! schema change). The watcher reads [`DeserializeGuard`](kube::core::error_boundary::DeserializeGuard)s,
//! so such an object never stops the watch: it is reported on its own (log, metric, Warning Event,
//! Ready=False InvalidSpec with the parse error) once per generation, nothing is done in AWS for
//! it, and the other pipelines keep being reconciled.

use std::sync::PoisonError;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use tracing::error;

use super::status::{patch_status, publish_ref};
use super::{Context, Error, Watched};
use crate::crd::{ConditionType, OutboxPipeline, OutboxPipelineStatus, Reason, now};

/// An object that no longer deserializes into the current `OutboxPipeline` type: log, metric
/// (by the caller), a Warning Event and Ready=False, then wait for a change. Nothing is done in
/// AWS (its spec cannot be read), and a deletion waits until the object is fixed.
pub(super) async fn report_malformed<R>(
    invalid: &InvalidObject,
    key: &str,
    ctx: &Context<R>,
) -> Result<Action, Error> {
    let meta = &invalid.metadata;
    let already = ctx
        .malformed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
        .is_some_and(|g| *g == meta.generation);
    if already {
        return Ok(Action::await_change());
    }
    let message = format!(
        "cannot read this OutboxPipeline (fix or re-apply it): {}",
        invalid.error
    );
    error!(error = %invalid.error, "malformed OutboxPipeline; skipping it");
    ctx.metrics.reconcile_error("Malformed");
    let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Ok(Action::await_change());
    };
    let reference = ObjectReference {
        api_version: Some(OutboxPipeline::api_version(&()).into_owned()),
        kind: Some(OutboxPipeline::kind(&()).into_owned()),
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    };
    publish_ref(
        ctx,
        &reference,
        EventType::Warning,
        Reason::InvalidSpec.as_str(),
        "Reconcile",
        message.clone(),
    )
    .await;
    let mut status = OutboxPipelineStatus::default();
    status.set_condition(
        ConditionType::Ready,
        false,
        Reason::InvalidSpec,
        message,
        meta.generation,
        &now(),
    );
    let api: Api<Watched> = Api::namespaced(ctx.client.clone(), namespace);
    patch_status(&api, name, &status).await?;
    ctx.malformed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.to_owned(), meta.generation);
    Ok(Action::await_change())
}
