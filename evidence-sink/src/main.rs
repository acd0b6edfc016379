//! The `evidence-sink` command: parse the command line, set up logging, serve.
//! Everything else lives in the library (`mercator_evidence_sink`).

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mercator_evidence_sink::{serve, SinkConfig, DEFAULT_MAX_BODY_BYTES};
use tracing_subscriber::EnvFilter;

/// Receives signed evidence records, verifies and stores them, serves queries and exports.
#[derive(Debug, Parser)]
#[command(name = "evidence-sink", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8600")]
    listen: SocketAddr,

    /// SQLite database file; created when missing.
    #[arg(long)]
    db: PathBuf,

    /// Trusted keys, shaped like GET /v1/keys: {"keys":[{"key_id":…,"public_key":…}]}.
    #[arg(long)]
    keys: PathBuf,

    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = SinkConfig {
        listen: cli.listen,
        db: cli.db,
        keys: cli.keys,
        max_body_bytes: cli.max_body_bytes,
    };

    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "evidence sink cannot run");
            ExitCode::FAILURE
        }
    }
}
