//! The health verdict: a pure function from the figures read to the Healthy condition's reason
//! and message. Missing datapoints never flip a verdict by themselves: a signal that made the
//! previous verdict and now has no datapoint keeps it (a relay that stopped emitting IteratorAge
//! has not caught up; a relay with no invocations has not recovered).

use std::collections::BTreeMap;

use crate::crd::HealthReason;

/// Batches parked in the failure destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    pub count: u64,
    /// More objects than were counted (the listing stops at [`super::PARKED_CAP`]).
    pub capped: bool,
    /// When the newest parked batch was written (failure bucket only).
    pub newest: Option<String>,
}

impl Parked {
    /// `3`, or `≥1000` when capped.
    pub fn text(&self) -> String {
        if self.capped {
            format!("≥{}", self.count)
        } else {
            self.count.to_string()
        }
    }
}

/// What the health check read. `None` figures had no datapoint (or could not be read: then
/// `unreadable` says which permission or call).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub mapping_state: Option<String>,
    pub last_processing_result: Option<String>,
    /// Milliseconds, maximum over the last 5 minutes.
    pub iterator_age_ms: Option<f64>,
    /// Sum over the last 15 minutes.
    pub relay_errors: Option<f64>,
    pub relay_throttles: Option<f64>,
    /// FailedInvocations per consumer with a datapoint in the last 15 minutes.
    pub consumer_failures: BTreeMap<String, f64>,
    pub parked: Option<Parked>,
    pub unreadable: Vec<String>,
}

/// The verdict: the Healthy condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: HealthReason,
    pub message: String,
}

fn v(reason: HealthReason, message: impl Into<String>) -> Verdict {
    Verdict {
        reason,
        message: message.into(),
    }
}

/// Pure: the figures (and the previous verdict's reason, if any) → the verdict. In order: the
/// mapping disabled, the relay failing, lagging, batches parked, a consumer failing; then
/// Unknown when something could not be read; else Flowing (records read in the last 5 minutes)
/// or Idle.
pub fn verdict(f: &Figures, max_lag_seconds: i64, previous: Option<HealthReason>) -> Verdict {
    use HealthReason::*;
    if let Some(v) = mapping_disabled(f)
        .or_else(|| relay_failing(f, previous))
        .or_else(|| lagging(f, max_lag_seconds, previous))
        .or_else(|| parked(f))
        .or_else(|| consumer_failing(f))
    {
        return v;
    }
    if !f.unreadable.is_empty() {
        return v(Unknown, format!("cannot read: {}", f.unreadable.join("; ")));
    }
    match f.iterator_age_ms {
        Some(age) => v(
            Flowing,
            format!(
                "records flow: iterator age {} s (limit {max_lag_seconds} s)",
                (age / 1000.0).round()
            ),
        ),
        None => v(Idle, "no records read in the last 5 minutes"),
    }
}

fn mapping_disabled(f: &Figures) -> Option<Verdict> {
    let state = f
        .mapping_state
        .as_deref()
        .filter(|s| matches!(*s, "Disabled" | "Disabling"))?;
    Some(v(
        HealthReason::MappingDisabled,
        format!("the event source mapping is {state}: nothing is read from the stream"),
    ))
}

fn relay_failing(f: &Figures, previous: Option<HealthReason>) -> Option<Verdict> {
    use HealthReason::RelayFailing;
    let problem = f
        .last_processing_result
        .as_deref()
        .filter(|r| r.starts_with("PROBLEM"));
    match (f.relay_errors, problem) {
        (Some(e), _) if e > 0.0 => Some(v(
            RelayFailing,
            format!("the relay failed {e} invocations in the last 15 minutes"),
        )),
        // No invocation in the window: the last result still tells (a stuck batch).
        (None, Some(p)) => Some(v(RelayFailing, format!("the mapping's last result: {p}"))),
        (None, None) if previous == Some(RelayFailing) => Some(v(
            RelayFailing,
            "no relay invocation in the last 15 minutes since it failed",
        )),
        _ => None,
    }
}

fn lagging(f: &Figures, max_lag_seconds: i64, previous: Option<HealthReason>) -> Option<Verdict> {
    use HealthReason::Lagging;
    let max_ms = max_lag_seconds as f64 * 1000.0;
    match f.iterator_age_ms {
        Some(age) if age > max_ms => Some(v(
            Lagging,
            format!(
                "the relay's iterator age is {} s (over {max_lag_seconds} s): the stream is backing up",
                (age / 1000.0).round()
            ),
        )),
        None if previous == Some(Lagging) => Some(v(
            Lagging,
            "no iterator-age datapoint since the relay lagged: nothing shows it caught up",
        )),
        _ => None,
    }
}

fn parked(f: &Figures) -> Option<Verdict> {
    let p = f.parked.as_ref().filter(|p| p.count > 0)?;
    let newest = p
        .newest
        .as_deref()
        .map(|t| format!(", newest at {t}"))
        .unwrap_or_default();
    Some(v(
        HealthReason::BatchesParked,
        format!(
            "{} failed batches wait in the failure destination{newest}; replay them with \
             `outbox-operator replay -f <manifest>` or the annotation {}=<token>",
            p.text(),
            crate::crd::REPLAY_ANNOTATION
        ),
    ))
}

fn consumer_failing(f: &Figures) -> Option<Verdict> {
    let failing: Vec<String> = f
        .consumer_failures
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(c, n)| format!("{c} ({n})"))
        .collect();
    (!failing.is_empty()).then(|| {
        v(
            HealthReason::ConsumerFailing,
            format!(
                "failed deliveries in the last 15 minutes: {}",
                failing.join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod replay_hint_tests {
    use super::*;

    #[test]
    fn parked_batches_name_the_replay_command_and_annotation() {
        let f = Figures {
            parked: Some(Parked {
                count: 2,
                capped: false,
                newest: None,
            }),
            ..Figures::default()
        };
        let v = verdict(&f, 60, None);
        assert_eq!(v.reason, HealthReason::BatchesParked);
        assert!(v.message.starts_with("2 failed batches"), "{}", v.message);
        assert!(
            v.message.contains("outbox-operator replay -f"),
            "{}",
            v.message
        );
        assert!(
            v.message.contains("outbox.dev/replay=<token>"),
            "{}",
            v.message
        );
    }
}
