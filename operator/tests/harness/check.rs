//! Reads every resource of a converged pipeline back from AWS and checks it against the spec.

use outbox_operator::crd::{ConditionType, OutboxPipeline, Reason};
use outbox_operator::engine::{Outcome, function, names::Names, tags};

use std::collections::BTreeMap;

use super::{Harness, tags_of_table};
use crate::common::fixtures;

/// Reads every resource back from AWS and checks it against the spec.
pub async fn check_pipeline(h: &Harness, p: &OutboxPipeline, cluster: &str, out: &Outcome) {
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
    if r.events.iter().all(|e| e.matches.is_none()) {
        assert_eq!(filters.len(), 1);
        let pattern: serde_json::Value =
            serde_json::from_str(filters[0].pattern().unwrap()).unwrap();
        let mut wanted: Vec<&str> = r.events.iter().map(|e| e.change.as_str()).collect();
        wanted.sort();
        assert_eq!(pattern, serde_json::json!({"eventName": wanted}));
    } else {
        // Routed entries: the single-table tests check the exact patterns.
        assert!(!filters.is_empty() && filters.len() <= 5, "{filters:?}");
    }
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
}
