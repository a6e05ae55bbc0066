//! Wire level against moto, a single-table design (examples/single-table.yaml): users and their
//! orders in one table (pk `USER#<id>`, sk `PROFILE` / `ORDER#<id>`, stream NEW_AND_OLD_IMAGES).
//! Real stream records → the relay configured with the example's entries → PutEvents on a bus →
//! one tap per consumer of the example (its event pattern). Each entity's record arrives as its
//! own event at its own consumer, carrying only the attributes its entry allows; records no entry
//! takes (a cart, an order shipped, a delete) publish nothing.
//!
//! Needs OUTBOX_TEST_ENDPOINT like wire.rs (skipped without it unless CI=true).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use outbox_consumer::UserEvent;
use outbox_contract::{EventMapping, RelayConfig};
use outbox_local_trigger::{Tap, read_stream, receive_events, to_lambda_event};
use outbox_relay::wire::SignedClient;
use outbox_relay::{Invocation, Relay, RetryPolicy};
use serde_json::{Value, json};

fn endpoint() -> Option<String> {
    match std::env::var("OUTBOX_TEST_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => Some(e),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("OUTBOX_TEST_ENDPOINT is not set but CI=true: wire tests must run in CI")
        }
        _ => {
            eprintln!("skipping wire test: OUTBOX_TEST_ENDPOINT is not set");
            None
        }
    }
}

async fn sdk(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "wire"))
        .load()
        .await
}

/// `OUTBOX_EVENTS` as the operator writes it for examples/single-table.yaml.
fn single_table_events() -> Vec<EventMapping> {
    serde_json::from_value(json!([
        {"change": "INSERT", "source": "myapp.users", "detailType": "UserCreated", "payload": "newImage",
         "match": {"keyPrefix": [{"key": "sk", "prefix": "PROFILE"}]},
         "fields": {"include": ["username", "email", "createdAt"]}},
        {"change": "INSERT", "source": "myapp.orders", "detailType": "OrderPlaced", "payload": "newImage",
         "match": {"keyPrefix": [{"key": "sk", "prefix": "ORDER#"}]},
         "fields": {"exclude": ["email", "gsi1pk", "gsi1sk", "version", "expiresAt"]}},
        {"change": "MODIFY", "source": "myapp.orders", "detailType": "OrderCancelled", "payload": "newImage",
         "match": {"keyPrefix": [{"key": "sk", "prefix": "ORDER#"}],
                   "attributes": [{"name": "status", "equals": "CANCELLED"}]},
         "fields": {"include": ["status", "total", "cancelledAt"]}}
    ]))
    .expect("the example's entries")
}

async fn create_table(ddb: &aws_sdk_dynamodb::Client, table: &str) -> String {
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    ddb.create_table()
        .table_name(table)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("CreateTable")
        .table_description()
        .and_then(|t| t.latest_stream_arn())
        .expect("the table has a stream")
        .to_owned()
}

/// Writes a profile, an order, a cart; ships and then cancels the order; deletes the cart.
async fn write_entities(ddb: &aws_sdk_dynamodb::Client, table: &str) {
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: &str| AttributeValue::N(v.into());
    let put = |item: Vec<(&str, AttributeValue)>| {
        let mut req = ddb.put_item().table_name(table);
        for (k, v) in item {
            req = req.item(k, v);
        }
        req.send()
    };
    put(vec![
        ("pk", s("USER#42")),
        ("sk", s("PROFILE")),
        ("username", s("ada")),
        ("email", s("ada@example.com")),
        ("createdAt", s("2026-01-01T00:00:00Z")),
        ("gsi1pk", s("EMAIL#ada@example.com")),
        ("version", n("1")),
    ])
    .await
    .expect("profile");
    put(vec![
        ("pk", s("USER#42")),
        ("sk", s("ORDER#7")),
        ("status", s("PLACED")),
        ("total", n("42.50")),
        ("email", s("ada@example.com")),
        ("gsi1pk", s("ORDER#7")),
        ("version", n("1")),
        ("expiresAt", n("1798761600")),
    ])
    .await
    .expect("order");
    put(vec![
        ("pk", s("USER#42")),
        ("sk", s("CART")),
        ("items", n("3")),
    ])
    .await
    .expect("cart");
    for (status, extra) in [
        ("SHIPPED", None),
        ("CANCELLED", Some("2026-01-02T00:00:00Z")),
    ] {
        let mut req = ddb
            .update_item()
            .table_name(table)
            .key("pk", s("USER#42"))
            .key("sk", s("ORDER#7"))
            .expression_attribute_values(":s", s(status));
        req = match extra {
            None => req.update_expression("SET #st = :s"),
            Some(at) => req
                .update_expression("SET #st = :s, cancelledAt = :c")
                .expression_attribute_values(":c", s(at)),
        };
        req.expression_attribute_names("#st", "status")
            .send()
            .await
            .expect("UpdateItem");
    }
    ddb.delete_item()
        .table_name(table)
        .key("pk", s("USER#42"))
        .key("sk", s("CART"))
        .send()
        .await
        .expect("DeleteItem");
}

fn item_names(body: &Value) -> Vec<String> {
    let mut names: Vec<String> = body["detail"]["item"]
        .as_object()
        .expect("item")
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn each_entity_of_one_table_reaches_its_consumer_as_its_own_event_with_only_allowed_fields() {
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
    let table = format!("wire-shop-{suffix}");
    let bus_name = format!("wire-shop-{suffix}");

    let stream_arn = create_table(&ddb, &table).await;
    events
        .create_event_bus()
        .name(&bus_name)
        .send()
        .await
        .expect("CreateEventBus");
    // The example's two consumers.
    let welcome = json!({"source": ["myapp.users"], "detail-type": ["UserCreated"]});
    let fulfilment =
        json!({"source": ["myapp.orders"], "detail-type": ["OrderPlaced", "OrderCancelled"]});
    let mut taps = Vec::new();
    for (name, pattern) in [("welcome", welcome), ("fulfilment", fulfilment)] {
        let rule = format!("wire-{name}-{suffix}");
        let tap = Tap::create(&events, &sqs, &bus_name, &rule, &pattern.to_string())
            .await
            .expect("tap");
        taps.push(tap);
    }

    write_entities(&ddb, &table).await;
    let records = read_stream(&streams, &stream_arn).await.expect("records");
    let batch = to_lambda_event(&records, &stream_arn).expect("event");
    assert_eq!(batch.records.len(), 6, "3 INSERTs, 2 MODIFYs, 1 REMOVE");

    let config = RelayConfig {
        bus_name: bus_name.clone(),
        events: single_table_events(),
        request_size_limit_bytes: outbox_contract::DEFAULT_REQUEST_SIZE_LIMIT_BYTES,
        pipeline: None,
    };
    config.validate().expect("valid");
    // The relay's own PutEvents client, as the deployed relay publishes, against the emulator.
    let client = SignedClient::from_sdk(&sdk).await.expect("client");
    let relay = Relay::new(config, client, RetryPolicy::default());
    let invocation = Invocation {
        deadline: tokio::time::Instant::now() + Duration::from_secs(30),
        trace_header: None,
    };
    let report = relay.process(&batch, &invocation).await.expect("relay");
    assert!(report.response.batch_item_failures.is_empty(), "{report:?}");
    assert_eq!((report.published, report.skipped), (3, 3));

    let wait = Duration::from_secs(3);
    let users = receive_events(&sqs, &taps[0].queue_url, 10, wait)
        .await
        .expect("welcome");
    let orders = receive_events(&sqs, &taps[1].queue_url, 10, wait)
        .await
        .expect("fulfilment");
    assert_eq!((users.len(), orders.len()), (1, 2), "{users:?} {orders:?}");

    let user: Value = serde_json::from_str(&users[0]).expect("JSON");
    assert_eq!(user["detail-type"], "UserCreated");
    assert_eq!(
        item_names(&user),
        ["createdAt", "email", "pk", "sk", "username"]
    );
    // The bundled consumer reads it as a user.
    let UserEvent::Created(created) = outbox_consumer::process(user.clone()).expect("consumer")
    else {
        panic!("not a UserCreated: {user}")
    };
    assert_eq!(created.item.email, "ada@example.com");

    let mut orders: Vec<Value> = orders
        .iter()
        .map(|b| serde_json::from_str(b).expect("JSON"))
        .collect();
    orders.sort_by_key(|o| {
        o["detail"]["sequenceNumber"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    });
    assert_eq!(orders[0]["detail-type"], "OrderPlaced");
    assert_eq!(item_names(&orders[0]), ["pk", "sk", "status", "total"]);
    assert_eq!(
        orders[0]["detail"]["keys"],
        json!({"pk": "USER#42", "sk": "ORDER#7"})
    );
    assert_eq!(orders[1]["detail-type"], "OrderCancelled");
    assert_eq!(
        item_names(&orders[1]),
        ["cancelledAt", "pk", "sk", "status", "total"]
    );
    // Personal data and internal attributes never reach the order consumer.
    for body in &orders {
        for hidden in ["email", "gsi1pk", "version", "expiresAt", "ada@"] {
            let detail = body["detail"].to_string();
            assert!(
                !detail.contains(hidden),
                "{hidden} reached fulfilment: {detail}"
            );
        }
    }
    for tap in &taps {
        tap.remove(&events, &sqs).await.expect("tap removed");
    }
}
