//! `rpc-gateway`: serves the services a configuration file names over HTTP/JSON.
//!
//! ```text
//! rpc-gateway --config gateway.toml
//! ```
//!
//! It prints `listening on ADDR` once it accepts requests, and stops on Ctrl-C (SIGINT) or
//! SIGTERM, letting the requests under way finish.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rpc_gateway::{Config, Gateway};

/// Serves services over HTTP/JSON, as a configuration file describes.
#[derive(Debug, Parser)]
#[command(name = "rpc-gateway", version)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Listens here instead of where the file says (`127.0.0.1:0` for any free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rpc-gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let mut config = Config::from_file(&cli.config).map_err(|err| err.to_string())?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    let gateway = Gateway::from_config(&config).await.map_err(|err| err.to_string())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
    let local = listener.local_addr().map_err(|err| err.to_string())?;
    println!("listening on {local}");
    gateway.serve(listener, stop()).await.map_err(|err| err.to_string())
}

/// Completes on Ctrl-C, or SIGTERM on Unix.
async fn stop() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
