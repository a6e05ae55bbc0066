//! The relay binary with a bad configuration: one JSON log line at error level naming the
//! variable (what CloudWatch Logs shows and a log query can match), and a failing exit code.

use std::process::Command;

fn start_with(env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("relay binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn the_one_error_line(stdout: &str, stderr: &str) -> serde_json::Value {
    assert!(stderr.trim().is_empty(), "nothing on stderr, got: {stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one log line, got: {stdout}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON log line");
    assert_eq!(line["level"], "ERROR", "{line}");
    line
}

#[test]
fn a_missing_variable_is_one_json_error_line_naming_it() {
    let (code, stdout, stderr) = start_with(&[]);
    assert_eq!(code, Some(1));
    let line = the_one_error_line(&stdout, &stderr);
    let error = line["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(outbox_contract::env::BUS_NAME), "{line}");
}

#[test]
fn an_invalid_variable_is_one_json_error_line_naming_it() {
    let (code, stdout, stderr) = start_with(&[
        (outbox_contract::env::BUS_NAME, "bus"),
        (outbox_contract::env::EVENTS, "not json"),
    ]);
    assert_eq!(code, Some(1));
    let line = the_one_error_line(&stdout, &stderr);
    let error = line["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(outbox_contract::env::EVENTS), "{line}");
}

#[test]
fn no_region_is_one_json_error_line_at_start_not_a_failure_per_call() {
    let events = r#"[{"change":"INSERT","source":"s","detailType":"d","payload":"newImage"}]"#;
    let (code, stdout, stderr) = start_with(&[
        (outbox_contract::env::BUS_NAME, "bus"),
        (outbox_contract::env::EVENTS, events),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    assert_eq!(code, Some(1));
    let line = the_one_error_line(&stdout, &stderr);
    let error = line["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("AWS_REGION"), "{line}");
}
