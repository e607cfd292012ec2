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

/// What a new connection gets.
pub enum Admission {
    /// A place in its address's count, held while it stays open.
    Counted(ConnectionSlot),
    /// From a trusted proxy: not counted.
    Uncounted,
    /// Its address holds all of its places.
    Refused,
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

    /// A place for a connection from `peer`, if its address has one left.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        if is_trusted(peer, &self.trusted) {
            return Admission::Uncounted;
        }
        let key = address_key(peer);
        let mut open = self.lock();
        let count = open.entry(key).or_insert(0);
        if *count >= self.per_address {
            drop(open);
            self.metrics.connection_refused();
            return Admission::Refused;
        }
        *count += 1;
        Admission::Counted(ConnectionSlot {
            limits: Arc::clone(self),
            key,
        })
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
            Admission::Counted(slot) => {
                data.insert(slot);
            }
            Admission::Uncounted => {}
            Admission::Refused => {
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

    fn counted(admission: Admission) -> bool {
        matches!(admission, Admission::Counted(_))
    }

    fn refused(admission: Admission) -> bool {
        matches!(admission, Admission::Refused)
    }

    #[test]
    fn an_address_gets_its_limit_of_slots_and_others_are_unaffected() {
        let limits = limits(2, vec![]);
        let held = [limits.admit(ip("192.0.2.1")), limits.admit(ip("192.0.2.1"))];
        assert!(held.iter().all(|a| matches!(a, Admission::Counted(_))));
        assert!(refused(limits.admit(ip("192.0.2.1"))));
        assert!(counted(limits.admit(ip("192.0.2.2"))));
        drop(held);
        assert!(
            counted(limits.admit(ip("192.0.2.1"))),
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
        let _held = limits.admit(ip("2001:db8::1"));
        assert!(refused(limits.admit(ip("2001:db8::2"))));
        assert!(counted(limits.admit(ip("2001:db8:0:1::1"))));
    }

    #[test]
    fn trusted_proxies_are_not_counted() {
        let limits = limits(1, vec![Network::parse("10.0.0.0/8").unwrap()]);
        let held: Vec<_> = (0..5).map(|_| limits.admit(ip("10.0.0.1"))).collect();
        assert!(held.iter().all(|a| matches!(a, Admission::Uncounted)));
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
