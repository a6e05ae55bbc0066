//! Wire tests of the engine's safety rules against moto server: deletion policies, resources
//! that are not ours (foreign, another cluster's, adopted), the permissions boundary, a refused
//! stream view type change, and a bus other teams subscribed to.
//!
//! Needs OUTBOX_TEST_ENDPOINT like tests/engine_moto.rs (a failure under CI=true).

mod common;
mod harness;
use common::{emulator_sdk, endpoint, engine_config, unique};
use harness::check::check_pipeline;
use harness::*;

use outbox_operator::crd::{ConditionType, Reason};
use outbox_operator::engine::{Engine, EngineConfig, Verb, aws_sdk_config, names::Names, tags};

#[tokio::test]
async fn delete_with_retain_keeps_the_table_and_a_bucket_holding_failed_batches() {
    let Some(ep) = endpoint() else { return };
    let id = unique("dret");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("user-lifecycle.yaml", &id);
    let out = h.converge(&p).await;
    let names = Names::new(&cluster, &p);
    let bucket = out
        .status
        .failure_destination_arn
        .clone()
        .unwrap()
        .trim_start_matches("arn:aws:s3:::")
        .to_owned();
    h.clients
        .s3
        .put_object()
        .bucket(&bucket)
        .key("failed-batch.json")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
        .send()
        .await
        .unwrap();

    let del = h.engine.delete(&p).await.expect("delete");
    assert!(del.done, "{del:?}");
    assert!(
        del.actions
            .iter()
            .any(|a| a.verb == Verb::Retain && a.resource.contains(&names.table))
    );
    assert!(
        del.actions
            .iter()
            .any(|a| a.verb == Verb::Retain && a.resource.contains(&bucket))
    );
    assert!(
        table_exists(&h, &names.table).await,
        "Retain keeps the table"
    );
    assert!(
        h.clients
            .s3
            .head_bucket()
            .bucket(&bucket)
            .send()
            .await
            .is_ok()
    );
    assert!(!function_exists(&h, &names.relay_function).await);
    assert!(!function_exists(&h, &names.writer_function).await);
    for c in &p.spec.consumers {
        assert!(!function_exists(&h, &names.consumer_function(&c.name)).await);
        assert!(!role_exists(&h, &names.role(&names.consumer_function(&c.name))).await);
    }
    assert!(!role_exists(&h, &names.role(&names.relay_function)).await);
    assert!(!bus_exists(&h, &names.bus).await, "bus policy Delete");
    let maps = h
        .clients
        .lambda
        .list_event_source_mappings()
        .event_source_arn(out.status.stream_arn.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        maps.event_source_mappings()
            .iter()
            .all(|m| m.state() == Some("Deleting"))
    );

    // A second delete finds nothing more to do.
    h.assert_policy_covers_calls();
    let again = h.engine.delete(&p).await.expect("delete again");
    assert!(again.done);
    assert!(
        again.actions.iter().all(|a| a.verb == Verb::Retain),
        "{:?}",
        again.actions
    );
}

#[tokio::test]
async fn delete_with_delete_policy_turns_off_deletion_protection_then_deletes_the_table() {
    let Some(ep) = endpoint() else { return };
    let id = unique("ddel");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("user-created.yaml", &id);
    p.spec.table.deletion_policy = outbox_operator::crd::DeletionPolicy::Delete;
    p.spec.table.deletion_protection = true;
    let out = h.converge(&p).await;
    let names = Names::new(&cluster, &p);
    let bucket = out
        .status
        .failure_destination_arn
        .clone()
        .unwrap()
        .trim_start_matches("arn:aws:s3:::")
        .to_owned();
    let del = h.engine.delete(&p).await.expect("delete");
    assert!(del.done);
    let table = format!("dynamodb table {}", names.table);
    let pos = |verb: Verb, detail: &str| {
        del.actions
            .iter()
            .position(|a| a.verb == verb && a.resource == table && a.detail.contains(detail))
    };
    let unprotect = pos(Verb::Update, "deletion protection").expect("protection turned off");
    let deleted = pos(Verb::Delete, "").expect("table deleted");
    assert!(unprotect < deleted);
    assert!(!table_exists(&h, &names.table).await);
    h.assert_policy_covers_calls();
    assert!(
        h.clients
            .s3
            .head_bucket()
            .bucket(&bucket)
            .send()
            .await
            .is_err(),
        "empty bucket deleted"
    );
    assert!(!bus_exists(&h, &names.bus).await);
}

#[tokio::test]
async fn foreign_untagged_table_of_the_same_name_is_a_conflict_and_left_untouched() {
    let Some(ep) = endpoint() else { return };
    let id = unique("conf");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("user-created.yaml", &id);
    let table = format!("foreign-{id}");
    p.spec.table.name = Some(table.clone());
    create_foreign_table(&h, &table, false).await;

    let out = h.engine.reconcile(&p).await;
    let err = out.error.expect("conflict");
    assert_eq!(err.reason(), Reason::Conflict);
    let cond = out.status.condition(ConditionType::TableReady).unwrap();
    assert_eq!(cond.status, "False");
    assert_eq!(cond.reason, "Conflict");
    assert!(cond.message.contains(&table), "{cond:?}");
    let ready = out.status.condition(ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Conflict")
    );
    assert!(out.requeue_after.is_none(), "terminal: no hot loop");
    assert!(out.actions.is_empty());
    // Nothing was modified or created.
    assert!(table_tags(&h, &table).await.is_empty());
    let names = Names::new(&cluster, &p);
    assert!(!bus_exists(&h, &names.bus).await);
    assert!(!function_exists(&h, &names.relay_function).await);
    // plan reports the conflict too; delete leaves the foreign table alone.
    assert_eq!(
        h.engine.plan(&p).await.unwrap_err().reason(),
        Reason::Conflict
    );
    p.spec.table.deletion_policy = outbox_operator::crd::DeletionPolicy::Delete;
    h.engine.delete(&p).await.expect("delete");
    assert!(table_exists(&h, &table).await);
}

#[tokio::test]
async fn adoption_needs_both_opt_ins_and_tags_the_table() {
    let Some(ep) = endpoint() else { return };
    let id = unique("adopt");
    let cluster = format!("cl-{id}");
    let mut p = example("user-created.yaml", &id);
    let table = format!("legacy-{id}");
    p.spec.table.name = Some(table.clone());

    // Spec opt-in without the operator flag.
    let h = Harness::new(&ep, &cluster, false).await;
    create_foreign_table(&h, &table, true).await;
    p.spec.table.adopt_existing = true;
    let out = h.engine.reconcile(&p).await;
    assert_eq!(out.error.map(|e| e.reason()), Some(Reason::Conflict));
    assert!(table_tags(&h, &table).await.is_empty());

    // Operator flag without the spec opt-in.
    let h = Harness::new(&ep, &cluster, true).await;
    p.spec.table.adopt_existing = false;
    let out = h.engine.reconcile(&p).await;
    assert_eq!(out.error.map(|e| e.reason()), Some(Reason::Conflict));
    assert!(table_tags(&h, &table).await.is_empty());

    // Both.
    p.spec.table.adopt_existing = true;
    let out = h.converge(&p).await;
    assert!(
        out.actions
            .iter()
            .any(|a| a.verb == Verb::Adopt && a.resource.contains(&table)),
        "{:#?}",
        out.actions
    );
    let tags = table_tags(&h, &table).await;
    assert_eq!(tags.get(tags::CLUSTER_ID), Some(&cluster));
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;
}

#[tokio::test]
async fn a_pipeline_of_another_cluster_never_claims_our_resources() {
    let Some(ep) = endpoint() else { return };
    let id = unique("xcl");
    let ours = format!("cl-a-{id}");
    let theirs = format!("cl-b-{id}");
    let mut p = example("user-created.yaml", &id);
    // Same explicit names in both clusters: the shared-account case.
    p.spec.table.name = Some(format!("shared-{id}"));
    p.spec.table.deletion_policy = outbox_operator::crd::DeletionPolicy::Delete;
    let a = Harness::new(&ep, &ours, true).await;
    a.converge(&p).await;

    let mut p_b = p.clone();
    p_b.spec.table.adopt_existing = true; // not even adoption takes another cluster's table
    let b = Harness::new(&ep, &theirs, true).await;
    let out = b.engine.reconcile(&p_b).await;
    let err = out.error.expect("conflict");
    assert_eq!(err.reason(), Reason::Conflict);
    assert!(err.to_string().contains(&ours), "{err}");
    let names_b = Names::new(&theirs, &p_b);
    assert!(!function_exists(&b, &names_b.relay_function).await);

    // Their delete leaves our table and bus alone.
    b.engine.delete(&p_b).await.expect("delete");
    let table = p.spec.table.name.clone().unwrap();
    assert!(table_exists(&a, &table).await);
    assert_eq!(
        table_tags(&a, &table).await.get(tags::CLUSTER_ID),
        Some(&ours)
    );
    assert!(bus_exists(&a, p.spec.bus.name.as_deref().unwrap()).await);
    a.assert_steady(&p).await;
}

#[tokio::test]
async fn every_role_gets_the_configured_boundary_and_a_boundary_is_never_removed() {
    let Some(ep) = endpoint() else { return };
    let id = unique("bnd");
    let cluster = format!("cl-{id}");
    let mut h = Harness::new(&ep, &cluster, false).await;
    let sdk = aws_sdk_config(Some("us-east-1".into()), Some(ep.clone())).await;
    let first = create_boundary_policy(&h, &format!("outbox-role-boundary-{id}")).await;
    let second = create_boundary_policy(&h, &format!("outbox-role-boundary2-{id}")).await;
    let p = example("user-created.yaml", &id);
    let names = Names::new(&cluster, &p);
    assert!(p.spec.writer.enabled, "the example has a writer");
    let roles: Vec<String> = [names.relay_function.clone(), names.writer_function.clone()]
        .into_iter()
        .chain(
            p.spec
                .consumers
                .iter()
                .filter(|c| {
                    c.target.lambda_function_arn.is_none() && c.target.sqs_queue_arn.is_none()
                })
                .map(|c| names.consumer_function(&c.name)),
        )
        .map(|f| names.role(&f))
        .collect();
    assert!(
        roles.len() >= 3,
        "relay, writer and a bundled consumer: {roles:?}"
    );
    with_boundary(&mut h, &sdk, &cluster, Some(&first));
    h.converge(&p).await;
    for r in &roles {
        assert_eq!(
            role_boundary(&h, r).await.as_deref(),
            Some(first.as_str()),
            "{r}"
        );
    }
    // A changed boundary replaces the old one on every role.
    with_boundary(&mut h, &sdk, &cluster, Some(&second));
    h.converge(&p).await;
    h.assert_steady(&p).await;
    for r in &roles {
        assert_eq!(
            role_boundary(&h, r).await.as_deref(),
            Some(second.as_str()),
            "{r}"
        );
    }
    // No boundary configured: roles keep theirs; a steady pass changes nothing.
    with_boundary(&mut h, &sdk, &cluster, None);
    h.converge(&p).await;
    h.assert_steady(&p).await;
    for r in &roles {
        assert_eq!(
            role_boundary(&h, r).await.as_deref(),
            Some(second.as_str()),
            "{r}"
        );
    }
    let calls = h.all_calls.lock().unwrap().clone();
    assert!(
        calls
            .iter()
            .any(|c| c.operation == "PutRolePermissionsBoundary"),
        "the observer saw the boundary change: {calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.operation == "DeleteRolePermissionsBoundary"),
        "the engine removed a boundary"
    );
    h.assert_policy_covers_calls();
}

/// Issue 16 #1: another stream view type on an applied pipeline is refused, the live stream kept.
#[tokio::test]
async fn changed_stream_view_type_is_refused_and_the_live_stream_is_kept() {
    let Some(ep) = endpoint() else { return };
    let id = unique("view");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("user-created.yaml", &id);
    h.converge(&p).await;
    let table = Names::new(&cluster, &p).table;
    let before = h
        .clients
        .dynamodb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let before = before.table().unwrap();
    let view_before = before
        .stream_specification()
        .unwrap()
        .stream_view_type()
        .cloned();
    let arn_before = before.latest_stream_arn().map(str::to_owned);

    p.spec.table.stream_view_type = match p.spec.table.stream_view_type {
        outbox_operator::crd::StreamViewType::KeysOnly => {
            outbox_operator::crd::StreamViewType::NewImage
        }
        _ => outbox_operator::crd::StreamViewType::KeysOnly,
    };
    let err = h.engine.plan(&p).await.unwrap_err();
    assert_eq!(err.reason(), Reason::InvalidSpec);
    assert!(
        err.to_string().contains("spec.table.streamViewType"),
        "{err}"
    );

    h.take_calls();
    let out = h.engine.reconcile(&p).await;
    let err = out.error.expect("refused");
    assert_eq!(err.reason(), Reason::InvalidSpec);
    let cond = out.status.condition(ConditionType::TableReady).unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        cond.message.contains("spec.table.streamViewType"),
        "{cond:?}"
    );
    assert!(out.actions.is_empty(), "{:#?}", out.actions);
    let mutating: Vec<String> = h
        .take_calls()
        .into_iter()
        .filter(|c| c.mutating)
        .map(|c| c.operation)
        .collect();
    assert!(mutating.is_empty(), "refused pass mutated: {mutating:?}");
    let after = h
        .clients
        .dynamodb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let after = after.table().unwrap();
    let spec = after.stream_specification().unwrap();
    assert!(spec.stream_enabled());
    assert_eq!(spec.stream_view_type().cloned(), view_before);
    assert_eq!(after.latest_stream_arn().map(str::to_owned), arn_before);
}

/// Issue 16 #2: a bus other teams subscribed to is kept on delete, and reported.
#[tokio::test]
async fn delete_keeps_a_bus_carrying_foreign_rules_and_says_how_to_force_it() {
    let Some(ep) = endpoint() else { return };
    let id = unique("fbus");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("user-created.yaml", &id);
    p.spec.bus.deletion_policy = outbox_operator::crd::DeletionPolicy::Delete;
    h.converge(&p).await;
    let bus = Names::new(&cluster, &p).bus;
    let foreign_rule = format!("billing-team-{id}");
    h.clients
        .eventbridge
        .put_rule()
        .name(&foreign_rule)
        .event_bus_name(&bus)
        .event_pattern(r#"{"source":["outbox"]}"#)
        .send()
        .await
        .unwrap();

    let out = h.engine.delete(&p).await.expect("delete");
    assert!(out.done, "the rest of the pipeline is deleted");
    assert!(bus_exists(&h, &bus).await, "bus with a foreign rule kept");
    let kept = out
        .actions
        .iter()
        .find(|a| a.verb == Verb::Retain && a.resource.contains(&bus))
        .unwrap_or_else(|| panic!("no retain action for the bus: {:#?}", out.actions));
    assert!(kept.detail.contains(&foreign_rule), "{kept:?}");
    assert!(kept.detail.contains("delete again"), "{kept:?}");
    assert!(
        !out.actions
            .iter()
            .any(|a| a.verb == Verb::Delete && a.resource.contains(&format!("bus {bus}"))),
        "{:#?}",
        out.actions
    );
    let rule = h
        .clients
        .eventbridge
        .describe_rule()
        .name(&foreign_rule)
        .event_bus_name(&bus)
        .send()
        .await;
    assert!(rule.is_ok(), "the foreign rule is still there");

    // Forcing it: remove the foreign rule, delete again.
    h.clients
        .eventbridge
        .delete_rule()
        .name(&foreign_rule)
        .event_bus_name(&bus)
        .send()
        .await
        .unwrap();
    h.engine.delete(&p).await.expect("delete again");
    assert!(!bus_exists(&h, &bus).await);
}

/// Issue 16 #4: consumers whose rules were never reached (a bus Conflict) are not "in sync".
#[tokio::test]
async fn consumers_wait_for_the_bus_after_a_bus_conflict() {
    let Some(ep) = endpoint() else { return };
    let id = unique("bconf");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("user-created.yaml", &id);
    assert!(!p.spec.consumers.is_empty());
    let bus = Names::new(&cluster, &p).bus;
    h.clients
        .eventbridge
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .unwrap();

    let out = h.engine.reconcile(&p).await;
    assert_eq!(out.error.map(|e| e.reason()), Some(Reason::Conflict));
    let bus_cond = out.status.condition(ConditionType::BusReady).unwrap();
    assert_eq!(
        (bus_cond.status.as_str(), bus_cond.reason.as_str()),
        ("False", "Conflict")
    );
    let cond = out.status.condition(ConditionType::ConsumersReady).unwrap();
    assert_eq!(cond.status, "False", "{cond:?}");
    assert!(cond.message.contains("waiting for bus"), "{cond:?}");
    assert!(out.status.rule_arns.is_empty());
}

/// Issue 16: any namespace may ask to adopt a table, so an adopted table is deleted only when the
/// operator allows it, and its deletion protection (someone else's choice) is never switched off.
#[tokio::test]
async fn an_adopted_table_keeps_its_deletion_protection_and_is_deleted_only_when_allowed() {
    let Some(ep) = endpoint() else { return };
    let id = unique("adoptdel");
    let cluster = format!("cl-{id}");
    let mut p = example("user-created.yaml", &id);
    let table = format!("legacy-{id}");
    p.spec.table.name = Some(table.clone());
    p.spec.table.adopt_existing = true;
    p.spec.table.deletion_protection = false;
    p.spec.table.deletion_policy = outbox_operator::crd::DeletionPolicy::Delete;
    let mut h = Harness::new(&ep, &cluster, true).await;
    create_foreign_table(&h, &table, true).await;
    h.clients
        .dynamodb
        .update_table()
        .table_name(&table)
        .deletion_protection_enabled(true)
        .send()
        .await
        .unwrap();

    h.converge(&p).await;
    assert_eq!(
        table_tags(&h, &table).await.get(tags::ADOPTED),
        Some(&"true".to_owned())
    );
    let protected = |h: &Harness| {
        let (c, t) = (h.clients.dynamodb.clone(), table.clone());
        async move {
            let d = c.describe_table().table_name(t).send().await.unwrap();
            d.table().unwrap().deletion_protection_enabled()
        }
    };
    assert_eq!(protected(&h).await, Some(true), "protection switched off");

    // Without --allow-delete-adopted-tables the table is kept, whatever the policy says.
    let out = h.engine.delete(&p).await.unwrap();
    assert!(out.done);
    assert!(table_exists(&h, &table).await);
    assert!(has_delete_action(
        &out,
        Verb::Retain,
        "--allow-delete-adopted-tables"
    ));

    // Allowed, but the protection was not ours: still kept, and still protected.
    h.engine = Engine::new(
        &emulator_sdk(&ep).await,
        EngineConfig {
            allow_adoption: true,
            allow_delete_adopted_tables: true,
            ..engine_config(&cluster)
        },
    );
    let out = h.engine.delete(&p).await.unwrap();
    assert!(table_exists(&h, &table).await);
    assert_eq!(protected(&h).await, Some(true));
    assert!(has_delete_action(&out, Verb::Retain, "deletion protection"));

    // Its owner switches protection off: now the allowed delete removes it.
    h.clients
        .dynamodb
        .update_table()
        .table_name(&table)
        .deletion_protection_enabled(false)
        .send()
        .await
        .unwrap();
    h.engine.delete(&p).await.unwrap();
    assert!(!table_exists(&h, &table).await);
}
