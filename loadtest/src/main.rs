//! `ringcast-loadtest`: the end-to-end load generator for ringcast.
//!
//! `run` drives one scenario against a running gateway: N WebSocket clients (tokio tasks, a
//! lean hand-written client in `ws.rs`) subscribed over M channels, publishers on Redis (`PUBLISH`, RESP by hand)
//! or HTTP (`POST /api/publish`), HDR latency histograms from a send timestamp in each payload,
//! loss per channel from sequence numbers, and the gateway's CPU time and RSS from `/proc`.
//! `ess` drives one RabbitMQ stream to one socket through `--preset squonk2` (see `ess.rs`).
//! `socketio` broadcasts one SuperDARN radar record to N Socket.IO clients (see `socketio.rs`).
//! `floor` measures the kernel's cost of the write path alone (see `floor.rs`); `redis-hop` the
//! latency Redis alone adds at a scenario's pace (see `redis_hop.rs`). `plot` draws
//! SVG charts from saved `run --json` reports (see `plot.rs`); `plot-soak` draws a soak's
//! memory and descriptors over time (see `soak.rs`, `soak_plot.rs`).
//! Every flag, scenario key and JSON field is in `loadtest/README.md`.

mod amqp;
mod clients;
mod ess;
mod ess_body;
mod ess_report;
mod floor;
mod latency;
mod pace;
mod payload;
mod plot;
mod procfs;
mod progress;
mod publisher;
mod radar_payload;
mod redis_hop;
mod report;
mod run;
mod scrape;
mod settings;
mod soak;
mod soak_plot;
mod socketio;
mod socketio_client;
mod socketio_report;
mod sys;
mod url;
mod wire;
mod ws;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ringcast-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one load scenario against a running gateway.
    Run(Box<settings::Settings>),
    /// Measure the floor: the kernel's cost of the gateway's write path alone.
    Floor(FloorCommand),
    /// One RabbitMQ stream to one WebSocket through `ringcast --preset squonk2`: replay,
    /// live or slow reader; msgs/s and gateway CPU per message.
    Ess(Box<ess::EssArgs>),
    /// One radar record broadcast to N Socket.IO clients (`--preset superdarn` or the
    /// python-socketio original): delivered, missing, latency, server CPU per delivery.
    Socketio(Box<socketio::SocketIoArgs>),
    /// The latency Redis alone adds (PUBLISH to a subscriber's read) at a scenario's pace: the
    /// part of a `--publish redis` run's latency that no gateway can remove.
    RedisHop(redis_hop::RedisHopArgs),
    /// Draw SVG charts (latency CDF, delivered msgs/s) from saved `run --json` reports.
    Plot(plot::PlotArgs),
    /// Draw the gateway's RSS and open descriptors over a soak from its `--samples-csv`.
    PlotSoak(soak_plot::PlotSoakArgs),
}

#[derive(clap::Args)]
struct FloorCommand {
    #[command(flatten)]
    args: floor::FloorArgs,
    /// Print one JSON line instead of the human summary.
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(settings) => run::main(*settings),
        Command::Floor(cmd) => floor::run(cmd.args).map(|report| {
            if cmd.json {
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => eprintln!("ringcast-loadtest: cannot serialize the report: {e}"),
                }
            } else {
                report.print_human();
            }
        }),
        Command::Ess(args) => ess::main(*args),
        Command::Socketio(args) => socketio::main(*args),
        Command::RedisHop(args) => redis_hop::main(args),
        Command::Plot(args) => plot::run(args),
        Command::PlotSoak(args) => soak_plot::run(args),
    };
    if let Err(e) = result {
        eprintln!("ringcast-loadtest: {e:#}");
        std::process::exit(1);
    }
}
