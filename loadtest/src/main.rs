//! `ringcast-loadtest`: the end-to-end load generator.
//!
//! TODO(issue 4): this crate is a placeholder until the load-test issue builds the real instrument
//! (N WebSocket clients, Redis/HTTP publishers, HDR latency histograms, `/proc` CPU and RSS).

fn main() {
    eprintln!("ringcast-loadtest: not built yet; see the load-test issue (docs/BENCHMARKS.md)");
    std::process::exit(2);
}
