//! Replay from the cluster: the annotation [`REPLAY_ANNOTATION`] makes the controller replay the
//! pipeline's parked batches once per value (token), after a reconcile pass that found the
//! pipeline Ready, with the same code as `outbox-operator replay`. `status.replay` records the
//! token, start and end, the batches and events replayed, the batches left and the outcome; an
//! Event marks the start and the end. A paused pipeline replays nothing (the pause returns before
//! any AWS call); the token then runs once the pause is lifted.

use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use super::status::{patch_status, publish};
use super::{Context, Error, not_leading};
use crate::crd::{OutboxPipeline, OutboxPipelineStatus, REPLAY_ANNOTATION, ReplayStatus, now};
use crate::engine::Reconciler;
use crate::engine::replay::{BatchOutcome, ReplayError, Report};

/// The token of a replay the annotation asks for and that has not run (or started) yet.
pub fn pending(p: &OutboxPipeline) -> Option<String> {
    let token = p.annotations().get(REPLAY_ANNOTATION)?.trim();
    let done = p
        .status
        .as_ref()
        .and_then(|s| s.replay.as_ref())
        .map(|r| r.token.as_str());
    (!token.is_empty() && done != Some(token)).then(|| token.to_owned())
}

/// Pure: the finished replay's status from its result.
pub fn finished(
    token: String,
    started_at: String,
    result: &Result<Report, ReplayError>,
) -> ReplayStatus {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let mut status = ReplayStatus {
        token,
        started_at,
        finished_at: Some(now()),
        ..ReplayStatus::default()
    };
    match result {
        Err(e) => {
            status.outcome = "Failed".to_owned();
            status.message = e.to_string();
        }
        Ok(r) => {
            status.batches_replayed = count(r.replayed());
            status.events_published = count(r.events);
            status.batches_left = count(r.left());
            let left_why = r.batches.iter().find_map(|b| match &b.outcome {
                BatchOutcome::Left(why) => Some(format!("{}: {why}", b.key)),
                _ => None,
            });
            (status.outcome, status.message) = match (&r.error, left_why) {
                (Some(e), _) => ("Failed".to_owned(), e.clone()),
                (None, Some(why)) => ("Partial".to_owned(), format!("left parked: {why}")),
                (None, None) if r.left() > 0 => (
                    "Partial".to_owned(),
                    format!("{} batch(es) left parked", r.left()),
                ),
                (None, None) => (
                    "Succeeded".to_owned(),
                    format!(
                        "{} batch(es) replayed, {} event(s) published",
                        r.replayed(),
                        r.events
                    ),
                ),
            };
        }
    }
    status
}

/// Runs the pending replay `token`: status Running and an Event, the replay, then the outcome in
/// the status and an Event (Warning unless it Succeeded). `status` is the pass's status, already
/// written; it is written again with `replay` set.
pub(super) async fn run<R: Reconciler>(
    p: &OutboxPipeline,
    api: &Api<OutboxPipeline>,
    ctx: &Context<R>,
    status: &mut OutboxPipelineStatus,
    token: String,
) -> Result<(), Error> {
    let started_at = now();
    status.replay = Some(ReplayStatus {
        token: token.clone(),
        started_at: started_at.clone(),
        outcome: "Running".to_owned(),
        message: "replaying the batches parked in the failure destination".to_owned(),
        ..ReplayStatus::default()
    });
    patch_status(api, &p.name_any(), status).await?;
    info!(token, "replay of parked batches started");
    let note = format!("replay {token} of the parked batches started ({REPLAY_ANNOTATION})");
    publish(ctx, p, EventType::Normal, "ReplayStarted", "Replay", note).await;
    let result = ctx.reconciler.replay(p).await;
    let done = finished(token, started_at, &result);
    if !ctx.leading() {
        return Err(not_leading("status write", &p.name_any()));
    }
    status.replay = Some(done.clone());
    patch_status(api, &p.name_any(), status).await?;
    info!(outcome = %done.outcome, message = %done.message, "replay of parked batches finished");
    let type_ = if done.outcome == "Succeeded" {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let note = format!(
        "replay {}: {}: {} batch(es) replayed, {} event(s) published, {} left; {}",
        done.token,
        done.outcome,
        done.batches_replayed,
        done.events_published,
        done.batches_left,
        done.message
    );
    let reason = format!("Replay{}", done.outcome);
    publish(ctx, p, type_, &reason, "Replay", note).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::replay::Batch;

    fn pipeline(annotation: Option<&str>, done: Option<&str>) -> OutboxPipeline {
        let mut p: OutboxPipeline = serde_json::from_str(include_str!(
            "../../tests/fixtures/controller-pipeline.json"
        ))
        .expect("fixture pipeline");
        p.metadata.annotations = None;
        p.status = None;
        if let Some(a) = annotation {
            p.metadata.annotations = Some([(REPLAY_ANNOTATION.to_owned(), a.to_owned())].into());
        }
        if let Some(t) = done {
            p.status = Some(OutboxPipelineStatus {
                replay: Some(ReplayStatus {
                    token: t.to_owned(),
                    ..ReplayStatus::default()
                }),
                ..OutboxPipelineStatus::default()
            });
        }
        p
    }

    #[test]
    fn a_token_runs_once_and_a_new_token_runs_again() {
        assert_eq!(pending(&pipeline(None, None)), None);
        assert_eq!(pending(&pipeline(Some(" "), None)), None);
        assert_eq!(pending(&pipeline(Some("t1"), None)), Some("t1".to_owned()));
        assert_eq!(pending(&pipeline(Some("t1"), Some("t1"))), None);
        assert_eq!(
            pending(&pipeline(Some("t2"), Some("t1"))),
            Some("t2".to_owned())
        );
    }

    #[test]
    fn the_outcome_says_what_was_left_and_why() {
        let left = Batch {
            key: "aws/lambda/m/s/k".to_owned(),
            parked_at: None,
            shard_id: String::new(),
            first_sequence: String::new(),
            last_sequence: String::new(),
            condition: None,
            first_arrival: None,
            last_arrival: None,
            changes: Default::default(),
            events: 1,
            skipped: 0,
            already_published: 0,
            problem: None,
            outcome: BatchOutcome::Left("record 7: PutEvents rejected the event".to_owned()),
        };
        let report = Report {
            total: 3,
            events: 4,
            batches: vec![left],
            ..Report::default()
        };
        let s = finished("t".into(), "then".into(), &Ok(report));
        assert_eq!(
            (s.outcome.as_str(), s.batches_left, s.events_published),
            ("Partial", 3, 4)
        );
        assert!(s.message.contains("record 7"), "{}", s.message);
        let ok = finished("t".into(), "then".into(), &Ok(Report::default()));
        assert_eq!(ok.outcome, "Succeeded");
        let failed = finished("t".into(), "then".into(), &Err(ReplayError::Unavailable));
        assert_eq!(failed.outcome, "Failed");
        assert!(failed.finished_at.is_some());
    }
}
