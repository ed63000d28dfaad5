//! The `ringcast` binary takes each knob from a flag, then a `RINGCAST_*` variable, then the
//! `--config` TOML file, then its default; `--help` documents every knob; a bad value is one
//! stderr line naming the knob and exit code 2; `--print-config` shows the result.
//!
//! These tests assume `main` starts with
//! `let cfg = Config::load(); if cfg.print_config { print!("{}", cfg.to_toml()); return; }`.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The binary with every inherited `RINGCAST_*` and `REDIS_*` variable removed (the latter are
/// `--redis` fallbacks), and `CANADA_ADDR` and `MAX_DAYS_STORE_ECHOES` (the SuperDARN
/// originals' fallbacks), so the host can't leak in.
fn ringcast() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("RINGCAST_")
            || name_text.starts_with("REDIS_")
            || name_text == "CANADA_ADDR"
            || name_text == "MAX_DAYS_STORE_ECHOES"
        {
            command.env_remove(name);
        }
    }
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run the ringcast binary")
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// `--print-config` output, parsed back as TOML.
fn printed(command: &mut Command) -> toml::Table {
    let output = run(command.arg("--print-config"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {:?}",
        stderr_lines(&output)
    );
    stdout
        .parse()
        .unwrap_or_else(|e| panic!("--print-config is not TOML ({e}):\n{stdout}"))
}

/// A TOML file in the temp dir, removed on drop.
struct TempToml(PathBuf);

impl TempToml {
    fn new(tag: &str, text: &str) -> TempToml {
        let name = format!("ringcast-it-config-{}-{tag}.toml", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("write temp config");
        TempToml(path)
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Asserts exit code 2 and exactly one stderr line, which contains every one of `needles`.
fn assert_one_line_error(output: &Output, needles: &[&str]) {
    let lines = stderr_lines(output);
    assert_eq!(output.status.code(), Some(2), "stderr: {lines:?}");
    assert_eq!(lines.len(), 1, "stderr: {lines:?}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} not in {:?}",
            lines[0]
        );
    }
}

#[test]
fn bad_flag_value_exits_2_naming_the_knob() {
    let output = run(ringcast().args(["--max-outbox-bytes", "12x"]));
    assert_one_line_error(&output, &["max-outbox-bytes", "--max-outbox-bytes", "12x"]);
}

#[test]
fn bad_env_value_exits_2_naming_the_knob_and_variable() {
    let output = run(ringcast().env("RINGCAST_MAX_OUTBOX_BYTES", "12x"));
    assert_one_line_error(&output, &["max-outbox-bytes", "RINGCAST_MAX_OUTBOX_BYTES"]);
}

#[test]
fn bad_file_value_and_unknown_file_key_exit_2() {
    let file = TempToml::new("bad-value", "max_outbox_bytes = \"12x\"\n");
    let output = run(ringcast().arg("--config").arg(&file.0));
    let path = file.0.to_string_lossy();
    assert_one_line_error(&output, &["max-outbox-bytes", &path]);

    let file = TempToml::new("unknown-key", "max_outbox = \"1MiB\"\n");
    let output = run(ringcast().env("RINGCAST_CONFIG", &file.0));
    assert_one_line_error(&output, &["max_outbox"]);
}

#[test]
fn a_heartbeat_timeout_below_the_sweep_floor_exits_2() {
    let output = run(ringcast().args(["--pong-timeout", "50ms"]));
    assert_one_line_error(&output, &["pong-timeout", "100ms"]);
    let output = run(ringcast().args(["--preset", "bess", "--route", "bess.pong_timeout=10ms"]));
    assert_one_line_error(&output, &["bess", "pong_timeout", "100ms"]);
}

#[test]
fn unknown_flag_exits_2() {
    let output = run(ringcast().arg("--no-such-flag"));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn help_documents_every_knob() {
    let output = run(ringcast()
        .arg("--help")
        .env("RINGCAST_API_KEY", "sekrit-123"));
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    let knobs = [
        "config",
        "listen",
        "shards",
        "pin-cores",
        "io-backend",
        "max-message-bytes",
        "max-outbox-bytes",
        "ping-interval",
        "pong-timeout",
        "idle-timeout",
        "api-key",
        "echo-path",
        "ws-path",
        "log-format",
        "log-level",
        "max-connections",
        "max-subscriptions",
        "shard-inbox",
        "shutdown-timeout",
        "read-buffer-bytes",
        "redis",
        "redis-set-notify",
        "redis-read-on-shard",
        "redis-resp",
        "redis-backoff-max",
        "redis-connect-timeout",
        "radars",
        "canada-addr",
        "max-days-store-echoes",
        "proxy-protocol",
        "max-connections-per-ip",
        "handshake-rate-per-ip",
        "command-rate",
        "head-timeout",
        "preset",
        "print-config",
        "auth",
        "allow-subscribe",
        "allow-watch",
        "jwt-secret",
        "jwt-public-key",
        "jwt-audience",
        "jwt-issuer",
        "admin-listen",
    ];
    for knob in knobs {
        // Followed by its value or by the end of the line (clap puts the help on the next line
        // once the flags are long), so `--redis` is not found inside `--redis-resp`.
        assert!(
            help.contains(&format!("--{knob} ")) || help.contains(&format!("--{knob}\n")),
            "--{knob} missing:\n{help}"
        );
        if knob != "print-config" {
            let var = format!("RINGCAST_{}", knob.replace('-', "_").to_uppercase());
            assert!(help.contains(&var), "{var} missing:\n{help}");
        }
    }
    // `--route NAME.KEY=VALUE` is repeatable and has no variable of its own.
    assert!(help.contains("--route <NAME.KEY=VALUE>"), "{help}");
    assert!(help.contains("RINGCAST_ROUTE_<NAME>_<KEY>"), "{help}");
    assert_eq!(help.matches("[default: ").count(), knobs.len(), "{help}");
    assert!(
        !help.contains("sekrit"),
        "--help shows the API key:\n{help}"
    );
    assert!(
        !help.contains("debug-stall-shard"),
        "the test hook is hidden:\n{help}"
    );
}

#[test]
fn help_hides_the_redis_password_from_the_environment() {
    let output = run(ringcast()
        .arg("--help")
        .env("RINGCAST_REDIS", "redis://app:sekrit@h:6379/0"));
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(!help.contains("sekrit"), "{help}");
}

#[test]
fn bad_redis_values_exit_2_naming_the_knob_and_variable() {
    let output = run(ringcast().env("REDIS_URL", "http://localhost"));
    assert_one_line_error(&output, &["redis", "REDIS_URL"]);

    let output = run(ringcast()
        .env("REDIS_HOST", "localhost")
        .env("REDIS_PORT", "port"));
    assert_one_line_error(&output, &["redis", "REDIS_PORT"]);

    let output = run(ringcast().args(["--redis-resp", "4"]));
    assert_one_line_error(&output, &["redis-resp", "--redis-resp"]);

    let output = run(ringcast().env("RINGCAST_REDIS_BACKOFF_MAX", "10m"));
    assert_one_line_error(
        &output,
        &["redis-backoff-max", "RINGCAST_REDIS_BACKOFF_MAX"],
    );

    let output = run(ringcast().args(["--shards", "2", "--debug-stall-shard", "2"]));
    assert_one_line_error(&output, &["debug-stall-shard", "shards"]);
}

#[test]
fn canada_addr_is_checked_and_printed() {
    let output = run(ringcast().env("CANADA_ADDR", "tcp://nowhere"));
    assert_one_line_error(&output, &["canada-addr", "CANADA_ADDR", "no port"]);
    let output = run(ringcast().args(["--canada-addr", "h:0"]));
    assert_one_line_error(&output, &["canada-addr", "--canada-addr", "1..=65535"]);
    let config = printed(ringcast().env("CANADA_ADDR", "tcp://zmq.example:5555"));
    assert_eq!(
        config.get("canada_addr").and_then(|v| v.as_str()),
        Some("zmq.example:5555")
    );
}

#[test]
fn echo_retention_takes_whole_days_from_any_layer_and_the_originals_variable() {
    let output = run(ringcast().args(["--max-days-store-echoes", "0"]));
    assert_one_line_error(
        &output,
        &["max-days-store-echoes", "--max-days-store-echoes", "0"],
    );
    let output = run(ringcast().env("MAX_DAYS_STORE_ECHOES", "30 days"));
    assert_one_line_error(&output, &["max-days-store-echoes", "MAX_DAYS_STORE_ECHOES"]);

    let config = printed(ringcast().env("MAX_DAYS_STORE_ECHOES", "30"));
    assert_eq!(
        config
            .get("max_days_store_echoes")
            .and_then(|v| v.as_integer()),
        Some(30)
    );
    let config = printed(
        ringcast()
            .env("RINGCAST_MAX_DAYS_STORE_ECHOES", "2")
            .env("MAX_DAYS_STORE_ECHOES", "30"),
    );
    assert_eq!(
        config
            .get("max_days_store_echoes")
            .and_then(|v| v.as_integer()),
        Some(2)
    );
    // Unset everywhere: the original's own default, 30 days.
    let config = printed(&mut ringcast());
    assert_eq!(
        config
            .get("max_days_store_echoes")
            .and_then(|v| v.as_integer()),
        Some(30)
    );
}

#[test]
fn print_config_takes_redis_from_the_seed_variables() {
    let config = printed(
        ringcast()
            .env("REDIS_HOST", "cache")
            .env("REDIS_DB", "2")
            .env("REDIS_PASS", "sekrit"),
    );
    assert_eq!(
        config.get("redis").and_then(|v| v.as_str()),
        Some("redis://:***@cache:6379/2")
    );
    let config = printed(
        ringcast()
            .env("REDIS_URL", "redis://url:6379")
            .env("REDIS_HOST", "cache"),
    );
    assert_eq!(
        config.get("redis").and_then(|v| v.as_str()),
        Some("redis://url:6379/0"),
        "REDIS_URL over REDIS_HOST"
    );
    let config = printed(&mut ringcast());
    assert_eq!(config.get("redis"), None, "embedded broker by default");
    assert_eq!(
        config.get("redis_resp").and_then(|v| v.as_integer()),
        Some(3)
    );
    assert_eq!(
        config.get("redis_set_notify").and_then(|v| v.as_bool()),
        Some(false)
    );
}

#[test]
fn print_config_redacts_the_redis_password_and_reads_back() {
    let output = run(ringcast().args([
        "--print-config",
        "--redis",
        "redis://app:sekrit@cache:6380/1",
        "--redis-set-notify",
        "--redis-backoff-max",
        "30s",
    ]));
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {:?}",
        stderr_lines(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!stdout.contains("sekrit"), "{stdout}");
    assert!(
        stdout.contains("# the redis password is redacted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("redis = \"redis://app:***@cache:6380/1\""),
        "{stdout}"
    );
    assert!(stdout.contains("redis_set_notify = true"), "{stdout}");
    assert!(stdout.contains("redis_backoff_max = \"30s\""), "{stdout}");
    assert!(!stdout.contains("debug_stall_shard"), "{stdout}");

    // The printed file is a valid --config file (with `***` as the password) and prints back
    // the same.
    let file = TempToml::new("redis-read-back", &stdout);
    let again = run(ringcast()
        .arg("--config")
        .arg(&file.0)
        .arg("--print-config"));
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
}

#[test]
fn print_config_shows_flag_over_env_over_file_over_default() {
    let file = TempToml::new(
        "precedence",
        "shards = 3\nmax_outbox_bytes = \"2MiB\"\nping_interval = \"10s\"\nws_path = \"/file\"\n",
    );
    let config = printed(
        ringcast()
            .arg("--config")
            .arg(&file.0)
            .args(["--shards", "7"])
            .env("RINGCAST_SHARDS", "5")
            .env("RINGCAST_PING_INTERVAL", "7s")
            .env("RINGCAST_WS_PATH", "/env"),
    );
    let text = |key: &str| config.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    assert_eq!(
        config.get("shards").and_then(|v| v.as_integer()),
        Some(7),
        "flag over env"
    );
    assert_eq!(
        text("ping_interval").as_deref(),
        Some("7s"),
        "env over file"
    );
    assert_eq!(text("ws_path").as_deref(), Some("/env"), "env over file");
    assert_eq!(
        text("max_outbox_bytes").as_deref(),
        Some("2MiB"),
        "file over default"
    );
    assert_eq!(
        text("max_message_bytes").as_deref(),
        Some("64KiB"),
        "default"
    );
    assert_eq!(text("listen").as_deref(), Some("127.0.0.1:8080"), "default");
}

#[test]
fn print_config_redacts_the_api_key_and_reads_back() {
    let output = run(ringcast()
        .args([
            "--print-config",
            "--api-key",
            "sekrit-123",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--shards", "2"]));
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {:?}",
        stderr_lines(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!stdout.contains("sekrit"), "{stdout}");
    assert!(stdout.contains("api_key = \"<redacted>\""), "{stdout}");

    // The printed file is a valid --config file and prints back the same.
    let file = TempToml::new("read-back", &stdout);
    let again = run(ringcast()
        .arg("--config")
        .arg(&file.0)
        .arg("--print-config"));
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
}
