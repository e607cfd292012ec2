//! Per-source-address rate limiting of the inbox: a fixed one-second window
//! per address (IPv6: per /64), bounded in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::ApiError;

const MAX_TRACKED: usize = 100_000;

pub struct RateLimiter {
    per_second: u32,
    started: Instant,
    windows: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            started: Instant::now(),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `429 rate_limited` with `Retry-After: 1` past the limit.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = ip.map(crate::net::address_key) else {
            return Ok(());
        };
        let second = self.started.elapsed().as_secs();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, (s, _)| *s == second);
        }
        let window = windows.entry(ip).or_insert((second, 0));
        if window.0 != second {
            *window = (second, 0);
        }
        window.1 += 1;
        if window.1 > self.per_second {
            return Err(ApiError::rate_limited(1));
        }
        Ok(())
    }
}
