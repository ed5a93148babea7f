use clap::Parser;
use olm_pullsecret_injector::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _log_guard = cli::init_logging(&cli.log_format);
    cli::run(cli).await
}
