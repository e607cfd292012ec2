//! Open connections per client address. Each accepted connection takes a
//! slot for its address (IPv6: its /64) for as long as it stays open; past
//! `per_address`, a new connection is shut down before any byte is read, so
//! that one address cannot hold every connection the server may open.
//! Trusted proxies are not counted: every client behind them shares their
//! address.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Mutex};

use crate::metrics::Metrics;
use crate::net::{address_key, is_trusted, Network};

pub struct ConnectionLimits {
    per_address: usize,
    trusted: Vec<Network>,
    open: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
}

/// An open connection's place in its address's count; dropping it (when
/// the connection closes) frees the place.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl ConnectionLimits {
    pub fn new(per_address: usize, trusted: Vec<Network>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            per_address: per_address.max(1),
            trusted,
            open: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `peer`, or `None` when its address has
    /// all of its own. Trusted proxies always get one (uncounted).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Option<ConnectionSlot>> {
        if is_trusted(peer, &self.trusted) {
            return Some(None);
        }
        let key = address_key(peer);
        let mut open = self.lock();
        let count = open.entry(key).or_insert(0);
        if *count >= self.per_address {
            drop(open);
            self.metrics.connection_refused();
            return None;
        }
        *count += 1;
        Some(Some(ConnectionSlot {
            limits: Arc::clone(self),
            key,
        }))
    }

    /// Addresses with an open connection (bounded by open connections).
    #[cfg(test)]
    fn tracked_addresses(&self) -> usize {
        self.lock().len()
    }

    /// actix's connect hook: a TCP connection over its address's limit is
    /// shut down at once; otherwise its slot lives in the connection's data.
    pub fn on_connect(self: &Arc<Self>, connection: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
        let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        match self.admit(peer.ip()) {
            Some(Some(slot)) => {
                data.insert(slot);
            }
            Some(None) => {}
            None => {
                // The dispatcher then reads end-of-stream and drops the
                // connection without waiting for a request.
                let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Both);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limits(per_address: usize, trusted: Vec<Network>) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(per_address, trusted, Arc::new(Metrics::default()))
    }

    #[test]
    fn an_address_gets_its_limit_of_slots_and_others_are_unaffected() {
        let limits = limits(2, vec![]);
        let first = limits.admit(ip("192.0.2.1")).unwrap();
        let _second = limits.admit(ip("192.0.2.1")).unwrap();
        assert!(limits.admit(ip("192.0.2.1")).is_none());
        assert!(limits.admit(ip("192.0.2.2")).is_some());
        drop(first);
        assert!(
            limits.admit(ip("192.0.2.1")).is_some(),
            "a closed connection frees its slot"
        );
        assert!(limits
            .metrics
            .render(None)
            .contains("fedid_connections_refused_total 1"));
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_their_slots() {
        let limits = limits(1, vec![]);
        let _held = limits.admit(ip("2001:db8::1")).unwrap();
        assert!(limits.admit(ip("2001:db8::2")).is_none());
        assert!(limits.admit(ip("2001:db8:0:1::1")).is_some());
    }

    #[test]
    fn trusted_proxies_are_not_counted() {
        let limits = limits(1, vec![Network::parse("10.0.0.0/8").unwrap()]);
        let held: Vec<_> = (0..5).map(|_| limits.admit(ip("10.0.0.1")).unwrap()).collect();
        assert!(held.iter().all(Option::is_none));
        assert_eq!(limits.tracked_addresses(), 0);
    }

    #[test]
    fn closed_connections_leave_no_entry_behind() {
        let limits = limits(4, vec![]);
        let slots: Vec<_> = (0..100).map(|i| limits.admit(ip(&format!("192.0.2.{i}")))).collect();
        assert_eq!(limits.tracked_addresses(), 100);
        drop(slots);
        assert_eq!(limits.tracked_addresses(), 0);
    }
}
