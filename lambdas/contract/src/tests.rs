use super::*;

fn sample() -> RelayConfig {
    RelayConfig {
        bus_name: "orders".into(),
        events: vec![
            EventMapping::new(
                ChangeType::Insert,
                "myapp.users",
                "UserCreated",
                Payload::NewImage,
            ),
            EventMapping::new(
                ChangeType::Remove,
                "myapp.users",
                "UserDeleted",
                Payload::OldImage,
            ),
        ],
        request_size_limit_bytes: 262_144,
        pipeline: Some("default/users".to_owned()),
    }
}

#[test]
fn relay_config_round_trips_through_the_environment_the_operator_sets() {
    let config = sample();
    let env = config.to_env();
    let back = RelayConfig::from_lookup(|k| env.get(k).cloned()).unwrap();
    assert_eq!(back, config);
}

#[test]
fn missing_bus_name_names_the_variable() {
    let mut env = sample().to_env();
    env.remove(env::BUS_NAME);
    let err = RelayConfig::from_lookup(|k| env.get(k).cloned()).unwrap_err();
    assert_eq!(err, ConfigError::Missing(env::BUS_NAME));
    assert!(err.to_string().contains("OUTBOX_BUS_NAME"));
}

#[test]
fn malformed_events_json_names_the_variable() {
    let mut env = sample().to_env();
    env.insert(env::EVENTS.into(), "[{\"change\":\"UPSERT\"}]".into());
    let err = RelayConfig::from_lookup(|k| env.get(k).cloned()).unwrap_err();
    assert!(err.to_string().contains("OUTBOX_EVENTS"), "{err}");
}

#[test]
fn change_type_mapped_twice_is_rejected() {
    let mut config = sample();
    config.events[1].change = ChangeType::Insert;
    config.events[1].payload = Payload::NewImage;
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");
}

fn orders() -> RecordMatch {
    RecordMatch {
        key_prefix: vec![KeyPrefix {
            key: "pk".into(),
            prefix: "ORDER#".into(),
        }],
        attributes: vec![],
    }
}

#[test]
fn a_plain_mapping_is_written_as_before_routing_existed() {
    let env = sample().to_env();
    assert_eq!(
        env[env::EVENTS],
        r#"[{"change":"INSERT","source":"myapp.users","detailType":"UserCreated","payload":"newImage"},{"change":"REMOVE","source":"myapp.users","detailType":"UserDeleted","payload":"oldImage"}]"#
    );
}

#[test]
fn conditions_and_fields_round_trip_through_the_environment() {
    let mut config = sample();
    let mut order = EventMapping::new(
        ChangeType::Insert,
        "myapp.orders",
        "OrderPlaced",
        Payload::NewImage,
    );
    order.matches = Some(orders());
    order.fields = Some(Fields::Exclude(vec!["email".into()]));
    config.events.insert(0, order);
    let env = config.to_env();
    assert!(
        env[env::EVENTS].contains(r#""match":{"keyPrefix""#),
        "{env:?}"
    );
    let back = RelayConfig::from_lookup(|k| env.get(k).cloned()).unwrap();
    assert_eq!(back, config);
}

#[test]
fn one_change_type_may_route_to_several_events_when_conditions_tell_them_apart() {
    let mut config = sample();
    let mut order = EventMapping::new(
        ChangeType::Insert,
        "myapp.orders",
        "OrderPlaced",
        Payload::NewImage,
    );
    order.matches = Some(orders());
    config.events.insert(0, order.clone());
    config
        .validate()
        .expect("conditional entry before a catch-all is fine");
    // The same entry after the catch-all can never match.
    config.events.remove(0);
    config.events.insert(1, order);
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("OUTBOX_EVENTS"), "{err}");
    assert!(err.to_string().contains("entry 1 can never match"), "{err}");
}

#[test]
fn a_narrower_prefix_after_a_wider_one_is_rejected_and_the_reverse_accepted() {
    let mut wide = EventMapping::new(ChangeType::Insert, "s", "Order", Payload::NewImage);
    wide.matches = Some(orders());
    let mut narrow = wide.clone();
    narrow.detail_type = "EuOrder".into();
    narrow.matches = Some(RecordMatch {
        key_prefix: vec![KeyPrefix {
            key: "pk".into(),
            prefix: "ORDER#EU".into(),
        }],
        attributes: vec![],
    });
    let mut config = sample();
    config.events = vec![wide.clone(), narrow.clone()];
    assert!(config.validate().is_err());
    config.events = vec![narrow, wide];
    config.validate().expect("narrow before wide");
}

#[test]
fn attribute_conditions_on_different_images_do_not_shadow_each_other() {
    let cancelled = |payload| {
        let mut e = EventMapping::new(ChangeType::Modify, "s", "Cancelled", payload);
        e.matches = Some(RecordMatch {
            key_prefix: vec![],
            attributes: vec![AttributeCondition {
                name: "status".into(),
                equals: Some("CANCELLED".into()),
                exists: None,
            }],
        });
        e
    };
    // Was cancelled before the change (old image) vs is cancelled now (new image).
    let (was, is) = (cancelled(Payload::OldImage), cancelled(Payload::NewImage));
    assert!(!was.shadows(&is) && !is.shadows(&was));
    assert!(
        is.shadows(&cancelled(Payload::Keys)),
        "keys on MODIFY read NewImage"
    );
    // Key prefixes read Keys, whatever the payload.
    let mut orders_old = EventMapping::new(ChangeType::Modify, "s", "A", Payload::OldImage);
    orders_old.matches = Some(orders());
    let mut orders_new = orders_old.clone();
    orders_new.payload = Payload::NewImage;
    assert!(orders_old.shadows(&orders_new));
}

#[test]
fn malformed_conditions_and_fields_name_the_variable() {
    let mut config = sample();
    config.events[0].matches = Some(RecordMatch {
        key_prefix: vec![],
        attributes: vec![AttributeCondition {
            name: "entityType".into(),
            equals: Some("User".into()),
            exists: Some(true),
        }],
    });
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("OUTBOX_EVENTS"), "{err}");
    assert!(
        err.to_string().contains("exactly one of equals or exists"),
        "{err}"
    );

    let mut config = sample();
    config.events[1].payload = Payload::Keys;
    config.events[1].fields = Some(Fields::Include(vec!["email".into()]));
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("fields needs payload"), "{err}");

    let mut env = sample().to_env();
    env.insert(
        env::EVENTS.into(),
        r#"[{"change":"INSERT","source":"s","detailType":"d","payload":"newImage","match":{"keyPrefx":[]}}]"#.into(),
    );
    let err = RelayConfig::from_lookup(|k| env.get(k).cloned()).unwrap_err();
    assert!(err.to_string().contains("OUTBOX_EVENTS"), "{err}");
}

#[test]
fn attribute_conditions_read_the_published_image_or_the_one_the_change_carries() {
    let m = |change, payload| EventMapping::new(change, "s", "d", payload).condition_image();
    assert_eq!(m(ChangeType::Insert, Payload::NewImage), Image::New);
    assert_eq!(m(ChangeType::Modify, Payload::OldImage), Image::Old);
    assert_eq!(m(ChangeType::Modify, Payload::Keys), Image::New);
    assert_eq!(m(ChangeType::Remove, Payload::Keys), Image::Old);
    assert_eq!(m(ChangeType::Remove, Payload::OldImage), Image::Old);
}

#[test]
fn remove_with_new_image_is_rejected() {
    let mut config = sample();
    config.events[1].payload = Payload::NewImage;
    assert!(config.validate().is_err());
}

#[test]
fn size_limit_out_of_range_is_rejected() {
    let mut env = sample().to_env();
    env.insert(env::REQUEST_SIZE_LIMIT_BYTES.into(), "2000000".into());
    let err = RelayConfig::from_lookup(|k| env.get(k).cloned()).unwrap_err();
    assert!(
        err.to_string().contains("OUTBOX_REQUEST_SIZE_LIMIT_BYTES"),
        "{err}"
    );
    env.insert(env::REQUEST_SIZE_LIMIT_BYTES.into(), "lots".into());
    assert!(RelayConfig::from_lookup(|k| env.get(k).cloned()).is_err());
}

#[test]
fn default_size_limit_applies_when_unset() {
    let mut env = sample().to_env();
    env.remove(env::REQUEST_SIZE_LIMIT_BYTES);
    let config = RelayConfig::from_lookup(|k| env.get(k).cloned()).unwrap();
    assert_eq!(
        config.request_size_limit_bytes,
        DEFAULT_REQUEST_SIZE_LIMIT_BYTES
    );
}

#[test]
fn event_detail_uses_camel_case_field_names() {
    let detail = EventDetail {
        event_id: "id".into(),
        schema_version: SCHEMA_VERSION.into(),
        change: ChangeType::Remove,
        sequence_number: "100".into(),
        table: "users".into(),
        keys: serde_json::json!({"id": "u1"}),
        payload: Payload::OldImage,
        item: serde_json::json!({"id": "u1"}),
        approximate_creation_time: "2026-01-01T00:00:00Z".into(),
        ttl_expired: true,
    };
    let v = serde_json::to_value(&detail).unwrap();
    for key in [
        "eventId",
        "schemaVersion",
        "change",
        "sequenceNumber",
        "table",
        "keys",
        "payload",
        "item",
        "approximateCreationTime",
        "ttlExpired",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["change"], "REMOVE");
    assert_eq!(v["payload"], "oldImage");
}
