//! Unit tests of the pure pre-flight checks.
use super::*;
use crate::crd::OutboxPipeline;
use crate::engine::{AwsClients, EngineConfig};

fn pipeline(extra: serde_json::Value) -> OutboxPipeline {
    let mut doc = serde_json::json!({
        "apiVersion": "outbox.dev/v1alpha1",
        "kind": "OutboxPipeline",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "table": {"partitionKey": {"name": "id", "type": "S"}},
            "relay": {"events": [{"change": "INSERT", "source": "a", "detailType": "B", "payload": "newImage"}]}
        }
    });
    if let (Some(spec), serde_json::Value::Object(extra)) = (doc["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    serde_json::from_value(doc).expect("pipeline")
}

fn with_ctx<T>(p: &OutboxPipeline, cluster: &str, f: impl FnOnce(&Ctx<'_>) -> T) -> T {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_types::region::Region::new("us-east-1"))
        .build();
    let clients = AwsClients::from_conf(&sdk);
    let config = EngineConfig {
        cluster_id: cluster.into(),
        allow_adoption: false,
        allow_delete_adopted_tables: false,
        permissions_boundary_arn: None,
        artifacts_dir: "/nonexistent".into(),
    };
    let artifacts = std::sync::Arc::default();
    let ctx = Ctx::new(&clients, &config, &artifacts, p, false);
    f(&ctx)
}

fn message(r: Result<(), Failure>) -> String {
    match r {
        Err((_, EngineError::InvalidSpec { message })) => message,
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

fn consumers(list: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"consumers": list})
}

#[test]
fn the_opt_in_tag_lists_pipelines_or_allows_all() {
    assert!(allows("team/a default/p", "default/p"));
    assert!(allows("all", "default/p"));
    assert!(!allows("default/pp other/p", "default/p"));
    assert!(!allows("", "default/p"));
}

#[test]
fn targets_in_another_region_are_refused_naming_field_and_arn() {
    let arn = "arn:aws:sqs:eu-west-1:123456789012:q";
    let p = pipeline(consumers(serde_json::json!([
        {"name": "a", "eventPattern": {"source": ["x"]}},
        {"name": "b", "eventPattern": {"source": ["x"]}, "target": {"sqsQueueArn": arn}}
    ])));
    let m = message(with_ctx(&p, "c", |ctx| arns(ctx, "us-east-1", None)));
    assert!(
        m.contains("spec.consumers[1].target.sqsQueueArn") && m.contains(arn),
        "{m}"
    );
    assert!(m.contains("eu-west-1"), "{m}");
    let f = "arn:aws:lambda:eu-west-1:123456789012:function:f";
    let p = pipeline(consumers(serde_json::json!([
        {"name": "a", "eventPattern": {"source": ["x"]}, "target": {"lambdaFunctionArn": f}}
    ])));
    let m = message(with_ctx(&p, "c", |ctx| arns(ctx, "us-east-1", None)));
    assert!(
        m.contains("spec.consumers[0].target.lambdaFunctionArn") && m.contains(f),
        "{m}"
    );
}

#[test]
fn destinations_in_another_account_are_refused() {
    let arn = "arn:aws:sqs:us-east-1:999999999999:q";
    let p = pipeline(serde_json::json!({"relay": {
        "events": [{"change": "INSERT", "source": "a", "detailType": "B", "payload": "newImage"}],
        "onFailureDestinationArn": arn
    }}));
    let m = message(with_ctx(&p, "c", |ctx| {
        arns(ctx, "us-east-1", Some("123456789012"))
    }));
    assert!(
        m.contains("spec.relay.onFailureDestinationArn") && m.contains(arn),
        "{m}"
    );
    assert!(
        m.contains("999999999999") && m.contains("123456789012"),
        "{m}"
    );
    // Same account and region: fine; an S3 bucket ARN carries neither.
    let ok = pipeline(serde_json::json!({"relay": {
        "events": [{"change": "INSERT", "source": "a", "detailType": "B", "payload": "newImage"}],
        "onFailureDestinationArn": "arn:aws:s3:::bucket"
    }}));
    assert!(with_ctx(&ok, "c", |ctx| arns(ctx, "us-east-1", Some("123456789012"))).is_ok());
    let dlq = "arn:aws:sqs:us-east-1:999999999999:dlq";
    let p = pipeline(consumers(serde_json::json!([
        {"name": "a", "eventPattern": {"source": ["x"]}, "deadLetterArn": dlq}
    ])));
    let m = message(with_ctx(&p, "c", |ctx| {
        arns(ctx, "us-east-1", Some("123456789012"))
    }));
    assert!(m.contains("spec.consumers[0].deadLetterArn"), "{m}");
}

#[test]
fn wrong_service_and_garbage_arns_are_refused() {
    let p = pipeline(consumers(serde_json::json!([
        {"name": "a", "eventPattern": {"source": ["x"]}, "target": {"sqsQueueArn": "arn:aws:sns:us-east-1:1:t"}}
    ])));
    assert!(message(with_ctx(&p, "c", |ctx| arns(ctx, "us-east-1", None))).contains("sns ARN"));
    let p = pipeline(consumers(serde_json::json!([
        {"name": "a", "eventPattern": {"source": ["x"]}, "target": {"lambdaFunctionArn": "my-fn"}}
    ])));
    assert!(message(with_ctx(&p, "c", |ctx| arns(ctx, "us-east-1", None))).contains("not an ARN"));
}

#[test]
fn an_over_long_cluster_id_is_refused_naming_the_flag() {
    let p = pipeline(serde_json::json!({}));
    let m = message(with_ctx(&p, &"k".repeat(300), tags));
    assert!(m.contains("--cluster-id") && m.contains("256"), "{m}");
    assert!(with_ctx(&p, "c", tags).is_ok());
}

#[test]
fn bad_table_and_bus_names_are_refused() {
    let p = pipeline(
        serde_json::json!({"table": {"name": "a b", "partitionKey": {"name": "id", "type": "S"}}}),
    );
    assert!(message(with_ctx(&p, "c", names)).contains("spec.table.name"));
    let p = pipeline(serde_json::json!({"bus": {"name": "default"}}));
    assert!(message(with_ctx(&p, "c", names)).contains("spec.bus.name"));
    assert!(with_ctx(&pipeline(serde_json::json!({})), "c", names).is_ok());
}

#[test]
fn a_missing_artifact_names_the_path_and_architecture() {
    let p = pipeline(serde_json::json!({}));
    let m = message(with_ctx(&p, "c", artifacts));
    assert!(m.contains("/nonexistent/x86_64/relay/bootstrap.zip"), "{m}");
}

#[test]
fn arm64_without_its_zips_is_refused_as_unavailable_before_any_change() {
    let mut p = pipeline(serde_json::json!({}));
    p.spec.relay.architecture = Architecture::Arm64;
    let m = message(with_ctx(&p, "c", artifacts));
    assert!(m.contains("/nonexistent/arm64/relay/bootstrap.zip"), "{m}");
    assert!(
        m.contains("arm64 is not available from this operator"),
        "{m}"
    );
    assert!(m.contains("spec.relay.architecture"), "{m}");
}

#[test]
fn qualifiers_are_cut_for_list_tags() {
    assert_eq!(
        unqualified("arn:aws:lambda:us-east-1:1:function:f:live"),
        "arn:aws:lambda:us-east-1:1:function:f"
    );
    assert_eq!(
        unqualified("arn:aws:lambda:us-east-1:1:function:f"),
        "arn:aws:lambda:us-east-1:1:function:f"
    );
}
