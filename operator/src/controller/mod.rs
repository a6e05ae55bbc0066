//! `outbox-operator run`: the Kubernetes glue around the engine.
//!
//! A kube runtime [`Controller`] watches OutboxPipelines (all namespaces or one) and calls
//! [`reconcile`], which runs inside kube's [`finalizer`] helper:
//!
//! - **Apply**: paused (annotation [`PAUSED_ANNOTATION`]) → status Paused, no AWS call; an
//!   invalid spec ([`manifest::validate`]) → Ready=False InvalidSpec, no AWS call; otherwise the
//!   engine's reconcile, its status written by server-side apply on the status subresource with
//!   one field manager ([`FIELD_MANAGER`]), an Event per AWS change, a Warning Event per error.
//! - **Cleanup**: the engine's delete, repeated until it reports done; then the helper removes
//!   the finalizer [`FINALIZER`].
//!
//! Requeue policy ([`error_policy`] and the Apply result): converged → after the resync period;
//! Progressing → after the engine's hint; transient errors → per-object exponential backoff
//! ([`BACKOFF_BASE`] doubling up to [`BACKOFF_MAX`]), reset on success; terminal errors → Ready=False
//! with the reason and a retry only at the resync period (a spec change retriggers at once).
//!
//! The watcher reads [`DeserializeGuard`]s, so an object that no longer deserializes (written
//! before a schema change) is reported on its own (log, metric, Warning Event, Ready=False) while
//! the others keep being reconciled.
//!
//! [`run`] wires it up: configuration, the API server check, metrics, leader election on a Lease
//! and graceful shutdown on SIGTERM/SIGINT.
//!
//! Modules: this one holds the reconcile itself (apply, cleanup, requeue policy); `status` the
//! status writes and Events; `malformed` objects that no longer parse; `leader` leader election
//! and the leadership fence; `run` the process around the controller. Under leader election
//! nothing is done while not leading: a reconcile does not start, a running one makes no AWS
//! write (the engine's fence refuses it) and writes no status.

mod account;
pub mod events;
mod leader;
mod malformed;
mod replay;
mod run;
mod status;

pub use account::{account_error_policy, reconcile_account, run_accounts};
pub use leader::{Elector, LOSS_GRACE, LeadershipEnded, LeaseTimings, follow_leadership};
pub use run::{Trigger, changes_that_matter, run, run_controller, run_with, trigger};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::api::ObjectMeta;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::finalizer::{self, Event as Finalizer, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::crd::{
    ConditionType, FINALIZER, OutboxPipeline, OutboxPipelineStatus, PAUSED_ANNOTATION, Reason,
};
use crate::engine::{DeleteOutcome, EngineError, Fence, Reconciler, Verb};
use crate::manifest;
use crate::metrics::Metrics;
use malformed::report_malformed;
use status::{
    not_ready, outcome_status, patch_status, publish_action, publish_error, publish_health_change,
    set_deleting, verb_reason,
};

/// The one field manager of every status write (and the Events' reporting controller).
pub const FIELD_MANAGER: &str = "outbox-operator";
/// First retry delay after a transient error; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Cap of the per-object backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Retry delay while a delete is still in progress and the engine gave no hint.
pub const DELETE_POLL: Duration = Duration::from_secs(10);
/// Events' notes are at most 1 kB.
const NOTE_LIMIT: usize = 1024;
/// Events' actions are at most 128 characters.
const ACTION_LIMIT: usize = 128;

/// What the watcher yields: the pipeline, or the metadata and error of one that does not
/// deserialize.
pub type Watched = DeserializeGuard<OutboxPipeline>;

/// Why a reconciliation did not finish; [`error_policy`] decides when to retry from it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (status patch, finalizer patch).
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The engine (or the spec check before it) stopped; the status and an Event say why.
    #[error(transparent)]
    Engine(EngineError),
    /// The engine's delete has not finished (e.g. a function still being deleted); the finalizer
    /// stays until it has.
    #[error("deletion in progress: AWS resources remain")]
    DeletionPending { requeue_after: Option<Duration> },
    /// The pipeline is being deleted while paused: nothing is deleted in AWS until the pause
    /// annotation is removed.
    #[error("deletion waits: the pipeline is paused ({PAUSED_ANNOTATION})")]
    DeletionPaused,
    /// The finalizer helper failed outside our code.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The pipeline has no namespace (OutboxPipeline is namespaced; only a hand-made object lacks one).
    #[error("the pipeline has no namespace")]
    NoNamespace,
}

impl Error {
    /// The `reason` label of `outbox_reconcile_errors_total`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Engine(EngineError::NotLeading { .. }) => "NotLeading",
            Error::Engine(e) => e.reason().as_str(),
            Error::DeletionPending { .. } | Error::DeletionPaused => Reason::Deleting.as_str(),
            Error::Kube(_) | Error::Finalizer(_) | Error::NoNamespace => "Kubernetes",
        }
    }
}

impl From<finalizer::Error<Error>> for Error {
    fn from(e: finalizer::Error<Error>) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                Error::Kube(e)
            }
            other => Error::Finalizer(other.to_string()),
        }
    }
}

/// State shared by all reconciliations.
pub struct Context<R> {
    pub client: Client,
    /// The AWS side: the engine, or a fake in tests.
    pub reconciler: R,
    /// The Recorder for all Events (renewed as its cache expires).
    pub events: events::Events,
    pub metrics: Arc<Metrics>,
    /// Converged pipelines are reconciled again after this long (drift repair).
    pub resync_period: Duration,
    /// Consecutive transient failures per pipeline (`namespace/name`).
    attempts: Mutex<HashMap<String, u32>>,
    /// Malformed objects already reported, with the generation reported: the report's own
    /// status write wakes the watch again, and must not be repeated for the same generation.
    malformed: Mutex<HashMap<String, Option<i64>>>,
    /// Under leader election: up while this replica leads (the engine's AWS clients check the
    /// same fence). `None`: always acting.
    fence: Option<Fence>,
}

impl<R> Context<R> {
    pub fn new(
        client: Client,
        reconciler: R,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        resync_period: Duration,
    ) -> Self {
        Context {
            events: events::Events::new(client.clone(), reporter),
            client,
            reconciler,
            metrics,
            resync_period,
            attempts: Mutex::new(HashMap::new()),
            malformed: Mutex::new(HashMap::new()),
            fence: None,
        }
    }

    /// Acts only while `fence` is up: a reconcile does not start and writes no status while it
    /// is down. Give the engine the same fence ([`crate::engine::Engine::with_fence`]).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// False while the fence is down (this replica is not, or no longer sure to be, the leader).
    pub fn leading(&self) -> bool {
        self.fence.as_ref().is_none_or(Fence::is_up)
    }

    /// The delay before the next retry of `key` after one more transient failure.
    fn next_backoff(&self, key: &str) -> Duration {
        let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = attempts.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    fn reset_backoff(&self, key: &str) {
        self.attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// `BACKOFF_BASE * 2^(attempt-1)`, capped at [`BACKOFF_MAX`].
pub fn backoff_delay(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX)
}

fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// True when the pipeline carries `outbox.dev/paused: "true"`.
pub fn is_paused(pipeline: &OutboxPipeline) -> bool {
    pipeline
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// One reconciliation of one watched object; the controller's reconciler.
pub async fn reconcile<R: Reconciler>(
    obj: Arc<Watched>,
    ctx: Arc<Context<R>>,
) -> Result<Action, Error> {
    let start = Instant::now();
    let key = key_of(obj.meta());
    let span = info_span!(
        "reconcile",
        namespace = obj.meta().namespace.as_deref().unwrap_or(""),
        name = obj.meta().name.as_deref().unwrap_or("")
    );
    ctx.events.expire();
    let result = async {
        if !ctx.leading() {
            // The controller is stopping; this pass must not start.
            return Err(not_leading("reconcile", &key));
        }
        match &obj.0 {
            Ok(pipeline) => {
                ctx.malformed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key);
                reconcile_pipeline(Arc::new(pipeline.clone()), &ctx).await
            }
            Err(invalid) => report_malformed(invalid, &key, &ctx).await,
        }
    }
    .instrument(span.clone())
    .await;
    ctx.metrics.reconciled(start.elapsed());
    let _entered = span.enter();
    match &result {
        Ok(action) => {
            ctx.reset_backoff(&key);
            debug!(?action, "reconciled");
        }
        Err(e @ (Error::DeletionPending { .. } | Error::DeletionPaused)) => {
            info!(reason = e.metric_reason(), "{e}");
        }
        Err(e) => {
            let reason = e.metric_reason();
            ctx.metrics.reconcile_error(reason);
            if matches!(e, Error::Engine(e) if e.reason() == Reason::InternalError) {
                error!(reason, error = %e, "reconcile failed: a defect in the operator");
            } else {
                warn!(reason, error = %e, "reconcile failed");
            }
        }
    }
    result
}

fn not_leading(operation: &str, key: &str) -> Error {
    Error::Engine(EngineError::NotLeading {
        operation: operation.to_owned(),
        resource: format!("OutboxPipeline {key}"),
    })
}

/// Reads the pipeline from the API server (not the watch cache): false when it is gone, was
/// replaced by another object of the same name, or is being deleted. A replica whose cache lags
/// (cut off from the API server, or just slow) must not re-create what a deletion removed.
async fn still_wanted(api: &Api<OutboxPipeline>, p: &OutboxPipeline) -> Result<bool, Error> {
    let fresh = api.get_opt(&p.name_any()).await.map_err(Error::Kube)?;
    Ok(fresh.is_some_and(|f| {
        f.metadata.deletion_timestamp.is_none() && f.metadata.uid == p.metadata.uid
    }))
}

/// When to retry after [`reconcile`] failed.
pub fn error_policy<R>(obj: Arc<Watched>, error: &Error, ctx: Arc<Context<R>>) -> Action {
    let key = key_of(obj.meta());
    match error {
        Error::DeletionPending { requeue_after } => {
            ctx.reset_backoff(&key);
            Action::requeue(requeue_after.unwrap_or(DELETE_POLL))
        }
        // Removing the annotation is a change, which retriggers.
        Error::DeletionPaused => Action::await_change(),
        // Needs a change (spec, permissions, a foreign resource) first: no hot loop.
        Error::Engine(e) if !e.is_transient() => {
            ctx.reset_backoff(&key);
            Action::requeue(ctx.resync_period)
        }
        _ => Action::requeue(ctx.next_backoff(&key)),
    }
}

async fn reconcile_pipeline<R: Reconciler>(
    pipeline: Arc<OutboxPipeline>,
    ctx: &Context<R>,
) -> Result<Action, Error> {
    let namespace = pipeline.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<OutboxPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, pipeline, |event| async {
        match event {
            Finalizer::Apply(p) => apply(&p, &api, ctx).await,
            Finalizer::Cleanup(p) => cleanup(&p, &api, ctx).await,
        }
    })
    .await
    .map_err(Error::from)
}

/// The Apply side of the finalizer: the guards (paused, invalid spec, no longer wanted), then
/// the engine's reconcile, its status written and its changes published as Events.
async fn apply<R: Reconciler>(
    p: &OutboxPipeline,
    api: &Api<OutboxPipeline>,
    ctx: &Context<R>,
) -> Result<Action, Error> {
    if is_paused(p) {
        return pause(p, api, ctx).await;
    }
    if let Err(errors) = manifest::validate(p) {
        return refuse_invalid(p, api, ctx, &errors).await;
    }
    if let Some(error) = account::guard(p, ctx).await? {
        return refuse(p, api, ctx, error).await;
    }
    if !still_wanted(api, p).await? {
        info!("the pipeline is gone or being deleted: no AWS change in this pass");
        return Ok(Action::await_change());
    }
    let converged_before = p
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation == p.metadata.generation && s.is_ready());
    let outcome = ctx.reconciler.reconcile(p).await;
    // Not leading (any more): the new leader owns the status; write nothing.
    if let Some(e @ EngineError::NotLeading { .. }) = &outcome.error {
        return Err(Error::Engine(e.clone()));
    }
    if !ctx.leading() {
        return Err(not_leading("status write", &key_of(&p.metadata)));
    }
    let mut status = outcome_status(p, outcome.status, outcome.error.as_ref());
    write_status(p, api, ctx, &status).await?;
    publish_health_change(ctx, p, &status).await;
    for action in &outcome.actions {
        publish_action(ctx, p, action_reason(action.verb, converged_before), action).await;
    }
    if let Some(error) = outcome.error {
        publish_error(ctx, p, "Reconcile", &error).await;
        return Err(Error::Engine(error));
    }
    // The annotation outbox.dev/replay asks for a replay of the parked batches (once per token).
    if status.is_ready()
        && let Some(token) = replay::pending(p)
    {
        replay::run(p, api, ctx, &mut status, token).await?;
    }
    Ok(Action::requeue(
        outcome.requeue_after.unwrap_or(ctx.resync_period),
    ))
}

/// Paused: Ready=False Paused, no AWS call; the next pass comes with the next change (removing
/// the annotation is one).
async fn pause<R>(
    p: &OutboxPipeline,
    api: &Api<OutboxPipeline>,
    ctx: &Context<R>,
) -> Result<Action, Error> {
    let message = format!(
        "reconciliation is paused by the annotation {PAUSED_ANNOTATION}; remove it to resume"
    );
    write_status(p, api, ctx, &not_ready(p, Reason::Paused, message)).await?;
    info!("paused: no AWS call");
    Ok(Action::await_change())
}

/// An invalid spec: Ready=False InvalidSpec for this generation and a Warning Event, no AWS call.
async fn refuse_invalid<R>(
    p: &OutboxPipeline,
    api: &Api<OutboxPipeline>,
    ctx: &Context<R>,
    errors: &[manifest::FieldError],
) -> Result<Action, Error> {
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    refuse(p, api, ctx, EngineError::InvalidSpec { message }).await
}

/// A pass refused before the engine (invalid spec, an account that does not allow the namespace
/// or is not Ready): Ready=False with the error's reason for this generation and a Warning
/// Event, no AWS call.
async fn refuse<R>(
    p: &OutboxPipeline,
    api: &Api<OutboxPipeline>,
    ctx: &Context<R>,
    error: EngineError,
) -> Result<Action, Error> {
    let mut status = not_ready(p, error.reason(), error.to_string());
    status.observed_generation = p.metadata.generation;
    write_status(p, api, ctx, &status).await?;
    publish_error(ctx, p, "Reconcile", &error).await;
    Err(Error::Engine(error))
}

/// Writes `status` unless the pipeline already has exactly this status (a resync of a converged
/// pipeline writes nothing), and sets the pipeline's Ready gauge from it.
async fn write_status<R>(
    p: &OutboxPipeline,
    api: &Api<OutboxPipeline>,
    ctx: &Context<R>,
    status: &OutboxPipelineStatus,
) -> Result<(), Error> {
    if let Some(status) = status::to_write(p.status.as_ref(), status) {
        patch_status(api, &p.name_any(), &status).await?;
    }
    let key = key_of(&p.metadata);
    ctx.metrics.set_pipeline_ready(&key, status.is_ready());
    if let Some(healthy) = status.condition(ConditionType::Healthy) {
        let age = status
            .data_plane
            .as_ref()
            .and_then(|d| d.iterator_age_seconds)
            .unwrap_or(0);
        ctx.metrics.set_pipeline_health(&key, &healthy.status, age);
    }
    Ok(())
}

/// The Event reason of an AWS change: a change while the spec was unchanged and converged
/// repairs drift made outside.
fn action_reason(verb: Verb, converged_before: bool) -> &'static str {
    match verb {
        Verb::Create | Verb::Update if converged_before => "DriftRepaired",
        verb => verb_reason(verb),
    }
}

async fn cleanup<R: Reconciler>(
    p: &OutboxPipeline,
    api: &Api<OutboxPipeline>,
    ctx: &Context<R>,
) -> Result<Action, Error> {
    let key = key_of(&p.metadata);
    if is_paused(p) {
        set_deleting(
            api,
            p,
            Reason::Paused,
            format!("deletion waits: the pipeline is paused; remove the annotation {PAUSED_ANNOTATION} to delete its AWS resources"),
        )
        .await?;
        return Err(Error::DeletionPaused);
    }
    // A pipeline its account never admitted made nothing in AWS: no AWS (or STS) call.
    if p.status.as_ref().is_none_or(|s| s.table_arn.is_none())
        && let Some(e @ EngineError::InvalidSpec { .. }) = account::guard(p, ctx).await?
    {
        info!(error = %e, "nothing was created in the account: no AWS call on delete");
        return Ok(Action::await_change());
    }
    match ctx.reconciler.delete(p).await {
        Ok(DeleteOutcome {
            actions,
            done,
            requeue_after,
        }) => {
            for action in &actions {
                publish_action(ctx, p, verb_reason(action.verb), action).await;
            }
            if done {
                ctx.metrics.forget_pipeline(&key);
                info!("AWS resources deleted; removing the finalizer");
                Ok(Action::await_change())
            } else {
                set_deleting(
                    api,
                    p,
                    Reason::Deleting,
                    "deleting the pipeline's AWS resources".to_owned(),
                )
                .await?;
                Err(Error::DeletionPending { requeue_after })
            }
        }
        Err(error @ EngineError::NotLeading { .. }) => Err(Error::Engine(error)),
        Err(error) => {
            set_deleting(api, p, error.reason(), format!("delete failed: {error}")).await?;
            publish_error(ctx, p, "Delete", &error).await;
            Err(Error::Engine(error))
        }
    }
}
