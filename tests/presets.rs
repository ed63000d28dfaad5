//! `--preset weppcloud` and `--preset bess` (COMPAT.md rows P1, P2, S1, S2, R1, W1, W5): each
//! starts and serves its routes against a real redis-server, and `--print-config` shows how
//! the route layers merge: preset < `[[route]]` in the file < `RINGCAST_ROUTE_<NAME>_<KEY>` <
//! `--route NAME.KEY=VALUE`, with `--redis` (or the seed services' `REDIS_*`, `WS_HOST`,
//! `WS_PORT`) pointing the preset's sources and listener. A route on all interfaces (the
//! presets' default) is noted at start. Bad values exit 2 with one line.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};

use common::{Client, Gateway, RedisServer, TIMEOUT, hermetic};

/// A finished `ringcast` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Kills the child if the test fails while it still runs.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ringcast ARGS` with `env` (nothing else of the configuration's environment) and waits
/// for it to exit.
fn ringcast(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    hermetic(&mut cmd)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Reaped(cmd.spawn().expect("spawn ringcast"));
    // The output is a few KiB: it fits in the pipes, so waiting first cannot deadlock.
    let status = common::wait_exit(&mut child.0, TIMEOUT);
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// `ringcast ARGS --print-config` with `env`, parsed; fails unless it exits 0.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let mut all = args.to_vec();
    all.push("--print-config");
    let run = ringcast(&all, env);
    assert_eq!(run.code, Some(0), "{all:?} failed: {}", run.stderr);
    toml::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("--print-config is not TOML ({e}):\n{}", run.stdout))
}

/// The `[[NAME]]` table whose `name` is `name`.
fn table<'t>(config: &'t toml::Table, array: &str, name: &str) -> &'t toml::Table {
    config
        .get(array)
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_table())
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
        .unwrap_or_else(|| panic!("no [[{array}]] named {name:?} in {config:#?}"))
}

/// Key `key` of table `[[route]] name`, as text.
fn route_key(config: &toml::Table, name: &str, key: &str) -> String {
    let value = &table(config, "route", name)[key];
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// The `redis` URL of `[[source]] name`.
fn source_url(config: &toml::Table, name: &str) -> String {
    as_text(&table(config, "source", name)["redis"])
}

fn as_text(value: &toml::Value) -> String {
    value.as_str().expect("a string").to_owned()
}

/// A config file in the temp directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "ringcast-presets-{}-{tag}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write config file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const LEGACY_ALL_FALSE: &str = r#"{"type": "preflight", "checklist": {"sbs_map": false, "channels": false, "outlet": false, "subcatchments": false, "landuse": false, "soils": false, "climate": false, "rap_ts": false, "wepp": false, "observed": false, "debris": false, "watar": false, "dss_export": false}, "lock_statuses": {"watershed": false, "climate": false, "wepp": false, "soils": false, "landuse": false, "disturbed": false}}"#;

const WEPPCLOUD_REDIS: &str = "redis://10.1.2.3:6400/7";

#[test]
fn weppcloud_starts_and_serves_preflight_and_status() {
    let redis = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    // Preflight's listener from a flag, Status's from the environment.
    let gw = Gateway::start_with_env(
        &[
            "--shards",
            "2",
            "--preset",
            "weppcloud",
            "--redis",
            &url,
            "--route",
            "preflight.listen=127.0.0.1:0",
        ],
        &[("RINGCAST_ROUTE_STATUS_LISTEN", "127.0.0.1:0")],
    );
    let preflight = gw.route_addr("preflight");
    let status = gw.route_addr("status");
    // Both on loopback and an ephemeral port: the flag and the variable replaced the preset's
    // 0.0.0.0:9001 and 0.0.0.0:9002.
    for addr in [preflight, status] {
        assert!(addr.ip().is_loopback(), "{addr}");
        assert!(![9001, 9002].contains(&addr.port()), "{addr}");
    }
    assert_ne!(preflight, status);
    for addr in [preflight, status] {
        assert_eq!(
            common::http(addr, "GET", "/health", &[], b""),
            (200, "OK".to_string()),
            "{addr}"
        );
    }

    let mut p = Client::connect(preflight, "/weppcloud-microservices/preflight/run1");
    assert_eq!(p.recv_text(), LEGACY_ALL_FALSE);

    let mut s = Client::connect(status, "/weppcloud-microservices/status/run1:wepp");
    redis.wait_numsub("run1:wepp", 1);
    redis.cmd(&["PUBLISH", "run1:wepp", "hello"]);
    assert_eq!(s.recv_text(), r#"{"type": "status", "data": "hello"}"#);
}

#[test]
fn a_route_on_all_interfaces_is_noted_at_start() {
    let redis = RedisServer::start();
    // Status on all interfaces, as the preset's 0.0.0.0:9002 (on a free port); Preflight on
    // loopback.
    let gw = Gateway::weppcloud(&redis, &["--route", "status.listen=0.0.0.0:0"]);
    let port = gw.route_addr("status").port();
    let log = gw.log.lock().unwrap();
    let want = format!(
        "route \"status\" listens on 0.0.0.0:{port} (all interfaces, as the original did; set \
         --route status.listen=127.0.0.1:{port} for loopback only)"
    );
    assert_eq!(
        log.iter().filter(|l| l.ends_with(&want)).count(),
        1,
        "{log:?}"
    );
    assert!(
        !log.iter()
            .any(|l| l.contains("route \"preflight\" listens on")),
        "{log:?}"
    );
}

#[test]
fn bess_starts_and_serves_ws() {
    let redis = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let gw = Gateway::start(&[
        "--preset",
        "bess",
        "--redis",
        &url,
        "--route",
        "bess.listen=127.0.0.1:0",
    ]);
    let addr = gw.route_addr("bess");
    assert_eq!(
        common::http(addr, "GET", "/health", &[], b""),
        (200, "OK".to_string())
    );
    let mut c = Client::connect(addr, "/ws");
    assert_eq!(c.recv_text(), "{}");
}

#[test]
fn weppcloud_print_config_points_each_source_at_redis_keeping_its_db() {
    let config = print_config(&["--preset", "weppcloud", "--redis", WEPPCLOUD_REDIS], &[]);
    assert_eq!(config["preset"].as_str(), Some("weppcloud"));
    assert_eq!(route_key(&config, "preflight", "listen"), "0.0.0.0:9001");
    assert_eq!(route_key(&config, "status", "listen"), "0.0.0.0:9002");
    assert_eq!(source_url(&config, "preflight"), "redis://10.1.2.3:6400/0");
    assert_eq!(source_url(&config, "status"), "redis://10.1.2.3:6400/2");
    assert_eq!(
        route_key(&config, "preflight", "sources"),
        r#"["preflight"]"#
    );
    assert_eq!(route_key(&config, "status", "sources"), r#"["status"]"#);
    assert_eq!(route_key(&config, "preflight", "profile"), "preflight");
    assert_eq!(route_key(&config, "status", "profile"), "status");
    // One lock_statuses for the old page (fixed keys) and today's preflight.js (*.nodb names).
    assert_eq!(route_key(&config, "preflight", "locks"), "both");
    assert_eq!(route_key(&config, "preflight", "checklist"), "legacy");
    for route in ["preflight", "status"] {
        assert_eq!(route_key(&config, route, "heartbeat"), "json");
        assert_eq!(route_key(&config, route, "ping_interval"), "30s");
        assert_eq!(route_key(&config, route, "pong_timeout"), "65s");
        assert_eq!(route_key(&config, route, "hangup"), "false");
    }

    // The seed services' variables: weppcloud's sources still keep their own DBs, and the
    // BESS variables do not touch its listeners.
    let env = [
        ("REDIS_HOST", "h"),
        ("REDIS_PORT", "6380"),
        ("REDIS_DB", "3"),
        ("WS_PORT", "8123"),
    ];
    let config = print_config(&["--preset", "weppcloud"], &env);
    assert_eq!(source_url(&config, "preflight"), "redis://h:6380/0");
    assert_eq!(source_url(&config, "status"), "redis://h:6380/2");
    assert_eq!(route_key(&config, "preflight", "listen"), "0.0.0.0:9001");
    assert_eq!(route_key(&config, "status", "listen"), "0.0.0.0:9002");
}

#[test]
fn bess_print_config_takes_the_seed_variables() {
    let config = print_config(
        &["--preset", "bess", "--redis", "redis://10.1.2.3:6400/5"],
        &[],
    );
    assert_eq!(source_url(&config, "bess"), "redis://10.1.2.3:6400/5");
    assert_eq!(route_key(&config, "bess", "listen"), "0.0.0.0:8001");
    assert_eq!(route_key(&config, "bess", "path"), "/ws");
    assert_eq!(route_key(&config, "bess", "profile"), "bess");
    assert_eq!(route_key(&config, "bess", "heartbeat"), "ws");
    assert_eq!(route_key(&config, "bess", "ping_interval"), "20s");
    assert_eq!(route_key(&config, "bess", "pong_timeout"), "20s");

    // WebsocketServerMS's .env: REDIS_* for the source (the bess source takes the DB), WS_PORT
    // and WS_HOST for the listener.
    let env = [("REDIS_HOST", "h"), ("REDIS_DB", "3"), ("WS_PORT", "8123")];
    let config = print_config(&["--preset", "bess"], &env);
    assert_eq!(source_url(&config, "bess"), "redis://h:6379/3");
    assert_eq!(route_key(&config, "bess", "listen"), "0.0.0.0:8123");
    let env = [
        ("REDIS_HOST", "h"),
        ("WS_HOST", "127.0.0.1"),
        ("WS_PORT", "8123"),
    ];
    let config = print_config(&["--preset", "bess"], &env);
    assert_eq!(source_url(&config, "bess"), "redis://h:6379/0");
    assert_eq!(route_key(&config, "bess", "listen"), "127.0.0.1:8123");
    // ringcast's own route variable, then the flag, beat WS_PORT.
    let env = [
        ("REDIS_HOST", "h"),
        ("WS_PORT", "8123"),
        ("RINGCAST_ROUTE_BESS_LISTEN", "127.0.0.1:8124"),
    ];
    let config = print_config(&["--preset", "bess"], &env);
    assert_eq!(route_key(&config, "bess", "listen"), "127.0.0.1:8124");
    let config = print_config(
        &["--preset", "bess", "--route", "bess.listen=127.0.0.1:8125"],
        &env,
    );
    assert_eq!(route_key(&config, "bess", "listen"), "127.0.0.1:8125");
}

#[test]
fn route_layers_merge_key_by_key_flag_over_env_over_file_over_preset() {
    let file = TempFile::new(
        "layers",
        "[[route]]\nname = \"preflight\"\nping_interval = \"5s\"\n",
    );
    let args = [
        "--preset",
        "weppcloud",
        "--redis",
        WEPPCLOUD_REDIS,
        "--config",
        file.path(),
    ];
    // The file sets one key of a preset route; the others stay the preset's.
    let config = print_config(&args, &[]);
    assert_eq!(route_key(&config, "preflight", "ping_interval"), "5s");
    assert_eq!(route_key(&config, "preflight", "listen"), "0.0.0.0:9001");
    assert_eq!(route_key(&config, "preflight", "pong_timeout"), "65s");
    assert_eq!(route_key(&config, "preflight", "heartbeat"), "json");
    assert_eq!(route_key(&config, "preflight", "profile"), "preflight");
    assert_eq!(
        route_key(&config, "preflight", "sources"),
        r#"["preflight"]"#
    );
    assert_eq!(route_key(&config, "status", "ping_interval"), "30s");

    let env = [
        ("RINGCAST_ROUTE_PREFLIGHT_PING_INTERVAL", "6s"),
        // A variable for a route no layer names creates nothing.
        ("RINGCAST_ROUTE_EXTRA_LISTEN", "127.0.0.1:9"),
    ];
    let config = print_config(&args, &env);
    assert_eq!(route_key(&config, "preflight", "ping_interval"), "6s");
    assert_eq!(route_key(&config, "preflight", "listen"), "0.0.0.0:9001");
    let routes = config["route"].as_array().expect("routes");
    assert_eq!(routes.len(), 2, "{routes:?}");

    let mut with_flag = args.to_vec();
    with_flag.extend(["--route", "preflight.ping_interval=7s"]);
    let config = print_config(&with_flag, &env);
    assert_eq!(route_key(&config, "preflight", "ping_interval"), "7s");
    assert_eq!(route_key(&config, "preflight", "listen"), "0.0.0.0:9001");
    assert_eq!(route_key(&config, "status", "ping_interval"), "30s");
}

#[test]
fn print_config_reads_back_as_the_same_config() {
    let first = ringcast(
        &[
            "--preset",
            "weppcloud",
            "--redis",
            WEPPCLOUD_REDIS,
            "--route",
            "status.hangup=true",
            "--print-config",
        ],
        &[],
    );
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let file = TempFile::new("roundtrip", &first.stdout);
    let second = ringcast(&["--config", file.path(), "--print-config"], &[]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_eq!(second.stdout, first.stdout);
}

/// Runs `args` and checks it exits 2 with one line on stderr containing every `needle`.
fn fails_with_one_line(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let run = ringcast(args, env);
    assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
    assert_eq!(run.stdout, "", "{args:?}");
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n'), "more than one line: {line}");
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
}

#[test]
fn bad_route_values_and_unknown_presets_exit_2_with_one_line() {
    let base = ["--preset", "weppcloud", "--redis", WEPPCLOUD_REDIS];
    let with = |extra: &[&'static str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args
    };
    fails_with_one_line(
        &with(&["--route", "preflight.heartbeat=nope", "--print-config"]),
        &[],
        &["preflight", "heartbeat", "nope", "--route"],
    );
    fails_with_one_line(
        &with(&["--print-config"]),
        &[("RINGCAST_ROUTE_STATUS_PING_INTERVAL", "soon")],
        &[
            "status",
            "ping_interval",
            "RINGCAST_ROUTE_STATUS_PING_INTERVAL",
        ],
    );
    fails_with_one_line(
        &with(&["--route", "preflight.colour=red", "--print-config"]),
        &[],
        &["colour"],
    );
    // A timeout the sweep could not enforce.
    fails_with_one_line(
        &with(&["--route", "preflight.pong_timeout=20ms", "--print-config"]),
        &[],
        &["preflight", "pong_timeout", "100ms"],
    );
    fails_with_one_line(
        &["--preset", "nope", "--print-config"],
        &[],
        &["preset", "nope"],
    );
    // Not only --print-config: a server start fails the same way, before listening.
    fails_with_one_line(&["--preset", "nope"], &[], &["preset", "nope"]);
    // A preset route's override without the preset names the flag and the missing preset.
    fails_with_one_line(
        &["--route", "preflight.listen=127.0.0.1:0"],
        &[],
        &[
            "--route preflight.listen=",
            "has no profile",
            "add --preset weppcloud",
        ],
    );
}

/// `deploy/weppcloud.toml` and `deploy/bess.toml` (shown in docs/MIGRATING.md) are what the
/// presets expand to: loading either file without a preset gives the preset's routes and sources.
#[test]
fn deploy_examples_match_their_presets() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (preset, file, routes) in [
        (
            "weppcloud",
            "deploy/weppcloud.toml",
            &["preflight", "status"][..],
        ),
        ("bess", "deploy/bess.toml", &["bess"][..]),
    ] {
        let path = format!("{root}/{file}");
        let from_file = print_config(&["--config", &path], &[]);
        let from_preset = print_config(&["--preset", preset], &[]);
        for name in routes {
            for key in [
                "listen",
                "path",
                "profile",
                "sources",
                "heartbeat",
                "ping_interval",
                "checklist",
                "locks",
            ] {
                assert_eq!(
                    route_key(&from_file, name, key),
                    route_key(&from_preset, name, key),
                    "{file}: route {name} key {key}"
                );
            }
        }
        let source = routes[0];
        assert_eq!(
            source_url(&from_file, source),
            source_url(&from_preset, source),
            "{file}: source {source}"
        );
    }
}

#[test]
fn superdarn_print_config_and_origin_list() {
    let config = print_config(&["--preset", "superdarn"], &[]);
    assert_eq!(route_key(&config, "superdarn", "listen"), "0.0.0.0:5003");
    assert_eq!(route_key(&config, "superdarn", "path"), "/socket.io/");
    assert_eq!(route_key(&config, "superdarn", "profile"), "socketio");
    assert_eq!(route_key(&config, "superdarn", "ping_interval"), "25s");
    assert_eq!(route_key(&config, "superdarn", "pong_timeout"), "20s");
    assert_eq!(route_key(&config, "superdarn", "max_payload"), "1000000");
    assert_eq!(route_key(&config, "superdarn", "channels"), r#"["*"]"#);
    // The preset's allow-list is the original's (the one the Engine.IO layer documents).
    let origins = &table(&config, "route", "superdarn")["origins"];
    let origins: Vec<&str> = origins
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect();
    assert_eq!(
        origins,
        ringcast::transport::engineio::handshake::SUPERDARN_ORIGINS
    );
    // Keys only a socketio route has are refused elsewhere, naming the route.
    let run = ringcast(
        &["--preset", "bess", "--route", "bess.max_payload=2000"],
        &[],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("only the socketio profile has it"),
        "{}",
        run.stderr
    );
}
