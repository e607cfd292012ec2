//! Small pools of threads for domain calls, each sized for its work.
//!
//! - Reads: calls that only read the store (authentication, identity,
//!   lists). Reads never wait on a lock (SQLite in WAL mode, PostgreSQL
//!   MVCC) nor on a peer, so a few threads keep up with them, and few
//!   threads hand work to each other far more cheaply: on this project's
//!   2-core machine authenticated reads went from about 23,000/s on actix's
//!   blocking pool (hundreds of threads that each sleep between tasks) to
//!   about 34,000/s on a pool with one thread per worker.
//! - Federation: inbox envelopes that need a store read or a remote key
//!   lookup. A stranger chooses how many arrive and whose keys they need,
//!   so they never run on the pool that serves users' requests; the key
//!   directory bounds how many of these threads may wait on peers.
//!
//! Everything else that may wait (writes, deliveries) stays on actix's
//! blocking pool.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::ApiError;

pub struct WorkPool {
    threads: rayon_core::ThreadPool,
}

impl WorkPool {
    /// `threads` threads named `fedid-{name}-N`.
    pub fn new(name: &'static str, threads: usize) -> std::io::Result<Self> {
        let threads = rayon_core::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |i| format!("fedid-{name}-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self { threads })
    }

    /// Runs `work` on the pool inside the current tracing span; a panic
    /// becomes `500 internal_error`, as it would on the blocking pool.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        self.threads.spawn(move || {
            let outcome =
                catch_unwind(AssertUnwindSafe(|| span.in_scope(work))).unwrap_or_else(|_| Err(ApiError::internal()));
            // The request may have gone (client disconnected): nothing to do.
            let _ = answer.send(outcome);
        });
        answered.await.map_err(|_| ApiError::internal())?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn runs_reads_off_the_calling_thread_and_survives_a_panic() {
        let pool = WorkPool::new("test", 1).unwrap();
        let caller = std::thread::current().id();
        let ran_on = block_on(pool.run(|| Ok(std::thread::current().id()))).unwrap();
        assert_ne!(ran_on, caller);
        let panicked = block_on(pool.run(|| -> Result<(), ApiError> { panic!("a bug in a read") }));
        let status = actix_web::ResponseError::status_code(&panicked.unwrap_err());
        assert_eq!(status.as_u16(), 500);
        // The pool's one thread is still there for the next read.
        assert_eq!(block_on(pool.run(|| Ok(7))).unwrap(), 7);
    }
}
