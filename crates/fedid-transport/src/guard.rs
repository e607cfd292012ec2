//! The address guard (PROTOCOL.md section 6): which addresses a server may
//! connect to. It runs inside the resolver that ureq connects through, on
//! every attempt, so a name cannot pass the check and then rebind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How an address is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Globally reachable: always allowed.
    Global,
    /// Not globally reachable (loopback, private, documentation, ...):
    /// allowed only where private networks are allowed.
    NonGlobal,
    /// Multicast, unspecified, broadcast: never.
    Never,
}

fn v4_in(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn v6_in(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// IANA IPv4 special-purpose ranges that are not globally reachable.
const V4_NON_GLOBAL: [([u8; 4], u32); 16] = [
    ([0, 0, 0, 0], 8),
    ([10, 0, 0, 0], 8),
    ([100, 64, 0, 0], 10),
    ([127, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16),
    ([172, 16, 0, 0], 12),
    ([192, 0, 0, 0], 24),
    ([192, 0, 2, 0], 24),
    ([192, 31, 196, 0], 24),
    ([192, 52, 193, 0], 24),
    ([192, 88, 99, 0], 24),
    ([192, 168, 0, 0], 16),
    ([192, 175, 48, 0], 24),
    ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
];

pub fn reach_v4(ip: Ipv4Addr) -> Reach {
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Reach::Never;
    }
    // 240.0.0.0/4 (reserved) holds the broadcast address, judged above.
    if v4_in(ip, [240, 0, 0, 0], 4) || V4_NON_GLOBAL.iter().any(|(net, len)| v4_in(ip, *net, *len)) {
        return Reach::NonGlobal;
    }
    Reach::Global
}

/// IANA IPv6 special-purpose ranges that are not globally reachable, plus
/// the transition prefixes the protocol refuses (6to4, NAT64, Teredo).
const V6_NON_GLOBAL: [([u16; 8], u32); 11] = [
    ([0, 0, 0, 0, 0, 0, 0, 1], 128),
    ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
    ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
    ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
];

pub fn reach_v6(ip: Ipv6Addr) -> Reach {
    if ip.is_unspecified() || ip.is_multicast() {
        return Reach::Never;
    }
    // IPv4-mapped (::ffff:0:0/96) and IPv4-compatible (::/96) forms are
    // judged as the IPv4 address they carry.
    let embedded = if v6_in(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96) || v6_in(ip, [0; 8], 96) {
        let o = ip.octets();
        Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
    } else {
        None
    };
    if let Some(v4) = embedded.filter(|_| ip != Ipv6Addr::LOCALHOST) {
        return match reach_v4(v4) {
            Reach::Global => Reach::Global,
            // ::a.b.c.d of an unspecified or multicast v4 is still not a usable v6 address.
            _ => Reach::NonGlobal,
        };
    }
    // Teredo 2001::/32 lies inside 2001::/23 (listed), as do its neighbours
    // that IANA marks not globally reachable.
    if V6_NON_GLOBAL.iter().any(|(net, len)| v6_in(ip, *net, *len)) {
        return Reach::NonGlobal;
    }
    Reach::Global
}

pub fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => reach_v4(v4),
        IpAddr::V6(v6) => reach_v6(v6),
    }
}

/// Whether a connection to `ip` is allowed.
pub fn allowed(ip: IpAddr, allow_private_networks: bool) -> bool {
    match reach(ip) {
        Reach::Global => true,
        Reach::NonGlobal => allow_private_networks,
        Reach::Never => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_range_is_refused_on_public_networks() {
        let refused = [
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "240.0.0.1",
            "255.255.255.254",
            "::1",
            "64:ff9b::8.8.8.8",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "2002:c000:0204::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "::ffff:192.168.0.1",
            "3fff::1",
        ];
        for text in refused {
            let ip: IpAddr = text.parse().unwrap();
            assert!(!allowed(ip, false), "{text} must be refused");
            assert!(allowed(ip, true), "{text} is allowed on private networks");
        }
    }

    #[test]
    fn multicast_unspecified_and_broadcast_are_never_allowed() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "239.1.2.3",
            "::",
            "ff02::1",
            "ff0e::1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(!allowed(ip, true), "{text}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(allowed(ip, false), "{text}");
        }
    }
}
