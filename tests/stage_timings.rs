//! Per-stage latency inside the gateway: one event in 64 is timed from the moment it was read
//! (dispatch to a shard, write submitted, write completed) and exported as Prometheus
//! histograms.

mod common;

use common::Gateway;
use serde_json::json;

#[test]
fn sampled_events_fill_the_stage_histograms() {
    let gw = Gateway::start(&["--shards", "2"]);
    let mut clients: Vec<_> = (0..4).map(|_| gw.ws("/ws?subscribe=t")).collect();
    for c in &mut clients {
        c.recv_json();
    }
    for i in 0..128 {
        gw.publish("t", &json!(i));
    }
    for c in &mut clients {
        for i in 0..128 {
            assert_eq!(c.recv_json()["data"], i);
        }
    }
    // 128 publishes, one in 64 sampled: two timed events.
    assert_eq!(gw.metric("ringcast_stage_hub_seconds_count"), 2);
    assert!(gw.metric("ringcast_stage_dispatch_seconds_count") >= 2);
    gw.wait_metric("ringcast_stage_write_complete_seconds_count", |n| n >= 2);
    let (_, text) = gw.http("GET", "/metrics", &[], b"");
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("ringcast_stage_write_submit_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 17, "16 bounds and +Inf");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "cumulative buckets: {buckets:?}"
    );
    assert!(*buckets.last().unwrap() >= 2);
}
