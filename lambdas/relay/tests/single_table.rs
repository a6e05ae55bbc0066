//! A single-table design: users and orders in one table (pk `USER#<id>`, sk `PROFILE` or
//! `ORDER#<id>`). Each entity's record becomes its own event by the first entry it matches,
//! carrying only the fields that entry allows; records no entry matches are skipped and counted.

mod common;

use common::*;
use outbox_contract::{
    AttributeCondition, ChangeType, EventMapping, Fields, KeyPrefix, Payload, RecordMatch,
    RelayConfig,
};
use serde_json::{Value, json};

fn sk_prefix(prefix: &str) -> RecordMatch {
    RecordMatch {
        key_prefix: vec![KeyPrefix {
            key: "sk".into(),
            prefix: prefix.into(),
        }],
        attributes: vec![],
    }
}

/// The relay configuration of examples/single-table.yaml.
fn single_table() -> RelayConfig {
    let mut user = EventMapping::new(
        ChangeType::Insert,
        "myapp.users",
        "UserCreated",
        Payload::NewImage,
    );
    user.matches = Some(sk_prefix("PROFILE"));
    user.fields = Some(Fields::Include(vec![
        "username".into(),
        "email".into(),
        "createdAt".into(),
    ]));
    let mut placed = EventMapping::new(
        ChangeType::Insert,
        "myapp.orders",
        "OrderPlaced",
        Payload::NewImage,
    );
    placed.matches = Some(sk_prefix("ORDER#"));
    placed.fields = Some(Fields::Exclude(vec![
        "email".into(),
        "gsi1pk".into(),
        "version".into(),
        "expiresAt".into(),
    ]));
    let mut cancelled = placed.clone();
    cancelled.change = ChangeType::Modify;
    cancelled.detail_type = "OrderCancelled".into();
    cancelled.matches = Some(RecordMatch {
        attributes: vec![AttributeCondition {
            name: "status".into(),
            equals: Some("CANCELLED".into()),
            exists: None,
        }],
        ..sk_prefix("ORDER#")
    });
    let config = RelayConfig {
        bus_name: "outbox-bus".into(),
        events: vec![user, placed, cancelled],
        request_size_limit_bytes: 262_144,
        pipeline: None,
    };
    config.validate().expect("valid");
    config
}

fn item_names(detail: &Value) -> Vec<String> {
    let mut names: Vec<String> = detail["item"]
        .as_object()
        .expect("item is an object")
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

#[tokio::test(start_paused = true)]
async fn each_entity_becomes_its_own_event_with_only_the_allowed_fields() {
    let bus = always_ok();
    let event = fixture("single-table.json");
    let report = run(single_table(), &bus, &event).await;
    assert!(failures(&report).is_empty());
    // The cart INSERT, the order MODIFY to SHIPPED and the cart REMOVE match no entry.
    assert_eq!((report.published, report.skipped), (3, 3));
    let log = bus.log.lock().unwrap();
    let published = log.published();
    let [user, placed, cancelled] = &published[..] else {
        panic!("{published:?}")
    };

    assert_eq!(
        (user.source.as_str(), user.detail_type.as_str()),
        ("myapp.users", "UserCreated")
    );
    assert_eq!(
        item_names(&user.detail),
        ["createdAt", "email", "pk", "sk", "username"]
    );
    assert_eq!(user.detail["item"]["email"], "ada@example.com");

    assert_eq!(
        (placed.source.as_str(), placed.detail_type.as_str()),
        ("myapp.orders", "OrderPlaced")
    );
    assert_eq!(item_names(&placed.detail), ["pk", "sk", "status", "total"]);
    assert_eq!(
        placed.detail["keys"],
        json!({"pk": "USER#42", "sk": "ORDER#7"})
    );

    assert_eq!(cancelled.detail_type, "OrderCancelled");
    assert_eq!(cancelled.detail["change"], "MODIFY");
    assert_eq!(
        item_names(&cancelled.detail),
        ["cancelledAt", "pk", "sk", "status", "total"]
    );
    // Personal data and internal attributes of orders never leave the relay.
    for order in [placed, cancelled] {
        for hidden in ["ada@example.com", "gsi1pk", "expiresAt", "version"] {
            assert!(
                !order.raw_detail.contains(hidden),
                "{hidden} in {}",
                order.raw_detail
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_routed_and_projected_event_is_the_same_bytes_on_every_delivery() {
    let event = fixture("single-table.json");
    let mut runs = Vec::new();
    for _ in 0..2 {
        let bus = always_ok();
        run(single_table(), &bus, &event).await;
        let log = bus.log.lock().unwrap();
        runs.push(
            log.published()
                .iter()
                .map(|s| (s.detail_type.clone(), s.raw_detail.clone()))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(runs[0].len(), 3);
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test(start_paused = true)]
async fn without_routing_every_entity_is_the_same_event_with_its_whole_image() {
    let bus = always_ok();
    let event = fixture("single-table.json");
    let config = config(
        &[(ChangeType::Insert, "Created", Payload::NewImage)],
        262_144,
    );
    let report = run(config, &bus, &event).await;
    assert_eq!((report.published, report.skipped), (3, 3));
    let log = bus.log.lock().unwrap();
    let published = log.published();
    assert!(published.iter().all(|s| s.detail_type == "Created"));
    assert!(published[1].raw_detail.contains("ada@example.com"));
}
