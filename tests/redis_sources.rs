//! Several Redis sources side by side (`[[source]]` tables): each channel, pattern and key is
//! served by the first source whose globs match, so one gateway can take keyspace events from
//! one Redis database and pub/sub from another server, as the weppcloud deployment does.

mod common;

use common::{Gateway, RedisServer};
use serde_json::json;

#[test]
fn channels_and_keys_route_to_their_own_source() {
    let status = RedisServer::start();
    let keyspace = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("ringcast-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ringcast.toml");
    std::fs::write(
        &file,
        format!(
            "[[source]]\nname = \"preflight\"\nredis = \"{}\"\nkeys = [\"*\"]\n\n\
             [[source]]\nname = \"status\"\nredis = \"{}\"\nchannels = [\"*\"]\n",
            keyspace.url(2),
            status.url(0),
        ),
    )
    .unwrap();
    let gw = Gateway::start(&["--shards", "2", "--config", file.to_str().unwrap()]);

    let mut c = gw.ws("/ws?subscribe=run1:status&watch=run1");
    assert_eq!(c.recv_json()["op"], "subscribed");
    assert_eq!(c.recv_json()["op"], "watched");
    assert_eq!(
        c.recv_json(),
        json!({"key": "run1", "type": "none", "value": null})
    );
    status.wait_numsub("run1:status", 1);
    keyspace.wait_numsub("run1:status", 0);
    keyspace.wait_numsub("__keyspace@2__:run1", 1);

    status.cmd(&["PUBLISH", "run1:status", "TRIGGER   done"]);
    assert_eq!(
        c.recv_json(),
        json!({"channel": "run1:status", "data": "TRIGGER   done"})
    );
    // Keyspace events are per database: db 0 is not watched, db 2 is.
    keyspace.cmd(&["HSET", "run1", "x", "ignored"]);
    let mut db2 = common::RedisClient::connect(keyspace.port);
    db2.cmd(&["SELECT", "2"]);
    db2.cmd(&["HSET", "run1", "ready", "1"]);
    assert_eq!(
        c.recv_json(),
        json!({"key": "run1", "type": "hash", "value": {"ready": "1"}})
    );
    assert_eq!(
        gw.metric("ringcast_source_redis_up{source=\"preflight\"}"),
        1
    );
    assert_eq!(gw.metric("ringcast_source_redis_up{source=\"status\"}"), 1);

    // One source down: its channels refuse publishes (503), the other source's still work.
    drop(keyspace);
    gw.wait_metric("ringcast_source_redis_up{source=\"preflight\"}", |v| v == 0);
    assert!(gw.http("GET", "/healthz", &[], b"").1.contains("degraded"));
    gw.publish("run1:status", &json!("still flowing"));
    assert_eq!(
        c.recv_json(),
        json!({"channel": "run1:status", "data": "still flowing"})
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_source_tables_are_refused_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("ringcast-badsrc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[[source]]\nname = \"a\"\nredis = \"http://nope\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("source") && stderr.contains("redis://"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
