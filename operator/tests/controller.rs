//! The controller against a mocked Kubernetes API server (kube-rs's ApiServerVerifier pattern:
//! `tower_test::mock::pair` stands in for the API server, records every request the controller
//! makes and answers as the API server would), and the metrics endpoint on a real socket.
//!
//! The AWS side is a fake: [`FakeEngine`] implements the engine's `Reconciler` trait with
//! scripted outcomes and counts its calls. No AWS, no moto: what is tested here is the Kubernetes
//! glue (finalizer, status, Events, requeue and backoff, pause, malformed objects).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{Method, Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use outbox_operator::controller::{
    self, BACKOFF_BASE, BACKOFF_MAX, Context, Error, FIELD_MANAGER, Watched, error_policy,
    reconcile,
};
use outbox_operator::crd::{
    ConditionType, FINALIZER, OutboxPipeline, OutboxPipelineStatus, PAUSED_ANNOTATION, Reason,
};
use outbox_operator::engine::replay::{Batch, BatchOutcome, ReplayError, Report};
use outbox_operator::engine::{
    AwsAction, Component, DeleteOutcome, EngineError, ErrorClass, Fence, Outcome, Reconciler, Verb,
};
use outbox_operator::metrics::{Metrics, Readiness};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const RESYNC: Duration = Duration::from_secs(300);
const PIPELINE_PATH: &str = "/apis/outbox.dev/v1alpha1/namespaces/default/outboxpipelines/users";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

// ---------------------------------------------------------------------------------------------
// The fake AWS side

type ReconcileFn = Box<dyn Fn(&OutboxPipeline) -> Outcome + Send + Sync>;
type DeleteFn = Box<dyn Fn() -> Result<DeleteOutcome, EngineError> + Send + Sync>;

#[derive(Default)]
struct EngineCalls {
    reconcile: AtomicUsize,
    delete: AtomicUsize,
    replay: AtomicUsize,
}

/// A fake engine: returns scripted outcomes, counts calls, never touches AWS.
struct FakeEngine {
    on_reconcile: ReconcileFn,
    on_delete: DeleteFn,
    calls: Arc<EngineCalls>,
    /// What a replay (annotation outbox.dev/replay) reports; None: the reconciler cannot.
    replay: Option<Report>,
}

impl FakeEngine {
    fn new(on_reconcile: ReconcileFn, on_delete: DeleteFn) -> Self {
        FakeEngine {
            on_reconcile,
            on_delete,
            calls: Arc::default(),
            replay: None,
        }
    }

    /// An engine that must not be called (reconcile/delete panic the reconcile if it is).
    fn unused() -> Self {
        FakeEngine::new(
            Box::new(|_| panic!("the engine must not be called")),
            Box::new(|| panic!("the engine must not be called")),
        )
    }
}

impl Reconciler for FakeEngine {
    async fn reconcile(&self, pipeline: &OutboxPipeline) -> Outcome {
        self.calls.reconcile.fetch_add(1, Ordering::SeqCst);
        (self.on_reconcile)(pipeline)
    }

    async fn delete(&self, _: &OutboxPipeline) -> Result<DeleteOutcome, EngineError> {
        self.calls.delete.fetch_add(1, Ordering::SeqCst);
        (self.on_delete)()
    }

    async fn replay(&self, _: &OutboxPipeline) -> Result<Report, ReplayError> {
        self.calls.replay.fetch_add(1, Ordering::SeqCst);
        self.replay.clone().ok_or(ReplayError::Unavailable)
    }
}

fn ready_status(generation: Option<i64>) -> OutboxPipelineStatus {
    let mut status = OutboxPipelineStatus {
        table_name: Some("outbox-c1-default-users".into()),
        table_arn: Some(
            "arn:aws:dynamodb:eu-west-1:123456789012:table/outbox-c1-default-users".into(),
        ),
        bus_arn: Some("arn:aws:events:eu-west-1:123456789012:event-bus/users".into()),
        relay_function_arn: Some(
            "arn:aws:lambda:eu-west-1:123456789012:function:outbox-c1-default-users-relay".into(),
        ),
        ..OutboxPipelineStatus::default()
    };
    for t in [ConditionType::Ready]
        .into_iter()
        .chain(ConditionType::COMPONENTS)
    {
        status.set_condition(
            t,
            true,
            Reason::Reconciled,
            "",
            generation,
            "2026-01-01T00:00:00Z",
        );
    }
    status
}

fn create_table_action() -> AwsAction {
    AwsAction {
        component: Component::Table,
        verb: Verb::Create,
        resource: "dynamodb table outbox-c1-default-users".into(),
        detail: String::new(),
    }
}

fn aws_error(class: ErrorClass) -> EngineError {
    EngineError::Aws {
        resource: "lambda function outbox-c1-default-users-relay".into(),
        operation: "CreateFunction".into(),
        code: "ServiceException".into(),
        message: "internal error".into(),
        class,
    }
}

fn access_denied() -> EngineError {
    EngineError::AccessDenied {
        resource: "iam role outbox-c1-default-users-relay".into(),
        operation: "CreateRole".into(),
        code: "AccessDenied".into(),
        message: "not authorized to perform iam:CreateRole".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The mocked API server

fn pipeline_json() -> Value {
    let text = include_str!("fixtures/controller-pipeline.json");
    serde_json::from_str(text).expect("fixture is JSON")
}

fn with_finalizer(mut v: Value) -> Value {
    v["metadata"]["finalizers"] = json!([FINALIZER]);
    v
}

fn deleting(mut v: Value) -> Value {
    v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    v
}

fn paused(mut v: Value) -> Value {
    v["metadata"]["annotations"] = json!({ PAUSED_ANNOTATION: "true" });
    v
}

/// One request the controller made.
#[derive(Debug)]
struct Call {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

impl Call {
    fn is_status_apply(&self) -> bool {
        self.method == Method::PATCH
            && self.path == format!("{PIPELINE_PATH}/status")
            && self.content_type == "application/apply-patch+yaml"
            && self
                .query
                .contains(&format!("fieldManager={FIELD_MANAGER}"))
            && self.query.contains("force=true")
    }

    fn is_event(&self) -> bool {
        self.method == Method::POST && self.path == EVENTS_PATH
    }

    fn ready_condition(&self) -> Option<&Value> {
        self.body["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")
    }
}

struct Harness {
    ctx: Arc<Context<FakeEngine>>,
    engine: Arc<EngineCalls>,
    metrics: Arc<Metrics>,
    api_server: JoinHandle<Vec<Call>>,
}

impl Harness {
    /// A controller context whose client talks to a mock API server answering every pipeline
    /// request with `object` and every Event write with the Event itself.
    fn new(engine: FakeEngine, object: Value) -> Harness {
        Harness::with_fence(engine, object, None)
    }

    /// As [`Harness::new`], the context acting only while `fence` is up.
    fn with_fence(engine: FakeEngine, object: Value, fence: Option<Fence>) -> Harness {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let api_server = tokio::spawn(async move {
            let mut calls = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or("").to_owned();
                let content_type = request
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .expect("request body");
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let response = if path.starts_with(EVENTS_PATH) {
                    bytes.to_vec()
                } else {
                    serde_json::to_vec(&object).expect("object serializes")
                };
                send.send_response(
                    Response::builder()
                        .body(Body::from(response))
                        .expect("response"),
                );
                calls.push(Call {
                    method,
                    path,
                    query,
                    content_type,
                    body,
                });
            }
            calls
        });
        let metrics = Arc::new(Metrics::new());
        let engine_calls = engine.calls.clone();
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some("test".into()),
        };
        let mut ctx = Context::new(client, engine, reporter, metrics.clone(), RESYNC);
        if let Some(fence) = fence {
            ctx = ctx.with_fence(fence);
        }
        let ctx = Arc::new(ctx);
        Harness {
            ctx,
            engine: engine_calls,
            metrics,
            api_server,
        }
    }

    async fn reconcile(&self, object: &Value) -> Result<Action, Error> {
        reconcile(Arc::new(watched(object)), self.ctx.clone()).await
    }

    fn error_policy(&self, object: &Value, error: &Error) -> Action {
        error_policy(Arc::new(watched(object)), error, self.ctx.clone())
    }

    /// Drops the client (closing the mock) and returns every request made except the pipeline
    /// GET each apply pass makes before its AWS changes (see [`Harness::finish_all`]).
    async fn finish(self) -> Vec<Call> {
        self.finish_all()
            .await
            .into_iter()
            .filter(|c| !(c.method == Method::GET && c.path == PIPELINE_PATH))
            .collect()
    }

    /// Drops the client (closing the mock) and returns every request made.
    async fn finish_all(self) -> Vec<Call> {
        drop(self.ctx);
        self.api_server.await.expect("mock API server task")
    }
}

fn watched(object: &Value) -> Watched {
    serde_json::from_value::<DeserializeGuard<OutboxPipeline>>(object.clone())
        .expect("object has metadata")
}

fn metric(metrics: &Metrics, series: &str) -> Option<f64> {
    let text = metrics.encode().expect("metrics encode");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Controller behaviour

#[tokio::test]
async fn a_new_pipeline_gets_the_finalizer_before_any_aws_call() {
    let h = Harness::new(FakeEngine::unused(), pipeline_json());
    let action = h.reconcile(&pipeline_json()).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    let engine = h.engine.clone();
    let calls = h.finish().await;

    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call.method, Method::PATCH);
    assert_eq!(call.path, PIPELINE_PATH);
    assert_eq!(call.content_type, "application/json-patch+json");
    assert_eq!(
        call.body,
        json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
        ])
    );
    assert_eq!(engine.reconcile.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_successful_reconcile_applies_ready_status_with_arns_and_generation_then_posts_events() {
    let object = with_finalizer(pipeline_json());
    let engine = FakeEngine::new(
        Box::new(|p| Outcome {
            status: ready_status(p.metadata.generation),
            actions: vec![create_table_action()],
            requeue_after: None,
            error: None,
        }),
        Box::new(|| panic!("not deleting")),
    );
    let h = Harness::new(engine, object.clone());
    let action = h.reconcile(&object).await.expect("reconcile");
    // Converged: come back at the resync period to repair drift.
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(
        metric(&h.metrics, r#"outbox_pipelines{ready="true"}"#),
        Some(1.0)
    );
    assert_eq!(metric(&h.metrics, "outbox_reconciles_total"), Some(1.0));
    let calls = h.finish().await;

    assert_eq!(calls.len(), 2, "{calls:#?}");
    let status = &calls[0];
    assert!(status.is_status_apply(), "{status:#?}");
    assert_eq!(status.body["apiVersion"], "outbox.dev/v1alpha1");
    assert_eq!(status.body["kind"], "OutboxPipeline");
    assert_eq!(status.body["status"]["observedGeneration"], 2);
    assert_eq!(
        status.body["status"]["tableArn"],
        "arn:aws:dynamodb:eu-west-1:123456789012:table/outbox-c1-default-users"
    );
    assert_eq!(
        status.body["status"]["busArn"],
        "arn:aws:events:eu-west-1:123456789012:event-bus/users"
    );
    // The shape `kubectl wait --for=condition=Ready` reads.
    let ready = status.ready_condition().expect("Ready condition");
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], "Reconciled");

    let event = &calls[1];
    assert!(event.is_event(), "{event:#?}");
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(event.body["reason"], "Created");
    assert_eq!(event.body["reportingController"], FIELD_MANAGER);
    assert_eq!(event.body["regarding"]["name"], "users");
    assert!(
        event.body["note"]
            .as_str()
            .is_some_and(|n| n.contains("dynamodb table outbox-c1-default-users")),
        "{event:#?}"
    );
}

/// `status` with the Healthy condition set to (status, reason).
fn with_health(
    mut status: OutboxPipelineStatus,
    healthy: &str,
    reason: &str,
) -> OutboxPipelineStatus {
    status.put_condition(
        ConditionType::Healthy,
        healthy,
        reason,
        format!("{reason} for the test"),
        Some(2),
        "2026-01-01T00:00:00Z",
    );
    status
}

#[tokio::test]
async fn healthy_turning_false_posts_a_warning_event_and_sets_the_health_gauges() {
    let mut object = with_finalizer(pipeline_json());
    object["status"] =
        serde_json::to_value(with_health(ready_status(Some(2)), "True", "Flowing")).unwrap();
    let engine = FakeEngine::new(
        Box::new(|p| {
            let mut status = with_health(ready_status(p.metadata.generation), "False", "Lagging");
            status.data_plane = Some(outbox_operator::crd::DataPlaneStatus {
                checked_at: "2026-01-01T00:05:00Z".into(),
                iterator_age_seconds: Some(420),
                ..Default::default()
            });
            Outcome {
                status,
                actions: vec![],
                requeue_after: None,
                error: None,
            }
        }),
        Box::new(|| panic!("not deleting")),
    );
    let h = Harness::new(engine, object.clone());
    h.reconcile(&object).await.expect("reconcile");
    assert_eq!(
        metric(
            &h.metrics,
            r#"outbox_pipeline_healthy{pipeline="default/users"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &h.metrics,
            r#"outbox_pipeline_iterator_age_seconds{pipeline="default/users"}"#
        ),
        Some(420.0)
    );
    let calls = h.finish().await;
    let events: Vec<&Call> = calls.iter().filter(|c| c.is_event()).collect();
    assert_eq!(events.len(), 1, "{calls:#?}");
    let event = &events[0].body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "Lagging");
    assert_eq!(event["action"], "Health");
    assert!(
        event["note"]
            .as_str()
            .is_some_and(|n| n.contains("True (Flowing) -> False (Lagging)")),
        "{event:#?}"
    );
}

#[tokio::test]
async fn an_unchanged_healthy_condition_posts_no_event() {
    let mut object = with_finalizer(pipeline_json());
    object["status"] =
        serde_json::to_value(with_health(ready_status(Some(2)), "False", "Lagging")).unwrap();
    let engine = FakeEngine::new(
        Box::new(|p| Outcome {
            status: with_health(ready_status(p.metadata.generation), "False", "Lagging"),
            actions: vec![],
            requeue_after: None,
            error: None,
        }),
        Box::new(|| panic!("not deleting")),
    );
    let h = Harness::new(engine, object.clone());
    h.reconcile(&object).await.expect("reconcile");
    let calls = h.finish().await;
    assert!(!calls.iter().any(Call::is_event), "{calls:#?}");
}

#[tokio::test]
async fn an_unchanged_status_keeps_its_transition_times_and_is_not_written_again() {
    let mut object = with_finalizer(pipeline_json());
    let mut previous = ready_status(Some(2));
    previous.observed_generation = Some(2);
    for c in &mut previous.conditions {
        c.last_transition_time = Time("2025-06-01T10:00:00Z".parse().expect("timestamp"));
    }
    // The data-plane figures were first read long ago and read the same ever since.
    let figures = |checked_at: &str| outbox_operator::crd::DataPlaneStatus {
        checked_at: checked_at.into(),
        mapping_state: Some("Enabled".into()),
        iterator_age_seconds: Some(0),
        ..Default::default()
    };
    previous.data_plane = Some(figures("2025-06-01T10:00:00Z"));
    object["status"] = serde_json::to_value(&previous).expect("status");
    let engine = FakeEngine::new(
        // The engine stamps "now" on every condition it builds and on the figures it reads.
        Box::new(move |p| {
            let mut status = ready_status(p.metadata.generation);
            status.data_plane = Some(figures("2026-11-29T12:00:00Z"));
            Outcome {
                status,
                actions: vec![],
                requeue_after: None,
                error: None,
            }
        }),
        Box::new(|| panic!("not deleting")),
    );
    let h = Harness::new(engine, object.clone());
    h.reconcile(&object).await.expect("reconcile");
    assert_eq!(
        metric(&h.metrics, r#"outbox_pipelines{ready="true"}"#),
        Some(1.0),
        "the Ready gauge is kept without a write"
    );
    let calls = h.finish().await;
    // The status built equals the one stored (transition times kept) but for the time of the
    // figures' reading: a resync of a converged pipeline makes no Kubernetes write at all, however
    // long ago the figures were first read.
    assert!(calls.is_empty(), "{calls:#?}");
}

#[tokio::test]
async fn progressing_requeues_after_the_engines_hint() {
    let object = with_finalizer(pipeline_json());
    let engine = FakeEngine::new(
        Box::new(|p| {
            let mut status = OutboxPipelineStatus::default();
            status.set_condition(
                ConditionType::Ready,
                false,
                Reason::Progressing,
                "relay function is Pending",
                p.metadata.generation,
                "2026-01-01T00:00:00Z",
            );
            Outcome {
                status,
                actions: vec![],
                requeue_after: Some(Duration::from_secs(7)),
                error: None,
            }
        }),
        Box::new(|| panic!("not deleting")),
    );
    let h = Harness::new(engine, object.clone());
    let action = h.reconcile(&object).await.expect("reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(7)));
    let calls = h.finish().await;
    assert_eq!(
        calls.len(),
        1,
        "status only, no Event without a change: {calls:#?}"
    );
    assert_eq!(
        calls[0].ready_condition().map(|c| c["reason"].clone()),
        Some(json!("Progressing"))
    );
}

#[tokio::test]
async fn an_engine_error_becomes_a_false_ready_condition_and_a_warning_event_and_backs_off() {
    let object = with_finalizer(pipeline_json());
    // The fake reports the error without reflecting it in the status: the controller must.
    let engine = FakeEngine::new(
        Box::new(|_| Outcome {
            status: OutboxPipelineStatus::default(),
            actions: vec![],
            requeue_after: None,
            error: Some(aws_error(ErrorClass::Transient)),
        }),
        Box::new(|| panic!("not deleting")),
    );
    let h = Harness::new(engine, object.clone());
    let error = h.reconcile(&object).await.expect_err("engine error");
    assert!(
        matches!(error, Error::Engine(EngineError::Aws { .. })),
        "{error}"
    );
    assert_eq!(
        metric(
            &h.metrics,
            r#"outbox_reconcile_errors_total{reason="AwsError"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&h.metrics, r#"outbox_pipelines{ready="false"}"#),
        Some(1.0)
    );

    // Transient: per-object exponential backoff, capped at five minutes.
    let delays: Vec<Action> = (0..9).map(|_| h.error_policy(&object, &error)).collect();
    let expected: Vec<Action> = [5, 10, 20, 40, 80, 160, 300, 300, 300]
        .into_iter()
        .map(|s| Action::requeue(Duration::from_secs(s)))
        .collect();
    assert_eq!(delays, expected);
    assert_eq!(BACKOFF_MAX, Duration::from_secs(300));
    let calls = h.finish().await;

    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[0].is_status_apply(), "{:#?}", calls[0]);
    let ready = calls[0].ready_condition().expect("Ready condition");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "AwsError");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("CreateFunction") && m.contains("ServiceException"))
    );
    assert!(calls[1].is_event(), "{:#?}", calls[1]);
    assert_eq!(calls[1].body["type"], "Warning");
    assert_eq!(calls[1].body["reason"], "AwsError");
}

#[tokio::test]
async fn a_success_resets_the_backoff_of_that_pipeline_only() {
    let object = with_finalizer(pipeline_json());
    let mut other = object.clone();
    other["metadata"]["name"] = json!("orders");
    let h = Harness::new(
        FakeEngine::new(
            Box::new(|p| Outcome {
                status: ready_status(p.metadata.generation),
                actions: vec![],
                requeue_after: None,
                error: None,
            }),
            Box::new(|| panic!("not deleting")),
        ),
        object.clone(),
    );
    let transient = Error::Engine(aws_error(ErrorClass::Transient));
    for _ in 0..3 {
        h.error_policy(&object, &transient);
        h.error_policy(&other, &transient);
    }
    h.reconcile(&object).await.expect("reconcile succeeds");
    assert_eq!(
        h.error_policy(&object, &transient),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        h.error_policy(&other, &transient),
        Action::requeue(Duration::from_secs(40))
    );
    h.finish().await;
}

#[tokio::test]
async fn a_terminal_error_is_reported_and_retried_only_at_the_resync_period() {
    let object = with_finalizer(pipeline_json());
    let engine = FakeEngine::new(
        Box::new(|_| Outcome {
            status: OutboxPipelineStatus::default(),
            actions: vec![],
            requeue_after: None,
            error: Some(access_denied()),
        }),
        Box::new(|| panic!("not deleting")),
    );
    let h = Harness::new(engine, object.clone());
    let error = h.reconcile(&object).await.expect_err("terminal error");
    // No hot loop: however often it fails, the next try is at the resync period.
    for _ in 0..5 {
        assert_eq!(h.error_policy(&object, &error), Action::requeue(RESYNC));
    }
    let calls = h.finish().await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let ready = calls[0].ready_condition().expect("Ready condition");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "AccessDenied");
    assert_eq!(calls[1].body["reason"], "AccessDenied");
}

#[tokio::test]
async fn an_invalid_spec_is_reported_without_calling_the_engine() {
    let mut object = with_finalizer(pipeline_json());
    // CEL rule: a REMOVE record has no new image.
    object["spec"]["relay"]["events"][0]["change"] = json!("REMOVE");
    let h = Harness::new(FakeEngine::unused(), object.clone());
    let error = h.reconcile(&object).await.expect_err("invalid spec");
    assert_eq!(h.error_policy(&object, &error), Action::requeue(RESYNC));
    let engine = h.engine.clone();
    let calls = h.finish().await;

    assert_eq!(engine.reconcile.load(Ordering::SeqCst), 0);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let ready = calls[0].ready_condition().expect("Ready condition");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.relay.events")),
        "{ready}"
    );
    assert_eq!(calls[0].body["status"]["observedGeneration"], 2);
    assert_eq!(calls[1].body["reason"], "InvalidSpec");
    assert_eq!(calls[1].body["type"], "Warning");
}

#[tokio::test]
async fn a_paused_pipeline_gets_status_paused_and_no_engine_call() {
    let object = paused(with_finalizer(pipeline_json()));
    let h = Harness::new(FakeEngine::unused(), object.clone());
    let action = h.reconcile(&object).await.expect("reconcile");
    // Removing the annotation is a change, which retriggers.
    assert_eq!(action, Action::await_change());
    let engine = h.engine.clone();
    let calls = h.finish().await;

    assert_eq!(engine.reconcile.load(Ordering::SeqCst), 0);
    assert_eq!(engine.delete.load(Ordering::SeqCst), 0);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0].is_status_apply());
    let ready = calls[0].ready_condition().expect("Ready condition");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "Paused");
}

#[tokio::test]
async fn deletion_runs_the_engines_delete_then_removes_the_finalizer() {
    let object = deleting(with_finalizer(pipeline_json()));
    let engine = FakeEngine::new(
        Box::new(|_| panic!("no reconcile while deleting")),
        Box::new(|| {
            Ok(DeleteOutcome {
                actions: vec![AwsAction {
                    component: Component::Table,
                    verb: Verb::Delete,
                    resource: "dynamodb table outbox-c1-default-users".into(),
                    detail: String::new(),
                }],
                done: true,
                requeue_after: None,
            })
        }),
    );
    let h = Harness::new(engine, object.clone());
    let action = h.reconcile(&object).await.expect("cleanup");
    assert_eq!(action, Action::await_change());
    let engine = h.engine.clone();
    let calls = h.finish().await;

    assert_eq!(engine.delete.load(Ordering::SeqCst), 1);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[0].is_event(), "{:#?}", calls[0]);
    assert_eq!(calls[0].body["reason"], "Deleted");
    let remove = &calls[1];
    assert_eq!(remove.method, Method::PATCH);
    assert_eq!(remove.path, PIPELINE_PATH);
    assert_eq!(
        remove.body,
        json!([
            { "op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER },
            { "op": "remove", "path": "/metadata/finalizers/0" },
        ])
    );
}

#[tokio::test]
async fn an_unfinished_deletion_keeps_the_finalizer_and_requeues_after_the_hint() {
    let object = deleting(with_finalizer(pipeline_json()));
    let engine = FakeEngine::new(
        Box::new(|_| panic!("no reconcile while deleting")),
        Box::new(|| {
            Ok(DeleteOutcome {
                actions: vec![],
                done: false,
                requeue_after: Some(Duration::from_secs(15)),
            })
        }),
    );
    let h = Harness::new(engine, object.clone());
    let error = h.reconcile(&object).await.expect_err("deletion pending");
    assert!(matches!(error, Error::DeletionPending { .. }), "{error}");
    assert_eq!(
        h.error_policy(&object, &error),
        Action::requeue(Duration::from_secs(15))
    );
    // Waiting on a delete is not a failure.
    assert_eq!(
        metric(
            &h.metrics,
            r#"outbox_reconcile_errors_total{reason="Deleting"}"#
        ),
        None
    );
    let calls = h.finish().await;
    assert_eq!(
        calls.len(),
        1,
        "status only, the finalizer stays: {calls:#?}"
    );
    let ready = calls[0].ready_condition().expect("Ready condition");
    assert_eq!(ready["reason"], "Deleting");
}

#[tokio::test]
async fn a_failed_deletion_keeps_the_finalizer_and_reports_the_error() {
    let object = deleting(with_finalizer(pipeline_json()));
    let engine = FakeEngine::new(
        Box::new(|_| panic!("no reconcile while deleting")),
        Box::new(|| Err(aws_error(ErrorClass::Transient))),
    );
    let h = Harness::new(engine, object.clone());
    let error = h.reconcile(&object).await.expect_err("delete failed");
    assert_eq!(
        h.error_policy(&object, &error),
        Action::requeue(Duration::from_secs(5))
    );
    let calls = h.finish().await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[0].is_status_apply());
    assert_eq!(calls[1].body["reason"], "AwsError");
    assert!(
        calls.iter().all(|c| c.path != PIPELINE_PATH),
        "finalizer untouched"
    );
}

#[tokio::test]
async fn a_malformed_object_is_reported_and_does_not_fail_the_controller() {
    let mut object = with_finalizer(pipeline_json());
    // Written before a schema change: a field this version does not know.
    object["spec"]["legacyField"] = json!(true);
    let guard = watched(&object);
    assert!(guard.0.is_err(), "fixture must not deserialize");
    let h = Harness::new(FakeEngine::unused(), object.clone());
    let guard = Arc::new(guard);
    let action = reconcile(guard.clone(), h.ctx.clone())
        .await
        .expect("reported, not failed");
    assert_eq!(action, Action::await_change());
    // The report's own status write wakes the watch: the same generation is not reported again
    // (no API call), so there is no loop.
    let again = reconcile(guard, h.ctx.clone()).await.expect("quiet");
    assert_eq!(again, Action::await_change());
    assert_eq!(
        metric(
            &h.metrics,
            r#"outbox_reconcile_errors_total{reason="Malformed"}"#
        ),
        Some(1.0)
    );
    let calls = h.finish().await;

    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[0].is_event());
    assert_eq!(calls[0].body["type"], "Warning");
    assert_eq!(calls[0].body["regarding"]["name"], "users");
    assert!(
        calls[0].body["note"]
            .as_str()
            .is_some_and(|n| n.contains("legacyField")),
        "{:#?}",
        calls[0]
    );
    assert!(calls[1].is_status_apply());
    assert_eq!(
        calls[1].ready_condition().map(|c| c["reason"].clone()),
        Some(json!("InvalidSpec"))
    );
}

#[tokio::test]
async fn kubernetes_api_failures_back_off() {
    let object = with_finalizer(pipeline_json());
    let h = Harness::new(FakeEngine::unused(), object.clone());
    let error = Error::Kube(kube::Error::Service("connection refused".into()));
    assert_eq!(
        h.error_policy(&object, &error),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        h.error_policy(&object, &error),
        Action::requeue(Duration::from_secs(10))
    );
    h.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Deletion safety and the leadership fence

#[tokio::test]
async fn an_apply_pass_for_a_pipeline_deleted_since_its_trigger_makes_no_aws_call() {
    // The watch cache still has the pipeline; the API server says it is being deleted.
    let cached = with_finalizer(pipeline_json());
    let h = Harness::new(FakeEngine::unused(), deleting(cached.clone()));
    let action = h.reconcile(&cached).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    let calls = h.finish_all().await;
    assert_eq!(calls.len(), 1, "only the fresh read: {calls:#?}");
    assert_eq!(calls[0].method, Method::GET);
    assert_eq!(calls[0].path, PIPELINE_PATH);
}

#[tokio::test]
async fn an_apply_pass_for_a_pipeline_replaced_by_a_new_object_of_the_same_name_stops() {
    let cached = with_finalizer(pipeline_json());
    let mut fresh = cached.clone();
    fresh["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000002");
    let h = Harness::new(FakeEngine::unused(), fresh);
    let action = h.reconcile(&cached).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    let calls = h.finish_all().await;
    assert!(calls.iter().all(|c| c.method == Method::GET), "{calls:#?}");
}

#[tokio::test]
async fn with_the_fence_down_no_reconcile_starts() {
    let object = with_finalizer(pipeline_json());
    let h = Harness::with_fence(FakeEngine::unused(), object.clone(), Some(Fence::new()));
    let result = h.reconcile(&object).await;
    let Err(error) = result else {
        panic!("a pass started while not leading: {result:?}")
    };
    assert!(
        matches!(error, Error::Engine(EngineError::NotLeading { .. })),
        "{error:?}"
    );
    assert_eq!(error.metric_reason(), "NotLeading");
    assert_eq!(h.finish_all().await.len(), 0, "no API call either");
}

#[tokio::test]
async fn a_pass_cut_short_by_the_fence_writes_no_status_and_no_event_and_is_not_invalid_spec() {
    let object = with_finalizer(pipeline_json());
    let fence = Fence::new();
    fence.raise();
    let lowered = fence.clone();
    // The fence drops during the pass; the engine's next write is refused.
    let engine = FakeEngine::new(
        Box::new(move |p| {
            lowered.lower();
            let error = EngineError::NotLeading {
                operation: "CreateTable".into(),
                resource: "dynamodb table outbox-c1-default-users".into(),
            };
            let mut status = ready_status(p.metadata.generation);
            status.set_condition(
                ConditionType::Ready,
                false,
                error.reason(),
                error.to_string(),
                p.metadata.generation,
                "2026-01-01T00:00:00Z",
            );
            Outcome {
                status,
                actions: vec![],
                requeue_after: None,
                error: Some(error),
            }
        }),
        Box::new(|| panic!("not deleting")),
    );
    let h = Harness::with_fence(engine, object.clone(), Some(fence));
    let error = h.reconcile(&object).await.expect_err("not leading");
    assert!(error.to_string().contains("not the leader"), "{error}");
    let policy = h.error_policy(&object, &error);
    assert_eq!(
        policy,
        Action::requeue(BACKOFF_BASE),
        "transient, not terminal"
    );
    let calls = h.finish().await;
    assert!(
        calls.is_empty(),
        "a replica that is not leading wrote: {calls:#?}"
    );
}

#[test]
fn backoff_doubles_from_five_seconds_up_to_five_minutes() {
    let delays: Vec<u64> = (1..=10)
        .map(|n| controller::backoff_delay(n).as_secs())
        .collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    assert_eq!(controller::backoff_delay(u32::MAX), BACKOFF_MAX);
}

// ---------------------------------------------------------------------------------------------
// The whole controller: watch, queue, reconcile

#[tokio::test]
async fn a_malformed_pipeline_does_not_stop_the_controller_reconciling_the_others() {
    let good = pipeline_json();
    let mut legacy = with_finalizer(pipeline_json());
    legacy["metadata"]["name"] = json!("legacy");
    legacy["spec"]["legacyField"] = json!(true);
    let list = json!({
        "apiVersion": "outbox.dev/v1alpha1",
        "kind": "OutboxPipelineList",
        "metadata": { "resourceVersion": "1100" },
        "items": [legacy.clone(), good.clone()],
    });

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(Method, String)>();
    let api_server = tokio::spawn(async move {
        // Open watches are held, never answered: nothing changes after the initial list.
        let mut open_watches = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or("").to_owned();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let _ = seen_tx.send((method.clone(), path.clone()));
            let body = if query.contains("watch=true") {
                open_watches.push(send);
                continue;
            } else if path == "/apis/outbox.dev/v1alpha1/outboxpipelines" {
                serde_json::to_vec(&list)
            } else if path.starts_with(EVENTS_PATH) {
                Ok(bytes.to_vec())
            } else if path.contains("/outboxpipelines/legacy") {
                serde_json::to_vec(&legacy)
            } else {
                serde_json::to_vec(&good)
            };
            let body = body.expect("JSON");
            send.send_response(
                Response::builder()
                    .body(Body::from(body))
                    .expect("response"),
            );
        }
    });

    let config = outbox_operator::config::Config {
        engine: outbox_operator::engine::EngineConfig {
            cluster_id: "c1".into(),
            allow_adoption: false,
            allow_delete_adopted_tables: false,
            permissions_boundary_arn: None,
            artifacts_dir: "/artifacts".into(),
        },
        region: None,
        endpoint_url: None,
        resync_period: RESYNC,
        concurrency: 2,
        metrics_port: 0,
        log_format: outbox_operator::config::LogFormat::Text,
        namespace: None,
        leader_election: None,
        identity: "test".into(),
    };
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(
        client.clone(),
        FakeEngine::unused(),
        Reporter::from(FIELD_MANAGER),
        metrics.clone(),
        RESYNC,
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = controller::trigger(async {
        let _ = stop_rx.await;
    });
    let running = tokio::spawn(async move {
        controller::run_controller(&client, &config, ctx, stop).await;
    });

    // Wait (with a hang guard) until both objects were handled: the good one got its finalizer,
    // the malformed one its status report.
    let mut good_finalized = false;
    let mut legacy_reported = false;
    while !(good_finalized && legacy_reported) {
        let (method, path) = tokio::time::timeout(Duration::from_secs(60), seen.recv())
            .await
            .expect("the controller never handled both objects")
            .expect("mock API server running");
        good_finalized |= method == Method::PATCH && path == PIPELINE_PATH;
        legacy_reported |= method == Method::PATCH
            && path == "/apis/outbox.dev/v1alpha1/namespaces/default/outboxpipelines/legacy/status";
    }
    let _ = stop_tx.send(());
    running.await.expect("controller stops on its trigger");
    assert_eq!(
        metric(
            &metrics,
            r#"outbox_reconcile_errors_total{reason="Malformed"}"#
        ),
        Some(1.0)
    );
    api_server.abort();
}

// ---------------------------------------------------------------------------------------------
// Leader election: the controller runs only while the lease is held

/// A stand-in controller that reports when it starts and stops.
fn recording_controller(
    log: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> impl FnMut(controller::Trigger) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    move |stop| {
        let log = log.clone();
        Box::pin(async move {
            let _ = log.send("started");
            stop.await;
            let _ = log.send("stopped");
        })
    }
}

/// The next event; a generous guard turns a regression (an event that never comes) into a
/// failure instead of a hung test run. Nothing here depends on how fast things happen.
async fn next_event(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) -> Option<&'static str> {
    tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("the follower never reported the expected transition")
}

#[tokio::test]
async fn the_controller_runs_only_while_leading_and_a_lost_lease_ends_the_process_with_an_error() {
    let (lead, mut leading) = tokio::sync::watch::channel(false);
    let shutdown = controller::trigger(std::future::pending());
    let (log, mut events) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        controller::follow_leadership(&mut leading, shutdown, recording_controller(log)).await
    });

    // Standby: not started. The first thing it ever does is start, after the lease is won.
    lead.send_replace(true);
    assert_eq!(next_event(&mut events).await, Some("started"));
    lead.send_replace(false);
    assert_eq!(
        next_event(&mut events).await,
        Some("stopped"),
        "lease lost: stop reconciling"
    );
    // No second term in the same process: `run` exits non-zero and the pod restarts as a
    // standby (a regained lease is not followed).
    let result = follower.await.expect("follower task");
    assert!(
        matches!(result, Err(controller::LeadershipEnded::Lost)),
        "{result:?}"
    );
    lead.send_replace(true);
    assert_eq!(
        next_event(&mut events).await,
        None,
        "no restart after a loss"
    );
}

#[tokio::test]
async fn shutdown_stops_the_leading_controller_and_ends_cleanly() {
    let (lead, mut leading) = tokio::sync::watch::channel(false);
    let (request_shutdown, shutdown_requested) = tokio::sync::oneshot::channel::<()>();
    let shutdown = controller::trigger(async {
        let _ = shutdown_requested.await;
    });
    let (log, mut events) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        controller::follow_leadership(&mut leading, shutdown, recording_controller(log)).await
    });
    lead.send_replace(true);
    assert_eq!(next_event(&mut events).await, Some("started"));
    let _ = request_shutdown.send(());
    assert_eq!(
        next_event(&mut events).await,
        Some("stopped"),
        "shutdown stops the leader"
    );
    let result = follower.await.expect("follower task");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        next_event(&mut events).await,
        None,
        "no restart after shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn a_controller_that_does_not_stop_after_a_loss_is_abandoned_after_the_grace() {
    let (lead, mut leading) = tokio::sync::watch::channel(true);
    let shutdown = controller::trigger(std::future::pending());
    let started = tokio::time::Instant::now();
    let follower = tokio::spawn(async move {
        controller::follow_leadership(&mut leading, shutdown, |_stop| std::future::pending()).await
    });
    tokio::task::yield_now().await;
    lead.send_replace(false);
    let result = follower.await.expect("follower task");
    assert!(matches!(result, Err(controller::LeadershipEnded::Lost)));
    assert!(started.elapsed() <= controller::LOSS_GRACE + Duration::from_millis(100));
}

#[tokio::test]
async fn a_standby_exits_on_shutdown_without_starting_the_controller() {
    let (_lead, mut leading) = tokio::sync::watch::channel(false);
    let shutdown = controller::trigger(async {});
    let (log, mut events) = tokio::sync::mpsc::unbounded_channel();
    let result =
        controller::follow_leadership(&mut leading, shutdown, recording_controller(log)).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(events.recv().await, None);
}

#[tokio::test]
async fn a_dead_lease_manager_is_an_error_not_a_silent_standby() {
    let (lead, mut leading) = tokio::sync::watch::channel(false);
    drop(lead);
    let shutdown = controller::trigger(std::future::pending());
    let (log, _events) = tokio::sync::mpsc::unbounded_channel();
    let result =
        controller::follow_leadership(&mut leading, shutdown, recording_controller(log)).await;
    assert!(result.is_err());
}

// ---------------------------------------------------------------------------------------------
// Metrics endpoint

/// A plain HTTP/1.0 GET on a blocking socket (no HTTP client in the dependency tree).
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn the_leader_gauge_says_whether_this_replica_leads() {
    let metrics = Metrics::new();
    assert_eq!(
        metric(&metrics, "outbox_leader "),
        Some(0.0),
        "a standby from the start"
    );
    metrics.set_leader(true);
    assert_eq!(metric(&metrics, "outbox_leader "), Some(1.0));
    metrics.set_leader(false);
    assert_eq!(metric(&metrics, "outbox_leader "), Some(0.0));
}

#[tokio::test]
async fn the_metrics_endpoint_serves_the_named_metrics_and_the_probes() {
    let metrics = Arc::new(Metrics::new());
    metrics.reconciled(Duration::from_millis(250));
    metrics.reconcile_error("AwsError");
    metrics.aws_call("lambda:CreateFunction");
    metrics.set_pipeline_ready("default/users", true);
    let readiness = Arc::new(Readiness::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(outbox_operator::metrics::serve(
        listener,
        metrics,
        readiness.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let get = |path: &'static str| tokio::task::spawn_blocking(move || http_get(port, path));
    let (status, body) = get("/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    for series in [
        "outbox_reconciles_total 1",
        r#"outbox_reconcile_errors_total{reason="AwsError"} 1"#,
        "outbox_reconcile_duration_seconds_bucket",
        "outbox_reconcile_duration_seconds_count 1",
        r#"outbox_aws_calls_total{operation="lambda:CreateFunction"} 1"#,
        r#"outbox_pipelines{ready="true"} 1"#,
        r#"outbox_pipelines{ready="false"} 0"#,
    ] {
        assert!(body.contains(series), "missing {series:?} in:\n{body}");
    }
    assert_eq!(get("/healthz").await.expect("GET /healthz").0, 200);
    assert_eq!(get("/readyz").await.expect("GET /readyz").0, 503);
    readiness.set(true);
    assert_eq!(get("/readyz").await.expect("GET /readyz").0, 200);
    assert_eq!(get("/nope").await.expect("GET /nope").0, 404);

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}

// ---------------------------------------------------------------------------------------------
// Replay from the cluster (annotation outbox.dev/replay)

fn with_replay_annotation(mut v: Value, token: &str) -> Value {
    v["metadata"]["annotations"]["outbox.dev/replay"] = json!(token);
    v
}

fn ready_engine(replay: Option<Report>) -> FakeEngine {
    let mut engine = FakeEngine::new(
        Box::new(|p| Outcome {
            status: ready_status(p.metadata.generation),
            actions: vec![],
            requeue_after: None,
            error: None,
        }),
        Box::new(|| panic!("not deleting")),
    );
    engine.replay = replay;
    engine
}

fn one_replayed_batch() -> Report {
    Report {
        destination: "arn:aws:s3:::outbox-failures".into(),
        total: 1,
        events: 5,
        batches: vec![Batch {
            key: "aws/lambda/m/shardId-1/2026/11/29/2026-11-29T05.00.00-x".into(),
            parked_at: None,
            shard_id: "shardId-1".into(),
            first_sequence: "1".into(),
            last_sequence: "5".into(),
            condition: Some("RetryAttemptsExhausted".into()),
            first_arrival: None,
            last_arrival: None,
            changes: Default::default(),
            events: 5,
            skipped: 0,
            already_published: 0,
            problem: None,
            outcome: BatchOutcome::Replayed,
        }],
        ..Report::default()
    }
}

#[tokio::test]
async fn the_replay_annotation_replays_once_recording_status_and_events() {
    let object = with_replay_annotation(with_finalizer(pipeline_json()), "t1");
    let h = Harness::new(ready_engine(Some(one_replayed_batch())), object.clone());
    h.reconcile(&object).await.expect("reconcile");
    let engine = h.engine.clone();
    let calls = h.finish().await;
    assert_eq!(engine.replay.load(Ordering::SeqCst), 1);
    assert_eq!(calls.len(), 5, "{calls:#?}");
    assert!(calls[0].is_status_apply() && calls[0].body["status"].get("replay").is_none());
    let running = &calls[1].body["status"]["replay"];
    assert!(calls[1].is_status_apply(), "{:#?}", calls[1]);
    assert_eq!(
        (running["token"].as_str(), running["outcome"].as_str()),
        (Some("t1"), Some("Running"))
    );
    assert!(running["startedAt"].is_string() && running.get("finishedAt").is_none());
    assert!(calls[2].is_event());
    assert_eq!(calls[2].body["reason"], "ReplayStarted");
    let done = &calls[3].body["status"]["replay"];
    assert!(calls[3].is_status_apply());
    assert_eq!(done["outcome"], "Succeeded");
    assert_eq!(done["token"], "t1");
    assert_eq!(
        (
            done["batchesReplayed"].as_i64(),
            done["eventsPublished"].as_i64(),
            done["batchesLeft"].as_i64()
        ),
        (Some(1), Some(5), Some(0))
    );
    assert!(done["finishedAt"].is_string());
    // The pipeline's status is kept around the replay.
    assert_eq!(
        calls[3].ready_condition().map(|c| c["status"].clone()),
        Some(json!("True"))
    );
    assert!(calls[4].is_event());
    assert_eq!(
        (
            calls[4].body["type"].as_str(),
            calls[4].body["reason"].as_str()
        ),
        (Some("Normal"), Some("ReplaySucceeded"))
    );
}

#[tokio::test]
async fn a_token_already_replayed_does_not_replay_again_and_its_record_stays() {
    let mut object = with_replay_annotation(with_finalizer(pipeline_json()), "t1");
    let mut stored = ready_status(Some(2));
    stored.replay = Some(outbox_operator::crd::ReplayStatus {
        token: "t1".into(),
        started_at: "2026-11-29T05:00:00Z".into(),
        finished_at: Some("2026-11-29T05:00:01Z".into()),
        outcome: "Succeeded".into(),
        ..Default::default()
    });
    object["status"] = serde_json::to_value(&stored).unwrap();
    let h = Harness::new(ready_engine(Some(one_replayed_batch())), object.clone());
    h.reconcile(&object).await.expect("reconcile");
    let engine = h.engine.clone();
    let calls = h.finish().await;
    assert_eq!(engine.replay.load(Ordering::SeqCst), 0, "{calls:#?}");
    for c in calls.iter().filter(|c| c.is_status_apply()) {
        assert_eq!(
            c.body["status"]["replay"]["token"], "t1",
            "the record is not dropped: {c:#?}"
        );
    }
    assert!(!calls.iter().any(|c| {
        c.is_event()
            && c.body["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("Replay"))
    }));
}

#[tokio::test]
async fn a_paused_pipeline_does_not_replay_and_a_failed_replay_is_a_warning() {
    let object = with_replay_annotation(paused(with_finalizer(pipeline_json())), "t1");
    let h = Harness::new(FakeEngine::unused(), object.clone());
    h.reconcile(&object).await.expect("paused reconcile");
    let engine = h.engine.clone();
    h.finish().await;
    assert_eq!(engine.replay.load(Ordering::SeqCst), 0);
    assert_eq!(engine.reconcile.load(Ordering::SeqCst), 0);

    // Unpaused, on a reconciler that cannot replay: Failed, with a Warning.
    let object = with_replay_annotation(with_finalizer(pipeline_json()), "t2");
    let h = Harness::new(ready_engine(None), object.clone());
    h.reconcile(&object).await.expect("reconcile");
    let calls = h.finish().await;
    let done = calls
        .iter()
        .rev()
        .find(|c| c.is_status_apply())
        .expect("status");
    assert_eq!(done.body["status"]["replay"]["outcome"], "Failed");
    let last = calls.last().expect("an Event");
    assert_eq!(
        (last.body["type"].as_str(), last.body["reason"].as_str()),
        (Some("Warning"), Some("ReplayFailed"))
    );
}
