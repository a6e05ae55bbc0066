//! Leader election with the fence, against a stateful fake Lease API (tower-test standing in
//! for the API server) and a fake AWS endpoint that counts the requests reaching it.
//!
//! What a user relies on: once the leader cannot renew its Lease for the renew deadline —
//! measured from its last successful renew — or finds the Lease held by someone else, no AWS
//! mutating call leaves the process any more (even from a reconcile still running), before
//! the lease could expire for the others; and the process stops leading (an error: `run` exits
//! non-zero and the pod restarts as a standby).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use outbox_operator::controller::{self, Elector, LeadershipEnded, LeaseTimings};
use outbox_operator::engine::errors::aws_error;
use outbox_operator::engine::{Engine, EngineConfig, EngineError, Fence};
use serde_json::{Value, json};
use tokio::time::Instant;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/outbox-operator";

// ---------------------------------------------------------------------------------------------
// A stateful fake of the Lease API

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Answers as the API server would.
    Up,
    /// Every request fails with 500.
    Failing,
    /// Requests are never answered (a cut connection).
    Hanging,
}

#[derive(Default)]
struct LeaseState {
    lease: Option<Value>,
    resource_version: u64,
    /// When each successful write made `replica` the holder.
    renewals: Vec<Instant>,
}

#[derive(Clone)]
struct LeaseApi {
    state: Arc<Mutex<LeaseState>>,
    mode: Arc<Mutex<Mode>>,
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code});
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status code"))
        .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
        .expect("response")
}

fn ok(value: &Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(value).expect("JSON")))
        .expect("response")
}

impl LeaseApi {
    /// A client for `replica` whose requests this fake answers.
    fn start() -> (LeaseApi, Client) {
        let api = LeaseApi {
            state: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Up)),
        };
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = api.clone();
        tokio::spawn(async move {
            let mut hung = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let mode = *server.mode.lock().expect("mode");
                match mode {
                    Mode::Hanging => hung.push(send),
                    Mode::Failing => send.send_response(status(500, "InternalError")),
                    Mode::Up => send.send_response(server.answer(request).await),
                }
            }
        });
        (api, Client::new(service, "ops"))
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn last_renewal(&self) -> Option<Instant> {
        self.state.lock().expect("state").renewals.last().copied()
    }

    /// Another replica takes the Lease (as after an expiry it observed).
    fn take_over(&self, holder: &str) {
        let mut state = self.state.lock().expect("state");
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        if let Some(lease) = state.lease.as_mut() {
            lease["spec"]["holderIdentity"] = json!(holder);
            lease["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mut state = self.state.lock().expect("state");
        match (method, path.as_str()) {
            (Method::GET, LEASE) => match &state.lease {
                Some(lease) => ok(lease),
                None => status(404, "NotFound"),
            },
            (Method::POST, LEASES) => {
                if state.lease.is_some() {
                    return status(409, "AlreadyExists");
                }
                state.store(body)
            }
            (Method::PUT, LEASE) => {
                let current = state.resource_version.to_string();
                if body["metadata"]["resourceVersion"].as_str() != Some(current.as_str()) {
                    return status(409, "Conflict");
                }
                state.store(body)
            }
            _ => status(404, "NotFound"),
        }
    }
}

impl LeaseState {
    fn store(&mut self, mut lease: Value) -> Response<Body> {
        self.resource_version += 1;
        lease["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        if lease["spec"]["holderIdentity"] == "replica" {
            self.renewals.push(Instant::now());
        }
        let response = ok(&lease);
        self.lease = Some(lease);
        response
    }
}

// ---------------------------------------------------------------------------------------------
// A fake AWS endpoint that counts the requests reaching it

async fn aws_endpoint() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            ([("content-type", "application/x-amz-json-1.0")], "{}")
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}"), hits)
}

/// The engine's DynamoDB client for `endpoint`, behind `fence`.
fn fenced_dynamodb(endpoint: &str, fence: &Fence) -> aws_sdk_dynamodb::Client {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_types::region::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("AKID", "SECRET", None, None, "test"),
        ))
        .endpoint_url(endpoint)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let config = EngineConfig {
        cluster_id: "c1".into(),
        allow_adoption: false,
        allow_delete_adopted_tables: false,
        permissions_boundary_arn: None,
        artifacts_dir: "/artifacts".into(),
    };
    Engine::new(&sdk, config)
        .with_fence(fence.clone())
        .clients_for(None)
        .dynamodb
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Short timings so the tests run in seconds of real time; the ratios are client-go's.
const FAST: LeaseTimings = LeaseTimings {
    lease_duration: Duration::from_millis(3000),
    renew_deadline: Duration::from_millis(2000),
    retry_period: Duration::from_millis(400),
};

/// One mutating call from the "reconcile in flight": reached AWS (true) or was fenced (false).
async fn mutate(dynamodb: &aws_sdk_dynamodb::Client) -> Result<bool, String> {
    match dynamodb.update_table().table_name("t").send().await {
        Ok(_) => Ok(true),
        Err(e) => match aws_error(&e, "UpdateTable", "dynamodb table t") {
            EngineError::NotLeading { .. } => Ok(false),
            other => Err(other.to_string()),
        },
    }
}

/// Leads, then cuts the Lease API in `mode` (or hands the Lease to another replica) and checks
/// the whole chain: the fence drops at the renew deadline (from the last successful renew) and
/// before the lease duration, no mutating call reaches AWS afterwards though the "reconcile"
/// keeps trying, reads still do, and leadership ends with an error.
async fn leader_is_fenced_after(cut: impl FnOnce(&LeaseApi)) -> Duration {
    let (lease_api, client) = LeaseApi::start();
    let (endpoint, hits) = aws_endpoint().await;
    let fence = Fence::new();
    let dynamodb = fenced_dynamodb(&endpoint, &fence);
    let elector = Elector::new(client, "ops", "outbox-operator", "replica", FAST);
    let (lead, mut leading) = tokio::sync::watch::channel(false);
    tokio::spawn(elector.run(fence.clone(), lead));

    // A controller whose reconcile ignores the stop trigger and keeps mutating every 100 ms,
    // recording for each call whether it reached AWS.
    let log: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let sink = log.clone();
    let client_in_flight = dynamodb.clone();
    let follower = tokio::spawn(async move {
        let shutdown = controller::trigger(std::future::pending());
        controller::follow_leadership(&mut leading, shutdown, |_stop| async move {
            loop {
                let reached = mutate(&client_in_flight).await.expect("AWS call");
                sink.lock().expect("log").push((Instant::now(), reached));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    });

    // Lead for a while: several renewals, every call reaches AWS.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fence.is_up(), "leading");
    assert!(lease_api.state.lock().expect("state").renewals.len() >= 3);
    cut(&lease_api);

    // Watch the fence drop.
    let fenced_at = loop {
        if !fence.is_up() {
            break Instant::now();
        }
        assert!(
            lease_api
                .last_renewal()
                .is_some_and(|r| r.elapsed() < FAST.lease_duration),
            "still acting when the lease could expire"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let last_renewal = lease_api.last_renewal().expect("renewed");
    let result = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("leadership must end")
        .expect("follower task");
    assert!(matches!(result, Err(LeadershipEnded::Lost)), "{result:?}");

    let log = log.lock().expect("log").clone();
    let before: Vec<bool> = log
        .iter()
        .filter(|(t, _)| *t < fenced_at)
        .map(|e| e.1)
        .collect();
    assert!(before.iter().filter(|r| **r).count() >= 5, "{log:?}");
    let after: Vec<&(Instant, bool)> = log
        .iter()
        .filter(|(t, _)| *t > fenced_at + Duration::from_millis(5))
        .collect();
    assert!(
        after.len() >= 3,
        "the in-flight reconcile kept trying: {log:?}"
    );
    assert!(
        after.iter().all(|(_, reached)| !reached),
        "a mutating call reached AWS after the fence dropped: {log:?}"
    );
    // Nothing reached the endpoint after the fence: its count equals the calls let through.
    let let_through = log.iter().filter(|e| e.1).count();
    assert_eq!(hits.load(Ordering::SeqCst), let_through);
    // Reads are not fenced.
    dynamodb
        .describe_table()
        .table_name("t")
        .send()
        .await
        .expect("a read passes a lowered fence");
    fenced_at.saturating_duration_since(last_renewal)
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_mutating_at_the_renew_deadline() {
    let after_renewal = leader_is_fenced_after(|api| api.set_mode(Mode::Hanging)).await;
    // Measured from the last successful renew, and strictly before the lease duration.
    assert!(
        after_renewal >= FAST.renew_deadline - Duration::from_millis(20),
        "{after_renewal:?}"
    );
    assert!(
        after_renewal < FAST.lease_duration - Duration::from_millis(500),
        "{after_renewal:?}"
    );
}

#[tokio::test]
async fn a_leader_whose_renewals_fail_keeps_retrying_and_stops_at_the_renew_deadline_not_before() {
    let after_renewal = leader_is_fenced_after(|api| api.set_mode(Mode::Failing)).await;
    // Errors do not shorten or extend the deadline: it counts from the last successful renew.
    assert!(
        after_renewal >= FAST.renew_deadline - Duration::from_millis(20),
        "{after_renewal:?}"
    );
    assert!(
        after_renewal < FAST.lease_duration - Duration::from_millis(500),
        "{after_renewal:?}"
    );
}

#[tokio::test]
async fn a_leader_that_finds_the_lease_held_by_another_stops_at_its_next_renew() {
    let (lease_api, client) = LeaseApi::start();
    let fence = Fence::new();
    let elector = Elector::new(client, "ops", "outbox-operator", "replica", FAST);
    let (lead, mut leading) = tokio::sync::watch::channel(false);
    let election = tokio::spawn(elector.run(fence.clone(), lead));
    leading.wait_for(|l| *l).await.expect("leads");
    assert!(fence.is_up());
    let taken = Instant::now();
    lease_api.take_over("replica-b");
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| !*l))
        .await
        .expect("loses the lease")
        .ok();
    assert!(!fence.is_up());
    assert!(
        taken.elapsed() < FAST.retry_period + Duration::from_millis(1000),
        "{:?}",
        taken.elapsed()
    );
    election.await.expect("the election ends after a loss");
    // It did not write the Lease back.
    let lease = lease_api.state.lock().expect("state").lease.clone();
    assert_eq!(
        lease.map(|l| l["spec"]["holderIdentity"].clone()),
        Some(json!("replica-b"))
    );
}

#[tokio::test(start_paused = true)]
async fn with_the_default_timings_the_fence_drops_ten_seconds_after_the_last_renew() {
    let (lease_api, client) = LeaseApi::start();
    let fence = Fence::new();
    let timings = LeaseTimings::default();
    assert_eq!(timings.lease_duration, Duration::from_secs(15));
    assert_eq!(timings.renew_deadline, Duration::from_secs(10));
    assert_eq!(timings.retry_period, Duration::from_secs(2));
    let elector = Elector::new(client, "ops", "outbox-operator", "replica", timings);
    let (lead, mut leading) = tokio::sync::watch::channel(false);
    tokio::spawn(elector.run(fence.clone(), lead));
    leading.wait_for(|l| *l).await.expect("leads");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let renewals = lease_api.state.lock().expect("state").renewals.len();
    assert!(renewals >= 4, "renews every retry period: {renewals}");
    lease_api.set_mode(Mode::Hanging);
    let last = lease_api.last_renewal().expect("renewed");
    // Up until just before the deadline, down at it.
    tokio::time::sleep_until(last + Duration::from_millis(9_900)).await;
    assert!(fence.is_up(), "still leading before the renew deadline");
    tokio::time::sleep_until(last + Duration::from_millis(10_001)).await;
    assert!(!fence.is_up(), "fenced at the renew deadline");
    assert!(!*leading.borrow(), "no longer leading");
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_an_abandoned_lease_only_after_a_full_lease_duration() {
    let (lease_api, client) = LeaseApi::start();
    // Another replica held the Lease and vanished (no renewals after this record).
    {
        let mut state = lease_api.state.lock().expect("state");
        state.resource_version = 7;
        state.lease = Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "outbox-operator", "namespace": "ops", "resourceVersion": "7"},
            "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 15,
                     "renewTime": "2026-01-01T00:00:00.000000Z"}
        }));
    }
    let fence = Fence::new();
    let elector = Elector::new(
        client,
        "ops",
        "outbox-operator",
        "replica",
        LeaseTimings::default(),
    );
    let (lead, mut leading) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    tokio::spawn(elector.run(fence.clone(), lead));
    leading.wait_for(|l| *l).await.expect("leads eventually");
    let waited = started.elapsed();
    // Its own clock decides, not the (old) renewTime: at least one lease duration of watching.
    assert!(waited >= Duration::from_secs(15), "{waited:?}");
    assert!(waited <= Duration::from_secs(18), "{waited:?}");
    assert!(fence.is_up());
}
