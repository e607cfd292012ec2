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
//! a checkpoint that copied every frame: the writer's own automatic
//! checkpoint (`wal_autocheckpoint`, lib.rs) still runs when the log
//! reaches its size, and by then finds most pages copied. Without it the
//! log grew to 2.2 GiB in a 40 s soak.

use std::sync::mpsc::{self, SyncSender};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use fedid_domain::ports::StoreError;

/// How long commits gather after a wake-up before the checkpoint runs.
const GATHER: Duration = Duration::from_millis(100);

/// Wakes the checkpointer; a burst of commits costs one wake-up.
#[derive(Clone)]
pub(crate) struct Wake(SyncSender<()>);

impl Wake {
    /// Asks for a checkpoint soon. Never blocks: one request pending is
    /// enough.
    pub(crate) fn committed(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the checkpointer thread of one database; it ends when every
/// [`Wake`] is dropped (the store with its writer).
pub(crate) fn start(
    connect: impl Fn() -> Result<SqliteConnection, StoreError> + Send + 'static,
) -> std::io::Result<Wake> {
    let (wake, woken) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("fedid-sqlite-checkpointer".into())
        .spawn(move || {
            let mut conn = None;
            while woken.recv().is_ok() {
                std::thread::sleep(GATHER);
                checkpoint(&mut conn, &connect);
            }
        })?;
    Ok(Wake(wake))
}

/// One PASSIVE checkpoint. A failure leaves the pages in the log for the
/// next one (the log only grows meanwhile); the connection is made again.
fn checkpoint(conn: &mut Option<SqliteConnection>, connect: &impl Fn() -> Result<SqliteConnection, StoreError>) {
    if conn.is_none() {
        *conn = connect().ok();
    }
    if let Some(c) = conn.as_mut() {
        if c.batch_execute("PRAGMA wal_checkpoint(PASSIVE)").is_err() {
            *conn = None;
        }
    }
}
