//! The knobs the rules depend on. The server fills this from its
//! configuration; tests build it with [`Settings::for_domain`].

use crate::handle::{Domain, DomainPolicy, Scheme};

/// The settings of one server (OPERATIONS.md's `federation`, `delivery`, `limits` and `auth` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The domain part of local handles.
    pub domain: Domain,
    /// `https`, or `http` for tests.
    pub scheme: Scheme,
    /// Whether non-global addresses and IPv4-literal domains are allowed.
    pub allow_private_networks: bool,
    /// When not empty, the only domains this server talks to or accepts
    /// envelopes from.
    pub allowed_domains: Vec<Domain>,
    /// Replay window, each side of now.
    pub max_clock_skew_secs: i64,
    /// Remote key cache lifetime.
    pub key_cache_ttl_secs: i64,
    /// Key lookups in flight.
    pub max_key_fetches: usize,
    /// Key lookups in flight per domain.
    pub max_key_fetches_per_domain: usize,
    /// Deliveries in flight per flush.
    pub delivery_concurrency: usize,
    /// Deliveries in flight for the server.
    pub delivery_max_in_flight: usize,
    /// Whole-request delivery timeout.
    pub delivery_timeout_ms: u64,
    /// Stored messages per user.
    pub inbox_messages_per_user: u64,
    /// `incoming` relationships per user.
    pub incoming_requests_per_user: u64,
    /// Stored messages from one sender without an active relationship
    /// (PROTOCOL.md section 8).
    pub unsolicited_per_sender: u64,
    /// Alias changes per user in any 24 hours.
    pub alias_changes_per_day: u64,
    /// Alias changes per user, ever (aliases are never reused).
    pub alias_changes_total: u64,
    /// New key lookups started per remote domain per second.
    pub key_lookups_per_domain_per_sec: u32,
    /// How long a request waits for another request's refetch of the same
    /// sender's key before answering `sender_keys_unavailable`.
    pub key_refetch_wait_ms: u64,
    /// Lifetime of new session tokens.
    pub token_ttl_days: u32,
    /// The first background retry of a long-lived REVOKE, in seconds; the
    /// delay doubles per attempt (PROTOCOL.md section 11).
    pub retry_base_secs: u64,
    /// The ceiling of that delay.
    pub retry_max_secs: u64,
}

impl Settings {
    /// The defaults of OPERATIONS.md for a server of `domain`.
    pub fn for_domain(domain: Domain, scheme: Scheme, allow_private_networks: bool) -> Self {
        Self {
            domain,
            scheme,
            allow_private_networks,
            allowed_domains: Vec::new(),
            max_clock_skew_secs: 300,
            key_cache_ttl_secs: 300,
            max_key_fetches: 32,
            max_key_fetches_per_domain: 4,
            delivery_concurrency: 16,
            delivery_max_in_flight: 64,
            delivery_timeout_ms: 10_000,
            inbox_messages_per_user: 10_000,
            incoming_requests_per_user: 1_000,
            unsolicited_per_sender: 16,
            alias_changes_per_day: 5,
            alias_changes_total: 20,
            key_lookups_per_domain_per_sec: 8,
            key_refetch_wait_ms: 10_000,
            token_ttl_days: 30,
            retry_base_secs: 30,
            retry_max_secs: 21_600,
        }
    }

    /// How handles and domains are judged on this server.
    pub fn policy(&self) -> DomainPolicy {
        DomainPolicy::for_scheme(self.scheme, self.allow_private_networks)
    }

    /// Whether the allow-list (if any) admits `domain`. The server's own
    /// domain always is: local deliveries never leave the process.
    pub fn domain_allowed(&self, domain: &str) -> bool {
        self.allowed_domains.is_empty()
            || self.is_local(domain)
            || self.allowed_domains.iter().any(|d| d.as_str() == domain)
    }

    /// Whether `domain` is this server's own.
    pub fn is_local(&self, domain: &str) -> bool {
        self.domain.as_str() == domain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::DomainPolicy;

    #[test]
    fn the_allow_list_admits_listed_domains_and_our_own() {
        let domain = |d: &str| Domain::parse(d, DomainPolicy::HTTPS_PUBLIC).unwrap();
        let mut settings = Settings::for_domain(domain("a.example"), Scheme::Https, false);
        assert!(settings.domain_allowed("z.example"), "no list: everyone");
        settings.allowed_domains = vec![domain("b.example")];
        assert!(settings.domain_allowed("b.example"));
        assert!(settings.domain_allowed("a.example"), "our own domain");
        assert!(!settings.domain_allowed("c.example"));
        assert!(
            !settings.domain_allowed("b.example:8443"),
            "whole domains, port included"
        );
    }
}
