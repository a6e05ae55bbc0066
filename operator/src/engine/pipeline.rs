//! One pass over a pipeline: the resource steps in creation order (reconcile, plan, status) or
//! in reverse (delete), and the status built from how each component ended.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::Instrument;

use crate::crd::{ConditionType, OutboxPipeline, OutboxPipelineStatus, Reason};

use super::context::{Ctx, Progress};
use super::{AwsClients, Component, DeleteOutcome, EngineConfig, EngineError, Outcome, bus, table};

/// Requeue hint while AWS settles something (a function Pending, a table CREATING).
pub const SETTLE_REQUEUE: Duration = Duration::from_secs(5);
/// Requeue hint after a transient error the SDK's own retries did not overcome.
pub const TRANSIENT_REQUEUE: Duration = Duration::from_secs(15);

/// How a component ended in this pass.
#[derive(Clone, Debug)]
enum State {
    Ready,
    Waiting(String),
    Failed(EngineError),
}

#[derive(Default)]
struct States(BTreeMap<Component, State>);

impl States {
    /// Merges a step's progress into its component (waiting wins over ready).
    fn progress(&mut self, c: Component, p: Progress) {
        match p {
            Progress::Ready => {
                self.0.entry(c).or_insert(State::Ready);
            }
            Progress::Waiting(msg) => match self.0.get_mut(&c) {
                Some(State::Waiting(m)) => {
                    m.push_str("; ");
                    m.push_str(&msg);
                }
                Some(State::Failed(_)) => {}
                _ => {
                    self.0.insert(c, State::Waiting(msg));
                }
            },
        }
    }

    fn fail(&mut self, c: Component, e: EngineError) {
        self.0.insert(c, State::Failed(e));
    }
}

/// A step's failure, with the component it belongs to.
type StepResult = Result<(), (Component, EngineError)>;

fn at(c: Component) -> impl FnOnce(EngineError) -> (Component, EngineError) {
    move |e| (c, e)
}

fn condition_type(c: Component) -> ConditionType {
    match c {
        Component::Table => ConditionType::TableReady,
        Component::Relay => ConditionType::RelayReady,
        Component::Bus => ConditionType::BusReady,
        Component::Consumers => ConditionType::ConsumersReady,
    }
}

const ORDER: [Component; 4] = [
    Component::Table,
    Component::Relay,
    Component::Bus,
    Component::Consumers,
];

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One reconcile (`apply`) or observe-only (`!apply`: plan, status) pass.
pub async fn run(
    clients: &AwsClients,
    config: &EngineConfig,
    pipeline: &OutboxPipeline,
    apply: bool,
) -> Outcome {
    let span = tracing::info_span!(
        "pipeline",
        namespace = pipeline.namespace_or_default(),
        name = pipeline.name_or_empty(),
        apply
    );
    async move {
        let mut ctx = Ctx::new(clients, config, pipeline, apply);
        let mut status = OutboxPipelineStatus {
            observed_generation: pipeline.metadata.generation,
            ..Default::default()
        };
        let mut states = States::default();
        let result = steps(&mut ctx, &mut status, &mut states).await;
        let error = match result {
            Ok(()) => None,
            Err((c, e)) => {
                tracing::warn!(component = c.as_str(), error = %e, "reconcile step failed");
                states.fail(c, e.clone());
                Some(e)
            }
        };
        if !apply {
            // Observe only: a component with pending changes is not in sync.
            for c in ORDER {
                let pending: Vec<String> = ctx
                    .actions
                    .iter()
                    .filter(|a| a.component == c)
                    .map(|a| a.to_string())
                    .collect();
                if !pending.is_empty() && matches!(states.0.get(&c), Some(State::Ready) | None) {
                    states.0.insert(
                        c,
                        State::Waiting(format!("out of sync: {}", pending.join("; "))),
                    );
                }
            }
        }
        let requeue_after = conditions(&mut status, &states, pipeline.metadata.generation);
        Outcome {
            status,
            actions: ctx.actions,
            requeue_after,
            error,
        }
    }
    .instrument(span)
    .await
}

/// Sets the component conditions and Ready; returns the requeue hint.
fn conditions(
    status: &mut OutboxPipelineStatus,
    states: &States,
    generation: Option<i64>,
) -> Option<Duration> {
    let now = now();
    let mut first_bad: Option<(Reason, String)> = None;
    let mut blocker: Option<Component> = None;
    let mut requeue = None;
    for c in ORDER {
        let (ok, reason, message) = match states.0.get(&c) {
            Some(State::Ready) => (true, Reason::Reconciled, format!("{} in sync", c.as_str())),
            Some(State::Waiting(m)) => {
                requeue = Some(SETTLE_REQUEUE);
                (false, Reason::Progressing, m.clone())
            }
            Some(State::Failed(e)) => {
                blocker = Some(c);
                if e.is_transient() {
                    requeue = Some(TRANSIENT_REQUEUE);
                }
                (false, e.reason(), e.to_string())
            }
            None => {
                requeue.get_or_insert(SETTLE_REQUEUE);
                let msg = match blocker {
                    Some(b) => format!("waiting for {}", b.as_str()),
                    None => "waiting for earlier components".to_owned(),
                };
                (false, Reason::Progressing, msg)
            }
        };
        if !ok && first_bad.is_none() {
            first_bad = Some((reason, format!("{}: {message}", c.as_str())));
        }
        status.set_condition(condition_type(c), ok, reason, message, generation, &now);
    }
    match first_bad {
        None => status.set_condition(
            ConditionType::Ready,
            true,
            Reason::Reconciled,
            "every component is in sync",
            generation,
            &now,
        ),
        Some((reason, message)) => status.set_condition(
            ConditionType::Ready,
            false,
            reason,
            message,
            generation,
            &now,
        ),
    }
    requeue
}

/// The resource steps in creation order.
async fn steps(
    ctx: &mut Ctx<'_>,
    status: &mut OutboxPipelineStatus,
    states: &mut States,
) -> StepResult {
    // Table with its stream.
    let (table_out, progress) = table::reconcile(ctx).await.map_err(at(Component::Table))?;
    status.table_name = Some(ctx.names.table.clone());
    status.table_arn = table_out.arn.clone();
    status.stream_arn = table_out.stream_arn.clone();
    let table_waiting = !progress.is_ready();
    states.progress(Component::Table, progress);
    if table_waiting && ctx.apply {
        return Ok(());
    }

    // Bus.
    let bus_arn = bus::reconcile(ctx).await.map_err(at(Component::Bus))?;
    status.bus_name = Some(ctx.names.bus.clone());
    status.bus_arn = bus_arn;
    states.progress(Component::Bus, Progress::Ready);
    states.progress(Component::Relay, Progress::Ready);
    states.progress(Component::Consumers, Progress::Ready);
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
        let mut waits: Vec<String> = Vec::new();
        bus::delete(&mut ctx).await?;
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
