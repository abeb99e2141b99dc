//! The `cryptobot` binary: `cryptobot [--config FILE]`.

use std::path::PathBuf;
use std::process::ExitCode;

use cryptobot_server::{Application, Settings, telemetry};

const USAGE: &str = "usage: cryptobot [--config FILE]

Runs the cryptobot server. Settings come from the embedded defaults, then FILE (TOML), then
environment variables CRYPTOBOT__SECTION__KEY (e.g. CRYPTOBOT__SERVER__PORT=9000).
Every key is documented in docs/configuration.md. RUST_LOG overrides log.level.";

/// Exit code for a bad command line or configuration.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure to start or run.
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let config_file = match parse_args(std::env::args().skip(1)) {
        Ok(Some(file)) => file,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = match Settings::load(config_file.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(&settings.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn run(settings: Settings) -> Result<(), cryptobot_server::StartupError> {
    let app = Application::build(settings).await?;
    let token = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        token.cancel();
    });
    app.run_until_stopped().await
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = sigterm.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Returns `Ok(None)` when the arguments asked for help or the version (already printed).
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Option<PathBuf>>, String> {
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("cryptobot {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "-c" | "--config" => {
                let file = args.next().ok_or("--config needs a FILE")?;
                config = Some(PathBuf::from(file));
            }
            other => match other.strip_prefix("--config=") {
                Some(file) => config = Some(PathBuf::from(file)),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    Ok(Some(config))
}
