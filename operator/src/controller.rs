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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use futures::future::{self, FutureExt, Shared};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::{Config, LogFormat, RunArgs};
use crate::crd::{
    ConditionType, FINALIZER, OutboxPipeline, OutboxPipelineStatus, PAUSED_ANNOTATION, Reason,
};
use crate::engine::{self, DeleteOutcome, EngineError, Reconciler, Verb};
use crate::manifest;
use crate::metrics::{Metrics, Readiness};

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
    /// The one Recorder for all Events.
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Converged pipelines are reconciled again after this long (drift repair).
    pub resync_period: Duration,
    /// Consecutive transient failures per pipeline (`namespace/name`).
    attempts: Mutex<HashMap<String, u32>>,
    /// Malformed objects already reported, with the generation reported: the report's own
    /// status write wakes the watch again, and must not be repeated for the same generation.
    malformed: Mutex<HashMap<String, Option<i64>>>,
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
            recorder: Recorder::new(client.clone(), reporter),
            client,
            reconciler,
            metrics,
            resync_period,
            attempts: Mutex::new(HashMap::new()),
            malformed: Mutex::new(HashMap::new()),
        }
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
    let result = async {
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
            ctx.metrics.reconcile_error(e.metric_reason());
            warn!(reason = e.metric_reason(), error = %e, "reconcile failed");
        }
    }
    result
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

async fn apply<R: Reconciler>(
    p: &OutboxPipeline,
    api: &Api<OutboxPipeline>,
    ctx: &Context<R>,
) -> Result<Action, Error> {
    let key = key_of(&p.metadata);
    let generation = p.metadata.generation;
    if is_paused(p) {
        let mut status = p.status.clone().unwrap_or_default();
        status.set_condition(
            ConditionType::Ready,
            false,
            Reason::Paused,
            format!("reconciliation is paused by the annotation {PAUSED_ANNOTATION}; remove it to resume"),
            generation,
            &now(),
        );
        patch_status(api, &p.name_any(), &status).await?;
        ctx.metrics.set_pipeline_ready(&key, false);
        info!("paused: no AWS call");
        return Ok(Action::await_change());
    }

    if let Err(errors) = manifest::validate(p) {
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let error = EngineError::InvalidSpec { message };
        let mut status = p.status.clone().unwrap_or_default();
        status.observed_generation = generation;
        status.set_condition(
            ConditionType::Ready,
            false,
            Reason::InvalidSpec,
            error.to_string(),
            generation,
            &now(),
        );
        patch_status(api, &p.name_any(), &status).await?;
        ctx.metrics.set_pipeline_ready(&key, false);
        publish_error(ctx, p, "Reconcile", &error).await;
        return Err(Error::Engine(error));
    }

    let converged_before = p
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation == generation && s.is_ready());
    let outcome = ctx.reconciler.reconcile(p).await;
    let mut status = outcome.status;
    status.observed_generation = generation;
    keep_transition_times(&mut status, p.status.as_ref());
    if let Some(error) = &outcome.error {
        // The engine reflects its error in the status; make sure Ready says it.
        let reflected = status
            .condition(ConditionType::Ready)
            .is_some_and(|c| c.status == "False" && c.reason == error.reason().as_str());
        if !reflected {
            status.set_condition(
                ConditionType::Ready,
                false,
                error.reason(),
                error.to_string(),
                generation,
                &now(),
            );
        }
    }
    patch_status(api, &p.name_any(), &status).await?;
    ctx.metrics.set_pipeline_ready(&key, status.is_ready());

    for action in &outcome.actions {
        // A change while the spec was unchanged and converged repairs drift made outside.
        let reason = match action.verb {
            Verb::Create | Verb::Update if converged_before => "DriftRepaired",
            verb => verb_reason(verb),
        };
        publish_action(ctx, p, reason, action).await;
    }
    if let Some(error) = outcome.error {
        publish_error(ctx, p, "Reconcile", &error).await;
        return Err(Error::Engine(error));
    }
    Ok(match outcome.requeue_after {
        Some(hint) => Action::requeue(hint),
        None => Action::requeue(ctx.resync_period),
    })
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
        Err(error) => {
            set_deleting(api, p, error.reason(), format!("delete failed: {error}")).await?;
            publish_error(ctx, p, "Delete", &error).await;
            Err(Error::Engine(error))
        }
    }
}

async fn set_deleting(
    api: &Api<OutboxPipeline>,
    p: &OutboxPipeline,
    reason: Reason,
    message: String,
) -> Result<(), Error> {
    let mut status = p.status.clone().unwrap_or_default();
    status.set_condition(
        ConditionType::Ready,
        false,
        reason,
        message,
        p.metadata.generation,
        &now(),
    );
    patch_status(api, &p.name_any(), &status).await
}

/// Keeps each condition's lastTransitionTime from the previous status when its status did not
/// change. Besides being what the field means, it makes the status of a converged pipeline
/// identical from pass to pass, so the server-side apply is a no-op that does not wake the watch
/// (the controller would otherwise trigger itself with every status write).
fn keep_transition_times(
    status: &mut OutboxPipelineStatus,
    previous: Option<&OutboxPipelineStatus>,
) {
    let Some(previous) = previous else { return };
    for condition in &mut status.conditions {
        if let Some(old) = previous
            .conditions
            .iter()
            .find(|c| c.type_ == condition.type_ && c.status == condition.status)
        {
            condition
                .last_transition_time
                .clone_from(&old.last_transition_time);
        }
    }
}

fn verb_reason(verb: Verb) -> &'static str {
    match verb {
        Verb::Create => "Created",
        Verb::Update => "Updated",
        Verb::Delete => "Deleted",
        Verb::Adopt => "Adopted",
        Verb::Retain => "Retained",
    }
}

/// Writes the whole status by server-side apply with [`FIELD_MANAGER`] (forced: this controller
/// is the status's only writer).
///
/// Generic over the response type: a malformed object's status is written through
/// `Api<Watched>`, whose response (the malformed object again) still deserializes.
async fn patch_status<K>(
    api: &Api<K>,
    name: &str,
    status: &OutboxPipelineStatus,
) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = Patch::Apply(json!({
        "apiVersion": OutboxPipeline::api_version(&()),
        "kind": OutboxPipeline::kind(&()),
        "status": status,
    }));
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &patch)
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// A Normal Event for one AWS change. The Event's action names the resource: the Recorder folds
/// Events with the same reason and action into one series (keeping the first note), so a distinct
/// action keeps "created table X" and "created role Y" apart.
async fn publish_action<R>(
    ctx: &Context<R>,
    p: &OutboxPipeline,
    reason: &str,
    action: &engine::Action,
) {
    let resource = truncate(action.resource.clone(), ACTION_LIMIT);
    publish(
        ctx,
        p,
        EventType::Normal,
        reason,
        &resource,
        action.to_string(),
    )
    .await;
}

async fn publish_error<R>(ctx: &Context<R>, p: &OutboxPipeline, action: &str, error: &EngineError) {
    publish(
        ctx,
        p,
        EventType::Warning,
        error.reason().as_str(),
        action,
        error.to_string(),
    )
    .await;
}

/// Publishes an Event about the pipeline. Events are best effort: a failure is logged, and the
/// status (already written) stays the source of truth.
async fn publish<R>(
    ctx: &Context<R>,
    p: &OutboxPipeline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_ref(ctx, &p.object_ref(&()), type_, reason, action, note).await;
}

async fn publish_ref<R>(
    ctx: &Context<R>,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, NOTE_LIMIT)),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        warn!(error = %e, reason, "cannot publish Event");
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub(3);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// An object that no longer deserializes into the current `OutboxPipeline` type: log, metric
/// (by the caller), a Warning Event and Ready=False, then wait for a change. Nothing is done in
/// AWS (its spec cannot be read), and a deletion waits until the object is fixed.
async fn report_malformed<R>(
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

/// A one-shot trigger any number of tasks can await (shutdown requested, lease lost).
pub type Trigger = Shared<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Makes a [`Trigger`] that fires when `fut` completes.
pub fn trigger(fut: impl Future<Output = ()> + Send + 'static) -> Trigger {
    fut.boxed().shared()
}

fn shutdown_signal() -> Trigger {
    trigger(async {
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut sigterm) => {
                    sigterm.recv().await;
                }
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the operator");
                    future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        info!("shutdown requested: finishing running reconciliations");
    })
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Another part of the process may have installed a subscriber already; keep it.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `outbox-operator run`: validates the flags, checks the API server, then runs the controller
/// (under leader election unless disabled) until SIGTERM/SIGINT. Returns the exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let config = args.into_config()?;
    init_tracing(config.log_format);
    config.warnings().iter().for_each(|w| warn!("{w}"));
    let client = Client::try_default().await.context(
        "cannot configure a Kubernetes client: no in-cluster service account and no usable \
         kubeconfig (set KUBECONFIG or ~/.kube/config)",
    )?;
    let version = client.apiserver_version().await.context(
        "cannot reach the Kubernetes API server (check the kubeconfig's server and credentials)",
    )?;
    info!(
        server = %version.git_version,
        namespace = config.namespace.as_deref().unwrap_or("<all>"),
        "connected to the Kubernetes API server"
    );
    let pipelines: Api<OutboxPipeline> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    pipelines.list_metadata(&ListParams::default().limit(1)).await.context(
        "cannot list OutboxPipelines: is the CRD installed (outbox-operator crd | kubectl apply -f -) \
         and may this identity list them?",
    )?;

    let metrics = Arc::new(Metrics::new());
    let reconciler = engine_reconciler(&config, metrics.clone()).await;
    run_with(client, config, reconciler, metrics).await?;
    Ok(0)
}

/// Runs the metrics endpoint and the controller with `reconciler` until shutdown.
pub async fn run_with<R: Reconciler>(
    client: Client,
    config: Config,
    reconciler: R,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let readiness = Arc::new(Readiness::default());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.metrics_port))
        .await
        .with_context(|| format!("cannot listen on metrics port {}", config.metrics_port))?;
    let server = tokio::spawn(crate::metrics::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    info!(
        port = config.metrics_port,
        "serving /metrics, /healthz, /readyz"
    );

    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: Some(config.identity.clone()),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        reconciler,
        reporter,
        metrics,
        config.resync_period,
    ));
    let result = match &config.leader_election {
        None => {
            readiness.set(true);
            run_controller(&client, &config, ctx, shutdown.clone()).await;
            Ok(())
        }
        Some(election) => {
            lead_and_run(
                &client,
                &config,
                election,
                ctx,
                shutdown.clone(),
                &readiness,
            )
            .await
        }
    };
    // The controller has stopped (shutdown, or a leader-election failure): stop serving too.
    readiness.set(false);
    server.abort();
    if let Ok(Err(e)) = server.await {
        warn!(error = %e, "metrics server failed");
    }
    info!("stopped");
    result
}

/// Holds the Lease and runs the controller only while this replica leads. A lost lease stops the
/// controller (after the running reconciliations finish); shutdown releases the lease.
async fn lead_and_run<R: Reconciler>(
    client: &Client,
    config: &Config,
    election: &crate::config::LeaderElection,
    ctx: Arc<Context<R>>,
    shutdown: Trigger,
    readiness: &Readiness,
) -> anyhow::Result<()> {
    let namespace = election
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&namespace)
        .with_identity(&config.identity)
        .build()
        .await
        .with_context(|| {
            format!(
                "cannot use the leader-election Lease {namespace}/{} (RBAC on coordination.k8s.io leases?)",
                election.lease_name
            )
        })?;
    let (mut leading, lease_task) = manager.watch().await;
    // The lease is reachable: this replica is a healthy leader or standby.
    readiness.set(true);
    info!(lease = %format!("{namespace}/{}", election.lease_name), identity = %config.identity, "waiting for leadership");
    let result = follow_leadership(&mut leading, shutdown, |stop| {
        run_controller(client, config, ctx.clone(), stop)
    })
    .await;
    // Dropping the receiver makes the lease task release the lease and end.
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => info!("released the lease"),
        Ok(Err(e)) => warn!(error = %e, "cannot release the lease; it expires on its own"),
        Err(e) => warn!(error = %e, "leader-election task failed"),
    }
    Ok(result?)
}

/// The lease manager stopped reporting leadership (its task ended) while not shutting down.
#[derive(Debug, thiserror::Error)]
#[error("leader election stopped unexpectedly")]
pub struct LeaderElectionStopped;

/// Runs `controller` only while `leading` says this replica holds the lease, until `shutdown`.
///
/// `controller` is given a trigger that fires when the lease is lost or shutdown is requested;
/// it must stop taking work then and return once its running work is done. After a loss it is
/// started again when the lease is regained.
pub async fn follow_leadership<F, Fut>(
    leading: &mut tokio::sync::watch::Receiver<bool>,
    shutdown: Trigger,
    mut controller: F,
) -> Result<(), LeaderElectionStopped>
where
    F: FnMut(Trigger) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            biased;
            () = shutdown.clone() => return Ok(()),
            changed = leading.wait_for(|l| *l) => if changed.is_err() {
                return Err(LeaderElectionStopped);
            },
        }
        info!("acquired the lease: starting the controller");
        let mut watch_loss = leading.clone();
        let shutdown_now = shutdown.clone();
        let stop = trigger(async move {
            tokio::select! {
                // An error means the lease manager is gone: no longer leading either.
                _ = watch_loss.wait_for(|l| !*l) => {}
                () = shutdown_now => {}
            }
        });
        controller(stop).await;
        if shutdown.peek().is_some() {
            return Ok(());
        }
        warn!("lost the lease: stopped reconciling; waiting to lead again");
    }
}

/// Runs the controller (watching all namespaces or `config.namespace`, `config.concurrency`
/// reconciliations at a time) until `stop` fires, then lets running reconciliations finish.
pub async fn run_controller<R: Reconciler>(
    client: &Client,
    config: &Config,
    ctx: Arc<Context<R>>,
    stop: Trigger,
) {
    let api: Api<Watched> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    Controller::new(api, watcher::Config::default().any_semantic())
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => debug!(%object, ?action, "reconciled"),
                // Already logged with its span by `reconcile`.
                Err(controller::Error::ReconcilerFailed(_, object)) => {
                    debug!(%object, "reconcile failed")
                }
                // The watcher retries with backoff; the stream does not end.
                Err(e) => warn!(error = %e, "controller: watch or queue error"),
            }
        })
        .await;
}

/// The engine as the controller's reconciler, with its AWS calls counted in `metrics`
/// (`outbox_aws_calls_total{operation="dynamodb:DescribeTable"}`).
async fn engine_reconciler(config: &Config, metrics: Arc<Metrics>) -> engine::Engine {
    let sdk = engine::aws_sdk_config(config.region.clone(), config.endpoint_url.clone()).await;
    let observer: engine::CallObserver = Arc::new(move |call: &engine::CallInfo| {
        metrics.aws_call(&format!(
            "{}:{}",
            call.service.to_ascii_lowercase(),
            call.operation
        ));
    });
    engine::Engine::new(&sdk, config.engine.clone()).with_call_observer(observer)
}
