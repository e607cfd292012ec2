//! The write path of both backends: writer threads that each own one
//! connection and run the units handed to them in batches. A writer takes
//! the first queued unit, opens a transaction, runs it, then runs whatever
//! else is queued behind it each in a savepoint of its own (up to
//! [`MAX_BATCH`]), commits once and answers each unit with its outcome. So
//! units that arrive together share one commit (one WAL append and sync on
//! SQLite, one round trip and flush on PostgreSQL), while each stays all or
//! nothing: a unit that fails or panics is rolled back to its savepoint and
//! fails alone. The first unit of a transaction needs no savepoint: if it
//! fails, the whole transaction, which holds nothing else, is rolled back
//! (on SQLite a savepoint journals every page its unit changes, which was
//! most of the writer's file writes). A unit is answered only after the
//! commit that holds it.
//!
//! SQLite has one writer (it allows one at a time); PostgreSQL has several,
//! and units of one lane ([`WriteUnit::lane`]: one user's) always go to the
//! same writer, so they share commits instead of waiting on each other's row
//! locks from different connections.
//!
//! Queues are unbounded on purpose: every unit has a caller waiting for it
//! (a request, bounded by the server's connection limits, or a command), so
//! the queue cannot outgrow the callers.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;
use diesel::QueryResult;
use fedid_domain::ports::{StoreError, WriteUnit};

use crate::command::Command;
use crate::tx::DbTx;

/// At most this many units share one commit, bounding how long the first
/// of them waits for its answer.
pub(crate) const MAX_BATCH: usize = 64;

/// Opens a unit's savepoint (each unit's is named alike: see
/// [`BatchConnection::RELEASE_EACH_UNIT`]).
const SAVEPOINT: &str = "SAVEPOINT unit";

/// Ends a transaction and everything in it.
const ROLLBACK: &str = "ROLLBACK";

/// How often a unit is run again after a serialization failure or a
/// deadlock before it fails.
const RETRIES: usize = 5;

/// A connection a writer can batch on.
pub(crate) trait BatchConnection: Send + 'static {
    /// Opens the batch's transaction.
    const BEGIN: &'static str;
    /// Whether a unit that succeeded releases its savepoint at once. On
    /// PostgreSQL it does not: each statement is a round trip, and the
    /// next `SAVEPOINT unit` nests inside it (at most [`MAX_BATCH`] deep,
    /// within PostgreSQL's cache of 64 subtransactions); `ROLLBACK TO unit`
    /// still names the newest, the unit's own.
    const RELEASE_EACH_UNIT: bool;
    /// Runs one constant statement.
    fn command(&mut self, sql: &'static str) -> QueryResult<()>;
    /// Runs `unit` on this connection's open transaction; whether the
    /// database asked for it to be run again comes back beside its outcome.
    fn run(&mut self, unit: &mut dyn WriteUnit) -> (Result<(), StoreError>, bool);
}

impl BatchConnection for SqliteConnection {
    // IMMEDIATE: take the write lock now, so that a read inside the batch
    // never has to upgrade (other processes wait on busy_timeout).
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const RELEASE_EACH_UNIT: bool = true;

    fn command(&mut self, sql: &'static str) -> QueryResult<()> {
        Command(sql).run(self)
    }

    fn run(&mut self, unit: &mut dyn WriteUnit) -> (Result<(), StoreError>, bool) {
        run_on(self, false, unit)
    }
}

impl BatchConnection for PgConnection {
    // READ COMMITTED, with the rows a unit changes locked as it reads them.
    const BEGIN: &'static str = "BEGIN";
    const RELEASE_EACH_UNIT: bool = false;

    fn command(&mut self, sql: &'static str) -> QueryResult<()> {
        Command(sql).run(self)
    }

    fn run(&mut self, unit: &mut dyn WriteUnit) -> (Result<(), StoreError>, bool) {
        run_on(self, true, unit)
    }
}

/// Runs `unit` on `conn`'s open transaction, locking the rows it reads for
/// update when `lock_rows`; whether the database asked for a retry.
fn run_on<C>(conn: &mut C, lock_rows: bool, unit: &mut dyn WriteUnit) -> (Result<(), StoreError>, bool)
where
    for<'a> DbTx<'a, C>: fedid_domain::Tx,
{
    let mut tx = DbTx {
        conn,
        lock_rows,
        retry: false,
    };
    let outcome = unit.run(&mut tx);
    (outcome, tx.retry)
}

/// The writer threads of one store and the queues that feed them.
pub(crate) struct Writers {
    queues: Vec<mpsc::Sender<Box<dyn WriteUnit>>>,
    /// Where the next unit without a lane goes.
    next: AtomicUsize,
}

impl Writers {
    /// Starts `count` writer threads named `fedid-{name}-writer-N`, each
    /// with a connection from `connect` (made again after a failure).
    /// `committed` runs on the writer's connection after each commit, once
    /// its units are answered.
    pub(crate) fn start<C: BatchConnection>(
        name: &str,
        count: usize,
        connect: impl Fn() -> Result<C, StoreError> + Clone + Send + 'static,
        committed: impl Fn(&mut C) + Clone + Send + 'static,
    ) -> std::io::Result<Self> {
        let mut queues = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let (queue, units) = mpsc::channel();
            let (connect, committed) = (connect.clone(), committed.clone());
            std::thread::Builder::new()
                .name(format!("fedid-{name}-writer-{index}"))
                .spawn(move || {
                    Writer {
                        conn: None,
                        connect,
                        committed,
                    }
                    .serve(units)
                })?;
            queues.push(queue);
        }
        Ok(Self {
            queues,
            next: AtomicUsize::new(0),
        })
    }

    /// Queues `unit` for its lane's writer; its outcome comes through
    /// [`WriteUnit::finish`].
    pub(crate) fn submit(&self, unit: Box<dyn WriteUnit>) {
        let writers = self.queues.len();
        let index = match unit.lane() {
            Some(lane) => (lane.0 % writers as u64) as usize,
            None => self.next.fetch_add(1, Ordering::Relaxed) % writers,
        };
        if let Err(mpsc::SendError(unit)) = self.queues[index].send(unit) {
            // Only when the writer thread is gone (it never returns while
            // its queue is open); the caller must still hear.
            unit.finish(Err(StoreError::Unavailable("the store's writer has stopped".into())));
        }
    }
}

/// One writer thread's state: its connection, kept from batch to batch
/// (its statement cache stays warm).
struct Writer<C, F, K> {
    conn: Option<C>,
    connect: F,
    committed: K,
}

/// A unit that ran in the open batch, and how it ended there.
struct Ran {
    unit: Box<dyn WriteUnit>,
    outcome: Result<(), StoreError>,
}

/// The open transaction can no longer be trusted: a statement around the
/// units failed (`cause`). The unit that was running hears `unit`: its own
/// error if it had failed first, else `cause`.
struct Broken {
    cause: StoreError,
    unit: StoreError,
}

impl Broken {
    fn by(cause: impl std::fmt::Display) -> Self {
        let cause = unavailable(cause);
        Self {
            unit: cause.clone(),
            cause,
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl<C: BatchConnection, F: Fn() -> Result<C, StoreError>, K: Fn(&mut C)> Writer<C, F, K> {
    /// Runs batches until every queue sender is gone (the store dropped).
    fn serve(mut self, units: mpsc::Receiver<Box<dyn WriteUnit>>) {
        while let Ok(first) = units.recv() {
            self.batch(first, &units);
        }
    }

    /// One batch: `first`, then what is queued behind it, one commit.
    fn batch(&mut self, first: Box<dyn WriteUnit>, units: &mpsc::Receiver<Box<dyn WriteUnit>>) {
        let conn = match self.begin() {
            Ok(conn) => conn,
            Err(e) => return first.finish(Err(e)),
        };
        let (ran, ended) = run_batch(conn, first, units);
        if ended.is_err() {
            // Connect afresh: whatever broke may have broken the connection.
            self.conn = None;
        }
        // Units that succeeded in a batch that ended well were committed
        // (a batch whose only unit failed committed nothing).
        let committed = ended.is_ok() && ran.iter().any(|r| r.outcome.is_ok());
        answer(ran, ended);
        if let (true, Some(conn)) = (committed, self.conn.as_mut()) {
            (self.committed)(conn);
        }
    }

    /// The writer's connection inside a new transaction, connecting first
    /// if it has none. A connection that cannot open one is dropped, so
    /// that the next batch connects afresh (the database may have
    /// restarted).
    fn begin(&mut self) -> Result<&mut C, StoreError> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => (self.connect)()?,
        };
        open(&mut conn)?;
        Ok(self.conn.insert(conn))
    }
}

/// Opens a transaction on `conn`.
fn open<C: BatchConnection>(conn: &mut C) -> Result<(), StoreError> {
    conn.command(C::BEGIN).or_else(|first| {
        // A transaction left open by a failure: roll it back, once.
        let _ = conn.command(ROLLBACK);
        conn.command(C::BEGIN).map_err(|_| unavailable(first))
    })
}

/// Runs `first` and the units queued behind it in the open transaction,
/// then commits; how the batch ended comes back beside them.
fn run_batch<C: BatchConnection>(
    conn: &mut C,
    first: Box<dyn WriteUnit>,
    units: &mpsc::Receiver<Box<dyn WriteUnit>>,
) -> (Vec<Ran>, Result<(), StoreError>) {
    let mut ran: Vec<Ran> = Vec::with_capacity(MAX_BATCH);
    let mut next = Some(first);
    let mut transaction = Transaction::Empty;
    while let Some(mut unit) = next.take() {
        match run_unit(conn, unit.as_mut(), &mut transaction) {
            Ok(outcome) => ran.push(Ran { unit, outcome }),
            Err(Broken { cause, unit: own }) => {
                let _ = conn.command(ROLLBACK);
                ran.push(Ran {
                    unit,
                    outcome: Err(own),
                });
                let reason = format!("the batch holding this unit was rolled back: {cause}");
                return (ran, Err(StoreError::Unavailable(reason)));
            }
        }
        if ran.len() < MAX_BATCH {
            next = units.try_recv().ok();
        }
    }
    let committed = match transaction {
        Transaction::Ended => Ok(()),
        Transaction::Empty | Transaction::Holding => conn.command("COMMIT").map_err(|e| {
            let _ = conn.command(ROLLBACK);
            unavailable(e)
        }),
    };
    (ran, committed)
}

/// Where a batch's transaction stands between two units.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transaction {
    /// Open, with no unit's work in it: the next unit needs no savepoint.
    Empty,
    /// Open, with work of units that succeeded.
    Holding,
    /// Rolled back after the first unit failed: the next unit opens
    /// another.
    Ended,
}

/// Runs one unit on the open `transaction`, in its own savepoint when
/// the transaction holds other units' work, again after a conflict the
/// database asks to retry; its own failure (or panic) rolls back only
/// its own work.
fn run_unit<C: BatchConnection>(
    conn: &mut C,
    unit: &mut dyn WriteUnit,
    transaction: &mut Transaction,
) -> Result<Result<(), StoreError>, Broken> {
    let mut attempt = 0;
    loop {
        let in_savepoint = *transaction == Transaction::Holding;
        if *transaction == Transaction::Ended {
            open(conn).map_err(Broken::by)?;
            *transaction = Transaction::Empty;
        }
        if in_savepoint {
            conn.command(SAVEPOINT).map_err(Broken::by)?;
        }
        let (outcome, retry) = catch_unwind(AssertUnwindSafe(|| conn.run(unit)))
            .unwrap_or_else(|_| (Err(StoreError::Unavailable("a unit of work panicked".into())), false));
        let Err(own) = &outcome else {
            if in_savepoint && C::RELEASE_EACH_UNIT {
                conn.command("RELEASE unit").map_err(Broken::by)?;
            }
            *transaction = Transaction::Holding;
            return Ok(outcome);
        };
        let undone = if in_savepoint {
            conn.command("ROLLBACK TO unit")
                .and_then(|()| conn.command("RELEASE unit"))
        } else {
            // Nothing else in the transaction: all of it goes. (It may be
            // gone already: SQLite ends a transaction on some errors.)
            let _ = conn.command(ROLLBACK);
            *transaction = Transaction::Ended;
            Ok(())
        };
        undone.map_err(|e| Broken {
            cause: unavailable(e),
            unit: own.clone(),
        })?;
        if retry && attempt < RETRIES {
            attempt += 1;
            continue;
        }
        return Ok(outcome);
    }
}

/// Answers every unit of a batch that ended `ended`: a unit that failed
/// hears its own error, the others how the batch ended.
fn answer(ran: Vec<Ran>, ended: Result<(), StoreError>) {
    for Ran { unit, outcome } in ran {
        unit.finish(outcome.and_then(|()| ended.clone()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};

    use diesel::QueryResult;
    use fedid_domain::ports::{Lane, StoreError, WriteUnit};

    use super::{BatchConnection, Writers};

    /// A connection to a database that restarts: once `restarts` has moved
    /// past the one it was made in, every statement on it fails.
    struct Restarting {
        made_in: usize,
        restarts: Arc<AtomicUsize>,
    }

    impl BatchConnection for Restarting {
        const BEGIN: &'static str = "BEGIN";
        const RELEASE_EACH_UNIT: bool = true;

        fn command(&mut self, _: &'static str) -> QueryResult<()> {
            if self.restarts.load(Ordering::SeqCst) == self.made_in {
                Ok(())
            } else {
                Err(diesel::result::Error::BrokenTransactionManager)
            }
        }

        fn run(&mut self, _: &mut dyn WriteUnit) -> (Result<(), StoreError>, bool) {
            (
                self.command("INSERT")
                    .map_err(|e| StoreError::Unavailable(e.to_string())),
                false,
            )
        }
    }

    /// A unit that reports its outcome.
    struct Reported(mpsc::Sender<Result<(), StoreError>>);

    impl WriteUnit for Reported {
        fn run(&mut self, _: &mut dyn fedid_domain::Tx) -> Result<(), StoreError> {
            Ok(())
        }

        fn finish(self: Box<Self>, outcome: Result<(), StoreError>) {
            self.0.send(outcome).unwrap();
        }

        fn lane(&self) -> Option<Lane> {
            None
        }
    }

    #[test]
    fn a_writer_whose_connection_broke_connects_again() {
        let restarts = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (made, counted) = (Arc::clone(&restarts), Arc::clone(&connections));
        let writers = Writers::start(
            "test",
            1,
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(Restarting {
                    made_in: made.load(Ordering::SeqCst),
                    restarts: Arc::clone(&made),
                })
            },
            |_: &mut Restarting| {},
        )
        .unwrap();
        let write = || {
            let (told, outcome) = mpsc::channel();
            writers.submit(Box::new(Reported(told)));
            outcome.recv().unwrap()
        };
        assert_eq!(write(), Ok(()));
        restarts.fetch_add(1, Ordering::SeqCst);
        // The connection made before the restart fails the next write...
        assert!(write().is_err());
        // ...and is not kept: the one after that runs on a new connection.
        assert_eq!(write(), Ok(()));
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}
