//! Deliveries to one recipient that arrive while an earlier one waits for
//! the store join its unit of work, up to [`DELIVERIES_PER_UNIT`], and are
//! applied together ([`super::apply`]): the store's cost per unit (a
//! savepoint, the recipient's lock, a few reads and writes, each a round
//! trip on PostgreSQL) is shared by all of them instead of paid by each.
//! Nothing waits on purpose: a unit takes whatever has gathered when the
//! store runs it, so an idle server applies each delivery alone, at once.
//!
//! Every gathered delivery has a caller waiting for its answer, and a unit
//! is handed to the store for every [`DELIVERIES_PER_UNIT`] of them, so
//! what gathers is bounded by the callers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::handle::Alias;
use crate::ports::{Completion, Lane, Store, StoreError, Tx, WriteUnit};

use super::apply::{apply_all, Delivery};
use super::{InboxError, Received};

/// At most this many deliveries share one unit of work, bounding one
/// unit's statements and how long the first of them waits.
pub(super) const DELIVERIES_PER_UNIT: usize = 64;

type Answer = oneshot::Sender<Result<Received, InboxError>>;

/// A delivery waiting for its unit to run, and its caller's answer.
struct Gathered {
    delivery: Delivery,
    answer: Answer,
}

/// The deliveries waiting for a unit, by recipient alias.
#[derive(Default)]
pub(crate) struct InboxBatches {
    waiting: Mutex<HashMap<Alias, VecDeque<Gathered>>>,
}

impl InboxBatches {
    /// Adds `delivery` to its recipient's waiting deliveries, handing the
    /// store a unit for them when none is owed yet; its answer comes
    /// through the completion.
    pub(super) fn apply(self: &Arc<Self>, store: &dyn Store, delivery: Delivery) -> Completion<Received, InboxError> {
        let (answer, completion) = Completion::channel();
        let alias = delivery.alias.clone();
        let unit_owed = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let queue = waiting.entry(alias.clone()).or_default();
            // Every unit handed over takes up to DELIVERIES_PER_UNIT from
            // the front; one more is owed for each such share begun.
            let owed = queue.len().is_multiple_of(DELIVERIES_PER_UNIT);
            queue.push_back(Gathered { delivery, answer });
            owed
        };
        // Outside the lock: a store may run the unit before `write` returns.
        if unit_owed {
            store.write(Box::new(BatchUnit {
                batches: Arc::clone(self),
                alias,
                taken: None,
                answers: Vec::new(),
            }));
        }
        completion
    }

    /// Takes the next share of `alias`'s waiting deliveries.
    fn take(&self, alias: &Alias) -> Vec<Gathered> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = waiting.get_mut(alias) else {
            return Vec::new();
        };
        let taken = queue.drain(..queue.len().min(DELIVERIES_PER_UNIT)).collect();
        if queue.is_empty() {
            waiting.remove(alias);
        }
        taken
    }
}

/// The unit of work of one share of a recipient's waiting deliveries,
/// taken when the store first runs it (or answers it without running).
struct BatchUnit {
    batches: Arc<InboxBatches>,
    alias: Alias,
    taken: Option<Vec<Gathered>>,
    /// Each taken delivery's answer, from the last run.
    answers: Vec<Result<Received, InboxError>>,
}

impl BatchUnit {
    /// The unit's share of the waiting deliveries, taken now if it was not
    /// yet; the unit keeps an empty share, so that it never takes another.
    fn take_share(&mut self) -> Vec<Gathered> {
        let taken = self.taken.take().unwrap_or_else(|| self.batches.take(&self.alias));
        self.taken = Some(Vec::new());
        taken
    }
}

impl WriteUnit for BatchUnit {
    fn run(&mut self, tx: &mut dyn Tx) -> Result<(), StoreError> {
        let taken = self.taken.get_or_insert_with(|| self.batches.take(&self.alias));
        self.answers = apply_all(taken.iter().map(|g| &g.delivery), tx)?;
        Ok(())
    }

    fn finish(mut self: Box<Self>, outcome: Result<(), StoreError>) {
        let taken = self.take_share();
        let mut answers = std::mem::take(&mut self.answers).into_iter();
        for gathered in taken {
            let answer = match &outcome {
                Ok(()) => answers.next().unwrap_or_else(|| {
                    Err(InboxError::Store(StoreError::Unavailable(
                        "the store committed without running the unit".into(),
                    )))
                }),
                Err(e) => Err(InboxError::Store(e.clone())),
            };
            // A dropped completion: the caller has gone; nothing to tell.
            let _ = gathered.answer.send(answer);
        }
    }

    fn lane(&self) -> Option<Lane> {
        Some(Lane::of_alias(&self.alias))
    }
}

impl Drop for BatchUnit {
    /// A unit dropped unanswered (a store that stopped) still takes its
    /// share, so that the deliveries behind it are not left waiting for a
    /// unit that will never come; its callers hear that the store dropped
    /// the write (their answers are dropped unsent).
    fn drop(&mut self) {
        drop(self.take_share());
    }
}
