//! A `ringcast --preset squonk2` instance for tests: both routes on free ports, a registry file
//! in a directory the caller chooses, RabbitMQ from `rabbit::amqp_url()`; and the client steps
//! the Account Server and `ws_listener.py` take (create an event stream, connect to it, wait
//! until its consumer is live). Included with `#[path = "common/ess.rs"] mod ess;` next to
//! `common` and `rabbit`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tungstenite::Message;

use super::common::{Client, Gateway, http};
use super::rabbit::{self, Publisher};

/// One instance: the gateway and its two route addresses.
pub struct Ess {
    pub gw: Gateway,
    /// The internal REST API (`ess_api`).
    pub api: SocketAddr,
    /// The public WebSocket (`ess`).
    pub ws: SocketAddr,
}

impl Ess {
    /// An instance with its registry at `dir/es.db`, two shards, then `extra` arguments.
    pub fn start(dir: &Path, extra: &[&str]) -> Ess {
        let registry = format!("ess_api.registry={}", dir.join("es.db").display());
        let mut args = vec![
            "--shards",
            "2",
            "--preset",
            "squonk2",
            "--route",
            "ess.listen=127.0.0.1:0",
            "--route",
            "ess_api.listen=127.0.0.1:0",
            "--route",
            &registry,
        ];
        args.extend_from_slice(extra);
        let gw = Gateway::start_with_env(&args, &[("ESS_AMPQ_URL", &rabbit::amqp_url())]);
        let (api, ws) = (gw.route_addr("ess_api"), gw.route_addr("ess"));
        Ess { gw, api, ws }
    }

    /// POSTs `routing_key`; the event stream's id and the path of its WebSocket.
    pub fn create(&self, routing_key: &str) -> (i64, String) {
        let body = serde_json::json!({ "routing_key": routing_key }).to_string();
        let (status, text) = http(self.api, "POST", "/event-stream/", &[], body.as_bytes());
        assert_eq!(status, 201, "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        let location = v["location"].as_str().expect("location");
        let path = location
            .strip_prefix("ws://localhost:8080")
            .unwrap_or_else(|| panic!("{location}"))
            .to_owned();
        (v["id"].as_i64().expect("id"), path)
    }

    /// A WebSocket to `path` (with its query) on the public route.
    pub fn connect(&self, path: &str) -> Client {
        Client::connect(self.ws, path)
    }
}

/// Publishes markers until the socket gets one: its consumer is live (and, with a shared Redis,
/// holds the lease) from then on. Returns the markers it received.
pub fn until_live(p: &Publisher, stream: &str, c: &mut Client) -> Vec<String> {
    c.ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut got = Vec::new();
    for i in 0..100 {
        p.publish(stream, &[format!("marker{i}").into_bytes()]);
        match c.ws.read() {
            Ok(Message::Text(t)) => {
                got.push(t.to_string());
                break;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(!got.is_empty(), "no marker ever arrived");
    assert!(got[0].starts_with("marker"), "{got:?}");
    c.ws.get_mut()
        .set_read_timeout(Some(super::common::TIMEOUT))
        .expect("timeout");
    got
}
