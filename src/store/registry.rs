//! The event-stream registry of the Squonk2 ESS profile: which routing key each event stream
//! (an integer id and a shortuuid) reads, persisted in SQLite (COMPAT.md 6.1, rows Q1 and Q8).
//!
//! Threads: [`Registry::open`] runs on main at start-up; the database is then owned by one
//! thread of its own, `ringcast-registry-N` ([`Registry::start`]), never by a shard (SQLite
//! blocks on disk). Shards hold a [`Registry`] handle: a request is a `try_send` on a bounded
//! crossbeam channel ([`QUEUE`] deep) carrying a `tokio::sync::oneshot` for the answer, which
//! the shard's connection task awaits as a [`Pending`] (runtime-agnostic; no borrow of the
//! shard is held meanwhile).
//!
//! Invariants:
//! - the table is the original's `es(id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE,
//!   routing_key TEXT)`: with AUTOINCREMENT ids only grow and a deleted id is never handed out
//!   again, across restarts too (SQLite keeps the high-water mark in `sqlite_sequence`);
//! - every write is its own transaction, committed before the answer is sent: a 201 or a 204
//!   means the change is on disk;
//! - a full queue is refused at once ([`RegistryError::Busy`], counted by the shard as
//!   `ringcast_registry_busy_total`; policy in docs/BACKPRESSURE.md), never waited on;
//! - a failed SQLite call is logged once (one line naming the file) and answered
//!   [`RegistryError::Failed`]; nothing is dropped silently.
//!
//! The thread ends when every handle is gone (the shards have stopped), after finishing what
//! is queued.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::shortuuid;
use crate::metrics::RegistryStats;

/// Requests queued for one registry thread, in messages. Default 1_024. A shard that finds the
/// queue full answers 503 at once; larger absorbs longer bursts of API calls at the cost of
/// their latency (each write waits for an fsync).
pub const QUEUE: usize = 1_024;

/// How long a write waits for another process's lock on the file before it fails (500).
/// Default 5 s; only another program opening the same file can hold such a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One event stream, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStream {
    /// The integer id the internal API names it by (`DELETE /event-stream/{id}`).
    pub id: i64,
    /// The shortuuid in the public WebSocket URL (`/event-stream/<uuid>`).
    pub uuid: String,
    /// The RabbitMQ routing key (stream) it reads.
    pub routing_key: String,
}

/// Why the database file could not be used at start-up. The operator's: fix the path or the
/// permissions. The caller prints it as one line and exits 1.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the event-stream registry {}: {reason}", path.display())]
pub struct OpenError {
    /// The file, as configured.
    pub path: PathBuf,
    /// What failed (SQLite's message, or "the file is read-only").
    pub reason: String,
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The queue is full: ours (overloaded). Answer 503; the client may retry.
    #[error("the registry is busy")]
    Busy,
    /// The registry thread has stopped (shutdown, or it died): ours. Answer 500.
    #[error("the registry has stopped")]
    Stopped,
    /// SQLite failed (disk full, file removed, locked by another program); the registry
    /// thread logged it. Ours or the operator's. Answer 500.
    #[error("the registry could not read or write its file")]
    Failed,
}

/// What a request's answer travels on.
type Answer<T> = oneshot::Sender<Result<T, RegistryError>>;

/// A request to the registry thread.
enum RegistryMsg {
    /// Add a stream for this routing key, with a new uuid.
    Create {
        routing_key: String,
        answer: Answer<EventStream>,
    },
    /// Every stream, by id.
    List { answer: Answer<Vec<EventStream>> },
    /// Remove the stream with this id; answers its routing key, `None` if unknown.
    Delete {
        id: i64,
        answer: Answer<Option<String>>,
    },
    /// The stream with this uuid, `None` if unknown.
    Lookup {
        uuid: String,
        answer: Answer<Option<EventStream>>,
    },
}

/// A handle to one registry thread; cheap to clone (one per shard).
#[derive(Clone, Debug)]
pub struct Registry {
    /// The request queue ([`QUEUE`] deep).
    tx: Sender<RegistryMsg>,
    /// The database file, for logs.
    path: Arc<Path>,
}

/// A request in flight: resolves to the registry's answer. Holds no borrow of anything.
#[derive(Debug)]
pub struct Pending<T>(oneshot::Receiver<Result<T, RegistryError>>);

impl<T> Future for Pending<T> {
    type Output = Result<T, RegistryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(RegistryError::Stopped)))
    }
}

impl std::fmt::Debug for RegistryMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RegistryMsg::Create { .. } => "Create",
            RegistryMsg::List { .. } => "List",
            RegistryMsg::Delete { .. } => "Delete",
            RegistryMsg::Lookup { .. } => "Lookup",
        })
    }
}

impl Registry {
    /// Opens (or creates) the database at `path` and its table, and checks that it can be
    /// written. Runs on main, before anything starts.
    pub fn open(path: &Path) -> Result<Connection, OpenError> {
        let fail = |reason: String| OpenError {
            path: path.to_owned(),
            reason,
        };
        let db = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        db.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS es (id INTEGER PRIMARY KEY AUTOINCREMENT, \
             uuid TEXT UNIQUE, routing_key TEXT)",
        )
        .map_err(|e| fail(e.to_string()))?;
        if db.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err(fail("the file is read-only".to_owned()));
        }
        // A real write (the schema version in the header), so a directory where the journal
        // cannot be created fails now rather than at the first POST.
        db.execute_batch("PRAGMA user_version = 1")
            .map_err(|e| fail(e.to_string()))?;
        Ok(db)
    }

    /// Starts the thread that owns `db` (from [`Registry::open`]); `index` names the thread.
    pub fn start(
        db: Connection,
        path: &Path,
        index: usize,
        stats: Arc<crate::metrics::Metrics>,
    ) -> std::io::Result<(Registry, std::thread::JoinHandle<()>)> {
        let (tx, rx) = bounded(QUEUE);
        let path: Arc<Path> = Arc::from(path);
        let file = path.clone();
        let handle = std::thread::Builder::new()
            .name(format!("ringcast-registry-{index}"))
            .spawn(move || {
                if let Some(stats) = stats.registries.get(index) {
                    serve(&db, &file, &rx, stats);
                }
            })?;
        Ok((Registry { tx, path }, handle))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a stream reading `routing_key`, with a new uuid.
    pub fn create(&self, routing_key: String) -> Result<Pending<EventStream>, RegistryError> {
        self.request(|answer| RegistryMsg::Create {
            routing_key,
            answer,
        })
    }

    /// Every stream, by id.
    pub fn list(&self) -> Result<Pending<Vec<EventStream>>, RegistryError> {
        self.request(|answer| RegistryMsg::List { answer })
    }

    /// Removes stream `id`; its routing key, or `None` if no such stream.
    pub fn delete(&self, id: i64) -> Result<Pending<Option<String>>, RegistryError> {
        self.request(|answer| RegistryMsg::Delete { id, answer })
    }

    /// The stream whose uuid is `uuid`, or `None`. For the WebSocket side: call it in its own
    /// `let` (so no `shard.borrow()` temporary lives on), then await the [`Pending`].
    pub fn lookup(&self, uuid: String) -> Result<Pending<Option<EventStream>>, RegistryError> {
        self.request(|answer| RegistryMsg::Lookup { uuid, answer })
    }

    /// Queues one request without blocking: [`RegistryError::Busy`] when the queue is full.
    fn request<T>(
        &self,
        msg: impl FnOnce(Answer<T>) -> RegistryMsg,
    ) -> Result<Pending<T>, RegistryError> {
        let (answer, rx) = oneshot::channel();
        match self.tx.try_send(msg(answer)) {
            Ok(()) => Ok(Pending(rx)),
            Err(TrySendError::Full(_)) => Err(RegistryError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(RegistryError::Stopped),
        }
    }
}

/// The registry thread: answers requests until every handle is dropped.
fn serve(db: &Connection, path: &Path, rx: &Receiver<RegistryMsg>, stats: &RegistryStats) {
    for msg in rx.iter() {
        stats.requests.inc();
        let what = format!("{msg:?}");
        let failed = match msg {
            RegistryMsg::Create {
                routing_key,
                answer,
            } => reply(answer, create(db, routing_key)),
            RegistryMsg::List { answer } => reply(answer, list(db)),
            RegistryMsg::Delete { id, answer } => reply(answer, delete(db, id)),
            RegistryMsg::Lookup { uuid, answer } => reply(answer, lookup(db, &uuid)),
        };
        if let Some(error) = failed {
            stats.errors.inc();
            tracing::error!(
                "event-stream registry {}: {what} failed: {error}",
                path.display()
            );
        }
    }
}

/// Sends the answer (a caller that left is fine); returns the error to log, if any.
fn reply<T>(answer: Answer<T>, result: Result<T, StoreFailure>) -> Option<StoreFailure> {
    match result {
        Ok(value) => {
            let _ = answer.send(Ok(value));
            None
        }
        Err(e) => {
            let _ = answer.send(Err(RegistryError::Failed));
            Some(e)
        }
    }
}

/// What went wrong inside the registry thread (logged, then answered as `Failed`).
#[derive(Debug, thiserror::Error)]
enum StoreFailure {
    /// SQLite refused.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The OS gave no randomness for a uuid.
    #[error("no randomness for a uuid: {0}")]
    Random(getrandom::Error),
}

/// Inserts a stream with a fresh uuid; a uuid collision (122 random bits: never seen in
/// practice) is retried with another.
fn create(db: &Connection, routing_key: String) -> Result<EventStream, StoreFailure> {
    let mut attempt = 0;
    loop {
        let uuid = shortuuid::new().map_err(StoreFailure::Random)?;
        match db.execute(
            "INSERT INTO es (uuid, routing_key) VALUES (?1, ?2)",
            params![uuid, routing_key],
        ) {
            Ok(_) => {
                let id = db.last_insert_rowid();
                return Ok(EventStream {
                    id,
                    uuid,
                    routing_key,
                });
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation && attempt < 3 =>
            {
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn list(db: &Connection) -> Result<Vec<EventStream>, StoreFailure> {
    let mut stmt = db.prepare_cached("SELECT id, uuid, routing_key FROM es ORDER BY id")?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn delete(db: &Connection, id: i64) -> Result<Option<String>, StoreFailure> {
    let key: Option<Option<String>> = db
        .query_row(
            "DELETE FROM es WHERE id = ?1 RETURNING routing_key",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(key.map(Option::unwrap_or_default))
}

fn lookup(db: &Connection, uuid: &str) -> Result<Option<EventStream>, StoreFailure> {
    Ok(db
        .query_row(
            "SELECT id, uuid, routing_key FROM es WHERE uuid = ?1",
            [uuid],
            row,
        )
        .optional()?)
}

/// One row; a NULL uuid or routing key (a file the original wrote by hand) reads as empty.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventStream> {
    Ok(EventStream {
        id: r.get(0)?,
        uuid: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
        routing_key: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ringcast-registry-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("es.db")
    }

    fn started(path: &Path) -> (Registry, std::thread::JoinHandle<()>) {
        let db = Registry::open(path).expect("open");
        let metrics =
            Arc::new(crate::metrics::Metrics::new(1).with_registries(vec!["es.db".into()]));
        Registry::start(db, path, 0, metrics).expect("thread")
    }

    fn wait<T>(p: Result<Pending<T>, RegistryError>) -> Result<T, RegistryError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(p?)
    }

    #[test]
    fn create_list_lookup_delete() {
        let path = temp_db("crud");
        let (reg, thread) = started(&path);
        let a = wait(reg.create("rk-a".into())).expect("create");
        let b = wait(reg.create("rk-b".into())).expect("create");
        assert!(b.id > a.id);
        assert!(shortuuid::is_valid(&a.uuid) && a.uuid != b.uuid);
        assert_eq!(wait(reg.list()).expect("list"), vec![a.clone(), b.clone()]);
        assert_eq!(
            wait(reg.lookup(b.uuid.clone())).expect("lookup"),
            Some(b.clone())
        );
        assert_eq!(wait(reg.lookup("nope".into())).expect("lookup"), None);
        assert_eq!(wait(reg.delete(a.id)).expect("delete"), Some("rk-a".into()));
        assert_eq!(wait(reg.delete(a.id)).expect("delete"), None);
        assert_eq!(wait(reg.list()).expect("list"), vec![b]);
        drop(reg);
        thread
            .join()
            .expect("registry thread ends with its last handle");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn ids_are_never_reused_after_delete_and_reopen() {
        let path = temp_db("ids");
        let (reg, thread) = started(&path);
        let first = wait(reg.create("x".into())).expect("create");
        let last = wait(reg.create("y".into())).expect("create");
        assert_eq!(wait(reg.delete(last.id)).expect("delete"), Some("y".into()));
        drop(reg);
        thread.join().expect("join");
        let (reg, thread) = started(&path);
        let again = wait(reg.create("z".into())).expect("create");
        assert!(again.id > last.id, "{} after {}", again.id, last.id);
        assert_eq!(wait(reg.list()).expect("list")[0], first, "survived");
        drop(reg);
        thread.join().expect("join");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn an_unusable_path_is_an_error_naming_it() {
        let path = Path::new("/nonexistent-ringcast-dir/es.db");
        let e = Registry::open(path).expect_err("no such directory");
        let line = e.to_string();
        assert!(line.contains("/nonexistent-ringcast-dir/es.db"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_full_queue_is_refused_at_once() {
        let (tx, _rx) = bounded(1);
        let reg = Registry {
            tx,
            path: Arc::from(Path::new("x")),
        };
        assert!(reg.list().is_ok());
        assert_eq!(reg.list().err(), Some(RegistryError::Busy));
        let (tx, rx) = bounded(1);
        drop(rx);
        let reg = Registry { tx, ..reg };
        assert_eq!(reg.list().err(), Some(RegistryError::Stopped));
    }
}
