//! The SuperDARN echo-count history behind `GET /echoes` (COMPAT §5.2, §5.3 and §10, D6),
//! persisted in SQLite, with its retention (`max-days-store-echoes`).
//!
//! Threads: [`EchoStore::open`] runs on main at start-up; the database is then owned by one
//! thread of its own, `ringcast-echoes` ([`EchoStore::start`]), never by a shard or a radar
//! feed (SQLite blocks on disk). Everyone else holds an [`EchoesHandle`]: a write or a query is
//! a `try_send` on a bounded crossbeam channel ([`QUEUE`] deep); a query carries a
//! `tokio::sync::oneshot` for the answer, which the shard's connection task awaits as a
//! [`Pending`] (runtime-agnostic; no borrow of the shard is held meanwhile).
//!
//! Invariants:
//! - the table is the original's, `echo_counts(id INTEGER PRIMARY KEY, site_name, timestamp,
//!   total_echoes, ionospheric_echoes, ground_scatter_echoes)` (`app/models.py`, created by
//!   SQLAlchemy), so the original's `app/database.sqlite` can be used as is, and the file stays
//!   readable by it. Timestamps are UTC, stored as SQLAlchemy stores a `DateTime` in SQLite,
//!   `YYYY-MM-DD HH:MM:SS.ffffff` (fixed width: text order is time order). One index is
//!   added, `(site_name, timestamp)`, for the window queries;
//! - a window is `start <= timestamp <= end`, rows in time order (then insertion order), at
//!   most [`MAX_QUERY_ROWS`] per query ([`Window::TooMany`] beyond), so no window, however
//!   wide, makes the store thread or the shard hold more than about 10 MB for one answer;
//! - retention, when set, deletes the rows older than now − N days once at start and then every
//!   [`RETENTION_EVERY`] on this thread (a crossbeam tick; no sleeping), counted in
//!   `ringcast_echoes_deleted_total`. Unset, rows are kept for ever;
//! - a full queue is never waited on: a write is dropped (`ringcast_echoes_dropped_total`), a
//!   query refused at once ([`EchoStoreError::Busy`], `ringcast_echoes_busy_total`, answered
//!   503); policy in docs/BACKPRESSURE.md;
//! - a failed SQLite call is logged (one line naming the file) and counted; a failed query is
//!   answered [`EchoStoreError::Failed`]. Nothing is dropped silently.
//!
//! The thread ends when every handle is gone, after finishing what is queued.
//!
//! Length: past the 300-line guide because of the unit tests, which use a real SQLite file.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::metrics::{EchoesStats, Metrics};
use crate::profile::superdarn::echoes::Echoes;
use crate::profile::superdarn::utc::{Civil, parse_iso, system_time_from_micros};

/// Requests queued for the store thread, in messages. Default 1_024. Writes come at about one
/// per site per scan (one to two minutes), so the queue only fills when SQLite stalls (a disk
/// that stopped answering, a long retention pass) or `/echoes` is flooded.
pub const QUEUE: usize = 1_024;

/// The most rows one `/echoes` query returns: 100_000, about 69 days of one site at one scan a
/// minute. A wider window answers 400 asking for a shorter one (the original answered
/// everything). Bounds one answer to about 4 MB of rows and 5 MB of JSON.
pub const MAX_QUERY_ROWS: usize = 100_000;

/// How often retention runs after the pass at start: hourly. The original ran daily; hourly
/// keeps each pass small and the oldest row at most an hour past its age.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3_600);

/// Rows deleted per transaction by retention: 10_000. The first pass over a large old file
/// then never needs a journal the size of the table.
const DELETE_BATCH: usize = 10_000;

/// How long a statement waits for another process's lock on the file before it fails.
/// Default 5 s; only another program opening the same file (the original, say) holds one.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The original's table, as SQLAlchemy creates it for `EchoCounts` (`app/models.py`).
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS echo_counts (\
    id INTEGER NOT NULL, \
    site_name VARCHAR NOT NULL, \
    timestamp DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL, \
    total_echoes INTEGER NOT NULL, \
    ionospheric_echoes INTEGER NOT NULL, \
    ground_scatter_echoes INTEGER NOT NULL, \
    PRIMARY KEY (id))";

/// Ours: serves `WHERE site_name = ? AND timestamp BETWEEN ? AND ?` in time order.
const CREATE_INDEX: &str = "CREATE INDEX IF NOT EXISTS ix_echo_counts_site_name_timestamp \
    ON echo_counts (site_name, timestamp)";

const INSERT: &str = "INSERT INTO echo_counts (site_name, timestamp, total_echoes, \
    ionospheric_echoes, ground_scatter_echoes) VALUES (?1, ?2, ?3, ?4, ?5)";

const SELECT_WINDOW: &str = "SELECT timestamp, total_echoes, ionospheric_echoes, \
    ground_scatter_echoes FROM echo_counts \
    WHERE site_name = ?1 AND timestamp >= ?2 AND timestamp <= ?3 \
    ORDER BY timestamp, id LIMIT ?4";

const DELETE_OLDER: &str = "DELETE FROM echo_counts WHERE id IN \
    (SELECT id FROM echo_counts WHERE timestamp < ?1 LIMIT ?2)";

/// Why the database file could not be used at start-up. The operator's: fix the path, the
/// permissions, or point at a file whose `echo_counts` table has the original's columns. The
/// caller prints it as one line and exits 1.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the echo store {}: {reason}", path.display())]
pub struct OpenError {
    /// The file, as configured.
    pub path: PathBuf,
    /// What failed (SQLite's message, or "the file is read-only").
    pub reason: String,
}

/// Why a query got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EchoStoreError {
    /// The queue is full: ours (overloaded). Answer 503; the client may retry.
    #[error("the echo store is busy")]
    Busy,
    /// The store thread has stopped (shutdown, or it died): ours. Answer 500.
    #[error("the echo store has stopped")]
    Stopped,
    /// SQLite failed (disk error, file removed, locked by another program); the store thread
    /// logged it. Ours or the operator's. Answer 500.
    #[error("the echo store could not read its file")]
    Failed,
}

/// The rows of a window, or the news that there are too many to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// Every row in the window (possibly none), in time order.
    Rows(Vec<Echoes>),
    /// More than [`MAX_QUERY_ROWS`] rows: none are returned.
    TooMany,
}

/// What a query's answer travels on.
type Answer = oneshot::Sender<Result<Window, EchoStoreError>>;

/// A request to the store thread.
pub(crate) enum EchoesMsg {
    /// Store one scan's counts for `site`.
    Record { site: Box<str>, echoes: Echoes },
    /// The rows of `site` with `start <= timestamp <= end`.
    Query {
        site: String,
        start: SystemTime,
        end: SystemTime,
        answer: Answer,
    },
}

impl std::fmt::Debug for EchoesMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EchoesMsg::Record { site, .. } => write!(f, "Record({site})"),
            EchoesMsg::Query { site, .. } => write!(f, "Query({site})"),
        }
    }
}

/// An opened database, not yet owned by its thread.
#[derive(Debug)]
pub struct EchoStore {
    /// The connection, moved into the thread by [`EchoStore::start`].
    db: Connection,
    /// The file, for logs.
    path: PathBuf,
}

/// A handle to the store thread; cheap to clone (one per shard and per radar feed).
#[derive(Clone, Debug)]
pub struct EchoesHandle {
    /// The request queue ([`QUEUE`] deep).
    tx: Sender<EchoesMsg>,
    /// For the refusals this side counts (`dropped`, `busy`).
    metrics: Arc<Metrics>,
}

/// A query in flight: resolves to the store's answer. Holds no borrow of anything.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Window, EchoStoreError>>);

impl Future for Pending {
    type Output = Result<Window, EchoStoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(EchoStoreError::Stopped)))
    }
}

impl EchoStore {
    /// Opens (or creates) the database at `path`, creates the table and index if missing,
    /// checks that the table has the columns this reads, and that the file can be written.
    /// Runs on main, before anything starts.
    pub fn open(path: &Path) -> Result<EchoStore, OpenError> {
        let fail = |reason: String| OpenError {
            path: path.to_owned(),
            reason,
        };
        let db = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        db.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        if db.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err(fail("the file is read-only".to_owned()));
        }
        db.execute_batch(CREATE_TABLE)
            .map_err(|e| fail(e.to_string()))?;
        // A table of another shape (a missing column) fails here, naming the column.
        db.prepare(SELECT_WINDOW)
            .and_then(|_| db.prepare(INSERT).map(drop))
            .map_err(|e| fail(format!("table echo_counts: {e}")))?;
        db.execute_batch(CREATE_INDEX)
            .map_err(|e| fail(e.to_string()))?;
        // A real write that changes nothing (the header's user_version, as it is), so a
        // directory where the journal cannot be created fails now, not at the first scan.
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| fail(e.to_string()))?;
        db.execute_batch(&format!("PRAGMA user_version = {version}"))
            .map_err(|e| fail(e.to_string()))?;
        Ok(EchoStore {
            db,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts `ringcast-echoes`, which owns the database from now on. `max_days`: delete rows
    /// older than that many days (at start, then every [`RETENTION_EVERY`]); `None` keeps
    /// them for ever.
    pub fn start(
        self,
        max_days: Option<u32>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(EchoesHandle, std::thread::JoinHandle<()>)> {
        let (tx, rx) = bounded(QUEUE);
        let keep = max_days.map(|d| Duration::from_secs(u64::from(d) * 86_400));
        let stats = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("ringcast-echoes".to_owned())
            .spawn(move || serve(&self.db, &self.path, &rx, keep, &stats.echoes))?;
        Ok((EchoesHandle { tx, metrics }, thread))
    }
}

impl EchoesHandle {
    /// Queues one scan's counts for `site`, without blocking. A full queue (or a stopped
    /// store) drops them, counted in `ringcast_echoes_dropped_total`.
    pub fn record(&self, site: &str, echoes: &Echoes) {
        let msg = EchoesMsg::Record {
            site: site.into(),
            echoes: *echoes,
        };
        if self.tx.try_send(msg).is_err() {
            self.metrics.echoes.dropped.inc();
        }
    }

    /// Asks for `site`'s rows with `start <= timestamp <= end`, without blocking. A full queue
    /// is [`EchoStoreError::Busy`] at once (counted in `ringcast_echoes_busy_total`). For the
    /// shard side: call it in its own `let` (so no `shard.borrow()` temporary lives on), then
    /// await the [`Pending`].
    pub fn query(
        &self,
        site: &str,
        start: SystemTime,
        end: SystemTime,
    ) -> Result<Pending, EchoStoreError> {
        let (answer, rx) = oneshot::channel();
        let msg = EchoesMsg::Query {
            site: site.to_owned(),
            start,
            end,
            answer,
        };
        match self.tx.try_send(msg) {
            Ok(()) => Ok(Pending(rx)),
            Err(TrySendError::Full(_)) => {
                self.metrics.echoes.busy.inc();
                Err(EchoStoreError::Busy)
            }
            Err(TrySendError::Disconnected(_)) => Err(EchoStoreError::Stopped),
        }
    }
}

/// For other modules' tests: a handle whose queue (`queue` deep) nobody serves while the
/// receiver lives, so it fills (and answers [`EchoStoreError::Busy`]); dropping the receiver
/// and the handle stops it.
#[cfg(test)]
pub(crate) fn unserved(queue: usize, metrics: Arc<Metrics>) -> (EchoesHandle, Receiver<EchoesMsg>) {
    let (tx, rx) = bounded(queue);
    (EchoesHandle { tx, metrics }, rx)
}

/// The store thread: retention at start, then requests and retention ticks until every handle
/// is dropped.
fn serve(
    db: &Connection,
    path: &Path,
    rx: &Receiver<EchoesMsg>,
    keep: Option<Duration>,
    stats: &EchoesStats,
) {
    let tick = match keep {
        Some(_) => crossbeam_channel::tick(RETENTION_EVERY),
        None => crossbeam_channel::never(),
    };
    if let Some(keep) = keep {
        expire(db, path, keep, stats);
    }
    loop {
        select! {
            recv(rx) -> msg => match msg {
                Ok(msg) => handle(db, path, msg, stats),
                Err(_) => return,
            },
            recv(tick) -> _ => {
                if let Some(keep) = keep {
                    expire(db, path, keep, stats);
                }
            }
        }
    }
}

fn handle(db: &Connection, path: &Path, msg: EchoesMsg, stats: &EchoesStats) {
    let what = format!("{msg:?}");
    let failed = match msg {
        EchoesMsg::Record { site, echoes } => match insert(db, &site, &echoes) {
            Ok(()) => {
                stats.rows_written.inc();
                None
            }
            Err(e) => Some(e),
        },
        EchoesMsg::Query {
            site,
            start,
            end,
            answer,
        } => {
            stats.queries.inc();
            match window(db, &site, start, end) {
                Ok((found, skipped)) => {
                    if skipped > 0 {
                        tracing::warn!(
                            "echo store {}: {skipped} rows of {site} with an unreadable \
                             timestamp left out",
                            path.display()
                        );
                    }
                    let _ = answer.send(Ok(found));
                    None
                }
                Err(e) => {
                    let _ = answer.send(Err(EchoStoreError::Failed));
                    Some(e)
                }
            }
        }
    };
    if let Some(error) = failed {
        stats.errors.inc();
        tracing::error!("echo store {}: {what} failed: {error}", path.display());
    }
}

/// The stored text of `t` (UTC).
fn stored(t: SystemTime) -> String {
    let mut s = String::with_capacity(26);
    Civil::from_system_time(t).write_sql(&mut s);
    s
}

/// SQLite's integers are i64; counts are far below its limit.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn insert(db: &Connection, site: &str, e: &Echoes) -> rusqlite::Result<()> {
    db.prepare_cached(INSERT)?.execute(params![
        site,
        stored(e.timestamp),
        int(e.total_echoes),
        int(e.ionospheric_echoes),
        int(e.ground_scatter_echoes),
    ])?;
    Ok(())
}

/// The window's rows (or [`Window::TooMany`]), and how many rows were left out because their
/// timestamp is not a date-time (only a file written by hand has one).
fn window(
    db: &Connection,
    site: &str,
    start: SystemTime,
    end: SystemTime,
) -> rusqlite::Result<(Window, usize)> {
    let mut stmt = db.prepare_cached(SELECT_WINDOW)?;
    let limit = i64::try_from(MAX_QUERY_ROWS + 1).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![site, stored(start), stored(end), limit])?;
    let mut out = Vec::new();
    let mut seen = 0;
    let mut skipped = 0;
    while let Some(row) = rows.next()? {
        seen += 1;
        if seen > MAX_QUERY_ROWS {
            return Ok((Window::TooMany, skipped));
        }
        let count = |i| {
            row.get::<_, Option<i64>>(i)
                .map(|v| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
        };
        let timestamp = row.get::<_, Option<String>>(0).ok().flatten();
        let Some(micros) = timestamp.as_deref().and_then(parse_iso) else {
            skipped += 1;
            continue;
        };
        out.push(Echoes {
            total_echoes: count(1)?,
            ionospheric_echoes: count(2)?,
            ground_scatter_echoes: count(3)?,
            timestamp: system_time_from_micros(micros),
        });
    }
    Ok((Window::Rows(out), skipped))
}

/// One retention pass: deletes the rows older than now − `keep`.
fn expire(db: &Connection, path: &Path, keep: Duration, stats: &EchoesStats) {
    let cutoff = SystemTime::now()
        .checked_sub(keep)
        .unwrap_or(std::time::UNIX_EPOCH);
    match delete_older_than(db, cutoff) {
        Ok(0) => {}
        Ok(n) => {
            stats.deleted.add(n);
            tracing::info!(
                "echo store {}: deleted {n} echo counts older than {} days",
                path.display(),
                keep.as_secs() / 86_400
            );
        }
        Err(e) => {
            stats.errors.inc();
            tracing::error!("echo store {}: retention failed: {e}", path.display());
        }
    }
}

/// Deletes every row stamped before `cutoff`, [`DELETE_BATCH`] rows per transaction; returns
/// how many.
fn delete_older_than(db: &Connection, cutoff: SystemTime) -> rusqlite::Result<u64> {
    let cutoff = stored(cutoff);
    let batch = i64::try_from(DELETE_BATCH).unwrap_or(i64::MAX);
    let mut total = 0;
    loop {
        let n = db
            .prepare_cached(DELETE_OLDER)?
            .execute(params![cutoff, batch])?;
        total += u64::try_from(n).unwrap_or(0);
        if n < DELETE_BATCH {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// 2026-12-03T13:56:16Z.
    const T0: u64 = 1_796_306_176;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn echoes(total: u64, timestamp: SystemTime) -> Echoes {
        Echoes {
            total_echoes: total,
            ionospheric_echoes: total / 2,
            ground_scatter_echoes: total / 4,
            timestamp,
        }
    }

    /// A fresh directory for one test's database, removed on drop.
    struct TempDb(PathBuf);

    impl TempDb {
        fn new(name: &str) -> TempDb {
            let dir = std::env::temp_dir().join(format!(
                "ringcast-echoes-{name}-{}-{:?}",
                std::process::id(),
                SystemTime::now()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDb(dir.join("database.sqlite"))
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn started(
        path: &Path,
        max_days: Option<u32>,
    ) -> (EchoesHandle, std::thread::JoinHandle<()>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(1));
        let store = EchoStore::open(path).expect("open");
        let (handle, thread) = store.start(max_days, metrics.clone()).expect("thread");
        (handle, thread, metrics)
    }

    fn wait(p: Result<Pending, EchoStoreError>) -> Result<Window, EchoStoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(p?)
    }

    fn rows(w: Result<Window, EchoStoreError>) -> Vec<Echoes> {
        match w {
            Ok(Window::Rows(rows)) => rows,
            other => panic!("expected rows, got {other:?}"),
        }
    }

    #[test]
    fn a_window_is_inclusive_per_site_and_in_time_order() {
        let db = TempDb::new("window");
        let (store, thread, metrics) = started(&db.0, None);
        // Recorded out of order, and one at the same time as another.
        for (site, total, secs) in [
            ("sas", 1, T0 + 60),
            ("sas", 2, T0),
            ("kod", 3, T0 + 30),
            ("sas", 4, T0 + 120),
            ("sas", 5, T0 + 60),
            ("sas", 6, T0 + 121),
        ] {
            store.record(site, &echoes(total, at(secs)));
        }
        let got = rows(wait(store.query("sas", at(T0), at(T0 + 120))));
        let totals: Vec<u64> = got.iter().map(|e| e.total_echoes).collect();
        assert_eq!(totals, [2, 1, 5, 4], "bounds included, ties by insertion");
        assert_eq!(got[0], echoes(2, at(T0)), "every column read back");
        assert_eq!(rows(wait(store.query("kod", at(T0), at(T0 + 60)))).len(), 1);
        assert!(rows(wait(store.query("SAS", at(T0), at(T0 + 60)))).is_empty());
        assert!(rows(wait(store.query("sas", at(T0 + 1), at(T0 + 59)))).is_empty());
        drop(store);
        thread.join().expect("the thread ends with its last handle");
        assert_eq!(metrics.echoes.rows_written.get(), 6);
        assert_eq!(metrics.echoes.queries.get(), 4);
        assert_eq!(metrics.echoes.errors.get(), 0);
    }

    #[test]
    fn microseconds_survive_and_rows_persist_across_restarts() {
        let db = TempDb::new("persist");
        let t = UNIX_EPOCH + Duration::from_micros(T0 * 1_000_000 + 790_680);
        let (store, thread, _) = started(&db.0, None);
        store.record("sas", &echoes(7, t));
        drop(store);
        thread.join().expect("join");
        let (store, thread, _) = started(&db.0, None);
        assert_eq!(
            rows(wait(store.query("sas", at(T0), at(T0 + 1)))),
            [echoes(7, t)]
        );
        drop(store);
        thread.join().expect("join");
    }

    #[test]
    fn the_originals_file_is_read_as_it_wrote_it() {
        let db = TempDb::new("original");
        let conn = Connection::open(&db.0).expect("create");
        conn.execute_batch(
            "CREATE TABLE echo_counts (id INTEGER NOT NULL, site_name VARCHAR NOT NULL, \
             timestamp DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL, \
             total_echoes INTEGER NOT NULL, ionospheric_echoes INTEGER NOT NULL, \
             ground_scatter_echoes INTEGER NOT NULL, PRIMARY KEY (id));
             INSERT INTO echo_counts (site_name, timestamp, total_echoes, ionospheric_echoes,
                 ground_scatter_echoes) VALUES
                 ('sas', '2026-12-03 13:56:16.790680', 3, 2, 1),
                 ('sas', '2026-12-03 13:57:16', 40, 30, 10),
                 ('sas', '2026-12-03 13:58:1x', 9, 9, 9);",
        )
        .expect("the original's schema and rows");
        drop(conn);
        let (store, thread, _) = started(&db.0, None);
        let got = rows(wait(store.query("sas", at(T0), at(T0 + 3_600))));
        let body = crate::profile::superdarn::echoes::render_json(&got);
        assert_eq!(
            String::from_utf8(body).expect("ASCII"),
            concat!(
                r#"{"ground_scatter_echoes":[1,10],"ionospheric_echoes":[2,30],"#,
                r#""timestamp":["2026-12-03T13:56:16.790680","2026-12-03T13:57:16"],"#,
                r#""total_echoes":[3,40]}"#,
                "\n"
            )
        );
        store.record("sas", &echoes(1, at(T0 + 600)));
        drop(store);
        thread.join().expect("join");
        let conn = Connection::open(&db.0).expect("reopen");
        let text: String = conn
            .query_row(
                "SELECT timestamp FROM echo_counts ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .expect("our row");
        assert_eq!(text, "2026-12-03 14:06:16.000000", "SQLAlchemy's layout");
    }

    #[test]
    fn a_table_of_another_shape_or_an_unusable_path_is_refused_naming_it() {
        let db = TempDb::new("shape");
        let conn = Connection::open(&db.0).expect("create");
        conn.execute_batch("CREATE TABLE echo_counts (id INTEGER PRIMARY KEY, site TEXT)")
            .expect("other table");
        drop(conn);
        let line = EchoStore::open(&db.0)
            .expect_err("wrong columns")
            .to_string();
        assert!(
            line.contains("database.sqlite") && line.contains("echo_counts"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let e = EchoStore::open(Path::new("/nonexistent-ringcast-dir/database.sqlite"));
        let line = e.expect_err("no such directory").to_string();
        assert!(
            line.contains("/nonexistent-ringcast-dir/database.sqlite"),
            "{line}"
        );
    }

    #[test]
    fn more_rows_than_the_bound_is_too_many() {
        let db = TempDb::new("bound");
        let store = EchoStore::open(&db.0).expect("open");
        {
            let tx = store.db.unchecked_transaction().expect("tx");
            for i in 0..=MAX_QUERY_ROWS {
                let i = u64::try_from(i).expect("small");
                insert(&tx, "sas", &echoes(1, at(T0 + i))).expect("insert");
            }
            tx.commit().expect("commit");
        }
        let last = at(T0 + u64::try_from(MAX_QUERY_ROWS).expect("small"));
        let (found, _) = window(&store.db, "sas", at(T0), last).expect("query");
        assert_eq!(found, Window::TooMany);
        let (found, _) = window(&store.db, "sas", at(T0 + 1), last).expect("query");
        assert!(matches!(found, Window::Rows(r) if r.len() == MAX_QUERY_ROWS));
    }

    #[test]
    fn retention_deletes_exactly_the_rows_before_the_cutoff() {
        let db = TempDb::new("retention");
        let store = EchoStore::open(&db.0).expect("open");
        let cutoff = UNIX_EPOCH + Duration::from_micros(T0 * 1_000_000 + 500_000);
        for (total, t) in [
            (1, at(T0 - 86_400)),
            (
                2,
                UNIX_EPOCH + Duration::from_micros(T0 * 1_000_000 + 499_999),
            ),
            (3, cutoff),
            (4, at(T0 + 1)),
        ] {
            insert(&store.db, "sas", &echoes(total, t)).expect("insert");
        }
        assert_eq!(delete_older_than(&store.db, cutoff).expect("delete"), 2);
        let (found, _) = window(&store.db, "sas", at(0), at(T0 + 10)).expect("query");
        let Window::Rows(left) = found else {
            panic!("rows")
        };
        let totals: Vec<u64> = left.iter().map(|e| e.total_echoes).collect();
        assert_eq!(totals, [3, 4], "the row at the cutoff stays");
        assert_eq!(delete_older_than(&store.db, cutoff).expect("again"), 0);
    }

    #[test]
    fn retention_runs_at_start_and_counts_what_it_deleted() {
        let db = TempDb::new("retention-start");
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let store = EchoStore::open(&db.0).expect("open");
        for (total, age) in [(1, day * 40), (2, day * 31), (3, day * 29), (4, day)] {
            insert(&store.db, "sas", &echoes(total, now - age)).expect("insert");
        }
        drop(store);
        let (store, thread, metrics) = started(&db.0, Some(30));
        // The pass at start came before this query: the queue is served in order after it.
        let left = rows(wait(store.query("sas", now - day * 365, now)));
        let totals: Vec<u64> = left.iter().map(|e| e.total_echoes).collect();
        assert_eq!(totals, [3, 4]);
        assert_eq!(metrics.echoes.deleted.get(), 2);
        drop(store);
        thread.join().expect("join");
        // Unset: kept for ever.
        let (store, thread, metrics) = started(&db.0, None);
        assert_eq!(
            rows(wait(store.query("sas", now - day * 365, now))).len(),
            2
        );
        assert_eq!(metrics.echoes.deleted.get(), 0);
        drop(store);
        thread.join().expect("join");
    }

    #[test]
    fn a_full_queue_drops_writes_and_refuses_queries_counting_both() {
        let metrics = Arc::new(Metrics::new(1));
        let (tx, rx) = bounded(1);
        let store = EchoesHandle {
            tx,
            metrics: metrics.clone(),
        };
        store.record("sas", &echoes(1, at(T0)));
        assert_eq!(metrics.echoes.dropped.get(), 0, "queued");
        store.record("sas", &echoes(2, at(T0)));
        assert_eq!(metrics.echoes.dropped.get(), 1, "full: dropped");
        let refused = store.query("sas", at(T0), at(T0 + 1)).err();
        assert_eq!(refused, Some(EchoStoreError::Busy));
        assert_eq!(metrics.echoes.busy.get(), 1);
        drop(rx);
        let refused = store.query("sas", at(T0), at(T0 + 1)).err();
        assert_eq!(refused, Some(EchoStoreError::Stopped));
        store.record("sas", &echoes(3, at(T0)));
        assert_eq!(metrics.echoes.dropped.get(), 2, "stopped: dropped");
        assert_eq!(metrics.echoes.busy.get(), 1, "stopped is not busy");
    }

    #[test]
    fn a_query_whose_thread_has_gone_is_stopped() {
        let (tx, rx) = bounded(1);
        let store = EchoesHandle {
            tx,
            metrics: Arc::new(Metrics::new(1)),
        };
        let pending = store.query("sas", at(T0), at(T0 + 1));
        // The channel drops the queued query (and its answer's sender) once both ends are gone.
        drop(rx);
        drop(store);
        assert_eq!(wait(pending), Err(EchoStoreError::Stopped));
    }
}
