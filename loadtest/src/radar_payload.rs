//! The `socketio` subcommand's payload: one SuperDARN fitacf record as the original server
//! emits it (docs COMPAT.md §5.2 and §10), stamped with the load test's send time and sequence.
//!
//! The record is hand-written in the shape `ringcast::profile::superdarn::render_site` and the
//! original produce: the scalars in the original's key order, `gflg` and `v` per echo, then
//! `elevation`, `power`, `velocity`, `width` (floats) and `g_scatter` (ints) of length `nrang`,
//! zero-filled where a gate has no echo. Floats are float32 values widened to a double and
//! printed as the shortest round-trip text (`-2.277430534362793`), zeros as `0.0`, which is
//! also what Python's `json.dumps` prints for them, so a Python peer that parses and re-emits
//! the object sends the same bytes. The values come from a fixed generator: every run sends
//! the same record.
//!
//! Each event is `{"t":<ns>,"s":<seq>,` followed by the record's keys, so the readers find the
//! stamp at the front ([`crate::payload::parse_ts`]).

/// Range gates per beam (the `nrang` of a normal-scan record).
pub const NRANG: usize = 75;

/// The record's keys after the stamp, without the opening `{` (ends with `}`).
pub fn record_body(site: &str, echoes: usize) -> Vec<u8> {
    let echoes = echoes.min(NRANG);
    let mut rng = Lcg(0x5eed_da4a);
    // Echoes spread over the gates, first gate 5 (near range is usually empty).
    let gates: Vec<usize> = (0..echoes).map(|i| 5 + i * (NRANG - 5) / echoes).collect();
    let gflg: Vec<u8> = gates
        .iter()
        .map(|_| u8::from(rng.next().is_multiple_of(4)))
        .collect();
    let mut cols: [Vec<f32>; 4] = Default::default(); // elv, p_l, v, w_l per echo
    for _ in &gates {
        cols[0].push(rng.float(5.0, 40.0));
        cols[1].push(rng.float(3.0, 35.0));
        cols[2].push(rng.float(-600.0, 600.0));
        cols[3].push(rng.float(10.0, 300.0));
    }
    let mut out = Vec::with_capacity(4096);
    let scalars = format!(
        "\"site_name\":\"{site}\",\"beam\":7,\"cp\":\"stereoscan(153)\",\"frang\":180,\
         \"nave\":22,\"freq\":10500,\"noise\":27,\"nrang\":{NRANG},\"rsep\":45,\"stid\":5,\"scan\":0,"
    );
    out.extend_from_slice(scalars.as_bytes());
    out.extend_from_slice(b"\"gflg\":");
    ints(&mut out, gflg.iter().map(|&g| u64::from(g)));
    out.extend_from_slice(b",\"v\":");
    floats(&mut out, cols[2].iter().copied());
    out.extend_from_slice(b",\"time\":\"2026-12-03 13:05:07.250000\"");
    for (name, col) in [
        ("elevation", &cols[0]),
        ("power", &cols[1]),
        ("velocity", &cols[2]),
        ("width", &cols[3]),
    ] {
        out.extend_from_slice(format!(",\"{name}\":").as_bytes());
        floats(&mut out, scatter(&gates, col).into_iter());
    }
    out.extend_from_slice(b",\"g_scatter\":");
    let g: Vec<f32> = gflg.iter().map(|&g| f32::from(g)).collect();
    ints(&mut out, scatter(&gates, &g).into_iter().map(|v| v as u64));
    out.push(b'}');
    out
}

/// Appends one event: the stamp, then `body` (from [`record_body`]).
pub fn write_event(buf: &mut Vec<u8>, t: u64, seq: u64, body: &[u8]) {
    buf.extend_from_slice(b"{\"t\":");
    crate::payload::push_u64(buf, t);
    buf.extend_from_slice(b",\"s\":");
    crate::payload::push_u64(buf, seq);
    buf.push(b',');
    buf.extend_from_slice(body);
}

/// `values` placed at `gates` in an array of [`NRANG`], 0 elsewhere.
fn scatter(gates: &[usize], values: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; NRANG];
    for (&g, &v) in gates.iter().zip(values) {
        out[g] = v;
    }
    out
}

fn ints(out: &mut Vec<u8>, values: impl Iterator<Item = u64>) {
    out.push(b'[');
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::payload::push_u64(out, v);
    }
    out.push(b']');
}

fn floats(out: &mut Vec<u8>, values: impl Iterator<Item = f32>) {
    out.push(b'[');
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(float_text(v).as_bytes());
    }
    out.push(b']');
}

/// A float32 widened to a double, as Python's `repr` prints it in this range.
fn float_text(v: f32) -> String {
    let s = format!("{}", f64::from(v));
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// A small linear congruential generator: the same record on every run, no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// A float32 in `[lo, hi)` with a fractional part, like a measured value.
    fn float(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next() % 1_000_000) as f32 / 1_000_000.0;
        lo + unit * (hi - lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_record_sized_json_with_the_stamp_first() {
        let body = record_body("sas", 15);
        let mut ev = Vec::new();
        write_event(&mut ev, 1_700_000_000_000_000_000, 42, &body);
        let v: serde_json::Value = serde_json::from_slice(&ev).expect("valid JSON");
        assert_eq!(v["s"], 42);
        assert_eq!(v["site_name"], "sas");
        for key in ["elevation", "power", "velocity", "width", "g_scatter"] {
            assert_eq!(v[key].as_array().unwrap().len(), NRANG, "{key}");
        }
        assert_eq!(v["v"].as_array().unwrap().len(), 15);
        assert_eq!(v["gflg"].as_array().unwrap().len(), 15);
        assert!((1500..=3000).contains(&ev.len()), "{} bytes", ev.len());
        assert_eq!(
            crate::payload::parse_ts(&ev),
            Some((1_700_000_000_000_000_000, 42))
        );
    }

    #[test]
    fn floats_print_as_python_does() {
        assert_eq!(float_text(0.0), "0.0");
        assert_eq!(float_text(-2.2774305), "-2.277430534362793");
        assert_eq!(float_text(10.1), "10.100000381469727");
        assert_eq!(float_text(300.0), "300.0");
    }
}
