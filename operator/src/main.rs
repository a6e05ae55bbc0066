use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = outbox_operator::cli::Cli::parse();
    let code = outbox_operator::cli::run(cli).await?;
    std::process::exit(code);
}
