//! Handles `alias@domain` (PROTOCOL.md section 1).

use std::fmt;

/// Why an alias was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an alias has 3 to 32 characters of a-z 0-9 . _ -, starting and ending with a letter or digit")]
pub struct AliasError;

/// A canonical alias: lower case, 3 to 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Alias(String);

impl Alias {
    /// Parses an alias that must already be canonical (inside envelopes).
    pub fn parse(text: &str) -> Result<Self, AliasError> {
        let bytes = text.as_bytes();
        let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let inner_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
        if (3..=32).contains(&bytes.len())
            && edge_ok(bytes.first())
            && edge_ok(bytes.last())
            && bytes.iter().all(inner_ok)
        {
            Ok(Self(text.to_owned()))
        } else {
            Err(AliasError)
        }
    }

    /// Parses user input: ASCII upper case is folded first (ASCII only).
    pub fn parse_user_input(text: &str) -> Result<Self, AliasError> {
        Self::parse(&text.to_ascii_lowercase())
    }

    /// The alias, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which domains a server accepts, beyond the grammar: the scheme's default
/// port is never canonical, and IPv4 literals only where private networks
/// are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainPolicy {
    /// The port a domain must not write (the scheme's own).
    pub default_port: u16,
    /// Whether IPv4-literal domains are allowed (tests, local development).
    pub allow_ip_literals: bool,
}

impl DomainPolicy {
    /// An https server on public networks: the production default.
    pub const HTTPS_PUBLIC: Self = Self {
        default_port: 443,
        allow_ip_literals: false,
    };

    /// Every canonical domain, IP literals and any port (no port is 0):
    /// for values validated once already (storage) or that servers will
    /// judge (client tools).
    pub const ANY: Self = Self {
        default_port: 0,
        allow_ip_literals: true,
    };

    /// The policy of a server with this scheme and private-network setting.
    pub fn for_scheme(scheme: Scheme, allow_private_networks: bool) -> Self {
        Self {
            default_port: scheme.default_port(),
            allow_ip_literals: allow_private_networks,
        }
    }
}

/// The URL scheme servers talk to each other with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Production federation.
    Https,
    /// Tests and local development only.
    Http,
}

impl Scheme {
    /// 443 or 80.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Https => 443,
            Self::Http => 80,
        }
    }

    /// `https` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
        }
    }
}

/// Why a domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Not a lower-case DNS host name of section 1.
    #[error("a domain is a lower-case DNS host name of at most 253 characters")]
    HostName,
    /// A port that is zero, too large, has leading zeros or is the default.
    #[error("a port is 1 to 65535 without leading zeros, and not the scheme's default")]
    Port,
    /// A host of digits that is not a canonical IPv4 address.
    #[error("an IPv4 literal is four decimal octets without leading zeros")]
    Ipv4Literal,
    /// An IPv4 literal where private networks are not allowed.
    #[error("IP literals are accepted only where private networks are allowed")]
    IpLiteralNotAllowed,
}

/// A canonical federation domain, port included when not the default.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain {
    text: String,
    host_len: usize,
}

impl Domain {
    /// Reads a canonical domain (section 1) under `policy`.
    pub fn parse(text: &str, policy: DomainPolicy) -> Result<Self, DomainError> {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        if let Some(port) = port {
            let valid = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && !port.starts_with('0')
                && port
                    .parse::<u32>()
                    .is_ok_and(|p| (1..=65535).contains(&p) && p != u32::from(policy.default_port));
            if !valid {
                return Err(DomainError::Port);
            }
        }
        if host.is_empty() || host.len() > 253 {
            return Err(DomainError::HostName);
        }
        let labels: Vec<&str> = host.split('.').collect();
        for label in &labels {
            let b = label.as_bytes();
            let valid = (1..=63).contains(&b.len())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return Err(DomainError::HostName);
            }
        }
        let last_is_numeric = labels.last().is_some_and(|l| l.bytes().all(|c| c.is_ascii_digit()));
        if last_is_numeric {
            let octets_ok = labels.len() == 4
                && labels.iter().all(|l| {
                    l.bytes().all(|c| c.is_ascii_digit())
                        && (l.len() == 1 || !l.starts_with('0'))
                        && l.parse::<u16>().is_ok_and(|v| v <= 255)
                });
            if !octets_ok {
                return Err(DomainError::Ipv4Literal);
            }
            if !policy.allow_ip_literals {
                return Err(DomainError::IpLiteralNotAllowed);
            }
        }
        Ok(Self {
            text: text.to_owned(),
            host_len: host.len(),
        })
    }

    /// The domain, port included.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host part, without the port.
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.text.get(self.host_len + 1..).and_then(|p| p.parse().ok())
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a handle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Not `alias@domain`.
    #[error("a handle is alias@domain")]
    Shape,
    /// The alias part is invalid.
    #[error(transparent)]
    Alias(#[from] AliasError),
    /// The domain part is invalid.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// A canonical handle `alias@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    text: String,
    at: usize,
}

impl Handle {
    /// Parses a handle that must already be canonical (inside envelopes).
    pub fn parse(text: &str, policy: DomainPolicy) -> Result<Self, HandleError> {
        let (alias, domain) = text.split_once('@').ok_or(HandleError::Shape)?;
        Alias::parse(alias)?;
        Domain::parse(domain, policy)?;
        Ok(Self {
            text: text.to_owned(),
            at: alias.len(),
        })
    }

    /// Parses user input: ASCII upper case folded first (API.md conventions).
    pub fn parse_user_input(text: &str, policy: DomainPolicy) -> Result<Self, HandleError> {
        Self::parse(&text.to_ascii_lowercase(), policy)
    }

    /// The handle `alias@domain`.
    pub fn new(alias: &Alias, domain: &Domain) -> Self {
        Self {
            text: format!("{alias}@{domain}"),
            at: alias.as_str().len(),
        }
    }

    /// `alias@domain`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The alias part.
    pub fn alias(&self) -> Alias {
        Alias(self.text[..self.at].to_owned())
    }

    /// The alias part, borrowed.
    pub fn alias_str(&self) -> &str {
        &self.text[..self.at]
    }

    /// The domain part, borrowed.
    pub fn domain_str(&self) -> &str {
        &self.text[self.at + 1..]
    }

    /// The domain part.
    pub fn domain(&self) -> Domain {
        let domain = self.domain_str();
        let host_len = domain.find(':').unwrap_or(domain.len());
        Domain {
            text: domain.to_owned(),
            host_len,
        }
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: DomainPolicy = DomainPolicy {
        default_port: 80,
        allow_ip_literals: true,
    };

    #[test]
    fn aliases() {
        for ok in ["abc", "a.b", "a_b-c9", "0ab", &"a".repeat(32)] {
            assert!(Alias::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", ".ab", "ab-", "aBc", "ab c", "äbc", &"a".repeat(33), ""] {
            assert!(Alias::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Alias::parse_user_input("Alice").unwrap().as_str(), "alice");
        assert!(Alias::parse_user_input("ÄLICE").is_err(), "no Unicode folding");
    }

    #[test]
    fn domains() {
        let p = DomainPolicy::HTTPS_PUBLIC;
        for ok in [
            "a.example",
            "b.example:8443",
            "xn--bcher-kva.example",
            "localhost",
            "a-b.c",
            "x.example:80",
        ] {
            assert!(Domain::parse(ok, p).is_ok(), "{ok}");
        }
        for bad in [
            "a.example.",
            "A.example",
            "a.example:443",
            "a.example:0",
            "a.example:65536",
            "a.example:080",
            "-a.example",
            "a-.example",
            "a..example",
            "",
            ":8080",
            "[::1]:8080",
            "127.0.0.1",
            "a.example:",
            "bücher.example",
        ] {
            assert!(Domain::parse(bad, p).is_err(), "{bad}");
        }
        assert!(Domain::parse(&format!("{}.x", "a".repeat(64)), p).is_err());
        assert!(Domain::parse(
            &["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62)].join("."),
            p
        )
        .is_err());
        assert!(Domain::parse(
            &["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join("."),
            p
        )
        .is_ok());
    }

    #[test]
    fn ipv4_literals() {
        assert!(Domain::parse("127.0.0.1:8080", LOCAL).is_ok());
        assert_eq!(
            Domain::parse("127.0.0.1:8080", DomainPolicy::HTTPS_PUBLIC),
            Err(DomainError::IpLiteralNotAllowed)
        );
        for bad in ["127.0.0.01", "256.0.0.1", "1.2.3", "1.2.3.4.5", "a.1"] {
            assert_eq!(Domain::parse(bad, LOCAL), Err(DomainError::Ipv4Literal), "{bad}");
        }
        assert!(Domain::parse("127.0.0.1:80", LOCAL).is_err(), "http default port");
    }

    #[test]
    fn handles() {
        let h = Handle::parse("alice@b.example:8443", DomainPolicy::HTTPS_PUBLIC).unwrap();
        assert_eq!(h.alias_str(), "alice");
        assert_eq!(h.domain().host(), "b.example");
        assert_eq!(h.domain().port(), Some(8443));
        assert!(Handle::parse("Alice@b.example", DomainPolicy::HTTPS_PUBLIC).is_err());
        assert!(Handle::parse_user_input("Alice@B.Example", DomainPolicy::HTTPS_PUBLIC).is_ok());
        assert!(Handle::parse("alice", DomainPolicy::HTTPS_PUBLIC).is_err());
        assert!(Handle::parse("a@b@c.example", DomainPolicy::HTTPS_PUBLIC).is_err());
    }
}
