use clap::Parser;
use olm_pullsecret_injector::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _log_guard = olm_pullsecret_injector::logging::init(&cli.log_format, std::io::stdout());
    cli::run(cli).await
}
