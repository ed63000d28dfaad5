//! ringcast-baseline: the gateway a Rust team would write first, for ringcast's load tests to
//! compare against. tokio's multi-thread runtime, hyper for HTTP, tokio-tungstenite with its
//! usual settings (a 4 KiB read buffer), the `redis` crate for pub/sub and one `tokio::sync::broadcast` per topic.
//! See README.md.

mod http;
mod hub;
mod ws;

use std::net::SocketAddr;

use clap::Parser;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    version,
    about = "Baseline WebSocket gateway (tokio + tokio-tungstenite + redis)"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// WebSocket read buffer per connection, in bytes: tungstenite reads the socket in chunks of
    /// this size into a buffer it keeps for the connection's life. Default 4096, what users of
    /// tokio-tungstenite usually set; 0 keeps tungstenite's own default (128 KiB).
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let ws_config = http::ws_config(args.read_buffer);
    let hub = match hub::Hub::connect(&args.redis).await {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("cannot connect to redis at {}: {e}", args.redis);
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    eprintln!(
        "listening addr={}",
        listener.local_addr().expect("bound socket has an address")
    );

    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| http::handle(req, hub.clone(), ws_config));
            // Errors here are clients going away mid-request; nothing to do.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
