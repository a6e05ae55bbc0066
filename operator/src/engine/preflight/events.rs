//! Pre-flight of `spec.relay.events` against the table the spec describes (whose key schema the
//! table step holds to the spec): an entry that can never match a record is an invalid spec,
//! named by its field, rather than an event that silently never appears.

use outbox_contract::{ConfigError, EventMapping, Image, RelayConfig};

use crate::crd::{KeyType, OutboxPipelineSpec, StreamViewType};

/// Why an entry of `spec.relay.events` can never match (or would publish keys it claims to
/// hide), naming the field.
pub fn check(spec: &OutboxPipelineSpec) -> Result<(), String> {
    let events: Vec<EventMapping> = spec.relay.events.iter().map(|e| e.to_contract()).collect();
    for (i, e) in events.iter().enumerate() {
        let field = format!("spec.relay.events[{i}]");
        if let Some(j) = events[..i].iter().position(|earlier| earlier.shadows(e)) {
            return Err(format!(
                "{field} can never match: spec.relay.events[{j}] before it takes every record it would (put the narrower entry first)"
            ));
        }
        key_prefixes(spec, e, &field)?;
        attributes(spec, e, &field)?;
        if let Some(outbox_contract::Fields::Exclude(names)) = &e.fields
            && let Some(key) = names.iter().find(|n| key_type(spec, n).is_some())
        {
            return Err(format!(
                "{field}.fields.exclude lists {key:?}, a key attribute of the table: keys are always published"
            ));
        }
    }
    // What admission would have caught (a spec that skipped it): the relay's own rules.
    RelayConfig {
        bus_name: "-".into(),
        events,
        request_size_limit_bytes: outbox_contract::DEFAULT_REQUEST_SIZE_LIMIT_BYTES,
        pipeline: None,
    }
    .validate()
    .map_err(|e| match e {
        ConfigError::Invalid { reason, .. } => format!("spec.relay.events: {reason}"),
        other => format!("spec.relay.events: {other}"),
    })
}

/// The type of a key attribute of the table, None when `name` is not one.
fn key_type(spec: &OutboxPipelineSpec, name: &str) -> Option<KeyType> {
    let t = &spec.table;
    std::iter::once(&t.partition_key)
        .chain(t.sort_key.as_ref())
        .find(|k| k.name == name)
        .map(|k| k.attribute_type)
}

fn key_prefixes(spec: &OutboxPipelineSpec, e: &EventMapping, field: &str) -> Result<(), String> {
    for (j, k) in e.matches.iter().flat_map(|m| &m.key_prefix).enumerate() {
        let at = format!("{field}.match.keyPrefix[{j}].key");
        match key_type(spec, &k.key) {
            None => {
                let t = &spec.table;
                let keys = std::iter::once(t.partition_key.name.as_str())
                    .chain(t.sort_key.as_ref().map(|s| s.name.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(format!(
                    "{at} {:?} is not a key attribute of the table ({keys}): the condition can never match",
                    k.key
                ));
            }
            Some(KeyType::S) => {}
            Some(other) => {
                return Err(format!(
                    "{at} {:?} is a key of type {other:?}: a prefix matches string (S) keys only",
                    k.key
                ));
            }
        }
    }
    Ok(())
}

fn attributes(spec: &OutboxPipelineSpec, e: &EventMapping, field: &str) -> Result<(), String> {
    if e.matches.as_ref().is_none_or(|m| m.attributes.is_empty()) {
        return Ok(());
    }
    let at = format!("{field}.match.attributes");
    let view = spec.table.stream_view_type;
    let image = e.condition_image();
    let carried = match view {
        StreamViewType::KeysOnly => false,
        StreamViewType::NewImage => image == Image::New,
        StreamViewType::NewAndOldImages => true,
    };
    if carried {
        return Ok(());
    }
    Err(format!(
        "{at} read the record's {} ({} with payload {}), which a {} stream does not carry: the conditions can never match (use streamViewType NEW_AND_OLD_IMAGES)",
        image.record_field(),
        e.change,
        e.payload,
        view.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::OutboxPipeline;
    use serde_json::{Value, json};

    fn spec(view: &str, events: Value) -> OutboxPipelineSpec {
        let p: OutboxPipeline = serde_json::from_value(json!({
            "apiVersion": "outbox.dev/v1alpha1",
            "kind": "OutboxPipeline",
            "metadata": {"name": "p"},
            "spec": {
                "table": {"partitionKey": {"name": "pk", "type": "S"},
                          "sortKey": {"name": "n", "type": "N"},
                          "streamViewType": view},
                "relay": {"events": events}
            }
        }))
        .expect("pipeline");
        p.spec
    }

    fn entry(change: &str, payload: &str, m: Value) -> Value {
        json!({"change": change, "source": "app", "detailType": "E", "payload": payload, "match": m})
    }

    #[test]
    fn the_single_table_example_passes() {
        let text = include_str!("../../../../examples/single-table.yaml");
        let p: OutboxPipeline = serde_saphyr::from_str(text).expect("example");
        assert_eq!(check(&p.spec), Ok(()));
    }

    #[test]
    fn a_prefix_on_an_attribute_that_is_not_a_key_names_the_field() {
        let s = spec(
            "NEW_IMAGE",
            json!([entry(
                "INSERT",
                "newImage",
                json!({"keyPrefix": [{"key": "entityType", "prefix": "U"}]})
            )]),
        );
        let err = check(&s).unwrap_err();
        assert!(
            err.starts_with("spec.relay.events[0].match.keyPrefix[0].key \"entityType\" is not a key attribute of the table (pk, n)"),
            "{err}"
        );
        let s = spec(
            "NEW_IMAGE",
            json!([entry(
                "INSERT",
                "newImage",
                json!({"keyPrefix": [{"key": "n", "prefix": "1"}]})
            )]),
        );
        assert!(check(&s).unwrap_err().contains("string (S) keys only"));
    }

    #[test]
    fn attribute_conditions_on_an_image_the_stream_lacks_are_refused() {
        let m = json!({"attributes": [{"name": "kind", "equals": "user"}]});
        let s = spec("NEW_IMAGE", json!([entry("REMOVE", "keys", m.clone())]));
        let err = check(&s).unwrap_err();
        assert!(
            err.starts_with("spec.relay.events[0].match.attributes read the record's OldImage"),
            "{err}"
        );
        let s = spec("KEYS_ONLY", json!([entry("INSERT", "keys", m.clone())]));
        assert!(check(&s).unwrap_err().contains("KEYS_ONLY stream"));
        let s = spec(
            "NEW_AND_OLD_IMAGES",
            json!([entry("REMOVE", "oldImage", m)]),
        );
        assert_eq!(check(&s), Ok(()));
    }

    #[test]
    fn what_admission_would_refuse_is_refused_naming_the_events_field() {
        let both = json!({"attributes": [{"name": "kind", "equals": "a", "exists": true}]});
        let err = check(&spec(
            "NEW_IMAGE",
            json!([entry("INSERT", "newImage", both)]),
        ))
        .unwrap_err();
        assert_eq!(
            err,
            "spec.relay.events: entry 0 (INSERT): attribute condition on \"kind\" needs exactly one of equals or exists"
        );
    }

    #[test]
    fn a_shadowed_entry_and_an_excluded_key_are_refused() {
        let wide = entry(
            "INSERT",
            "newImage",
            json!({"keyPrefix": [{"key": "pk", "prefix": "O"}]}),
        );
        let narrow = entry(
            "INSERT",
            "newImage",
            json!({"keyPrefix": [{"key": "pk", "prefix": "ORDER#"}]}),
        );
        let s = spec("NEW_IMAGE", json!([wide.clone(), narrow.clone()]));
        let err = check(&s).unwrap_err();
        assert!(
            err.starts_with("spec.relay.events[1] can never match: spec.relay.events[0]"),
            "{err}"
        );
        assert_eq!(
            check(&spec("NEW_IMAGE", json!([narrow, wide.clone()]))),
            Ok(())
        );

        let mut hiding = wide;
        hiding["fields"] = json!({"exclude": ["email", "pk"]});
        let err = check(&spec("NEW_IMAGE", json!([hiding]))).unwrap_err();
        assert!(
            err.starts_with("spec.relay.events[0].fields.exclude lists \"pk\""),
            "{err}"
        );
    }
}
