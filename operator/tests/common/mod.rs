//! What every wire test against the AWS emulator shares: the endpoint (a failure, not a skip,
//! under CI=true), unique names so test binaries can share one moto server, the fixture Lambda
//! zips, SDK configuration with dummy credentials, and the engine's default settings.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use outbox_operator::engine::{CallInfo, CallObserver, EngineConfig, aws_sdk_config};

/// The emulator endpoint, or None (skip) outside CI.
pub fn endpoint() -> Option<String> {
    match std::env::var("OUTBOX_TEST_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => Some(e),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "OUTBOX_TEST_ENDPOINT is not set; the wire tests must run in CI (make test)"
                );
            }
            eprintln!("skipping: OUTBOX_TEST_ENDPOINT is not set (run `make unit`)");
            None
        }
    }
}

/// Small stand-in Lambda zips for every architecture (moto cannot run them anyway).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/artifacts")
}

/// A suffix unique to this run and test, so reruns against a long-lived moto do not collide.
pub fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{test}-{:x}{:04x}", std::process::id(), nanos & 0xffff)
}

/// SDK configuration for the emulator in us-east-1, with dummy credentials unless the
/// environment has some (make unit sets them).
pub async fn emulator_sdk(endpoint: &str) -> aws_config::SdkConfig {
    if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        }
    }
    aws_sdk_config(Some("us-east-1".into()), Some(endpoint.to_owned())).await
}

/// The engine's settings with every opt-in off and the fixture zips.
pub fn engine_config(cluster_id: &str) -> EngineConfig {
    EngineConfig {
        cluster_id: cluster_id.to_owned(),
        allow_adoption: false,
        allow_delete_adopted_tables: false,
        permissions_boundary_arn: None,
        artifacts_dir: fixtures(),
    }
}

/// A call observer that appends every call to each of `sinks`.
pub fn record_calls(sinks: Vec<Arc<Mutex<Vec<CallInfo>>>>) -> CallObserver {
    Arc::new(move |c: &CallInfo| {
        for s in &sinks {
            if let Ok(mut v) = s.lock() {
                v.push(c.clone());
            }
        }
    })
}
