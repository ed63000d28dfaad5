//! The `ringcast` binary: parse the configuration, set up logging, run the server.

use std::process::ExitCode;

use ringcast::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::load();
    if config.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let log_format = config.log_format;
    match ringcast::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Said once: as a JSON log line when logs are JSON, else as one plain line.
            match log_format {
                LogFormat::Json => tracing::error!("{e}"),
                LogFormat::Text => eprintln!("ringcast: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr: human-readable by default, JSON lines with `--log-format json`. `RUST_LOG`,
/// when set, overrides `--log-level`.
fn init_logging(config: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&config.log_level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
}
