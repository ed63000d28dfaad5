//! Process lifecycle: bind, start the hub and the shards, wait for a signal, shut down.
//!
//! Threads: the main thread (this module: waits for SIGINT/SIGTERM or a dead shard), one hub
//! thread ([`crate::router::hub`]), one thread per shard ([`crate::shard::run`]), and a small
//! signal-listening thread. The main thread owns the join handles and the exit status.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crossbeam_channel::{Receiver, bounded, select};

use crate::config::{Config, IoBackend};
use crate::metrics::Metrics;
use crate::router::hub::{Hub, ShardLink};
use crate::router::{ShardId, UpstreamMsg};
use crate::rt::{self, Runtime, WakeHandle};
use crate::shard::run::ShardSetup;
use crate::source::memory::MemorySource;
use crate::source::radar::source::{RadarSettings, RadarSource};
use crate::source::redis::resp::Proto;
use crate::source::redis::{RedisSettings, RedisSource};
use crate::store::echoes::{EchoStore, EchoesHandle};
use crate::store::registry::Registry;
use listen::{all_interfaces_note, bind, demo_url, listener_names};

mod listen;

/// Capacity of the shard → hub channel (interest changes and publishes).
pub const HUB_CHANNEL: usize = 65_536;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// io_uring could not be set up: old kernel, `kernel.io_uring_disabled`, or a seccomp
    /// profile (Docker's default, for one) that forbids `io_uring_setup`. Only with
    /// `--io-backend io-uring`; the default (`auto`) falls back to epoll with a warning.
    #[error(
        "io_uring is unavailable ({0}); it may be disabled by kernel.io_uring_disabled or \
         forbidden by a seccomp profile (e.g. a container's default)"
    )]
    IoUringUnavailable(std::io::Error),
    /// Another process already listens on the address: a second ringcast, or anything else.
    /// The operator's: stop the other process or choose another address. Without this check
    /// a second ringcast would join the first one's `SO_REUSEPORT` group and the kernel would
    /// split new clients between two separate brokers.
    #[error("{addr} is already in use by another process ({listener})")]
    AddrInUse {
        /// The address as configured.
        addr: SocketAddr,
        /// Which knob asked for it: `--listen` or `route "NAME"`.
        listener: String,
    },
    /// Two of this process's own listeners overlap (same port, one of them on all interfaces).
    /// The operator's: give them different ports.
    #[error(
        "cannot listen on {addr} ({listener}): it overlaps another ringcast listener on {other}"
    )]
    Overlap {
        /// The address as configured.
        addr: SocketAddr,
        /// Which knob asked for it.
        listener: String,
        /// The listener it collides with.
        other: SocketAddr,
    },
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// An `ess_api` route's registry file cannot be opened, created or written. The
    /// operator's: fix the path or its permissions.
    #[error(transparent)]
    Registry(#[from] crate::store::registry::OpenError),
    /// The SuperDARN echo store's file cannot be opened, created or written, or its
    /// `echo_counts` table lacks the original's columns. The operator's: fix the path, its
    /// permissions, or the file.
    #[error(transparent)]
    Echoes(#[from] crate::store::echoes::OpenError),
    /// A thread could not be started or failed.
    #[error("{0}")]
    Thread(String),
}

/// Chooses the process's runtime backend (`--io-backend`). io_uring is probed once on this
/// thread, so the error (or the fallback's warning) names the cause before anything starts.
fn choose_backend(want: IoBackend) -> Result<rt::Backend, ServerError> {
    let backend = match want {
        IoBackend::Epoll => rt::Backend::Epoll,
        IoBackend::IoUring => {
            rt::probe_io_uring().map_err(ServerError::IoUringUnavailable)?;
            rt::Backend::IoUring
        }
        IoBackend::Auto => match rt::probe_io_uring() {
            Ok(()) => rt::Backend::IoUring,
            Err(e) => {
                let cause = ServerError::IoUringUnavailable(e);
                tracing::warn!("{cause}; using epoll instead (--io-backend epoll says so)");
                rt::Backend::Epoll
            }
        },
    };
    Ok(rt::select(backend))
}

/// Runs the gateway until SIGINT or SIGTERM, then shuts down gracefully.
pub fn run(config: Config) -> Result<(), ServerError> {
    let backend = choose_backend(config.io_backend)?;
    let signals = listen_for_signals()?;
    let config = Arc::new(config);
    // Before any listener: a registry file that cannot be used stops the start (exit 1).
    let databases = open_registries(&config)?;
    // One SO_REUSEPORT socket per shard per listening address; `per_shard[i]` is shard i's.
    let mut per_shard: Vec<Vec<std::net::TcpListener>> =
        (0..config.shards).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let names = listener_names(&config);
    for (want, name) in config.listeners().into_iter().zip(names) {
        let sockets = bind(want, config.shards, &bound, name)?;
        let addr = sockets[0].local_addr().map_err(|e| ServerError::Bind {
            addr: want,
            source: e,
        })?;
        bound.push(addr);
        for (i, socket) in sockets.into_iter().enumerate() {
            per_shard[i].push(socket);
        }
    }
    let addr = bound[0];
    let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let paths = databases
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    // The TCP feeds' sites, then the ZMQ feed's label (its stats follow the TCP feeds').
    let mut sites: Vec<String> = config.radar_feeds.iter().map(|f| f.site.clone()).collect();
    if config.canada_addr.is_some() {
        sites.push(crate::source::radar::zmq::STATS_LABEL.to_owned());
    }
    let metrics = Arc::new(
        Metrics::with_redis(config.shards, names)
            .with_registries(paths)
            .with_radars(sites),
    );
    let RegistryHandles {
        per_route: registries,
        threads: registry_threads,
    } = start_registries(&config, databases, &metrics)?;
    // One echo store per distinct `echoes_db` of the socketio routes. Its thread is not joined:
    // the radar feeds hold handles until the process exits, and every write is committed on
    // its own, so nothing is left to flush.
    let mut echo_stores: Vec<(PathBuf, EchoesHandle)> = Vec::new();
    for path in config
        .routes
        .iter()
        .filter(|r| r.profile == crate::config::Profile::SocketIo)
        .filter_map(|r| r.echoes_db.as_ref())
    {
        if !echo_stores.iter().any(|(p, _)| p == path) {
            let (handle, _thread) = start_echoes(path, config.max_days_store_echoes, &metrics)?;
            echo_stores.push((path.clone(), handle));
        }
    }
    // One per-IP table for every shard (docs/decisions/0009-*).
    let per_ip = Arc::new(crate::limits::PerIp::new(
        config.max_connections_per_ip,
        config.handshake_rate_per_ip,
    ));
    let echoes: Vec<Option<EchoesHandle>> = config
        .routes
        .iter()
        .map(|r| {
            let path = r.echoes_db.as_ref()?;
            echo_stores
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, h)| h.clone())
        })
        .collect();
    let (hub_tx, hub_rx) = bounded::<UpstreamMsg>(HUB_CHANNEL);
    // Shards report here when they stop; the hub reports as index `usize::MAX`.
    let (done_tx, done_rx) = bounded::<(usize, Result<(), String>)>(config.shards + 1);

    let mut links = Vec::new();
    let mut shards = Vec::new();
    let mut flags = Vec::new();
    let mut ends = Vec::new();
    for listeners in per_shard {
        let (tx, rx) = bounded(config.shard_inbox);
        let (wake, wake_listener) =
            rt::wake_pair().map_err(|e| ServerError::Thread(e.to_string()))?;
        let shutdown = Arc::new(AtomicBool::new(false));
        links.push(ShardLink {
            tx,
            wake: wake.clone(),
        });
        flags.push((shutdown.clone(), wake));
        ends.push((listeners, rx, wake_listener, shutdown));
    }
    // The replay source delivers straight to the shards, so it starts before them.
    let replay = start_replay(&config, &links, &metrics)?;
    for (i, (listeners, rx, wake_listener, shutdown)) in ends.into_iter().enumerate() {
        let setup = ShardSetup {
            id: ShardId(i as u16),
            config: config.clone(),
            listeners,
            inbox: rx,
            wake: wake_listener,
            hub: hub_tx.clone(),
            metrics: metrics.clone(),
            shutdown,
            replay: replay.clone(),
            registries: registries.clone(),
            echoes: echoes.clone(),
            peers: links.clone(),
            per_ip: per_ip.clone(),
        };
        let done = done_tx.clone();
        let pin = config.pin_cores.then_some(i);
        let handle = thread::Builder::new()
            .name(format!("ringcast-shard-{i}"))
            .spawn(move || {
                if let Some(core) = pin {
                    pin_to_core(core);
                }
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Runtime::new().and_then(|rt| crate::shard::run::run(setup, rt))
                }));
                let result = match result {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("panicked".to_string()),
                };
                let _ = done.send((i, result));
            })
            .map_err(|e| ServerError::Thread(e.to_string()))?;
        shards.push(handle);
    }

    // The shards hold the only handles now: each registry thread, and the replay source, ends
    // after the last shard.
    drop(registries);
    drop(replay);
    let mut sources = Vec::new();
    for (index, sc) in config.sources.iter().enumerate() {
        let settings = RedisSettings {
            index,
            name: sc.name.clone(),
            url: sc.url.clone(),
            proto: if config.redis_resp == 2 {
                Proto::Resp2
            } else {
                Proto::Resp3
            },
            connect_timeout: config.redis_connect_timeout,
            backoff_max: config.redis_backoff_max,
            set_notify: config.redis_set_notify,
            serves_watches: config.source_serves_watches(index),
            sharded_channels: sc.sharded_channels.clone(),
        };
        // Sources spread over the shards; each is read on one (decision 0017).
        let on_shard = config
            .redis_read_on_shard
            .then(|| links[index % links.len()].clone());
        let redis = RedisSource::start(settings, hub_tx.clone(), metrics.clone(), on_shard)
            .map_err(|e| ServerError::Thread(e.to_string()))?;
        sources.push(Box::new(redis) as Box<dyn crate::source::Source>);
    }
    if sources.is_empty() {
        sources.push(Box::new(MemorySource::new()));
    }
    // After the others, at the position `Config::source_for` gives the radar channels.
    if let Some(index) = config.radar_source() {
        debug_assert_eq!(index, sources.len());
        let settings = RadarSettings {
            source: index,
            feeds: config.radar_feeds.clone(),
            zmq: config.canada_addr.clone(),
            // Every `<site>/echoes` is stored in each echo store (one, usually).
            echo_sink: (!echo_stores.is_empty()).then(|| {
                let stores: Vec<EchoesHandle> =
                    echo_stores.iter().map(|(_, h)| h.clone()).collect();
                let sink: crate::source::radar::pipeline::EchoSink = Arc::new(
                    move |site: &str, e: &crate::profile::superdarn::echoes::Echoes| {
                        for store in &stores {
                            store.record(site, e);
                        }
                    },
                );
                sink
            }),
        };
        let radar = RadarSource::start(settings, hub_tx.clone(), metrics.clone())
            .map_err(|e| ServerError::Thread(e.to_string()))?;
        sources.push(Box::new(radar));
    }
    let hub = Hub::new(sources, links, metrics.clone());
    let hub_done = done_tx;
    let hub_thread = thread::Builder::new()
        .name("ringcast-hub".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hub.run(hub_rx)));
            let _ = hub_done.send((usize::MAX, result.map_err(|_| "panicked".to_string())));
        })
        .map_err(|e| ServerError::Thread(e.to_string()))?;

    if config.preset == Some(crate::config::Preset::Superdarn) && config.radars.is_none() {
        let cwd = std::env::current_dir().unwrap_or_default();
        tracing::warn!(
            "no {} in {} (--radars FILE names one): serving Socket.IO clients with no radar TCP \
             feeds",
            crate::config::SUPERDARN_RADARS,
            cwd.display()
        );
    }
    // Route lines first: the last line, `listening addr=`, means every listener is up.
    for (route, &l) in config.routes.iter().zip(&config.route_listeners()) {
        tracing::info!(
            "route ready name={} profile={} listen={} path={}",
            route.name,
            route.profile.as_str(),
            bound[l],
            route.path
        );
        if bound[l].ip().is_unspecified() {
            tracing::info!("{}", all_interfaces_note(&route.name, bound[l]));
        }
    }
    if let Some(admin) = config.admin_listener() {
        tracing::info!(
            "admin ready listen={} paths=/metrics,/healthz",
            bound[admin]
        );
    }
    tracing::info!("demo page: {}", demo_url(addr));
    tracing::info!(
        "listening addr={addr} shards={} io_backend={}",
        config.shards,
        backend.as_str()
    );

    let failure = select! {
        recv(signals) -> sig => {
            tracing::info!(signal = sig.unwrap_or(0), "shutting down");
            None
        }
        recv(done_rx) -> done => match done {
            Ok((usize::MAX, _)) => Some("the hub thread stopped unexpectedly".to_string()),
            Ok((i, Err(e))) => Some(format!("shard {i} failed: {e}")),
            Ok((i, Ok(()))) => Some(format!("shard {i} stopped unexpectedly")),
            Err(_) => Some("all shards stopped".to_string()),
        },
    };
    for (flag, wake) in &flags {
        flag.store(true, Ordering::SeqCst);
        // An alert, not a wake-up: no message carries the flag, so a shard holding its own
        // wake-up (decision 0017) must still be woken when it releases it.
        WakeHandle::alert(wake);
    }
    for handle in shards {
        let _ = handle.join();
    }
    for handle in registry_threads {
        let _ = handle.join();
    }
    let _ = hub_tx.send(UpstreamMsg::Shutdown);
    let _ = hub_thread.join();
    match failure {
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(e) => Err(ServerError::Thread(e)),
    }
}

/// Opens the SuperDARN echo store at `path` (creating the file and its table if missing) on
/// this thread, then starts its thread, `ringcast-echoes`, with retention `max_days`
/// ([`Config::max_days_store_echoes`]; `None` keeps rows for ever).
///
/// `run` calls it once per distinct `echoes_db` of the socketio routes, so an unusable file
/// stops the start (exit 1, one line naming it), and hands a clone of the handle to each shard
/// ([`crate::http::echoes::respond`]) and to the radar feeds ([`EchoesHandle::record`]).
pub fn start_echoes(
    path: &Path,
    max_days: Option<u32>,
    metrics: &Arc<Metrics>,
) -> Result<(EchoesHandle, thread::JoinHandle<()>), ServerError> {
    let store = EchoStore::open(path)?;
    store
        .start(max_days, metrics.clone())
        .map_err(|e| ServerError::Thread(format!("cannot start ringcast-echoes: {e}")))
}

/// Opens each distinct `registry` file of the routes, on this thread.
fn open_registries(config: &Config) -> Result<Vec<(PathBuf, rusqlite::Connection)>, ServerError> {
    let mut out: Vec<(PathBuf, rusqlite::Connection)> = Vec::new();
    for path in config.routes.iter().filter_map(|r| r.registry.as_ref()) {
        if !out.iter().any(|(p, _)| p == path) {
            out.push((path.clone(), Registry::open(path)?));
        }
    }
    Ok(out)
}

/// Starts one thread per opened registry; returns each route's handle (parallel to
/// `config.routes`) and the threads.
fn start_registries(
    config: &Config,
    databases: Vec<(PathBuf, rusqlite::Connection)>,
    metrics: &Arc<Metrics>,
) -> Result<RegistryHandles, ServerError> {
    let mut started = Vec::new();
    let mut threads = Vec::new();
    for (index, (path, db)) in databases.into_iter().enumerate() {
        let (registry, thread) = Registry::start(db, &path, index, metrics.clone())
            .map_err(|e| ServerError::Thread(e.to_string()))?;
        started.push(registry);
        threads.push(thread);
    }
    let per_route = config
        .routes
        .iter()
        .map(|r| {
            let path = r.registry.as_ref()?;
            started.iter().find(|reg| reg.path() == path).cloned()
        })
        .collect();
    Ok(RegistryHandles { per_route, threads })
}

/// What [`start_registries`] started.
struct RegistryHandles {
    /// Each route's registry handle, parallel to `config.routes`.
    per_route: Vec<Option<Registry>>,
    /// The registry threads, joined after the shards.
    threads: Vec<thread::JoinHandle<()>>,
}

/// A channel that yields SIGINT/SIGTERM, fed by a small thread.
fn listen_for_signals() -> Result<Receiver<i32>, ServerError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| ServerError::Thread(format!("cannot install signal handlers: {e}")))?;
    let (tx, rx) = bounded(4);
    thread::Builder::new()
        .name("ringcast-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| ServerError::Thread(e.to_string()))?;
    Ok(rx)
}

/// Pins the calling thread to `core` (modulo the cores available); logs and carries on if the
/// kernel refuses.
fn pin_to_core(core: usize) {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is plain data; CPU_SET and sched_setaffinity get valid pointers.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core % cores, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        tracing::warn!(core, error = %std::io::Error::last_os_error(), "could not pin shard to core");
    }
}

/// Starts the RabbitMQ stream replay source when a route serves Squonk2 event streams (the
/// first `ess` route's RabbitMQ; every `ess` route shares it), with the first Redis source, if
/// any, as its cross-instance lease; returns the shards' command channel.
fn start_replay(
    config: &Config,
    links: &[ShardLink],
    metrics: &Arc<Metrics>,
) -> Result<Option<crossbeam_channel::Sender<crate::source::replay::ReplayCmd>>, ServerError> {
    use crate::source::rabbit_stream::{RabbitStreamSettings, RabbitStreamSource};
    let Some(route) = config
        .routes
        .iter()
        .find(|r| r.profile == crate::config::Profile::Ess)
    else {
        return Ok(None);
    };
    let Some(url) = route.amqp.as_deref() else {
        return Ok(None);
    };
    let mut settings = RabbitStreamSettings::from_url(url)
        .map_err(|e| ServerError::Thread(format!("route {:?} amqp: {e}", route.name)))?;
    settings.port = route.stream_port;
    settings.stats_interval = route.stats_interval;
    // One live socket per stream across instances: the first Redis source holds the lease.
    settings.lease = config
        .sources
        .first()
        .map(|s| crate::source::replay_lease::LeaseSettings {
            source: s.name.clone(),
            url: s.url.clone(),
            timeout: config.redis_connect_timeout,
            backoff_max: config.redis_backoff_max,
        });
    // The thread is detached: it ends when the last shard drops its sender.
    let (tx, _thread) = RabbitStreamSource::start(settings, links.to_vec(), metrics.clone())
        .map_err(|e| ServerError::Thread(e.to_string()))?;
    tracing::info!(
        route = route.name,
        port = route.stream_port,
        lease = config
            .sources
            .first()
            .map_or("none (this process only)", |s| &s.name),
        "RabbitMQ stream source started"
    );
    Ok(Some(tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_echoes_runs_the_store_or_names_the_file_it_cannot_use() {
        let dir = std::env::temp_dir().join(format!(
            "ringcast-server-echoes-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let metrics = Arc::new(Metrics::new(1));
        let (store, thread) =
            start_echoes(&dir.join("database.sqlite"), Some(30), &metrics).expect("started");
        assert_eq!(thread.thread().name(), Some("ringcast-echoes"));
        drop(store);
        thread.join().expect("ends with its last handle");
        let _ = std::fs::remove_dir_all(&dir);

        let bad = Path::new("/nonexistent-ringcast-dir/database.sqlite");
        match start_echoes(bad, None, &metrics) {
            Err(e @ ServerError::Echoes(_)) => {
                assert!(e.to_string().contains("/nonexistent-ringcast-dir"), "{e}");
            }
            other => panic!("expected an echo store error, got {:?}", other.err()),
        }
    }
}
