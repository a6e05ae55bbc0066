//! The AWS clients the engine uses and what every one of them carries: the call observer
//! (metrics), the leadership fence and the read-only guard; and the SDK configuration the CLI
//! and the controller build them from.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::{Fence, FenceInterceptor, ReadOnlyInterceptor};

/// Attaches the hooks' interceptors (call observer, leadership fence, read-only guard) to any
/// service's config builder (the SDK builders share no trait).
macro_rules! attach_hooks {
    ($builder:expr, $hooks:expr) => {{
        let mut b = $builder;
        if let Some(o) = &$hooks.observer {
            b = b.interceptor(ObserverInterceptor(o.clone()));
        }
        if let Some(f) = &$hooks.fence {
            b = b.interceptor(FenceInterceptor(f.clone()));
        }
        if $hooks.read_only {
            b = b.interceptor(ReadOnlyInterceptor);
        }
        b
    }};
}

/// The AWS clients the engine uses, built once from the standard aws-config chain and injected.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub s3: aws_sdk_s3::Client,
    /// Read-only use: pre-flight checks that the queues a spec names exist, and the depth of an
    /// SQS failure destination (data-plane health).
    pub sqs: aws_sdk_sqs::Client,
    /// The functions' log groups.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// The pipeline's alarms, and the metrics the health check reads.
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// Read-only use: replay reads batches parked with metadata only back from the stream.
    pub dynamodbstreams: aws_sdk_dynamodbstreams::Client,
}

impl AwsClients {
    /// Clients from one shared SDK configuration (region, endpoint, credentials, retry).
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        Self::build(conf, None, &Hooks::default())
    }

    /// Clients for `region` (None: the configuration's), each with the hooks (call observer,
    /// leadership fence) attached. With a custom endpoint (an emulator) S3 uses path-style
    /// addressing.
    pub(super) fn build(conf: &aws_config::SdkConfig, region: Option<&str>, hooks: &Hooks) -> Self {
        let region = region.map(|r| aws_types::region::Region::new(r.to_owned()));
        macro_rules! client {
            ($krate:ident, $extra:expr) => {{
                let mut b = attach_hooks!($krate::config::Builder::from(conf), hooks);
                if let Some(r) = &region {
                    b = b.region(r.clone());
                }
                #[allow(clippy::redundant_closure_call)]
                let b = ($extra)(b);
                $krate::Client::from_conf(b.build())
            }};
        }
        let path_style = conf.endpoint_url().is_some();
        AwsClients {
            dynamodb: client!(aws_sdk_dynamodb, |b| b),
            iam: client!(aws_sdk_iam, |b| b),
            lambda: client!(aws_sdk_lambda, |b| b),
            eventbridge: client!(aws_sdk_eventbridge, |b| b),
            s3: client!(aws_sdk_s3, |b: aws_sdk_s3::config::Builder| {
                if path_style {
                    b.force_path_style(true)
                } else {
                    b
                }
            }),
            sqs: client!(aws_sdk_sqs, |b| b),
            logs: client!(aws_sdk_cloudwatchlogs, |b| b),
            cloudwatch: client!(aws_sdk_cloudwatch, |b| b),
            dynamodbstreams: client!(aws_sdk_dynamodbstreams, |b| b),
        }
    }

    /// The same clients with the hooks attached (for clients built elsewhere, e.g. mocks).
    pub(super) fn with_hooks(&self, hooks: &Hooks) -> Self {
        macro_rules! rebuild {
            ($krate:ident, $c:expr) => {{
                let b = attach_hooks!($c.config().to_builder(), hooks);
                $krate::Client::from_conf(b.build())
            }};
        }
        AwsClients {
            dynamodb: rebuild!(aws_sdk_dynamodb, self.dynamodb),
            iam: rebuild!(aws_sdk_iam, self.iam),
            lambda: rebuild!(aws_sdk_lambda, self.lambda),
            eventbridge: rebuild!(aws_sdk_eventbridge, self.eventbridge),
            s3: rebuild!(aws_sdk_s3, self.s3),
            sqs: rebuild!(aws_sdk_sqs, self.sqs),
            logs: rebuild!(aws_sdk_cloudwatchlogs, self.logs),
            cloudwatch: rebuild!(aws_sdk_cloudwatch, self.cloudwatch),
            dynamodbstreams: rebuild!(aws_sdk_dynamodbstreams, self.dynamodbstreams),
        }
    }
}

/// One AWS API call the engine is about to make, as reported to a [`CallObserver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    /// The service, as the SDK names it (e.g. `DynamoDB`, `Lambda`, `EventBridge`, `IAM`, `S3`).
    pub service: String,
    /// The API operation (e.g. `DescribeTable`, `CreateFunction`).
    pub operation: String,
    /// True for anything that is not `Describe*`, `Get*`, `List*` or `Head*`.
    pub mutating: bool,
}

/// Called once per AWS API call the engine makes (once per operation, not per retry attempt),
/// before the request is sent, from an SDK interceptor attached to every client.
///
/// Use it for metrics (e.g. the controller's `outbox_aws_calls_total{operation}` counter:
/// `Engine::new(&sdk, config).with_call_observer(Arc::new(move |call: &CallInfo|
/// counter.get_or_create(&Labels { operation: call.operation.clone() }).inc()))`) and in
/// tests to count mutating calls. It must be cheap and must not block.
pub type CallObserver = Arc<dyn Fn(&CallInfo) + Send + Sync>;

/// True when an operation changes something (everything but Describe*/Get*/List*/Head*).
pub fn is_mutating(operation: &str) -> bool {
    !["Describe", "Get", "List", "Head"]
        .iter()
        .any(|p| operation.starts_with(p))
}

struct ObserverInterceptor(CallObserver);

impl std::fmt::Debug for ObserverInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObserverInterceptor")
    }
}

impl Intercept for ObserverInterceptor {
    fn name(&self) -> &'static str {
        "OutboxCallObserver"
    }

    // Not read_before_execution: client-level interceptors run that hook before the operation's
    // configuration (and its Metadata) is in the bag. This hook runs once per operation too.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            (self.0)(&CallInfo {
                service: meta.service().to_owned(),
                operation: meta.name().to_owned(),
                mutating: is_mutating(meta.name()),
            });
        }
        Ok(())
    }
}

/// What the engine attaches to every AWS client it builds.
#[derive(Clone, Default)]
pub(super) struct Hooks {
    pub(super) observer: Option<CallObserver>,
    pub(super) fence: Option<Fence>,
    /// The clients of plan and status: every mutating call is refused.
    pub(super) read_only: bool,
}

impl Hooks {
    pub(super) fn is_empty(&self) -> bool {
        self.observer.is_none() && self.fence.is_none() && !self.read_only
    }

    pub(super) fn read_only(&self) -> Hooks {
        Hooks {
            read_only: true,
            ..self.clone()
        }
    }
}

/// The SDK configuration the CLI and the controller build their [`Engine`] from: the standard
/// aws-config chain (environment, profile, SSO, web identity, instance metadata), BehaviorVersion
/// latest, and the standard retry mode with exponential backoff, so throttling and 5xx are
/// retried by the SDK (5 attempts, exponential backoff), with connect/attempt/operation timeouts.
/// `region` and `endpoint_url` (flags) override the environment; empty strings are ignored.
pub fn aws_sdk_config(
    region: Option<String>,
    endpoint_url: Option<String>,
) -> impl std::future::Future<Output = aws_config::SdkConfig> {
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(5)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(10));
    // A hung connection must not stall a reconcile forever; uploads of function code need room.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(60))
        .operation_timeout(Duration::from_secs(180))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(r) = region.filter(|r| !r.trim().is_empty()) {
        loader = loader.region(aws_types::region::Region::new(r));
    }
    if let Some(u) = endpoint_url.filter(|u| !u.trim().is_empty()) {
        loader = loader.endpoint_url(u);
    }
    loader.load()
}
