//! Running the controller: `outbox-operator run` checks its flags and the API server, serves
//! metrics and probes, and runs the kube runtime [`Controller`] — directly, or under leader
//! election ([`super::leader`]) with the engine's AWS writes behind the leadership fence — until
//! SIGTERM/SIGINT. The watch only wakes a pipeline for changes that matter
//! ([`changes_that_matter`]): the controller's own status writes do not trigger another pass.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use futures::future::{self, FutureExt, Shared};
use kube::api::ListParams;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::leader::{Elector, follow_leadership};
use super::{Context, FIELD_MANAGER, Watched, error_policy, reconcile};
use crate::config::{Config, LogFormat, RunArgs};
use crate::crd::OutboxPipeline;
use crate::engine::{self, Fence, Reconciler};
use crate::metrics::{Metrics, Readiness};

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
    // Under leader election the engine's AWS writes depend on the fence (down until leading).
    let fence = config.leader_election.as_ref().map(|_| Fence::new());
    let sdk = engine::aws_sdk_config(config.region.clone(), config.endpoint_url.clone()).await;
    let identity = crate::identity::check(&aws_sdk_sts::Client::new(&sdk)).await?;
    info!(account = %identity.account, arn = %identity.arn, "AWS identity");
    let reconciler = engine_reconciler(&config, &sdk, metrics.clone(), fence.clone());
    run_with(client, config, reconciler, metrics, fence).await?;
    Ok(0)
}

/// Runs the metrics endpoint and the controller with `reconciler` until shutdown. Under leader
/// election, `fence` is the one the reconciler's AWS clients check (see [`Fence`]); it is raised
/// only while this replica leads. A lost lease is an error (the process exits non-zero).
pub async fn run_with<R: Reconciler>(
    client: Client,
    config: Config,
    reconciler: R,
    metrics: Arc<Metrics>,
    fence: Option<Fence>,
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
    let trimmer = tokio::spawn(crate::memory::trim_periodically(shutdown.clone()));

    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: Some(config.identity.clone()),
    };
    let mut ctx = Context::new(
        client.clone(),
        reconciler,
        reporter,
        metrics,
        config.resync_period,
    );
    let fence = match (&config.leader_election, fence) {
        (Some(_), None) => Some(Fence::new()),
        (_, fence) => fence,
    };
    if let Some(f) = &fence {
        ctx = ctx.with_fence(f.clone());
    }
    let ctx = Arc::new(ctx);
    let result = match &config.leader_election {
        None => {
            readiness.set(true);
            ctx.metrics.set_leader(true);
            run_controllers(&client, &config, ctx, shutdown.clone()).await;
            Ok(())
        }
        Some(election) => {
            let fence = fence.unwrap_or_default();
            lead_and_run(
                &client,
                &config,
                election,
                ctx,
                shutdown.clone(),
                &readiness,
                fence,
            )
            .await
        }
    };
    // The controller has stopped (shutdown, or a leader-election failure): stop serving too.
    readiness.set(false);
    trimmer.abort();
    server.abort();
    if let Ok(Err(e)) = server.await {
        warn!(error = %e, "metrics server failed");
    }
    info!("stopped");
    result
}

/// Campaigns for the Lease and runs the controller while this replica leads. Shutdown stops the
/// controller, then lowers the fence and releases the lease; a lost lease is an error.
async fn lead_and_run<R: Reconciler>(
    client: &Client,
    config: &Config,
    election: &crate::config::LeaderElection,
    ctx: Arc<Context<R>>,
    shutdown: Trigger,
    readiness: &Readiness,
    fence: Fence,
) -> anyhow::Result<()> {
    let namespace = election
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let elector = Elector::new(
        client.clone(),
        &namespace,
        &election.lease_name,
        &config.identity,
        election.timings,
    );
    elector.check().await.with_context(|| {
        format!(
            "cannot use the leader-election Lease {namespace}/{} (RBAC on coordination.k8s.io leases?)",
            election.lease_name
        )
    })?;
    // The lease is reachable: this replica is a healthy leader or standby.
    readiness.set(true);
    info!(lease = %format!("{namespace}/{}", election.lease_name), identity = %config.identity,
        timings = ?election.timings, "waiting for leadership");
    let (lead, mut leading) = tokio::sync::watch::channel(false);
    let election_task = tokio::spawn(elector.run(fence, lead));
    let metrics = ctx.metrics.clone();
    let result = follow_leadership(&mut leading, shutdown, |stop| {
        metrics.set_leader(true);
        run_controllers(client, config, ctx.clone(), stop)
    })
    .await;
    ctx.metrics.set_leader(false);
    // Dropping the receiver makes the election task lower the fence, release the lease and end.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), election_task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "leader-election task failed"),
        Err(_) => warn!("releasing the lease timed out; it expires on its own"),
    }
    Ok(result?)
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
    let (reader, writer) = reflector::store();
    let triggers = watcher::watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(forget_bookkeeping)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(changes_that_matter(), PredicateConfig::default());
    Controller::for_stream(triggers, reader)
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

/// Drops what the controller never reads from a watched pipeline before the store keeps it:
/// `metadata.managedFields` (a record per field manager of every field it set) and kubectl's
/// `last-applied-configuration` annotation (the whole manifest again). At a thousand pipelines
/// they would be most of the store's memory.
fn forget_bookkeeping(obj: &mut Watched) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove(LAST_APPLIED);
}

/// kubectl's copy of the applied manifest (client-side `kubectl apply`).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The pipelines' controller ([`run_controller`]) and the OutboxAccounts' (their roles assumed,
/// their status written) side by side, until `stop` fires.
pub async fn run_controllers<R: Reconciler>(
    client: &Client,
    config: &Config,
    ctx: Arc<Context<R>>,
    stop: Trigger,
) {
    futures::join!(
        run_controller(client, config, ctx.clone(), stop.clone()),
        super::run_accounts(ctx, stop)
    );
}

/// What wakes a pipeline's reconcile: a change of generation (spec, deletion), annotations
/// (the pause annotation), finalizers or the deletion timestamp. The controller's own status
/// writes change none of them, so they do not trigger another pass.
pub fn changes_that_matter() -> impl Predicate<Watched> + Send + 'static {
    fn deletion(obj: &Watched) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        obj.meta()
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .hash(&mut h);
        Some(h.finish())
    }
    predicates::generation
        .combine(predicates::annotations)
        .combine(predicates::finalizers)
        .combine(deletion)
}

/// The engine as the controller's reconciler, with its AWS calls counted in `metrics`
/// (`outbox_aws_calls_total{operation="dynamodb:DescribeTable"}`) and, under leader election,
/// its AWS writes behind `fence`.
fn engine_reconciler(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    metrics: Arc<Metrics>,
    fence: Option<Fence>,
) -> engine::Engine {
    let observer: engine::CallObserver = Arc::new(move |call: &engine::CallInfo| {
        metrics.aws_call(&format!(
            "{}:{}",
            call.service.to_ascii_lowercase(),
            call.operation
        ));
    });
    let engine = engine::Engine::new(sdk, config.engine.clone()).with_call_observer(observer);
    match fence {
        Some(f) => engine.with_fence(f),
        None => engine,
    }
}
