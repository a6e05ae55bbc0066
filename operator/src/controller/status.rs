//! Status and Events: what the controller tells users about a pipeline. The whole status is
//! written by one server-side apply on the status subresource with one field manager
//! ([`FIELD_MANAGER`]); condition transition times are kept when a condition's status does not
//! change, so a converged pipeline's status write is a no-op. Events are best effort (a failure is
//! logged; the status stays the source of truth), one per AWS change with the resource as the
//! Event's action, and a Warning per error.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::{ACTION_LIMIT, Context, Error, FIELD_MANAGER, NOTE_LIMIT};
use crate::crd::{ConditionType, OutboxPipeline, OutboxPipelineStatus, Reason, now};
use crate::engine::{self, EngineError, Verb};

/// The pipeline's stored status with Ready=False for `reason` (the other conditions and the ARNs
/// stay as they were).
pub(super) fn not_ready(
    p: &OutboxPipeline,
    reason: Reason,
    message: String,
) -> OutboxPipelineStatus {
    let mut status = p.status.clone().unwrap_or_default();
    status.set_condition(
        ConditionType::Ready,
        false,
        reason,
        message,
        p.metadata.generation,
        &now(),
    );
    status
}

pub(super) async fn set_deleting(
    api: &Api<OutboxPipeline>,
    p: &OutboxPipeline,
    reason: Reason,
    message: String,
) -> Result<(), Error> {
    patch_status(api, &p.name_any(), &not_ready(p, reason, message)).await
}

/// The status to write after the engine's pass: the engine's, for the pipeline's generation,
/// with the transition times of unchanged conditions kept, and Ready=False with the error's
/// reason when the engine's status does not already say so.
pub(super) fn outcome_status(
    p: &OutboxPipeline,
    mut status: OutboxPipelineStatus,
    error: Option<&EngineError>,
) -> OutboxPipelineStatus {
    let generation = p.metadata.generation;
    status.observed_generation = generation;
    keep_transition_times(&mut status, p.status.as_ref());
    // The engine does not know replays: the last one stays recorded.
    status.replay = p.status.as_ref().and_then(|s| s.replay.clone());
    if let Some(error) = error {
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
    status
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

pub(super) fn verb_reason(verb: Verb) -> &'static str {
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
pub(super) async fn patch_status<K>(
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
pub(super) async fn publish_action<R>(
    ctx: &Context<R>,
    p: &OutboxPipeline,
    reason: &str,
    action: &engine::AwsAction,
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

/// An Event when the Healthy condition changes (its reason: Flowing → Lagging, ...): Warning when
/// it turns False or Unknown, Normal when it is True again. The first verdict of a pipeline is
/// published too, unless it is healthy.
pub(super) async fn publish_health_change<R>(
    ctx: &Context<R>,
    p: &OutboxPipeline,
    status: &OutboxPipelineStatus,
) {
    let Some(new) = status.condition(ConditionType::Healthy) else {
        return;
    };
    let old = p
        .status
        .as_ref()
        .and_then(|s| s.condition(ConditionType::Healthy));
    if let Some(change) = health_change(old, new) {
        publish(ctx, p, change.0, &new.reason, "Health", change.1).await;
    }
}

/// Pure: the Event type and note for a change of Healthy, None when nothing changed (or a
/// first verdict that is healthy).
pub(super) fn health_change(
    old: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    new: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
) -> Option<(EventType, String)> {
    let type_ = if new.status == "True" {
        EventType::Normal
    } else {
        EventType::Warning
    };
    match old {
        Some(o) if o.status == new.status && o.reason == new.reason => None,
        None if new.status == "True" => None,
        Some(o) => Some((
            type_,
            format!(
                "Healthy {} ({}) -> {} ({}): {}",
                o.status, o.reason, new.status, new.reason, new.message
            ),
        )),
        None => Some((
            type_,
            format!("Healthy {} ({}): {}", new.status, new.reason, new.message),
        )),
    }
}

pub(super) async fn publish_error<R>(
    ctx: &Context<R>,
    p: &OutboxPipeline,
    action: &str,
    error: &EngineError,
) {
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
pub(super) async fn publish<R>(
    ctx: &Context<R>,
    p: &OutboxPipeline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_ref(ctx, &p.object_ref(&()), type_, reason, action, note).await;
}

pub(super) async fn publish_ref<R>(
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
    if let Err(e) = ctx.events.recorder().publish(&event, reference).await {
        warn!(error = %e, reason, "cannot publish Event");
    }
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
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

/// The status to write over the `stored` one, or None when nothing but `dataPlane.checkedAt`
/// changed. Figures read the same as stored keep the stored `checkedAt`, also when something
/// else changed, so `checkedAt` is the time of the first reading that gave the figures shown
/// and a steady pipeline costs the API server no write per pass (Kubernetes stopped updating a
/// Pod condition's `lastProbeTime` for the same reason).
pub(super) fn to_write(
    stored: Option<&OutboxPipelineStatus>,
    new: &OutboxPipelineStatus,
) -> Option<OutboxPipelineStatus> {
    let mut new = new.clone();
    let Some(stored) = stored else {
        return Some(new);
    };
    if let (Some(d), Some(old)) = (new.data_plane.as_mut(), stored.data_plane.as_ref()) {
        let mut same_but_time = old.clone();
        same_but_time.checked_at.clone_from(&d.checked_at);
        if same_but_time == *d {
            d.checked_at.clone_from(&old.checked_at);
        }
    }
    (new != *stored).then_some(new)
}

#[cfg(test)]
mod tests {
    use crate::crd::DataPlaneStatus;

    fn with_checked_at(at: String) -> OutboxPipelineStatus {
        OutboxPipelineStatus {
            data_plane: Some(DataPlaneStatus {
                checked_at: at,
                iterator_age_seconds: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_status_that_differs_only_by_checked_at_is_not_written_however_old() {
        let new = with_checked_at("2099-01-01T00:00:00Z".into());
        for stored in ["2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z"] {
            let stored = with_checked_at(stored.into());
            assert_eq!(to_write(Some(&stored), &new), None, "{stored:?}");
        }
        assert_eq!(to_write(None, &new), Some(new.clone()));
        let mut no_data_plane = new.clone();
        no_data_plane.data_plane = None;
        assert_eq!(
            to_write(Some(&no_data_plane), &new),
            Some(new.clone()),
            "figures read for the first time"
        );
    }

    #[test]
    fn checked_at_moves_only_with_the_figures() {
        let stored = with_checked_at("2020-01-01T00:00:00Z".into());
        let checked_at =
            |s: Option<OutboxPipelineStatus>| s.and_then(|s| s.data_plane).map(|d| d.checked_at);
        // Something else changed, the figures did not: written, with the stored checkedAt.
        let mut other = with_checked_at("2099-01-01T00:00:00Z".into());
        other.observed_generation = Some(7);
        assert_eq!(
            checked_at(to_write(Some(&stored), &other)).as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
        // A figure changed: written, with the time of this reading.
        let mut lagging = with_checked_at("2099-01-01T00:00:00Z".into());
        lagging.data_plane.as_mut().unwrap().iterator_age_seconds = Some(900);
        assert_eq!(
            checked_at(to_write(Some(&stored), &lagging)).as_deref(),
            Some("2099-01-01T00:00:00Z")
        );
    }

    use super::*;
    use crate::crd::Condition;

    fn healthy(status: &str, reason: &str) -> Condition {
        let mut s = OutboxPipelineStatus::default();
        s.put_condition(
            ConditionType::Healthy,
            status,
            reason,
            "why",
            Some(1),
            "2026-11-29T03:00:00Z",
        );
        s.conditions.remove(0)
    }

    #[test]
    fn a_change_of_healthy_is_an_event_warning_when_it_turns_false() {
        let flowing = healthy("True", "Flowing");
        let lagging = healthy("False", "Lagging");
        let (t, note) = health_change(Some(&flowing), &lagging).unwrap();
        assert!(matches!(t, EventType::Warning));
        assert!(note.contains("True (Flowing) -> False (Lagging)"), "{note}");
        let (t, _) = health_change(Some(&lagging), &flowing).unwrap();
        assert!(matches!(t, EventType::Normal));
        // Another False reason is a change too.
        let failing = healthy("False", "RelayFailing");
        assert!(health_change(Some(&lagging), &failing).is_some());
        // Unknown warns.
        let unknown = healthy("Unknown", "Unknown");
        let (t, _) = health_change(Some(&flowing), &unknown).unwrap();
        assert!(matches!(t, EventType::Warning));
    }

    #[test]
    fn an_unchanged_or_first_healthy_verdict_is_no_event() {
        let flowing = healthy("True", "Flowing");
        assert!(health_change(Some(&flowing), &flowing).is_none());
        assert!(health_change(None, &flowing).is_none());
        let lagging = healthy("False", "Lagging");
        assert!(health_change(None, &lagging).is_some());
    }
}
