//! Personal data in the relay's logs: records are named by sequence number, never by their keys
//! or attribute values.

mod common;

use common::*;
use outbox_contract::testing::LogCapture;
use outbox_relay::Report;
use serde_json::json;

/// Everything the relay logs while `f` runs, as the Lambda's JSON lines.
async fn captured_logs<F: std::future::Future<Output = Report>>(f: F) -> (Report, String) {
    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(capture.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let report = f.await;
    drop(guard);
    (report, capture.text())
}

#[tokio::test(start_paused = true)]
async fn a_rejected_entry_is_logged_by_sequence_number_never_by_its_keys() {
    let bus = bus(|_, sent| Reply::Codes(sent.iter().map(|_| Some("MalformedDetail")).collect()));
    let event = batch(vec![record(0, "ada@example.com", 5)]);
    let (report, logs) = captured_logs(run(users(), &bus, &event)).await;
    assert_eq!(failures(&report), [seq(0)]);
    assert!(
        logs.contains(&seq(0)),
        "the sequence number is logged: {logs}"
    );
    assert!(
        !logs.contains("ada@example.com"),
        "item keys leaked: {logs}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unconvertible_record_is_logged_without_its_keys_or_values() {
    let mut bad = record(0, "ada@example.com", 5);
    bad["dynamodb"]["NewImage"]["salary"] = json!({"N": "secret-4711"});
    let (report, logs) = captured_logs(run(users(), &always_ok(), &batch(vec![bad]))).await;
    assert_eq!(failures(&report), [seq(0)]);
    assert!(logs.contains("salary"), "the attribute is named: {logs}");
    assert!(
        !logs.contains("secret-4711"),
        "an attribute value leaked: {logs}"
    );
    assert!(
        !logs.contains("ada@example.com"),
        "item keys leaked: {logs}"
    );
}
