//! The OutboxAccount controller and a pipeline's wait on its account, against a mocked
//! Kubernetes API server (tower-test, as controller.rs) that answers by path, and a fake engine
//! that counts its STS (assume) and reconcile calls. No AWS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use outbox_operator::controller::{
    Context, Error, FIELD_MANAGER, account_error_policy, error_policy, reconcile, reconcile_account,
};
use outbox_operator::crd::{FINALIZER, OutboxAccount, OutboxPipeline};
use outbox_operator::engine::account::{AssumeRole, AssumedIdentity};
use outbox_operator::engine::{DeleteOutcome, EngineError, Outcome, Reconciler};
use outbox_operator::metrics::Metrics;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const RESYNC: Duration = Duration::from_secs(300);
const ACCOUNT_PATH: &str = "/apis/outbox.dev/v1alpha1/outboxaccounts/team-a";
const PIPELINE_PATH: &str = "/apis/outbox.dev/v1alpha1/namespaces/default/outboxpipelines/users";
const NAMESPACE_PATH: &str = "/api/v1/namespaces/default";
const SECRET_PATH: &str = "/api/v1/namespaces/default/secrets/team-a-external-id";
const STS_ERROR: &str = "User: arn:aws:sts::123456789012:assumed-role/operator/x is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::210987654321:role/outbox-operator/team-a";

/// A fake engine: scripted assume results, counted calls, never AWS.
#[derive(Default)]
struct FakeEngine {
    refuse: bool,
    assumed: AtomicUsize,
    reconciled: AtomicUsize,
    accounts: Mutex<Vec<AssumeRole>>,
    forgotten: AtomicUsize,
}

impl Reconciler for FakeEngine {
    async fn reconcile(&self, p: &OutboxPipeline) -> Outcome {
        self.reconciled.fetch_add(1, Ordering::SeqCst);
        Outcome {
            status: outbox_operator::crd::OutboxPipelineStatus {
                observed_generation: p.metadata.generation,
                ..Default::default()
            },
            actions: Vec::new(),
            requeue_after: None,
            error: None,
        }
    }

    async fn delete(&self, _: &OutboxPipeline) -> Result<DeleteOutcome, EngineError> {
        panic!("not deleting")
    }

    async fn assume(&self, target: &AssumeRole) -> Result<AssumedIdentity, EngineError> {
        self.assumed.fetch_add(1, Ordering::SeqCst);
        if self.refuse {
            return Err(EngineError::AccessDenied {
                resource: format!("iam role {}", target.role_arn),
                operation: "AssumeRole".into(),
                code: "AccessDenied".into(),
                message: STS_ERROR.into(),
            });
        }
        Ok(AssumedIdentity {
            account: "210987654321".into(),
            arn: "arn:aws:sts::210987654321:assumed-role/team-a/outbox-c1-team-a".into(),
        })
    }

    fn set_account(&self, target: AssumeRole) {
        self.accounts.lock().unwrap().push(target);
    }

    fn forget_account(&self, _: &str) {
        self.forgotten.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Call {
    method: Method,
    path: String,
    body: Value,
}

struct Harness {
    ctx: Arc<Context<FakeEngine>>,
    api_server: JoinHandle<Vec<Call>>,
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": "NotFound", "code": 404, "message": "not found"})
}

impl Harness {
    /// The API server answers GETs from `objects` by path (404 otherwise) and echoes writes.
    fn new(engine: FakeEngine, objects: HashMap<&'static str, Value>) -> Harness {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let api_server = tokio::spawn(async move {
            let mut calls = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let _ = request.headers().get(CONTENT_TYPE);
                let bytes = request.into_body().collect_bytes().await.expect("body");
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (code, response) = match (&method, objects.get(path.as_str())) {
                    (&Method::GET, Some(v)) => (StatusCode::OK, v.clone()),
                    (&Method::GET, None) => (StatusCode::NOT_FOUND, not_found()),
                    (_, _) => {
                        let base = objects
                            .get(path.trim_end_matches("/status"))
                            .cloned()
                            .unwrap_or_else(|| body.clone());
                        (StatusCode::OK, base)
                    }
                };
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&response).unwrap()))
                        .unwrap(),
                );
                calls.push(Call { method, path, body });
            }
            calls
        });
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some("test".into()),
        };
        let ctx = Arc::new(Context::new(
            client,
            engine,
            reporter,
            Arc::new(Metrics::new()),
            RESYNC,
        ));
        Harness { ctx, api_server }
    }

    /// Drops the context (closing the mock) and returns every request made.
    async fn finish(self) -> Vec<Call> {
        drop(self.ctx);
        self.api_server.await.expect("mock API server")
    }
}

fn account_json(status: Option<Value>) -> Value {
    let mut v = json!({
        "apiVersion": "outbox.dev/v1alpha1",
        "kind": "OutboxAccount",
        "metadata": {"name": "team-a", "uid": "a-1", "generation": 1},
        "spec": {
            "roleArn": "arn:aws:iam::210987654321:role/outbox-operator/team-a",
            "externalIdSecretRef": {"name": "team-a-external-id", "key": "externalId"},
            "namespaceSelector": {"matchLabels": {"outbox.dev/account-team-a": "allowed"}}
        }
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    v
}

fn ready_status() -> Value {
    json!({"observedGeneration": 1, "accountId": "210987654321", "conditions": [{
        "type": "Ready", "status": "True", "reason": "Reconciled", "message": "assumed",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]})
}

fn refused_status() -> Value {
    json!({"observedGeneration": 1, "conditions": [{
        "type": "Ready", "status": "False", "reason": "AccessDenied",
        "message": format!("access denied: AssumeRole: {STS_ERROR}"),
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]})
}

fn secret_json() -> Value {
    // "the-external-id" in base64.
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "team-a-external-id", "namespace": "default"},
           "data": {"externalId": "dGhlLWV4dGVybmFsLWlk"}})
}

fn namespace_json(allowed: bool) -> Value {
    let labels = if allowed {
        json!({"kubernetes.io/metadata.name": "default", "outbox.dev/account-team-a": "allowed"})
    } else {
        json!({"kubernetes.io/metadata.name": "default"})
    };
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "default", "labels": labels}})
}

fn pipeline_json() -> Value {
    let mut v: Value =
        serde_json::from_str(include_str!("fixtures/controller-pipeline.json")).unwrap();
    v["metadata"]["finalizers"] = json!([FINALIZER]);
    v["spec"]["accountRef"] = json!({"name": "team-a"});
    v
}

fn account(v: &Value) -> Arc<OutboxAccount> {
    Arc::new(serde_json::from_value(v.clone()).expect("account parses"))
}

fn watched(v: &Value) -> Arc<DeserializeGuard<OutboxPipeline>> {
    Arc::new(serde_json::from_value(v.clone()).expect("pipeline parses"))
}

fn status_patch<'c>(calls: &'c [Call], path: &str) -> &'c Value {
    &calls
        .iter()
        .find(|c| c.method == Method::PATCH && c.path == format!("{path}/status"))
        .unwrap_or_else(|| panic!("no status patch of {path}: {calls:#?}"))
        .body
}

fn ready_of(body: &Value) -> &Value {
    body["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .expect("Ready condition")
}

#[tokio::test]
async fn an_account_whose_role_is_assumed_is_ready_with_the_account_id_and_serves_pipelines() {
    let object = account_json(None);
    let objects = HashMap::from([(SECRET_PATH, secret_json()), (ACCOUNT_PATH, object.clone())]);
    let h = Harness::new(FakeEngine::default(), objects);
    let action = reconcile_account(account(&object), h.ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
    let engine = &h.ctx.reconciler;
    assert_eq!(engine.assumed.load(Ordering::SeqCst), 1);
    let registered = engine.accounts.lock().unwrap().clone();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].name, "team-a");
    assert_eq!(
        registered[0].external_id.as_deref(),
        Some("the-external-id"),
        "the external id comes from the Secret"
    );
    let calls = h.finish().await;
    let body = status_patch(&calls, ACCOUNT_PATH);
    assert_eq!(body["kind"], "OutboxAccount");
    assert_eq!(body["status"]["accountId"], "210987654321");
    let ready = ready_of(body);
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], "Reconciled");
}

#[tokio::test]
async fn an_account_sts_refuses_is_not_ready_with_the_sts_error_and_is_forgotten() {
    let object = account_json(None);
    let objects = HashMap::from([(SECRET_PATH, secret_json()), (ACCOUNT_PATH, object.clone())]);
    let engine = FakeEngine {
        refuse: true,
        ..Default::default()
    };
    let h = Harness::new(engine, objects);
    let err = reconcile_account(account(&object), h.ctx.clone())
        .await
        .expect_err("refused");
    // Terminal (the trust policy must change first): no hot loop.
    assert_eq!(
        account_error_policy(account(&object), &err, h.ctx.clone()),
        Action::requeue(RESYNC)
    );
    assert_eq!(h.ctx.reconciler.forgotten.load(Ordering::SeqCst), 1);
    assert!(h.ctx.reconciler.accounts.lock().unwrap().is_empty());
    let calls = h.finish().await;
    let body = status_patch(&calls, ACCOUNT_PATH);
    let ready = ready_of(body);
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "AccessDenied");
    assert!(
        ready["message"].as_str().unwrap().contains(STS_ERROR),
        "{ready}"
    );
    assert!(body["status"]["accountId"].is_null());
}

#[tokio::test]
async fn an_account_whose_secret_is_missing_is_invalid_and_nothing_is_assumed() {
    let object = account_json(None);
    let h = Harness::new(
        FakeEngine::default(),
        HashMap::from([(ACCOUNT_PATH, object.clone())]),
    );
    reconcile_account(account(&object), h.ctx.clone())
        .await
        .expect_err("no secret");
    assert_eq!(h.ctx.reconciler.assumed.load(Ordering::SeqCst), 0);
    let calls = h.finish().await;
    let ready = ready_of(status_patch(&calls, ACCOUNT_PATH)).clone();
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("default/team-a-external-id"),
        "{ready}"
    );
}

#[tokio::test]
async fn a_pipeline_in_a_namespace_the_account_does_not_allow_is_invalid_spec_with_no_sts_call() {
    let p = pipeline_json();
    let objects = HashMap::from([
        (PIPELINE_PATH, p.clone()),
        (ACCOUNT_PATH, account_json(Some(ready_status()))),
        (NAMESPACE_PATH, namespace_json(false)),
    ]);
    let h = Harness::new(FakeEngine::default(), objects);
    let err = reconcile(watched(&p), h.ctx.clone())
        .await
        .expect_err("refused");
    assert!(matches!(
        err,
        Error::Engine(EngineError::InvalidSpec { .. })
    ));
    assert_eq!(h.ctx.reconciler.assumed.load(Ordering::SeqCst), 0);
    assert_eq!(h.ctx.reconciler.reconciled.load(Ordering::SeqCst), 0);
    let calls = h.finish().await;
    let ready = ready_of(status_patch(&calls, PIPELINE_PATH)).clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("OutboxAccount team-a") && message.contains("namespace default"),
        "{message}"
    );
}

#[tokio::test]
async fn a_pipeline_waits_for_an_account_that_is_not_ready_naming_its_sts_error() {
    let p = pipeline_json();
    let objects = HashMap::from([
        (PIPELINE_PATH, p.clone()),
        (ACCOUNT_PATH, account_json(Some(refused_status()))),
        (NAMESPACE_PATH, namespace_json(true)),
    ]);
    let h = Harness::new(FakeEngine::default(), objects);
    let err = reconcile(watched(&p), h.ctx.clone())
        .await
        .expect_err("waiting");
    // Transient: retried with backoff, not at the resync period.
    let action = error_policy(watched(&p), &err, h.ctx.clone());
    assert_ne!(action, Action::requeue(RESYNC));
    assert_eq!(h.ctx.reconciler.reconciled.load(Ordering::SeqCst), 0);
    let calls = h.finish().await;
    let ready = ready_of(status_patch(&calls, PIPELINE_PATH)).clone();
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("OutboxAccount team-a is not Ready") && message.contains(STS_ERROR),
        "{message}"
    );
}

#[tokio::test]
async fn a_pipeline_whose_account_is_ready_and_allows_its_namespace_is_reconciled() {
    let p = pipeline_json();
    let objects = HashMap::from([
        (PIPELINE_PATH, p.clone()),
        (ACCOUNT_PATH, account_json(Some(ready_status()))),
        (NAMESPACE_PATH, namespace_json(true)),
    ]);
    let h = Harness::new(FakeEngine::default(), objects);
    reconcile(watched(&p), h.ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(h.ctx.reconciler.reconciled.load(Ordering::SeqCst), 1);
    let _ = h.finish().await;
}
