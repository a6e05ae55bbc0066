//! The status a pass reports: how each component ended (ready, waiting, failed, not reached)
//! and the conditions, Ready and the requeue hint built from that.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::crd::{ConditionType, OutboxPipelineStatus, Reason};
use crate::engine::context::Progress;
use crate::engine::{AwsAction, Component, EngineError};

/// Requeue hint while AWS settles something (a function Pending, a table CREATING).
pub const SETTLE_REQUEUE: Duration = Duration::from_secs(5);
/// Requeue hint after a transient error the SDK's own retries did not overcome.
pub const TRANSIENT_REQUEUE: Duration = Duration::from_secs(15);

/// How a component ended in this pass.
#[derive(Clone, Debug)]
pub(super) enum State {
    Ready,
    Waiting(String),
    Failed(EngineError),
}

/// How each component ended, and which components ran all their steps: a component whose
/// later steps were not reached (an error further up) is not Ready, whatever its first steps did.
#[derive(Default)]
pub(super) struct States(BTreeMap<Component, State>, BTreeSet<Component>);

impl States {
    /// Merges a step's progress into its component (waiting wins over ready).
    pub(super) fn progress(&mut self, c: Component, p: Progress) {
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

    pub(super) fn fail(&mut self, c: Component, e: EngineError) {
        self.0.insert(c, State::Failed(e));
    }

    /// Every step of `c` ran in this pass.
    pub(super) fn finish(&mut self, c: Component) {
        self.1.insert(c);
    }

    /// The state to report: Ready only when the component finished.
    fn get(&self, c: Component) -> Option<&State> {
        match self.0.get(&c) {
            Some(State::Ready) if !self.1.contains(&c) => None,
            other => other,
        }
    }
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

/// Observe only (plan, status): a component with pending changes is not in sync.
pub(super) fn pending_is_waiting(states: &mut States, actions: &[AwsAction]) {
    for c in ORDER {
        let pending: Vec<String> = actions
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

/// Sets the component conditions and Ready; returns the requeue hint.
pub(super) fn conditions(
    status: &mut OutboxPipelineStatus,
    states: &States,
    generation: Option<i64>,
) -> Option<Duration> {
    let now = crate::crd::now();
    let mut first_bad: Option<(Reason, String)> = None;
    let mut blocker: Option<Component> = None;
    let mut requeue = None;
    for c in ORDER {
        let (ok, reason, message) = match states.get(c) {
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
                // Not reached: the pass stopped earlier (a wait or an error sets the requeue).
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
