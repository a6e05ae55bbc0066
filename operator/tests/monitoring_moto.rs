//! Wire tests of the monitoring resources against moto: the functions' log groups (created with
//! the spec's retention, repaired, deleted with the function, a foreign group left alone and
//! named) and the pipeline's CloudWatch alarms (created with the spec's settings, repaired after
//! tampering, removed when monitoring is switched off and with the pipeline).
//!
//! Needs OUTBOX_TEST_ENDPOINT (see engine_moto.rs).

mod common;
mod harness;
use std::collections::BTreeMap;

use common::{endpoint, unique};
use harness::*;

use outbox_operator::engine::names::Names;
use outbox_operator::engine::{AwsClients, Verb};

/// (retention days, tags) of a log group, None when absent.
async fn log_group(c: &AwsClients, name: &str) -> Option<(Option<i32>, BTreeMap<String, String>)> {
    let out = c
        .logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .unwrap();
    let g = out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name))?;
    let tags = c
        .logs
        .list_tags_for_resource()
        .resource_arn(g.log_group_arn().unwrap())
        .send()
        .await
        .unwrap()
        .tags()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Some((g.retention_in_days(), tags))
}

async fn alarm(c: &AwsClients, name: &str) -> Option<aws_sdk_cloudwatch::types::MetricAlarm> {
    let out = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .unwrap();
    out.metric_alarms()
        .iter()
        .find(|m| m.alarm_name() == Some(name))
        .cloned()
}

#[tokio::test]
async fn log_groups_get_the_spec_retention_are_repaired_and_go_with_their_functions() {
    let Some(ep) = endpoint() else { return };
    let id = unique("lg");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let mut p = example("user-created.yaml", &id);
    p.spec.monitoring.log_retention_days = 14;
    p.spec.table.deletion_policy = outbox_operator::crd::DeletionPolicy::Delete;
    p.spec.table.deletion_protection = false;
    let names = Names::new(&cluster, &p);
    let c = &h.clients;
    let relay_group = Names::log_group(&names.relay_function);
    let writer_group = Names::log_group(&names.writer_function);
    let consumer_group = Names::log_group(&names.consumer_function(&p.spec.consumers[0].name));

    let out = h.converge(&p).await;
    assert!(
        has_action(&out, Verb::Create, &relay_group),
        "{:#?}",
        out.actions
    );
    for g in [&relay_group, &writer_group, &consumer_group] {
        let (retention, tags) = log_group(c, g)
            .await
            .unwrap_or_else(|| panic!("{g} missing"));
        assert_eq!(retention, Some(14), "{g}");
        assert_eq!(
            tags.get("outbox.dev/pipeline").map(String::as_str),
            Some(
                p.metadata
                    .name
                    .as_deref()
                    .map(|n| format!("default/{n}"))
                    .unwrap()
                    .as_str()
            )
        );
    }
    h.assert_steady(&p).await;

    // Retention changed by hand: put back.
    c.logs
        .put_retention_policy()
        .log_group_name(&relay_group)
        .retention_in_days(3653)
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(
        has_action(&out, Verb::Update, &relay_group),
        "{:#?}",
        out.actions
    );
    assert_eq!(log_group(c, &relay_group).await.unwrap().0, Some(14));

    // The spec's retention changes: applied.
    p.spec.monitoring.log_retention_days = 7;
    h.converge(&p).await;
    assert_eq!(log_group(c, &writer_group).await.unwrap().0, Some(7));

    // The writer switched off: its function and its log group go.
    p.spec.writer.enabled = false;
    let out = h.converge(&p).await;
    assert!(
        has_action(&out, Verb::Delete, &writer_group),
        "{:#?}",
        out.actions
    );
    assert!(log_group(c, &writer_group).await.is_none());

    // Delete: every group of ours goes.
    let mut done = false;
    for _ in 0..5 {
        done = h.engine.delete(&p).await.expect("delete").done;
        if done {
            break;
        }
    }
    assert!(done);
    for g in [&relay_group, &consumer_group] {
        assert!(log_group(c, g).await.is_none(), "{g} left behind");
    }
    h.assert_policy_covers_calls();
}

#[tokio::test]
async fn a_log_group_without_our_tags_is_left_alone_and_named_in_the_status() {
    let Some(ep) = endpoint() else { return };
    let id = unique("lgf");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("user-created.yaml", &id);
    let names = Names::new(&cluster, &p);
    let c = &h.clients;
    // What Lambda itself creates on a first invocation: no tags, no retention.
    let relay_group = Names::log_group(&names.relay_function);
    c.logs
        .create_log_group()
        .log_group_name(&relay_group)
        .send()
        .await
        .unwrap();

    let out = h.converge(&p).await;
    assert!(
        !out.actions
            .iter()
            .any(|a| a.resource.contains(&relay_group)),
        "{:#?}",
        out.actions
    );
    assert!(
        out.status
            .required_actions
            .iter()
            .any(|r| r.contains(&relay_group) && r.contains("left alone")),
        "{:#?}",
        out.status.required_actions
    );
    let (retention, tags) = log_group(c, &relay_group).await.unwrap();
    assert_eq!(retention, None);
    assert!(tags.is_empty());
    // The other functions' groups are ours.
    assert_eq!(
        log_group(c, &Names::log_group(&names.writer_function))
            .await
            .unwrap()
            .0,
        Some(30)
    );
    h.assert_steady(&p).await;
    // Delete leaves it.
    h.engine.delete(&p).await.expect("delete");
    assert!(log_group(c, &relay_group).await.is_some());
}

#[tokio::test]
async fn alarms_follow_the_spec_are_repaired_and_go_when_monitoring_is_switched_off() {
    let Some(ep) = endpoint() else { return };
    let id = unique("al");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let c = &h.clients;
    let dlq = format!("dlq-{id}");
    c.sqs.create_queue().queue_name(&dlq).send().await.unwrap();
    let mut p = example("user-created.yaml", &id);
    p.spec.consumers[0].dead_letter_arn = Some(format!("arn:aws:sqs:us-east-1:123456789012:{dlq}"));
    p.spec.monitoring.max_lag_seconds = 120;
    let topic = "arn:aws:sns:us-east-1:123456789012:oncall".to_owned();
    p.spec.monitoring.alarm_actions = vec![topic.clone()];
    let names = Names::new(&cluster, &p);
    let consumer = p.spec.consumers[0].name.clone();

    h.converge(&p).await;
    let lag = alarm(c, &names.alarm("relay-iterator-age"))
        .await
        .expect("lag alarm");
    assert_eq!(lag.metric_name(), Some("IteratorAge"));
    assert_eq!(lag.namespace(), Some("AWS/Lambda"));
    assert_eq!(lag.threshold(), Some(120_000.0));
    assert_eq!(lag.period(), Some(60));
    assert_eq!(lag.evaluation_periods(), Some(5));
    assert_eq!(lag.datapoints_to_alarm(), Some(3));
    assert_eq!(lag.alarm_actions(), std::slice::from_ref(&topic));
    assert_eq!(lag.treat_missing_data(), Some("notBreaching"));
    assert_eq!(
        lag.comparison_operator(),
        Some(&aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
    );
    assert_eq!(
        lag.dimensions()[0].value(),
        Some(names.relay_function.as_str())
    );
    let errors = alarm(c, &names.alarm("relay-errors"))
        .await
        .expect("errors alarm");
    assert_eq!(errors.metric_name(), Some("Errors"));
    assert_eq!(errors.period(), Some(900));
    let failed = alarm(c, &names.alarm(&format!("c-{consumer}-failed")))
        .await
        .expect("consumer alarm");
    assert_eq!(failed.metric_name(), Some("FailedInvocations"));
    assert!(
        failed
            .dimensions()
            .iter()
            .any(|d| d.value() == Some(names.rule(&consumer).as_str()))
    );
    let dlq_alarm = alarm(c, &names.alarm(&format!("c-{consumer}-dlq")))
        .await
        .expect("dead-letter alarm");
    assert_eq!(
        dlq_alarm.metric_name(),
        Some("ApproximateNumberOfMessagesVisible")
    );
    assert_eq!(dlq_alarm.dimensions()[0].value(), Some(dlq.as_str()));
    let tags = c
        .cloudwatch
        .list_tags_for_resource()
        .resource_arn(lag.alarm_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == Some("outbox.dev/managed-by"))
    );
    h.assert_steady(&p).await;

    // Tampered: threshold and actions changed by hand.
    c.cloudwatch
        .put_metric_alarm()
        .alarm_name(names.alarm("relay-iterator-age"))
        .namespace("AWS/Lambda")
        .metric_name("IteratorAge")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Maximum)
        .period(60)
        .evaluation_periods(5)
        .threshold(999_999.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    // Deleted by hand.
    c.cloudwatch
        .delete_alarms()
        .alarm_names(names.alarm("relay-errors"))
        .send()
        .await
        .unwrap();
    let out = h.engine.reconcile(&p).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(
        has_action(&out, Verb::Update, "relay-iterator-age"),
        "{:#?}",
        out.actions
    );
    assert!(
        has_action(&out, Verb::Create, "relay-errors"),
        "{:#?}",
        out.actions
    );
    let lag = alarm(c, &names.alarm("relay-iterator-age")).await.unwrap();
    assert_eq!(lag.threshold(), Some(120_000.0));
    assert_eq!(lag.alarm_actions(), [topic]);
    h.assert_steady(&p).await;

    // The dead-letter queue leaves the spec: its alarm goes.
    p.spec.consumers[0].dead_letter_arn = None;
    let out = h.converge(&p).await;
    assert!(has_action(&out, Verb::Delete, "-dlq"), "{:#?}", out.actions);
    assert!(
        alarm(c, &names.alarm(&format!("c-{consumer}-dlq")))
            .await
            .is_none()
    );

    // Monitoring switched off: every alarm goes, nothing else changes.
    p.spec.monitoring.enabled = false;
    let out = h.converge(&p).await;
    assert!(
        out.actions
            .iter()
            .all(|a| a.verb == Verb::Delete && a.resource.starts_with("cloudwatch alarm")),
        "{:#?}",
        out.actions
    );
    assert!(alarm(c, &names.alarm("relay-iterator-age")).await.is_none());
    assert!(alarm(c, &names.alarm("relay-errors")).await.is_none());
    h.assert_steady(&p).await;

    // Switched on again, then the pipeline deleted: its alarms go with it.
    p.spec.monitoring.enabled = true;
    h.converge(&p).await;
    assert!(alarm(c, &names.alarm("relay-errors")).await.is_some());
    h.engine.delete(&p).await.expect("delete");
    assert!(alarm(c, &names.alarm("relay-errors")).await.is_none());
    assert!(
        alarm(c, &names.alarm(&format!("c-{consumer}-failed")))
            .await
            .is_none()
    );
    h.assert_policy_covers_calls();
}

/// Puts one datapoint of a relay metric now, the way Lambda would.
async fn put_relay_metric(c: &AwsClients, function: &str, metric: &str, value: f64) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let datum = MetricDatum::builder()
        .metric_name(metric)
        .dimensions(
            Dimension::builder()
                .name("FunctionName")
                .value(function)
                .build(),
        )
        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
            std::time::SystemTime::now(),
        ))
        .value(value)
        .build();
    c.cloudwatch
        .put_metric_data()
        .namespace("AWS/Lambda")
        .metric_data(datum)
        .send()
        .await
        .unwrap();
}

fn healthy(status: &outbox_operator::crd::OutboxPipelineStatus) -> (String, String, String) {
    let c = status
        .condition(outbox_operator::crd::ConditionType::Healthy)
        .unwrap_or_else(|| panic!("no Healthy in {status:#?}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn healthy_follows_the_relay_metrics_and_a_steady_pass_still_mutates_nothing() {
    let Some(ep) = endpoint() else { return };
    let id = unique("hm");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("user-created.yaml", &id);
    let names = Names::new(&cluster, &p);
    let c = &h.clients;

    let out = h.converge(&p).await;
    let (status, reason, _) = healthy(&out.status);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Idle"));
    let dp = out.status.data_plane.clone().expect("dataPlane");
    assert!(dp.mapping_state.is_some(), "{dp:?}");
    assert_eq!(dp.parked_batches.as_deref(), Some("0"));

    // Records flow, 2 s behind.
    put_relay_metric(c, &names.relay_function, "IteratorAge", 2_000.0).await;
    let st = h.engine.status(&p).await.expect("status");
    let (_, reason, _) = healthy(&st);
    assert_eq!(reason, "Flowing");

    // The stream backs up: 7 minutes behind (over the default 300 s).
    put_relay_metric(c, &names.relay_function, "IteratorAge", 420_000.0).await;
    h.take_calls();
    let out = h.engine.reconcile(&p).await;
    assert!(
        out.status.is_ready(),
        "Healthy is apart from Ready: {:#?}",
        out.status
    );
    let (status, reason, message) = healthy(&out.status);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Lagging"),
        "{message}"
    );
    assert_eq!(
        out.status
            .data_plane
            .as_ref()
            .and_then(|d| d.iterator_age_seconds),
        Some(420)
    );
    let mutating: Vec<String> = h
        .take_calls()
        .into_iter()
        .filter(|c| c.mutating)
        .map(|c| c.operation)
        .collect();
    assert!(
        mutating.is_empty(),
        "health made mutating calls: {mutating:?}"
    );

    // The relay fails: RelayFailing outranks the lag.
    put_relay_metric(c, &names.relay_function, "Errors", 2.0).await;
    let st = h.engine.status(&p).await.expect("status");
    let (status, reason, message) = healthy(&st);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RelayFailing")
    );
    assert!(message.contains("failed 2 invocations"), "{message}");
    h.assert_steady(&p).await;
    h.assert_policy_covers_calls();
}

#[tokio::test]
async fn a_batch_parked_in_the_failure_bucket_is_batches_parked() {
    let Some(ep) = endpoint() else { return };
    let id = unique("hp");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let p = example("user-created.yaml", &id);
    let out = h.converge(&p).await;
    let bucket = out
        .status
        .failure_destination_arn
        .clone()
        .expect("failure bucket")
        .trim_start_matches("arn:aws:s3:::")
        .to_owned();
    // What Lambda writes for a batch the relay could not publish.
    h.clients
        .s3
        .put_object()
        .bucket(&bucket)
        .key("aws/lambda/batch-1")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
        .send()
        .await
        .unwrap();
    let st = h.engine.status(&p).await.expect("status");
    let (status, reason, message) = healthy(&st);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "BatchesParked")
    );
    assert!(message.starts_with("1 failed batches"), "{message}");
    let dp = st.data_plane.expect("dataPlane");
    assert_eq!(dp.parked_batches.as_deref(), Some("1"));
    assert!(dp.newest_parked_at.is_some());
    h.assert_policy_covers_calls();
}
