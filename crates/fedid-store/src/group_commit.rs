//! Group commit for SQLite. SQLite has one writer at a time; each commit
//! appends every page it touched to the WAL. Concurrent units of work
//! therefore share one transaction: each runs in its own SAVEPOINT (so its
//! failure undoes only itself), and the last unit of a batch, the one that
//! finds nobody waiting behind it, commits for all. A unit returns only
//! after the commit that holds it, with that commit's outcome: callers see
//! exactly the all-or-nothing, durable-on-return behaviour of one
//! transaction each.

use std::collections::VecDeque;
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

#[derive(Default)]
struct State {
    /// The open batch's connection, inside `BEGIN IMMEDIATE`.
    open: Option<Connection>,
    /// The open (or last) batch's number and size.
    batch: u64,
    size: usize,
    /// Every batch up to this one has ended.
    finished: u64,
    /// Recent batches whose commit failed.
    failed: VecDeque<u64>,
}

#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    waiting: AtomicUsize,
    ended: Condvar,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl GroupCommit {
    /// The state, recovering from a unit that panicked mid-batch: its
    /// batch can no longer be trusted, so it is rolled back and failed.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = match self.state.lock() {
            Ok(state) => return state,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.state.clear_poison();
        if let Some(mut conn) = state.open.take() {
            let _ = Command("ROLLBACK").run(&mut conn);
            let batch = state.batch;
            state.failed.push_back(batch);
            state.finished = batch;
            self.ended.notify_all();
        }
        state
    }

    pub(crate) fn write(
        &self,
        pool: &Pool<ConnectionManager<SqliteConnection>>,
        work: &mut Work<'_>,
    ) -> Result<(), StoreError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if state.open.is_none() {
            let mut conn = pool.get().map_err(unavailable)?;
            // IMMEDIATE: take the write lock now, so that a read inside the
            // batch never has to upgrade (other processes wait on busy_timeout).
            Command("BEGIN IMMEDIATE").run(&mut conn).map_err(unavailable)?;
            state.open = Some(conn);
            state.batch += 1;
            state.size = 0;
        }
        let batch = state.batch;
        state.size += 1;
        let outcome = match state.open.as_mut() {
            Some(conn) => Self::run_unit(conn, work),
            None => Err(UnitFailure::Broken(unavailable("no open batch"))),
        };
        let broken = matches!(&outcome, Err(UnitFailure::Broken(_)));
        let outcome = outcome.map_err(|f| match f {
            UnitFailure::Work(e) | UnitFailure::Broken(e) => e,
        });
        if !broken && self.waiting.load(Ordering::SeqCst) > 0 && state.size < MAX_BATCH {
            // Someone is queued behind: they commit, or pass it on.
            while state.finished < batch {
                state = match self.ended.wait(state) {
                    Ok(state) => state,
                    Err(poisoned) => {
                        // Release the guard before recovering through `lock`.
                        drop(poisoned);
                        self.lock()
                    }
                };
            }
            if state.failed.contains(&batch) {
                return Err(unavailable("the group commit failed"));
            }
            return outcome;
        }
        let committed = match state.open.take() {
            Some(mut conn) if !broken => Command("COMMIT").run(&mut conn).map_err(|e| {
                let _ = Command("ROLLBACK").run(&mut conn);
                unavailable(e)
            }),
            Some(mut conn) => {
                let _ = Command("ROLLBACK").run(&mut conn);
                Err(unavailable("a unit of work broke the batch"))
            }
            None => Err(unavailable("no open batch")),
        };
        if committed.is_err() {
            state.failed.push_back(batch);
            if state.failed.len() > 64 {
                state.failed.pop_front();
            }
        }
        state.finished = batch;
        self.ended.notify_all();
        committed?;
        outcome
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
        let result = work(&mut tx);
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
