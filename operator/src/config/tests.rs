//! Unit tests of flag parsing and validation for `run` and the CLI commands.

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct TestCli {
    #[command(flatten)]
    run: RunArgs,
}

/// Parses flags only: the env vars are switched off, so the tests do not depend on the
/// environment they run in (`make test` sets AWS_REGION and OUTBOX_ARTIFACTS_DIR).
fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut argv = vec!["outbox-operator"];
    argv.extend_from_slice(args);
    let matches = TestCli::command()
        .mut_args(|a| a.env(None::<&str>))
        .try_get_matches_from(argv)?;
    TestCli::from_arg_matches(&matches).map(|c| c.run)
}

#[test]
fn defaults_match_the_documented_ones() {
    let args = parse(&["--cluster-id", "prod-1"]).map_err(|e| e.to_string());
    let Ok(args) = args else {
        panic!("parse failed: {args:?}")
    };
    let config = args.into_config();
    let Ok(config) = config else {
        panic!("invalid: {config:?}")
    };
    assert_eq!(config.resync_period, Duration::from_secs(300));
    assert_eq!(config.concurrency, 4);
    assert_eq!(config.metrics_port, 8080);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.namespace, None);
    assert_eq!(
        config
            .leader_election
            .as_ref()
            .map(|l| l.lease_name.clone()),
        Some("outbox-operator".to_owned())
    );
    assert_eq!(
        config.leader_election.map(|l| l.timings),
        Some(LeaseTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        })
    );
    assert_eq!(config.engine.artifacts_dir, PathBuf::from("/artifacts"));
    assert!(!config.engine.allow_adoption);
    assert!(!config.identity.is_empty());
}

#[test]
fn bool_flags_accept_explicit_values_as_the_chart_passes_them() {
    let args = parse(&[
        "--cluster-id",
        "c",
        "--leader-election=false",
        "--allow-adoption",
        "--resync-period",
        "90s",
        "--namespace",
        "team-a",
        "--log-format",
        "text",
    ])
    .map_err(|e| e.to_string());
    let Ok(args) = args else {
        panic!("parse failed: {args:?}")
    };
    assert!(args.engine.allow_adoption);
    assert!(!args.leader_election);
    let config = args.into_config();
    let Ok(config) = config else {
        panic!("invalid: {config:?}")
    };
    assert_eq!(config.leader_election, None);
    assert_eq!(config.resync_period, Duration::from_secs(90));
    assert_eq!(config.namespace.as_deref(), Some("team-a"));
    assert_eq!(config.log_format, LogFormat::Text);
}

#[test]
fn cluster_id_is_required() {
    use clap::CommandFactory;
    let cmd = TestCli::command();
    let arg = cmd.get_arguments().find(|a| a.get_id() == "cluster_id");
    assert!(arg.is_some_and(|a| a.is_required_set() && a.get_default_values().is_empty()));
}

#[test]
fn invalid_values_are_rejected_with_the_flag_named() {
    let cases: [(&[&str], &str); 5] = [
        (&["--cluster-id", "has space"], "--cluster-id"),
        (
            &["--cluster-id", "c", "--concurrency", "0"],
            "--concurrency",
        ),
        (
            &["--cluster-id", "c", "--resync-period", "0s"],
            "--resync-period",
        ),
        (
            &["--cluster-id", "c", "--permissions-boundary-arn", "nope"],
            "--permissions-boundary-arn",
        ),
        (
            &["--cluster-id", "c", "--endpoint-url", "localhost:4566"],
            "--endpoint-url",
        ),
    ];
    for (args, flag) in cases {
        let args = parse(args).map_err(|e| e.to_string());
        let Ok(args) = args else {
            panic!("parse failed: {args:?}")
        };
        match args.into_config() {
            Ok(_) => panic!("{flag}: accepted"),
            Err(e) => assert!(e.to_string().contains(flag), "{e}"),
        }
    }
}

#[test]
fn lease_timings_must_let_the_leader_stop_before_its_lease_expires() {
    let cases: [(&[&str], &str); 4] = [
        (&["--renew-deadline", "15s"], "--renew-deadline"),
        (&["--lease-duration", "8s"], "--renew-deadline"),
        (&["--retry-period", "10s"], "--retry-period"),
        (&["--retry-period", "10ms"], "--retry-period"),
    ];
    for (extra, flag) in cases {
        let mut args = vec!["--cluster-id", "c"];
        args.extend_from_slice(extra);
        let Ok(args) = parse(&args) else {
            panic!("parse failed: {extra:?}")
        };
        match args.into_config() {
            Ok(_) => panic!("{extra:?}: accepted"),
            Err(e) => assert!(e.to_string().contains(flag), "{e}"),
        }
    }
    // Without leader election the timings do not matter.
    let Ok(args) = parse(&[
        "--cluster-id",
        "c",
        "--leader-election=false",
        "--renew-deadline",
        "1m",
    ]) else {
        panic!("parse failed")
    };
    assert!(args.into_config().is_ok());
    let Ok(args) = parse(&[
        "--cluster-id",
        "c",
        "--lease-duration",
        "30s",
        "--renew-deadline",
        "20s",
        "--retry-period",
        "500ms",
    ]) else {
        panic!("parse failed")
    };
    let timings = args
        .into_config()
        .ok()
        .and_then(|c| c.leader_election)
        .map(|l| l.timings);
    assert_eq!(
        timings,
        Some(LeaseTimings {
            lease_duration: Duration::from_secs(30),
            renew_deadline: Duration::from_secs(20),
            retry_period: Duration::from_millis(500),
        })
    );
}

#[test]
fn unparsable_values_fail_at_parse_time() {
    assert!(parse(&["--cluster-id", "c", "--resync-period", "soon"]).is_err());
    assert!(parse(&["--cluster-id", "c", "--log-format", "xml"]).is_err());
    assert!(parse(&["--cluster-id", "c", "--leader-election=maybe"]).is_err());
}

#[test]
fn run_warns_at_start_without_a_permissions_boundary() {
    let config = |args: &[&str]| {
        let args = parse(args).map_err(|e| e.to_string());
        let Ok(args) = args else {
            panic!("parse failed: {args:?}")
        };
        args.into_config().map_err(|e| e.to_string())
    };
    for unset in [
        &["--cluster-id", "c"][..],
        &["--cluster-id", "c", "--permissions-boundary-arn", ""],
    ] {
        let Ok(c) = config(unset) else {
            panic!("invalid")
        };
        assert_eq!(c.warnings(), [NO_BOUNDARY_WARNING.to_owned()]);
        assert!(NO_BOUNDARY_WARNING.contains("--permissions-boundary-arn"));
    }
    let boundary = "arn:aws:iam::123456789012:policy/boundary";
    let Ok(c) = config(&["--cluster-id", "c", "--permissions-boundary-arn", boundary]) else {
        panic!("invalid")
    };
    assert!(c.warnings().is_empty());
}

#[test]
fn cli_artifacts_dir_prefers_flag_then_image_then_workspace_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::write(root.join("Cargo.toml"), "[workspace]\nmembers = [\"a\"]\n").expect("write");
    let member = root.join("a");
    std::fs::create_dir_all(member.join("src")).expect("mkdir");
    // A member's own Cargo.toml is not the workspace root.
    std::fs::write(member.join("Cargo.toml"), "[package]\nname = \"a\"\n").expect("write");
    let missing_image = root.join("no-such-artifacts");

    let chosen = cli_artifacts_dir(Some(Path::new("/zips")), &missing_image, &member);
    assert_eq!(
        chosen,
        ArtifactsDir {
            path: "/zips".into(),
            note: None
        }
    );

    let image = root.join("a");
    let chosen = cli_artifacts_dir(None, &image, &member);
    assert_eq!(
        chosen,
        ArtifactsDir {
            path: image.clone(),
            note: None
        }
    );

    let chosen = cli_artifacts_dir(None, &missing_image, &member.join("src"));
    assert_eq!(chosen.path, root.join("target").join("artifacts"));
    assert!(chosen.note.is_some_and(|n| {
        n.contains(&root.join("target").join("artifacts").display().to_string())
    }));

    let outside = tempfile::tempdir().expect("tempdir");
    let chosen = cli_artifacts_dir(None, &missing_image, outside.path());
    assert_eq!(chosen.path, missing_image);
    assert!(chosen.note.is_some_and(|n| n.contains("--artifacts-dir")));
}

#[test]
fn every_flag_documents_its_env_var() {
    use clap::CommandFactory;
    let cmd = TestCli::command();
    for arg in cmd.get_arguments() {
        if arg.get_long().is_some() {
            assert!(arg.get_env().is_some(), "--{} has no env var", arg.get_id());
        }
    }
}
