//! Name lookups on a fixed set of threads with a bounded queue. The
//! system resolver blocks and cannot be cancelled: a thread per lookup
//! would let a peer whose name servers hang (or a flood of envelopes naming
//! new domains) grow the process's threads without bound. Past the queue, a
//! lookup fails at once, as a `dns` failure.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Lookup threads.
pub const LOOKUP_THREADS: usize = 8;
/// Lookups waiting for a thread.
pub const LOOKUP_QUEUE: usize = 64;

#[derive(Debug)]
pub struct LookupPool {
    jobs: SyncSender<Job>,
}

impl LookupPool {
    /// `threads` threads sharing a queue of `queue` lookups.
    pub fn new(threads: usize, queue: usize) -> Self {
        let (jobs, waiting) = sync_channel::<Job>(queue);
        let waiting = Arc::new(Mutex::new(waiting));
        for i in 0..threads.max(1) {
            let waiting = Arc::clone(&waiting);
            // A thread that cannot start leaves fewer; lookups then wait in
            // the queue and their callers time out, as with a slow resolver.
            let _ = std::thread::Builder::new()
                .name(format!("fedid-dns-{i}"))
                .spawn(move || run(&waiting));
        }
        Self { jobs }
    }

    /// Queues `job`; `false` when the queue is full.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> bool {
        match self.jobs.try_send(Box::new(job)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

impl Default for LookupPool {
    fn default() -> Self {
        Self::new(LOOKUP_THREADS, LOOKUP_QUEUE)
    }
}

fn run(waiting: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job.
        let next = waiting.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Condvar;
    use std::time::Duration;

    #[test]
    fn hanging_lookups_hold_at_most_the_pools_threads_and_the_rest_fail_at_once() {
        let pool = LookupPool::new(2, 3);
        let running = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let hang = || {
            let (running, gate) = (running.clone(), gate.clone());
            move || {
                running.fetch_add(1, Ordering::SeqCst);
                let (open, opened) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = opened.wait(open).unwrap();
                }
            }
        };
        assert!(pool.submit(hang()) && pool.submit(hang()));
        while running.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let queued = (0..20).filter(|_| pool.submit(hang())).count();
        assert_eq!(queued, 3, "the queue's size, then refused at once");
        assert_eq!(running.load(Ordering::SeqCst), 2, "no thread beyond the pool's");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    }
}
