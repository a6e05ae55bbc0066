//! The standalone CLI as a user runs it: the real binary, its exit codes and its output.
//! Manifest errors need no AWS at all; the lifecycle test runs against the local emulator
//! (moto server, started by `make unit`; `OUTBOX_TEST_ENDPOINT`).

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_outbox-operator");

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// The emulator's endpoint; `None` (skip) outside CI when it is not running, a failure in CI.
fn endpoint() -> Option<String> {
    match std::env::var("OUTBOX_TEST_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "OUTBOX_TEST_ENDPOINT is not set: CI must run these tests against the emulator (make unit)"
            )
        }
        _ => {
            eprintln!("skipping: OUTBOX_TEST_ENDPOINT not set (run `make unit`)");
            None
        }
    }
}

fn cli(args: &[&str], endpoint: &str, cluster: &str, stdin: Option<&str>) -> Output {
    let mut cmd = command(args, endpoint, cluster);
    run(&mut cmd, stdin.map(str::as_bytes))
}

/// The binary with the test's AWS environment, not yet started.
fn command(args: &[&str], endpoint: &str, cluster: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env("OUTBOX_CLUSTER_ID", cluster)
        .env(
            "OUTBOX_ARTIFACTS_DIR",
            repo("operator/tests/fixtures/artifacts"),
        )
        // One attempt per AWS call: tests that expect a connection failure fail fast.
        .env("AWS_MAX_ATTEMPTS", "1");
    cmd
}

/// Runs `cmd` with `stdin` written to it (the binary may stop reading early: an oversize
/// input is refused after its first bytes, so a broken pipe is expected then).
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn outbox-operator");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Err(e) = pipe.write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    child.wait_with_output().expect("wait outbox-operator")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An endpoint where nothing listens: any AWS call would fail with a connection error.
const NOWHERE: &str = "http://127.0.0.1:9";

#[test]
fn invalid_manifest_fails_naming_document_and_field_before_any_aws_call() {
    let bad = std::fs::read_to_string(repo("examples/user-lifecycle.yaml"))
        .expect("example")
        .replace("batchSize: 100", "batchSize: 0");
    let input = format!(
        "{}\n---\n{bad}",
        std::fs::read_to_string(repo("examples/user-created.yaml")).expect("example")
    );
    for cmd in ["apply", "plan", "delete", "status"] {
        let out = cli(&[cmd, "-f", "-"], NOWHERE, "cli-invalid", Some(&input));
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {all}");
        assert!(all.contains("<stdin> document 2"), "{cmd}: {all}");
        assert!(all.contains("spec.relay.batchSize"), "{cmd}: {all}");
        // Nothing was attempted: no connection error, no per-pipeline output.
        assert!(!all.contains("dispatch failure"), "{cmd}: {all}");
        assert!(!all.contains("default/user-created"), "{cmd}: {all}");
    }
}

#[test]
fn unknown_field_and_invalid_yaml_are_named() {
    let out = cli(
        &["plan", "-f", "-"],
        NOWHERE,
        "cli-invalid",
        Some(
            "apiVersion: outbox.dev/v1alpha1\nkind: OutboxPipeline\nmetadata: {name: x}\nspec:\n  tabel: {}\n",
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("tabel"), "{}", text(&out));

    let out = cli(
        &["plan", "-f", "-"],
        NOWHERE,
        "cli-invalid",
        Some("spec: [oops"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("invalid YAML"), "{}", text(&out));

    let out = cli(
        &["plan", "-f", "/nonexistent/pipeline.yaml"],
        NOWHERE,
        "x",
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("/nonexistent/pipeline.yaml"),
        "{}",
        text(&out)
    );
}

fn example(name: &str) -> String {
    std::fs::read_to_string(repo(&format!("examples/{name}"))).expect("example")
}

/// Nothing was attempted in AWS: no connection error, no per-pipeline output.
fn assert_no_aws_call(cmd: &str, all: &str) {
    assert!(!all.contains("dispatch failure"), "{cmd}: {all}");
    assert!(!all.contains("default/user-created"), "{cmd}: {all}");
}

#[test]
fn oversize_input_is_refused_naming_it() {
    let big = format!(
        "# {}\n{}",
        "x".repeat(5 * 1024 * 1024),
        example("user-created.yaml")
    );
    let mut cmd = command(&["plan", "-f", "-"], NOWHERE, "cli-big");
    let out = run(&mut cmd, Some(big.as_bytes()));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("<stdin>: larger than 4 MiB"), "{all}");
    assert_no_aws_call("plan", &all);

    // An endless input is refused too, instead of exhausting memory.
    let out = cli(&["plan", "-f", "/dev/zero"], NOWHERE, "cli-big", None);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("/dev/zero: larger than 4 MiB"), "{all}");
}

#[test]
fn the_same_pipeline_in_two_inputs_is_refused_before_any_aws_call() {
    let file = repo("examples/user-created.yaml");
    let input = format!(
        "{}\n---\n{}",
        example("user-lifecycle.yaml"),
        example("user-created.yaml")
    );
    for cmd in ["apply", "plan", "delete", "status"] {
        let out = cli(
            &[cmd, "-f", &file, "-f", "-"],
            NOWHERE,
            "cli-dup",
            Some(&input),
        );
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {all}");
        assert!(
            all.contains(&format!(
                "default/user-created is defined twice: {file} document 1 (default/user-created) \
                 and <stdin> document 2 (default/user-created)"
            )),
            "{cmd}: {all}"
        );
        assert!(!all.contains("dispatch failure"), "{cmd}: {all}");
    }
}

#[test]
fn invalid_cluster_id_is_refused_by_every_command_before_any_aws_call() {
    let file = repo("examples/user-created.yaml");
    for cmd in ["apply", "plan", "delete", "status"] {
        for id in ["", "has space", &"x".repeat(129)] {
            let out = cli(&[cmd, "-f", &file, "--cluster-id", id], NOWHERE, "ok", None);
            let all = text(&out);
            assert_eq!(out.status.code(), Some(1), "{cmd} {id:?}: {all}");
            assert!(all.contains("--cluster-id"), "{cmd} {id:?}: {all}");
            assert_no_aws_call(cmd, &all);
        }
        // From the environment (the chart's way) as well.
        let out = cli(&[cmd, "-f", &file], NOWHERE, "has space", None);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", text(&out));
        assert!(text(&out).contains("OUTBOX_CLUSTER_ID"), "{}", text(&out));
    }
}

#[test]
fn apply_warns_when_no_permissions_boundary_is_set() {
    let file = repo("examples/user-created.yaml");
    let warning = "warning: no --permissions-boundary-arn";
    // The AWS calls fail (nothing listens), after the warning.
    let out = cli(
        &["apply", "-f", &file, "--timeout", "1s"],
        NOWHERE,
        "cli-warn",
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches(warning).count(),
        1,
        "one warning line expected: {stderr}"
    );
    assert!(
        stderr.contains("iam"),
        "the warning explains the IAM consequence: {stderr}"
    );

    let boundary = "arn:aws:iam::123456789012:policy/outbox-boundary";
    let out = cli(
        &[
            "apply",
            "-f",
            &file,
            "--timeout",
            "1s",
            "--permissions-boundary-arn",
            boundary,
        ],
        NOWHERE,
        "cli-warn",
        None,
    );
    assert!(!text(&out).contains(warning), "{}", text(&out));
    // plan creates nothing: no warning.
    let out = cli(&["plan", "-f", &file], NOWHERE, "cli-warn", None);
    assert!(!text(&out).contains(warning), "{}", text(&out));
}

#[test]
fn artifacts_dir_falls_back_to_the_checkouts_target_artifacts() {
    if std::path::Path::new("/artifacts").exists() {
        eprintln!("skipping: /artifacts exists here, so it is the default");
        return;
    }
    let checkout = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        checkout.path().join("Cargo.toml"),
        "[workspace]\nmembers = []\n",
    )
    .expect("write Cargo.toml");
    let nested = checkout.path().join("operator").join("src");
    std::fs::create_dir_all(&nested).expect("mkdir");
    let file = repo("examples/user-created.yaml");
    let expected = checkout.path().join("target").join("artifacts");

    let mut cmd = command(&["plan", "-f", &file], NOWHERE, "cli-artifacts");
    cmd.env_remove("OUTBOX_ARTIFACTS_DIR").current_dir(&nested);
    let out = run(&mut cmd, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("using Lambda zips from {}", expected.display())),
        "{stderr}"
    );

    // Given explicitly, the directory is used as is and nothing is said about it.
    let mut cmd = command(&["plan", "-f", &file], NOWHERE, "cli-artifacts");
    cmd.current_dir(&nested);
    let out = run(&mut cmd, None);
    assert!(!text(&out).contains("Lambda zips from"), "{}", text(&out));

    // Outside any workspace: /artifacts stays, and the message says what to set.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(&["plan", "-f", &file], NOWHERE, "cli-artifacts");
    cmd.env_remove("OUTBOX_ARTIFACTS_DIR")
        .current_dir(elsewhere.path());
    let out = run(&mut cmd, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--artifacts-dir"), "{stderr}");
}

#[test]
fn plan_apply_status_delete_lifecycle() {
    let Some(endpoint) = endpoint() else { return };
    // A unique name per run keeps runs on one long-lived emulator apart.
    let name = format!("cli-{}", std::process::id());
    let manifest = std::fs::read_to_string(repo("examples/user-created.yaml"))
        .expect("example")
        .replace(
            "name: user-created\n  namespace",
            &format!("name: {name}\n  namespace"),
        )
        .replace("name: users", &format!("name: {name}-bus"))
        .replace(
            "  writer:\n    enabled: true",
            "  writer:\n    enabled: true\n  tags:\n    suite: cli",
        );
    let cluster = "cli-test";
    let pipeline = format!("default/{name}");

    let plan = cli(
        &["plan", "-f", "-", "--exit-code"],
        &endpoint,
        cluster,
        Some(&manifest),
    );
    assert_eq!(
        plan.status.code(),
        Some(2),
        "fresh pipeline: changes pending\n{}",
        text(&plan)
    );
    assert!(
        text(&plan).contains("create dynamodb table"),
        "{}",
        text(&plan)
    );

    let apply = cli(
        &["apply", "-f", "-", "--timeout", "2m"],
        &endpoint,
        cluster,
        Some(&manifest),
    );
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(
        text(&apply).contains(&format!("{pipeline}: Ready")),
        "{}",
        text(&apply)
    );

    let plan = cli(
        &["plan", "-f", "-", "--exit-code"],
        &endpoint,
        cluster,
        Some(&manifest),
    );
    assert_eq!(
        plan.status.code(),
        Some(0),
        "after apply: in sync\n{}",
        text(&plan)
    );
    assert!(text(&plan).contains("in sync"));

    let status = cli(
        &["status", "-f", "-", "-o", "json"],
        &endpoint,
        cluster,
        Some(&manifest),
    );
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let json: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status -o json prints JSON");
    let s = &json[&pipeline];
    for field in [
        "tableArn",
        "streamArn",
        "relayFunctionArn",
        "busArn",
        "eventSourceMappingUuid",
    ] {
        assert!(s[field].is_string(), "status lacks {field}: {s}");
    }
    let ready = s["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready condition");
    assert_eq!(ready["status"], "True");

    let yaml = cli(
        &["status", "-f", "-", "-o", "yaml"],
        &endpoint,
        cluster,
        Some(&manifest),
    );
    assert!(String::from_utf8_lossy(&yaml.stdout).contains("tableArn:"));

    let delete = cli(
        &["delete", "-f", "-", "--timeout", "2m"],
        &endpoint,
        cluster,
        Some(&manifest),
    );
    assert_eq!(delete.status.code(), Some(0), "{}", text(&delete));
    let out = text(&delete);
    assert!(out.contains(&format!("{pipeline}: deleted")), "{out}");
    assert!(
        out.contains("retain dynamodb table"),
        "the table is kept by default: {out}"
    );

    // After delete only the retained table is left: a new plan recreates the rest.
    let plan = cli(
        &["plan", "-f", "-", "--exit-code"],
        &endpoint,
        cluster,
        Some(&manifest),
    );
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(
        !text(&plan).contains("create dynamodb table"),
        "{}",
        text(&plan)
    );
}
