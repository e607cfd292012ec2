//! SQLite's WAL checkpoints, off the writer thread.
//!
//! A checkpoint copies the pages of the write-ahead log into the database
//! file and syncs both. SQLite's automatic checkpoint runs it on the
//! connection that commits, which here is the one writer thread: every
//! write waits meanwhile, the fsyncs included. This thread copies the pages
//! as they come instead, on a connection of its own, with PASSIVE
//! checkpoints (they never wait on the writer or on readers), so the writer
//! goes on appending meanwhile. The writer wakes it after its commits;
//! between two checkpoints it waits [`GATHER`], so that a page rewritten by
//! many commits is copied once.
//!
//! Under steady writes this thread never copies the very last frames (the
//! writer appends more while it copies), and the log starts over only after
//! a checkpoint that copied every frame. The writer's own automatic
//! checkpoint (`wal_autocheckpoint`, lib.rs) runs when the log reaches its
//! size, but gives up at once whenever this thread is copying, so the log
//! grew on (43 to 69 MiB, against 32, under steady 256 KiB commits; 2.2 GiB
//! in a 40 s soak with no writer's checkpoint at all). And this thread
//! cannot restart the log itself: a RESTART checkpoint waits for the write
//! lock, which the writer takes again between any two of its polls, so it
//! starved, holding the checkpoint lock meanwhile (the log reached
//! 176 MiB). So when the log holds [`RESTART_AT_FRAMES`] or more at one of
//! its checkpoints, this thread asks the writer, which restarts the log
//! after its next commit ([`Checkpoints::after_commit`]): it waits for
//! this thread's pass and for readers on older snapshots, if any, at most
//! 10 ms (else it waits for this thread to ask again after its next pass),
//! and copies the last frames (a few milliseconds, once per 16 MiB of log).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use diesel::RunQueryDsl;
use fedid_domain::ports::StoreError;

/// How long commits gather after a wake-up before the checkpoint runs.
const GATHER: Duration = Duration::from_millis(100);

/// The log's size, in frames (pages), from which the writer restarts it:
/// half its `wal_autocheckpoint`, so that what it appends while this
/// thread gathers and copies still leaves the log under that.
const RESTART_AT_FRAMES: i64 = 4000;

/// How long the writer's restart of the log waits for locks.
const RESTART_WAIT: &str = "PRAGMA busy_timeout = 10";

/// What `PRAGMA wal_checkpoint` reports.
#[derive(diesel::QueryableByName)]
struct Checkpointed {
    /// Frames in the log.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    log: i64,
}

impl Checkpointed {
    fn run(conn: &mut SqliteConnection, pragma: &'static str) -> diesel::QueryResult<Self> {
        diesel::sql_query(pragma).get_result(conn)
    }
}

/// The writer's side of the checkpointer.
#[derive(Clone)]
pub(crate) struct Checkpoints {
    wake: SyncSender<()>,
    restart_due: Arc<AtomicBool>,
}

impl Checkpoints {
    /// Runs on the writer's connection after each commit: asks for a
    /// checkpoint soon (never blocking: one request pending is enough;
    /// a burst of commits costs one wake-up), and restarts the log if the
    /// checkpointer found it too long.
    pub(crate) fn after_commit(&self, conn: &mut SqliteConnection) {
        let _ = self.wake.try_send(());
        if self.restart_due.swap(false, Ordering::Relaxed) {
            restart(conn);
        }
    }
}

/// Restarts the log on the writer's connection. It waits for the
/// checkpointer's pass and for readers of older snapshots at most
/// [`RESTART_WAIT`], not the connection's `busy_timeout`: every write waits
/// meanwhile. A restart missed (a reader held on) is asked for again by
/// the checkpointer's next pass, not tried after every commit, so that a
/// long reader costs the writer at most one such wait per pass.
fn restart(conn: &mut SqliteConnection) {
    let _ = conn
        .batch_execute(RESTART_WAIT)
        .and_then(|()| Checkpointed::run(conn, "PRAGMA wal_checkpoint(RESTART)"));
    // Should this fail, the connection keeps the short wait: its next
    // batch then meets only a lock held by another process for longer.
    let _ = conn.batch_execute(crate::SqliteSetup::BUSY_TIMEOUT);
}

/// Starts the checkpointer thread of one database; it ends when every
/// [`Checkpoints`] is dropped (the store with its writer).
pub(crate) fn start(
    connect: impl Fn() -> Result<SqliteConnection, StoreError> + Send + 'static,
) -> std::io::Result<Checkpoints> {
    let (wake, woken) = mpsc::sync_channel(1);
    let restart_due = Arc::new(AtomicBool::new(false));
    let asked = Arc::clone(&restart_due);
    std::thread::Builder::new()
        .name("fedid-sqlite-checkpointer".into())
        .spawn(move || {
            let mut conn = None;
            while woken.recv().is_ok() {
                std::thread::sleep(GATHER);
                if checkpoint(&mut conn, &connect).is_some_and(|log| log >= RESTART_AT_FRAMES) {
                    asked.store(true, Ordering::Relaxed);
                }
            }
        })?;
    Ok(Checkpoints { wake, restart_due })
}

/// One PASSIVE checkpoint; the frames the log holds, if it ran. A
/// failure leaves the pages in the log for the next one (the log only
/// grows meanwhile); the connection is made again.
fn checkpoint(
    conn: &mut Option<SqliteConnection>,
    connect: &impl Fn() -> Result<SqliteConnection, StoreError>,
) -> Option<i64> {
    if conn.is_none() {
        *conn = connect().ok();
    }
    let checkpointed = Checkpointed::run(conn.as_mut()?, "PRAGMA wal_checkpoint(PASSIVE)");
    if checkpointed.is_err() {
        *conn = None;
    }
    checkpointed.ok().map(|c| c.log)
}
