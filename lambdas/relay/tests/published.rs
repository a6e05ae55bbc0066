//! What the relay publishes for each kind of stream record: the mapped source and detail type,
//! the chosen image as plain JSON, the envelope's metadata, skipped change types and the trace
//! header.

mod common;

use common::*;
use outbox_contract::{ChangeType, Payload};
use outbox_relay::event::event_id;
use outbox_relay::{Invocation, Relay, RetryPolicy};
use serde_json::json;

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
