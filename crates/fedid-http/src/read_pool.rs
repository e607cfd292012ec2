//! A small pool of threads for domain calls that only read the store
//! (authentication, identity, lists). Reads never wait on a lock (SQLite in
//! WAL mode, PostgreSQL MVCC) nor on a peer, so a few threads keep up with
//! them, and few threads hand work to each other far more cheaply: on this
//! project's 2-core machine authenticated reads went from about 23,000/s on
//! actix's blocking pool (hundreds of threads that each sleep between tasks)
//! to about 34,000/s on a pool with one thread per worker. Everything that
//! may wait (writes queue for the writer, deliveries wait on peers) stays on
//! the blocking pool, whose size keeps a slow peer from starving the rest.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::ApiError;

pub struct ReadPool {
    threads: rayon_core::ThreadPool,
}

impl ReadPool {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = rayon_core::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("fedid-reader-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self { threads })
    }

    /// Runs `read` on the pool inside the current tracing span; a panic
    /// becomes `500 internal_error`, as it would on the blocking pool.
    pub async fn run<T, F>(&self, read: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        self.threads.spawn(move || {
            let outcome =
                catch_unwind(AssertUnwindSafe(|| span.in_scope(read))).unwrap_or_else(|_| Err(ApiError::internal()));
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
        let pool = ReadPool::new(1).unwrap();
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
