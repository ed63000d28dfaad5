//! The drop-in presets serve real browser pages as their users run them, on the presets'
//! default settings: a page doing what wepppy's StatusStream does shows every status line and
//! fires its trigger; pages doing what the current and the older preflight.js do show checklist
//! progress and lock icons (by NoDb file name, and by the six fixed keys); and a BESS dashboard
//! that never sends a byte stays connected through protocol pings and shows a later update.
//! The two heartbeat tests scale only the ping interval and timeout down, keeping their meaning.
//!
//! Each page is in `tests/browser/` and cites the original it follows. Headless Chromium runs it
//! through `tests/browser/driver.mjs`; see `tests/common/browser.rs` for what that needs and how
//! a missing browser skips (or fails under `CI=true`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::browser::{self, Page, js_string};
use common::{Gateway, RedisServer, Resp};
use serde_json::{Value, json};

/// `text` percent-encoded for a query string value.
fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The run page's URL on `addr`, carrying what weppcloud's template would put in the page.
fn run_page(addr: SocketAddr, query: &[(&str, &str)]) -> String {
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", query_value(v)))
        .collect();
    format!("http://{addr}/weppcloud/runs/page/?{}", query.join("&"))
}

/// HSET on the run hash (DB 0, what RedisPrep writes).
fn hset(redis: &RedisServer, key: &str, pairs: &[(&str, &str)]) {
    let mut args = vec!["HSET", key];
    for (field, value) in pairs {
        args.extend([*field, *value]);
    }
    assert!(matches!(redis.cmd(&args), Resp::Int(_)), "HSET {key}");
}

/// `style.display` of the element with `id`, as a JavaScript expression.
fn display(id: &str) -> String {
    format!("document.getElementById({}).style.display", js_string(id))
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

#[test]
fn status_stream_page_shows_each_published_line_and_fires_its_trigger() {
    if !browser::available("status_stream_page_shows_each_published_line_and_fires_its_trigger") {
        return;
    }
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    let addr = gw.route_addr("status");
    let run = "rlew-broadband;;batch-7";
    let channel = format!("{run}:wepp");
    let mut page = Page::open(
        "status_stream.html",
        &run_page(addr, &[("runid", run), ("channel", "wepp")]),
    );
    page.wait("rec.opens.length === 1");
    redis.wait_numsub(&channel, 1);
    // encodeURIComponent(runid) + ":" + encodeURIComponent(channel), then init.
    assert_eq!(
        page.eval("rec.urls"),
        json!([format!(
            "ws://{addr}/weppcloud-microservices/status/rlew-broadband%3B%3Bbatch-7:wepp"
        )])
    );
    assert_eq!(page.eval("rec.sent"), json!([r#"{"type":"init"}"#]));

    let lines = [
        "rq:42 STARTED run_wepp_rq(rlew-broadband;;batch-7)",
        "progress: hillslope 1 of 2\nprogress: hillslope 2 of 2",
        "unicode: é ü 雨 🌧 \"quoted\" back\\slash",
        "rq:42 TRIGGER   climate CLIMATE_BUILD_TASK_COMPLETED",
        "rq:42 TRIGGER   wepp WEPP_RUN_TASK_COMPLETED",
    ];
    for line in lines {
        redis.cmd(&["PUBLISH", &channel, line]);
    }
    let log = format!("{}\n", lines.join("\n"));
    page.wait(&format!(
        "document.querySelector('[data-status-log]').textContent === {}",
        js_string(&log)
    ));
    // Only the trigger whose controller is this page's channel fires.
    assert_eq!(
        page.eval("window.triggers"),
        json!([{"event": "WEPP_RUN_TASK_COMPLETED", "controller": "wepp"}])
    );
    assert_eq!(page.eval("rec.closes"), json!([]));
}

#[test]
fn status_stream_page_answers_json_pings_and_stays_subscribed() {
    if !browser::available("status_stream_page_answers_json_pings_and_stays_subscribed") {
        return;
    }
    let redis = RedisServer::start();
    // The default 30 s / 65 s, scaled down with the same meaning: a ping every interval, and a
    // client with no pong for the timeout is closed.
    let gw = Gateway::weppcloud(
        &redis,
        &[
            "--route",
            "status.ping_interval=500ms",
            "--route",
            "status.pong_timeout=3s",
        ],
    );
    let addr = gw.route_addr("status");
    let mut page = Page::open(
        "status_stream.html",
        &run_page(addr, &[("runid", "r1"), ("channel", "climate")]),
    );
    page.wait("rec.opens.length === 1");
    redis.wait_numsub("r1:climate", 1);
    // Three pings answered, or the close that ended it.
    let outcome = page.wait(
        r#"rec.closes.length ? {closed: rec.closes[0]}
         : rec.frames.filter(f => f === '{"type":"ping"}').length >= 3
           && rec.sent.filter(s => s === '{"type":"pong"}').length >= 3
           && {pinged: true}"#,
    );
    assert_eq!(
        outcome,
        json!({"pinged": true}),
        "the page was closed while answering pings"
    );
    redis.cmd(&["PUBLISH", "r1:climate", "still here"]);
    page.wait(r#"document.querySelector('[data-status-log]').textContent === "still here\n""#);
    assert_eq!(page.eval("rec.closes"), json!([]));
    // The browser was pinged (and answered) all along: the page is the only WebSocket.
    assert!(gw.metric("ringcast_pings_total") >= 3);
    assert_eq!(gw.metric("ringcast_pong_timeout_closes_total"), 0);
}

// ---------------------------------------------------------------------------------------------
// Preflight
// ---------------------------------------------------------------------------------------------

#[test]
fn preflight_page_shows_a_lock_by_its_nodb_file_name() {
    if !browser::available("preflight_page_shows_a_lock_by_its_nodb_file_name") {
        return;
    }
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    let run = "rlew-broadband-hydrologist";
    let mut page = Page::open(
        "preflight.html",
        &run_page(gw.route_addr("preflight"), &[("runid", run)]),
    );
    page.wait("window.lastPreflightChecklist !== null");
    assert_eq!(page.eval(&display("run_wepp_lock")), "none");

    // What NoDb locking writes while a WEPP run holds wepp.nodb; the page has handled the
    // update by the time it is recorded (the page's handler runs in the same dispatch).
    hset(&redis, run, &[("locked:wepp.nodb", "true")]);
    page.wait("rec.frames.length === 2");
    let shown = page.eval(&format!(
        "[{}, {}]",
        display("run_wepp_lock"),
        display("pu_wepp_lock")
    ));
    if shown != json!(["inline", "inline"]) {
        let locks = page.eval("window.controller_lock_statuses");
        panic!(
            "after HSET {run} locked:wepp.nodb true the page's wepp.nodb lock icons show \
             {shown}, not inline: it looks locks up by NoDb file name, and the update's \
             lock_statuses were {locks}"
        );
    }
    hset(
        &redis,
        run,
        &[
            ("locked:wepp.nodb", "false"),
            ("locked:climate.nodb", "true"),
        ],
    );
    page.wait(&format!(
        "{} === 'none' && {} === 'inline' && {} === 'inline'",
        display("run_wepp_lock"),
        display("build_climate_lock"),
        display("pu_climate_lock")
    ));
}

#[test]
fn preflight_page_marks_checklist_items_done_as_timestamps_arrive() {
    if !browser::available("preflight_page_marks_checklist_items_done_as_timestamps_arrive") {
        return;
    }
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    let addr = gw.route_addr("preflight");
    // A batch run: the id goes into the path as is, `;` and all.
    let run = "fire-2024;;run-1";
    let mut page = Page::open("preflight.html", &run_page(addr, &[("runid", run)]));
    page.wait("window.lastPreflightChecklist !== null");
    assert_eq!(
        page.eval("rec.urls"),
        json!([format!(
            "ws://{addr}/weppcloud-microservices/preflight/{run}"
        )])
    );
    assert_eq!(page.eval("rec.sent"), json!([r#"{"type":"init"}"#]));
    let emojis = "Object.fromEntries([...document.querySelectorAll('nav a')]\
                  .map(a => [a.getAttribute('href'), a.getAttribute('data-toc-emoji')]))";
    assert_eq!(
        page.eval(emojis),
        json!({
            "#channel-delineation": "", "#outlet": "", "#subcatchments-delineation": "",
            "#landuse-options": "", "#soil-options": "", "#climate-options": "", "#wepp": ""
        })
    );

    hset(&redis, run, &[("timestamps:build_channels", "100")]);
    page.wait(
        "document.querySelector('a[href=\"#channel-delineation\"]').dataset.tocEmoji === '🌊'",
    );
    hset(
        &redis,
        run,
        &[
            ("timestamps:set_outlet", "200"),
            ("timestamps:abstract_watershed", "300"),
            ("timestamps:build_climate", "400"),
        ],
    );
    page.wait("document.querySelector('a[href=\"#climate-options\"]').dataset.tocEmoji === '⛅'");
    assert_eq!(
        page.eval(emojis),
        json!({
            "#channel-delineation": "🌊", "#outlet": "📍", "#subcatchments-delineation": "🧩",
            "#landuse-options": "", "#soil-options": "", "#climate-options": "⛅", "#wepp": ""
        })
    );
}

#[test]
fn older_preflight_page_shows_locks_by_the_six_fixed_keys() {
    if !browser::available("older_preflight_page_shows_locks_by_the_six_fixed_keys") {
        return;
    }
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    let run = "rlew-older-page";
    let mut page = Page::open(
        "preflight_legacy.html",
        &run_page(gw.route_addr("preflight"), &[("runid", run)]),
    );
    let locks = page.wait("window.controller_lock_statuses");
    for key in [
        "watershed",
        "climate",
        "wepp",
        "soils",
        "landuse",
        "disturbed",
    ] {
        assert_eq!(locks[key], false, "fixed key {key} in {locks}");
    }

    // RedisPrep's set_locked_status(key, True) of the older NoDb locking.
    hset(&redis, run, &[("locked:climate", "true")]);
    page.wait(&format!(
        "{} === '' && document.getElementById('btn_build_climate').disabled",
        display("build_climate_lock")
    ));
    hset(
        &redis,
        run,
        &[("locked:climate", "false"), ("locked:watershed", "true")],
    );
    page.wait(&format!(
        "{} === 'none' && {} === '' && {} === ''",
        display("build_climate_lock"),
        display("build_channels_en_lock"),
        display("build_subcatchments_lock")
    ));
    let disabled: Value = page.eval(
        "['btn_build_climate', 'btn_build_channels_en', 'btn_build_subcatchments', 'btn_run_wepp']\
         .map(id => document.getElementById(id).disabled)",
    );
    assert_eq!(disabled, json!([false, true, true, false]));
}

// ---------------------------------------------------------------------------------------------
// BESS
// ---------------------------------------------------------------------------------------------

/// The BESS default pings every 20 s and allows 20 s for the pong; the test keeps that ratio
/// at 1 s so that three intervals pass quickly.
const BESS_PING: Duration = Duration::from_secs(1);

#[test]
fn silent_bess_dashboard_stays_connected_through_pings_and_shows_a_later_update() {
    if !browser::available(
        "silent_bess_dashboard_stays_connected_through_pings_and_shows_a_later_update",
    ) {
        return;
    }
    let redis = RedisServer::start();
    redis.cmd(&["SADD", "info:batteries:ids", "1"]);
    let battery = [
        ("timestamp", "1731801715542"),
        ("voltage", "136"),
        ("current", "108"),
        ("temperature", "347"),
        ("state_of_charge", "36"),
        ("state_of_health", "49"),
    ];
    hset(&redis, "battery:1:data", &battery);
    let ping = format!("bess.ping_interval={}ms", BESS_PING.as_millis());
    let pong = format!("bess.pong_timeout={}ms", BESS_PING.as_millis());
    let gw = Gateway::bess(&redis, &["--route", &ping, "--route", &pong]);
    let addr = gw.route_addr("bess");
    let mut page = Page::open("bess.html", &format!("http://{addr}/dashboard/"));
    let voltage = "document.querySelector('tr[data-battery=\"battery:1:data\"] \
                   td[data-field=\"voltage\"]')?.textContent";
    page.wait(&format!("{voltage} === '136'"));
    assert_eq!(page.eval("window.updates"), 1, "one snapshot");
    redis.wait_numpat(1);

    // Idle for three and a half ping intervals, failing at once if the gateway closes it.
    let idle_ms = BESS_PING.as_millis() * 7 / 2;
    let outcome = page.wait(&format!(
        "rec.closes.length ? {{closed: rec.closes[0], open_ms: rec.closes[0].at - rec.opens[0]}}
         : performance.now() - rec.opens[0] >= {idle_ms} && {{open_ms: performance.now() - rec.opens[0]}}"
    ));
    if !outcome["closed"].is_null() {
        panic!(
            "the silent page was closed after {} ms (ping interval {BESS_PING:?}): {}; a \
             browser answers every ping, so it must stay connected",
            outcome["open_ms"], outcome["closed"]
        );
    }
    assert_eq!(page.eval("rec.sent"), json!([]), "the page never sends");

    // The producer's next record, then its PUBLISH.
    hset(&redis, "battery:1:data", &[("voltage", "137")]);
    redis.cmd(&["PUBLISH", "battery:1:data", "updates"]);
    page.wait(&format!("{voltage} === '137'"));
    let cells = page.eval(
        "Object.fromEntries([...document.querySelectorAll('tr[data-battery=\"battery:1:data\"] td')]\
         .map(td => [td.dataset.field, td.textContent]))",
    );
    assert_eq!(cells["current"], "108", "{cells}");
    assert!(
        cells["ws_timestamp"]
            .as_str()
            .is_some_and(|t| t.parse::<u64>().is_ok()),
        "{cells}"
    );
    assert_eq!(page.eval("rec.closes"), json!([]));
    // The browser was pinged (and answered) all along: the page is the only WebSocket.
    assert!(gw.metric("ringcast_pings_total") >= 3);
    assert_eq!(gw.metric("ringcast_pong_timeout_closes_total"), 0);
}
