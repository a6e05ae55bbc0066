//! The relay end to end against a mocked EventBridge (aws-smithy-mocks): what it publishes for
//! each kind of stream record (JSON fixtures under tests/fixtures/), how it packs requests, and
//! how it behaves under scripted failure sequences. Time is tokio's paused clock: backoff sleeps
//! advance it instantly, so deadline behaviour is tested without waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::dynamodb::Event;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::error::ErrorMetadata;
use aws_sdk_eventbridge::operation::put_events::{PutEventsError, PutEventsOutput};
use aws_sdk_eventbridge::types::PutEventsResultEntry;
use aws_sdk_eventbridge::types::error::InternalException;
use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};
use outbox_contract::{ChangeType, EventMapping, Payload, RelayConfig};
use outbox_relay::event::event_id;
use outbox_relay::{Invocation, Relay, Report, RetryPolicy};
use serde_json::{Value, json};
use tokio::time::Instant;

const STREAM_ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/users/stream/2026-01-01T00:00:00.000";
const TABLE_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/users";

// ---------------------------------------------------------------- inputs

fn fixture(name: &str) -> Event {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config(events: &[(ChangeType, &str, Payload)], limit: usize) -> RelayConfig {
    let config = RelayConfig {
        bus_name: "outbox-bus".into(),
        events: events
            .iter()
            .map(|(change, detail_type, payload)| EventMapping {
                change: *change,
                source: "myapp.users".into(),
                detail_type: (*detail_type).into(),
                payload: *payload,
            })
            .collect(),
        request_size_limit_bytes: limit,
    };
    config.validate().expect("test config is valid");
    config
}

fn users() -> RelayConfig {
    config(
        &[
            (ChangeType::Insert, "UserCreated", Payload::NewImage),
            (ChangeType::Modify, "UserUpdated", Payload::NewImage),
            (ChangeType::Remove, "UserDeleted", Payload::OldImage),
        ],
        262_144,
    )
}

fn keys_only() -> RelayConfig {
    config(
        &[
            (ChangeType::Insert, "Created", Payload::Keys),
            (ChangeType::Modify, "Updated", Payload::Keys),
            (ChangeType::Remove, "Deleted", Payload::Keys),
        ],
        262_144,
    )
}

fn seq(n: usize) -> String {
    format!("{:024}", 1000 + n)
}

/// An INSERT of `item` with a `pad`-character attribute, sequence number [`seq`]`(n)`.
fn record(n: usize, item: &str, pad: usize) -> Value {
    json!({
        "eventID": format!("event-{n}"),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_767_225_600 + n,
            "Keys": {"id": {"S": item}},
            "NewImage": {"id": {"S": item}, "pad": {"S": "x".repeat(pad)}},
            "SequenceNumber": seq(n),
            "SizeBytes": 10 + pad,
            "StreamViewType": "NEW_IMAGE",
        },
    })
}

fn batch(records: Vec<Value>) -> Event {
    serde_json::from_value(json!({ "Records": records })).expect("valid stream event")
}

/// `n` records of distinct items.
fn distinct(n: usize, pad: usize) -> Event {
    batch((0..n).map(|i| record(i, &format!("u{i}"), pad)).collect())
}

// ---------------------------------------------------------------- the mocked bus

/// One entry as the relay sent it.
#[derive(Clone, Debug)]
struct Sent {
    source: String,
    detail_type: String,
    detail: Value,
    raw_detail: String,
    resources: Vec<String>,
    time: Option<i64>,
    trace_header: Option<String>,
    bus: String,
}

impl Sent {
    fn seq(&self) -> &str {
        self.detail["sequenceNumber"].as_str().unwrap_or_default()
    }
    fn item_key(&self) -> String {
        self.detail["keys"].to_string()
    }
    /// Entry size computed independently from the relay, per the AWS rule.
    fn aws_size(&self) -> usize {
        self.source.len()
            + self.detail_type.len()
            + self.raw_detail.len()
            + self.resources.iter().map(String::len).sum::<usize>()
            + if self.time.is_some() { 14 } else { 0 }
    }
}

/// What the mocked PutEvents answers to one call.
enum Reply {
    AllOk,
    /// One result per entry: None = published, Some(code) = failed with that code.
    Codes(Vec<Option<&'static str>>),
    /// Fewer results than entries (a malformed answer).
    Truncated,
    Error(PutEventsError),
}

#[derive(Default)]
struct Log {
    /// Every call: the entries sent and, per entry, whether it was published.
    calls: Vec<(Vec<Sent>, Vec<bool>)>,
}

impl Log {
    fn published(&self) -> Vec<Sent> {
        self.calls
            .iter()
            .flat_map(|(sent, ok)| {
                sent.iter()
                    .zip(ok)
                    .filter(|(_, ok)| **ok)
                    .map(|(s, _)| s.clone())
            })
            .collect()
    }
    fn published_seqs(&self) -> Vec<String> {
        self.published()
            .iter()
            .map(|s| s.seq().to_owned())
            .collect()
    }
    fn call_sizes(&self) -> Vec<usize> {
        self.calls.iter().map(|(sent, _)| sent.len()).collect()
    }
}

type Responder = Box<dyn FnMut(usize, &[Sent]) -> Reply + Send>;

struct Bus {
    log: Arc<Mutex<Log>>,
    client: Client,
}

fn bus(responder: impl FnMut(usize, &[Sent]) -> Reply + Send + 'static) -> Bus {
    let log = Arc::new(Mutex::new(Log::default()));
    let responder: Arc<Mutex<Responder>> = Arc::new(Mutex::new(Box::new(responder)));
    let rule_log = log.clone();
    let rule = mock!(Client::put_events).then_compute_response(move |input| {
        let sent: Vec<Sent> = input
            .entries()
            .iter()
            .map(|e| {
                let raw_detail = e.detail().unwrap_or_default().to_owned();
                Sent {
                    source: e.source().unwrap_or_default().to_owned(),
                    detail_type: e.detail_type().unwrap_or_default().to_owned(),
                    detail: serde_json::from_str(&raw_detail).expect("Detail is JSON"),
                    raw_detail,
                    resources: e.resources().to_vec(),
                    time: e.time().map(|t| t.secs()),
                    trace_header: e.trace_header().map(str::to_owned),
                    bus: e.event_bus_name().unwrap_or_default().to_owned(),
                }
            })
            .collect();
        let mut log = rule_log.lock().unwrap();
        let call = log.calls.len();
        let reply = (responder.lock().unwrap())(call, &sent);
        let (ok, response) = match reply {
            Reply::AllOk => (vec![true; sent.len()], output(&vec![None; sent.len()])),
            Reply::Codes(codes) => (codes.iter().map(Option::is_none).collect(), output(&codes)),
            Reply::Truncated => (vec![false; sent.len()], output(&[])),
            Reply::Error(e) => (vec![false; sent.len()], MockResponse::Error(e)),
        };
        log.calls.push((sent, ok));
        response
    });
    let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    Bus { log, client }
}

fn output(codes: &[Option<&'static str>]) -> MockResponse<PutEventsOutput, PutEventsError> {
    let entries = codes
        .iter()
        .enumerate()
        .map(|(i, code)| match code {
            None => PutEventsResultEntry::builder()
                .event_id(format!("eb-{i}"))
                .build(),
            Some(code) => PutEventsResultEntry::builder()
                .error_code(*code)
                .error_message("scripted failure")
                .build(),
        })
        .collect();
    let failed = codes.iter().filter(|c| c.is_some()).count();
    MockResponse::Output(
        PutEventsOutput::builder()
            .failed_entry_count(i32::try_from(failed).unwrap())
            .set_entries(Some(entries))
            .build(),
    )
}

fn always_ok() -> Bus {
    bus(|_, _| Reply::AllOk)
}

fn invocation() -> Invocation {
    Invocation {
        deadline: Instant::now() + Duration::from_secs(60),
        trace_header: None,
    }
}

async fn run(config: RelayConfig, bus: &Bus, event: &Event) -> Report {
    Relay::new(config, bus.client.clone(), RetryPolicy::default())
        .process(event, &invocation())
        .await
        .expect("batch response")
}

fn failures(report: &Report) -> Vec<String> {
    report
        .response
        .batch_item_failures
        .iter()
        .map(|f| {
            f.item_identifier
                .clone()
                .expect("a failure names its record")
        })
        .collect()
}

/// Per-item order: an entry is sent only after every earlier change of its item was published,
/// and each record is published at most once per call sequence position.
fn assert_per_item_order(log: &Log) {
    let mut published: Vec<(String, String)> = Vec::new();
    for (call, (sent, ok)) in log.calls.iter().enumerate() {
        let mut keys_in_call: Vec<String> = Vec::new();
        for s in sent {
            let key = s.item_key();
            assert!(
                !keys_in_call.contains(&key),
                "call {call} holds two changes of item {key}"
            );
            keys_in_call.push(key.clone());
            let last = published
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, q)| q.clone());
            if let Some(last) = last {
                assert!(
                    last.as_str() < s.seq(),
                    "call {call} sends {} of item {key} after {last} was published",
                    s.seq()
                );
            }
        }
        for (s, ok) in sent.iter().zip(ok) {
            if *ok {
                published.push((s.item_key(), s.seq().to_owned()));
            }
        }
    }
}

// ---------------------------------------------------------------- what is published

#[tokio::test(start_paused = true)]
async fn insert_modify_remove_carry_the_mapped_types_images_and_metadata() {
    let bus = always_ok();
    let event = fixture("new-and-old-images.json");
    let report = run(users(), &bus, &event).await;
    assert!(failures(&report).is_empty());
    let log = bus.log.lock().unwrap();
    let published = log.published();
    let types: Vec<&str> = published.iter().map(|s| s.detail_type.as_str()).collect();
    assert_eq!(types, ["UserCreated", "UserUpdated", "UserDeleted"]);
    // One item: three requests, in stream order.
    assert_eq!(log.call_sizes(), [1, 1, 1]);

    let [created, updated, deleted] = &published[..] else {
        panic!("{published:?}")
    };
    assert_eq!(created.detail["item"]["email"], "ada@example.com");
    assert_eq!(
        updated.detail["item"]["email"], "ada@lovelace.example",
        "MODIFY carries the new image"
    );
    assert_eq!(
        deleted.detail["item"]["email"], "ada@lovelace.example",
        "REMOVE carries the old image"
    );
    assert_eq!(deleted.detail["payload"], "oldImage");
    for (i, s) in published.iter().enumerate() {
        let seq = format!("11110000000000000000000{}", i + 1);
        assert_eq!(s.source, "myapp.users");
        assert_eq!(s.bus, "outbox-bus");
        assert_eq!(s.resources, [TABLE_ARN]);
        assert_eq!(
            s.time,
            Some(1_767_225_600 + i as i64),
            "Time is the approximate creation time"
        );
        assert_eq!(s.trace_header, None);
        let d = &s.detail;
        assert_eq!(d["schemaVersion"], "1");
        assert_eq!(d["sequenceNumber"], seq.as_str());
        assert_eq!(
            d["eventId"],
            event_id(STREAM_ARN, &seq).to_string().as_str()
        );
        assert_eq!(d["table"], "users");
        assert_eq!(d["keys"], json!({"id": "u1"}));
        assert_eq!(d["ttlExpired"], false);
        assert_eq!(
            d["approximateCreationTime"],
            format!("2026-01-01T00:00:0{i}Z").as_str()
        );
    }
    assert_eq!(
        published
            .iter()
            .map(|s| s.detail["change"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["INSERT", "MODIFY", "REMOVE"]
    );
    // The consumer's envelope type reads it.
    let parsed: outbox_contract::EventDetail = serde_json::from_str(&created.raw_detail).unwrap();
    assert_eq!(parsed.change, ChangeType::Insert);
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_record_gets_the_same_event_id_and_records_never_share_one() {
    let event = fixture("new-and-old-images.json");
    let (first, second) = (always_ok(), always_ok());
    run(users(), &first, &event).await;
    run(users(), &second, &event).await;
    let ids = |bus: &Bus| -> Vec<String> {
        bus.log
            .lock()
            .unwrap()
            .published()
            .iter()
            .map(|s| s.detail["eventId"].as_str().unwrap().to_owned())
            .collect()
    };
    let (a, b) = (ids(&first), ids(&second));
    assert_eq!(a, b);
    assert_eq!(a.len(), 3);
    assert!(a[0] != a[1] && a[1] != a[2] && a[0] != a[2]);
}

#[tokio::test(start_paused = true)]
async fn new_image_stream_publishes_removes_as_keys_and_stops_at_a_missing_old_image() {
    let event = fixture("new-image.json");
    let mut with_keys = users();
    with_keys.events[2].payload = Payload::Keys;
    let bus = always_ok();
    let report = run(with_keys, &bus, &event).await;
    assert!(failures(&report).is_empty());
    let published = bus.log.lock().unwrap().published();
    assert_eq!(published.len(), 3);
    assert_eq!(published[2].detail["item"], json!({"id": "u2"}));
    assert_eq!(published[2].detail["payload"], "keys");

    // A REMOVE mapped to the old image on a NEW_IMAGE stream cannot be published: never skipped.
    let bus = always_ok();
    let report = run(users(), &bus, &event).await;
    assert_eq!(failures(&report), ["222200000000000000000003"]);
    assert_eq!(
        bus.log.lock().unwrap().published_seqs(),
        ["222200000000000000000001", "222200000000000000000002"]
    );
}

#[tokio::test(start_paused = true)]
async fn keys_only_stream_publishes_keys_and_flags_ttl_expiry() {
    let event = fixture("keys-only.json");
    let bus = always_ok();
    let report = run(keys_only(), &bus, &event).await;
    assert!(failures(&report).is_empty());
    let published = bus.log.lock().unwrap().published();
    assert_eq!(
        published[0].detail["keys"],
        json!({"pk": "tenant#1", "sk": 7})
    );
    assert_eq!(published[0].detail["item"], published[0].detail["keys"]);
    let ttl: Vec<bool> = published
        .iter()
        .map(|s| s.detail["ttlExpired"].as_bool().unwrap())
        .collect();
    assert_eq!(
        ttl,
        [false, false, true],
        "only the REMOVE by the DynamoDB service is a TTL expiry"
    );

    // An image the stream does not carry stops the batch at the first record; nothing is sent.
    let bus = always_ok();
    let report = run(users(), &bus, &event).await;
    assert_eq!(failures(&report), ["333300000000000000000001"]);
    assert!(bus.log.lock().unwrap().calls.is_empty());
}

#[tokio::test(start_paused = true)]
async fn big_numbers_sets_and_binary_survive_as_plain_json() {
    let bus = always_ok();
    run(users(), &bus, &fixture("attribute-types.json")).await;
    let published = bus.log.lock().unwrap().published();
    let raw = &published[0].raw_detail;
    for exact in [
        r#""keys":{"id":12345678901234567890123456789012345678}"#,
        r#""id":12345678901234567890123456789012345678"#,
        r#""price":0.00000000000000000000000000000000000001"#,
        r#""negative":-9.9999999999999999999999999999999999999e+125"#,
        r#""scores":[1,99999999999999999999999999999999999999]"#,
        r#""tags":["b","a"]"#,
        r#""avatar":"3q2+7w==""#,
        r#""blobs":["AAE=","/w=="]"#,
        r#""gone":null"#,
        r#""nested":[null,true,42]"#,
    ] {
        assert!(raw.contains(exact), "{exact} not in {raw}");
    }
    assert_eq!(
        published[0].detail["item"]["profile"]["name"],
        "Ada \"the\" Countess"
    );
}

#[tokio::test(start_paused = true)]
async fn unmapped_change_types_are_skipped_and_counted() {
    let bus = always_ok();
    let only_inserts = config(
        &[(ChangeType::Insert, "UserCreated", Payload::NewImage)],
        262_144,
    );
    let report = run(only_inserts, &bus, &fixture("new-and-old-images.json")).await;
    assert_eq!(
        (report.records, report.published, report.skipped),
        (3, 1, 2)
    );
    assert!(
        failures(&report).is_empty(),
        "a skipped record is not a failure"
    );
}

#[tokio::test(start_paused = true)]
async fn trace_header_is_passed_on_when_the_invocation_has_one() {
    let bus = always_ok();
    let relay = Relay::new(users(), bus.client.clone(), RetryPolicy::default());
    let invocation = Invocation {
        trace_header: Some("Root=1-6770a000-abcdef012345678912345678;Sampled=1".into()),
        ..invocation()
    };
    relay
        .process(&fixture("new-image.json"), &invocation)
        .await
        .unwrap();
    let published = bus.log.lock().unwrap().published();
    assert!(
        published
            .iter()
            .all(|s| s.trace_header.as_deref() == invocation.trace_header.as_deref())
    );
}

// ---------------------------------------------------------------- packing

#[tokio::test(start_paused = true)]
async fn requests_hold_at_most_ten_entries() {
    let bus = always_ok();
    let report = run(users(), &bus, &distinct(25, 10)).await;
    assert_eq!(bus.log.lock().unwrap().call_sizes(), [10, 10, 5]);
    assert_eq!(report.calls, 3);
}

#[tokio::test(start_paused = true)]
async fn requests_stay_within_the_size_limit_as_aws_counts_it() {
    let bus = always_ok();
    let mut config = users();
    config.request_size_limit_bytes = 4096;
    let report = run(config, &bus, &distinct(20, 900)).await;
    assert!(failures(&report).is_empty());
    let log = bus.log.lock().unwrap();
    let sizes: Vec<usize> = log
        .calls
        .iter()
        .map(|(sent, _)| sent.iter().map(Sent::aws_size).sum())
        .collect();
    assert!(sizes.iter().all(|s| *s <= 4096), "{sizes:?}");
    // Each entry is a bit over 1 KB: three fit, a fourth does not, so the limit (not the count
    // of 10) decides, and no request could take one more entry.
    assert!(
        log.call_sizes().iter().all(|n| *n == 3 || *n == 2),
        "{:?}",
        log.call_sizes()
    );
    assert_eq!(log.published().len(), 20);
}

#[tokio::test(start_paused = true)]
async fn a_record_larger_than_the_limit_stops_the_batch_at_that_record() {
    let bus = always_ok();
    let mut config = users();
    config.request_size_limit_bytes = 4096;
    let event = batch(vec![
        record(0, "a", 10),
        record(1, "b", 10),
        record(2, "c", 5000),
        record(3, "d", 10),
    ]);
    let report = run(config, &bus, &event).await;
    assert_eq!(failures(&report), [seq(2)]);
    assert_eq!(bus.log.lock().unwrap().published_seqs(), [seq(0), seq(1)]);
}

// ---------------------------------------------------------------- failure sequences

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

// ---------------------------------------------------------------- personal data in logs

/// Everything the relay logs while `f` runs, as the Lambda's JSON lines.
async fn captured_logs<F: std::future::Future<Output = Report>>(f: F) -> (Report, String) {
    let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || Capture(sink.clone()))
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let report = f.await;
    drop(guard);
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    (report, text)
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
