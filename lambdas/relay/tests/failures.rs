//! The relay under scripted failure sequences: retries keep per-item order, the first
//! unpublished record is the one reported in `batchItemFailures`, deadlines and attempt limits
//! stop it, and the partial batch response has the shape Lambda expects.

mod common;

use std::time::Duration;

use aws_sdk_eventbridge::error::ErrorMetadata;
use aws_sdk_eventbridge::operation::put_events::PutEventsError;
use aws_sdk_eventbridge::types::error::InternalException;
use common::*;
use outbox_relay::{Invocation, Relay, RetryPolicy};
use serde_json::json;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn throttled_entries_are_retried_and_per_item_order_holds() {
    // u1 changes three times, u2 twice: a retry must never let a later change overtake.
    let event = batch(vec![
        record(0, "u1", 5),
        record(1, "u2", 5),
        record(2, "u1", 5),
        record(3, "u3", 5),
        record(4, "u2", 5),
        record(5, "u1", 5),
    ]);
    let bus = bus(|call, sent| match call {
        // [u1#0, u2#1]: u1's first change is throttled.
        0 => Reply::Codes(
            sent.iter()
                .enumerate()
                .map(|(i, _)| (i == 0).then_some("ThrottlingException"))
                .collect(),
        ),
        // The retry goes alone (u1's next change may not join it): fail it once more.
        1 => Reply::Codes(vec![Some("InternalFailure"); sent.len()]),
        // [u1#2, u3#3, u2#4] (u1#5 waits): throttle u3.
        3 => Reply::Codes(
            sent.iter()
                .map(|s| (s.seq() == seq(3)).then_some("ThrottlingException"))
                .collect(),
        ),
        _ => Reply::AllOk,
    });
    let report = run(users(), &bus, &event).await;
    assert!(failures(&report).is_empty());
    let log = bus.log.lock().unwrap();
    assert_per_item_order(&log);
    let mut seqs = log.published_seqs();
    seqs.sort();
    assert_eq!(
        seqs,
        (0..6).map(seq).collect::<Vec<_>>(),
        "each record published exactly once"
    );
    assert_eq!(log.call_sizes(), [2, 1, 1, 3, 2]);
    assert_eq!(
        log.calls[1].0[0].seq(),
        seq(0),
        "the throttled entry is sent again first"
    );
    assert_eq!(log.calls[4].0[0].seq(), seq(3));
    assert_eq!(report.retried, 3);
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_entry_stops_the_batch_at_that_record() {
    let k = seq(12);
    let bus = bus(move |_, sent| {
        Reply::Codes(
            sent.iter()
                .map(|s| (s.seq() == k).then_some("MalformedDetail"))
                .collect(),
        )
    });
    let report = run(users(), &bus, &distinct(15, 5)).await;
    assert_eq!(failures(&report), [seq(12)]);
    let log = bus.log.lock().unwrap();
    assert_eq!(log.calls.len(), 2, "no call after the rejection");
    assert_eq!(
        report.published, 14,
        "the rest of that call was published and is counted"
    );
    assert!(!log.published_seqs().contains(&seq(12)));
}

#[tokio::test(start_paused = true)]
async fn the_earliest_unpublished_record_is_reported() {
    // Record 3 is throttled and record 5 rejected in the same call: redelivery must start at 3.
    let bus = bus(|_, sent| {
        Reply::Codes(
            sent.iter()
                .map(|s| match s.seq() {
                    q if q == seq(3) => Some("ThrottlingException"),
                    q if q == seq(5) => Some("AccessDeniedException"),
                    _ => None,
                })
                .collect(),
        )
    });
    let report = run(users(), &bus, &distinct(8, 5)).await;
    assert_eq!(failures(&report), [seq(3)]);
}

#[tokio::test(start_paused = true)]
async fn transient_call_errors_are_retried() {
    let bus = bus(|call, _| match call {
        0 => Reply::Error(PutEventsError::InternalException(
            InternalException::builder().message("boom").build(),
        )),
        1 => Reply::Truncated,
        _ => Reply::AllOk,
    });
    let report = run(users(), &bus, &distinct(4, 5)).await;
    assert!(failures(&report).is_empty(), "{report:?}");
    assert_eq!(report.calls, 3);
    assert_eq!(bus.log.lock().unwrap().published().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_terminal_call_error_fails_at_the_first_record_of_that_request() {
    let bus = bus(|call, _| match call {
        0 => Reply::AllOk,
        _ => Reply::Error(PutEventsError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not allowed")
                .build(),
        )),
    });
    let report = run(users(), &bus, &distinct(15, 5)).await;
    assert_eq!(failures(&report), [seq(10)]);
    assert_eq!(bus.log.lock().unwrap().calls.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_before_the_deadline() {
    let bus = bus(|_, sent| Reply::Codes(vec![Some("ThrottlingException"); sent.len()]));
    let policy = RetryPolicy {
        max_attempts: u32::MAX,
        ..RetryPolicy::default()
    };
    let relay = Relay::new(users(), bus.client.clone(), policy.clone());
    let deadline = Instant::now() + Duration::from_secs(3);
    let invocation = Invocation {
        deadline,
        trace_header: None,
    };
    let report = relay.process(&distinct(3, 5), &invocation).await.unwrap();
    assert_eq!(failures(&report), [seq(0)]);
    assert!(
        report.calls > 3,
        "it kept retrying while there was time ({} calls)",
        report.calls
    );
    assert!(
        Instant::now() + policy.reserve <= deadline,
        "returned inside the reserve before the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_give_up_after_max_attempts() {
    let bus = bus(|_, sent| Reply::Codes(vec![Some("InternalFailure"); sent.len()]));
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    let report = Relay::new(users(), bus.client.clone(), policy)
        .process(&distinct(2, 5), &invocation())
        .await
        .unwrap();
    assert_eq!(failures(&report), [seq(0)]);
    assert_eq!(report.calls, 3);
}

#[tokio::test(start_paused = true)]
async fn batch_response_serialises_as_lambda_expects() {
    let bus = bus(|_, sent| Reply::Codes(vec![Some("AccessDeniedException"); sent.len()]));
    let report = run(users(), &bus, &distinct(1, 5)).await;
    assert_eq!(
        serde_json::to_value(&report.response).unwrap(),
        json!({"batchItemFailures": [{"itemIdentifier": seq(0)}]})
    );
}

#[tokio::test(start_paused = true)]
async fn a_fully_published_batch_answers_an_empty_failure_list() {
    let report = run(users(), &always_ok(), &distinct(3, 5)).await;
    assert_eq!(
        serde_json::to_value(&report.response).unwrap(),
        json!({"batchItemFailures": []})
    );
}

#[tokio::test(start_paused = true)]
async fn an_unpublishable_record_without_sequence_number_fails_the_whole_batch() {
    // A partial batch response cannot name it, and an empty identifier would be read as
    // "everything failed" anyway: the invocation fails, never reporting it as done.
    let mut first = record(0, "a", 5);
    if let Some(d) = first["dynamodb"].as_object_mut() {
        d.remove("SequenceNumber");
    }
    let bus = always_ok();
    let result = Relay::new(users(), bus.client.clone(), RetryPolicy::default())
        .process(&batch(vec![first, record(1, "b", 5)]), &invocation())
        .await;
    assert!(result.is_err(), "{result:?}");
    assert!(bus.log.lock().unwrap().calls.is_empty());
}
