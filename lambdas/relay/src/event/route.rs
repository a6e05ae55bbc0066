//! Entity routing and field projection (pure): which configured entry a record becomes, and
//! which of its image's attributes the event carries.
//!
//! Entries are tried in configuration order; the first whose change type and every condition
//! match wins. Key prefix conditions read the record's `Keys`; attribute conditions read the
//! image [`EventMapping::condition_image`] names. Projection keeps the key attributes always and
//! drops the others the entry's [`Fields`] leave out, before anything is serialised, so a dropped
//! attribute never leaves the relay.

use std::borrow::Cow;
use std::collections::HashMap;

use aws_lambda_events::dynamodb::EventRecord;
use outbox_contract::{
    AttributeCondition, ChangeType, EventMapping, Fields, Image, KeyPrefix, RelayConfig,
};
use serde_dynamo::AttributeValue;

use super::RecordError;

type Item = HashMap<String, AttributeValue>;

/// The first entry that applies to the record, or None when none does (the record is skipped).
/// A record that lacks the image an entry's attribute conditions read fails: skipping it would
/// silently drop a change the stream's view type was meant to carry.
pub fn select<'c>(
    record: &EventRecord,
    change: ChangeType,
    config: &'c RelayConfig,
) -> Result<Option<&'c EventMapping>, RecordError> {
    for entry in config.candidates(change) {
        if matches(record, entry)? {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// True when every condition of `entry` holds for the record.
fn matches(record: &EventRecord, entry: &EventMapping) -> Result<bool, RecordError> {
    let Some(conditions) = &entry.matches else {
        return Ok(true);
    };
    let keys = &record.change.keys;
    if !conditions.key_prefix.iter().all(|k| key_matches(keys, k)) {
        return Ok(false);
    }
    if conditions.attributes.is_empty() {
        return Ok(true);
    }
    let image = condition_image(record, entry)?;
    Ok(conditions
        .attributes
        .iter()
        .all(|c| attribute_matches(image, c)))
}

fn key_matches(keys: &Item, condition: &KeyPrefix) -> bool {
    matches!(keys.get(&condition.key), Some(AttributeValue::S(v)) if v.starts_with(&condition.prefix))
}

fn attribute_matches(image: &Item, condition: &AttributeCondition) -> bool {
    let value = image.get(&condition.name);
    if let Some(want) = &condition.equals {
        return matches!(value, Some(AttributeValue::S(v)) if v == want);
    }
    condition
        .exists
        .is_none_or(|present| value.is_some() == present)
}

/// The image an entry's attribute conditions read, or why the record does not carry it.
fn condition_image<'r>(
    record: &'r EventRecord,
    entry: &EventMapping,
) -> Result<&'r Item, RecordError> {
    let stream = &record.change;
    let image = match entry.condition_image() {
        Image::New => &stream.new_image,
        Image::Old => &stream.old_image,
    };
    // Every image holds the key attributes, so an empty one is an absent one.
    if image.is_empty() {
        return Err(RecordError::MissingConditionImage {
            change: entry.change,
            image: entry.condition_image().record_field(),
            view_type: stream
                .stream_view_type
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |v| format!("{v:?}")),
        });
    }
    Ok(image)
}

/// The image as the event carries it: all of it without [`Fields`], otherwise the key
/// attributes and the attributes the list keeps.
pub fn project<'i>(image: &'i Item, keys: &Item, fields: Option<&Fields>) -> Cow<'i, Item> {
    match fields {
        None => Cow::Borrowed(image),
        Some(fields) => Cow::Owned(
            image
                .iter()
                .filter(|(name, _)| keys.contains_key(*name) || fields.keeps(name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_contract::{Payload, RecordMatch};
    use serde_json::json;

    const ARN: &str = "arn:aws:dynamodb:us-east-1:1:table/app/stream/2026";

    fn record(name: &str, keys: serde_json::Value, new: serde_json::Value) -> EventRecord {
        let mut dynamodb = json!({"Keys": keys, "SequenceNumber": "1", "SizeBytes": 1, "StreamViewType": "NEW_IMAGE"});
        if !new.is_null() {
            dynamodb["NewImage"] = new;
        }
        serde_json::from_value(json!({
            "eventID": "e", "eventName": name, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1", "eventSourceARN": ARN, "dynamodb": dynamodb,
        }))
        .expect("record")
    }

    fn entry(detail_type: &str, m: RecordMatch) -> EventMapping {
        let mut e = EventMapping::new(ChangeType::Insert, "app", detail_type, Payload::NewImage);
        e.matches = Some(m);
        e
    }

    fn prefix(p: &str) -> RecordMatch {
        RecordMatch {
            key_prefix: vec![KeyPrefix {
                key: "pk".into(),
                prefix: p.into(),
            }],
            attributes: vec![],
        }
    }

    fn attr(name: &str, equals: Option<&str>, exists: Option<bool>) -> RecordMatch {
        RecordMatch {
            key_prefix: vec![],
            attributes: vec![AttributeCondition {
                name: name.into(),
                equals: equals.map(str::to_owned),
                exists,
            }],
        }
    }

    fn config(events: Vec<EventMapping>) -> RelayConfig {
        let c = RelayConfig {
            bus_name: "b".into(),
            events,
            request_size_limit_bytes: 262_144,
            pipeline: None,
        };
        c.validate().expect("valid");
        c
    }

    fn chosen(c: &RelayConfig, r: &EventRecord) -> Option<String> {
        select(r, ChangeType::Insert, c)
            .expect("no error")
            .map(|e| e.detail_type.clone())
    }

    #[test]
    fn key_prefix_routes_each_entity_to_its_entry() {
        let c = config(vec![
            entry("UserCreated", prefix("USER#")),
            entry("OrderPlaced", prefix("ORDER#")),
        ]);
        let user = record(
            "INSERT",
            json!({"pk": {"S": "USER#1"}}),
            json!({"pk": {"S": "USER#1"}}),
        );
        let order = record(
            "INSERT",
            json!({"pk": {"S": "ORDER#7"}}),
            json!({"pk": {"S": "ORDER#7"}}),
        );
        let other = record(
            "INSERT",
            json!({"pk": {"S": "CART#2"}}),
            json!({"pk": {"S": "CART#2"}}),
        );
        let number = record(
            "INSERT",
            json!({"pk": {"N": "1"}}),
            json!({"pk": {"N": "1"}}),
        );
        assert_eq!(chosen(&c, &user).as_deref(), Some("UserCreated"));
        assert_eq!(chosen(&c, &order).as_deref(), Some("OrderPlaced"));
        assert_eq!(chosen(&c, &other), None, "no entry matches: skipped");
        assert_eq!(chosen(&c, &number), None, "a prefix matches only strings");
    }

    #[test]
    fn the_first_matching_entry_wins() {
        let c = config(vec![
            entry("VipOrder", prefix("ORDER#VIP")),
            entry("OrderPlaced", prefix("ORDER#")),
            EventMapping::new(ChangeType::Insert, "app", "Other", Payload::NewImage),
        ]);
        let r = |pk: &str| record("INSERT", json!({"pk": {"S": pk}}), json!({"pk": {"S": pk}}));
        assert_eq!(chosen(&c, &r("ORDER#VIP-1")).as_deref(), Some("VipOrder"));
        assert_eq!(chosen(&c, &r("ORDER#1")).as_deref(), Some("OrderPlaced"));
        assert_eq!(chosen(&c, &r("USER#1")).as_deref(), Some("Other"));
    }

    #[test]
    fn attribute_equals_and_exists_read_the_image() {
        let c = config(vec![
            entry("User", attr("entityType", Some("User"), None)),
            entry("Deleted", attr("deletedAt", None, Some(true))),
            entry("Untyped", attr("entityType", None, Some(false))),
        ]);
        let keys = json!({"pk": {"S": "x"}});
        let with = |image: serde_json::Value| record("INSERT", keys.clone(), image);
        let user = with(json!({"pk": {"S": "x"}, "entityType": {"S": "User"}}));
        let order = with(json!({"pk": {"S": "x"}, "entityType": {"S": "Order"}}));
        let deleted = with(
            json!({"pk": {"S": "x"}, "entityType": {"S": "Order"}, "deletedAt": {"NULL": true}}),
        );
        let untyped = with(json!({"pk": {"S": "x"}}));
        let numeric = with(json!({"pk": {"S": "x"}, "entityType": {"N": "1"}}));
        assert_eq!(chosen(&c, &user).as_deref(), Some("User"));
        assert_eq!(chosen(&c, &order), None);
        assert_eq!(chosen(&c, &deleted).as_deref(), Some("Deleted"));
        assert_eq!(chosen(&c, &untyped).as_deref(), Some("Untyped"));
        assert_eq!(chosen(&c, &numeric), None, "equals compares strings only");
    }

    #[test]
    fn a_record_without_the_image_its_conditions_read_fails_rather_than_being_skipped() {
        let c = config(vec![entry("User", attr("entityType", Some("User"), None))]);
        let keys_only = record("INSERT", json!({"pk": {"S": "x"}}), serde_json::Value::Null);
        let err = select(&keys_only, ChangeType::Insert, &c).unwrap_err();
        assert!(err.to_string().contains("NewImage"), "{err}");
        // Key conditions alone need no image.
        let c = config(vec![entry("User", prefix("x"))]);
        assert!(
            select(&keys_only, ChangeType::Insert, &c)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn projection_keeps_keys_and_what_the_list_allows() {
        let image: Item = serde_json::from_value(json!({
            "pk": {"S": "ORDER#1"}, "sk": {"S": "A"}, "total": {"N": "3"}, "email": {"S": "a@b"},
        }))
        .unwrap();
        let keys: Item =
            serde_json::from_value(json!({"pk": {"S": "ORDER#1"}, "sk": {"S": "A"}})).unwrap();
        let names = |f: Option<&Fields>| {
            let mut n: Vec<String> = project(&image, &keys, f).keys().cloned().collect();
            n.sort();
            n
        };
        assert_eq!(names(None), ["email", "pk", "sk", "total"]);
        let exclude = Fields::Exclude(vec!["email".into(), "sk".into()]);
        assert_eq!(names(Some(&exclude)), ["pk", "sk", "total"], "keys stay");
        let include = Fields::Include(vec!["total".into()]);
        assert_eq!(names(Some(&include)), ["pk", "sk", "total"]);
    }
}
