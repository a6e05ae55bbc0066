// The controller's and the engine's futures nest deeper than rustc's default layout query depth
// when the whole workspace is built together (feature unification); kube-rs documents the same.
#![recursion_limit = "256"]

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads (see outbox_operator::memory).
    outbox_operator::memory::tune_allocator();
    let cli = outbox_operator::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(outbox_operator::cli::run(cli))?;
    std::process::exit(code);
}
