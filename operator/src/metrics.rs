//! Prometheus metrics of the controller and the HTTP endpoint serving them with the probes:
//! `/metrics` (OpenMetrics text, which Prometheus scrapes), `/healthz` (the process is alive) and
//! `/readyz` (the controller is watching, or this replica knows it is a standby).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

/// One pipeline, `namespace/name`: as many series as pipelines.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabel {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabel {
    ready: &'static str,
}

/// The controller's metrics, registered once and shared (behind an `Arc`) by the reconciler, the
/// engine's AWS call observer and the HTTP endpoint.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<ReasonLabel, Counter>,
    reconcile_duration: Histogram,
    aws_calls: Family<OperationLabel, Counter>,
    pipelines: Family<ReadyLabel, Gauge>,
    leader: Gauge,
    healthy: Family<PipelineLabel, Gauge>,
    iterator_age: Family<PipelineLabel, Gauge>,
    /// Ready state per pipeline (`namespace/name`), from which the `outbox_pipelines` gauge is
    /// computed, so a pipeline is counted once however often it is reconciled.
    ready_by_pipeline: Mutex<HashMap<String, bool>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        // Counters get the `_total` suffix from the encoder.
        registry.register(
            "outbox_reconciles",
            "Reconciliations of OutboxPipelines (apply and cleanup)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "outbox_reconcile_errors",
            "Failed reconciliations, by condition reason (or Kubernetes / Malformed / NotLeading)",
            reconcile_errors.clone(),
        );
        // 50ms .. ~100s: a converged pass is a handful of reads; a first pass waits on AWS.
        let reconcile_duration = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "outbox_reconcile_duration_seconds",
            "Duration of one reconciliation",
            reconcile_duration.clone(),
        );
        let aws_calls = Family::<OperationLabel, Counter>::default();
        registry.register(
            "outbox_aws_calls",
            "AWS API calls made by the engine, by operation (e.g. dynamodb:DescribeTable)",
            aws_calls.clone(),
        );
        let pipelines = Family::<ReadyLabel, Gauge>::default();
        registry.register(
            "outbox_pipelines",
            "OutboxPipelines known to this controller, by their Ready condition",
            pipelines.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "outbox_leader",
            "1 while this replica leads and may change AWS (always 1 without leader election)",
            leader.clone(),
        );
        let healthy = Family::<PipelineLabel, Gauge>::default();
        registry.register(
            "outbox_pipeline_healthy",
            "The Healthy condition per pipeline: 1 True (Flowing, Idle), 0 False, -1 Unknown",
            healthy.clone(),
        );
        let iterator_age = Family::<PipelineLabel, Gauge>::default();
        registry.register(
            "outbox_pipeline_iterator_age_seconds",
            "The relay's iterator age per pipeline (maximum over the last 5 minutes; 0 without records)",
            iterator_age.clone(),
        );
        // Both series exist from the start, so dashboards and alerts see 0 rather than nothing.
        pipelines
            .get_or_create(&ReadyLabel { ready: "true" })
            .set(0);
        pipelines
            .get_or_create(&ReadyLabel { ready: "false" })
            .set(0);
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            aws_calls,
            pipelines,
            leader,
            healthy,
            iterator_age,
            ready_by_pipeline: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one reconciliation and its duration.
    pub fn reconciled(&self, duration: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(duration.as_secs_f64());
    }

    /// Records whether this replica leads (`outbox_leader`).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts one failed reconciliation.
    pub fn reconcile_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one AWS API call; the engine's call observer feeds this.
    pub fn aws_call(&self, operation: &str) {
        self.aws_calls
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// Records a pipeline's current Ready state.
    pub fn set_pipeline_ready(&self, key: &str, ready: bool) {
        let mut map = self
            .ready_by_pipeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(key.to_owned(), ready);
        self.update_pipeline_gauges(&map);
    }

    /// Records a pipeline's Healthy condition status (`"True"`, `"False"`, `"Unknown"`) and
    /// its relay's iterator age.
    pub fn set_pipeline_health(&self, key: &str, healthy: &str, iterator_age_seconds: i64) {
        let label = PipelineLabel {
            pipeline: key.to_owned(),
        };
        let value = match healthy {
            "True" => 1,
            "False" => 0,
            _ => -1,
        };
        self.healthy.get_or_create(&label).set(value);
        self.iterator_age
            .get_or_create(&label)
            .set(iterator_age_seconds);
    }

    /// Forgets a pipeline (deleted).
    pub fn forget_pipeline(&self, key: &str) {
        let label = PipelineLabel {
            pipeline: key.to_owned(),
        };
        self.healthy.remove(&label);
        self.iterator_age.remove(&label);
        let mut map = self
            .ready_by_pipeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.remove(key);
        self.update_pipeline_gauges(&map);
    }

    fn update_pipeline_gauges(&self, map: &HashMap<String, bool>) {
        let ready = map.values().filter(|r| **r).count();
        let not_ready = map.len() - ready;
        self.pipelines
            .get_or_create(&ReadyLabel { ready: "true" })
            .set(i64::try_from(ready).unwrap_or(i64::MAX));
        self.pipelines
            .get_or_create(&ReadyLabel { ready: "false" })
            .set(i64::try_from(not_ready).unwrap_or(i64::MAX));
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// What `/readyz` reports: set once the controller watches (or, with leader election, once this
/// replica knows whether it leads).
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The HTTP routes: `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(serve_readyz))
        .with_state(AppState { metrics, readiness })
}

async fn serve_metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn serve_readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves the routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn pipelines_gauge_counts_each_pipeline_once_by_ready_state() {
        let m = Metrics::new();
        m.set_pipeline_ready("ns/a", false);
        m.set_pipeline_ready("ns/a", true);
        m.set_pipeline_ready("ns/b", false);
        m.set_pipeline_ready("ns/c", true);
        m.forget_pipeline("ns/c");
        let text = m.encode().unwrap_or_default();
        assert_eq!(
            line_value(&text, r#"outbox_pipelines{ready="true"}"#),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, r#"outbox_pipelines{ready="false"}"#),
            Some(1.0)
        );
    }

    #[test]
    fn health_gauges_per_pipeline_go_with_the_pipeline() {
        let m = Metrics::new();
        m.set_pipeline_health("ns/a", "False", 420);
        m.set_pipeline_health("ns/b", "True", 0);
        m.set_pipeline_health("ns/c", "Unknown", 0);
        let text = m.encode().unwrap_or_default();
        assert_eq!(
            line_value(&text, r#"outbox_pipeline_healthy{pipeline="ns/a"}"#),
            Some(0.0)
        );
        assert_eq!(
            line_value(&text, r#"outbox_pipeline_healthy{pipeline="ns/b"}"#),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, r#"outbox_pipeline_healthy{pipeline="ns/c"}"#),
            Some(-1.0)
        );
        assert_eq!(
            line_value(
                &text,
                r#"outbox_pipeline_iterator_age_seconds{pipeline="ns/a"}"#
            ),
            Some(420.0)
        );
        m.forget_pipeline("ns/a");
        let text = m.encode().unwrap_or_default();
        assert_eq!(
            line_value(&text, r#"outbox_pipeline_healthy{pipeline="ns/a"}"#),
            None
        );
    }

    #[test]
    fn errors_and_aws_calls_are_labelled() {
        let m = Metrics::new();
        m.reconcile_error("AccessDenied");
        m.reconcile_error("AccessDenied");
        m.aws_call("dynamodb:DescribeTable");
        m.reconciled(Duration::from_millis(120));
        let text = m.encode().unwrap_or_default();
        assert_eq!(
            line_value(
                &text,
                r#"outbox_reconcile_errors_total{reason="AccessDenied"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            line_value(
                &text,
                r#"outbox_aws_calls_total{operation="dynamodb:DescribeTable"}"#
            ),
            Some(1.0)
        );
        assert_eq!(line_value(&text, "outbox_reconciles_total"), Some(1.0));
        assert_eq!(
            line_value(&text, "outbox_reconcile_duration_seconds_count"),
            Some(1.0)
        );
    }

    /// docs/controller.md's metrics table names every metric as `/metrics` exposes it (a counter
    /// with its `_total` suffix), and no metric the code does not export.
    #[test]
    fn the_controller_docs_name_every_exported_metric() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/controller.md");
        let docs = std::fs::read_to_string(path).unwrap_or_default();
        let m = Metrics::new();
        // A labelled family is exposed once it has a series.
        m.reconcile_error("AwsError");
        m.aws_call("dynamodb:DescribeTable");
        m.set_pipeline_health("ns/p", "True", 0);
        let text = m.encode().unwrap_or_default();
        let exported: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| match l.split_once(' ')? {
                (name, "counter") => Some(format!("{name}_total")),
                (name, _) => Some(name.to_owned()),
            })
            .collect();
        assert_eq!(exported.len(), 8, "{text}");
        for name in &exported {
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "docs/controller.md does not list {name}"
            );
        }
        let documented = docs
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("| `outbox_"))
            .filter_map(|l| l.split_once('`'))
            .map(|(rest, _)| format!("outbox_{rest}"));
        for name in documented {
            assert!(
                exported.contains(&name),
                "{name} is documented, not exported"
            );
        }
    }
}
