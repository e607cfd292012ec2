//! Group commit for SQLite on one writer thread. SQLite has one writer at a
//! time, and each commit appends every page it touched to the WAL. So every
//! unit of work runs on a single writer thread (a one-thread rayon pool:
//! `install` runs the caller's borrowed closure there and blocks the caller
//! until it returns; `spawn` queues an owned one for a detached write, whose
//! callback gets the outcome). Units queued together share one transaction: each runs
//! in its own SAVEPOINT (so its failure undoes only itself), and the unit
//! that finds nobody queued behind it commits for all. A caller returns
//! only after the commit that holds its unit, with that commit's outcome:
//! callers see exactly the all-or-nothing, durable-on-return behaviour of
//! one transaction each.
//!
//! How a batch forms: after its unit, a job runs the next queued job itself
//! (`rayon_core::yield_now`), nested, before returning; the innermost job,
//! finding the queue empty or the batch full, commits, and the jobs return
//! in turn with the batch's outcome. So each caller is woken once, after the
//! commit, and never in the middle of a batch, where on two cores the woken
//! caller would preempt the writer only to sleep again.
//!
//! Why a thread of its own: when the connection was passed from caller to
//! caller under a mutex, each hand-off waited for the next caller's thread
//! to be scheduled, and on a busy 2-core machine the writer stood idle about
//! half the time. The writer thread now runs queued units back to back.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use fedid_domain::ports::{StoreError, Work, WriteDone};

use crate::command::Command;
use crate::tx::DbTx;

/// At most this many units share one commit, bounding how long the first
/// waits and how deep the jobs nest.
const MAX_BATCH: usize = 64;

type Connection = PooledConnection<ConnectionManager<SqliteConnection>>;

/// What only the writer thread touches (the lock is never contended: it
/// is released before a nested job runs).
struct Writer {
    /// The writer's own connection, kept from batch to batch: its page and
    /// statement caches stay valid because no other connection writes.
    conn: Option<Connection>,
    /// Whether `conn` is inside `BEGIN IMMEDIATE`.
    open: bool,
    /// How many units the open batch holds.
    size: usize,
    /// How the last batch ended, for the jobs of its outer units.
    ended: Result<(), StoreError>,
}

pub(crate) struct GroupCommit {
    thread: rayon_core::ThreadPool,
    writer: Mutex<Writer>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Locks, ignoring poison: every holder leaves the data consistent, and a
/// unit that panicked is caught before it can leave a batch half-run.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GroupCommit {
    pub(crate) fn new() -> Result<Self, String> {
        let thread = rayon_core::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "fedid-sqlite-writer".into())
            // Room for MAX_BATCH nested jobs, each with its unit's frames.
            .stack_size(8 << 20)
            // A detached job never panics (units are caught); were one to,
            // its caller's `done` is dropped uncalled, which it sees.
            .panic_handler(|_| {})
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            thread,
            writer: Mutex::new(Writer {
                conn: None,
                open: false,
                size: 0,
                ended: Ok(()),
            }),
        })
    }

    pub(crate) fn write(
        &self,
        pool: &Pool<ConnectionManager<SqliteConnection>>,
        work: &mut Work<'_>,
    ) -> Result<(), StoreError> {
        self.thread.install(|| self.run(pool, work))
    }

    /// Queues `work` and returns; `done` gets what [`Self::write`] would
    /// return, on the writer thread, once the batch holding it has ended.
    pub(crate) fn write_detached(
        self: &Arc<Self>,
        pool: &Pool<ConnectionManager<SqliteConnection>>,
        mut work: Box<Work<'static>>,
        done: WriteDone,
    ) {
        let (this, pool) = (Arc::clone(self), pool.clone());
        self.thread.spawn(move || done(this.run(&pool, &mut *work)));
    }

    /// On the writer thread: runs one unit in the open batch (opening one
    /// if none is), then the units queued behind it, and returns once the
    /// batch has ended, with the unit's outcome and the batch's.
    fn run(&self, pool: &Pool<ConnectionManager<SqliteConnection>>, work: &mut Work<'_>) -> Result<(), StoreError> {
        let (outcome, full) = {
            let mut writer = lock(&self.writer);
            let writer = &mut *writer;
            if !writer.open {
                if let Err(e) = Self::begin(pool, &mut writer.conn) {
                    // No batch to end; the connection is replaced next time.
                    writer.conn = None;
                    return Err(e);
                }
                writer.open = true;
                writer.size = 0;
            }
            let outcome = match writer.conn.as_mut() {
                Some(conn) => Self::run_unit(conn, work),
                None => Err(UnitFailure::Broken(unavailable("no writer connection"))),
            };
            writer.size += 1;
            let outcome = match outcome {
                Ok(()) => Ok(()),
                Err(UnitFailure::Work(e)) => Err(e),
                Err(UnitFailure::Broken(e)) => {
                    Self::end(writer, false);
                    return Err(e);
                }
            };
            (outcome, writer.size >= MAX_BATCH)
        };
        // The next queued unit joins the batch, nested, before this caller
        // is woken; the lock is released so that it can run.
        if !full {
            rayon_core::yield_now();
        }
        let mut writer = lock(&self.writer);
        // Still open: nobody was queued behind (or the batch is full), so
        // this unit commits for all. Otherwise a later unit ended it.
        if writer.open {
            Self::end(&mut writer, true);
        }
        writer.ended.clone().and(outcome)
    }

    /// Commits (or rolls back) the open batch and records how it ended.
    fn end(writer: &mut Writer, commit: bool) {
        writer.open = false;
        let ended = match writer.conn.as_mut() {
            Some(conn) if commit => Command("COMMIT").run(conn).map_err(|e| {
                let _ = Command("ROLLBACK").run(conn);
                unavailable(e)
            }),
            Some(conn) => {
                let _ = Command("ROLLBACK").run(conn);
                Err(unavailable("a unit of work broke the batch"))
            }
            None => Err(unavailable("no writer connection")),
        };
        if ended.is_err() {
            writer.conn = None;
        }
        writer.ended = ended;
    }

    /// Opens a batch on the writer's connection, taking one from the pool
    /// the first time or after a failure.
    fn begin(
        pool: &Pool<ConnectionManager<SqliteConnection>>,
        conn: &mut Option<Connection>,
    ) -> Result<(), StoreError> {
        let conn = match conn {
            Some(conn) => conn,
            None => conn.insert(pool.get().map_err(unavailable)?),
        };
        // IMMEDIATE: take the write lock now, so that a read inside the
        // batch never has to upgrade (other processes wait on busy_timeout).
        Command("BEGIN IMMEDIATE").begin(conn).map_err(unavailable)
    }

    fn run_unit(conn: &mut Connection, work: &mut Work<'_>) -> Result<(), UnitFailure> {
        Command("SAVEPOINT unit")
            .run(conn)
            .map_err(|e| UnitFailure::Broken(unavailable(e)))?;
        let mut tx = DbTx {
            conn: &mut **conn,
            lock_rows: false,
            retry: false,
        };
        // A panicking unit must not take the writer thread's batch with it
        // unnoticed: it breaks the batch, which is rolled back.
        let result = catch_unwind(AssertUnwindSafe(|| work(&mut tx)))
            .map_err(|_| UnitFailure::Broken(unavailable("a unit of work panicked")))?;
        let closed = match result {
            Ok(()) => Command("RELEASE unit").run(conn),
            Err(_) => Command("ROLLBACK TO unit")
                .run(conn)
                .and_then(|()| Command("RELEASE unit").run(conn)),
        };
        closed.map_err(|e| UnitFailure::Broken(unavailable(e)))?;
        result.map_err(UnitFailure::Work)
    }
}

enum UnitFailure {
    /// The unit's own error; its savepoint was rolled back.
    Work(StoreError),
    /// The batch's transaction can no longer be trusted.
    Broken(StoreError),
}
