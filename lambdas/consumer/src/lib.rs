//! The consumer Lambda: receives the relay's events from an EventBridge rule.
//!
//! Parses the `Detail` per the event contract ([`outbox_contract::EventDetail`]), dispatches on
//! the detail-type (`UserCreated`, `UserUpdated`, `UserDeleted` typed; any other type logged and
//! acknowledged) and logs one line with the event id and the item's keys. A malformed envelope is
//! an error, so the rule target's retry policy and dead-letter queue apply.

use outbox_contract::redact::JsonErrorSummary;
use outbox_contract::{EventDetail, Payload, User};
use serde::Deserialize;
use serde_json::Value;

/// The parts of an EventBridge event this consumer reads. (Not `aws_lambda_events`'
/// `EventBridgeEvent`: it insists on an RFC 3339 `time`, which the consumer does not need and
/// emulators such as moto send as epoch seconds.)
#[derive(Clone, Debug, Deserialize)]
pub struct EventBridgeEnvelope {
    /// EventBridge's own id (new on every PutEvents; deduplicate on the Detail's `eventId`).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
    pub detail: Value,
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    // serde's own messages quote item values (personal data): only their kind and position.
    #[error("not an EventBridge event: {0}")]
    Event(#[source] JsonErrorSummary),
    #[error("{detail_type} event has a malformed Detail envelope: {source}")]
    Envelope {
        detail_type: String,
        #[source]
        source: JsonErrorSummary,
    },
    #[error("{detail_type} event {event_id} has an item that is not a user: {source}")]
    Item {
        detail_type: String,
        event_id: String,
        #[source]
        source: JsonErrorSummary,
    },
}

/// The typed events this consumer knows.
#[derive(Clone, Debug, PartialEq)]
pub enum UserEvent {
    Created(EventDetail<User>),
    Updated(EventDetail<User>),
    /// `user` is the deleted user when the mapping publishes the old image; `None` with a
    /// keys-only payload (the keys are in the detail).
    Deleted {
        detail: EventDetail<Value>,
        user: Option<User>,
    },
    /// A detail-type this consumer does not handle: acknowledged.
    Other {
        detail_type: String,
        detail: EventDetail<Value>,
    },
}

impl UserEvent {
    pub fn kind(&self) -> &str {
        match self {
            UserEvent::Created(_) => "UserCreated",
            UserEvent::Updated(_) => "UserUpdated",
            UserEvent::Deleted { .. } => "UserDeleted",
            UserEvent::Other { detail_type, .. } => detail_type,
        }
    }

    pub fn event_id(&self) -> &str {
        match self {
            UserEvent::Created(d) | UserEvent::Updated(d) => &d.event_id,
            UserEvent::Deleted { detail, .. } | UserEvent::Other { detail, .. } => &detail.event_id,
        }
    }

    pub fn keys(&self) -> &Value {
        match self {
            UserEvent::Created(d) | UserEvent::Updated(d) => &d.keys,
            UserEvent::Deleted { detail, .. } | UserEvent::Other { detail, .. } => &detail.keys,
        }
    }
}

/// Parses an EventBridge event into a typed [`UserEvent`].
pub fn parse(event: Value) -> Result<UserEvent, ConsumerError> {
    let event: EventBridgeEnvelope =
        serde_json::from_value(event).map_err(|e| ConsumerError::Event(e.into()))?;
    let detail_type = event.detail_type;
    let detail: EventDetail<Value> =
        serde_json::from_value(event.detail).map_err(|e| ConsumerError::Envelope {
            detail_type: detail_type.clone(),
            source: e.into(),
        })?;
    let user = |detail: &EventDetail<Value>| -> Result<User, ConsumerError> {
        serde_json::from_value(detail.item.clone()).map_err(|e| ConsumerError::Item {
            detail_type: detail_type.clone(),
            event_id: detail.event_id.clone(),
            source: e.into(),
        })
    };
    let typed = |detail: EventDetail<Value>, user: User| EventDetail {
        event_id: detail.event_id,
        schema_version: detail.schema_version,
        change: detail.change,
        sequence_number: detail.sequence_number,
        table: detail.table,
        keys: detail.keys,
        payload: detail.payload,
        item: user,
        approximate_creation_time: detail.approximate_creation_time,
        ttl_expired: detail.ttl_expired,
    };
    Ok(match detail_type.as_str() {
        "UserCreated" => {
            let u = user(&detail)?;
            UserEvent::Created(typed(detail, u))
        }
        "UserUpdated" => {
            let u = user(&detail)?;
            UserEvent::Updated(typed(detail, u))
        }
        "UserDeleted" => {
            let user = match detail.payload {
                Payload::Keys => None,
                Payload::NewImage | Payload::OldImage => Some(user(&detail)?),
            };
            UserEvent::Deleted { detail, user }
        }
        _ => UserEvent::Other {
            detail_type: detail_type.clone(),
            detail,
        },
    })
}

/// The handler: parse, dispatch, log one line. Never logs the item (personal data).
pub fn process(event: Value) -> Result<UserEvent, ConsumerError> {
    let parsed = parse(event).inspect_err(|e| tracing::error!(error = %e, "event rejected"))?;
    let (sequence_number, ttl_expired) = match &parsed {
        UserEvent::Created(d) | UserEvent::Updated(d) => {
            (d.sequence_number.as_str(), d.ttl_expired)
        }
        UserEvent::Deleted { detail, .. } | UserEvent::Other { detail, .. } => {
            (detail.sequence_number.as_str(), detail.ttl_expired)
        }
    };
    let handled = !matches!(parsed, UserEvent::Other { .. });
    tracing::info!(
        detail_type = parsed.kind(),
        event_id = parsed.event_id(),
        sequence_number,
        ttl_expired,
        handled,
        "event received"
    );
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_contract::ChangeType;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let text = match name {
            "created" => include_str!("../tests/fixtures/user-created.json"),
            "deleted" => include_str!("../tests/fixtures/user-deleted-ttl-keys.json"),
            _ => unreachable!(),
        };
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn user_created_is_parsed_into_a_typed_user() {
        let UserEvent::Created(d) = process(fixture("created")).unwrap() else {
            panic!("not UserCreated")
        };
        assert_eq!(d.item.username, "ada");
        assert_eq!(d.item.email, "ada@example.com");
        assert_eq!(d.change, ChangeType::Insert);
        assert_eq!(d.event_id, "0b8a3b5e-56b4-5a54-9d4a-2b1f4c1f9a10");
        assert_eq!(d.keys["id"], "4f1c1a3e-9d7b-4c55-9a43-1f6a2b7c9d01");
    }

    #[test]
    fn user_updated_dispatches_on_detail_type() {
        let mut event = fixture("created");
        event["detail-type"] = json!("UserUpdated");
        event["detail"]["change"] = json!("MODIFY");
        assert!(
            matches!(process(event).unwrap(), UserEvent::Updated(d) if d.item.username == "ada")
        );
    }

    #[test]
    fn keys_only_delete_has_no_user_and_keeps_the_ttl_flag() {
        let UserEvent::Deleted { detail, user } = process(fixture("deleted")).unwrap() else {
            panic!("not UserDeleted")
        };
        assert_eq!(user, None);
        assert!(detail.ttl_expired);
        assert_eq!(detail.sequence_number, "111100000000000000000009");
    }

    #[test]
    fn unknown_detail_types_are_acknowledged() {
        let mut event = fixture("created");
        event["detail-type"] = json!("OrderPlaced");
        event["detail"]["item"] = json!({"order": 1});
        let parsed = process(event).unwrap();
        assert!(
            matches!(&parsed, UserEvent::Other { detail_type, .. } if detail_type == "OrderPlaced")
        );
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        let mut no_event_id = fixture("created");
        no_event_id["detail"]
            .as_object_mut()
            .unwrap()
            .remove("eventId");
        assert!(matches!(
            process(no_event_id),
            Err(ConsumerError::Envelope { .. })
        ));

        let mut bad_change = fixture("created");
        bad_change["detail"]["change"] = json!("UPSERT");
        assert!(process(bad_change).is_err());

        let mut not_a_user = fixture("created");
        not_a_user["detail"]["item"] = json!({"id": "x"});
        assert!(matches!(
            process(not_a_user),
            Err(ConsumerError::Item { .. })
        ));

        assert!(matches!(
            process(json!({"hello": "world"})),
            Err(ConsumerError::Event(_))
        ));
    }

    /// Everything `f` logs, as the Lambda's JSON lines.
    fn captured_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
        let capture = outbox_contract::testing::LogCapture::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(capture.clone())
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        (out, capture.text())
    }

    #[test]
    fn an_event_is_logged_by_event_id_and_sequence_number_never_by_its_keys() {
        let event = fixture("created");
        let key = event["detail"]["keys"]["id"].as_str().unwrap().to_owned();
        let seq = event["detail"]["sequenceNumber"]
            .as_str()
            .unwrap()
            .to_owned();
        let (parsed, logs) = captured_logs(|| process(event));
        assert!(parsed.is_ok());
        assert!(
            logs.contains("0b8a3b5e-56b4-5a54-9d4a-2b1f4c1f9a10"),
            "{logs}"
        );
        assert!(logs.contains(&seq), "{logs}");
        assert!(!logs.contains(&key), "item keys leaked: {logs}");
        assert!(
            !logs.contains("ada@example.com"),
            "item data leaked: {logs}"
        );
    }

    #[test]
    fn a_rejected_item_is_logged_without_the_value_serde_quotes() {
        let mut event = fixture("created");
        event["detail"]["item"]["username"] = json!(["ada@example.com"]);
        event["detail"]["item"]["email"] = json!(4711);
        let (parsed, logs) = captured_logs(|| process(event));
        let err = parsed.unwrap_err();
        assert!(matches!(err, ConsumerError::Item { .. }));
        for text in [logs.as_str(), &err.to_string()] {
            assert!(
                !text.contains("ada@example.com"),
                "item data leaked: {text}"
            );
            assert!(!text.contains("4711"), "item data leaked: {text}");
        }
        assert!(logs.contains("wrong shape"), "{logs}");
    }

    #[test]
    fn event_time_in_any_shape_does_not_matter() {
        // moto delivers `time` as epoch seconds; the consumer does not read it.
        let mut event = fixture("created");
        event["time"] = json!(1_767_225_600.0);
        assert!(matches!(process(event).unwrap(), UserEvent::Created(_)));
    }
}
