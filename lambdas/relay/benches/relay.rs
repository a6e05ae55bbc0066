//! Relay cost per record and PutEvents calls against the lower bound.
//!
//! `cargo bench -p outbox-relay` (also run once, as a smoke test, by `cargo test --all-targets`).
//! Builds 10,000 stream records (users of varied size, every 7th record a second change of an
//! earlier user, a 38-digit number and a binary attribute in each), then measures `prepare`
//! (image → JSON → Detail → entry) plus in-order packing, and compares the number of requests
//! with ⌈n/10⌉ and ⌈bytes/limit⌉.

use std::hint::black_box;
use std::time::Instant;

use aws_lambda_events::dynamodb::Event;
use outbox_contract::{
    ChangeType, DEFAULT_REQUEST_SIZE_LIMIT_BYTES, EventMapping, Payload, RelayConfig,
};
use outbox_relay::batch::{lower_bound, plan};
use outbox_relay::event::{Disposition, prepare};

const RECORDS: usize = 10_000;
const STREAM_ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/users/stream/2026-01-01T00:00:00.000";

fn record(i: usize) -> serde_json::Value {
    // Every 7th record changes the user of the record before it (a per-item ordering constraint).
    let user = if i % 7 == 6 { i - 1 } else { i };
    let bio = "x".repeat(50 + (i * 37) % 4_000);
    serde_json::json!({
        "eventID": format!("e{i}"),
        "eventName": if user == i { "INSERT" } else { "MODIFY" },
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_767_225_600 + i,
            "Keys": {"id": {"S": format!("user-{user}")}},
            "NewImage": {
                "id": {"S": format!("user-{user}")},
                "email": {"S": format!("user{user}@example.com")},
                "balance": {"N": "12345678901234567890123456789012345678"},
                "avatar": {"B": "3q2+7w=="},
                "tags": {"SS": ["a", "b"]},
                "bio": {"S": bio},
            },
            "SequenceNumber": format!("{:021}", 100 + i),
            "SizeBytes": 100,
            "StreamViewType": "NEW_IMAGE",
        },
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = RelayConfig {
        bus_name: "bench".into(),
        events: [ChangeType::Insert, ChangeType::Modify]
            .into_iter()
            .map(|change| {
                EventMapping::new(change, "bench.users", "UserChanged", Payload::NewImage)
            })
            .collect(),
        request_size_limit_bytes: DEFAULT_REQUEST_SIZE_LIMIT_BYTES,
        pipeline: None,
    };
    let records: Vec<serde_json::Value> = (0..RECORDS).map(record).collect();
    let event: Event = serde_json::from_value(serde_json::json!({ "Records": records }))?;

    let start = Instant::now();
    let mut prepared = Vec::with_capacity(RECORDS);
    for record in &event.records {
        match prepare(record, &config, Some("Root=1-bench")) {
            Disposition::Publish(p) => prepared.push(p),
            other => return Err(format!("unexpected disposition: {other:?}").into()),
        }
    }
    let requests = plan(&prepared, config.request_size_limit_bytes);
    let elapsed = start.elapsed();
    black_box(&requests);

    let bytes: usize = prepared.iter().map(|p| p.size).sum();
    let bound = lower_bound(&prepared, config.request_size_limit_bytes);
    let per_record_ns = elapsed.as_nanos() / RECORDS as u128;
    println!("records:               {RECORDS}");
    println!("event bytes:           {bytes}");
    println!("transform + packing:   {per_record_ns} ns/record ({elapsed:?} total)");
    println!(
        "PutEvents calls:       {} (lower bound {bound} = max(ceil(n/10) = {}, ceil(bytes/limit) = {}))",
        requests.len(),
        RECORDS.div_ceil(10),
        bytes.div_ceil(config.request_size_limit_bytes)
    );
    println!(
        "calls over the bound:  {:.1}%  (per-item ordering forbids two changes of one user per request)",
        (requests.len() as f64 / bound as f64 - 1.0) * 100.0
    );
    Ok(())
}
