//! `fedid-server federation probe`: checks a peer from this server the way
//! deliveries reach it, one timed step after another, stopping at the first
//! that fails: name resolution and the address guard of PROTOCOL.md section
//! 6, a TCP connection, then key discovery over HTTP(S) (which is where TLS
//! is negotiated on https).

use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use fedid_domain::ports::KeyFetchFailure;
use fedid_domain::{Domain, Handle, KeyFetcher, Scheme};

use crate::{guard, HttpTransport};

/// One step: its name, whether it passed, what it found, how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStep {
    /// `resolve`, `connect`, `tls` or `discovery`.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What it found, for people.
    pub detail: String,
    /// Its duration.
    pub millis: f64,
}

/// Every step run, in order; the last failed if any did.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The steps run.
    pub steps: Vec<ProbeStep>,
}

impl ProbeReport {
    /// Whether every step passed.
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }
}

fn timed<T>(work: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let value = work();
    (value, started.elapsed().as_secs_f64() * 1000.0)
}

impl HttpTransport {
    /// Probes `domain`, asking its discovery endpoint for `alias`: a `404`
    /// for it still proves a fedid server (a made-up alias is expected to
    /// be unknown).
    pub fn probe(&self, domain: &Domain, alias: &str) -> ProbeReport {
        let mut steps = Vec::new();
        let (host, port) = split_host_port(domain.as_str(), self.settings.scheme);
        if !self.allowed(domain.as_str()) {
            steps.push(ProbeStep {
                name: "resolve",
                ok: false,
                detail: "blocked domain: not on federation.allowed_domains".into(),
                millis: 0.0,
            });
            return ProbeReport { steps };
        }
        let (found, millis) = timed(|| self.lookup.lookup(&host, port));
        let addresses = match found {
            Ok(addresses) if !addresses.is_empty() => addresses,
            Ok(_) | Err(_) => {
                steps.push(ProbeStep {
                    name: "resolve",
                    ok: false,
                    detail: format!("{host} does not resolve"),
                    millis,
                });
                return ProbeReport { steps };
            }
        };
        let refused: Vec<String> = addresses
            .iter()
            .filter(|a| !guard::allowed(a.ip(), self.settings.allow_private_networks))
            .map(|a| format!("{} ({:?})", a.ip(), guard::reach(a.ip())))
            .collect();
        let listed = addresses
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        steps.push(ProbeStep {
            name: "resolve",
            ok: refused.is_empty(),
            detail: if refused.is_empty() {
                format!("{listed}: every address allowed")
            } else {
                format!(
                    "blocked address: {} (federation.allow_private_networks is {})",
                    refused.join(", "),
                    self.settings.allow_private_networks
                )
            },
            millis,
        });
        if !refused.is_empty() {
            return ProbeReport { steps };
        }
        let (connected, millis) = timed(|| connect_any(&addresses, self.settings.fetch_connect_timeout));
        steps.push(ProbeStep {
            name: "connect",
            ok: connected.is_ok(),
            detail: match &connected {
                Ok(address) => format!("connected to {address}"),
                Err(e) => format!("no address accepted a connection: {e}"),
            },
            millis,
        });
        if connected.is_err() {
            return ProbeReport { steps };
        }
        let handle = Handle::parse(&format!("{alias}@{}", domain.as_str()), fedid_domain::DomainPolicy::ANY);
        let Ok(handle) = handle else {
            steps.push(ProbeStep {
                name: "discovery",
                ok: false,
                detail: format!("{alias:?} is not an alias"),
                millis: 0.0,
            });
            return ProbeReport { steps };
        };
        let (fetched, millis) = timed(|| self.fetch_keys(&handle, true));
        // A failed handshake is recorded under the delivery reason `tls`.
        let tls = fedid_domain::DeliveryFailure::Tls.to_string();
        let tls_failed = matches!(&fetched, Err(KeyFetchFailure::Unreachable(reason)) if *reason == tls);
        if self.settings.scheme == Scheme::Https {
            steps.push(ProbeStep {
                name: "tls",
                ok: !tls_failed,
                detail: if tls_failed {
                    "the TLS handshake failed (certificate, name or protocol)".into()
                } else {
                    "handshake completed".into()
                },
                millis: 0.0,
            });
            if tls_failed {
                return ProbeReport { steps };
            }
        }
        let (ok, detail) = match fetched {
            Ok(keys) => (true, format!("{} publishes keys", keys.handle)),
            Err(KeyFetchFailure::NotFound) => (true, format!("a fedid server: {handle} is unknown there")),
            Err(KeyFetchFailure::Unreachable(reason)) | Err(KeyFetchFailure::Failed(reason)) => {
                (false, format!("GET /federation/users/{alias}: {reason}"))
            }
        };
        steps.push(ProbeStep {
            name: "discovery",
            ok,
            detail,
            millis,
        });
        ProbeReport { steps }
    }
}

/// The host and port a URL of `scheme` for `domain` connects to.
fn split_host_port(domain: &str, scheme: Scheme) -> (String, u16) {
    let default = if scheme == Scheme::Https { 443 } else { 80 };
    let port = |text: &str| text.parse().unwrap_or(default);
    if let Some(bracketed) = domain.strip_prefix('[') {
        return match bracketed.split_once(']') {
            Some((host, rest)) => (host.to_owned(), rest.strip_prefix(':').map_or(default, port)),
            None => (bracketed.to_owned(), default),
        };
    }
    match domain.rsplit_once(':') {
        Some((host, given)) => (host.to_owned(), port(given)),
        None => (domain.to_owned(), default),
    }
}

fn connect_any(addresses: &[SocketAddr], timeout: std::time::Duration) -> std::io::Result<SocketAddr> {
    let mut last = std::io::Error::other("no address");
    for address in addresses {
        match TcpStream::connect_timeout(address, timeout) {
            Ok(_) => return Ok(*address),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_are_split_for_names_addresses_and_defaults() {
        assert_eq!(split_host_port("b.example", Scheme::Https), ("b.example".into(), 443));
        assert_eq!(
            split_host_port("b.example:8443", Scheme::Https),
            ("b.example".into(), 8443)
        );
        assert_eq!(
            split_host_port("127.0.0.1:18082", Scheme::Http),
            ("127.0.0.1".into(), 18082)
        );
        assert_eq!(split_host_port("[::1]:8080", Scheme::Http), ("::1".into(), 8080));
        assert_eq!(split_host_port("[::1]", Scheme::Https), ("::1".into(), 443));
    }
}
