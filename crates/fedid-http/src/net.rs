//! Client addresses: trusted-proxy networks, the address a request comes
//! from, and the key that per-address limits count under.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::HttpRequest;

/// A network in CIDR form, such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// `ADDRESS/PREFIX`, or a bare address (a network of one).
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
            None => {
                let ip = text.parse::<IpAddr>().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { address, prefix })
    }

    /// Whether `ip` lies in this network. An IPv4 network also holds the
    /// IPv4-mapped IPv6 forms of its addresses (`::ffff:10.0.0.1`), which
    /// is how a dual-stack socket reports IPv4 peers.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (unmapped(ip), self.address) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; others as given.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What per-address limits count under: an IPv4 address, or the /64 of an
/// IPv6 address (one subscriber's usual allocation, so that a client
/// cannot escape a limit by changing the low bits of its address).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match unmapped(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// Whether any of `networks` holds `ip`.
pub fn is_trusted(ip: IpAddr, networks: &[Network]) -> bool {
    networks.iter().any(|net| net.contains(ip))
}

/// The client's address: the peer, or the first untrusted hop of
/// `X-Forwarded-For` when the peer is a trusted proxy.
pub fn client_ip(req: &HttpRequest, trusted: &[Network]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let hops: Vec<IpAddr> = forwarded.split(',').filter_map(|h| h.trim().parse().ok()).collect();
    Some(
        hops.into_iter()
            .rev()
            .find(|ip| !is_trusted(*ip, trusted))
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_with_or_without_a_prefix() {
        assert!(Network::parse("10.0.0.0/8").unwrap().contains(ip("10.1.2.3")));
        assert!(Network::parse("::1").unwrap().contains(ip("::1")));
        assert_eq!(Network::parse("10.0.0.0/33"), None);
        assert_eq!(Network::parse("nope"), None);
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));
    }

    #[test]
    fn an_ipv4_network_holds_the_ipv4_mapped_form_of_its_addresses() {
        let net = Network::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        assert!(!net.contains(ip("::ffff:11.0.0.1")));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(address_key(ip("2001:db8:1:2:ffff::9")), ip("2001:db8:1:2::"));
        assert_ne!(address_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }
}
