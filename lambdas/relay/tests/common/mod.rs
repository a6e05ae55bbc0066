//! What the relay's end-to-end tests share: stream records (JSON fixtures under tests/fixtures/
//! and generated ones), relay configurations, and a mocked EventBridge (aws-smithy-mocks) that
//! answers each PutEvents call by a script and logs what was sent and published. The tests are
//! split by concern: `published` (what each kind of record becomes), `packing` (requests),
//! `failures` (scripted failure sequences and the partial batch response) and `logs` (no
//! personal data in logs). Time is tokio's paused clock: backoff sleeps advance it instantly,
//! so deadline behaviour is tested without waiting.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::dynamodb::Event;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::operation::put_events::{PutEventsError, PutEventsOutput};
use aws_sdk_eventbridge::types::PutEventsResultEntry;
use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};
use outbox_contract::{ChangeType, EventMapping, Payload, RelayConfig};
use outbox_relay::{Invocation, Relay, Report, RetryPolicy};
use serde_json::{Value, json};
use tokio::time::Instant;

pub const STREAM_ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/users/stream/2026-01-01T00:00:00.000";
pub const TABLE_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/users";

// ---------------------------------------------------------------- inputs

pub fn fixture(name: &str) -> Event {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn config(events: &[(ChangeType, &str, Payload)], limit: usize) -> RelayConfig {
    let config = RelayConfig {
        bus_name: "outbox-bus".into(),
        events: events
            .iter()
            .map(|(change, detail_type, payload)| {
                EventMapping::new(*change, "myapp.users", detail_type, *payload)
            })
            .collect(),
        request_size_limit_bytes: limit,
        pipeline: None,
    };
    config.validate().expect("test config is valid");
    config
}

pub fn users() -> RelayConfig {
    config(
        &[
            (ChangeType::Insert, "UserCreated", Payload::NewImage),
            (ChangeType::Modify, "UserUpdated", Payload::NewImage),
            (ChangeType::Remove, "UserDeleted", Payload::OldImage),
        ],
        262_144,
    )
}

pub fn keys_only() -> RelayConfig {
    config(
        &[
            (ChangeType::Insert, "Created", Payload::Keys),
            (ChangeType::Modify, "Updated", Payload::Keys),
            (ChangeType::Remove, "Deleted", Payload::Keys),
        ],
        262_144,
    )
}

pub fn seq(n: usize) -> String {
    format!("{:024}", 1000 + n)
}

/// An INSERT of `item` with a `pad`-character attribute, sequence number [`seq`]`(n)`.
pub fn record(n: usize, item: &str, pad: usize) -> Value {
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

pub fn batch(records: Vec<Value>) -> Event {
    serde_json::from_value(json!({ "Records": records })).expect("valid stream event")
}

/// `n` records of distinct items.
pub fn distinct(n: usize, pad: usize) -> Event {
    batch((0..n).map(|i| record(i, &format!("u{i}"), pad)).collect())
}

// ---------------------------------------------------------------- the mocked bus

/// One entry as the relay sent it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub source: String,
    pub detail_type: String,
    pub detail: Value,
    pub raw_detail: String,
    pub resources: Vec<String>,
    pub time: Option<i64>,
    pub trace_header: Option<String>,
    pub bus: String,
}

impl Sent {
    pub fn seq(&self) -> &str {
        self.detail["sequenceNumber"].as_str().unwrap_or_default()
    }
    pub fn item_key(&self) -> String {
        self.detail["keys"].to_string()
    }
    /// Entry size computed independently from the relay, per the AWS rule.
    pub fn aws_size(&self) -> usize {
        self.source.len()
            + self.detail_type.len()
            + self.raw_detail.len()
            + self.resources.iter().map(String::len).sum::<usize>()
            + if self.time.is_some() { 14 } else { 0 }
    }
}

/// What the mocked PutEvents answers to one call.
pub enum Reply {
    AllOk,
    /// One result per entry: None = published, Some(code) = failed with that code.
    Codes(Vec<Option<&'static str>>),
    /// Fewer results than entries (a malformed answer).
    Truncated,
    Error(PutEventsError),
}

#[derive(Default)]
pub struct Log {
    /// Every call: the entries sent and, per entry, whether it was published.
    pub calls: Vec<(Vec<Sent>, Vec<bool>)>,
}

impl Log {
    pub fn published(&self) -> Vec<Sent> {
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
    pub fn published_seqs(&self) -> Vec<String> {
        self.published()
            .iter()
            .map(|s| s.seq().to_owned())
            .collect()
    }
    pub fn call_sizes(&self) -> Vec<usize> {
        self.calls.iter().map(|(sent, _)| sent.len()).collect()
    }
}

pub type Responder = Box<dyn FnMut(usize, &[Sent]) -> Reply + Send>;

pub struct Bus {
    pub log: Arc<Mutex<Log>>,
    pub client: Client,
}

pub fn bus(responder: impl FnMut(usize, &[Sent]) -> Reply + Send + 'static) -> Bus {
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

pub fn output(codes: &[Option<&'static str>]) -> MockResponse<PutEventsOutput, PutEventsError> {
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

pub fn always_ok() -> Bus {
    bus(|_, _| Reply::AllOk)
}

pub fn invocation() -> Invocation {
    Invocation {
        deadline: Instant::now() + Duration::from_secs(60),
        trace_header: None,
    }
}

pub async fn run(config: RelayConfig, bus: &Bus, event: &Event) -> Report {
    Relay::new(config, bus.client.clone(), RetryPolicy::default())
        .process(event, &invocation())
        .await
        .expect("batch response")
}

pub fn failures(report: &Report) -> Vec<String> {
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
pub fn assert_per_item_order(log: &Log) {
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
