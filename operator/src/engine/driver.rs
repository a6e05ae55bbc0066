//! The resource driver: every AWS resource kind implements [`Resource`] (observe → diff → apply,
//! and what delete does), and [`step`] / [`remove`] run it. These two functions are the only
//! place that decides "plan records, reconcile calls AWS": a module never sees a [`Writer`]
//! outside reconcile and delete, and in `plan`/`status` the engine's clients refuse every
//! mutating operation before it is sent (see `Engine::read_only_clients_for`), so a read-only
//! pass cannot change AWS even through a bug in a module.
//!
//! Adding a resource kind: a module with a struct holding its desired state, `impl Resource` for
//! it, and one `step(ctx, &it)` line in the pipeline's ordered list (plus `remove` in the delete
//! pass).

use std::future::Future;

use super::context::{Ctx, Progress};
use super::tags::Owner;
use super::{AwsClients, Component, EngineError, Verb};

/// What differs: the changes in the order they must be made, and whether the resource must
/// settle first (then reconcile makes none of them this pass, while plan still lists them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff<C> {
    pub changes: Vec<C>,
    /// Settling: reconcile makes none of the changes this pass (plan lists them).
    pub wait: Option<String>,
    /// Settling, but the changes do not touch what settles (e.g. removing a duplicate event
    /// source mapping while the kept one is Creating): they are made, and the step then waits.
    pub settling: Option<String>,
}

impl<C> Diff<C> {
    /// In sync: nothing to do.
    pub fn none() -> Self {
        Diff::changes(Vec::new())
    }

    pub fn changes(changes: Vec<C>) -> Self {
        Diff {
            changes,
            wait: None,
            settling: None,
        }
    }

    /// The resource is settling (creating, updating, deleting): nothing to do until it is done.
    pub fn wait(why: impl Into<String>) -> Self {
        Diff {
            wait: Some(why.into()),
            ..Diff::none()
        }
    }
}

/// How one applied change ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Done: the next change may follow.
    Done,
    /// Made, but AWS is settling the resource: record it and stop here this pass.
    Settling(String),
    /// Not made (e.g. a new execution role not yet assumable): stop here, retry next pass.
    NotYet(String),
}

/// The only handle to AWS clients that may change something. [`step`] and [`remove`] hand one to
/// [`Resource::apply`] during reconcile and delete; plan and status never have one.
#[derive(Clone, Copy)]
pub struct Writer<'a>(&'a AwsClients);

impl<'a> Writer<'a> {
    pub fn clients(&self) -> &'a AwsClients {
        self.0
    }

    /// Only [`Ctx`] makes one, and only for a pass that applies.
    pub(super) fn for_apply(clients: &'a AwsClients) -> Writer<'a> {
        Writer(clients)
    }
}

/// One AWS resource kind with its desired state.
pub trait Resource: Sync {
    /// What AWS has (e.g. `Option<Observed>`, or a list for mappings and targets).
    type Observed: Send + Sync;
    /// One change a diff finds.
    type Change: Send + Sync;

    /// Which condition the resource's actions and errors count for.
    fn component(&self) -> Component;
    /// Kind and name, e.g. `dynamodb table orders`, for actions and errors.
    fn resource(&self) -> String;
    /// Reads what AWS has (read calls only).
    fn observe(
        &self,
        ctx: &Ctx<'_>,
    ) -> impl Future<Output = Result<Self::Observed, EngineError>> + Send;
    /// Pure: the desired state against what AWS has.
    fn diff(
        &self,
        observed: &Self::Observed,
        owner: &Owner,
    ) -> Result<Diff<Self::Change>, EngineError>;
    /// The action's verb and detail for a change.
    fn describe(&self, change: &Self::Change) -> (Verb, String);
    /// The resource a change's action names (a kind with several AWS objects, like event
    /// source mappings, names the one changed).
    fn resource_of(&self, _change: &Self::Change) -> String {
        self.resource()
    }
    /// Makes one change; `state` is what is known of the resource, kept up to date (e.g. the ARN
    /// a create returns).
    fn apply(
        &self,
        w: Writer<'_>,
        change: &Self::Change,
        state: &mut Self::Observed,
    ) -> impl Future<Output = Result<Applied, EngineError>> + Send;
    /// What the delete pass does with what AWS has: nothing when it is absent or not ours, the
    /// deleting changes, or a change that keeps it and says why (deletion policy Retain).
    fn removal(
        &self,
        ctx: &Ctx<'_>,
        observed: &Self::Observed,
    ) -> impl Future<Output = Result<Diff<Self::Change>, EngineError>> + Send;
}

/// The removal of a resource that is simply deleted when it exists and is ours (its `tags` say
/// so); nothing otherwise (a resource that is not ours is left alone, and logged).
pub fn delete_if_ours<C>(
    ctx: &Ctx<'_>,
    tags: Option<&std::collections::BTreeMap<String, String>>,
    resource: &str,
    delete: C,
) -> Diff<C> {
    match tags {
        Some(t) if !ctx.owner.leaves_alone(t, resource) => Diff::changes(vec![delete]),
        _ => Diff::none(),
    }
}

/// What a step knows afterwards: the resource's state and whether it is settled.
#[derive(Debug)]
pub struct Stepped<O> {
    pub state: O,
    pub progress: Progress,
}

/// Observe → diff → (plan: record; reconcile: apply and record) for one resource.
pub async fn step<R: Resource>(
    ctx: &mut Ctx<'_>,
    r: &R,
) -> Result<Stepped<R::Observed>, EngineError> {
    let observed = r.observe(ctx).await?;
    let diff = r.diff(&observed, &ctx.owner)?;
    carry_out(ctx, r, observed, diff).await
}

/// Observe → removal → (plan: record; delete: apply and record) for one resource.
pub async fn remove<R: Resource>(ctx: &mut Ctx<'_>, r: &R) -> Result<Progress, EngineError> {
    let observed = r.observe(ctx).await?;
    let diff = r.removal(ctx, &observed).await?;
    Ok(carry_out(ctx, r, observed, diff).await?.progress)
}

async fn carry_out<R: Resource>(
    ctx: &mut Ctx<'_>,
    r: &R,
    observed: R::Observed,
    diff: Diff<R::Change>,
) -> Result<Stepped<R::Observed>, EngineError> {
    let mut state = observed;
    let component = r.component();
    let waiting = diff.wait.or(diff.settling.clone());
    let Some(w) = ctx.writer() else {
        for change in &diff.changes {
            let (verb, detail) = r.describe(change);
            ctx.record(component, verb, r.resource_of(change), detail);
        }
        let progress = waiting.map_or(Progress::Ready, Progress::Waiting);
        return Ok(Stepped { state, progress });
    };
    if waiting.is_some() && diff.settling.is_none() {
        let progress = waiting.map_or(Progress::Ready, Progress::Waiting);
        return Ok(Stepped { state, progress });
    }
    for change in &diff.changes {
        let (verb, detail) = r.describe(change);
        match r.apply(w, change, &mut state).await? {
            Applied::Done => ctx.record(component, verb, r.resource_of(change), detail),
            Applied::Settling(why) => {
                ctx.record(component, verb, r.resource_of(change), detail);
                return Ok(Stepped {
                    state,
                    progress: Progress::Waiting(why),
                });
            }
            Applied::NotYet(why) => {
                return Ok(Stepped {
                    state,
                    progress: Progress::Waiting(why),
                });
            }
        }
    }
    Ok(Stepped {
        state,
        progress: diff.settling.map_or(Progress::Ready, Progress::Waiting),
    })
}
