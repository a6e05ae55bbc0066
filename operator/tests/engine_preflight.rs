//! Wire tests of the engine's pre-flight against moto server: an invalid pipeline fails before
//! anything is created (zero mutating calls), `plan` reports the same error, and the checks that
//! need a read (user functions, the bus, the boundary policy) see what AWS has.
//!
//! Needs OUTBOX_TEST_ENDPOINT like engine_moto.rs; every test uses its own cluster id and names.

mod common;
use common::{emulator_sdk, endpoint, engine_config, fixtures, record_calls, unique};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use outbox_operator::crd::{OutboxPipeline, Reason};
use outbox_operator::engine::{
    AwsClients, CallInfo, Engine, EngineConfig, EngineError, Outcome, names::Names,
    preflight::ALLOW_PIPELINES_TAG,
};

struct Harness {
    engine: Engine,
    clients: AwsClients,
    calls: Arc<Mutex<Vec<CallInfo>>>,
}

struct Settings {
    cluster_id: String,
    boundary: Option<String>,
    artifacts_dir: PathBuf,
}

impl Settings {
    fn new(cluster_id: &str) -> Settings {
        Settings {
            cluster_id: cluster_id.to_owned(),
            boundary: None,
            artifacts_dir: fixtures(),
        }
    }
}

impl Harness {
    async fn new(endpoint: &str, s: Settings) -> Harness {
        let sdk = emulator_sdk(endpoint).await;
        let calls: Arc<Mutex<Vec<CallInfo>>> = Arc::default();
        let sink = calls.clone();
        let engine = Engine::new(
            &sdk,
            EngineConfig {
                permissions_boundary_arn: s.boundary,
                artifacts_dir: s.artifacts_dir,
                ..engine_config(&s.cluster_id)
            },
        )
        .with_call_observer(record_calls(vec![sink]));
        Harness {
            engine,
            clients: AwsClients::from_conf(&sdk),
            calls,
        }
    }

    fn mutating(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.mutating)
            .map(|c| format!("{}:{}", c.service, c.operation))
            .collect()
    }

    /// apply fails with `reason` and a message containing every `parts`, having changed nothing;
    /// plan fails with the same error. Returns the message.
    async fn refused(&self, p: &OutboxPipeline, reason: Reason, parts: &[&str]) -> String {
        let out: Outcome = self.engine.reconcile(p).await;
        let err = out.error.clone().expect("apply should fail");
        assert_eq!(err.reason(), reason, "{err}");
        let message = err.to_string();
        for part in parts {
            assert!(message.contains(part), "{message} lacks {part}");
        }
        assert_eq!(self.mutating(), Vec::<String>::new(), "{message}");
        assert_eq!(out.requeue_after, None);
        let plan: Result<_, EngineError> = self.engine.plan(p).await;
        let plan_err = plan.expect_err("plan should fail");
        assert_eq!(plan_err.to_string(), message);
        let names = Names::new(&self.engine.config().cluster_id, p);
        let table = self
            .clients
            .dynamodb
            .describe_table()
            .table_name(&names.table)
            .send()
            .await;
        assert!(table.is_err(), "table {} was created", names.table);
        message
    }
}

fn pipeline(id: &str, consumers: serde_json::Value) -> OutboxPipeline {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "outbox.dev/v1alpha1",
        "kind": "OutboxPipeline",
        "metadata": {"name": format!("pf-{id}"), "namespace": "default", "generation": 1},
        "spec": {
            "table": {"partitionKey": {"name": "id", "type": "S"}},
            "bus": {"name": format!("bus-{id}")},
            "relay": {"events": [{"change": "INSERT", "source": "myapp", "detailType": "Created", "payload": "newImage"}]},
            "consumers": consumers
        }
    }))
    .expect("pipeline")
}

fn consumer(pattern: serde_json::Value, target: serde_json::Value) -> serde_json::Value {
    serde_json::json!([{"name": "c1", "eventPattern": pattern, "target": target}])
}

/// A function of the user's (not the pipeline's), with the given tags.
async fn user_function(h: &Harness, id: &str, tags: &[(&str, &str)]) -> String {
    let c = &h.clients;
    let role = c
        .iam
        .create_role()
        .role_name(format!("pf-role-{id}"))
        .assume_role_policy_document(outbox_operator::engine::iam::trust_policy().to_string())
        .send()
        .await
        .unwrap();
    let zip = std::fs::read(fixtures().join("x86_64/consumer/bootstrap.zip")).unwrap();
    let mut req = c
        .lambda
        .create_function()
        .function_name(format!("pf-user-{id}"))
        .runtime(aws_sdk_lambda::types::Runtime::from("provided.al2023"))
        .handler("bootstrap")
        .role(role.role().unwrap().arn())
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(zip))
                .build(),
        );
    for (k, v) in tags {
        req = req.tags(*k, *v);
    }
    req.send().await.unwrap().function_arn().unwrap().to_owned()
}

async fn invoke_statements(h: &Harness, function: &str) -> usize {
    match h
        .clients
        .lambda
        .get_policy()
        .function_name(function)
        .send()
        .await
    {
        Ok(p) => p
            .policy()
            .unwrap_or_default()
            .matches("events.amazonaws.com")
            .count(),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn patterns_eventbridge_rejects_create_nothing_and_plan_says_the_same() {
    let Some(ep) = endpoint() else { return };
    for (i, (pattern, path)) in [
        (serde_json::json!({"source": "x"}), "eventPattern.source"),
        (serde_json::json!({}), "eventPattern must not be empty"),
        (serde_json::json!({"source": [{"prefx": "a"}]}), "prefx"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = unique(&format!("pat{i}"));
        let h = Harness::new(&ep, Settings::new(&format!("cl-{id}"))).await;
        let p = pipeline(&id, consumer(pattern, serde_json::json!({})));
        h.refused(&p, Reason::InvalidSpec, &["spec.consumers[0]", path])
            .await;
    }
}

#[tokio::test]
async fn an_untagged_user_function_is_refused_and_a_tagged_one_gets_the_permission() {
    let Some(ep) = endpoint() else { return };
    let id = unique("optin");
    let h = Harness::new(&ep, Settings::new(&format!("cl-{id}"))).await;
    let untagged = user_function(&h, &format!("{id}-u"), &[]).await;
    let p = pipeline(
        &id,
        consumer(
            serde_json::json!({"source": ["myapp"]}),
            serde_json::json!({"lambdaFunctionArn": untagged}),
        ),
    );
    let key = format!("default/pf-{id}");
    h.refused(
        &p,
        Reason::InvalidSpec,
        &[
            "spec.consumers[0].target.lambdaFunctionArn",
            &untagged,
            &format!("{ALLOW_PIPELINES_TAG}={key}"),
        ],
    )
    .await;
    assert_eq!(invoke_statements(&h, &untagged).await, 0);

    // Another pipeline's key does not allow this one; its own key in a list does.
    let other = user_function(
        &h,
        &format!("{id}-o"),
        &[(ALLOW_PIPELINES_TAG, "default/else")],
    )
    .await;
    let mut p2 = p.clone();
    p2.spec.consumers[0].target.lambda_function_arn = Some(other);
    h.refused(&p2, Reason::InvalidSpec, &[ALLOW_PIPELINES_TAG])
        .await;

    let listed = format!("default/else {key}");
    let tagged = user_function(&h, &format!("{id}-t"), &[(ALLOW_PIPELINES_TAG, &listed)]).await;
    let mut p3 = p.clone();
    p3.spec.consumers[0].target.lambda_function_arn = Some(tagged.clone());
    let mut out = h.engine.reconcile(&p3).await;
    for _ in 0..4 {
        if out.error.is_none() && out.requeue_after.is_none() {
            break;
        }
        out = h.engine.reconcile(&p3).await;
    }
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(invoke_statements(&h, &tagged).await, 1);
}

#[tokio::test]
async fn targets_elsewhere_and_missing_functions_and_queues_are_refused_before_anything_is_created()
{
    let Some(ep) = endpoint() else { return };
    let cases = [
        (
            serde_json::json!({"lambdaFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:f"}),
            vec!["spec.consumers[0].target.lambdaFunctionArn", "eu-west-1"],
        ),
        (
            serde_json::json!({"lambdaFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:pf-nope"}),
            vec!["function:pf-nope does not exist"],
        ),
        (
            serde_json::json!({"sqsQueueArn": "arn:aws:sqs:us-east-1:123456789012:pf-no-queue"}),
            vec![
                "spec.consumers[0].target.sqsQueueArn",
                "sqs:us-east-1:123456789012:pf-no-queue does not exist",
            ],
        ),
        (
            serde_json::json!({"sqsQueueArn": "arn:aws:sqs:eu-west-1:123456789012:q"}),
            vec![
                "spec.consumers[0].target.sqsQueueArn",
                "arn:aws:sqs:eu-west-1:123456789012:q",
            ],
        ),
    ];
    for (i, (target, parts)) in cases.into_iter().enumerate() {
        let id = unique(&format!("tgt{i}"));
        let h = Harness::new(&ep, Settings::new(&format!("cl-{id}"))).await;
        let p = pipeline(
            &id,
            consumer(serde_json::json!({"source": ["myapp"]}), target),
        );
        h.refused(&p, Reason::InvalidSpec, &parts).await;
    }
}

#[tokio::test]
async fn a_failure_destination_in_another_account_is_refused() {
    let Some(ep) = endpoint() else { return };
    let id = unique("acct");
    let h = Harness::new(&ep, Settings::new(&format!("cl-{id}"))).await;
    let mut p = pipeline(&id, serde_json::json!([]));
    let foreign = "arn:aws:sqs:us-east-1:999999999999:theirs";
    p.spec.relay.on_failure_destination_arn = Some(foreign.into());
    h.refused(
        &p,
        Reason::InvalidSpec,
        &[
            "spec.relay.onFailureDestinationArn",
            foreign,
            "123456789012",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_foreign_bus_of_the_same_name_is_a_conflict_before_anything_is_created() {
    let Some(ep) = endpoint() else { return };
    let id = unique("bus");
    let h = Harness::new(&ep, Settings::new(&format!("cl-{id}"))).await;
    let p = pipeline(&id, serde_json::json!([]));
    h.clients
        .eventbridge
        .create_event_bus()
        .name(format!("bus-{id}"))
        .send()
        .await
        .unwrap();
    h.refused(&p, Reason::Conflict, &[&format!("bus-{id}")])
        .await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn a_missing_arm64_artifact_is_refused_before_anything_is_created() {
    let Some(ep) = endpoint() else { return };
    let id = unique("arm");
    let dir = std::env::temp_dir().join(format!("outbox-pf-{id}"));
    copy_dir(&fixtures().join("x86_64"), &dir.join("x86_64"));
    let mut s = Settings::new(&format!("cl-{id}"));
    s.artifacts_dir = dir.clone();
    let h = Harness::new(&ep, s).await;
    let mut p = pipeline(&id, serde_json::json!([]));
    p.spec.relay.architecture = outbox_operator::crd::Architecture::Arm64;
    h.refused(&p, Reason::InvalidSpec, &["arm64/relay/bootstrap.zip"])
        .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_nonexistent_boundary_policy_is_refused_before_anything_is_created() {
    let Some(ep) = endpoint() else { return };
    let id = unique("bnd");
    let arn = format!("arn:aws:iam::123456789012:policy/pf-missing-{id}");
    let mut s = Settings::new(&format!("cl-{id}"));
    s.boundary = Some(arn.clone());
    let h = Harness::new(&ep, s).await;
    let p = pipeline(&id, serde_json::json!([]));
    h.refused(
        &p,
        Reason::InvalidSpec,
        &["--permissions-boundary-arn", &arn],
    )
    .await;
}

#[tokio::test]
async fn an_over_long_cluster_id_is_refused_before_anything_is_created() {
    let Some(ep) = endpoint() else { return };
    let id = unique("cid");
    let h = Harness::new(&ep, Settings::new(&format!("cl-{id}-{}", "x".repeat(300)))).await;
    let p = pipeline(&id, serde_json::json!([]));
    h.refused(&p, Reason::InvalidSpec, &["--cluster-id"]).await;
}
