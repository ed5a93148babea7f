use clap::Parser;
use olm_pullsecret_injector::cli::{self, Cli, Command};
use olm_pullsecret_injector::telemetry::logging;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // explain prints its report on stdout; its logs go elsewhere.
    let _log_guard = match cli.command {
        Command::Explain(_) => logging::init(&cli.log_format, std::io::stderr()),
        _ => logging::init(&cli.log_format, std::io::stdout()),
    };
    cli::run(cli).await
}
