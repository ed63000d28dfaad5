//! The gateway's JSON validation (`protocol::envelope::is_json`) and command parser
//! (`protocol::command::parse_command`) against plain `serde_json` and `simd-json`, on the payloads
//! the gateway sees. Issue 15 point 6: keep hand-written code only where it is at least 1.5×
//! faster than the best library. Until 2026-12-04 both were a hand-written scanner; they are now
//! serde_json behind a first-byte check (docs/decisions/0012).
//!
//! Group `json_validate`: is this publish payload one valid JSON value? The gateway asks once per
//! publish (encode-once) to decide whether to embed the payload or quote it. Every contender
//! answers the same question, UTF-8 inside strings included:
//!
//! - `is_json`: the gateway's: a first-byte check, then the same as `serde_json` below.
//! - `serde_json`: `std::str::from_utf8` then `serde_json::from_str::<IgnoredAny>` (`from_slice`
//!   alone skips the UTF-8 check inside strings, so it would answer a weaker question).
//! - `simd_json`: the payload copied into a reused scratch buffer (simd-json parses in place and
//!   the gateway's payload is a shared `Bytes`), then `fill_tape` with reused `Buffers` and tape.
//!
//! Group `command_decode`: one client command (`{"op":"subscribe",…}`) decoded into its members:
//!
//! - `parse_command`: the gateway's whole parser (serde_json into raw members, then the checks
//!   and the `Request`).
//! - `serde_json`: `from_slice` into a derived struct of borrowed `&RawValue` members (the
//!   decode alone; the checks after it not included).
//! - `simd_json`: `simd_json::serde::from_slice_with_buffers` into a struct of borrowed strings
//!   and an owned `id` value, from a reused scratch copy.
//!
//! Run: `cargo bench --bench json_scan`; results and the decision are in docs/BENCHMARKS.md.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringcast::protocol::command::parse_command;
use ringcast::protocol::envelope::is_json;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// The payloads, named for where they come from.
fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    // The load test's event: {"t":<ns>,"s":<seq>,"p":"xxx…"} padded to 200 bytes.
    let mut loadtest = br#"{"t":1764806400123456789,"s":42,"p":""#.to_vec();
    loadtest.resize(198, b'x');
    loadtest.extend_from_slice(b"\"}");
    // BESS: one record per battery, ten batteries, as the producer writes them.
    let bess = {
        let records: Vec<String> = (1..=10)
            .map(|i| {
                format!(
                    "\"battery:{i}:data\":{{\"timestamp\":1731801715542,\"voltage\":136,\
                     \"current\":108,\"temperature\":347,\"state_of_charge\":36,\
                     \"state_of_health\":49}}"
                )
            })
            .collect();
        format!("{{{}}}", records.join(",")).into_bytes()
    };
    // Preflight: a checklist and lock statuses (booleans), as the seed's snapshot carries.
    let preflight = {
        let items = [
            "sbs_map",
            "channels",
            "outlet",
            "subcatchments",
            "landuse",
            "soils",
            "climate",
            "wepp",
            "observed",
            "debris",
            "watar",
            "rhem",
        ];
        let check: Vec<String> = items.iter().map(|n| format!("\"{n}\":true")).collect();
        let locks: Vec<String> = items.iter().map(|n| format!("\"{n}\":false")).collect();
        format!(
            "{{\"type\":\"preflight\",\"checklist\":{{{}}},\"lock_statuses\":{{{}}}}}",
            check.join(","),
            locks.join(",")
        )
        .into_bytes()
    };
    // Squonk2: an account-server message, protobuf JSON in an envelope.
    let squonk2 = br#"{"message_type":"accountserver.MerchantProcessingCharge","message_body":{"timestamp":"2026-12-03T10:15:30.123Z","merchant_kind":"DATA_MANAGER","merchant_name":"dm-prod","merchant_api_hostname":"data-manager.example.org","product_id":"product-8f3c2a77-1c4e-4f0b-9d55-2b8e6c3a9f10","sqn":1042,"charge":{"cost":"0.25","cost_to_coins":"1","description":"Job 'max-min-picker'","quantity":"1"}}}"#.to_vec();
    // Status: a log line, not JSON (the gateway quotes it).
    let status =
        b"rq:job:5b8e 2026-12-03 10:15:30 INFO running wepp hillslope 42 of 310 (p1042)".to_vec();
    // 4 KiB array of small records, and a 4 KiB non-ASCII string.
    let array = {
        let mut s = String::from("[");
        let mut i = 0;
        while s.len() < 4000 {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"id\":{i},\"v\":{}.5,\"ok\":true,\"n\":null}}",
                i * 7
            ));
            i += 1;
        }
        s.push(']');
        s.into_bytes()
    };
    let non_ascii = {
        let mut s = String::from("\"");
        while s.len() < 4090 {
            s.push_str("Grüße aus Köln, 東京から ");
        }
        s.push('"');
        s.into_bytes()
    };
    vec![
        ("loadtest_200B", loadtest),
        ("status_line_not_json", status),
        ("squonk2_message", squonk2),
        ("preflight_snapshot", preflight),
        ("bess_10_batteries", bess),
        ("array_4KiB", array),
        ("non_ascii_string_4KiB", non_ascii),
    ]
}

fn serde_json_is_json(payload: &[u8]) -> bool {
    std::str::from_utf8(payload).is_ok_and(|s| serde_json::from_str::<IgnoredAny>(s).is_ok())
}

/// simd-json's reusable state: the scratch copy of the input, its buffers and its tape.
struct SimdState {
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
}

impl SimdState {
    fn new() -> Self {
        Self {
            scratch: Vec::with_capacity(8192),
            buffers: simd_json::Buffers::new(8192),
            tape: Some(simd_json::Tape::null()),
        }
    }

    fn is_json(&mut self, payload: &[u8]) -> bool {
        self.scratch.clear();
        self.scratch.extend_from_slice(payload);
        let mut tape = self
            .tape
            .take()
            .unwrap_or_else(simd_json::Tape::null)
            .reset();
        let ok = simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape).is_ok();
        self.tape = Some(tape.reset());
        ok
    }
}

fn validate(c: &mut Criterion) {
    // The three must agree, or the comparison is meaningless.
    let mut simd = SimdState::new();
    for (name, p) in payloads() {
        let expected = name != "status_line_not_json";
        assert_eq!(is_json(&p), expected, "is_json on {name}");
        assert_eq!(serde_json_is_json(&p), expected, "serde_json on {name}");
        assert_eq!(simd.is_json(&p), expected, "simd_json on {name}");
    }

    let mut g = c.benchmark_group("json_validate");
    for (name, p) in payloads() {
        g.throughput(Throughput::Bytes(p.len() as u64));
        g.bench_with_input(BenchmarkId::new("is_json", name), &p, |b, p| {
            b.iter(|| is_json(black_box(p)))
        });
        g.bench_with_input(BenchmarkId::new("serde_json", name), &p, |b, p| {
            b.iter(|| serde_json_is_json(black_box(p)))
        });
        g.bench_with_input(BenchmarkId::new("simd_json", name), &p, |b, p| {
            b.iter(|| simd.is_json(black_box(p)))
        });
    }
    g.finish();
}

/// What a serde_json-based `Members::scan` would fill.
#[derive(Deserialize)]
#[allow(dead_code)] // read through black_box only
struct SerdeMembers<'a> {
    #[serde(borrow)]
    op: Option<&'a RawValue>,
    #[serde(borrow)]
    channel: Option<&'a RawValue>,
    #[serde(borrow)]
    pattern: Option<&'a RawValue>,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
    #[serde(borrow)]
    snapshot: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
}

/// The same with simd-json (no raw values there: strings borrowed, `id` as a value).
#[derive(Deserialize)]
#[allow(dead_code)] // read through black_box only
struct SimdMembers<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pattern: Option<Cow<'a, str>>,
    #[serde(borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    snapshot: Option<Cow<'a, str>>,
    id: Option<simd_json::OwnedValue>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
}

fn commands() -> Vec<(&'static str, Vec<u8>)> {
    let token = format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}",
        "eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY0ODEwMDAwLCJjaGFubmVscyI6WyJydW4uKiJdfQ",
        "x".repeat(43)
    );
    vec![
        (
            "subscribe",
            br#"{"op":"subscribe","channel":"run.1042:status","id":1}"#.to_vec(),
        ),
        (
            "subscribe_snapshot",
            br#"{"op":"subscribe","channel":"__keyspace@0__:run-1042","snapshot":"run-1042","id":"a7"}"#
                .to_vec(),
        ),
        (
            "refresh_jwt",
            format!(r#"{{"op":"refresh","token":"{token}","id":9}}"#).into_bytes(),
        ),
    ]
}

fn command(c: &mut Criterion) {
    let mut g = c.benchmark_group("command_decode");
    let mut scratch: Vec<u8> = Vec::with_capacity(1024);
    let mut buffers = simd_json::Buffers::new(1024);
    for (name, text) in commands() {
        assert!(parse_command(&mut text.clone()).is_ok(), "{name}");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("parse_command", name), &text, |b, t| {
            b.iter(|| {
                scratch.clear();
                scratch.extend_from_slice(t);
                black_box(parse_command(black_box(&mut scratch)).is_ok())
            })
        });
        g.bench_with_input(BenchmarkId::new("serde_json", name), &text, |b, t| {
            b.iter(|| {
                let m: Result<SerdeMembers<'_>, _> = serde_json::from_slice(black_box(t));
                black_box(m.is_ok())
            })
        });
        g.bench_with_input(BenchmarkId::new("simd_json", name), &text, |b, t| {
            b.iter(|| {
                scratch.clear();
                scratch.extend_from_slice(black_box(t));
                let m: Result<SimdMembers<'_>, _> =
                    simd_json::serde::from_slice_with_buffers(&mut scratch, &mut buffers);
                black_box(m.is_ok())
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = validate, command
}
criterion_main!(benches);
