//! The RabbitMQ stream replay source, driven through its library API against a real RabbitMQ
//! (found through `RINGCAST_TEST_AMQP_URL`, stream port 5552): messages published over AMQP
//! 0-9-1 to the `event-streams` exchange reach the target shard's inbox as complete WebSocket
//! text frames, transformed byte for byte as the Squonk2 ESS did, from the chosen offset, with
//! credit flow control, and survive a `rabbitmqctl close_connection` without loss or
//! duplicates. Without a reachable RabbitMQ each test prints `SKIPPED` and passes, except
//! under `CI=true`, where it fails.

#[path = "common/rabbit.rs"]
mod rabbit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use rabbit::{Publisher, amqp_url};
use ringcast::metrics::Metrics;
use ringcast::router::hub::ShardLink;
use ringcast::router::{ConnRef, ShardId, ShardMsg};
use ringcast::source::rabbit_stream::{RabbitStreamSettings, RabbitStreamSource};
use ringcast::source::replay::{ReplayCmd, ReplayEnd, ReplayEvent, ReplayTarget, StartAt};

/// How long a wait may take on a loaded machine before the test fails.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A running source with one shard inbox, and an AMQP 0-9-1 publisher.
struct Rig {
    publisher: Publisher,
    cmd: Sender<ReplayCmd>,
    inbox: Receiver<ShardMsg>,
    _wake: ringcast::rt::WakeReceiver,
    metrics: Arc<Metrics>,
    connection_name: String,
}

/// A rig, or `None` (test skipped) when RabbitMQ's stream port is not reachable.
fn rig(name: &str, tweak: impl FnOnce(&mut RabbitStreamSettings)) -> Option<Rig> {
    if !rabbit::available(name) {
        return None;
    }
    let mut settings = RabbitStreamSettings::from_url(&amqp_url()).expect("settings");
    settings.connection_name = format!("ringcast-test-{name}-{}", std::process::id());
    tweak(&mut settings);
    let connection_name = settings.connection_name.clone();
    let (tx, inbox) = crossbeam_channel::bounded(1_024);
    let (wake, wake_rx) = ringcast::rt::wake_pair().expect("eventfd");
    let metrics = Arc::new(Metrics::new(1));
    let (cmd, _driver) =
        RabbitStreamSource::start(settings, vec![ShardLink { tx, wake }], metrics.clone())
            .expect("source starts");
    Some(Rig {
        publisher: Publisher::connect(),
        cmd,
        inbox,
        _wake: wake_rx,
        metrics,
        connection_name,
    })
}

fn target(id: u64) -> ReplayTarget {
    ReplayTarget {
        shard: ShardId(0),
        conn: ConnRef {
            key: usize::try_from(id).unwrap(),
            id,
        },
    }
}

impl Rig {
    /// Declares a fresh stream queue bound to `event-streams`, as the Account Server does.
    fn stream(&mut self, name: &str) -> String {
        self.publisher.stream(name)
    }

    /// Publishes each body and waits for the broker's confirms.
    fn publish(&self, stream: &str, bodies: &[Vec<u8>]) {
        self.publisher.publish(stream, bodies);
    }

    fn subscribe(&self, t: ReplayTarget, stream: &str, start: StartAt) {
        self.cmd
            .send(ReplayCmd::Subscribe {
                target: t,
                stream: stream.to_string(),
                start,
            })
            .expect("command");
    }

    fn credit(&self, t: ReplayTarget, frames: usize) {
        let frames = u32::try_from(frames).unwrap();
        self.cmd
            .send(ReplayCmd::Credit { target: t, frames })
            .expect("command");
    }

    /// The next replay event, or `None` after `wait`.
    fn event(&self, wait: Duration) -> Option<(ConnRef, ReplayEvent)> {
        match self.inbox.recv_timeout(wait) {
            Ok(ShardMsg::Replay { conn, event }) => Some((conn, event)),
            Ok(other) => panic!("unexpected shard message {other:?}"),
            Err(_) => None,
        }
    }

    /// Receives `n` text frames for `t` (crediting them back), failing after [`TIMEOUT`].
    fn texts(&self, t: ReplayTarget, n: usize) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let (conn, ev) = self
                .event(left)
                .unwrap_or_else(|| panic!("timed out with {} of {n} frames", out.len()));
            assert_eq!(conn, t.conn, "frames for another target");
            match ev {
                ReplayEvent::Frames(frames) => {
                    self.credit(t, frames.len());
                    out.extend(frames.iter().map(text));
                }
                ReplayEvent::End(e) => panic!("ended {e:?} after {} frames", out.len()),
            }
        }
        out
    }

    /// Waits for `t`'s End, skipping frames; returns the frames seen and the reason.
    fn end(&self, t: ReplayTarget) -> (Vec<String>, ReplayEnd) {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (conn, ev) = self.event(left).expect("timed out waiting for End");
            if conn != t.conn {
                continue;
            }
            match ev {
                ReplayEvent::Frames(f) => seen.extend(f.iter().map(text)),
                ReplayEvent::End(e) => return (seen, e),
            }
        }
    }
}

/// The payload of a complete unmasked server text frame.
fn text(frame: &Bytes) -> String {
    assert_eq!(frame[0], 0x81, "a final text frame");
    let (len, start) = match frame[1] {
        126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
        127 => (
            usize::try_from(u64::from_be_bytes(frame[2..10].try_into().unwrap())).unwrap(),
            10,
        ),
        n => (usize::from(n), 2),
    };
    assert_eq!(frame.len(), start + len, "one complete frame");
    String::from_utf8(frame[start..].to_vec()).expect("UTF-8 text")
}

fn bodies(prefix: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| format!("{prefix}{i}").into_bytes()).collect()
}

/// `body` of a text-transformed frame `body|ordinal: N|timestamp: T`, with N and T.
fn split(t: &str) -> (&str, u64, i64) {
    let (rest, ts) = t.rsplit_once("|timestamp: ").expect("timestamp suffix");
    let (body, ord) = rest.rsplit_once("|ordinal: ").expect("ordinal suffix");
    (body, ord.parse().unwrap(), ts.parse().unwrap())
}

fn now_ms() -> i64 {
    ringcast::profile::now_ms()
}

#[test]
fn next_gets_only_messages_published_after_the_subscription() {
    let Some(mut r) = rig("next", |_| {}) else {
        return;
    };
    let s = r.stream("next");
    r.publish(&s, &bodies("old", 0..3));
    let t = target(1);
    r.subscribe(t, &s, StartAt::Next);
    // Markers until one arrives: the subscription is live from then on.
    let mut first = None;
    for i in 0..100 {
        r.publish(&s, &[format!("marker{i}").into_bytes()]);
        if let Some((_, ReplayEvent::Frames(f))) = r.event(Duration::from_millis(300)) {
            r.credit(t, f.len());
            first = Some(f.iter().map(text).collect::<Vec<_>>());
            break;
        }
    }
    let first = first.expect("a marker arrived");
    assert!(first.iter().all(|t| t.starts_with("marker")), "{first:?}");
    r.publish(&s, &bodies("new", 0..5));
    let mut got: Vec<String> = first;
    while !got.last().is_some_and(|t| t.starts_with("new4")) {
        got.extend(r.texts(t, 1));
    }
    assert!(got.iter().all(|t| !t.starts_with("old")), "{got:?}");
    let news: Vec<&str> = got
        .iter()
        .map(|t| split(t).0)
        .filter(|b| b.starts_with("new"))
        .collect();
    assert_eq!(news, ["new0", "new1", "new2", "new3", "new4"]);
}

#[test]
fn offset_is_inclusive_and_zero_is_the_first_message() {
    let Some(mut r) = rig("offset", |_| {}) else {
        return;
    };
    let s = r.stream("offset");
    r.publish(&s, &bodies("m", 0..6));
    let t3 = target(1);
    r.subscribe(t3, &s, StartAt::Offset(3));
    let got = r.texts(t3, 3);
    let parsed: Vec<(&str, u64)> = got
        .iter()
        .map(|t| split(t))
        .map(|(b, o, _)| (b, o))
        .collect();
    assert_eq!(parsed, [("m3", 3), ("m4", 4), ("m5", 5)]);
    let t0 = target(2);
    let s0 = r.stream("offset0");
    r.publish(&s0, &bodies("z", 0..2));
    r.subscribe(t0, &s0, StartAt::Offset(0));
    let got = r.texts(t0, 2);
    assert_eq!(split(&got[0]).0, "z0");
    assert_eq!(split(&got[0]).1, 0);
}

#[test]
fn timestamp_starts_at_the_first_chunk_written_at_or_after_it() {
    let Some(mut r) = rig("timestamp", |_| {}) else {
        return;
    };
    let s = r.stream("ts");
    r.publish(&s, &bodies("before", 0..3));
    let t_ms = now_ms() + 2;
    // Wait on the clock itself: the next chunk must be written after `t_ms`.
    while now_ms() <= t_ms {
        std::thread::yield_now();
    }
    r.publish(&s, &bodies("after", 0..3));
    let t = target(1);
    r.subscribe(t, &s, StartAt::Timestamp(t_ms));
    let got = r.texts(t, 3);
    let (body, ordinal, ts) = split(&got[0]);
    assert_eq!((body, ordinal), ("after0", 3), "{got:?}");
    assert!(ts >= t_ms, "chunk timestamp {ts} before {t_ms}");
}

#[test]
fn json_and_text_bodies_are_transformed_byte_for_byte() {
    let Some(mut r) = rig("transform", |_| {}) else {
        return;
    };
    let s = r.stream("transform");
    let start = now_ms();
    let json = "{\"message_type\":\"accountserver.MerchantProcessingCharge\",\"message_body\":{\"z\":1,\"a\":{\"n\":[1.5,-0,1e16,true,null]},\"name\":\"caf\u{e9} \u{1f600} \\\"q\\\"\"}}";
    let protobuf = "accountserver.MerchantCharge|timestamp: \"2024-01-01T00:00:00Z\" merchant_kind: \"DATA_MANAGER\"";
    r.publish(
        &s,
        &[json.as_bytes().to_vec(), protobuf.as_bytes().to_vec()],
    );
    let t = target(1);
    r.subscribe(t, &s, StartAt::Offset(0));
    let got = r.texts(t, 2);
    let (prefix, ts) = got[0]
        .rsplit_once(", \"ess_timestamp\": ")
        .expect("ess_timestamp last");
    let ts: i64 = ts
        .strip_suffix('}')
        .expect("closing brace")
        .parse()
        .unwrap();
    assert!(
        ts >= start - 60_000 && ts <= now_ms() + 60_000,
        "timestamp {ts}"
    );
    assert_eq!(
        prefix,
        "{\"message_type\": \"accountserver.MerchantProcessingCharge\", \"message_body\": {\"z\": 1, \"a\": {\"n\": [1.5, 0, 1e+16, true, null]}, \"name\": \"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\"\"}, \"ess_ordinal\": 0"
    );
    assert_eq!(
        got[1],
        format!("{protobuf}|ordinal: 1|timestamp: {}", split(&got[1]).2)
    );
}

#[test]
fn empty_invalid_json_and_invalid_utf8_bodies_are_dropped_and_counted() {
    let Some(mut r) = rig("drops", |_| {}) else {
        return;
    };
    let s = r.stream("drops");
    r.publish(
        &s,
        &[
            b"".to_vec(),
            b"{bad".to_vec(),
            b"\xff\xfe".to_vec(),
            b"ok".to_vec(),
        ],
    );
    let t = target(1);
    r.subscribe(t, &s, StartAt::Offset(0));
    let got = r.texts(t, 1);
    assert_eq!(split(&got[0]).0, "ok");
    assert_eq!(split(&got[0]).1, 3);
    assert_eq!(r.metrics.rabbit_stream.dropped.get(), 3);
}

#[test]
fn poison_ends_the_consumer_with_deleted_and_nothing_after_it_is_sent() {
    let Some(mut r) = rig("poison", |_| {}) else {
        return;
    };
    let s = r.stream("poison");
    r.publish(&s, &[b"a".to_vec(), b"POISON".to_vec(), b"b".to_vec()]);
    let t = target(1);
    r.subscribe(t, &s, StartAt::Offset(0));
    let (seen, end) = r.end(t);
    assert_eq!(end, ReplayEnd::Deleted);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(split(&seen[0]).0, "a");
    assert!(r.event(Duration::from_millis(300)).is_none());
}

#[test]
fn a_missing_stream_ends_with_not_found() {
    let Some(r) = rig("missing", |_| {}) else {
        return;
    };
    let t = target(1);
    r.subscribe(t, "ringcast-test-no-such-stream", StartAt::Next);
    assert_eq!(r.end(t), (vec![], ReplayEnd::NotFound));
}

#[test]
fn a_newer_subscriber_replaces_the_older_and_revoke_deletes() {
    let Some(mut r) = rig("replace", |_| {}) else {
        return;
    };
    let s = r.stream("replace");
    r.publish(&s, &bodies("m", 0..2));
    let (old, new) = (target(1), target(2));
    r.subscribe(old, &s, StartAt::Offset(0));
    r.texts(old, 2);
    r.subscribe(new, &s, StartAt::Offset(1));
    assert_eq!(r.end(old).1, ReplayEnd::Replaced);
    let got = r.texts(new, 1);
    assert_eq!(split(&got[0]).0, "m1");
    r.cmd
        .send(ReplayCmd::Revoke { stream: s.clone() })
        .expect("command");
    assert_eq!(r.end(new), (vec![], ReplayEnd::Deleted));
}

#[test]
fn a_consumer_that_gives_no_credit_back_gets_a_bounded_number_of_frames() {
    let Some(mut r) = rig("credit", |s| s.max_in_flight_frames = 20) else {
        return;
    };
    let s = r.stream("credit");
    let total = 3_000;
    r.publish(&s, &bodies("m", 0..total));
    let t = target(1);
    r.subscribe(t, &s, StartAt::Offset(0));
    let mut got: Vec<String> = Vec::new();
    // Without credit: frames stop coming (a quiet second), well before the end.
    while let Some((_, ev)) = r.event(Duration::from_secs(1)) {
        let ReplayEvent::Frames(f) = ev else {
            panic!("ended")
        };
        got.extend(f.iter().map(text));
        assert!(got.len() < total, "no flow control: got everything");
    }
    let held = got.len();
    assert!(held >= 20, "got {held}");
    // Credit brings the rest, in order, once each.
    r.credit(t, held);
    got.extend(r.texts(t, total - held));
    for (i, t) in got.iter().enumerate() {
        assert_eq!(split(t).1, u64::try_from(i).unwrap());
    }
}

#[test]
fn a_dropped_connection_resumes_without_loss_or_duplicates() {
    let Some(mut r) = rig("reconnect", |s| s.backoff_max = Duration::from_millis(200)) else {
        return;
    };
    let s = r.stream("reconnect");
    r.publish(&s, &bodies("a", 0..100));
    let t = target(1);
    r.subscribe(t, &s, StartAt::Offset(0));
    let mut got = r.texts(t, 100);
    kill_stream_connection(&r.connection_name);
    r.publish(&s, &bodies("b", 0..100));
    got.extend(r.texts(t, 100));
    for (i, t) in got.iter().enumerate() {
        assert_eq!(split(t).1, u64::try_from(i).unwrap(), "{t}");
    }
    assert!(r.event(Duration::from_millis(500)).is_none(), "a duplicate");
    assert!(r.metrics.rabbit_stream.reconnects.get() >= 1);
}

/// Kills the source's stream connection on the broker, found by the name it gives in its peer
/// properties. On RabbitMQ 3.10 `rabbitmqctl list_connections` does not list stream
/// connections and `rabbitmqctl close_connection` only logs "Asked to close connection ... but
/// no running cluster node reported it as an active connection" for them, so the connection
/// process is found among the node's non-AMQP connections and killed with `rabbitmqctl eval`:
/// the broker drops the socket, as on a crash or a restart.
fn kill_stream_connection(name: &str) {
    let expr = format!(
        "[exit(P, kill) || \
         P <- rabbit_networking:local_non_amqp_connections(), \
         string:find(lists:flatten(io_lib:format(\"~p\", \
           [catch rabbit_stream_reader:info(P, [client_properties])])), \"{name}\") =/= nomatch]."
    );
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["eval", &expr])
            .output()
            .expect("rabbitmqctl eval");
        let result = String::from_utf8_lossy(&out.stdout).trim().to_string();
        eprintln!("killed {name}: {result}");
        if out.status.success() && result != "[]" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connection {name} not found: {out:?}"
        );
    }
}

#[test]
fn five_thousand_messages_a_second_arrive_in_order_without_loss() {
    let Some(mut r) = rig("rate", |_| {}) else {
        return;
    };
    let s = r.stream("rate");
    let t = target(1);
    r.subscribe(t, &s, StartAt::Offset(0));
    let total = 15_000;
    let publisher = {
        let s = s.clone();
        std::thread::spawn(move || {
            let p = Publisher::connect();
            let started = Instant::now();
            // 5,000 a second: 50 per 10 ms tick, each tick confirmed.
            for tick in 0..total / 50 {
                let due = started + Duration::from_millis(u64::try_from(tick * 10).unwrap());
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait); // pacing the publisher, not synchronisation
                }
                let bodies: Vec<Vec<u8>> = (tick * 50..(tick + 1) * 50)
                    .map(|i| format!("{{\"i\": {i}}}").into_bytes())
                    .collect();
                p.publish(&s, &bodies);
            }
            started.elapsed()
        })
    };
    let got = r.texts(t, total);
    let elapsed = publisher.join().expect("publisher");
    for (i, t) in got.iter().enumerate() {
        assert!(
            t.starts_with(&format!("{{\"i\": {i}, \"ess_ordinal\": {i}, ")),
            "{t}"
        );
    }
    eprintln!("published {total} in {elapsed:?}");
}
