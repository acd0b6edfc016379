//! `provider-standin`: serves the provider stand-in of [`mercator_provider_standin`].

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use mercator_provider_standin::{app, AppState, ExpectedApiKey, StandinConfig};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A stand-in for the OpenAI and Anthropic APIs, for tests, the local demo and benchmarks.
/// It is not a provider: its answers are fixed text.
#[derive(Parser)]
#[command(name = "provider-standin", version)]
struct Cli {
    /// Address to listen on, such as 127.0.0.1:8089 (port 0 picks a free port).
    #[arg(long)]
    listen: SocketAddr,

    /// Refuse provider calls that do not carry one of these keys (Authorization: Bearer
    /// for OpenAI, x-api-key for Anthropic); repeat for each provider's key.
    #[arg(long, env = "PROVIDER_STANDIN_EXPECT_API_KEY", hide_env_values = true)]
    expect_api_key: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let cli = Cli::parse();
    match serve(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "provider stand-in stopped on an error");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> std::io::Result<()> {
    let listener = TcpListener::bind(cli.listen).await?;
    let address = listener.local_addr()?;

    let expected_api_keys: Vec<ExpectedApiKey> = cli
        .expect_api_key
        .into_iter()
        .map(ExpectedApiKey::new)
        .collect();
    let expected_redacted: Vec<String> = expected_api_keys
        .iter()
        .map(ExpectedApiKey::redacted)
        .collect();
    let state = AppState::new(StandinConfig { expected_api_keys });

    // Tests and scripts wait for this line: it is printed only once the port accepts.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "provider stand-in listening on {address}")?;
    stdout.flush()?;
    tracing::info!(
        listen.address = %address,
        api_key.expected = match expected_redacted.is_empty() {
            true => "any".to_owned(),
            false => expected_redacted.join(","),
        },
        "provider stand-in listening"
    );

    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("provider stand-in stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "provider stand-in cannot watch SIGINT");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "provider stand-in cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("provider stand-in shutting down");
}
