//! Wire tests of the reconcile engine against moto server (real HTTP, real SDK).
//!
//! Needs OUTBOX_TEST_ENDPOINT (set by `make unit`/`make test`). Without it the tests fail under
//! CI=true and are skipped (with a notice) otherwise. Every test uses its own cluster id, names
//! and bus, so test binaries can share one moto server; nothing resets it.

mod common;
mod harness;
use common::{endpoint, fixtures, unique};
use harness::check::check_pipeline;
use harness::*;

use outbox_operator::engine::{Verb, names::Names};

#[tokio::test]
async fn user_created_example_converges_with_every_setting_and_then_makes_no_mutating_call() {
    let Some(ep) = endpoint() else { return };
    let id = unique("uc");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("user-created.yaml", &id);
    let plan = h.engine.plan(&p).await.expect("plan");
    assert!(!plan.in_sync());
    assert!(
        plan.actions
            .iter()
            .all(|a| a.verb == Verb::Create || a.verb == Verb::Update)
    );
    let plan_calls = h.take_calls();
    assert!(!plan_calls.is_empty());
    assert!(
        plan_calls.iter().all(|c| !c.mutating),
        "plan changed something: {plan_calls:?}"
    );
    let status = h.engine.status(&p).await.expect("status");
    assert!(!status.is_ready());
    let out = h.converge(&p).await;
    check_pipeline(&h, &p, &cluster, &out).await;
    assert!(h.engine.status(&p).await.expect("status").is_ready());
    h.assert_steady(&p).await;
    assert!(h.engine.plan(&p).await.expect("plan").in_sync());
}

#[tokio::test]
async fn user_lifecycle_example_converges_with_every_setting_and_then_makes_no_mutating_call() {
    let Some(ep) = endpoint() else { return };
    let id = unique("ul");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("user-lifecycle.yaml", &id);
    let out = h.converge(&p).await;
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;
}

#[tokio::test]
async fn drift_is_repaired_for_each_case() {
    let Some(ep) = endpoint() else { return };
    let id = unique("dr");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("user-created.yaml", &id);
    let first = h.converge(&p).await;
    let names = Names::new(&cluster, &p);
    let c = &h.clients;
    let consumer = p.spec.consumers[0].name.clone();
    let rule_name = names.rule(&consumer);
    let uuid = first.status.event_source_mapping_uuid.clone().unwrap();

    // Rule deleted (targets first, as EventBridge requires).
    c.eventbridge
        .remove_targets()
        .rule(&rule_name)
        .event_bus_name(&names.bus)
        .ids("outbox-consumer")
        .send()
        .await
        .unwrap();
    c.eventbridge
        .delete_rule()
        .name(&rule_name)
        .event_bus_name(&names.bus)
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(out.status.is_ready(), "{:#?}", out.status);
    assert!(
        has_action(&out, Verb::Create, &rule_name),
        "{:#?}",
        out.actions
    );
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;

    // Target deleted.
    c.eventbridge
        .remove_targets()
        .rule(&rule_name)
        .event_bus_name(&names.bus)
        .ids("outbox-consumer")
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(
        has_action(&out, Verb::Create, "target outbox-consumer"),
        "{:#?}",
        out.actions
    );
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;

    // Mapping disabled.
    c.lambda
        .update_event_source_mapping()
        .uuid(&uuid)
        .enabled(false)
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(has_action(&out, Verb::Update, &uuid), "{:#?}", out.actions);
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;

    // Mapping batch size changed.
    c.lambda
        .update_event_source_mapping()
        .uuid(&uuid)
        .batch_size(7)
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(
        out.actions
            .iter()
            .any(|a| a.resource.contains(&uuid) && a.detail.contains("batchSize")),
        "{:#?}",
        out.actions
    );
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;

    // Relay environment edited by hand.
    c.lambda
        .update_function_configuration()
        .function_name(&names.relay_function)
        .environment(
            aws_sdk_lambda::types::Environment::builder()
                .variables("OUTBOX_BUS_NAME", "someone-elses-bus")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(
        out.actions
            .iter()
            .any(|a| a.resource.contains(&names.relay_function) && a.detail.contains("environment")),
        "{:#?}",
        out.actions
    );
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;

    // Point-in-time recovery turned off.
    c.dynamodb
        .update_continuous_backups()
        .table_name(&names.table)
        .point_in_time_recovery_specification(
            aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(false)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(
        out.actions
            .iter()
            .any(|a| a.detail.contains("point-in-time recovery")),
        "{:#?}",
        out.actions
    );
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;

    // Relay policy widened by hand.
    let relay_role = names.role(&names.relay_function);
    c.iam
        .put_role_policy()
        .role_name(&relay_role)
        .policy_name("outbox")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(
        has_action(&out, Verb::Update, &relay_role),
        "{:#?}",
        out.actions
    );
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;

    // Invoke permission removed.
    c.lambda
        .remove_permission()
        .function_name(names.consumer_function(&consumer))
        .statement_id(names.statement_id(&consumer))
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(
        has_action(&out, Verb::Create, "permission"),
        "{:#?}",
        out.actions
    );
    check_pipeline(&h, &p, &cluster, &out).await;
    h.assert_steady(&p).await;
    h.assert_policy_covers_calls();
}

#[tokio::test]
async fn user_function_and_sqs_targets_and_removed_consumers_are_cleaned_up() {
    let Some(ep) = endpoint() else { return };
    let id = unique("tgt");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("user-lifecycle.yaml", &id);
    let names = Names::new(&cluster, &p);
    let c = &h.clients;

    // A function of the user's, with a statement of its own.
    let role = c
        .iam
        .create_role()
        .role_name(format!("user-role-{id}"))
        .assume_role_policy_document(outbox_operator::engine::iam::trust_policy().to_string())
        .send()
        .await
        .unwrap();
    let zip = std::fs::read(fixtures().join("x86_64/consumer/bootstrap.zip")).unwrap();
    let user_fn = c
        .lambda
        .create_function()
        .function_name(format!("user-fn-{id}"))
        // The opt-in a user's function needs before a pipeline adds an invoke permission to it.
        .tags("outbox.dev/allow-pipelines", "all")
        .runtime(aws_sdk_lambda::types::Runtime::from("provided.al2023"))
        .handler("bootstrap")
        .role(role.role().unwrap().arn())
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(zip))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let user_fn_arn = user_fn.function_arn().unwrap().to_owned();
    c.lambda
        .add_permission()
        .function_name(&user_fn_arn)
        .statement_id("users-own")
        .action("lambda:InvokeFunction")
        .principal("s3.amazonaws.com")
        .send()
        .await
        .unwrap();
    // The queues exist, as pre-flight requires (their policies are the user's to write).
    for q in [format!("q-{id}"), format!("dlq-{id}")] {
        c.sqs.create_queue().queue_name(q).send().await.unwrap();
    }
    let queue = format!("arn:aws:sqs:us-east-1:123456789012:q-{id}");
    let dlq = format!("arn:aws:sqs:us-east-1:123456789012:dlq-{id}");
    let consumer = |name: &str, target: serde_json::Value| -> outbox_operator::crd::ConsumerSpec {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "eventPattern": {"source": ["myapp.users"]},
            "target": target,
            "deadLetterArn": dlq,
        }))
        .unwrap()
    };
    p.spec.consumers.push(consumer(
        "ext",
        serde_json::json!({"lambdaFunctionArn": user_fn_arn}),
    ));
    p.spec
        .consumers
        .push(consumer("queue", serde_json::json!({"sqsQueueArn": queue})));
    let out = h.converge(&p).await;

    let ext_rule = out.status.rule_arns["ext"].clone();
    let policy = function_policy(&h, &user_fn_arn).await;
    assert_eq!(
        outbox_operator::engine::permission::statement_matches(
            &policy,
            &names.statement_id("ext"),
            &ext_rule
        ),
        Some(true),
        "{policy}"
    );
    for (consumer, arn) in [("ext", &user_fn_arn), ("queue", &queue)] {
        let targets = c
            .eventbridge
            .list_targets_by_rule()
            .rule(names.rule(consumer))
            .event_bus_name(&names.bus)
            .send()
            .await
            .unwrap();
        assert_eq!(targets.targets().len(), 1);
        let t = &targets.targets()[0];
        assert_eq!(t.arn(), arn);
        assert_eq!(
            t.dead_letter_config().and_then(|d| d.arn()),
            Some(dlq.as_str())
        );
    }
    let queue_rule = out.status.rule_arns["queue"].clone();
    let req = &out.status.required_actions;
    assert!(
        req.iter().any(|r| r.contains(&queue)
            && r.contains(&queue_rule)
            && r.contains("sqs:SendMessage")),
        "{req:?}"
    );
    assert!(req.iter().any(|r| r.contains(&dlq)), "{req:?}");
    assert!(!out.status.consumer_function_arns.contains_key("ext"));
    h.assert_steady(&p).await;

    // Remove a bundled consumer and the user-function consumer.
    p.spec
        .consumers
        .retain(|c| c.name != "ext" && c.name != "user-deleted");
    let out = h.converge(&p).await;
    assert!(
        has_action(&out, Verb::Delete, &names.rule("ext")),
        "{:#?}",
        out.actions
    );
    let gone_fn = names.consumer_function("user-deleted");
    assert!(!function_exists(&h, &gone_fn).await);
    assert!(!role_exists(&h, &names.role(&gone_fn)).await);
    for consumer in ["ext", "user-deleted"] {
        assert!(
            c.eventbridge
                .describe_rule()
                .name(names.rule(consumer))
                .event_bus_name(&names.bus)
                .send()
                .await
                .is_err()
        );
    }
    let policy = function_policy(&h, &user_fn_arn).await;
    assert_eq!(
        outbox_operator::engine::permission::statement_matches(
            &policy,
            &names.statement_id("ext"),
            &ext_rule
        ),
        None,
        "our statement removed: {policy}"
    );
    assert!(
        policy.to_string().contains("users-own"),
        "the user's statement stays"
    );
    assert!(function_exists(&h, &format!("user-fn-{id}")).await);
    h.assert_steady(&p).await;

    // The writer switched off: its function and role go.
    p.spec.writer.enabled = false;
    let plan = h.engine.plan(&p).await.expect("plan");
    assert!(
        plan.actions
            .iter()
            .any(|a| a.verb == Verb::Delete && a.resource.contains(&names.writer_function)),
        "{:?}",
        plan.actions
    );
    assert!(
        function_exists(&h, &names.writer_function).await,
        "plan changes nothing"
    );
    h.converge(&p).await;
    assert!(!function_exists(&h, &names.writer_function).await);
    assert!(!role_exists(&h, &names.role(&names.writer_function)).await);
    h.assert_steady(&p).await;
}

/// Issue 16: a key dropped from spec.tags leaves every resource of the pipeline (table, bus,
/// rules, functions, roles, bucket); a tag someone added by hand stays; `plan` shows the removal
/// without making it; the pass after makes no mutating call.
#[tokio::test]
async fn a_tag_dropped_from_the_spec_is_removed_and_a_hand_added_tag_stays() {
    use outbox_operator::engine::tags::MANAGED_TAGS;
    let Some(ep) = endpoint() else { return };
    let id = unique("tg");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("user-lifecycle.yaml", &id);
    assert!(
        p.spec.tags.contains_key("cost-center"),
        "the example's tags"
    );
    let out = h.converge(&p).await;
    let names = Names::new(&cluster, &p);
    let resources = tags::resources(&h, &p, &names, &out.status).await;
    assert_eq!(
        resources.len(),
        1 + 1 + 2 + 3 * 4 + 1 + (2 + 2),
        "table, bus, rules, 4 functions with their roles and log groups, bucket, 2 relay alarms and one per consumer rule"
    );
    for r in &resources {
        tags::add(&h, r, "hand-added", "kept").await;
    }

    p.spec.tags.remove("cost-center");
    p.spec.tags.insert("env".into(), "prod".into());
    p.metadata.generation = Some(2);
    h.take_calls();
    let plan = h.engine.plan(&p).await.expect("plan");
    let removals = plan
        .actions
        .iter()
        .filter(|a| a.verb == Verb::Update && a.detail.contains("remove tags: cost-center"))
        .count();
    assert_eq!(removals, resources.len(), "{:#?}", plan.actions);
    assert!(
        h.take_calls().iter().all(|c| !c.mutating),
        "plan is read-only"
    );
    for r in &resources {
        let t = tags::read(&h, r).await;
        assert_eq!(
            t.get("cost-center").map(String::as_str),
            Some("1234"),
            "{}",
            r.label()
        );
    }

    h.converge(&p).await;
    for r in &resources {
        let t = tags::read(&h, r).await;
        let what = r.label();
        assert!(!t.contains_key("cost-center"), "{what}: {t:?}");
        assert_eq!(t.get("env").map(String::as_str), Some("prod"), "{what}");
        assert_eq!(
            t.get("team").map(String::as_str),
            Some("identity"),
            "{what}"
        );
        assert_eq!(
            t.get("hand-added").map(String::as_str),
            Some("kept"),
            "{what}"
        );
        assert_eq!(t[MANAGED_TAGS].split(' ').count(), 2, "{what}: {t:?}");
    }
    h.assert_steady(&p).await;

    // All spec tags gone: the operator's leave, the hand-added one stays, the record is empty.
    p.spec.tags.clear();
    h.converge(&p).await;
    for r in &resources {
        let t = tags::read(&h, r).await;
        let what = r.label();
        assert!(
            !t.contains_key("env") && !t.contains_key("team"),
            "{what}: {t:?}"
        );
        assert_eq!(
            t.get("hand-added").map(String::as_str),
            Some("kept"),
            "{what}"
        );
        assert_eq!(t.get(MANAGED_TAGS).map(String::as_str), Some(""), "{what}");
    }
    h.assert_steady(&p).await;
    h.assert_policy_covers_calls();
}

/// `plan` is read-only by construction: for a new pipeline, an in-sync one and a drifted one it
/// makes zero mutating calls (and reports the drift as the changes reconcile would make).
#[tokio::test]
async fn plan_makes_no_mutating_call_for_a_new_an_in_sync_and_a_drifted_pipeline() {
    let Some(ep) = endpoint() else { return };
    let id = unique("pl");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("user-lifecycle.yaml", &id);
    let names = Names::new(&cluster, &p);
    let plan_calls = |what: &str| {
        let calls = h.take_calls();
        assert!(!calls.is_empty(), "{what}: the observer saw the plan");
        let mutating: Vec<_> = calls.iter().filter(|c| c.mutating).collect();
        assert!(
            mutating.is_empty(),
            "{what}: plan made mutating calls {mutating:?}"
        );
    };

    h.take_calls();
    let new = h.engine.plan(&p).await.expect("plan of a new pipeline");
    assert!(has_action_in(&new.actions, Verb::Create, &names.table));
    plan_calls("new");

    h.converge(&p).await;
    h.take_calls();
    assert!(h.engine.plan(&p).await.expect("plan in sync").in_sync());
    plan_calls("in sync");

    // Drift: the relay's memory and a consumer rule's state, changed by hand.
    h.clients
        .lambda
        .update_function_configuration()
        .function_name(&names.relay_function)
        .memory_size(1024)
        .send()
        .await
        .unwrap();
    h.clients
        .eventbridge
        .disable_rule()
        .name(names.rule(&p.spec.consumers[0].name))
        .event_bus_name(&names.bus)
        .send()
        .await
        .unwrap();
    h.take_calls();
    let drifted = h.engine.plan(&p).await.expect("plan of a drifted pipeline");
    assert!(has_action_in(
        &drifted.actions,
        Verb::Update,
        &names.relay_function
    ));
    assert!(has_action_in(
        &drifted.actions,
        Verb::Update,
        &names.rule(&p.spec.consumers[0].name)
    ));
    plan_calls("drifted");
    let status = h.engine.status(&p).await.expect("status");
    assert!(!status.is_ready(), "drift is not in sync");
    plan_calls("status");
}

fn has_action_in(actions: &[outbox_operator::engine::AwsAction], verb: Verb, part: &str) -> bool {
    actions
        .iter()
        .any(|a| a.verb == verb && a.resource.contains(part))
}

/// The reads of one pass, as `service:operation` → count.
fn reads_by_operation(
    calls: &[outbox_operator::engine::CallInfo],
) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for c in calls {
        assert!(!c.mutating, "a converged pass made {}", c.operation);
        let key = format!("{}:{}", c.service.to_ascii_lowercase(), c.operation);
        *out.entry(key).or_default() += 1;
    }
    out
}

/// A converged pipeline (relay + one bundled consumer, writer off, default monitoring: what
/// bench-scale runs) reads each resource once per resync pass and per `status`: the reads are
/// pinned per operation, so a step that reads again what its pass already read fails here (issue
/// 15: at 1,000 pipelines every read per pass is ~3 calls/s against AWS's quotas). The log groups
/// and the alarms are listed once by their name prefix; the bus pre-flight reads is the bus step's
/// and its ARN tells the account (no read of the default bus). Drift is still seen on the next
/// pass: nothing is kept across passes.
#[tokio::test]
async fn a_converged_pipelines_pass_reads_each_resource_once() {
    let Some(ep) = endpoint() else { return };
    let id = unique("rd");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("user-created.yaml", &id);
    p.spec.writer.enabled = false;
    let names = Names::new(&cluster, &p);
    h.converge(&p).await;
    h.assert_steady(&p).await;
    let expected: std::collections::BTreeMap<String, usize> = [
        ("cloudwatch:DescribeAlarms", 1),
        ("cloudwatch:GetMetricData", 1),
        // The three alarms' tags (DescribeAlarms returns none).
        ("cloudwatch:ListTagsForResource", 3),
        ("cloudwatch logs:DescribeLogGroups", 1),
        ("cloudwatch logs:ListTagsForResource", 2),
        ("dynamodb:DescribeContinuousBackups", 1),
        ("dynamodb:DescribeTable", 1),
        ("dynamodb:ListTagsOfResource", 1),
        ("eventbridge:DescribeEventBus", 1),
        ("eventbridge:DescribeRule", 1),
        ("eventbridge:ListRules", 1),
        // The bus's and the rule's tags.
        ("eventbridge:ListTagsForResource", 2),
        ("eventbridge:ListTargetsByRule", 1),
        // The relay's and the consumer's roles, and the writer's (switched off: absent).
        ("iam:GetRole", 3),
        ("iam:GetRolePolicy", 2),
        // Relay, consumer, and the writer's absence.
        ("lambda:GetFunction", 3),
        ("lambda:GetPolicy", 1),
        ("lambda:ListEventSourceMappings", 1),
        ("s3:GetBucketTagging", 1),
        ("s3:ListObjectsV2", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    h.take_calls();
    let out = h.engine.reconcile(&p).await;
    assert!(out.error.is_none() && out.actions.is_empty(), "{out:?}");
    assert_eq!(reads_by_operation(&h.take_calls()), expected, "resync pass");
    assert!(h.engine.status(&p).await.expect("status").is_ready());
    assert_eq!(reads_by_operation(&h.take_calls()), expected, "status");

    // Drift of what the pass reads once (the bus's tags, a log group's retention) is repaired by
    // the next pass.
    let bus_arn = out.status.bus_arn.clone().expect("bus ARN");
    h.clients
        .eventbridge
        .untag_resource()
        .resource_arn(&bus_arn)
        .tag_keys("outbox.dev/managed-tags")
        .send()
        .await
        .unwrap();
    h.clients
        .logs
        .put_retention_policy()
        .log_group_name(Names::log_group(
            &names.consumer_function(&p.spec.consumers[0].name),
        ))
        .retention_in_days(3653)
        .send()
        .await
        .unwrap();
    let repaired = h.engine.reconcile(&p).await;
    assert!(repaired.error.is_none(), "{:?}", repaired.error);
    let updated: Vec<&str> = repaired
        .actions
        .iter()
        .filter(|a| a.verb == Verb::Update)
        .map(|a| a.resource.as_str())
        .collect();
    assert!(
        updated.iter().any(|r| r.contains("eventbridge bus"))
            && updated.iter().any(|r| r.starts_with("log group")),
        "{:?}",
        repaired.actions
    );
    h.assert_steady(&p).await;
}
