//! [`ManualClock`]: time that moves only when a test says so.

use std::sync::Mutex;

use fedid_domain::{Clock, UnixTime};

/// A clock that moves only when told: days of protocol time in a test.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<UnixTime>,
}

impl ManualClock {
    /// A clock stopped at `now`.
    pub fn at(now: UnixTime) -> Self {
        Self { now: Mutex::new(now) }
    }

    /// Starts at the contract vectors' `now`, 2026-11-27T10:15:30Z.
    pub fn at_vectors_now() -> Self {
        Self::at(UnixTime::from_secs(1_795_774_530))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: UnixTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// Moves the clock by `secs` (back when negative).
    pub fn advance_secs(&self, secs: i64) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.plus_secs(secs);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}
