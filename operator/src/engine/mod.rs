//! The reconcile engine: `OutboxPipeline` spec → AWS, shared by the controller and the CLI.
//!
//! One module per AWS resource, each with observe → desired (pure) → diff (pure) → apply.
//! This file holds the engine's public surface: [`Engine`] and the [`Reconciler`] trait the
//! controller is generic over, the configuration, the outcome types and the error categories.
//! No Kubernetes types beyond the spec and status.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::crd::{OutboxPipeline, OutboxPipelineStatus};

pub mod account;
pub mod alarm;
pub mod artifacts;
pub mod bucket;
pub mod bus;
mod clients;
pub mod context;
pub mod driver;
pub mod errors;
mod fence;
pub mod function;
pub mod health;

pub mod iam;
pub mod loggroup;
pub mod mapping;
pub mod names;
pub mod observe;
pub mod pattern;
pub mod permission;
mod pipeline;
pub mod preflight;
pub mod queues;
pub mod replay;
pub mod rule;
pub mod table;
pub mod tags;
pub mod target;

use clients::Hooks;
pub use clients::{AwsClients, CallInfo, CallObserver, aws_sdk_config, is_mutating};
pub use errors::{EngineError, ErrorClass};
pub use fence::{Fence, NotLeading};
pub(crate) use fence::{FenceInterceptor, ReadOnlyInterceptor, not_leading_error};

enum ClientSource {
    Sdk(Box<aws_config::SdkConfig>),
    Fixed(AwsClients),
}

/// The reconcile engine. Cheap to share (`Arc<Engine>`); clients per region are built once and
/// cached.
pub struct Engine {
    source: ClientSource,
    config: EngineConfig,
    hooks: Hooks,
    /// Clients by (account, region, read-only); account None is the operator's own.
    cache: Mutex<HashMap<ClientKey, AwsClients>>,
    artifacts: Arc<artifacts::Artifacts>,
    /// The accounts pipelines may name in `spec.accountRef`, by name.
    accounts: Mutex<HashMap<String, account::AssumeRole>>,
    /// One SDK configuration (one assume-role provider and credentials cache) per account.
    assumed: Mutex<HashMap<account::AssumeRole, aws_config::SdkConfig>>,
}

/// (account, region, read-only).
type ClientKey = (Option<account::AssumeRole>, Option<String>, bool);

impl Engine {
    /// An engine whose clients come from `sdk`; a pipeline's `spec.region` selects clients for
    /// that region (built once, cached).
    pub fn new(sdk: &aws_config::SdkConfig, config: EngineConfig) -> Engine {
        Engine {
            source: ClientSource::Sdk(Box::new(sdk.clone())),
            config,
            hooks: Hooks::default(),
            cache: Mutex::new(HashMap::new()),
            artifacts: Arc::default(),
            accounts: Mutex::default(),
            assumed: Mutex::default(),
        }
    }

    /// An engine that uses these clients for every pipeline whatever its region (tests with
    /// mocked clients).
    pub fn from_clients(clients: AwsClients, config: EngineConfig) -> Engine {
        Engine {
            source: ClientSource::Fixed(clients),
            config,
            hooks: Hooks::default(),
            cache: Mutex::new(HashMap::new()),
            artifacts: Arc::default(),
            accounts: Mutex::default(),
            assumed: Mutex::default(),
        }
    }

    /// Reports every AWS call to `observer` (see [`CallObserver`]).
    pub fn with_call_observer(mut self, observer: CallObserver) -> Engine {
        self.hooks.observer = Some(observer);
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
        self
    }

    /// Makes every mutating AWS call depend on `fence` (see [`Fence`]): while it is down such a
    /// call fails with [`EngineError::NotLeading`] before it is sent. The controller's engine has
    /// one under leader election; the CLI's has none.
    pub fn with_fence(mut self, fence: Fence) -> Engine {
        self.hooks.fence = Some(fence);
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
        self
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// How many times this engine read a Lambda zip from disk (hashing a new zip version, or
    /// uploading code): zero in a steady-state pass.
    pub fn artifact_reads(&self) -> u64 {
        self.artifacts.reads()
    }

    /// The clients for a pipeline's region.
    pub fn clients_for(&self, region: Option<&str>) -> AwsClients {
        self.cached_clients(region, false)
    }

    /// The clients `plan` and `status` use: every mutating operation is refused before it is
    /// sent (an internal error), so a read-only pass cannot change AWS.
    pub fn read_only_clients_for(&self, region: Option<&str>) -> AwsClients {
        self.cached_clients(region, true)
    }

    fn cached_clients(&self, region: Option<&str>, read_only: bool) -> AwsClients {
        self.cached_clients_in(None, region, read_only)
    }

    /// Observes AWS and returns what a reconcile would change now. Changes nothing.
    pub async fn plan(&self, pipeline: &OutboxPipeline) -> Result<Plan, EngineError> {
        let clients = self.pipeline_clients(pipeline, true).await?;
        let outcome = pipeline::run(&clients, &self.config, &self.artifacts, pipeline, false).await;
        match outcome.error {
            Some(e) => Err(e),
            None => Ok(Plan {
                actions: outcome.actions,
            }),
        }
    }

    /// One reconcile pass: observe, diff, apply what differs, report status, then read the data
    /// plane's health (read calls only; `status.dataPlane` and the Healthy condition). Never
    /// sleeps: a step that must wait reports Progressing and sets `requeue_after`.
    pub async fn reconcile(&self, pipeline: &OutboxPipeline) -> Outcome {
        let clients = match self.pipeline_clients(pipeline, false).await {
            Ok(c) => c,
            Err(e) => return pipeline::refused(pipeline, e),
        };
        let mut outcome =
            pipeline::run(&clients, &self.config, &self.artifacts, pipeline, true).await;
        health::check(
            &clients,
            &self.config.cluster_id,
            pipeline,
            &mut outcome.status,
        )
        .await;
        outcome
    }

    /// One delete pass in reverse creation order, honouring deletion policies.
    pub async fn delete(&self, pipeline: &OutboxPipeline) -> Result<DeleteOutcome, EngineError> {
        let clients = self.pipeline_clients(pipeline, false).await?;
        pipeline::delete(&clients, &self.config, &self.artifacts, pipeline).await
    }

    /// The pipeline's status as AWS has it now (observe only), with the data plane's health.
    /// Components with pending changes are False/Progressing; an error while observing is
    /// reported in the conditions.
    pub async fn status(
        &self,
        pipeline: &OutboxPipeline,
    ) -> Result<OutboxPipelineStatus, EngineError> {
        let clients = match self.pipeline_clients(pipeline, true).await {
            Ok(c) => c,
            Err(e) => return Ok(pipeline::refused(pipeline, e).status),
        };
        let mut status = pipeline::run(&clients, &self.config, &self.artifacts, pipeline, false)
            .await
            .status;
        health::check(&clients, &self.config.cluster_id, pipeline, &mut status).await;
        Ok(status)
    }
}

impl Reconciler for Engine {
    fn reconcile(
        &self,
        pipeline: &OutboxPipeline,
    ) -> impl std::future::Future<Output = Outcome> + Send {
        Engine::reconcile(self, pipeline)
    }

    fn delete(
        &self,
        pipeline: &OutboxPipeline,
    ) -> impl std::future::Future<Output = Result<DeleteOutcome, EngineError>> + Send {
        Engine::delete(self, pipeline)
    }

    async fn replay(
        &self,
        pipeline: &OutboxPipeline,
    ) -> Result<replay::Report, replay::ReplayError> {
        replay::replay(self, pipeline, &replay::Options::default(), &mut |_| {}).await
    }

    fn assume(
        &self,
        target: &account::AssumeRole,
    ) -> impl std::future::Future<Output = Result<account::AssumedIdentity, EngineError>> + Send
    {
        self.account_identity(target)
    }

    fn set_account(&self, target: account::AssumeRole) {
        Engine::set_account(self, target);
    }

    fn forget_account(&self, name: &str) {
        Engine::forget_account(self, name);
    }
}

/// Operator-wide settings (flags), the same for every pipeline.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Identifies this operator installation in ownership tags and derived names.
    pub cluster_id: String,
    /// Lets a pipeline with `table.adoptExisting` take over a table the operator did not create.
    pub allow_adoption: bool,
    /// Lets `deletionPolicy: Delete` delete a table the operator adopted (tagged
    /// `outbox.dev/adopted`); without it an adopted table is always retained.
    pub allow_delete_adopted_tables: bool,
    /// Permissions boundary attached to every execution role the engine creates.
    pub permissions_boundary_arn: Option<String>,
    /// `<dir>/<arch>/<function>/bootstrap.zip`.
    pub artifacts_dir: PathBuf,
}

/// Which part of the pipeline an action or a condition is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Table,
    Relay,
    Bus,
    Consumers,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Table => "table",
            Component::Relay => "relay",
            Component::Bus => "bus",
            Component::Consumers => "consumers",
        }
    }
}

/// What an action does to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Create,
    Update,
    Delete,
    /// Take ownership of a pre-existing resource (tagging it).
    Adopt,
    /// Leave a resource in place on delete (deletion policy Retain).
    Retain,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Adopt => "adopt",
            Verb::Retain => "retain",
        }
    }
}

/// One change to one AWS resource: planned (by `plan`) or performed (by `reconcile`/`delete`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsAction {
    pub component: Component,
    pub verb: Verb,
    /// Resource kind and name, e.g. `dynamodb table outbox-1a2b-default-users`.
    pub resource: String,
    /// What differs or what is done, e.g. `stream: disabled -> NEW_IMAGE`.
    pub detail: String,
}

impl std::fmt::Display for AwsAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb.as_str(), self.resource)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// The result of one reconcile pass.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Conditions per component with the fixed reasons, Ready, and the observed identifiers.
    /// `observedGeneration` is set from the pipeline's metadata.generation.
    pub status: OutboxPipelineStatus,
    /// What this pass changed in AWS (empty when everything was in sync).
    pub actions: Vec<AwsAction>,
    /// Set while something is still settling (a function Pending, a new role not yet assumable):
    /// reconcile again after this long. `None` with Ready=True means converged.
    pub requeue_after: Option<Duration>,
    /// The error that stopped this pass, if any; it is also reflected in `status`.
    pub error: Option<EngineError>,
}

/// The result of one delete pass.
#[derive(Clone, Debug)]
pub struct DeleteOutcome {
    /// What this pass deleted or retained.
    pub actions: Vec<AwsAction>,
    /// True when nothing the pipeline owns is left (retained resources excepted).
    pub done: bool,
    /// When not done: delete again after this long.
    pub requeue_after: Option<Duration>,
}

/// What `plan` found: the actions a reconcile would perform now.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub actions: Vec<AwsAction>,
}

impl Plan {
    pub fn in_sync(&self) -> bool {
        self.actions.is_empty()
    }
}

/// The engine as the controller sees it, so controller tests can run against a fake.
#[allow(async_fn_in_trait)]
pub trait Reconciler: Send + Sync + 'static {
    /// One reconcile pass: observe, diff, apply what differs, report status.
    fn reconcile(
        &self,
        pipeline: &OutboxPipeline,
    ) -> impl std::future::Future<Output = Outcome> + Send;
    /// One delete pass in reverse creation order, honouring deletion policies.
    fn delete(
        &self,
        pipeline: &OutboxPipeline,
    ) -> impl std::future::Future<Output = Result<DeleteOutcome, EngineError>> + Send;
    /// Replays the pipeline's parked batches ([`replay::replay`], default options): what the
    /// annotation `outbox.dev/replay` asks for. A reconciler without it says so.
    fn replay(
        &self,
        pipeline: &OutboxPipeline,
    ) -> impl std::future::Future<Output = Result<replay::Report, replay::ReplayError>> + Send {
        let _ = pipeline;
        async { Err(replay::ReplayError::Unavailable) }
    }

    /// Assumes an OutboxAccount's role and says who that is (its status).
    fn assume(
        &self,
        target: &account::AssumeRole,
    ) -> impl std::future::Future<Output = Result<account::AssumedIdentity, EngineError>> + Send
    {
        let error = errors::internal(
            "assume",
            format!("this reconciler cannot assume {}", target.role_arn),
        );
        async move { Err(error) }
    }
    /// Makes an account usable by the pipelines that name it (once its role was assumed).
    fn set_account(&self, _target: account::AssumeRole) {}
    /// Forgets an account (not Ready, or gone).
    fn forget_account(&self, _name: &str) {}
}
