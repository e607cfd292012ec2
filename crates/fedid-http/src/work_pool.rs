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

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::error::ApiError;

type Job = Box<dyn FnOnce() + Send>;

/// The jobs waiting for a thread, and whether the pool is gone.
#[derive(Default)]
struct Jobs {
    waiting: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Queue {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

/// A fixed set of threads taking jobs from one queue. An idle thread
/// sleeps on the queue's condition variable at once: on a 2-core machine
/// a pool whose idle threads spin and yield first (rayon's) spent about 7%
/// of the server's CPU in `sched_yield` under reads (docs/performance.md).
pub struct WorkPool {
    queue: Arc<Queue>,
}

impl WorkPool {
    /// `threads` threads named `fedid-{name}-N`.
    pub fn new(name: &'static str, threads: usize) -> std::io::Result<Self> {
        // Made first: should a thread fail to start, dropping the pool ends
        // those already started.
        let pool = Self {
            queue: Arc::new(Queue::default()),
        };
        for index in 0..threads.max(1) {
            let queue = Arc::clone(&pool.queue);
            std::thread::Builder::new()
                .name(format!("fedid-{name}-{index}"))
                .spawn(move || queue.serve())?;
        }
        Ok(pool)
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
        self.queue.push(Box::new(move || {
            let outcome =
                catch_unwind(AssertUnwindSafe(|| span.in_scope(work))).unwrap_or_else(|_| Err(ApiError::internal()));
            // The request may have gone (client disconnected): nothing to do.
            let _ = answer.send(outcome);
        }));
        answered.await.map_err(|_| ApiError::internal())?
    }
}

impl Drop for WorkPool {
    /// The threads finish the jobs already queued, then end.
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

impl Queue {
    /// A job panicking never holds this lock (jobs run outside it), so a
    /// poisoned lock still guards a consistent queue.
    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, job: Job) {
        self.lock().waiting.push_back(job);
        self.ready.notify_one();
    }

    /// One thread's loop: the next job, until the pool is dropped and its
    /// queue is empty.
    fn serve(&self) {
        loop {
            let job = {
                let mut jobs = self.lock();
                loop {
                    if let Some(job) = jobs.waiting.pop_front() {
                        break job;
                    }
                    if jobs.closed {
                        return;
                    }
                    jobs = self.ready.wait(jobs).unwrap_or_else(PoisonError::into_inner);
                }
            };
            job();
        }
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

    #[test]
    fn jobs_queued_before_the_pool_is_dropped_still_run() {
        let pool = WorkPool::new("test", 1).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        for job in 0..3 {
            let done = done.clone();
            pool.queue.push(Box::new(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                done.send(job).unwrap();
            }));
        }
        drop(pool);
        let ran: Vec<i32> = (0..3)
            .map(|_| finished.recv_timeout(std::time::Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(ran, [0, 1, 2]);
    }
}
