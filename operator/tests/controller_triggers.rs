//! What wakes a pipeline's reconcile: the whole controller (watch, queue, reconcile) against a
//! mocked API server that serves a list and then one scripted watch event at a time.
//!
//! A status-only update (the controller's own status write, seen through the watch) must not
//! cause a pass; a spec change (generation), an annotation (the pause annotation) and a deletion
//! must.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use outbox_operator::config::{Config, LogFormat};
use outbox_operator::controller::{self, Context, FIELD_MANAGER};
use outbox_operator::crd::{
    ConditionType, FINALIZER, OutboxPipeline, OutboxPipelineStatus, PAUSED_ANNOTATION, Reason,
};
use outbox_operator::engine::{DeleteOutcome, EngineConfig, EngineError, Outcome, Reconciler};
use outbox_operator::metrics::Metrics;
use serde_json::{Value, json};

const LIST_PATH: &str = "/apis/outbox.dev/v1alpha1/outboxpipelines";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

struct ReadyEngine;

impl Reconciler for ReadyEngine {
    async fn reconcile(&self, p: &OutboxPipeline) -> Outcome {
        let mut status = OutboxPipelineStatus::default();
        status.set_condition(
            ConditionType::Ready,
            true,
            Reason::Reconciled,
            "",
            p.metadata.generation,
            "2026-01-01T00:00:00Z",
        );
        Outcome {
            status,
            actions: vec![],
            requeue_after: None,
            error: None,
        }
    }

    async fn delete(&self, _: &OutboxPipeline) -> Result<DeleteOutcome, EngineError> {
        Ok(DeleteOutcome {
            actions: vec![],
            done: true,
            requeue_after: None,
        })
    }
}

fn pipeline() -> Value {
    let mut v: Value =
        serde_json::from_str(include_str!("fixtures/controller-pipeline.json")).expect("JSON");
    v["metadata"]["finalizers"] = json!([FINALIZER]);
    v["metadata"]["resourceVersion"] = json!("1");
    v
}

fn passes(metrics: &Metrics) -> f64 {
    let text = metrics.encode().expect("metrics encode");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("outbox_reconciles_total ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn wait_for_passes(metrics: &Metrics, n: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while passes(metrics) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} passes, saw {}",
            passes(metrics)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves the list, then answers each watch request with the next scripted event (the watch
/// stream then ends and the watcher reconnects). GETs and writes see the latest object.
fn api_server(
    initial: Value,
    mut script: tokio::sync::mpsc::UnboundedReceiver<Value>,
) -> (Client, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let task = tokio::spawn(async move {
        let mut current = initial;
        let mut pending_watch = None;
        loop {
            tokio::select! {
                next = handle.next_request() => {
                    let Some((request, send)) = next else { return };
                    let method = request.method().clone();
                    let path = request.uri().path().to_owned();
                    let query = request.uri().query().unwrap_or("").to_owned();
                    let bytes = request.into_body().collect_bytes().await.unwrap_or_default();
                    let body = if query.contains("watch=true") {
                        pending_watch = Some(send);
                        continue;
                    } else if path == LIST_PATH && method == Method::GET {
                        json!({"apiVersion": "outbox.dev/v1alpha1", "kind": "OutboxPipelineList",
                               "metadata": {"resourceVersion": "1"}, "items": [current.clone()]})
                    } else if path.starts_with(EVENTS_PATH) {
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                    } else {
                        current.clone()
                    };
                    send.send_response(Response::builder()
                        .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
                        .expect("response"));
                }
                Some(object) = script.recv(), if pending_watch.is_some() => {
                    current = object.clone();
                    let line = json!({"type": "MODIFIED", "object": object});
                    if let Some(send) = pending_watch.take() {
                        send.send_response(Response::builder()
                            .body(Body::from(format!("{line}\n").into_bytes()))
                            .expect("response"));
                    }
                }
            }
        }
    });
    (client, task)
}

fn config() -> Config {
    Config {
        engine: EngineConfig {
            cluster_id: "c1".into(),
            allow_adoption: false,
            allow_delete_adopted_tables: false,
            permissions_boundary_arn: None,
            artifacts_dir: "/artifacts".into(),
        },
        region: None,
        endpoint_url: None,
        resync_period: Duration::from_secs(300),
        concurrency: 2,
        metrics_port: 0,
        log_format: LogFormat::Text,
        namespace: None,
        leader_election: None,
        identity: "test".into(),
    }
}

/// The controller, running in the background against the mock API server until `stop_tx` fires.
struct Running {
    metrics: Arc<Metrics>,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<()>,
}

fn run<E: Reconciler + Send + Sync + 'static>(client: Client, engine: E) -> Running {
    let config = config();
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(
        client.clone(),
        engine,
        Reporter::from(FIELD_MANAGER),
        metrics.clone(),
        Duration::from_secs(300),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = controller::trigger(async {
        let _ = stop_rx.await;
    });
    let running = tokio::spawn(async move {
        controller::run_controller(&client, &config, ctx, stop).await;
    });
    Running {
        metrics,
        stop_tx,
        running,
    }
}

#[tokio::test]
async fn status_only_updates_do_not_trigger_a_pass_but_spec_annotation_and_deletion_do() {
    let (script, events) = tokio::sync::mpsc::unbounded_channel();
    let (client, api) = api_server(pipeline(), events);
    let Running {
        metrics,
        stop_tx,
        running,
    } = run(client, ReadyEngine);
    let quiet = Duration::from_millis(1500);

    // The initial list: one pass.
    wait_for_passes(&metrics, 1.0).await;

    // The controller's own status write comes back through the watch: no pass.
    let mut object = pipeline();
    object["metadata"]["resourceVersion"] = json!("2");
    object["status"] = json!({"observedGeneration": 2, "conditions": [{"type": "Ready",
        "status": "True", "reason": "Reconciled", "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    script.send(object.clone()).expect("script");
    tokio::time::sleep(quiet).await;
    assert_eq!(passes(&metrics), 1.0, "a status-only update caused a pass");

    // Pausing (an annotation) triggers a pass.
    object["metadata"]["resourceVersion"] = json!("3");
    object["metadata"]["annotations"] = json!({ PAUSED_ANNOTATION: "true" });
    script.send(object.clone()).expect("script");
    wait_for_passes(&metrics, 2.0).await;

    // Its status write (Paused) does not.
    object["metadata"]["resourceVersion"] = json!("4");
    object["status"]["conditions"][0]["status"] = json!("False");
    object["status"]["conditions"][0]["reason"] = json!("Paused");
    script.send(object.clone()).expect("script");
    tokio::time::sleep(quiet).await;
    assert_eq!(passes(&metrics), 2.0, "a status-only update caused a pass");

    // A spec change (new generation, pause removed) does.
    object["metadata"]["resourceVersion"] = json!("5");
    object["metadata"]["generation"] = json!(3);
    object["metadata"]["annotations"] = json!({});
    object["spec"]["relay"]["memoryMb"] = json!(256);
    script.send(object.clone()).expect("script");
    wait_for_passes(&metrics, 3.0).await;

    // A deletion does, even where the API server would not bump the generation.
    object["metadata"]["resourceVersion"] = json!("6");
    object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    script.send(object.clone()).expect("script");
    wait_for_passes(&metrics, 4.0).await;

    tokio::time::sleep(quiet).await;
    assert_eq!(passes(&metrics), 4.0, "no extra pass");
    let _ = stop_tx.send(());
    running.await.expect("controller stops on its trigger");
    api.abort();
}

/// Records the metadata of every pipeline it is handed, and is otherwise [`ReadyEngine`].
#[derive(Clone, Default)]
struct SeeingEngine {
    seen: Arc<std::sync::Mutex<Vec<kube::api::ObjectMeta>>>,
}

impl Reconciler for SeeingEngine {
    async fn reconcile(&self, p: &OutboxPipeline) -> Outcome {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(p.metadata.clone());
        }
        ReadyEngine.reconcile(p).await
    }

    async fn delete(&self, p: &OutboxPipeline) -> Result<DeleteOutcome, EngineError> {
        ReadyEngine.delete(p).await
    }
}

/// At a thousand pipelines the watch cache is most of the operator's memory; the API server's
/// field-manager records and kubectl's copy of the manifest are never read, so they are not kept.
#[tokio::test]
async fn the_watch_cache_keeps_no_managed_fields_and_no_last_applied_manifest() {
    let mut object = pipeline();
    object["metadata"]["managedFields"] = json!([
        {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "outbox.dev/v1alpha1",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:table": {}}}},
        {"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "outbox.dev/v1alpha1",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}, "subresource": "status"}
    ]);
    let manifest = serde_json::to_string(&object["spec"]).expect("JSON");
    object["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": manifest,
        "team": "payments",
    });
    let (_script, events) = tokio::sync::mpsc::unbounded_channel();
    let (client, api) = api_server(object, events);
    let engine = SeeingEngine::default();
    let Running {
        metrics,
        stop_tx,
        running,
    } = run(client, engine.clone());
    wait_for_passes(&metrics, 1.0).await;
    let _ = stop_tx.send(());
    running.await.expect("controller stops on its trigger");
    api.abort();

    let seen = engine.seen.lock().expect("lock").clone();
    let meta = seen.first().expect("the engine saw the pipeline");
    assert_eq!(meta.managed_fields, Some(vec![]), "managedFields kept");
    let annotations = meta.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"),
        "last-applied-configuration kept: {annotations:?}"
    );
    assert_eq!(
        annotations.get("team").map(String::as_str),
        Some("payments"),
        "other annotations are the user's and stay"
    );
}
