//! fedid's `Store` port on diesel: SQLite (libsqlite3 bundled: nothing to
//! install) or PostgreSQL (several instances on one database), chosen at run
//! time by the database URL. Migrations from the top-level `migrations/`
//! folder are embedded in the binary.

#![forbid(unsafe_code)]

mod checkpoint;
mod command;
mod rows;
pub mod schema;
mod tx;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use fedid_domain::ports::{StoreError, Work, WriteUnit};
use fedid_domain::Store;

use crate::command::Command;
use crate::tx::DbTx;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
/// Serializes migrations of instances starting together on one PostgreSQL.
const MIGRATION_LOCK: i64 = 0x6665_6469_6400;
/// The most PostgreSQL writers, whatever the pool size: past a few, more
/// connections only split batches.
const MAX_POSTGRES_WRITERS: u32 = 4;

/// Why the store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL as [`redact_url`] gives it.
    #[error("database.url must start with sqlite:// or postgres:// (got {0:?})")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("migrations failed: {0}")]
    Migrate(String),
}

/// Sets every pooled SQLite connection up the same way.
#[derive(Debug)]
struct SqliteSetup;

impl SqliteSetup {
    /// How long a connection waits for a lock another holds (another
    /// process, or the checkpointer) before it gives up.
    const BUSY_TIMEOUT: &'static str = "PRAGMA busy_timeout = 10000";
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // wal_autocheckpoint: 8000 pages (32 MiB of WAL at 4 KiB pages)
        // instead of SQLite's 1000. checkpoint.rs copies the log's pages on
        // a thread of its own as they come, but under steady writes it
        // never catches up with the last ones, and only a checkpoint that
        // has copied every frame lets the log start over: so the writer
        // still checkpoints when the log reaches 8000 pages (by then most
        // are copied), which bounds the file. No `temp_store = MEMORY`: it
        // keeps each unit's savepoint journal in 1 KiB allocations (dozens
        // per unit); the default keeps it in one 64 KiB block, spilled to a
        // file only when larger. Both measured in docs/performance.md.
        // busy_timeout first: switching a new file to WAL takes a lock that
        // another process opening it at the same moment may hold.
        conn.batch_execute(SqliteSetup::BUSY_TIMEOUT)
            .and_then(|()| {
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
                     PRAGMA cache_size = -16384; PRAGMA wal_autocheckpoint = 8000;",
                )
            })
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Sets every PostgreSQL connection (pooled or a writer's) up the same way.
#[derive(Debug)]
struct PostgresSetup;

impl PostgresSetup {
    /// Every statement fedid runs finds its rows by an index, or has none
    /// to choose from (a gauge's count). Statements stay prepared for a
    /// connection's life, and a plan made while a table was nearly empty
    /// would otherwise stay a full scan as the table grows: the inbox's
    /// replay lookup went from 0.7 ms to 4 ms per batch within one run
    /// (docs/performance.md).
    const SETUP: &'static str = "SET enable_seqscan = off";

    fn run(conn: &mut PgConnection) -> QueryResult<()> {
        conn.batch_execute(Self::SETUP)
    }
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for PostgresSetup {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        Self::run(conn).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A pool of connections for reads and the writer threads that run every
/// write (`writer.rs`), on one backend.
pub struct Connections<C: diesel::r2d2::R2D2Connection + 'static> {
    pool: Pool<ConnectionManager<C>>,
    writers: Arc<writer::Writers>,
}

impl<C: diesel::r2d2::R2D2Connection + 'static> Clone for Connections<C> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            writers: Arc::clone(&self.writers),
        }
    }
}

impl<C: diesel::r2d2::R2D2Connection + 'static> std::ops::Deref for Connections<C> {
    type Target = Pool<ConnectionManager<C>>;

    fn deref(&self) -> &Self::Target {
        &self.pool
    }
}

/// The diesel store, on either backend. SQLite has one writer thread (far
/// cheaper than SQLite's sleeping busy handler; other processes on the same
/// file still meet `busy_timeout`); PostgreSQL a few.
#[derive(Clone)]
pub enum DieselStore {
    Sqlite(Connections<SqliteConnection>),
    Postgres(Connections<PgConnection>),
}

impl std::fmt::Debug for DieselStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite(_) => "DieselStore::Sqlite",
            Self::Postgres(_) => "DieselStore::Postgres",
        })
    }
}

/// The folder names of the migrations of `source` with these versions.
fn migration_names<DB: diesel::backend::Backend>(
    source: &EmbeddedMigrations,
    versions: &[diesel::migration::MigrationVersion<'_>],
) -> Vec<String>
where
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    let known = diesel::migration::MigrationSource::<DB>::migrations(source).unwrap_or_default();
    versions
        .iter()
        .map(|version| {
            known
                .iter()
                .map(|m| m.name())
                .find(|name| name.version() == *version)
                .map_or_else(|| version.to_string(), |name| name.to_string())
        })
        .collect()
}

/// A URL's parts around its user information: scheme, user information
/// (what comes before `@`, if anything), host and port, and the rest.
fn url_parts(url: &str) -> Option<(&str, Option<&str>, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    Some(match authority.rsplit_once('@') {
        Some((userinfo, host)) => (scheme, Some(userinfo), host, tail),
        None => (scheme, None, authority, tail),
    })
}

/// `url` with the password of its user information replaced by `***`, for
/// messages and logs: `postgres://fedid:secret@db/fedid` becomes
/// `postgres://fedid:***@db/fedid`.
pub fn redact_url(url: &str) -> String {
    match url_parts(url) {
        Some((scheme, Some(userinfo), host, tail)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// `message` with any copy of `url`'s password hidden: drivers may echo
/// what they were given.
fn redact_message(message: &str, url: &str) -> String {
    let password = url_parts(url)
        .and_then(|(_, userinfo, _, _)| userinfo?.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(password) => message.replace(password, "***"),
        None => message.to_owned(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl DieselStore {
    /// Opens a pool for `sqlite://PATH` (created if absent) or `postgres://...`.
    pub fn open(url: &str, pool_size: u32) -> Result<Self, OpenError> {
        let size = pool_size.max(1);
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(OpenError::UnsupportedUrl(redact_url(url)));
            }
            // One connection first: the pool would retry a missing folder
            // or an unreadable file until its timeout, then hide the cause.
            SqliteConnection::establish(path).map_err(|e| OpenError::Connect(format!("{path}: {e}")))?;
            let pool = Pool::builder()
                .max_size(size)
                .connection_timeout(Duration::from_secs(10))
                // A file cannot go stale the way a network connection can:
                // no `SELECT 1` before every checkout.
                .test_on_check_out(false)
                .connection_customizer(Box::new(SqliteSetup))
                .build(ConnectionManager::<SqliteConnection>::new(path))
                .map_err(|e| OpenError::Connect(format!("{path}: {e}")))?;
            let path = path.to_owned();
            let connect = move || {
                let mut conn = SqliteConnection::establish(&path).map_err(unavailable)?;
                SqliteSetup.on_acquire(&mut conn).map_err(unavailable)?;
                Ok(conn)
            };
            let started = |e: std::io::Error| OpenError::Connect(e.to_string());
            let checkpoints = checkpoint::start(connect.clone()).map_err(started)?;
            let writers = writer::Writers::start("sqlite", 1, connect, move |conn: &mut SqliteConnection| {
                checkpoints.after_commit(conn)
            })
            .map_err(started)?;
            Ok(Self::Sqlite(Connections {
                pool,
                writers: Arc::new(writers),
            }))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // One connection first, for the same reason: a closed port or a
            // wrong role fails at once, with the server's own words.
            PgConnection::establish(url).map_err(|e| {
                OpenError::Connect(format!("{}: {}", redact_url(url), redact_message(&e.to_string(), url)))
            })?;
            // `pool_size` connections in all: half for the writers (at
            // most four), the rest for reads.
            let writers = (size / 2).clamp(1, MAX_POSTGRES_WRITERS);
            let pool = Pool::builder()
                .max_size(size.saturating_sub(writers).max(1))
                .connection_timeout(Duration::from_secs(10))
                .connection_customizer(Box::new(PostgresSetup))
                .build(ConnectionManager::<PgConnection>::new(url))
                .map_err(|e| {
                    OpenError::Connect(format!("{}: {}", redact_url(url), redact_message(&e.to_string(), url)))
                })?;
            let owned_url = url.to_owned();
            let connect = move || {
                let mut conn = PgConnection::establish(&owned_url)
                    .map_err(|e| unavailable(redact_message(&e.to_string(), &owned_url)))?;
                PostgresSetup::run(&mut conn).map_err(|e| unavailable(e.to_string()))?;
                Ok(conn)
            };
            let writers = writer::Writers::start("postgres", writers as usize, connect, |_: &mut PgConnection| {})
                .map_err(|e| OpenError::Connect(e.to_string()))?;
            Ok(Self::Postgres(Connections {
                pool,
                writers: Arc::new(writers),
            }))
        } else {
            Err(OpenError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// How many migrations are not applied yet.
    pub fn pending_migrations(&self) -> Result<usize, OpenError> {
        let fail = |e: &dyn std::fmt::Display| OpenError::Migrate(e.to_string());
        match self {
            Self::Sqlite(pool) => {
                let mut conn = pool.get().map_err(|e| OpenError::Connect(e.to_string()))?;
                conn.pending_migrations(SQLITE_MIGRATIONS)
                    .map(|p| p.len())
                    .map_err(|e| fail(&e))
            }
            Self::Postgres(pool) => {
                let mut conn = pool.get().map_err(|e| OpenError::Connect(e.to_string()))?;
                conn.pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|p| p.len())
                    .map_err(|e| fail(&e))
            }
        }
    }

    /// Applies pending migrations; returns the names of those applied
    /// (`2026-11-27-000001_init`).
    pub fn migrate(&self) -> Result<Vec<String>, OpenError> {
        let fail = |e: &dyn std::fmt::Display| OpenError::Migrate(e.to_string());
        match self {
            Self::Sqlite(pool) => {
                let mut conn = pool.get().map_err(|e| OpenError::Connect(e.to_string()))?;
                // SQLite has no advisory lock: the whole run holds the write
                // lock (BEGIN IMMEDIATE; each migration becomes a savepoint),
                // and what is applied is read inside it, so processes
                // migrating one file at once apply each migration once.
                let applied = conn
                    .immediate_transaction(|conn| {
                        conn.run_pending_migrations(SQLITE_MIGRATIONS)
                            .map(|versions| migration_names::<diesel::sqlite::Sqlite>(&SQLITE_MIGRATIONS, &versions))
                            .map_err(|e| diesel::result::Error::QueryBuilderError(e.to_string().into()))
                    })
                    .map_err(|e| fail(&e))?;
                Ok(applied)
            }
            Self::Postgres(pool) => {
                let mut conn = pool.get().map_err(|e| OpenError::Connect(e.to_string()))?;
                conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                    .map_err(|e| fail(&e))?;
                let applied = conn
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|versions| migration_names::<diesel::pg::Pg>(&POSTGRES_MIGRATIONS, &versions))
                    .map_err(|e| fail(&e));
                let unlocked = conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
                let applied = applied?;
                unlocked.map_err(|e| fail(&e))?;
                Ok(applied)
            }
        }
    }

    fn sqlite(
        pool: &Pool<ConnectionManager<SqliteConnection>>,
    ) -> Result<PooledConnection<ConnectionManager<SqliteConnection>>, StoreError> {
        pool.get().map_err(unavailable)
    }
}

/// A read transaction on SQLite with statements that stay prepared
/// (`command.rs`). A read changes nothing, so it ends with `COMMIT` whatever
/// the work returned.
fn read_sqlite(conn: &mut SqliteConnection, work: &mut Work<'_>) -> Result<(), StoreError> {
    Command("BEGIN").begin(conn).map_err(unavailable)?;
    let outcome = work(&mut DbTx {
        conn,
        lock_rows: false,
        retry: false,
    });
    if let Err(e) = Command("COMMIT").run(conn) {
        let _ = Command("ROLLBACK").run(conn);
        return outcome.and(Err(unavailable(e)));
    }
    outcome
}

fn settle(result: Result<(), diesel::result::Error>) -> Result<(), StoreError> {
    result.map_err(unavailable)
}

/// Carries the read's own error through diesel's transaction.
struct ReadFailure(Result<StoreError, diesel::result::Error>);

impl From<diesel::result::Error> for ReadFailure {
    fn from(e: diesel::result::Error) -> Self {
        Self(Err(e))
    }
}

impl Store for DieselStore {
    fn write(&self, unit: Box<dyn WriteUnit>) {
        match self {
            Self::Sqlite(connections) => connections.writers.submit(unit),
            Self::Postgres(connections) => connections.writers.submit(unit),
        }
    }

    fn read(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(pool) => {
                let mut conn = Self::sqlite(pool)?;
                read_sqlite(&mut conn, work)
            }
            Self::Postgres(pool) => {
                let mut conn = pool.get().map_err(unavailable)?;
                let read = conn.build_transaction().read_only().repeatable_read().run(|conn| {
                    let mut tx = DbTx {
                        conn,
                        lock_rows: false,
                        retry: false,
                    };
                    work(&mut tx).map_err(|e| ReadFailure(Ok(e)))
                });
                match read {
                    Ok(()) => Ok(()),
                    Err(ReadFailure(Ok(e))) => Err(e),
                    Err(ReadFailure(Err(e))) => settle(Err(e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fedid_domain::ports::write;
    use fedid_domain::UnixTime;

    #[test]
    fn redact_url_hides_the_password_and_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://fedid:s3cret@db.example:5432/fedid?sslmode=require"),
            "postgres://fedid:***@db.example:5432/fedid?sslmode=require"
        );
        assert_eq!(redact_url("postgres://fedid@db/fedid"), "postgres://fedid@db/fedid");
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
        assert_eq!(redact_url("mysql://u:p@w@h/d"), "mysql://u:***@h/d");
    }

    #[test]
    fn an_unsupported_url_is_named_without_its_password() {
        let error = DieselStore::open("mysql://root:hunter2@127.0.0.1/fedid", 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains("mysql://root:***@127.0.0.1/fedid"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn a_refused_postgres_connection_fails_at_once_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://fedid:hunter2@127.0.0.1:{port}/fedid");
        let error = DieselStore::open(&url, 1).unwrap_err().to_string();
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    /// A migrated SQLite store in `fedid.db` of a new folder.
    fn fresh_sqlite() -> (tempfile::TempDir, DieselStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("fedid.db").display());
        let store = DieselStore::open(&url, 2).unwrap();
        store.migrate().unwrap();
        (dir, store)
    }

    #[test]
    fn committed_pages_reach_the_sqlite_file_while_the_store_is_open() {
        let (dir, store) = fresh_sqlite();
        let path = dir.path().join("fedid.db");
        let file_size = || std::fs::metadata(&path).unwrap().len();
        let before = file_size();
        // About 2 MiB of messages: far beyond the pages the file holds now.
        let body = "x".repeat(2048);
        write(&store, None, move |tx| {
            let user = tx.create_user(UnixTime::from_secs(0))?;
            for _ in 0..1000 {
                tx.insert_message(user, UnixTime::from_secs(0), None, &body)?;
            }
            Ok::<_, StoreError>(())
        })
        .wait()
        .unwrap();
        // No connection checkpoints as it commits: only the checkpointer
        // thread copies the log into the file.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while file_size() <= before + 1024 * 1024 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            file_size() > before + 1024 * 1024,
            "{} bytes, {before} before",
            file_size()
        );
    }

    /// One commit of 128 messages of 2 KiB.
    fn write_256_kib(store: &DieselStore, user: fedid_domain::UserId) {
        write(store, None, move |tx| {
            for _ in 0..128 {
                tx.insert_message(user, UnixTime::from_secs(0), None, &"x".repeat(2048))?;
            }
            Ok::<_, StoreError>(())
        })
        .wait()
        .unwrap();
    }

    #[test]
    fn the_sqlite_write_ahead_log_stays_bounded_under_steady_writes() {
        let (dir, store) = fresh_sqlite();
        let user = write(&store, None, |tx| tx.create_user(UnixTime::from_secs(0)))
            .wait()
            .unwrap();
        let wal = dir.path().join("fedid.db-wal");
        let mut largest = 0;
        // 96 MiB of messages, 256 KiB a commit, one commit after another:
        // the background checkpoints alone never catch up with the last
        // frames, so only the writer's restart lets the log start over
        // (checkpoint.rs). The log restarts from 16 MiB; what the writer
        // appends while the checkpointer gathers and copies comes on top
        // (seen here up to 43 MiB in a debug build), so the bound is twice
        // the writer's own automatic checkpoint (32 MiB): without the
        // restart the log reached 43 to 69 MiB here.
        for _ in 0..384 {
            write_256_kib(&store, user);
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        assert!(largest < 64 * 1024 * 1024, "the log reached {largest} bytes");
    }

    #[test]
    fn a_reader_holding_an_old_snapshot_does_not_stall_the_sqlite_writer() {
        let (dir, store) = fresh_sqlite();
        let user = write(&store, None, |tx| tx.create_user(UnixTime::from_secs(0)))
            .wait()
            .unwrap();
        // A reader that began before the writes below and never ends: the
        // log cannot restart while it reads, so every restart the
        // checkpointer asks for finds it. Each may wait 10 ms for it, not
        // the connection's 10 s.
        let mut reader = SqliteConnection::establish(&dir.path().join("fedid.db").display().to_string()).unwrap();
        reader.batch_execute("BEGIN; SELECT COUNT(*) FROM users;").unwrap();
        let mut slowest = Duration::ZERO;
        for _ in 0..256 {
            let started = std::time::Instant::now();
            write_256_kib(&store, user);
            slowest = slowest.max(started.elapsed());
        }
        assert!(slowest < Duration::from_secs(5), "a write waited {slowest:?}");
        reader.batch_execute("COMMIT").unwrap();
    }

    #[test]
    fn a_missing_sqlite_folder_is_named_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("fedid.db");
        let error = DieselStore::open(&format!("sqlite://{}", path.display()), 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
}
