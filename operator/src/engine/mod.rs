//! The reconcile engine: `OutboxPipeline` spec → AWS, shared by the controller and the CLI.
//!
//! One module per AWS resource, each with observe → desired (pure) → diff (pure) → apply.
//! This file holds the engine's public surface: [`Engine`] and the [`Reconciler`] trait the
//! controller is generic over, the configuration, the outcome types and the error categories.
//! No Kubernetes types beyond the spec and status.

use std::path::PathBuf;
use std::time::Duration;

use crate::crd::{OutboxPipeline, OutboxPipelineStatus, Reason};

/// The AWS clients the engine uses, built once from the standard aws-config chain and injected.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub s3: aws_sdk_s3::Client,
}

impl AwsClients {
    /// Clients from one shared SDK configuration (region, endpoint, credentials, retry).
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(conf),
            iam: aws_sdk_iam::Client::new(conf),
            lambda: aws_sdk_lambda::Client::new(conf),
            eventbridge: aws_sdk_eventbridge::Client::new(conf),
            s3: aws_sdk_s3::Client::new(conf),
        }
    }
}

/// Operator-wide settings (flags), the same for every pipeline.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Identifies this operator installation in ownership tags and derived names.
    pub cluster_id: String,
    /// Lets a pipeline with `table.adoptExisting` take over a table the operator did not create.
    pub allow_adoption: bool,
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
pub struct Action {
    pub component: Component,
    pub verb: Verb,
    /// Resource kind and name, e.g. `dynamodb table outbox-1a2b-default-users`.
    pub resource: String,
    /// What differs or what is done, e.g. `stream: disabled -> NEW_IMAGE`.
    pub detail: String,
}

impl std::fmt::Display for Action {
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
    pub actions: Vec<Action>,
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
    pub actions: Vec<Action>,
    /// True when nothing the pipeline owns is left (retained resources excepted).
    pub done: bool,
    /// When not done: delete again after this long.
    pub requeue_after: Option<Duration>,
}

/// What `plan` found: the actions a reconcile would perform now.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn in_sync(&self) -> bool {
        self.actions.is_empty()
    }
}

/// How an error should be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, not-yet-active, role not yet assumable: retry with backoff.
    Transient,
    /// Needs a change first (spec, permissions, a foreign resource): no hot loop.
    Terminal,
}

/// Engine errors. Every message names the AWS resource (and the AWS error code where there is one).
#[derive(Clone, Debug, thiserror::Error)]
pub enum EngineError {
    /// The spec cannot be realised (e.g. a lambda artifact for the architecture is missing).
    #[error("invalid spec: {message}")]
    InvalidSpec { message: String },
    /// A resource exists that this pipeline does not own.
    #[error("conflict: {resource} exists and is not owned by this pipeline ({detail})")]
    Conflict { resource: String, detail: String },
    /// AWS refused for lack of permission.
    #[error("access denied: {operation} on {resource}: {code}: {message}")]
    AccessDenied {
        resource: String,
        operation: String,
        code: String,
        message: String,
    },
    /// Any other AWS error.
    #[error("{operation} on {resource} failed: {code}: {message}")]
    Aws {
        resource: String,
        operation: String,
        code: String,
        message: String,
        class: ErrorClass,
    },
    /// A local problem (reading an artifact, serializing a document).
    #[error("{context}: {message}")]
    Local { context: String, message: String },
}

impl EngineError {
    /// The condition reason this error is reported with.
    pub fn reason(&self) -> Reason {
        match self {
            EngineError::InvalidSpec { .. } | EngineError::Local { .. } => Reason::InvalidSpec,
            EngineError::Conflict { .. } => Reason::Conflict,
            EngineError::AccessDenied { .. } => Reason::AccessDenied,
            EngineError::Aws { .. } => Reason::AwsError,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::Aws { class, .. } => *class,
            _ => ErrorClass::Terminal,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
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
}
