//! The handler the binary runs: the invocation's payload arrives as JSON text and is parsed by
//! the relay itself (cheaper than the runtime's path-tracking deserializer); a payload that is
//! not a stream batch fails the invocation without quoting any of it.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use lambda_runtime::{Context, LambdaEvent};
use outbox_relay::{Relay, RelayError, RetryPolicy};
use serde_json::value::RawValue;

fn invocation_of(payload: String) -> LambdaEvent<Box<RawValue>> {
    let mut context = Context::default();
    let deadline = SystemTime::now() + Duration::from_secs(60);
    context.deadline = deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    context.xray_trace_id = Some("Root=1-raw".to_owned());
    LambdaEvent::new(RawValue::from_string(payload).unwrap(), context)
}

#[tokio::test]
async fn a_stream_batch_as_json_text_is_published_with_the_context_trace_header() {
    let bus = always_ok();
    let relay = Relay::new(users(), bus.client.clone(), RetryPolicy::default());
    let payload = serde_json::json!({"Records": [record(0, "u0", 5), record(1, "u1", 5)]});
    let response = relay
        .handle_raw(invocation_of(payload.to_string()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let log = bus.log.lock().unwrap();
    assert_eq!(log.published_seqs(), [seq(0), seq(1)]);
    assert_eq!(
        log.published()[0].trace_header.as_deref(),
        Some("Root=1-raw")
    );
}

#[tokio::test]
async fn a_payload_that_is_not_a_stream_batch_fails_without_quoting_it() {
    let bus = always_ok();
    let relay = Relay::new(users(), bus.client.clone(), RetryPolicy::default());
    let payload = r#"{"Records": [{"eventName": "INSERT", "dynamodb": {"Keys": {"id": {"S": 4242424}}, "NewImage": "secret@example.com"}}]}"#;
    let err = relay
        .handle_raw(invocation_of(payload.to_owned()))
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::MalformedEvent(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        !message.contains("secret") && !message.contains("4242424"),
        "{message}"
    );
    assert!(bus.log.lock().unwrap().calls.is_empty());
}

#[tokio::test]
async fn the_report_carries_the_oldest_records_creation_time_for_the_age_metric() {
    let bus = always_ok();
    let relay = Relay::new(users(), bus.client.clone(), RetryPolicy::default());
    // Stream order is not creation order across items: the oldest may come last.
    let mut late = record(0, "u0", 5);
    late["dynamodb"]["ApproximateCreationDateTime"] = serde_json::json!(1_767_225_900);
    let event = batch(vec![late, record(1, "u1", 5)]);
    let invocation = outbox_relay::Invocation {
        deadline: tokio::time::Instant::now() + Duration::from_secs(60),
        trace_header: None,
    };
    let report = relay.process(&event, &invocation).await.unwrap();
    assert_eq!(
        report.oldest_record.map(|t| t.timestamp()),
        Some(1_767_225_601)
    );
    let doc = outbox_relay::emf::document(&report, "default/users", chrono::Utc::now());
    assert_eq!(doc["Published"], 2);
    assert_eq!(doc["Failed"], 0);
    assert!(doc["OldestRecordAge"].as_i64().unwrap() > 0);
}
