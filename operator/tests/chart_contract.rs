//! The Helm chart and the binary agree: every environment variable the chart's Deployment sets
//! for the operator is one `outbox-operator run` reads (a renamed flag would otherwise be
//! silently ignored in every cluster).

use clap::CommandFactory;
use outbox_operator::cli::Cli;

/// Env vars the AWS SDK reads itself (credentials from the chart's existing-Secret option).
const READ_BY_THE_SDK: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

#[test]
fn every_env_var_the_chart_sets_is_a_run_flag() {
    // The Deployment's env list is built by the "outbox-operator.env" helper.
    let path = format!(
        "{}/../charts/outbox-operator/templates/_helpers.tpl",
        env!("CARGO_MANIFEST_DIR")
    );
    let template = std::fs::read_to_string(&path).expect("chart helpers template");
    let deployment = std::fs::read_to_string(format!(
        "{}/../charts/outbox-operator/templates/deployment.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("chart deployment template");
    assert!(
        deployment.contains(r#"include "outbox-operator.env""#),
        "the Deployment takes its env from the helper"
    );
    let set: Vec<&str> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(
        set.contains(&"OUTBOX_CLUSTER_ID"),
        "parsed nothing from {path}: {set:?}"
    );

    let cli = Cli::command();
    let run = cli.find_subcommand("run").expect("run subcommand");
    let read: Vec<String> = run
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for var in set {
        assert!(
            read.iter().any(|r| r == var) || READ_BY_THE_SDK.contains(&var),
            "the chart sets {var} but `outbox-operator run` reads none such: {read:?}"
        );
    }
}
