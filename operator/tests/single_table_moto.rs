//! Wire test of a single-table pipeline against moto: entity routing and field projection reach
//! AWS as the relay's configuration and as the event source mapping's derived filter criteria.
//!
//! Needs OUTBOX_TEST_ENDPOINT, like engine_moto.

mod common;
mod harness;
use common::{endpoint, unique};
use harness::check::check_pipeline;
use harness::*;

use outbox_operator::engine::{Verb, names::Names};
use serde_json::{Value, json};

/// The filter criteria examples/single-table.yaml derives: INSERTs of profiles and orders (one
/// pattern, the two prefixes ORed) and MODIFYs of orders to CANCELLED.
fn single_table_filters() -> Vec<Value> {
    vec![
        json!({"dynamodb": {"Keys": {"sk": {"S": [{"prefix": "ORDER#"}, {"prefix": "PROFILE"}]}}},
               "eventName": ["INSERT"]}),
        json!({"dynamodb": {"Keys": {"sk": {"S": [{"prefix": "ORDER#"}]}},
                            "NewImage": {"status": {"S": ["CANCELLED"]}}},
               "eventName": ["MODIFY"]}),
    ]
}

#[tokio::test]
async fn single_table_example_goes_ready_with_routing_in_the_relay_and_the_mapping_filter() {
    let Some(ep) = endpoint() else { return };
    let id = unique("st");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("single-table.yaml", &id);
    let names = Names::new(&cluster, &p);

    // plan shows the derived filter criteria before anything exists.
    let plan = h.engine.plan(&p).await.expect("plan");
    let mapping = plan
        .actions
        .iter()
        .find(|a| a.verb == Verb::Create && a.resource.contains("event source mapping"))
        .expect("plan creates the mapping");
    for pattern in single_table_filters() {
        assert!(
            mapping.detail.contains(&pattern.to_string()),
            "{} lacks {pattern}",
            mapping.detail
        );
    }

    let out = h.converge(&p).await;
    check_pipeline(&h, &p, &cluster, &out).await;

    let maps = h
        .clients
        .lambda
        .list_event_source_mappings()
        .function_name(&names.relay_function)
        .send()
        .await
        .unwrap();
    let m = &maps.event_source_mappings()[0];
    let mut patterns: Vec<Value> = m
        .filter_criteria()
        .map(|f| f.filters())
        .unwrap_or_default()
        .iter()
        .map(|f| serde_json::from_str(f.pattern().unwrap()).unwrap())
        .collect();
    patterns.sort_by_key(Value::to_string);
    assert_eq!(patterns, single_table_filters());

    // The relay's configuration carries each entry's conditions and field list.
    let config = h
        .clients
        .lambda
        .get_function_configuration()
        .function_name(&names.relay_function)
        .send()
        .await
        .unwrap();
    let env = config
        .environment()
        .and_then(|e| e.variables())
        .expect("relay environment");
    let relay = outbox_contract::RelayConfig::from_lookup(|k| env.get(k).cloned())
        .expect("the relay would start with this configuration");
    // The same entries dev/trigger/tests/single_table.rs relays through moto's stream and bus.
    assert_eq!(
        serde_json::to_value(&relay.events).unwrap(),
        json!([
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
        ])
    );

    h.assert_steady(&p).await;
    assert!(h.engine.plan(&p).await.expect("plan").in_sync());
}

#[tokio::test]
async fn a_changed_route_updates_the_mapping_filter_in_place() {
    let Some(ep) = endpoint() else { return };
    let id = unique("sr");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("single-table.yaml", &id);
    let first = h.converge(&p).await;
    let uuid = first.status.event_source_mapping_uuid.clone().unwrap();

    // Orders are cancelled by a MODIFY of any status now: the attribute condition goes.
    p.spec.relay.events[2]
        .matches
        .as_mut()
        .expect("match")
        .attributes
        .clear();
    // (The generation stays 1: check_pipeline expects the harness's generation.)
    let plan = h.engine.plan(&p).await.expect("plan");
    let update = plan
        .actions
        .iter()
        .find(|a| a.verb == Verb::Update && a.resource.contains(&uuid))
        .expect("plan updates the mapping");
    assert!(
        update
            .detail
            .starts_with("filterCriteria: filter criteria ["),
        "{}",
        update.detail
    );
    let out = h.engine.reconcile(&p).await;
    assert!(out.status.is_ready(), "{:#?}", out.status);
    assert!(has_action(&out, Verb::Update, &uuid), "{:#?}", out.actions);
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;
}

#[tokio::test]
async fn an_entry_that_can_never_match_is_invalid_spec_before_anything_is_created() {
    let Some(ep) = endpoint() else { return };
    let id = unique("sx");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("single-table.yaml", &id);
    // entityType is an attribute, not a key: a key prefix on it never matches a record.
    p.spec.relay.events[1]
        .matches
        .as_mut()
        .expect("match")
        .key_prefix[0]
        .key = "entityType".into();
    h.take_calls();
    let out = h.engine.reconcile(&p).await;
    let err = out.error.expect("apply is refused");
    assert_eq!(
        err.reason(),
        outbox_operator::crd::Reason::InvalidSpec,
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(
            r#"spec.relay.events[1].match.keyPrefix[0].key "entityType" is not a key attribute of the table (pk, sk)"#
        ),
        "{message}"
    );
    let mutating: Vec<_> = h.take_calls().into_iter().filter(|c| c.mutating).collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    let plan = h.engine.plan(&p).await.expect_err("plan reports it too");
    assert_eq!(plan.to_string(), message);
}
