//! `--preset superdarn` on its default settings serves a real browser page as the SuperDARN
//! front-end runs it: a page at `http://vt.superdarn.org/` (an Origin on the original's
//! allow-list) loads the Socket.IO client from its own origin and connects twice, websocket-only
//! (the documented client) and with the library's default (long-polling, then the upgrade);
//! both get the same `sas` event from a fake radar's record. The same page from an origin off
//! the list is refused, as the original refused it.
//!
//! Headless Chromium runs `tests/browser/superdarn.html` through `tests/browser/driver.mjs`,
//! which serves the page and `/socket.io.min.js` at the page's URL; the XHRs and WebSockets go to
//! the real gateway. See `tests/common/browser.rs` for what that needs and how a missing
//! browser skips (or fails under `CI=true`).

mod common;
#[path = "common/radar.rs"]
mod radar;

use common::browser::{self, Page};
use common::{Gateway, TempPath};
use radar::FakeRadar;
use serde_json::Value;

/// The preset on its defaults, but on a free loopback port, reading the fake radar.
/// (Its echo store goes to a temp file, not the checkout.)
fn gateway(fake: &FakeRadar) -> (Gateway, String, TempPath) {
    let db = TempPath::new("browser-echoes.sqlite");
    let gw = Gateway::start(&[
        "--preset",
        "superdarn",
        "--route",
        "superdarn.listen=127.0.0.1:0",
        "--route",
        &db.route_arg("superdarn", "echoes_db"),
        "--radars",
        fake.arg(),
    ]);
    let addr = gw.route_addr("superdarn").to_string();
    (gw, addr, db)
}

#[test]
fn superdarn_page_gets_events_over_websocket_and_over_polling_then_upgrade() {
    if !browser::available(
        "superdarn_page_gets_events_over_websocket_and_over_polling_then_upgrade",
    ) {
        return;
    }
    let fake = FakeRadar::start("browser-superdarn");
    let (gw, addr, _db) = gateway(&fake);
    let mut feed = fake.accept();
    let mut page = Page::open(
        "superdarn.html",
        &format!("http://vt.superdarn.org/?gw={addr}"),
    );
    page.wait("rec.ws.connected && rec.def.connected && rec.def.upgraded");
    assert_eq!(page.eval("rec.ws.first"), "websocket");
    assert_eq!(page.eval("rec.def.first"), "polling");
    gw.wait_metric("ringcast_eio_upgrades_total", |n| n >= 1);
    radar::send(&mut feed, &[radar::record(4, 0)]);
    page.wait("rec.ws.events.length === 1 && rec.def.events.length === 1");
    let ws: Value = page.eval("rec.ws.events[0]");
    let def: Value = page.eval("rec.def.events[0]");
    assert_eq!(ws, def, "both transports deliver the same event");
    assert_eq!(ws["site_name"], "sas");
    assert_eq!(ws["beam"], 4);
    assert_eq!(ws["cp"], "stereoscan(153)");
    assert_eq!(page.eval("rec.def.transport"), "websocket");
    assert_eq!(gw.metric("ringcast_eio_origin_refused_total"), 0);
}

#[test]
fn superdarn_page_from_an_origin_off_the_list_is_refused() {
    if !browser::available("superdarn_page_from_an_origin_off_the_list_is_refused") {
        return;
    }
    let fake = FakeRadar::start("browser-superdarn-refused");
    let (gw, addr, _db) = gateway(&fake);
    let mut page = Page::open("superdarn.html", &format!("http://evil.example/?gw={addr}"));
    page.wait("rec.ws.errors.length > 0 && rec.def.errors.length > 0");
    assert_eq!(page.eval("rec.ws.connected || rec.def.connected"), false);
    assert!(gw.metric("ringcast_eio_origin_refused_total") >= 2);
}
