//! The leadership fence in the AWS clients' interceptor chain: while it is down, every mutating
//! call fails before it is sent (see [`Fence`]). The controller raises it only while its replica
//! holds the leader-election lease; the CLI's engine has none.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

use super::{EngineError, is_mutating};

/// The leadership fence: while it is down, every mutating AWS call of an engine built with
/// [`Engine::with_fence`](super::Engine::with_fence) fails before it is sent, with
/// [`NotLeading`]; reads still work.
///
/// The controller raises it while this replica holds the leader-election lease and lowers it
/// the moment leadership is in doubt (renew deadline passed, lease manager error), so no code
/// path can change AWS without leadership: the check sits in the SDK's interceptor chain, just
/// before each attempt (retries included) is transmitted. Cheap to clone; clones share state.
/// A new fence is down.
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<AtomicBool>);

impl Fence {
    /// A fence that is down: no mutating call passes until [`Fence::raise`].
    pub fn new() -> Fence {
        Fence::default()
    }

    /// Lets mutating calls through (this replica leads).
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Stops every mutating call from now on, including retries of calls in flight.
    pub fn lower(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The error the fence's interceptor returns for a mutating call while the fence is down.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{service}:{operation} not sent: this replica is not the leader")]
pub struct NotLeading {
    pub service: String,
    pub operation: String,
}

/// The error the read-only guard of `plan` and `status` returns for a mutating call: a defect
/// in the engine (only the driver's reconcile and delete steps may change AWS).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{service}:{operation} not sent: plan and status are read-only")]
pub struct ReadOnly {
    pub service: String,
    pub operation: String,
}

/// The engine error for an SDK error caused by the fence ([`EngineError::NotLeading`]) or by the
/// read-only guard (an internal error), found in its source chain; `None` for any other error.
pub(crate) fn not_leading_error(
    err: &(dyn std::error::Error + 'static),
    operation: &str,
    resource: &str,
) -> Option<EngineError> {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<NotLeading>().is_some() {
            return Some(EngineError::NotLeading {
                operation: operation.to_owned(),
                resource: resource.to_owned(),
            });
        }
        if let Some(r) = e.downcast_ref::<ReadOnly>() {
            tracing::error!(
                operation,
                resource,
                "a read-only pass tried a mutating call"
            );
            return Some(super::errors::internal(
                format!("{operation} on {resource}"),
                r,
            ));
        }
        next = e.source();
    }
    None
}

/// Ok for a read; for a mutating call (or one whose operation is unknown, which cannot be told
/// apart) the error `refusal(service, operation)`.
fn refuse_mutating<E: std::error::Error + Send + Sync + 'static>(
    cfg: &ConfigBag,
    refusal: impl FnOnce(String, String) -> E,
) -> Result<(), BoxError> {
    match cfg.load::<Metadata>() {
        Some(meta) if !is_mutating(meta.name()) => Ok(()),
        meta => Err(Box::new(refusal(
            meta.map_or("unknown", |m| m.service()).to_owned(),
            meta.map_or("unknown", |m| m.name()).to_owned(),
        ))),
    }
}

/// Marks an SQS ReceiveMessage with `VisibilityTimeout=0`: a peek, let through by the read-only
/// guard (see [`ReadOnlyInterceptor`]).
#[derive(Clone, Debug)]
struct Peek;

impl Storable for Peek {
    type Storer = StoreReplace<Self>;
}

/// Refuses every mutating call (the clients of `plan`, `status` and `replay --dry-run`), with one
/// explicit exception: SQS `ReceiveMessage` with `VisibilityTimeout=0` (a dry-run replay lists
/// the batches parked in an SQS failure destination). It changes no data: the messages stay in
/// the queue and are visible again at once. Their receive count does go up, which matters only
/// to a redrive policy on the destination queue (documented in docs/replay.md).
#[derive(Debug)]
pub(crate) struct ReadOnlyInterceptor;

impl Intercept for ReadOnlyInterceptor {
    fn name(&self) -> &'static str {
        "OutboxReadOnly"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_sqs::operation::receive_message::ReceiveMessageInput;
        let peek = context
            .input()
            .downcast_ref::<ReceiveMessageInput>()
            .is_some_and(|i| i.visibility_timeout() == Some(0));
        if peek {
            cfg.interceptor_state().store_put(Peek);
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Peek>().is_some() {
            return Ok(());
        }
        refuse_mutating(cfg, |service, operation| ReadOnly { service, operation })
    }
}

#[derive(Debug)]
pub(crate) struct FenceInterceptor(pub(crate) Fence);

impl Intercept for FenceInterceptor {
    fn name(&self) -> &'static str {
        "OutboxLeadershipFence"
    }

    // The last hook before the request goes on the wire, run for every attempt: a retry of a
    // call that started while leading is stopped too.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.0.is_up() {
            return Ok(());
        }
        refuse_mutating(cfg, |service, operation| NotLeading { service, operation })
    }
}
