//! End to end: two `outbox-operator run` processes against a small stateful fake of the
//! Kubernetes API server (dev/fake-kube) and moto, each reaching the API server through its own
//! TCP proxy that the test can cut. The leader is cut off while AWS stays reachable; a pipeline is
//! deleted and another one's batch size changed through the API server; the standby takes over.
//! Afterwards no AWS resource of the deleted pipeline exists and the changed setting does not
//! flap back (the cut-off leader does not fight the new one).
//!
//! Needs OUTBOX_TEST_ENDPOINT (moto) like the other wire tests; skipped outside CI without it.
//! E2E_KEEP_LOGS=<dir> keeps both replicas' logs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use outbox_fake_kube::FakeApi;
use outbox_operator::crd::OutboxPipeline;
use outbox_operator::engine::names::Names;
use outbox_operator::engine::{AwsClients, aws_sdk_config};
use serde_json::{Value, json};

const CLUSTER: &str = "e2e-partition";

// ---------------------------------------------------------------------------------------------
// A TCP proxy that can be cut: afterwards every connection (open or new) is closed at once, so
// the cut-off replica's API calls fail fast (hanging calls are covered by tests/leader.rs).

struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

async fn proxy(upstream: u16) -> Proxy {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (cut, cut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut cut_rx = cut_rx.clone();
            tokio::spawn(async move {
                if *cut_rx.borrow() {
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = cut_rx.wait_for(|c| *c) => {}
                }
            });
        }
    });
    Proxy { port, cut }
}

// ---------------------------------------------------------------------------------------------
// The operator processes

struct Operator {
    child: Child,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_operator(dir: &std::path::Path, identity: &str, api_port: u16, aws: &str) -> Operator {
    let kubeconfig = dir.join(format!("{identity}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{api_port}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n    namespace: ops\ncurrent-context: c\n"
        ),
    )
    .expect("kubeconfig");
    let log = dir.join(format!("{identity}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new(env!("CARGO_BIN_EXE_outbox-operator"))
        .args([
            "run",
            "--cluster-id",
            CLUSTER,
            "--region",
            "us-east-1",
            "--endpoint-url",
            aws,
            "--resync-period",
            "1s",
            "--lease-duration",
            "3s",
            "--renew-deadline",
            "2s",
            "--retry-period",
            "500ms",
            "--lease-namespace",
            "ops",
            "--pod-name",
            identity,
            "--log-format",
            "text",
            "--metrics-port",
            &metrics_port.to_string(),
        ])
        // moto never runs the code: the small fixture zips do.
        .arg("--artifacts-dir")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/artifacts"))
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(out.try_clone().expect("log file")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start outbox-operator run");
    Operator { child, log }
}

// ---------------------------------------------------------------------------------------------
// The scenario

fn pipeline(name: &str) -> Value {
    json!({
        "apiVersion": "outbox.dev/v1alpha1",
        "kind": "OutboxPipeline",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "table": {"partitionKey": {"name": "id", "type": "S"}, "streamViewType": "NEW_IMAGE",
                      "deletionProtection": false, "deletionPolicy": "Delete"},
            "bus": {"name": format!("{name}-bus")},
            "relay": {"events": [{"change": "INSERT", "source": "e2e", "detailType": "Created",
                                  "payload": "newImage"}]},
            "consumers": [{"name": "c", "eventPattern": {"source": ["e2e"]}}]
        }
    })
}

fn is_ready(obj: &Value) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn batch_size(aws: &AwsClients, function: &str) -> Option<i32> {
    let out = aws
        .lambda
        .list_event_source_mappings()
        .function_name(function)
        .send()
        .await
        .ok()?;
    out.event_source_mappings()
        .first()
        .and_then(|m| m.batch_size())
}

/// What is left in AWS of the pipeline: names of the resources that still exist.
async fn leftovers(aws: &AwsClients, names: &Names) -> Vec<String> {
    let mut left = Vec::new();
    if aws
        .dynamodb
        .describe_table()
        .table_name(&names.table)
        .send()
        .await
        .is_ok()
    {
        left.push(format!("table {}", names.table));
    }
    if aws
        .lambda
        .get_function()
        .function_name(&names.relay_function)
        .send()
        .await
        .is_ok()
    {
        left.push(format!("function {}", names.relay_function));
    }
    if aws
        .eventbridge
        .describe_event_bus()
        .name(&names.bus)
        .send()
        .await
        .is_ok()
    {
        left.push(format!("bus {}", names.bus));
    }
    if let Ok(out) = aws.iam.list_roles().path_prefix("/outbox/").send().await {
        for role in out.roles() {
            if role.role_name().contains(&names.base) {
                left.push(format!("role {}", role.role_name()));
            }
        }
    }
    if let Ok(out) = aws.lambda.list_functions().send().await {
        for f in out.functions() {
            if f.function_name().is_some_and(|n| n.contains(&names.base)) {
                left.push(format!("function {:?}", f.function_name()));
            }
        }
    }
    if let Ok(out) = aws.s3.list_buckets().send().await {
        for b in out.buckets() {
            if b.name().is_some_and(|n| n.contains(&names.base)) {
                left.push(format!("bucket {:?}", b.name()));
            }
        }
    }
    left
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_does_not_fight_the_new_leader() {
    let Some(aws_endpoint) = std::env::var("OUTBOX_TEST_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "OUTBOX_TEST_ENDPOINT is not set; the wire tests must run in CI"
        );
        eprintln!("skipping: OUTBOX_TEST_ENDPOINT is not set");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix = format!("{:x}", std::process::id());
    let doomed = format!("doomed-{suffix}");
    let kept = format!("kept-{suffix}");

    let api = FakeApi::new();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let api_port = listener.local_addr().expect("addr").port();
    api.serve(listener);
    let proxy_a = proxy(api_port).await;
    let proxy_b = proxy(api_port).await;
    api.create(pipeline(&doomed));
    api.create(pipeline(&kept));

    let op_a = start_operator(dir.path(), "replica-a", proxy_a.port, &aws_endpoint);
    wait_until("replica-a leads", Duration::from_secs(30), || {
        api.lease_holder().as_deref() == Some("replica-a")
    })
    .await;
    let mut op_b = start_operator(dir.path(), "replica-b", proxy_b.port, &aws_endpoint);
    let ready = |name: &str| api.pipeline(name).is_some_and(|p| is_ready(&p));
    let converged = tokio::time::timeout(Duration::from_secs(180), async {
        while !(ready(&doomed) && ready(&kept)) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(
        converged.is_ok(),
        "pipelines not Ready; replica-a log:\n{}",
        tail(&op_a.log)
    );

    let sdk = aws_sdk_config(Some("us-east-1".into()), Some(aws_endpoint.clone())).await;
    let aws = AwsClients::from_conf(&sdk);
    let doomed_obj: OutboxPipeline =
        serde_json::from_value(api.pipeline(&doomed).expect("doomed")).expect("pipeline");
    let kept_obj: OutboxPipeline =
        serde_json::from_value(api.pipeline(&kept).expect("kept")).expect("pipeline");
    let doomed_names = Names::new(CLUSTER, &doomed_obj);
    let kept_names = Names::new(CLUSTER, &kept_obj);
    assert!(!leftovers(&aws, &doomed_names).await.is_empty(), "created");
    assert_eq!(
        batch_size(&aws, &kept_names.relay_function).await,
        Some(100)
    );

    // Cut the leader off the API server; AWS stays reachable for it. Then, as users, delete one
    // pipeline and change the other's batch size.
    proxy_a.cut.send_replace(true);
    api.delete(&doomed);
    api.edit(&kept, |spec| spec["relay"]["batchSize"] = json!(7));

    // The standby takes over and processes both.
    wait_until("replica-b leads", Duration::from_secs(60), || {
        api.lease_holder().as_deref() == Some("replica-b")
    })
    .await;
    let gone = tokio::time::timeout(Duration::from_secs(120), async {
        while api.pipeline(&doomed).is_some() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "deletion not finished; replica-b log:\n{}",
        tail(&op_b.log)
    );
    let mut flaps = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while batch_size(&aws, &kept_names.relay_function).await != Some(7) {
        assert!(tokio::time::Instant::now() < deadline, "batch size never 7");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Watch for a while: the setting stays, nothing of the deleted pipeline comes back.
    for _ in 0..20 {
        let size = batch_size(&aws, &kept_names.relay_function).await;
        if size != Some(7) {
            flaps.push(size);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(flaps.is_empty(), "the batch size flapped: {flaps:?}");
    let left = leftovers(&aws, &doomed_names).await;
    assert!(
        left.is_empty(),
        "resources of the deleted pipeline exist: {left:?}\nreplica-a log:\n{}",
        tail(&op_a.log)
    );
    // And the cut-off leader stopped leading: it exited non-zero (to restart as a standby).
    let mut op_a = op_a;
    let exited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Some(status)) = op_a.child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let Ok(exit) = exited else {
        panic!("the cut-off leader did not exit:\n{}", tail(&op_a.log))
    };
    assert!(!exit.success(), "a lost lease exits non-zero: {exit:?}");
    let log_a = std::fs::read_to_string(&op_a.log).unwrap_or_default();
    assert!(log_a.contains("lost the lease"), "{}", tail(&op_a.log));
    // The startup check found the operator's AWS identity (the emulator's account).
    assert!(
        log_a.contains("AWS identity") && log_a.contains("123456789012"),
        "{}",
        tail(&op_a.log)
    );
    if let Ok(keep) = std::env::var("E2E_KEEP_LOGS") {
        let _ = std::fs::copy(&op_a.log, format!("{keep}/replica-a.log"));
        let _ = std::fs::copy(&op_b.log, format!("{keep}/replica-b.log"));
    }

    // Clean up the kept pipeline's AWS resources through the new leader.
    api.delete(&kept);
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while api.pipeline(&kept).is_some() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let _ = op_b.child.kill();
    drop(proxy_b);
}
