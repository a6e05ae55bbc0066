use std::collections::BTreeMap;

use super::*;
use crate::crd::HealthReason::*;

const LAG: i64 = 300;

fn flowing() -> Figures {
    Figures {
        mapping_state: Some("Enabled".into()),
        last_processing_result: Some("OK".into()),
        iterator_age_ms: Some(2_000.0),
        relay_errors: Some(0.0),
        relay_throttles: Some(0.0),
        ..Figures::default()
    }
}

fn reason(f: &Figures, previous: Option<HealthReason>) -> HealthReason {
    verdict(f, LAG, previous).reason
}

#[test]
fn records_read_and_nothing_failing_is_flowing() {
    let v = verdict(&flowing(), LAG, None);
    assert_eq!(v.reason, Flowing);
    assert_eq!(v.reason.status(), "True");
    assert!(v.message.contains("2 s"), "{}", v.message);
}

#[test]
fn no_datapoints_at_all_is_idle_not_a_failure() {
    let f = Figures {
        mapping_state: Some("Enabled".into()),
        last_processing_result: Some("No records processed".into()),
        ..Figures::default()
    };
    assert_eq!(reason(&f, None), Idle);
    assert_eq!(Idle.status(), "True");
}

#[test]
fn iterator_age_over_the_limit_is_lagging() {
    let f = Figures {
        iterator_age_ms: Some(301_000.0),
        ..flowing()
    };
    let v = verdict(&f, LAG, None);
    assert_eq!(v.reason, Lagging);
    assert_eq!(v.reason.status(), "False");
    assert!(v.message.contains("301 s"), "{}", v.message);
    // At the limit it still flows.
    let f = Figures {
        iterator_age_ms: Some(300_000.0),
        ..flowing()
    };
    assert_eq!(reason(&f, None), Flowing);
}

#[test]
fn relay_errors_are_relay_failing_and_outrank_lag() {
    let f = Figures {
        relay_errors: Some(4.0),
        iterator_age_ms: Some(900_000.0),
        ..flowing()
    };
    let v = verdict(&f, LAG, None);
    assert_eq!(v.reason, RelayFailing);
    assert!(v.message.contains('4'), "{}", v.message);
}

#[test]
fn a_problem_result_without_invocations_is_relay_failing_but_a_stale_one_is_not() {
    let stuck = Figures {
        last_processing_result: Some("PROBLEM: Function call failed".into()),
        relay_errors: None,
        iterator_age_ms: None,
        ..flowing()
    };
    assert_eq!(reason(&stuck, None), RelayFailing);
    // Invocations since succeeded (errors datapoint 0): the old problem is stale.
    let recovered = Figures {
        last_processing_result: Some("PROBLEM: Function call failed".into()),
        ..flowing()
    };
    assert_eq!(reason(&recovered, None), Flowing);
}

#[test]
fn a_disabled_mapping_outranks_everything() {
    let f = Figures {
        mapping_state: Some("Disabled".into()),
        relay_errors: Some(3.0),
        ..flowing()
    };
    assert_eq!(reason(&f, None), MappingDisabled);
}

#[test]
fn parked_batches_and_consumer_failures() {
    let f = Figures {
        parked: Some(Parked {
            count: 1000,
            capped: true,
            newest: Some("2026-11-29T03:00:00Z".into()),
        }),
        ..flowing()
    };
    let v = verdict(&f, LAG, None);
    assert_eq!(v.reason, BatchesParked);
    assert!(v.message.contains("≥1000"), "{}", v.message);
    assert!(v.message.contains("2026-11-29T03:00:00Z"), "{}", v.message);
    // An empty failure destination is fine.
    let f = Figures {
        parked: Some(Parked {
            count: 0,
            capped: false,
            newest: None,
        }),
        ..flowing()
    };
    assert_eq!(reason(&f, None), Flowing);
    let f = Figures {
        consumer_failures: BTreeMap::from([("audit".to_owned(), 2.0), ("ok".to_owned(), 0.0)]),
        ..flowing()
    };
    let v = verdict(&f, LAG, None);
    assert_eq!(v.reason, ConsumerFailing);
    assert!(
        v.message.contains("audit (2)") && !v.message.contains("ok"),
        "{}",
        v.message
    );
}

#[test]
fn unreadable_figures_are_unknown_and_name_the_permission() {
    let f = Figures {
        iterator_age_ms: None,
        relay_errors: None,
        relay_throttles: None,
        unreadable: vec!["cloudwatch:GetMetricData is denied (access denied)".into()],
        ..flowing()
    };
    let v = verdict(&f, LAG, None);
    assert_eq!(v.reason, Unknown);
    assert_eq!(v.reason.status(), "Unknown");
    assert!(
        v.message.contains("cloudwatch:GetMetricData"),
        "{}",
        v.message
    );
    // A problem read elsewhere still wins over Unknown.
    let f = Figures {
        mapping_state: Some("Disabled".into()),
        ..f
    };
    assert_eq!(reason(&f, None), MappingDisabled);
}

#[test]
fn missing_datapoints_never_flip_a_verdict() {
    let silent = Figures {
        iterator_age_ms: None,
        relay_errors: None,
        relay_throttles: None,
        ..flowing()
    };
    // Lagging, then the relay stops emitting IteratorAge: still Lagging, not Idle.
    assert_eq!(reason(&silent, Some(Lagging)), Lagging);
    // Failing, then no invocation at all: still failing, not Idle.
    assert_eq!(reason(&silent, Some(RelayFailing)), RelayFailing);
    // Healthy before, no datapoint now: Idle (still True), not a failure.
    assert_eq!(reason(&silent, Some(Flowing)), Idle);
    // A datapoint under the limit clears Lagging; errors at 0 clear RelayFailing.
    assert_eq!(reason(&flowing(), Some(Lagging)), Flowing);
    assert_eq!(reason(&flowing(), Some(RelayFailing)), Flowing);
}

#[test]
fn the_same_figures_give_the_same_verdict_every_pass() {
    let f = Figures {
        iterator_age_ms: Some(400_000.0),
        ..flowing()
    };
    let first = verdict(&f, LAG, None);
    let second = verdict(&f, LAG, Some(first.reason));
    assert_eq!(first, second);
}

#[test]
fn the_data_plane_status_carries_the_figures() {
    let f = Figures {
        iterator_age_ms: Some(1_499.0),
        parked: Some(Parked {
            count: 3,
            capped: false,
            newest: None,
        }),
        ..flowing()
    };
    let d = data_plane(&f, "2026-11-29T03:00:00Z".into());
    assert_eq!(d.iterator_age_seconds, Some(1));
    assert_eq!(d.parked_batches.as_deref(), Some("3"));
    assert_eq!(d.relay_errors, Some(0));
    assert_eq!(d.checked_at, "2026-11-29T03:00:00Z");
}
