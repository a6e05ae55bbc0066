//! Wire level against the moto server (real HTTP, real SDK clients), the whole chain:
//! writer handler → DynamoDB table (stream NEW_IMAGE, no event source mapping) → the stream's
//! records read with the DynamoDB Streams API and shaped into the Lambda event → relay handler →
//! PutEvents on a bus → a rule with an SQS target → the consumer handler parses what arrived.
//!
//! moto cannot run Lambdas, so this test plays the event source mapping and the rule's delivery
//! with the same dev tooling `make demo` uses (this crate's library).
//! The endpoint comes from OUTBOX_TEST_ENDPOINT (make unit sets it); unset, the test fails when
//! CI=true and is skipped otherwise. Resource names are unique per run: other test binaries share
//! the server, which is never reset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use outbox_consumer::UserEvent;
use outbox_contract::{ChangeType, EventMapping, Payload, RelayConfig};
use outbox_local_trigger::{Tap, read_stream, receive_events, to_lambda_event};
use outbox_relay::wire::SignedClient;
use outbox_relay::{Invocation, Relay, RetryPolicy};
use outbox_writer::{Writer, WriterConfig};
use serde_json::{Value, json};
use uuid::Uuid;

const BIG: &str = "12345678901234567890123456789012345678";

fn endpoint() -> Option<String> {
    match std::env::var("OUTBOX_TEST_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => Some(e),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "OUTBOX_TEST_ENDPOINT is not set but CI=true: wire tests must run in CI (make unit starts moto)"
            )
        }
        _ => {
            eprintln!("skipping wire test: OUTBOX_TEST_ENDPOINT is not set (make unit sets it)");
            None
        }
    }
}

async fn sdk(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "wire-test",
        ))
        .load()
        .await
}

#[tokio::test]
async fn writer_to_consumer_through_table_stream_relay_bus_and_queue() {
    let Some(endpoint) = endpoint() else { return };
    let sdk = sdk(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let suffix = format!("{}-{nanos}", std::process::id());
    let table = format!("wire-users-{suffix}");
    let bus_name = format!("wire-bus-{suffix}");
    let source = format!("wire.users.{suffix}");

    // The table: partition key "id", stream NEW_IMAGE, no event source mapping.
    let created = ddb
        .create_table()
        .table_name(&table)
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
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("CreateTable");
    let stream_arn = created
        .table_description()
        .and_then(|t| t.latest_stream_arn())
        .expect("the table has a stream")
        .to_owned();

    // The bus, a queue, and a rule whose only target is the queue.
    events
        .create_event_bus()
        .name(&bus_name)
        .send()
        .await
        .expect("CreateEventBus");
    let tap = Tap::create(
        &events,
        &sqs,
        &bus_name,
        &format!("wire-tap-{suffix}"),
        &json!({ "source": [source] }).to_string(),
    )
    .await
    .expect("tap rule and queue");

    // Writer: two users over HTTP API and direct invoke; a repeated id is a 409.
    let writer = Writer::new(
        WriterConfig {
            table_name: table.clone(),
            partition_key: "id".into(),
        },
        ddb.clone(),
    );
    let http = json!({
        "version": "2.0",
        "routeKey": "POST /users",
        "rawPath": "/users",
        "requestContext": {"http": {"method": "POST", "path": "/users", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "wire"}},
        "body": r#"{"username":"ada","email":"ada@example.com"}"#,
        "isBase64Encoded": false,
    });
    let answer = writer.handle(http).await;
    assert_eq!(answer["statusCode"], 201, "{answer}");
    let ada: Value =
        serde_json::from_str(answer["body"].as_str().expect("string body")).expect("JSON body");
    let ada_id = ada["id"].as_str().expect("id").to_owned();
    let answer = writer
        .handle(json!({"username": "bob", "email": "bob@example.com", "displayName": "Bob"}))
        .await;
    assert_eq!(answer["statusCode"], 201, "{answer}");
    let bob_id = answer["body"]["id"].as_str().expect("id").to_owned();
    let again = writer
        .create(
            Ok(json!({"username": "mallory", "email": "m@example.com"})),
            Uuid::parse_str(&ada_id).expect("uuid"),
        )
        .await;
    assert_eq!(again.status, 409, "a repeated id must never overwrite");

    // A change and a delete, so MODIFY and REMOVE records follow the two INSERTs.
    ddb.update_item()
        .table_name(&table)
        .key("id", AttributeValue::S(ada_id.clone()))
        .update_expression("SET email = :e, balance = :b")
        .expression_attribute_values(":e", AttributeValue::S("ada@lovelace.example".into()))
        .expression_attribute_values(":b", AttributeValue::N(BIG.into()))
        .send()
        .await
        .expect("UpdateItem");
    ddb.delete_item()
        .table_name(&table)
        .key("id", AttributeValue::S(bob_id.clone()))
        .send()
        .await
        .expect("DeleteItem");

    // The event source mapping's part: the stream's records as the relay's input.
    let records = read_stream(&streams, &stream_arn)
        .await
        .expect("stream records");
    let batch = to_lambda_event(&records, &stream_arn).expect("a valid DynamoDB event");
    let names: Vec<&str> = batch
        .records
        .iter()
        .map(|r| r.event_name.as_str())
        .collect();
    assert_eq!(
        names,
        ["INSERT", "INSERT", "MODIFY", "REMOVE"],
        "the table's stream"
    );

    let mapping = |change, detail_type: &str, payload| {
        EventMapping::new(change, &source, detail_type, payload)
    };
    let config = RelayConfig {
        bus_name: bus_name.clone(),
        events: vec![
            mapping(ChangeType::Insert, "UserCreated", Payload::NewImage),
            mapping(ChangeType::Modify, "UserUpdated", Payload::NewImage),
            mapping(ChangeType::Remove, "UserDeleted", Payload::Keys),
        ],
        request_size_limit_bytes: outbox_contract::DEFAULT_REQUEST_SIZE_LIMIT_BYTES,
        pipeline: None,
    };
    config.validate().expect("valid relay config");
    // The relay's own PutEvents client, as the deployed relay publishes, against the emulator.
    let client = SignedClient::from_sdk(&sdk).await.expect("client");
    let relay = Relay::new(config, client, RetryPolicy::default());
    let invocation = Invocation {
        deadline: tokio::time::Instant::now() + Duration::from_secs(30),
        trace_header: Some("Root=1-6770a000-0123456789abcdef01234567;Sampled=1".into()),
    };
    let report = relay
        .process(&batch, &invocation)
        .await
        .expect("relay handler");
    assert!(report.response.batch_item_failures.is_empty(), "{report:?}");
    assert_eq!(report.published, 4);

    // The rule's delivery: receive what the queue got, hand each to the consumer.
    let bodies = receive_events(&sqs, &tap.queue_url, 4, Duration::from_secs(20))
        .await
        .expect("receive from the tap");
    assert_eq!(bodies.len(), 4, "every published event reached the queue");

    let mut parsed: Vec<UserEvent> = bodies
        .iter()
        .map(|b| {
            outbox_consumer::process(serde_json::from_str(b).expect("JSON message"))
                .expect("consumer accepts it")
        })
        .collect();
    // EventBridge keeps no order: consumers order by sequence number.
    let seq = |e: &UserEvent| -> u128 {
        let s = match e {
            UserEvent::Created(d) | UserEvent::Updated(d) => d.sequence_number.clone(),
            UserEvent::Deleted { detail, .. } | UserEvent::Other { detail, .. } => {
                detail.sequence_number.clone()
            }
        };
        s.parse().expect("numeric sequence number")
    };
    parsed.sort_by_key(seq);
    let kinds: Vec<&str> = parsed.iter().map(UserEvent::kind).collect();
    assert_eq!(
        kinds,
        ["UserCreated", "UserCreated", "UserUpdated", "UserDeleted"]
    );
    let UserEvent::Created(first) = &parsed[0] else {
        unreachable!()
    };
    assert_eq!(first.item.username, "ada");
    assert_eq!(first.keys, json!({ "id": ada_id }));
    assert_eq!(first.table, table);
    let UserEvent::Updated(updated) = &parsed[2] else {
        unreachable!()
    };
    assert_eq!(updated.item.email, "ada@lovelace.example");
    let UserEvent::Deleted { detail, user } = &parsed[3] else {
        unreachable!()
    };
    assert_eq!((user, &detail.keys), (&None, &json!({ "id": bob_id })));
    assert!(!detail.ttl_expired);
    // Event ids are the relay's (stable per record), one per record.
    let ids: std::collections::BTreeSet<&str> = parsed.iter().map(UserEvent::event_id).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(
        parsed[0].event_id(),
        outbox_relay::event::event_id(
            &stream_arn,
            batch.records[0]
                .change
                .sequence_number
                .as_deref()
                .unwrap_or_default()
        )
        .to_string()
    );
    // The 38-digit number crossed PutEvents, the bus and the queue with every digit.
    assert!(
        bodies
            .iter()
            .any(|b| b.contains(&format!("\"balance\": {BIG}"))
                || b.contains(&format!("\"balance\":{BIG}"))),
        "balance lost digits: {bodies:?}"
    );
    tap.remove(&events, &sqs).await.expect("tap removed");
}
