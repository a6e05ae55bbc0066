use outbox_contract::{AttributeCondition, ChangeType, KeyPrefix, Payload, RecordMatch};

use super::*;

fn plain(change: ChangeType) -> EventMapping {
    EventMapping::new(change, "app", "Event", Payload::NewImage)
}

fn routed(
    change: ChangeType,
    key: &str,
    prefix: &str,
    attrs: &[(&str, Option<&str>)],
) -> EventMapping {
    let mut e = plain(change);
    if change == ChangeType::Remove {
        e.payload = Payload::OldImage;
    }
    e.matches = Some(RecordMatch {
        key_prefix: vec![KeyPrefix {
            key: key.into(),
            prefix: prefix.into(),
        }],
        attributes: attrs
            .iter()
            .map(|(name, equals)| AttributeCondition {
                name: (*name).into(),
                equals: equals.map(str::to_owned),
                exists: equals.is_none().then_some(true),
            })
            .collect(),
    });
    e
}

#[test]
fn entries_without_match_give_todays_single_event_name_pattern() {
    let c = derive(&[plain(ChangeType::Remove), plain(ChangeType::Insert)]);
    assert_eq!(c.patterns, [json!({"eventName": ["INSERT", "REMOVE"]})]);
    assert!(c.widened.is_empty());
    assert_eq!(
        c.patterns[0].to_string(),
        r#"{"eventName":["INSERT","REMOVE"]}"#,
        "byte-identical to the filter of earlier versions, so upgrading changes no mapping"
    );
}

#[test]
fn key_prefix_and_equals_conditions_become_filter_fields_on_the_image_the_relay_reads() {
    let c = derive(&[
        routed(
            ChangeType::Modify,
            "sk",
            "ORDER#",
            &[("status", Some("CANCELLED"))],
        ),
        routed(
            ChangeType::Remove,
            "pk",
            "USER#",
            &[("kind", Some("admin"))],
        ),
    ]);
    assert!(c.widened.is_empty(), "{:?}", c.widened);
    assert_eq!(
        c.patterns,
        [
            json!({"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "USER#"}]}},
                                "OldImage": {"kind": {"S": ["admin"]}}},
                   "eventName": ["REMOVE"]}),
            json!({"dynamodb": {"Keys": {"sk": {"S": [{"prefix": "ORDER#"}]}},
                                "NewImage": {"status": {"S": ["CANCELLED"]}}},
                   "eventName": ["MODIFY"]}),
        ]
    );
}

#[test]
fn patterns_differing_in_one_field_merge_and_narrower_ones_are_dropped() {
    let c = derive(&[
        routed(ChangeType::Insert, "sk", "PROFILE", &[]),
        routed(ChangeType::Insert, "sk", "ORDER#", &[]),
        routed(ChangeType::Modify, "sk", "ORDER#", &[]),
    ]);
    // INSERT PROFILE | INSERT ORDER# merge on the prefix; MODIFY ORDER# differs from the result
    // in two fields and stays on its own.
    assert_eq!(c.patterns.len(), 2, "{:?}", c.patterns);
    assert!(c.patterns.contains(&json!({
        "dynamodb": {"Keys": {"sk": {"S": [{"prefix": "ORDER#"}, {"prefix": "PROFILE"}]}}},
        "eventName": ["INSERT"]
    })));

    let c = derive(&[
        routed(ChangeType::Insert, "sk", "ORDER#", &[]),
        plain(ChangeType::Insert),
    ]);
    assert_eq!(
        c.patterns,
        [json!({"eventName": ["INSERT"]})],
        "the catch-all covers the prefix"
    );
}

#[test]
fn exists_conditions_widen_the_filter_and_say_so() {
    let c = derive(&[routed(
        ChangeType::Insert,
        "pk",
        "USER#",
        &[("deletedAt", None)],
    )]);
    assert_eq!(
        c.patterns,
        [
            json!({"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "USER#"}]}}}, "eventName": ["INSERT"]})
        ]
    );
    assert_eq!(c.widened.len(), 1);
    assert!(
        c.widened[0].contains("spec.relay.events[0].match.attributes[0]"),
        "{:?}",
        c.widened
    );
}

#[test]
fn more_patterns_than_aws_allows_widen_to_key_prefixes_then_to_change_types() {
    // Six entries with distinct attribute values and two key attributes: no exact merge.
    let many: Vec<EventMapping> = (0..6)
        .map(|i| {
            let key = if i % 2 == 0 { "pk" } else { "sk" };
            routed(
                ChangeType::Insert,
                key,
                &format!("T{i}#"),
                &[("v", Some(&format!("{i}")))],
            )
        })
        .collect();
    let c = derive(&many);
    assert!(c.patterns.len() <= MAX_FILTERS);
    // Attribute conditions are gone, key prefixes merged per key attribute.
    assert_eq!(c.patterns.len(), 2, "{:?}", c.patterns);
    assert!(
        !c.patterns
            .iter()
            .any(|p| p.to_string().contains("NewImage"))
    );
    assert!(
        c.widened.iter().any(|w| w.contains("attribute conditions")),
        "{:?}",
        c.widened
    );

    // Patterns that do not fit even without attributes: one pattern of change types.
    let long = "X".repeat(250);
    let mut huge: Vec<EventMapping> = (0..19)
        .map(|i| routed(ChangeType::Insert, "pk", &format!("{long}{i}"), &[]))
        .collect();
    huge.push(plain(ChangeType::Modify));
    let c = derive(&huge);
    assert_eq!(c.patterns, [json!({"eventName": ["INSERT", "MODIFY"]})]);
    assert!(
        c.widened.iter().any(|w| w.contains("all match conditions")),
        "{:?}",
        c.widened
    );
}

#[test]
fn the_filter_is_never_narrower_than_the_entries() {
    // Every record an entry takes passes some pattern: checked on sample records against a
    // small evaluator of the filter syntax the derivation emits.
    let entries = vec![
        routed(ChangeType::Insert, "sk", "PROFILE", &[]),
        routed(
            ChangeType::Insert,
            "sk",
            "ORDER#",
            &[("status", Some("PLACED"))],
        ),
        routed(
            ChangeType::Modify,
            "sk",
            "ORDER#",
            &[("status", Some("CANCELLED")), ("x", None)],
        ),
    ];
    let c = derive(&entries);
    let records = [
        json!({"eventName": "INSERT", "dynamodb": {"Keys": {"sk": {"S": "PROFILE"}}, "NewImage": {}}}),
        json!({"eventName": "INSERT", "dynamodb": {"Keys": {"sk": {"S": "ORDER#1"}}, "NewImage": {"status": {"S": "PLACED"}}}}),
        json!({"eventName": "MODIFY", "dynamodb": {"Keys": {"sk": {"S": "ORDER#1"}}, "NewImage": {"status": {"S": "CANCELLED"}, "x": {"N": "1"}}}}),
    ];
    for r in &records {
        assert!(
            c.patterns.iter().any(|p| passes(p, r)),
            "{r} filtered out by {:?}",
            c.patterns
        );
    }
    let skipped = [
        json!({"eventName": "REMOVE", "dynamodb": {"Keys": {"sk": {"S": "PROFILE"}}}}),
        json!({"eventName": "INSERT", "dynamodb": {"Keys": {"sk": {"S": "CART"}}, "NewImage": {}}}),
        json!({"eventName": "MODIFY", "dynamodb": {"Keys": {"sk": {"S": "ORDER#1"}}, "NewImage": {"status": {"S": "SHIPPED"}}}}),
    ];
    for r in &skipped {
        assert!(
            !c.patterns.iter().any(|p| passes(p, r)),
            "{r} invokes the relay"
        );
    }
}

/// The filter syntax the derivation emits: objects nest, arrays list strings or prefixes.
fn passes(pattern: &Value, record: &Value) -> bool {
    match pattern {
        Value::Object(fields) => fields
            .iter()
            .all(|(k, p)| record.get(k).is_some_and(|r| passes(p, r))),
        Value::Array(options) => options.iter().any(|o| match (o, record) {
            (Value::String(s), Value::String(r)) => s == r,
            (Value::Object(m), Value::String(r)) => m
                .get("prefix")
                .and_then(Value::as_str)
                .is_some_and(|p| r.starts_with(p)),
            _ => false,
        }),
        _ => false,
    }
}
