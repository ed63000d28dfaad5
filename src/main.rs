//! The `ringcast` binary: parse the configuration, set up logging, run the server.

use std::process::ExitCode;

use ringcast::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let pages = small_pages();
    let config = Config::load();
    if config.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    match pages {
        Ok(true) => tracing::debug!("transparent huge pages off for this process"),
        Ok(false) => tracing::info!("transparent huge pages kept (MIMALLOC_ALLOW_THP=1)"),
        Err(e) => tracing::warn!(
            error = %e,
            "could not turn transparent huge pages off; memory per connection will be higher"
        ),
    }
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

/// Turns transparent huge pages off for the whole process (`prctl(PR_SET_THP_DISABLE)`) unless
/// `MIMALLOC_ALLOW_THP=1` asks to keep them; returns whether it did. mimalloc asks for huge pages
/// for its arenas, and a huge page is resident whole once any byte of it is touched: with the
/// connections' state spread over the heap, 10k used idle connections held 51–53 MB of RSS
/// (28 MB of it in huge pages, a 2 MiB step deciding the per-connection figure) against 36 MB
/// without (docs/BENCHMARKS.md, "Huge pages off").
fn small_pages() -> std::io::Result<bool> {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| v == "1") {
        return Ok(false);
    }
    // SAFETY: prctl with PR_SET_THP_DISABLE takes no pointers.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
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
