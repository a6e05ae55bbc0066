//! Wire tests of the reconcile engine against moto server (real HTTP, real SDK).
//!
//! Needs OUTBOX_TEST_ENDPOINT (set by `make unit`/`make test`). Without it the tests fail under
//! CI=true and are skipped (with a notice) otherwise. Every test uses its own cluster id, names
//! and bus, so test binaries can share one moto server; nothing resets it.

mod common;
use common::{emulator_sdk, endpoint, engine_config, fixtures, record_calls, unique};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use outbox_operator::crd::{ConditionType, OutboxPipeline, Reason};
use outbox_operator::engine::{
    AwsClients, CallInfo, Engine, EngineConfig, Outcome, Verb, aws_sdk_config, function,
    iam::same_document, names::Names, tags,
};

struct Harness {
    engine: Engine,
    clients: AwsClients,
    calls: Arc<Mutex<Vec<CallInfo>>>,
    /// Every call of the harness's life (for the IAM policy check).
    all_calls: Arc<Mutex<Vec<CallInfo>>>,
}

impl Harness {
    async fn new(endpoint: &str, cluster_id: &str, allow_adoption: bool) -> Harness {
        let sdk = emulator_sdk(endpoint).await;
        let calls: Arc<Mutex<Vec<CallInfo>>> = Arc::default();
        let all_calls: Arc<Mutex<Vec<CallInfo>>> = Arc::default();
        let sink = calls.clone();
        let all_sink = all_calls.clone();
        let engine = Engine::new(
            &sdk,
            EngineConfig {
                allow_adoption,
                ..engine_config(cluster_id)
            },
        )
        .with_call_observer(record_calls(vec![sink, all_sink]));
        // The test's own clients, without the observer: only the engine's calls are counted.
        let clients = AwsClients::from_conf(&sdk);
        Harness {
            engine,
            clients,
            calls,
            all_calls,
        }
    }

    /// docs/operator-iam-policy.json allows every operation the engine called: each called action
    /// is in an Allow statement whose Resource patterns match the ARN the engine addresses with
    /// that operation (`call_resources`). Conditions (boundary, ownership tags, PassedToService,
    /// lambda:Principal) are NOT evaluated: moto does not enforce IAM, and the call observer does
    /// not see request parameters; tests/iam_policy.rs checks the conditions' presence instead.
    fn assert_policy_covers_calls(&self) {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-iam-policy.json");
        let policy: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let allow: Vec<&serde_json::Value> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Effect"] == "Allow")
            .collect();
        for call in self.all_calls.lock().unwrap().iter() {
            let prefix = match call.service.to_ascii_lowercase().as_str() {
                "eventbridge" => "events".to_owned(),
                other => other.to_owned(),
            };
            let op = match call.operation.as_str() {
                "ListObjectsV2" => "ListBucket",
                op => op,
            };
            let action = format!("{prefix}:{op}");
            for arn in call_resources(&prefix, op) {
                assert!(
                    allow
                        .iter()
                        .any(|s| policy_list(&s["Action"]).contains(&action)
                            && policy_list(&s["Resource"])
                                .iter()
                                .any(|r| arn_like(r, &arn))),
                    "docs/operator-iam-policy.json lacks {action} on {arn}"
                );
            }
        }
    }

    fn take_calls(&self) -> Vec<CallInfo> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// Reconciles until Ready (moto settles at once, so a few passes at most).
    async fn converge(&self, p: &OutboxPipeline) -> Outcome {
        let mut last = None;
        for _ in 0..5 {
            let out = self.engine.reconcile(p).await;
            if let Some(e) = &out.error {
                panic!("reconcile failed: {e}\nstatus: {:#?}", out.status);
            }
            if out.status.is_ready() {
                return out;
            }
            last = Some(out);
        }
        panic!("not Ready after 5 passes: {:#?}", last.map(|o| o.status));
    }

    /// One more pass must change nothing.
    async fn assert_steady(&self, p: &OutboxPipeline) {
        self.take_calls();
        let out = self.engine.reconcile(p).await;
        assert!(out.error.is_none(), "{:?}", out.error);
        assert!(out.status.is_ready(), "{:#?}", out.status);
        assert!(
            out.actions.is_empty(),
            "unexpected actions: {:#?}",
            out.actions
        );
        let calls = self.take_calls();
        assert!(
            calls
                .iter()
                .any(|c| c.operation == "DescribeTable" && !c.mutating),
            "the call observer saw the pass: {calls:?}"
        );
        let mutating: Vec<String> = calls
            .into_iter()
            .filter(|c| c.mutating)
            .map(|c| c.operation)
            .collect();
        assert!(
            mutating.is_empty(),
            "steady-state pass made mutating calls: {mutating:?}"
        );
    }
}

fn policy_list(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(a) => vec![a.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// IAM's ArnLike/Resource wildcard match (`*` any run, `?` one character).
fn arn_like(pattern: &str, arn: &str) -> bool {
    fn go(p: &[u8], v: &[u8]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some((b'*', rest)) => (0..=v.len()).any(|i| go(rest, &v[i..])),
            Some((b'?', rest)) => !v.is_empty() && go(rest, &v[1..]),
            Some((c, rest)) => v.first() == Some(c) && go(rest, &v[1..]),
        }
    }
    go(pattern.as_bytes(), arn.as_bytes())
}

/// The ARNs (shapes) the engine addresses with an operation: an operation used on two kinds of
/// resource (tags on buses and rules, invoke permissions on our and users' functions) lists
/// both. An operation missing here fails the test, so a new call cannot go unchecked.
fn call_resources(service: &str, op: &str) -> Vec<String> {
    let (acct, region) = ("123456789012", "us-east-1");
    let function = |f: &str| format!("arn:aws:lambda:{region}:{acct}:function:{f}");
    let bus = format!("arn:aws:events:{region}:{acct}:event-bus/user-bus");
    let rule = format!("arn:aws:events:{region}:{acct}:rule/user-bus/outbox-0123abcd-audit");
    match (service, op) {
        ("dynamodb", _) => vec![format!("arn:aws:dynamodb:{region}:{acct}:table/user-table")],
        // Pre-flight reads the configured boundary policy.
        ("iam", "GetPolicy") => vec![format!("arn:aws:iam::{acct}:policy/outbox-role-boundary")],
        ("iam", _) => vec![format!(
            "arn:aws:iam::{acct}:role/outbox/outbox-0123abcd-relay"
        )],
        // Pre-flight looks up the queues a spec names (targets, dead-letter queues).
        ("sqs", "GetQueueUrl") => vec![format!("arn:aws:sqs:{region}:{acct}:users-queue")],
        ("s3", _) => vec!["arn:aws:s3:::outbox-0123abcd4567-failures".to_owned()],
        ("lambda", "ListEventSourceMappings") => vec!["*".to_owned()],
        ("lambda", op) if op.ends_with("EventSourceMapping") => vec![format!(
            "arn:aws:lambda:{region}:{acct}:event-source-mapping:0f0e0d0c-0000-4000-8000-000000000000"
        )],
        ("lambda", "GetPolicy" | "AddPermission" | "RemovePermission") => {
            vec![
                function("outbox-0123abcd-audit"),
                function("users-own-function"),
            ]
        }
        // Pre-flight reads a user's target function (existence, the opt-in tag).
        ("lambda", "GetFunction" | "ListTags") => vec![
            function("outbox-0123abcd-relay"),
            function("users-own-function"),
        ],
        ("lambda", _) => vec![function("outbox-0123abcd-relay")],
        ("events", "ListRules") => vec!["*".to_owned()],
        // Pre-flight learns the account from the region's default bus.
        ("events", "DescribeEventBus") => {
            vec![
                bus,
                format!("arn:aws:events:{region}:{acct}:event-bus/default"),
            ]
        }
        ("events", "CreateEventBus" | "DeleteEventBus") => vec![bus],
        ("events", "TagResource" | "ListTagsForResource") => vec![bus, rule],
        ("events", _) => vec![rule],
        _ => panic!("call_resources: add the resource {service}:{op} is called on"),
    }
}

/// An example pipeline with names made unique to the test.
fn example(file: &str, id: &str) -> OutboxPipeline {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let docs =
        outbox_operator::manifest::read_path(&path.to_string_lossy()).expect("example parses");
    let mut p = docs.into_iter().next().expect("one document").pipeline;
    p.metadata.name = Some(format!("{}-{id}", p.metadata.name.unwrap_or_default()));
    p.spec.bus.name = Some(format!(
        "{}-{id}",
        p.spec.bus.name.clone().unwrap_or_default()
    ));
    p.metadata.generation = Some(1);
    p
}

fn tags_of_table(m: &[aws_sdk_dynamodb::types::Tag]) -> BTreeMap<String, String> {
    m.iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

/// Reads every resource back from AWS and checks it against the spec.
async fn check_pipeline(h: &Harness, p: &OutboxPipeline, cluster: &str, out: &Outcome) {
    let names = Names::new(cluster, p);
    let st = &out.status;
    let c = &h.clients;
    let owner_pipeline = format!("{}/{}", p.namespace_or_default(), p.name_or_empty());
    let expect_tags = |t: &BTreeMap<String, String>| {
        assert_eq!(
            t.get(tags::MANAGED_BY).map(String::as_str),
            Some(tags::MANAGED_BY_VALUE)
        );
        assert_eq!(t.get(tags::CLUSTER_ID).map(String::as_str), Some(cluster));
        assert_eq!(t.get(tags::PIPELINE), Some(&owner_pipeline));
        for (k, v) in &p.spec.tags {
            assert_eq!(t.get(k), Some(v), "spec tag {k}");
        }
    };

    // Conditions.
    for ct in [
        ConditionType::Ready,
        ConditionType::TableReady,
        ConditionType::RelayReady,
        ConditionType::BusReady,
        ConditionType::ConsumersReady,
    ] {
        let cond = st.condition(ct).expect("condition set");
        assert_eq!(cond.status, "True", "{ct:?}: {cond:?}");
        assert_eq!(cond.reason, Reason::Reconciled.as_str());
        assert_eq!(cond.observed_generation, Some(1));
    }
    assert_eq!(st.observed_generation, Some(1));

    // Table.
    let t = c
        .dynamodb
        .describe_table()
        .table_name(&names.table)
        .send()
        .await
        .unwrap();
    let t = t.table().unwrap();
    assert_eq!(st.table_name.as_deref(), Some(names.table.as_str()));
    assert_eq!(st.table_arn.as_deref(), t.table_arn());
    let ss = t.stream_specification().unwrap();
    assert!(ss.stream_enabled());
    assert_eq!(
        ss.stream_view_type().unwrap().as_str(),
        p.spec.table.stream_view_type.as_str()
    );
    assert_eq!(st.stream_arn.as_deref(), t.latest_stream_arn());
    assert_eq!(
        t.deletion_protection_enabled(),
        Some(p.spec.table.deletion_protection)
    );
    assert_eq!(
        t.billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str()),
        Some("PAY_PER_REQUEST")
    );
    assert_eq!(
        t.key_schema()[0].attribute_name(),
        p.spec.table.partition_key.name
    );
    let tt = c
        .dynamodb
        .list_tags_of_resource()
        .resource_arn(t.table_arn().unwrap())
        .send()
        .await
        .unwrap();
    expect_tags(&tags_of_table(tt.tags()));
    let pitr = c
        .dynamodb
        .describe_continuous_backups()
        .table_name(&names.table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        pitr.continuous_backups_description()
            .and_then(|d| d.point_in_time_recovery_description())
            .and_then(|d| d.point_in_time_recovery_status())
            .map(|s| s.as_str()),
        Some(if p.spec.table.point_in_time_recovery {
            "ENABLED"
        } else {
            "DISABLED"
        })
    );

    // Failure bucket.
    let dest = st
        .failure_destination_arn
        .clone()
        .expect("failure destination");
    let bucket = dest
        .strip_prefix("arn:aws:s3:::")
        .expect("an s3 bucket ARN");
    let bt =
        c.s3.get_bucket_tagging()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
    expect_tags(
        &bt.tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect(),
    );

    // Roles and functions.
    let mut functions = vec![("relay", names.relay_function.clone())];
    if p.spec.writer.enabled {
        functions.push(("writer", names.writer_function.clone()));
    }
    for cons in &p.spec.consumers {
        functions.push(("consumer", names.consumer_function(&cons.name)));
    }
    let bus_arn = st.bus_arn.clone().expect("bus arn");
    for (kind, f) in &functions {
        let role = c
            .iam
            .get_role()
            .role_name(names.role(f))
            .send()
            .await
            .unwrap();
        let role = role.role().unwrap();
        assert_eq!(role.path(), "/outbox/");
        expect_tags(
            &role
                .tags()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect(),
        );
        let policy = c
            .iam
            .get_role_policy()
            .role_name(names.role(f))
            .policy_name("outbox")
            .send()
            .await
            .unwrap();
        let doc = outbox_operator::engine::iam::parse_document(policy.policy_document()).unwrap();
        let text = doc.to_string();
        assert!(
            text.contains(&format!("log-group:/aws/lambda/{f}")),
            "{text}"
        );
        match *kind {
            "relay" => {
                assert!(text.contains(st.stream_arn.as_deref().unwrap()));
                assert!(text.contains(&bus_arn));
                assert!(text.contains("events:PutEvents"));
                assert!(text.contains(&format!("{dest}/*")));
            }
            "writer" => {
                assert!(text.contains("dynamodb:PutItem"));
                assert!(text.contains(st.table_arn.as_deref().unwrap()));
            }
            _ => assert!(!text.contains("dynamodb:") && !text.contains("events:")),
        }
        let fun = c
            .lambda
            .get_function()
            .function_name(f)
            .send()
            .await
            .unwrap();
        let conf = fun.configuration().unwrap();
        assert_eq!(conf.runtime().map(|r| r.as_str()), Some("provided.al2023"));
        assert_eq!(conf.handler(), Some("bootstrap"));
        assert_eq!(conf.role(), Some(role.arn()));
        assert_eq!(
            conf.architectures().first().map(|a| a.as_str()),
            Some(p.spec.relay.architecture.as_str())
        );
        let zip = std::fs::read(function::artifact_path(
            &fixtures(),
            p.spec.relay.architecture,
            kind,
        ))
        .unwrap();
        assert_eq!(
            conf.code_sha256(),
            Some(function::code_sha256(&zip).as_str())
        );
        expect_tags(
            &fun.tags()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        );
        let env: BTreeMap<String, String> = conf
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        match *kind {
            "relay" => {
                assert_eq!(conf.memory_size(), Some(p.spec.relay.memory_mb));
                assert_eq!(conf.timeout(), Some(p.spec.relay.timeout_seconds));
                let cfg = outbox_contract::RelayConfig::from_lookup(|k| env.get(k).cloned())
                    .expect("relay env is a valid RelayConfig");
                assert_eq!(Some(cfg.bus_name), st.bus_name.clone());
                assert_eq!(cfg.events.len(), p.spec.relay.events.len());
                for (e, s) in cfg.events.iter().zip(&p.spec.relay.events) {
                    assert_eq!(
                        (e.change, &e.source, &e.detail_type, e.payload),
                        (s.change, &s.source, &s.detail_type, s.payload)
                    );
                }
                assert_eq!(st.relay_function_arn.as_deref(), conf.function_arn());
            }
            "writer" => {
                assert_eq!(
                    env.get(outbox_contract::env::TABLE_NAME),
                    Some(&names.table)
                );
                assert_eq!(
                    env.get(outbox_contract::env::PARTITION_KEY),
                    Some(&p.spec.table.partition_key.name)
                );
            }
            _ => {}
        }
    }

    // Mapping.
    let maps = c
        .lambda
        .list_event_source_mappings()
        .function_name(&names.relay_function)
        .send()
        .await
        .unwrap();
    assert_eq!(maps.event_source_mappings().len(), 1, "exactly one mapping");
    let m = &maps.event_source_mappings()[0];
    let r = &p.spec.relay;
    assert_eq!(m.event_source_arn(), st.stream_arn.as_deref());
    assert_eq!(m.uuid(), st.event_source_mapping_uuid.as_deref());
    assert_eq!(m.state(), Some("Enabled"));
    assert_eq!(m.batch_size(), Some(r.batch_size));
    assert_eq!(m.maximum_retry_attempts(), Some(r.maximum_retry_attempts));
    assert_eq!(
        m.maximum_record_age_in_seconds(),
        Some(r.maximum_record_age_seconds)
    );
    assert_eq!(
        m.bisect_batch_on_function_error(),
        Some(r.bisect_batch_on_function_error)
    );
    assert_eq!(m.parallelization_factor(), Some(r.parallelization_factor));
    assert_eq!(
        m.function_response_types()
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
        vec!["ReportBatchItemFailures"]
    );
    let filters = m.filter_criteria().map(|f| f.filters()).unwrap_or_default();
    assert_eq!(filters.len(), 1);
    let pattern: serde_json::Value = serde_json::from_str(filters[0].pattern().unwrap()).unwrap();
    let mut wanted: Vec<&str> = r.events.iter().map(|e| e.change.as_str()).collect();
    wanted.sort();
    assert_eq!(pattern, serde_json::json!({"eventName": wanted}));
    assert_eq!(
        m.destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|o| o.destination()),
        Some(dest.as_str())
    );

    // Bus, rules, targets, permissions.
    let bus = c
        .eventbridge
        .describe_event_bus()
        .name(&names.bus)
        .send()
        .await
        .unwrap();
    assert_eq!(bus.arn(), Some(bus_arn.as_str()));
    for cons in &p.spec.consumers {
        let rule_name = names.rule(&cons.name);
        let rule = c
            .eventbridge
            .describe_rule()
            .name(&rule_name)
            .event_bus_name(&names.bus)
            .send()
            .await
            .unwrap();
        assert_eq!(rule.state().map(|s| s.as_str()), Some("ENABLED"));
        let pat: serde_json::Value = serde_json::from_str(rule.event_pattern().unwrap()).unwrap();
        assert_eq!(pat, cons.event_pattern);
        assert_eq!(st.rule_arns.get(&cons.name).map(String::as_str), rule.arn());
        let targets = c
            .eventbridge
            .list_targets_by_rule()
            .rule(&rule_name)
            .event_bus_name(&names.bus)
            .send()
            .await
            .unwrap();
        assert_eq!(targets.targets().len(), 1);
        let target = &targets.targets()[0];
        let fn_arn = st
            .consumer_function_arns
            .get(&cons.name)
            .expect("consumer fn arn");
        assert_eq!(target.arn(), fn_arn);
        let rp = target.retry_policy().expect("retry policy");
        assert_eq!(
            rp.maximum_retry_attempts(),
            Some(cons.retry_policy.maximum_retry_attempts)
        );
        assert_eq!(
            rp.maximum_event_age_in_seconds(),
            Some(cons.retry_policy.maximum_event_age_seconds)
        );
        let policy = c
            .lambda
            .get_policy()
            .function_name(names.consumer_function(&cons.name))
            .send()
            .await
            .unwrap();
        let policy: serde_json::Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        assert_eq!(
            outbox_operator::engine::permission::statement_matches(
                &policy,
                &names.statement_id(&cons.name),
                rule.arn().unwrap()
            ),
            Some(true),
            "{policy}"
        );
    }
    let _ = same_document;
}

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

fn has_action(out: &Outcome, verb: Verb, resource_part: &str) -> bool {
    out.actions
        .iter()
        .any(|a| a.verb == verb && a.resource.contains(resource_part))
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

async fn table_exists(h: &Harness, name: &str) -> bool {
    h.clients
        .dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .is_ok()
}

async fn function_exists(h: &Harness, name: &str) -> bool {
    h.clients
        .lambda
        .get_function()
        .function_name(name)
        .send()
        .await
        .is_ok()
}

async fn bus_exists(h: &Harness, name: &str) -> bool {
    h.clients
        .eventbridge
        .describe_event_bus()
        .name(name)
        .send()
        .await
        .is_ok()
}

async fn role_exists(h: &Harness, name: &str) -> bool {
    h.clients
        .iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .is_ok()
}

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

async fn create_foreign_table(h: &Harness, name: &str, stream: bool) {
    let mut req = h
        .clients
        .dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        );
    if stream {
        req = req.stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewImage)
                .build()
                .unwrap(),
        );
    }
    req.send().await.unwrap();
}

async fn table_tags(h: &Harness, name: &str) -> BTreeMap<String, String> {
    let t = h
        .clients
        .dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .unwrap();
    let arn = t.table().unwrap().table_arn().unwrap().to_owned();
    let tags = h
        .clients
        .dynamodb
        .list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    tags_of_table(tags.tags())
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

async fn function_policy(h: &Harness, function: &str) -> serde_json::Value {
    let p = h
        .clients
        .lambda
        .get_policy()
        .function_name(function)
        .send()
        .await
        .unwrap();
    serde_json::from_str(p.policy().unwrap()).unwrap()
}

/// Swaps the harness's engine for one with `boundary` configured (same observer sinks).
fn with_boundary(
    h: &mut Harness,
    sdk: &aws_types::SdkConfig,
    cluster: &str,
    boundary: Option<&str>,
) {
    let sink = h.calls.clone();
    let all_sink = h.all_calls.clone();
    h.engine = Engine::new(
        sdk,
        EngineConfig {
            permissions_boundary_arn: boundary.map(str::to_owned),
            ..engine_config(cluster)
        },
    )
    .with_call_observer(record_calls(vec![sink, all_sink]));
}

async fn role_boundary(h: &Harness, role: &str) -> Option<String> {
    h.clients
        .iam
        .get_role()
        .role_name(role)
        .send()
        .await
        .expect("GetRole")
        .role()
        .and_then(|r| r.permissions_boundary())
        .and_then(|b| b.permissions_boundary_arn())
        .map(str::to_owned)
}

async fn create_boundary_policy(h: &Harness, name: &str) -> String {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/outbox-role-boundary.json"),
    )
    .expect("boundary doc");
    h.clients
        .iam
        .create_policy()
        .policy_name(name)
        .policy_document(doc)
        .send()
        .await
        .expect("CreatePolicy")
        .policy()
        .and_then(|p| p.arn())
        .expect("policy arn")
        .to_owned()
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

fn has_delete_action(out: &outbox_operator::engine::DeleteOutcome, verb: Verb, part: &str) -> bool {
    out.actions
        .iter()
        .any(|a| a.verb == verb && a.detail.contains(part))
}
