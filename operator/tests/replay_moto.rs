//! Wire tests of `replay` against moto: batches parked exactly as Lambda writes them to an S3
//! on-failure destination are published again with the events (byte for byte) and ids a direct
//! relay run publishes; a second run publishes nothing; PutEvents faults (throttling, partial
//! failures, a rejected entry) lose nothing and publish nothing twice; a dry run makes no
//! mutating call.
//!
//! PutEvents goes through a local proxy in front of moto that records every entry moto accepted
//! (the request JSON the SDK sent, so equality is byte for byte) and injects faults on cue.
//! Needs OUTBOX_TEST_ENDPOINT (see engine_moto.rs).

mod common;
mod harness;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_s3::primitives::ByteStream;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{emulator_sdk, endpoint, record_calls, unique};
use harness::*;
use outbox_contract::RelayConfig;
use outbox_local_trigger as trigger;
use outbox_operator::crd::OutboxPipeline;
use outbox_operator::engine::replay::{self, BatchOutcome, Options, Report};
use outbox_operator::engine::{AwsClients, Engine};
use outbox_relay::{Invocation, Relay, RetryPolicy};
use serde_json::{Value, json};

/// What the proxy does with the next PutEvents call.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The whole call fails: 400 ThrottlingException (nothing reaches moto).
    Throttle,
    /// The first entry fails with ThrottlingException, the others reach moto.
    ThrottleFirst,
    /// The first entry fails with InternalFailure, the others reach moto.
    InternalFirst,
}

#[derive(Default)]
struct ProxyState {
    /// Steps for the next calls, in order; then every call passes.
    steps: Vec<Step>,
    /// Reject (InvalidArgument, not retryable) the entry of this sequence number.
    reject_sequence: Option<String>,
    /// Every entry moto accepted: the entry's JSON as the SDK sent it.
    accepted: Vec<String>,
    calls: usize,
}

type Shared = Arc<Mutex<ProxyState>>;

struct Proxy {
    url: String,
    state: Shared,
}

impl Proxy {
    async fn start(moto: aws_sdk_eventbridge::Client) -> Proxy {
        let state: Shared = Arc::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state((state.clone(), moto));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy { url, state }
    }

    /// An EventBridge client whose calls go through the proxy, SDK retries off (the relay's
    /// publisher retries, as in the relay).
    fn client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_eventbridge::Client {
        aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::config::Builder::from(sdk)
                .endpoint_url(&self.url)
                .retry_config(aws_sdk_eventbridge::config::retry::RetryConfig::disabled())
                .build(),
        )
    }

    fn take_accepted(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().accepted)
    }

    fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }
}

fn entry_of(e: &Value) -> PutEventsRequestEntry {
    let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
    PutEventsRequestEntry::builder()
        .set_source(text("Source"))
        .set_detail_type(text("DetailType"))
        .set_detail(text("Detail"))
        .set_event_bus_name(text("EventBusName"))
        .set_resources(e.get("Resources").and_then(Value::as_array).map(|r| {
            r.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        }))
        .set_time(
            e.get("Time")
                .and_then(Value::as_f64)
                .map(DateTime::from_secs_f64),
        )
        .build()
}

async fn handle(
    State((state, moto)): State<(Shared, aws_sdk_eventbridge::Client)>,
    body: String,
) -> axum::response::Response {
    let request: Value = serde_json::from_str(&body).unwrap();
    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
    let (step, reject) = {
        let mut s = state.lock().unwrap();
        s.calls += 1;
        let step = (!s.steps.is_empty()).then(|| s.steps.remove(0));
        (step, s.reject_sequence.clone())
    };
    if matches!(step, Some(Step::Throttle)) {
        let err = json!({"__type": "ThrottlingException", "message": "Rate exceeded"});
        return (StatusCode::BAD_REQUEST, err.to_string()).into_response();
    }
    let mut results: Vec<Value> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let detail = e["Detail"].as_str().unwrap_or_default();
        let fault = match step {
            Some(Step::ThrottleFirst) if i == 0 => Some("ThrottlingException"),
            Some(Step::InternalFirst) if i == 0 => Some("InternalFailure"),
            _ if reject
                .as_deref()
                .is_some_and(|q| detail.contains(&format!("\"sequenceNumber\":\"{q}\""))) =>
            {
                Some("InvalidArgument")
            }
            _ => None,
        };
        if let Some(code) = fault {
            results.push(json!({"ErrorCode": code, "ErrorMessage": "injected"}));
            continue;
        }
        let out = moto.put_events().entries(entry_of(e)).send().await.unwrap();
        let r = &out.entries()[0];
        if let Some(code) = r.error_code() {
            results.push(json!({"ErrorCode": code, "ErrorMessage": r.error_message()}));
        } else {
            state.lock().unwrap().accepted.push(e.to_string());
            results.push(json!({"EventId": r.event_id()}));
        }
    }
    let failed = results
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .count();
    let body = json!({"FailedEntryCount": failed, "Entries": results});
    (
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

/// The stream records of one parked batch, as the stream hands them to Lambda: user u1 is
/// created, changed and deleted; user u2 (a 38-digit number, a binary attribute) is created and
/// expires by TTL (a REMOVE by the DynamoDB service).
fn records(stream_arn: &str) -> Value {
    let rec = |seq: &str, name: &str, keys: Value, new: Option<Value>, old: Option<Value>| {
        let mut d = json!({
            "ApproximateCreationDateTime": 1_795_928_400,
            "Keys": keys,
            "SequenceNumber": seq,
            "SizeBytes": 120,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        });
        if let Some(n) = new {
            d["NewImage"] = n;
        }
        if let Some(o) = old {
            d["OldImage"] = o;
        }
        json!({
            "eventID": format!("e{seq}"), "eventName": name, "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
            "eventSourceARN": stream_arn, "dynamodb": d
        })
    };
    let k1 = json!({"id": {"S": "u1"}});
    let k2 = json!({"id": {"S": "u2"}});
    let u1 = |email: &str| json!({"id": {"S": "u1"}, "email": {"S": email}});
    let u2 = json!({
        "id": {"S": "u2"},
        "balance": {"N": "12345678901234567890123456789012345678"},
        "avatar": {"B": "3q2+7w=="},
        "expiresAt": {"N": "1795928000"}
    });
    let mut ttl = rec(
        "100000000000000000004",
        "REMOVE",
        k2.clone(),
        None,
        Some(u2.clone()),
    );
    ttl["userIdentity"] = json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"});
    json!({"Records": [
        rec("100000000000000000001", "INSERT", k1.clone(), Some(u1("a@x.io")), None),
        rec("100000000000000000002", "INSERT", k2, Some(u2), None),
        rec("100000000000000000003", "MODIFY", k1.clone(), Some(u1("b@x.io")), Some(u1("a@x.io"))),
        ttl,
        rec("100000000000000000005", "REMOVE", k1, None, Some(u1("b@x.io"))),
    ]})
}

/// The object Lambda writes to an S3 on-failure destination for a batch of a DynamoDB stream
/// mapping (format: engine::replay::record), with its key.
fn parked_object(mapping: &str, stream_arn: &str, batch: &Value, id: &str) -> (String, Vec<u8>) {
    let shard = "shardId-00000001795928000000-0a1b2c3d";
    let key = format!("aws/lambda/{mapping}/{shard}/2026/11/29/2026-11-29T05.00.00-{id}");
    let records = batch["Records"].as_array().cloned().unwrap_or_default();
    let seq = |r: Option<&Value>| r.map(|r| r["dynamodb"]["SequenceNumber"].clone());
    let body = json!({
        "version": "1.0",
        "timestamp": "2026-11-29T05:00:00.000Z",
        "requestContext": {
            "requestId": "c9b8a7d6-0000-4000-8000-000000000001",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:relay",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "Relay", "errorMessage": "record cannot be published"},
        "requestPayload": batch,
        "DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": seq(records.first()),
            "endSequenceNumber": seq(records.last()),
            "approximateArrivalOfFirstRecord": "2026-11-29T04:59:58.000Z",
            "approximateArrivalOfLastRecord": "2026-11-29T04:59:59.000Z",
            "batchSize": records.len(),
            "streamArn": stream_arn
        }
    });
    (key, serde_json::to_vec(&body).unwrap())
}

struct Setup {
    h: Harness,
    p: OutboxPipeline,
    sdk: aws_config::SdkConfig,
    proxy: Proxy,
    /// The engine replay runs with: EventBridge through the proxy, the rest straight to moto.
    engine: Engine,
    bucket: String,
    stream_arn: String,
    mapping: String,
    relay_fn: String,
    tap: trigger::Tap,
}

async fn setup(ep: &str, test: &str) -> Setup {
    let id = unique(test);
    let cluster = format!("cl-{id}");
    let h = Harness::new(ep, &cluster, false).await;
    let p = example("user-lifecycle.yaml", &id);
    let out = h.converge(&p).await;
    let s = out.status;
    let sdk = emulator_sdk(ep).await;
    let proxy = Proxy::start(aws_sdk_eventbridge::Client::new(&sdk)).await;
    let mut clients = AwsClients::from_conf(&sdk);
    clients.eventbridge = proxy.client(&sdk);
    // Its calls are recorded with the harness's (dry-run check, operator policy check).
    let engine = Engine::from_clients(clients, h.engine.config().clone())
        .with_call_observer(record_calls(vec![h.calls.clone(), h.all_calls.clone()]));
    let bus = s.bus_name.clone().unwrap();
    let tap = trigger::Tap::create(
        &h.clients.eventbridge,
        &h.clients.sqs,
        &bus,
        &format!("tap-{id}"),
        r#"{"source":["myapp.users"]}"#,
    )
    .await
    .unwrap();
    Setup {
        bucket: s
            .failure_destination_arn
            .unwrap()
            .trim_start_matches("arn:aws:s3:::")
            .to_owned(),
        stream_arn: s.stream_arn.unwrap(),
        mapping: s.event_source_mapping_uuid.unwrap(),
        relay_fn: s.relay_function_arn.unwrap(),
        h,
        p,
        sdk,
        proxy,
        engine,
        tap,
    }
}

impl Setup {
    /// The relay itself (its deployed configuration) publishing the batch through the proxy.
    async fn direct_relay_run(&self, batch: &Value) -> Vec<String> {
        let env = trigger::function_env(&self.h.clients.lambda, &self.relay_fn)
            .await
            .unwrap();
        let config = RelayConfig::from_lookup(|k| env.get(k).cloned()).unwrap();
        let relay = Relay::new(config, self.proxy.client(&self.sdk), RetryPolicy::default());
        let event = serde_json::from_value(batch.clone()).unwrap();
        let invocation = Invocation {
            deadline: tokio::time::Instant::now() + Duration::from_secs(30),
            trace_header: None,
        };
        let report = relay.process(&event, &invocation).await.unwrap();
        assert!(report.response.batch_item_failures.is_empty());
        self.proxy.take_accepted()
    }

    async fn park(&self, batch: &Value) -> String {
        self.park_as(batch, "6c3f9a4e-1b2d-4e5f-8a9b-0c1d2e3f4a5b")
            .await
    }

    /// Parks `batch` under a key ending in `id` (same parking second as [`Setup::park`]).
    async fn park_as(&self, batch: &Value, id: &str) -> String {
        let (key, body) = parked_object(&self.mapping, &self.stream_arn, batch, id);
        self.h
            .clients
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
        key
    }

    async fn replay(&self, opts: &Options) -> Report {
        let mut seen = 0;
        let mut progress = |r: &Report| seen = r.batches.len();
        let report = replay::replay(&self.engine, &self.p, opts, &mut progress)
            .await
            .expect("replay starts");
        assert_eq!(seen, report.batches.len(), "progress after each batch");
        report
    }

    /// `outbox-operator replay` as the CLI runs it: its exit code and output.
    async fn cli(&self, dry_run: bool) -> (i32, String) {
        let docs = [outbox_operator::manifest::Document {
            origin: "test".to_owned(),
            pipeline: self.p.clone(),
        }];
        let opts = Options {
            dry_run,
            ..Options::default()
        };
        let mut out = Vec::new();
        let code = outbox_operator::cli::replay::replay_all(&self.engine, &docs, &opts, &mut out)
            .await
            .expect("replay runs");
        (code, String::from_utf8(out).expect("UTF-8 output"))
    }

    async fn keys(&self) -> Vec<String> {
        let out = self
            .h
            .clients
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// The event ids of what reached the tap (the consumer's view), each with its Detail.
    async fn tapped(&self, want: usize) -> BTreeMap<String, Vec<Value>> {
        let wait = if want == 0 { 2 } else { 15 };
        let bodies = trigger::receive_events(
            &self.h.clients.sqs,
            &self.tap.queue_url,
            want.max(1),
            Duration::from_secs(wait),
        )
        .await
        .unwrap();
        let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for b in bodies {
            let v: Value = serde_json::from_str(&b).unwrap();
            let id = v["detail"]["eventId"].as_str().unwrap().to_owned();
            by_id.entry(id).or_default().push(v["detail"].clone());
        }
        by_id
    }
}

fn event_ids(accepted: &[String]) -> Vec<String> {
    accepted
        .iter()
        .map(|e| {
            let e: Value = serde_json::from_str(e).unwrap();
            let d: Value = serde_json::from_str(e["Detail"].as_str().unwrap()).unwrap();
            d["eventId"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn parked_batches_replay_as_the_relay_publishes_them_and_only_once() {
    let Some(ep) = endpoint() else { return };
    let s = setup(&ep, "rp").await;
    let batch = records(&s.stream_arn);
    let direct = s.direct_relay_run(&batch).await;
    assert_eq!(direct.len(), 5, "every record maps to an event");
    assert_eq!(s.tapped(5).await.len(), 5);
    let key = s.park(&batch).await;

    // Dry run: counts, changes nothing.
    s.h.take_calls();
    let calls_before = s.proxy.calls();
    let (code, text) = s.cli(true).await;
    assert_eq!(code, 2, "a dry run with batches parked exits 2:\n{text}");
    assert!(text.contains("[1/1] aws/lambda/"), "{text}");
    assert!(
        text.contains("records: INSERT 2, MODIFY 1, REMOVE 2"),
        "{text}"
    );
    assert!(text.contains("would publish 5 event(s)"), "{text}");
    assert!(text.contains("nothing changed"), "{text}");
    let dry = s
        .replay(&Options {
            dry_run: true,
            ..Options::default()
        })
        .await;
    assert_eq!((dry.total, dry.events, dry.left()), (1, 5, 1));
    let b = &dry.batches[0];
    assert_eq!(b.outcome, BatchOutcome::WouldReplay);
    assert_eq!(
        b.changes,
        BTreeMap::from([
            ("INSERT".to_owned(), 2),
            ("MODIFY".to_owned(), 1),
            ("REMOVE".to_owned(), 2)
        ])
    );
    assert_eq!(b.condition.as_deref(), Some("RetryAttemptsExhausted"));
    assert_eq!(s.proxy.calls(), calls_before, "a dry run publishes nothing");
    let dry_calls = s.h.take_calls();
    assert!(
        dry_calls.iter().any(|c| c.operation == "GetObject"),
        "{dry_calls:?}"
    );
    assert!(
        dry_calls.iter().all(|c| !c.mutating),
        "a dry run made a mutating call: {dry_calls:?}"
    );
    assert_eq!(s.keys().await, vec![key.clone()]);

    // Replay: the same entries, byte for byte, as the relay's own run; the batch moves.
    let report = s.replay(&Options::default()).await;
    assert_eq!((report.replayed(), report.left(), report.events), (1, 0, 5));
    assert!(report.error.is_none(), "{:?}", report.error);
    let replayed = s.proxy.take_accepted();
    assert_eq!(replayed, direct, "replayed entries differ from the relay's");
    let ops: Vec<String> = s.h.take_calls().into_iter().map(|c| c.operation).collect();
    for op in ["PutEvents", "PutObject", "DeleteObject"] {
        assert!(ops.iter().any(|o| o == op), "{op} not seen: {ops:?}");
    }
    let tapped = s.tapped(5).await;
    assert_eq!(
        tapped.keys().cloned().collect::<Vec<_>>(),
        {
            let mut ids = event_ids(&direct);
            ids.sort();
            ids
        },
        "the consumer sees the relay's event ids"
    );
    assert_eq!(s.keys().await, vec![format!("replayed/{key}")]);
    // What replay moved is no longer counted as parked.
    let st = s.h.engine.status(&s.p).await.expect("status");
    let parked = st.data_plane.and_then(|d| d.parked_batches);
    assert_eq!(parked.as_deref(), Some("0"));

    // A second run finds nothing parked and publishes nothing.
    let calls_before = s.proxy.calls();
    let again = s.replay(&Options::default()).await;
    assert_eq!((again.total, again.events), (0, 0));
    let (code, text) = s.cli(false).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no parked batch in arn:aws:s3:::"), "{text}");
    assert_eq!(s.proxy.calls(), calls_before);
    assert!(s.tapped(0).await.is_empty());

    // Every call replay made is allowed by the operator's policy.
    s.h.assert_policy_covers_calls();
    s.tap
        .remove(&s.h.clients.eventbridge, &s.h.clients.sqs)
        .await
        .unwrap();
}

#[tokio::test]
async fn putevents_faults_lose_nothing_and_publish_nothing_twice() {
    let Some(ep) = endpoint() else { return };
    let s = setup(&ep, "rf").await;
    let batch = records(&s.stream_arn);
    let direct = s.direct_relay_run(&batch).await;
    s.tapped(5).await;
    let key = s.park(&batch).await;

    // A throttled call, a partly throttled one and a partly failed one are retried; u1's
    // MODIFY is rejected for good, in a request with u2's TTL expiry, which is published.
    {
        let mut st = s.proxy.state.lock().unwrap();
        st.steps = vec![Step::Throttle, Step::ThrottleFirst, Step::InternalFirst];
        st.reject_sequence = Some("100000000000000000003".to_owned());
    }
    let opts = Options {
        retry: RetryPolicy {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..Options::default()
    };
    let first = s.replay(&opts).await;
    assert_eq!((first.replayed(), first.left()), (0, 1));
    let BatchOutcome::Left(why) = &first.batches[0].outcome else {
        panic!("{:?}", first.batches[0].outcome)
    };
    assert!(why.contains("InvalidArgument"), "{why}");
    assert!(
        why.contains("100000000000000000003"),
        "names the record: {why}"
    );
    let part = s.proxy.take_accepted();
    // Before the MODIFY (u1, u2 created) and the TTL expiry of u2 sent with it; never u1's
    // REMOVE, which follows the MODIFY of the same item.
    assert_eq!(first.events, 3);
    let ids = event_ids(&direct);
    let mut got = event_ids(&part);
    got.sort();
    let mut want = vec![ids[0].clone(), ids[1].clone(), ids[3].clone()];
    want.sort();
    assert_eq!(got, want, "u1's REMOVE must wait for its MODIFY");
    let mut keys = s.keys().await;
    keys.sort();
    assert_eq!(
        keys,
        vec![key.clone(), format!("replayed/{key}.published.json")],
        "the batch stays parked, with what was published recorded"
    );

    // The fault is gone: the next run publishes the rest only.
    s.proxy.state.lock().unwrap().reject_sequence = None;
    let second = s.replay(&opts).await;
    assert_eq!((second.replayed(), second.left(), second.events), (1, 0, 2));
    assert_eq!(second.batches[0].already_published, 3);
    let rest = s.proxy.take_accepted();
    let mut all: Vec<String> = part.into_iter().chain(rest).collect();
    all.sort();
    let mut want = direct.clone();
    want.sort();
    assert_eq!(
        all, want,
        "every event exactly once, as the relay publishes it"
    );
    let tapped = s.tapped(5).await;
    assert_eq!(tapped.len(), 5);
    assert!(tapped.values().all(|v| v.len() == 1), "{tapped:?}");
    assert_eq!(s.keys().await, vec![format!("replayed/{key}")]);
    s.tap
        .remove(&s.h.clients.eventbridge, &s.h.clients.sqs)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_sns_destination_is_refused_clearly_and_nothing_changes() {
    let Some(ep) = endpoint() else { return };
    let s = setup(&ep, "rq").await;
    let mut p = s.p.clone();
    let topic = "arn:aws:sns:us-east-1:123456789012:relay-failures";
    p.spec.relay.on_failure_destination_arn = Some(topic.to_owned());
    s.h.take_calls();
    let err = replay::replay(&s.engine, &p, &Options::default(), &mut |_| {})
        .await
        .expect_err("an SNS topic cannot be listed");
    assert!(
        matches!(err, replay::ReplayError::SnsNotListable(ref d) if d == topic),
        "{err}"
    );
    assert!(err.to_string().contains("--invocation-record"), "{err}");
    let docs = [outbox_operator::manifest::Document {
        origin: "test".to_owned(),
        pipeline: p,
    }];
    let mut out = Vec::new();
    let code =
        outbox_operator::cli::replay::replay_all(&s.engine, &docs, &Options::default(), &mut out)
            .await
            .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(topic), "{text}");
    let calls = s.h.take_calls();
    assert!(calls.iter().all(|c| !c.mutating), "{calls:?}");
    s.tap
        .remove(&s.h.clients.eventbridge, &s.h.clients.sqs)
        .await
        .unwrap();
}

/// The sequence numbers of accepted entries, in the order moto accepted them.
fn sequences(accepted: &[String]) -> Vec<String> {
    accepted
        .iter()
        .map(|e| {
            let e: Value = serde_json::from_str(e).unwrap();
            let d: Value = serde_json::from_str(e["Detail"].as_str().unwrap()).unwrap();
            d["sequenceNumber"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn batches_go_in_stream_order_and_one_left_parked_holds_the_later_ones() {
    let Some(ep) = endpoint() else { return };
    let s = setup(&ep, "ro").await;
    let all = records(&s.stream_arn);
    let records = all["Records"].as_array().unwrap();
    // Two batches of one shard parked in the same second; the later one's key sorts first.
    let first = json!({"Records": records[..3]});
    let second = json!({"Records": records[3..]});
    let k2 = s
        .park_as(&second, "00000000-0000-4000-8000-000000000000")
        .await;
    let k1 = s
        .park_as(&first, "ffffffff-ffff-4fff-8fff-ffffffffffff")
        .await;
    assert!(k2 < k1);

    // u1's MODIFY (in the first batch) is rejected: the second batch, which holds u1's REMOVE,
    // is not even tried.
    s.proxy.state.lock().unwrap().reject_sequence = Some("100000000000000000003".to_owned());
    let stopped = s.replay(&Options::default()).await;
    assert_eq!(
        (stopped.total, stopped.batches.len(), stopped.left()),
        (2, 1, 2)
    );
    assert_eq!(stopped.batches[0].key, k1);
    assert_eq!(
        sequences(&s.proxy.take_accepted()),
        ["100000000000000000001", "100000000000000000002"]
    );
    let (code, _) = s.cli(true).await;
    assert_eq!(code, 2);

    s.proxy.state.lock().unwrap().reject_sequence = None;
    let done = s.replay(&Options::default()).await;
    assert_eq!((done.replayed(), done.left()), (2, 0));
    assert_eq!(
        sequences(&s.proxy.take_accepted()),
        [
            "100000000000000000003",
            "100000000000000000004",
            "100000000000000000005"
        ],
        "stream order across the two batches"
    );
    s.tap
        .remove(&s.h.clients.eventbridge, &s.h.clients.sqs)
        .await
        .unwrap();
}

/// The pipeline's table with its stream but without the event source mapping (moto empties the
/// stream of a table with a mapping, trying to invoke it): the converged table is dropped and
/// created again under the same name. Then user u1 is created, changed and deleted. Returns the
/// new stream's ARN, its shard and the records as GetRecords returns them.
async fn table_with_a_stream(
    s: &Setup,
) -> (String, String, Vec<aws_sdk_dynamodbstreams::types::Record>) {
    let ddb = &s.h.clients.dynamodb;
    let table = s
        .stream_arn
        .split("/stream/")
        .next()
        .and_then(|t| t.rsplit("table/").next())
        .unwrap()
        .to_owned();
    ddb.update_table()
        .table_name(&table)
        .deletion_protection_enabled(false)
        .send()
        .await
        .unwrap();
    ddb.delete_table().table_name(&table).send().await.unwrap();
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
        ScalarAttributeType, StreamSpecification, StreamViewType,
    };
    let created = ddb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let stream_arn = created
        .table_description()
        .and_then(|t| t.latest_stream_arn())
        .unwrap()
        .to_owned();
    let s_ = |v: &str| AttributeValue::S(v.to_owned());
    for email in ["a@x.io", "b@x.io"] {
        ddb.put_item()
            .table_name(&table)
            .item("id", s_("u1"))
            .item("email", s_(email))
            .send()
            .await
            .unwrap();
    }
    ddb.delete_item()
        .table_name(&table)
        .key("id", s_("u1"))
        .send()
        .await
        .unwrap();
    let streams = aws_sdk_dynamodbstreams::Client::new(&s.sdk);
    let shard = trigger::first_shard(&streams, &stream_arn).await.unwrap();
    let records = trigger::read_stream(&streams, &stream_arn).await.unwrap();
    let names: Vec<&str> = records
        .iter()
        .filter_map(|r| r.event_name().map(|n| n.as_str()))
        .collect();
    assert_eq!(names, ["INSERT", "MODIFY", "REMOVE"]);
    (stream_arn, shard, records)
}

/// The invocation record Lambda sends an SQS (or SNS) on-failure destination for a batch of a
/// DynamoDB stream mapping: metadata only (format: engine::replay::record).
fn invocation_record(stream_arn: &str, shard: &str, first: &str, last: &str, at: &str) -> String {
    sized_invocation_record(stream_arn, shard, (first, last, 3), at)
}

fn sized_invocation_record(
    stream_arn: &str,
    shard: &str,
    (first, last, size): (&str, &str, usize),
    at: &str,
) -> String {
    json!({
        "requestContext": {
            "requestId": "316aa6d0-8154-4000-9af7-85d5f4a6bc81",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:relay",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": at,
        "DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": first,
            "endSequenceNumber": last,
            "approximateArrivalOfFirstRecord": "2026-11-29T04:59:58Z",
            "approximateArrivalOfLastRecord": "2026-11-29T04:59:59Z",
            "batchSize": size,
            "streamArn": stream_arn
        }
    })
    .to_string()
}

fn sequence_of(r: &aws_sdk_dynamodbstreams::types::Record) -> String {
    r.dynamodb()
        .and_then(|d| d.sequence_number())
        .unwrap()
        .to_owned()
}

/// An SQS failure destination of the pipeline, with the given messages; the pipeline that uses it.
async fn parked_queue(s: &Setup, name: &str, bodies: &[String]) -> (OutboxPipeline, String) {
    let sqs = &s.h.clients.sqs;
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for b in bodies {
        sqs.send_message()
            .queue_url(&url)
            .message_body(b)
            .send()
            .await
            .unwrap();
    }
    let mut p = s.p.clone();
    p.spec.relay.on_failure_destination_arn =
        Some(format!("arn:aws:sqs:us-east-1:123456789012:{name}"));
    (p, url)
}

/// (visible, in flight) messages of a queue.
async fn depth(s: &Setup, url: &str) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out =
        s.h.clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
    let a = out.attributes().cloned().unwrap_or_default();
    (
        a.get(&A::ApproximateNumberOfMessages)
            .cloned()
            .unwrap_or_default(),
        a.get(&A::ApproximateNumberOfMessagesNotVisible)
            .cloned()
            .unwrap_or_default(),
    )
}

async fn replay_of(s: &Setup, p: &OutboxPipeline, opts: &Options) -> Report {
    replay::replay(&s.engine, p, opts, &mut |_| {})
        .await
        .expect("replay starts")
}

#[tokio::test]
async fn a_batch_parked_in_sqs_is_read_back_from_the_stream_and_replayed_once() {
    let Some(ep) = endpoint() else { return };
    let s = setup(&ep, "rs").await;
    let (stream_arn, shard, records) = table_with_a_stream(&s).await;
    let event = trigger::to_lambda_event(&records, &stream_arn).unwrap();
    let direct = s
        .direct_relay_run(&serde_json::to_value(&event).unwrap())
        .await;
    assert_eq!(direct.len(), 3);
    assert_eq!(s.tapped(3).await.len(), 3);
    let first = sequence_of(&records[0]);
    let last = sequence_of(&records[2]);
    let body = invocation_record(
        &stream_arn,
        &shard,
        &first,
        &last,
        "2026-11-29T05:00:00.000Z",
    );
    let (p, url) = parked_queue(&s, &format!("parked-{}", unique("q")), &[body]).await;

    // Dry run: reads the queue without holding its message, reads the stream, publishes nothing.
    s.h.take_calls();
    let calls_before = s.proxy.calls();
    let dry = replay_of(
        &s,
        &p,
        &Options {
            dry_run: true,
            ..Options::default()
        },
    )
    .await;
    assert!(dry.error.is_none(), "{:?}", dry.error);
    assert_eq!((dry.total, dry.events, dry.left()), (1, 3, 1));
    assert_eq!(dry.batches[0].outcome, BatchOutcome::WouldReplay);
    assert_eq!(
        dry.batches[0].changes,
        BTreeMap::from([
            ("INSERT".to_owned(), 1),
            ("MODIFY".to_owned(), 1),
            ("REMOVE".to_owned(), 1)
        ])
    );
    assert_eq!(s.proxy.calls(), calls_before, "a dry run publishes nothing");
    let mutating: Vec<String> =
        s.h.take_calls()
            .into_iter()
            .filter(|c| c.mutating)
            .map(|c| c.operation)
            .collect();
    assert!(
        mutating.iter().all(|o| o == "ReceiveMessage"),
        "a dry run made a mutating call: {mutating:?}"
    );
    assert_eq!(
        depth(&s, &url).await,
        ("1".into(), "0".into()),
        "still visible"
    );
    // The read-only guard lets a peek through, nothing else: a receive that would hide the
    // message is refused before it is sent.
    let read_only = s.engine.read_only_clients_for(None);
    let hiding = read_only
        .sqs
        .receive_message()
        .queue_url(&url)
        .visibility_timeout(30)
        .send()
        .await;
    assert!(hiding.is_err(), "{hiding:?}");
    assert_eq!(
        depth(&s, &url).await,
        ("1".into(), "0".into()),
        "still visible"
    );

    // Replay: the relay's own entries, byte for byte; the message is deleted.
    let report = replay_of(&s, &p, &Options::default()).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!((report.replayed(), report.left(), report.events), (1, 0, 3));
    assert_eq!(
        s.proxy.take_accepted(),
        direct,
        "replayed entries differ from the relay's"
    );
    assert_eq!(s.tapped(3).await.len(), 3);
    assert_eq!(
        depth(&s, &url).await,
        ("0".into(), "0".into()),
        "message deleted"
    );

    // A second run finds nothing and publishes nothing.
    let again = replay_of(&s, &p, &Options::default()).await;
    assert_eq!((again.total, again.events), (0, 0));
    assert!(s.proxy.take_accepted().is_empty());
    s.h.assert_policy_covers_calls();
    s.tap
        .remove(&s.h.clients.eventbridge, &s.h.clients.sqs)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_range_the_stream_no_longer_holds_or_of_another_table_is_left_and_nothing_published() {
    let Some(ep) = endpoint() else { return };
    let s = setup(&ep, "rg").await;
    let (stream_arn, shard, records) = table_with_a_stream(&s).await;
    // A range after the shard's last record: what the stream holds no longer covers it.
    let last: u128 = sequence_of(&records[2]).parse().unwrap();
    let (a, b) = ((last + 10).to_string(), (last + 12).to_string());
    let gone = invocation_record(&stream_arn, &shard, &a, &b, "2026-11-29T05:00:00.000Z");
    let (p, url) = parked_queue(&s, &format!("parked-{}", unique("g")), &[gone]).await;
    let docs = [outbox_operator::manifest::Document {
        origin: "test".to_owned(),
        pipeline: p.clone(),
    }];
    let mut out = Vec::new();
    let code =
        outbox_operator::cli::replay::replay_all(&s.engine, &docs, &Options::default(), &mut out)
            .await
            .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("no longer in the stream (24-hour retention): 3 records cannot be replayed"),
        "{text}"
    );
    assert!(
        s.proxy.take_accepted().is_empty(),
        "nothing guessed, nothing published"
    );
    assert_eq!(
        depth(&s, &url).await,
        ("1".into(), "0".into()),
        "left in the queue"
    );

    // A record naming another table's stream is refused, even with a range this stream holds.
    let foreign = stream_arn.replace(":table/", ":table/someone-elses-");
    let first = sequence_of(&records[0]);
    let other = invocation_record(
        &foreign,
        &shard,
        &first,
        &sequence_of(&records[2]),
        "2026-11-29T05:00:01.000Z",
    );
    s.h.clients
        .sqs
        .send_message()
        .queue_url(&url)
        .message_body(other)
        .send()
        .await
        .unwrap();
    let report = replay_of(&s, &p, &Options::default()).await;
    assert_eq!((report.total, report.replayed(), report.events), (2, 0, 0));
    let why: Vec<String> = report
        .batches
        .iter()
        .map(|b| match &b.outcome {
            BatchOutcome::Left(w) => w.clone(),
            o => format!("{o:?}"),
        })
        .collect();
    assert!(why[0].contains("no longer in the stream"), "{why:?}");
    assert!(
        why[1].starts_with("refused:") && why[1].contains(&foreign),
        "{why:?}"
    );
    assert!(s.proxy.take_accepted().is_empty());
    assert_eq!(
        depth(&s, &url).await,
        ("2".into(), "0".into()),
        "both left in the queue"
    );
    s.tap
        .remove(&s.h.clients.eventbridge, &s.h.clients.sqs)
        .await
        .unwrap();
}

#[tokio::test]
async fn batches_parked_to_sns_replay_from_the_invocation_records_given() {
    let Some(ep) = endpoint() else { return };
    let s = setup(&ep, "rn").await;
    let (stream_arn, shard, records) = table_with_a_stream(&s).await;
    let event = trigger::to_lambda_event(&records, &stream_arn).unwrap();
    let direct = s
        .direct_relay_run(&serde_json::to_value(&event).unwrap())
        .await;
    assert_eq!(s.tapped(3).await.len(), 3);
    let mut p = s.p.clone();
    p.spec.relay.on_failure_destination_arn =
        Some("arn:aws:sns:us-east-1:123456789012:relay-failures".to_owned());
    let body = invocation_record(
        &stream_arn,
        &shard,
        &sequence_of(&records[0]),
        &sequence_of(&records[2]),
        "2026-11-29T05:00:00.000Z",
    );
    let opts = Options {
        invocation_records: vec![("saved.json".to_owned(), body.into_bytes())],
        ..Options::default()
    };
    let report = replay_of(&s, &p, &opts).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!((report.replayed(), report.left(), report.events), (1, 0, 3));
    assert_eq!(report.batches[0].key, "saved.json");
    assert_eq!(s.proxy.take_accepted(), direct);
    s.tap
        .remove(&s.h.clients.eventbridge, &s.h.clients.sqs)
        .await
        .unwrap();
}

#[tokio::test]
async fn sqs_batches_go_oldest_first_and_those_not_taken_stay_visible() {
    let Some(ep) = endpoint() else { return };
    let s = setup(&ep, "rm").await;
    let (stream_arn, shard, records) = table_with_a_stream(&s).await;
    let event = trigger::to_lambda_event(&records, &stream_arn).unwrap();
    let direct = s
        .direct_relay_run(&serde_json::to_value(&event).unwrap())
        .await;
    assert_eq!(s.tapped(3).await.len(), 3);
    let seq: Vec<String> = records.iter().map(sequence_of).collect();
    // The later batch is sent first; the earlier one (parked a second before) goes first.
    let later = sized_invocation_record(
        &stream_arn,
        &shard,
        (&seq[2], &seq[2], 1),
        "2026-11-29T05:00:01.000Z",
    );
    let earlier = sized_invocation_record(
        &stream_arn,
        &shard,
        (&seq[0], &seq[1], 2),
        "2026-11-29T05:00:00.000Z",
    );
    let (p, url) = parked_queue(&s, &format!("parked-{}", unique("m")), &[later, earlier]).await;
    let one = replay_of(
        &s,
        &p,
        &Options {
            max_batches: Some(1),
            ..Options::default()
        },
    )
    .await;
    assert!(one.error.is_none(), "{:?}", one.error);
    assert_eq!(
        (one.total, one.replayed(), one.left(), one.events),
        (2, 1, 1, 2)
    );
    assert_eq!(one.batches[0].first_sequence, seq[0]);
    assert_eq!(s.proxy.take_accepted(), direct[..2]);
    assert_eq!(
        depth(&s, &url).await,
        ("1".into(), "0".into()),
        "the batch not taken is visible again at once"
    );
    let rest = replay_of(&s, &p, &Options::default()).await;
    assert_eq!((rest.total, rest.replayed(), rest.events), (1, 1, 1));
    assert_eq!(s.proxy.take_accepted(), direct[2..]);
    assert_eq!(depth(&s, &url).await, ("0".into(), "0".into()));
    s.tap
        .remove(&s.h.clients.eventbridge, &s.h.clients.sqs)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_sqs_batch_that_fails_part_way_stays_visible_and_is_published_again_whole() {
    let Some(ep) = endpoint() else { return };
    let s = setup(&ep, "rf").await;
    let (stream_arn, shard, records) = table_with_a_stream(&s).await;
    let event = trigger::to_lambda_event(&records, &stream_arn).unwrap();
    let direct = s
        .direct_relay_run(&serde_json::to_value(&event).unwrap())
        .await;
    assert_eq!(s.tapped(3).await.len(), 3);
    let seq: Vec<String> = records.iter().map(sequence_of).collect();
    let body = invocation_record(
        &stream_arn,
        &shard,
        &seq[0],
        &seq[2],
        "2026-11-29T05:00:00.000Z",
    );
    let (p, url) = parked_queue(&s, &format!("parked-{}", unique("f")), &[body]).await;
    // The MODIFY is rejected for good: the INSERT before it is published, the batch stays.
    s.proxy.state.lock().unwrap().reject_sequence = Some(seq[1].clone());
    let stopped = replay_of(&s, &p, &Options::default()).await;
    assert_eq!(
        (stopped.replayed(), stopped.left(), stopped.events),
        (0, 1, 1)
    );
    assert!(
        matches!(&stopped.batches[0].outcome, BatchOutcome::Left(w) if w.contains(&seq[1])),
        "{:?}",
        stopped.batches[0].outcome
    );
    assert_eq!(s.proxy.take_accepted(), direct[..1]);
    assert_eq!(
        depth(&s, &url).await,
        ("1".into(), "0".into()),
        "left visible"
    );
    // Fixed: the next run publishes the whole batch again (the INSERT twice, same eventId).
    s.proxy.state.lock().unwrap().reject_sequence = None;
    let done = replay_of(&s, &p, &Options::default()).await;
    assert_eq!((done.replayed(), done.events), (1, 3));
    assert_eq!(s.proxy.take_accepted(), direct);
    assert_eq!(depth(&s, &url).await, ("0".into(), "0".into()));
    s.tap
        .remove(&s.h.clients.eventbridge, &s.h.clients.sqs)
        .await
        .unwrap();
}
