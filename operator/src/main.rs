// The controller's and the engine's futures nest deeper than rustc's default layout query depth
// when the whole workspace is built together (feature unification); kube-rs documents the same.
#![recursion_limit = "256"]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = outbox_operator::cli::Cli::parse();
    let code = outbox_operator::cli::run(cli).await?;
    std::process::exit(code);
}
