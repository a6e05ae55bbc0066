//! A small stateful fake of the Kubernetes API server for OutboxPipelines, for tests and
//! benchmarks that run the real `outbox-operator run` process without a cluster: pipelines (list,
//! watch with resourceVersion, get, the finalizer JSON patches kube sends, status apply, delete),
//! Leases (get, create, update with resourceVersion) and Events (accepted and counted). Crude on
//! purpose: no validation, no server-side apply merging (a status apply replaces the status).
//!
//! Dev tooling only: never part of the operator or its image.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::broadcast;

pub const PIPELINES: &str = "/apis/outbox.dev/v1alpha1/outboxpipelines";
pub const NS_PIPELINES: &str = "/apis/outbox.dev/v1alpha1/namespaces/default/outboxpipelines";
pub const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

/// Writes the operator made, by kind.
#[derive(Debug, Default)]
pub struct Writes {
    pub status: AtomicU64,
    pub patches: AtomicU64,
    pub events: AtomicU64,
    pub leases: AtomicU64,
    /// How often each status field changed in a status write (`dataPlane.checkedAt`,
    /// `conditions[Ready].reason`, …): what a write that should not have happened changed.
    pub changed: Mutex<BTreeMap<String, u64>>,
}

impl Writes {
    /// (status applies, metadata patches, events, lease writes) so far.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.status.load(Ordering::Relaxed),
            self.patches.load(Ordering::Relaxed),
            self.events.load(Ordering::Relaxed),
            self.leases.load(Ordering::Relaxed),
        )
    }
}

#[derive(Default)]
struct World {
    rv: u64,
    pipelines: BTreeMap<String, Value>,
    leases: HashMap<String, Value>,
    /// Every pipeline watch event with its resourceVersion, for watches started later.
    log: Vec<(u64, Value)>,
}

/// The fake API server's state and handler. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct FakeApi {
    world: Arc<Mutex<World>>,
    events: broadcast::Sender<(u64, Value)>,
    pub writes: Arc<Writes>,
}

fn status(code: u16, reason: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code});
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

fn ok(value: &Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .expect("response")
}

impl FakeApi {
    pub fn new() -> FakeApi {
        let (events, _) = broadcast::channel(1 << 16);
        FakeApi {
            world: Arc::default(),
            events,
            writes: Arc::default(),
        }
    }

    /// Serves the API on `listener` until the process ends.
    pub fn serve(&self, listener: tokio::net::TcpListener) {
        let api = self.clone();
        let app = axum::Router::new().fallback(move |request: Request| api.clone().handle(request));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    /// Every pipeline as stored now.
    pub fn pipelines(&self) -> Vec<Value> {
        let world = self.world.lock().expect("world");
        world.pipelines.values().cloned().collect()
    }

    /// Stores a pipeline version with a new resourceVersion and tells the watches.
    fn put(&self, world: &mut World, kind: &str, mut obj: Value) -> Value {
        world.rv += 1;
        let rv = world.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if kind == "DELETED" {
            world.pipelines.remove(&name);
        } else {
            world.pipelines.insert(name, obj.clone());
        }
        let event = json!({"type": kind, "object": obj});
        world.log.push((rv, event.clone()));
        let _ = self.events.send((rv, event));
        obj
    }

    /// As a user would: create, edit the spec, delete.
    pub fn create(&self, mut obj: Value) {
        let mut world = self.world.lock().expect("world");
        obj["metadata"]["uid"] = json!(format!("uid-{}", world.rv + 1));
        obj["metadata"]["generation"] = json!(1);
        obj["metadata"]["namespace"] = json!("default");
        self.put(&mut world, "ADDED", obj);
    }

    pub fn edit(&self, name: &str, change: impl FnOnce(&mut Value)) {
        let mut world = self.world.lock().expect("world");
        let Some(mut obj) = world.pipelines.get(name).cloned() else {
            panic!("no pipeline {name}")
        };
        change(&mut obj["spec"]);
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
        obj["metadata"]["generation"] = json!(generation + 1);
        self.put(&mut world, "MODIFIED", obj);
    }

    pub fn delete(&self, name: &str) {
        let mut world = self.world.lock().expect("world");
        let Some(mut obj) = world.pipelines.get(name).cloned() else {
            return;
        };
        if obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
        {
            self.put(&mut world, "DELETED", obj);
            return;
        }
        obj["metadata"]["deletionTimestamp"] = json!("2026-11-29T00:00:00Z");
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
        obj["metadata"]["generation"] = json!(generation + 1);
        self.put(&mut world, "MODIFIED", obj);
    }

    pub fn pipeline(&self, name: &str) -> Option<Value> {
        self.world
            .lock()
            .expect("world")
            .pipelines
            .get(name)
            .cloned()
    }

    pub fn lease_holder(&self) -> Option<String> {
        let world = self.world.lock().expect("world");
        world
            .leases
            .get("outbox-operator")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }

    pub async fn handle(self, request: Request) -> Response {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let bytes = axum::body::to_bytes(request.into_body(), 16 << 20)
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if path == "/version" {
            return ok(
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
            );
        }
        if path == PIPELINES && method == Method::GET {
            if query.contains("watch=true") {
                return self.watch(&query);
            }
            let world = self.world.lock().expect("world");
            let items: Vec<Value> = world.pipelines.values().cloned().collect();
            return ok(
                &json!({"apiVersion": "outbox.dev/v1alpha1", "kind": "OutboxPipelineList",
                "metadata": {"resourceVersion": world.rv.to_string()}, "items": items}),
            );
        }
        if let Some(rest) = path.strip_prefix(&format!("{NS_PIPELINES}/")) {
            let (name, sub) = match rest.split_once('/') {
                Some((n, s)) => (n.to_owned(), Some(s.to_owned())),
                None => (rest.to_owned(), None),
            };
            return self.pipeline_request(&method, &name, sub.as_deref(), body);
        }
        if path.starts_with(LEASES) {
            return self.lease_request(&method, &path, body);
        }
        if path.contains("/events") {
            self.writes.events.fetch_add(1, Ordering::Relaxed);
            return ok(&body);
        }
        status(404, "NotFound")
    }

    fn watch(&self, query: &str) -> Response {
        let since: u64 = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("resourceVersion="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (backlog, last, mut live) = {
            let world = self.world.lock().expect("world");
            let backlog: Vec<Value> = world
                .log
                .iter()
                .filter(|(rv, _)| *rv > since)
                .map(|(_, e)| e.clone())
                .collect();
            let last = world.log.last().map_or(since, |(rv, _)| *rv).max(since);
            (backlog, last, self.events.subscribe())
        };
        let stream = async_stream(backlog, move |sink| async move {
            while let Ok((rv, event)) = live.recv().await {
                if rv > last && sink.send(event).is_err() {
                    return;
                }
            }
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .expect("response")
    }

    fn pipeline_request(
        &self,
        method: &Method,
        name: &str,
        sub: Option<&str>,
        body: Value,
    ) -> Response {
        let mut world = self.world.lock().expect("world");
        let Some(mut obj) = world.pipelines.get(name).cloned() else {
            return status(404, "NotFound");
        };
        match (method.clone(), sub) {
            (Method::GET, None) => ok(&obj),
            (Method::PATCH, Some("status")) => {
                self.writes.status.fetch_add(1, Ordering::Relaxed);
                let mut changed = Vec::new();
                changed_paths(&obj["status"], &body["status"], String::new(), &mut changed);
                if let Ok(mut counts) = self.writes.changed.lock() {
                    for path in changed {
                        *counts.entry(path).or_default() += 1;
                    }
                }
                obj["status"] = body["status"].clone();
                ok(&self.put(&mut world, "MODIFIED", obj))
            }
            (Method::PATCH, None) => {
                self.writes.patches.fetch_add(1, Ordering::Relaxed);
                if let Err(reason) = json_patch_finalizers(&mut obj, &body) {
                    return status(422, &reason);
                }
                let gone = obj["metadata"]["deletionTimestamp"].is_string()
                    && obj["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(|f| f.is_empty());
                let kind = if gone { "DELETED" } else { "MODIFIED" };
                ok(&self.put(&mut world, kind, obj))
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }

    fn lease_request(&self, method: &Method, path: &str, mut body: Value) -> Response {
        if *method != Method::GET {
            self.writes.leases.fetch_add(1, Ordering::Relaxed);
        }
        let mut world = self.world.lock().expect("world");
        let name = path
            .strip_prefix(&format!("{LEASES}/"))
            .unwrap_or("")
            .to_owned();
        match *method {
            Method::GET => match world.leases.get(&name) {
                Some(l) => ok(l),
                None => status(404, "NotFound"),
            },
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
                if world.leases.contains_key(&name) {
                    return status(409, "AlreadyExists");
                }
                world.rv += 1;
                body["metadata"]["resourceVersion"] = json!(world.rv.to_string());
                world.leases.insert(name, body.clone());
                ok(&body)
            }
            Method::PUT => {
                let current = world
                    .leases
                    .get(&name)
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current != Some(body["metadata"]["resourceVersion"].clone()) {
                    return status(409, "Conflict");
                }
                world.rv += 1;
                body["metadata"]["resourceVersion"] = json!(world.rv.to_string());
                world.leases.insert(name, body.clone());
                ok(&body)
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }
}

/// A newline-delimited JSON stream: the backlog, then what `live` sends.
fn async_stream<F, Fut>(
    backlog: Vec<Value>,
    live: F,
) -> impl futures::Stream<Item = Result<String, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Value>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    for e in backlog {
        let _ = tx.send(e);
    }
    tokio::spawn(live(tx));
    futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        Some((Ok(format!("{event}\n")), rx))
    })
}

/// The paths of the leaves that differ between two statuses; list items that have a `type`
/// (conditions) are matched by it.
fn changed_paths(old: &Value, new: &Value, at: String, out: &mut Vec<String>) {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                changed_paths(x, y, join(k), out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.iter().chain(b).all(|v| v["type"].is_string()) => {
            let by_type = |l: &[Value]| -> BTreeMap<String, Value> {
                l.iter()
                    .map(|v| (v["type"].as_str().unwrap_or("").to_owned(), v.clone()))
                    .collect()
            };
            let (a, b) = (by_type(a), by_type(b));
            let types: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for t in types {
                let (x, y) = (
                    a.get(t).unwrap_or(&Value::Null),
                    b.get(t).unwrap_or(&Value::Null),
                );
                changed_paths(x, y, format!("{at}[{t}]"), out);
            }
        }
        (a, b) if a != b => out.push(at),
        _ => {}
    }
}

/// The JSON patches kube's finalizer helper sends: test/add/remove on /metadata/finalizers.
fn json_patch_finalizers(obj: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch.as_array().ok_or("not a JSON patch")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("no path")?;
        let rest = path
            .strip_prefix("/metadata/finalizers")
            .ok_or(format!("unsupported path {path}"))?;
        let finalizers = &mut obj["metadata"]["finalizers"];
        let index = rest.strip_prefix('/');
        match (op["op"].as_str().unwrap_or(""), index) {
            ("test", None) => {
                if *finalizers != op["value"] {
                    return Err("test failed".into());
                }
            }
            ("test", Some(i)) => {
                let i: usize = i.parse().map_err(|_| "bad index")?;
                if finalizers.get(i) != Some(&op["value"]) {
                    return Err("test failed".into());
                }
            }
            ("add", None) => *finalizers = op["value"].clone(),
            ("add", Some("-")) => match finalizers.as_array_mut() {
                Some(a) => a.push(op["value"].clone()),
                None => *finalizers = json!([op["value"].clone()]),
            },
            ("remove", Some(i)) => {
                let i: usize = i.parse().map_err(|_| "bad index")?;
                let a = finalizers.as_array_mut().ok_or("no finalizers")?;
                if i >= a.len() {
                    return Err("bad index".into());
                }
                a.remove(i);
            }
            (other, _) => return Err(format!("unsupported op {other}")),
        }
    }
    Ok(())
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi::new()
    }
}

#[cfg(test)]
mod tests {
    use super::changed_paths;
    use serde_json::json;

    #[test]
    fn changed_paths_names_each_changed_leaf_and_matches_conditions_by_type() {
        let old = json!({"dataPlane": {"checkedAt": "t1", "mappingState": "Enabled"},
                         "conditions": [{"type": "Ready", "status": "True"},
                                        {"type": "Healthy", "status": "True", "reason": "Idle"}]});
        // Same content, conditions in another order, one timestamp and one reason changed,
        // one field added.
        let new = json!({"dataPlane": {"checkedAt": "t2", "mappingState": "Enabled"},
                         "conditions": [{"type": "Healthy", "status": "True", "reason": "Flowing"},
                                        {"type": "Ready", "status": "True"}],
                         "observedGeneration": 2});
        let mut out = Vec::new();
        changed_paths(&old, &new, String::new(), &mut out);
        assert_eq!(
            out,
            [
                "conditions[Healthy].reason",
                "dataPlane.checkedAt",
                "observedGeneration"
            ]
        );
        let mut none = Vec::new();
        changed_paths(&old, &old.clone(), String::new(), &mut none);
        assert!(none.is_empty());
    }
}
