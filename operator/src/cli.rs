//! The `outbox-operator` command line.

use clap::{Parser, Subcommand};

/// Kubernetes operator and standalone CLI for a lossless transactional outbox on AWS.
#[derive(Debug, Parser)]
#[command(name = "outbox-operator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the OutboxPipeline CustomResourceDefinition as YAML.
    Crd,
    /// Run the Kubernetes controller
    Run(Box<crate::config::RunArgs>),
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::crd_yaml()?);
            Ok(0)
        }
        Command::Run(args) => crate::controller::run(*args).await,
    }
}
