//! The `cryptobot` binary: `cryptobot [--config FILE] [--role all|engine|gateway]`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use cryptobot_server::{Application, Settings, telemetry};

const USAGE: &str = "usage: cryptobot [--config FILE] [--role all|engine|gateway]

Runs the cryptobot server. Settings come from the embedded defaults, then FILE (TOML), then
environment variables CRYPTOBOT__SECTION__KEY (e.g. CRYPTOBOT__SERVER__PORT=9000).
--role sets server.role (over the environment); see docs/operations.md.
Every key is documented in docs/configuration.md. RUST_LOG overrides log.level.";

/// Exit code for a bad command line or configuration.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure to start or run.
const EXIT_RUNTIME: u8 = 1;
/// Exit code of an engine that lost its Redis lease to another engine (docs/operations.md).
const EXIT_FENCED: u8 = 3;

/// `eprintln!` that cannot panic: when whoever read stderr has gone away, the message is lost
/// but the exit code still tells.
macro_rules! report {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let (config_file, role) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            report!("error: {message}\n\n{USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let sources = config_sources(config_file.as_deref(), role.is_some());
    // `--role` is one more override, applied after the environment's.
    let role = role.map(|role| ("CRYPTOBOT__SERVER__ROLE".to_owned(), role));
    let settings =
        match Settings::load_with_env(config_file.as_deref(), std::env::vars().chain(role)) {
            Ok(settings) => settings,
            Err(err) => {
                report!("error: invalid configuration: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
    telemetry::init(&settings.log);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        role = settings.server.role.as_str(),
        config = %sources,
        "cryptobot starting"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            report!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report!("error: {err}");
            match err {
                cryptobot_server::StartupError::LeaseLost { .. } => ExitCode::from(EXIT_FENCED),
                _ => ExitCode::from(EXIT_RUNTIME),
            }
        }
    }
}

/// Where the settings came from, in the order they apply, e.g. `defaults, prod.toml,
/// environment (3 keys), --role`. Values are not shown: some are secrets.
fn config_sources(file: Option<&std::path::Path>, role_flag: bool) -> String {
    let mut sources = vec!["defaults".to_owned()];
    if let Some(file) = file {
        sources.push(file.display().to_string());
    }
    let keys = std::env::vars_os()
        .filter(|(key, _)| key.to_string_lossy().starts_with("CRYPTOBOT__"))
        .count();
    if keys > 0 {
        sources.push(format!("environment ({keys} keys)"));
    }
    if role_flag {
        sources.push("--role".to_owned());
    }
    sources.join(", ")
}

async fn run(settings: Settings) -> Result<(), cryptobot_server::StartupError> {
    // Installed before the server announces that it listens, so a SIGTERM right after start
    // stops it gracefully instead of killing it with the default action.
    let signalled = tokio_util::sync::CancellationToken::new();
    // Detached: it lives as long as the process, or until the first signal.
    let _signals = ShutdownSignals::install(signalled.clone()).spawn();
    // A start can wait (a standby engine for the lease, a broker that is down): a signal during
    // it ends the process too, instead of being swallowed until the start completes.
    let app = tokio::select! {
        app = Application::build(settings) => app?,
        () = signalled.cancelled() => {
            tracing::info!("stopped before the start completed");
            return Ok(());
        }
    };
    let token = app.shutdown_token();
    // A relay of one cancellation to another: no state of its own, so no actor.
    tokio::spawn(async move {
        signalled.cancelled().await;
        token.cancel();
    });
    app.run_until_stopped().await
}

/// SIGTERM and Ctrl-C (SIGINT), listened for from the moment they are installed; the first one
/// cancels the token.
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    /// Cancelled on the first signal.
    shutdown: tokio_util::sync::CancellationToken,
}

impl ShutdownSignals {
    fn install(shutdown: tokio_util::sync::CancellationToken) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(stream) => Some(stream),
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for {name}");
                    None
                }
            };
            Self {
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
                shutdown,
            }
        }
        #[cfg(not(unix))]
        Self { shutdown }
    }

    /// Runs the listener on the tokio runtime.
    fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Waits for the first signal, then cancels the token.
    async fn run(self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(self.terminate) => {}
                () = next(self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
        self.shutdown.cancel();
    }
}

type Args = (Option<PathBuf>, Option<String>);

/// Returns the config file and the role; `Ok(None)` when the arguments asked for help or the
/// version (already printed).
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut config = None;
    let mut role = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                let _ = writeln!(std::io::stdout(), "{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                let _ = writeln!(std::io::stdout(), "cryptobot {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "-c" | "--config" => {
                let file = args.next().ok_or("--config needs a FILE")?;
                config = Some(PathBuf::from(file));
            }
            "--role" => role = Some(args.next().ok_or("--role needs all, engine or gateway")?),
            other => {
                if let Some(file) = other.strip_prefix("--config=") {
                    config = Some(PathBuf::from(file));
                } else if let Some(value) = other.strip_prefix("--role=") {
                    role = Some(value.to_owned());
                } else {
                    return Err(format!("unknown argument {other:?}"));
                }
            }
        }
    }
    Ok(Some((config, role)))
}
