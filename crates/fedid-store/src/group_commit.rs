//! Group commit for SQLite on one writer thread. SQLite has one writer at a
//! time, and each commit appends every page it touched to the WAL. So every
//! unit of work runs on a single writer thread (a one-thread rayon pool:
//! `install` runs the caller's borrowed closure there and blocks the caller
//! until it returns). Units queued together share one transaction: each runs
//! in its own SAVEPOINT (so its failure undoes only itself), and the unit
//! that finds nobody queued behind it commits for all. A caller returns
//! only after the commit that holds its unit, with that commit's outcome:
//! callers see exactly the all-or-nothing, durable-on-return behaviour of
//! one transaction each.
//!
//! Why a thread of its own: when the connection was passed from caller to
//! caller under a mutex, each hand-off waited for the next caller's thread
//! to be scheduled, and on a busy 2-core machine the writer stood idle about
//! half the time. The writer thread now runs queued units back to back.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use fedid_domain::ports::{StoreError, Work};

use crate::command::Command;
use crate::tx::DbTx;

/// At most this many units share one commit, bounding how long the first waits.
const MAX_BATCH: usize = 64;

type Connection = PooledConnection<ConnectionManager<SqliteConnection>>;

/// What only the writer thread touches.
#[derive(Default)]
struct Writer {
    /// The writer's own connection, kept from batch to batch: its page and
    /// statement caches stay valid because no other connection writes.
    conn: Option<Connection>,
    /// Whether `conn` is inside `BEGIN IMMEDIATE`.
    open: bool,
    /// The open (or last) batch's number and size.
    batch: u64,
    size: usize,
}

/// Batch outcomes, for callers waiting on a commit made by another unit.
#[derive(Default)]
struct Commits {
    /// Every batch up to this one has ended.
    finished: u64,
    /// Recent batches whose commit failed.
    failed: VecDeque<u64>,
}

pub(crate) struct GroupCommit {
    thread: rayon_core::ThreadPool,
    writer: Mutex<Writer>,
    /// Units handed to the writer thread and not yet run.
    queued: AtomicUsize,
    commits: Mutex<Commits>,
    ended: Condvar,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Locks, ignoring poison: every holder leaves the data consistent, and a
/// unit that panicked is caught before it can leave a batch half-run.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How one unit ended, seen from the writer thread.
struct Ran {
    batch: u64,
    outcome: Result<(), StoreError>,
    /// The batch ended with this unit (committed or rolled back): the
    /// outcome already includes the commit's.
    ended_batch: bool,
}

impl GroupCommit {
    pub(crate) fn new() -> Result<Self, String> {
        let thread = rayon_core::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "fedid-sqlite-writer".into())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            thread,
            writer: Mutex::default(),
            queued: AtomicUsize::new(0),
            commits: Mutex::default(),
            ended: Condvar::new(),
        })
    }

    pub(crate) fn write(
        &self,
        pool: &Pool<ConnectionManager<SqliteConnection>>,
        work: &mut Work<'_>,
    ) -> Result<(), StoreError> {
        // Counted before it is handed over, so that the unit running now
        // leaves the batch open for this one.
        self.queued.fetch_add(1, Ordering::SeqCst);
        let ran = self.thread.install(|| self.run(pool, work));
        if ran.ended_batch {
            return ran.outcome;
        }
        let mut commits = lock(&self.commits);
        while commits.finished < ran.batch {
            commits = self.ended.wait(commits).unwrap_or_else(|p| p.into_inner());
        }
        if commits.failed.contains(&ran.batch) {
            return Err(unavailable("the group commit failed"));
        }
        ran.outcome
    }

    /// On the writer thread: runs one unit in the open batch, and ends the
    /// batch when nobody is queued behind it.
    fn run(&self, pool: &Pool<ConnectionManager<SqliteConnection>>, work: &mut Work<'_>) -> Ran {
        let mut writer = lock(&self.writer);
        let writer = &mut *writer;
        if !writer.open {
            match Self::begin(pool, &mut writer.conn) {
                Ok(()) => {
                    writer.open = true;
                    writer.batch += 1;
                    writer.size = 0;
                }
                Err(e) => {
                    // No batch to end; the connection is replaced next time.
                    writer.conn = None;
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Ran {
                        batch: writer.batch,
                        outcome: Err(e),
                        ended_batch: true,
                    };
                }
            }
        }
        let batch = writer.batch;
        let outcome = match writer.conn.as_mut() {
            Some(conn) => Self::run_unit(conn, work),
            None => Err(UnitFailure::Broken(unavailable("no writer connection"))),
        };
        self.queued.fetch_sub(1, Ordering::SeqCst);
        writer.size += 1;
        let broken = matches!(&outcome, Err(UnitFailure::Broken(_)));
        let outcome = outcome.map_err(|f| match f {
            UnitFailure::Work(e) | UnitFailure::Broken(e) => e,
        });
        if !broken && self.queued.load(Ordering::SeqCst) > 0 && writer.size < MAX_BATCH {
            // Someone is queued behind: they commit, or pass it on.
            return Ran {
                batch,
                outcome,
                ended_batch: false,
            };
        }
        writer.open = false;
        let committed = match writer.conn.as_mut() {
            Some(conn) if !broken => Command("COMMIT").run(conn).map_err(|e| {
                let _ = Command("ROLLBACK").run(conn);
                unavailable(e)
            }),
            Some(conn) => {
                let _ = Command("ROLLBACK").run(conn);
                Err(unavailable("a unit of work broke the batch"))
            }
            None => Err(unavailable("no writer connection")),
        };
        if committed.is_err() {
            writer.conn = None;
        }
        let mut commits = lock(&self.commits);
        if committed.is_err() {
            commits.failed.push_back(batch);
            if commits.failed.len() > 64 {
                commits.failed.pop_front();
            }
        }
        commits.finished = batch;
        self.ended.notify_all();
        Ran {
            batch,
            outcome: committed.and(outcome),
            ended_batch: true,
        }
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
