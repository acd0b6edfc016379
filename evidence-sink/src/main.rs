//! The `evidence-sink` command: parse the command line, set up logging, serve.
//! Everything else lives in the library (`mercator_evidence_sink`).

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mercator_evidence_sink::{serve, OperatorToken, SinkConfig, DEFAULT_MAX_BODY_BYTES};
use tracing_subscriber::EnvFilter;

/// Receives signed evidence records, verifies and stores them, serves queries and exports.
#[derive(Debug, Parser)]
#[command(name = "evidence-sink", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8600")]
    listen: SocketAddr,

    /// Where records live: a SQLite file, created when missing, or a PostgreSQL URL
    /// (`postgres://user:password@host:port/dbname`) shared by several sink replicas.
    #[arg(long, env = "MERCATOR_SINK_DB")]
    db: String,

    /// Trusted keys, shaped like GET /v1/keys: {"keys":[{"key_id":…,"public_key":…}]}.
    #[arg(long)]
    keys: PathBuf,

    /// File holding the base64 seed of the sink's own Ed25519 key, which signs tree heads
    /// (`mercator signing-key new --out FILE` makes one).
    #[arg(long, env = "MERCATOR_TREE_KEY_FILE")]
    tree_key: PathBuf,

    /// SHA-256 (64 hex digits) of the operator token that query, export, erasure and
    /// pruning require; without it those endpoints are refused.
    #[arg(long, env = "MERCATOR_OPERATOR_TOKEN_SHA256", value_parser = parse_token_hash)]
    operator_token_sha256: Option<OperatorToken>,

    /// Records whose timestamp is older than this many days are pruned (their leaves stay);
    /// 0 keeps records for ever.
    #[arg(long, default_value_t = 90)]
    retention_days: u64,

    /// Seconds between two runs of the retention job.
    #[arg(long, default_value_t = 3600)]
    prune_interval_secs: u64,

    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
}

fn parse_token_hash(text: &str) -> Result<OperatorToken, String> {
    OperatorToken::from_sha256_hex(text)
        .ok_or_else(|| "must be the SHA-256 of the token as 64 hex digits".to_owned())
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
        tree_key: cli.tree_key,
        operator: cli.operator_token_sha256,
        retention: (cli.retention_days > 0)
            .then(|| Duration::from_secs(cli.retention_days.saturating_mul(86_400))),
        prune_interval: Duration::from_secs(cli.prune_interval_secs),
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
