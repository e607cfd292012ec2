//! Configuration (OPERATIONS.md): built-in defaults, then the `--config`
//! TOML file, then `FEDID__SECTION__KEY` environment variables. Unknown keys
//! are an error; every value is validated here, once, at start.

use std::path::Path;

use fedid_domain::{Domain, DomainPolicy, Scheme, Settings};
use fedid_http::net::Network;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub database: DatabaseSection,
    pub auth: AuthSection,
    pub federation: FederationSection,
    pub delivery: DeliverySection,
    pub limits: LimitsSection,
    pub log: LogSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub bind: String,
    pub workers: Option<usize>,
    pub shutdown_grace_secs: u64,
    pub trusted_proxies: Vec<String>,
    pub metrics_token: Option<String>,
    pub body_timeout_secs: u64,
    /// Unset: what the file-descriptor limit allows ([`crate::application`]).
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub url: String,
    pub pool_size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub token_ttl_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    pub domain: String,
    pub scheme: String,
    pub allow_private_networks: bool,
    pub allowed_domains: Vec<String>,
    pub max_clock_skew_secs: i64,
    pub key_cache_ttl_secs: i64,
    pub fetch_connect_timeout_ms: u64,
    pub fetch_timeout_ms: u64,
    pub max_key_fetches: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    pub concurrency: usize,
    pub max_in_flight: usize,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub body_bytes: usize,
    pub inbox_messages_per_user: u64,
    pub incoming_requests_per_user: u64,
    pub inbox_requests_per_ip_per_s: u32,
    pub unsolicited_per_sender: u64,
    pub alias_changes_per_day: u64,
    pub alias_changes_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: String,
    pub level: String,
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_string(),
    }
}

/// `HOST:PORT` (an IPv6 host in brackets), port 0 to 65535.
fn check_bind(bind: &str) -> Result<(), String> {
    if bind.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let shape = "must be HOST:PORT, such as 127.0.0.1:8080 or [::]:8080";
    let (host, port) = bind.rsplit_once(':').ok_or_else(|| format!("{bind:?} {shape}"))?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(format!("{bind:?} {shape}"));
    }
    Ok(())
}

/// A level (`trace` to `error`, or `off`), or `RUST_LOG`-style directives
/// (`info,fedid_http=debug`).
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    let directives = level.contains('=') || level.contains(',');
    if directives && tracing_subscriber::EnvFilter::try_new(level).is_ok() {
        return Ok(());
    }
    Err(format!(
        "{level:?} is not a level (trace, debug, info, warn, error, off) nor directives such as info,fedid_http=debug"
    ))
}

/// The defaults of the keys only the server reads. Those the domain reads
/// too come from [`Settings::for_domain`] ([`domain_defaults`]), so that the
/// two never disagree.
const DEFAULTS: &str = r#"
[server]
bind = "127.0.0.1:8080"
shutdown_grace_secs = 30
trusted_proxies = []
body_timeout_secs = 10
max_connections_per_ip = 256

[database]
url = "sqlite://fedid.db"
pool_size = 8

[auth]

[federation]
domain = "localhost:8080"
scheme = "https"
allowed_domains = []
fetch_connect_timeout_ms = 5000
fetch_timeout_ms = 10000

[delivery]
connect_timeout_ms = 5000

[limits]
body_bytes = 65536
inbox_requests_per_ip_per_s = 0

[log]
format = "pretty"
level = "info"
"#;

/// The defaults of the keys the domain reads, from the domain's own.
fn domain_defaults(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, ConfigError> {
    let domain = Domain::parse("localhost:8080", DomainPolicy::ANY)
        .map_err(|e| config::ConfigError::Message(format!("the default domain: {e}")))?;
    let d = Settings::for_domain(domain, Scheme::Https, false);
    let numbers: [(&str, u64); 14] = [
        ("auth.token_ttl_days", u64::from(d.token_ttl_days)),
        ("federation.max_clock_skew_secs", d.max_clock_skew_secs.unsigned_abs()),
        ("federation.key_cache_ttl_secs", d.key_cache_ttl_secs.unsigned_abs()),
        ("federation.max_key_fetches", d.max_key_fetches as u64),
        ("delivery.concurrency", d.delivery_concurrency as u64),
        ("delivery.max_in_flight", d.delivery_max_in_flight as u64),
        ("delivery.timeout_ms", d.delivery_timeout_ms),
        ("delivery.retry_base_secs", d.retry_base_secs),
        ("delivery.retry_max_secs", d.retry_max_secs),
        ("limits.inbox_messages_per_user", d.inbox_messages_per_user),
        ("limits.incoming_requests_per_user", d.incoming_requests_per_user),
        ("limits.unsolicited_per_sender", d.unsolicited_per_sender),
        ("limits.alias_changes_per_day", d.alias_changes_per_day),
        ("limits.alias_changes_total", d.alias_changes_total),
    ];
    let builder = numbers
        .into_iter()
        .try_fold(builder, |builder, (key, value)| builder.set_default(key, value))?;
    Ok(builder.set_default("federation.allow_private_networks", d.allow_private_networks)?)
}

impl Config {
    /// Loads defaults, then `file`, then the environment (`FEDID__SECTION__KEY`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = domain_defaults(config::Config::builder())?
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
        }
        let env: config::Map<String, String> = env.into_iter().filter(|(k, _)| k.starts_with("FEDID__")).collect();
        builder = builder.add_source(
            config::Environment::with_prefix("FEDID")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("federation.allowed_domains")
                .with_list_parse_key("server.trusted_proxies")
                .try_parsing(true)
                .source(Some(env)),
        );
        let config: Self = builder.build()?.try_deserialize()?;
        config.settings()?;
        config.trusted_proxies()?;
        config.check_server_and_log()?;
        Ok(config)
    }

    /// The keys that only `serve` and the logs read, checked by every
    /// command all the same, so that a mistake shows before it matters.
    fn check_server_and_log(&self) -> Result<(), ConfigError> {
        check_bind(&self.server.bind).map_err(|reason| invalid("server.bind", reason))?;
        if self.server.workers == Some(0) {
            return Err(invalid("server.workers", "must be at least 1"));
        }
        check_log_level(&self.log.level).map_err(|reason| invalid("log.level", reason))
    }

    /// `server.trusted_proxies` as networks.
    pub fn trusted_proxies(&self) -> Result<Vec<Network>, ConfigError> {
        self.server
            .trusted_proxies
            .iter()
            .map(|p| Network::parse(p).ok_or_else(|| invalid("server.trusted_proxies", format!("{p:?} is not a CIDR"))))
            .collect()
    }

    /// The domain's settings, validated.
    /// The outbound HTTP side, for `settings` made from this configuration.
    pub fn transport_settings(&self, settings: &Settings) -> fedid_transport::TransportSettings {
        use std::time::Duration;
        fedid_transport::TransportSettings {
            scheme: settings.scheme,
            allow_private_networks: settings.allow_private_networks,
            allowed_domains: settings.allowed_domains.clone(),
            delivery_connect_timeout: Duration::from_millis(self.delivery.connect_timeout_ms),
            delivery_timeout: Duration::from_millis(self.delivery.timeout_ms),
            fetch_connect_timeout: Duration::from_millis(self.federation.fetch_connect_timeout_ms),
            fetch_timeout: Duration::from_millis(self.federation.fetch_timeout_ms),
        }
    }

    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let f = &self.federation;
        let scheme = match f.scheme.as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => {
                return Err(invalid(
                    "federation.scheme",
                    format!("must be https or http, not {other:?}"),
                ))
            }
        };
        let policy = DomainPolicy::for_scheme(scheme, f.allow_private_networks);
        let domain = Domain::parse(&f.domain, policy).map_err(|e| invalid("federation.domain", e))?;
        let allowed_domains = f
            .allowed_domains
            .iter()
            .filter(|d| !d.is_empty())
            .map(|d| Domain::parse(d, policy).map_err(|e| invalid("federation.allowed_domains", format!("{d}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if !(1..=3650).contains(&self.auth.token_ttl_days) {
            return Err(invalid("auth.token_ttl_days", "must be 1 to 3650"));
        }
        if f.max_clock_skew_secs < 0 {
            return Err(invalid("federation.max_clock_skew_secs", "must not be negative"));
        }
        if f.key_cache_ttl_secs < 0 {
            return Err(invalid("federation.key_cache_ttl_secs", "must not be negative"));
        }
        for (key, value) in [
            ("server.body_timeout_secs", self.server.body_timeout_secs as usize),
            ("server.max_connections", self.server.max_connections.unwrap_or(1)),
            ("server.max_connections_per_ip", self.server.max_connections_per_ip),
            (
                "limits.unsolicited_per_sender",
                self.limits.unsolicited_per_sender as usize,
            ),
            (
                "limits.alias_changes_per_day",
                self.limits.alias_changes_per_day as usize,
            ),
            ("limits.alias_changes_total", self.limits.alias_changes_total as usize),
            ("delivery.concurrency", self.delivery.concurrency),
            ("delivery.max_in_flight", self.delivery.max_in_flight),
            ("delivery.retry_base_secs", self.delivery.retry_base_secs as usize),
            ("delivery.retry_max_secs", self.delivery.retry_max_secs as usize),
            ("federation.max_key_fetches", f.max_key_fetches),
            ("database.pool_size", self.database.pool_size as usize),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.delivery.retry_max_secs < self.delivery.retry_base_secs {
            return Err(invalid(
                "delivery.retry_max_secs",
                "must be at least delivery.retry_base_secs",
            ));
        }
        if !matches!(self.log.format.as_str(), "pretty" | "json") {
            return Err(invalid("log.format", "must be pretty or json"));
        }
        Ok(Settings {
            allowed_domains,
            max_clock_skew_secs: f.max_clock_skew_secs,
            key_cache_ttl_secs: f.key_cache_ttl_secs,
            max_key_fetches: f.max_key_fetches,
            // Waiting for another request's refetch: never longer than a fetch.
            key_refetch_wait_ms: f.fetch_timeout_ms,
            delivery_concurrency: self.delivery.concurrency,
            delivery_max_in_flight: self.delivery.max_in_flight,
            delivery_timeout_ms: self.delivery.timeout_ms,
            retry_base_secs: self.delivery.retry_base_secs,
            retry_max_secs: self.delivery.retry_max_secs,
            inbox_messages_per_user: self.limits.inbox_messages_per_user,
            unsolicited_per_sender: self.limits.unsolicited_per_sender,
            alias_changes_per_day: self.limits.alias_changes_per_day,
            alias_changes_total: self.limits.alias_changes_total,
            incoming_requests_per_user: self.limits.incoming_requests_per_user,
            token_ttl_days: self.auth.token_ttl_days,
            ..Settings::for_domain(domain, scheme, f.allow_private_networks)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_operations_md() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.database.url, "sqlite://fedid.db");
        let s = c.settings().unwrap();
        assert_eq!(s.domain.as_str(), "localhost:8080");
        assert_eq!(
            (s.max_clock_skew_secs, s.delivery_concurrency, s.token_ttl_days),
            (300, 16, 30)
        );
    }

    #[test]
    fn the_limits_against_strangers_default_as_operations_md_says() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(
            (
                c.server.body_timeout_secs,
                c.server.max_connections,
                c.server.max_connections_per_ip
            ),
            (10, None, 256)
        );
        let s = c.settings().unwrap();
        assert_eq!(
            (s.unsolicited_per_sender, s.alias_changes_per_day, s.alias_changes_total),
            (16, 5, 20)
        );
        assert_eq!(
            s.key_refetch_wait_ms, 10_000,
            "no longer than federation.fetch_timeout_ms"
        );
    }

    #[test]
    fn the_limits_against_strangers_refuse_zero_by_name() {
        let err = |pairs: &[(&str, &str)]| Config::load_from(None, env(pairs)).unwrap_err().to_string();
        for key in [
            "server.body_timeout_secs",
            "server.max_connections",
            "server.max_connections_per_ip",
            "limits.unsolicited_per_sender",
            "limits.alias_changes_per_day",
            "limits.alias_changes_total",
        ] {
            let var = format!("FEDID__{}", key.to_ascii_uppercase().replace('.', "__"));
            assert!(err(&[(&var, "0")]).contains(key), "{key}");
        }
    }

    #[test]
    fn the_example_file_parses_and_holds_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fedid.example.toml");
        let from_example = Config::load_from(Some(&example), env(&[])).unwrap();
        assert_eq!(from_example, Config::load_from(None, env(&[])).unwrap());
    }

    /// `section.key` for every `key = ...` line, commented out or not.
    fn keys_of(toml: &str) -> std::collections::BTreeSet<String> {
        let mut section = String::new();
        let mut keys = std::collections::BTreeSet::new();
        for line in toml.lines().map(|l| l.trim_start_matches('#').trim()) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, _)) = line.split_once(" = ") {
                if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    keys.insert(format!("{section}.{key}"));
                }
            }
        }
        keys
    }

    #[test]
    fn the_example_file_names_every_key() {
        let example =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fedid.example.toml")).unwrap();
        let named = keys_of(&example);
        let without_default = ["server.workers", "server.metrics_token", "server.max_connections"];
        for key in keys_of(DEFAULTS).iter().map(String::as_str).chain(without_default) {
            assert!(named.contains(key), "{key} is missing from fedid.example.toml");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fedid.toml");
        std::fs::write(
            &file,
            "[federation]\ndomain = \"a.example\"\n[delivery]\nconcurrency = 4\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[
                ("FEDID__DELIVERY__CONCURRENCY", "8"),
                ("FEDID__FEDERATION__ALLOWED_DOMAINS", "a.example,b.example:8443"),
                ("FEDID__FEDERATION__ALLOW_PRIVATE_NETWORKS", "true"),
            ]),
        )
        .unwrap();
        let s = c.settings().unwrap();
        assert_eq!(s.domain.as_str(), "a.example");
        assert_eq!(s.delivery_concurrency, 8);
        assert!(s.allow_private_networks);
        assert_eq!(
            s.allowed_domains.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            vec!["a.example", "b.example:8443"]
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |pairs: &[(&str, &str)]| Config::load_from(None, env(pairs)).unwrap_err().to_string();
        assert!(err(&[("FEDID__FEDERATION__DOMAIN", "A.example")]).contains("federation.domain"));
        assert!(err(&[("FEDID__FEDERATION__SCHEME", "ftp")]).contains("federation.scheme"));
        assert!(err(&[("FEDID__DELIVERY__CONCURRENCY", "0")]).contains("delivery.concurrency"));
        assert!(err(&[("FEDID__LOG__FORMAT", "xml")]).contains("log.format"));
        assert!(err(&[("FEDID__FEDERATION__DOMAIN", "127.0.0.1:8080")]).contains("federation.domain"));
        assert!(err(&[("FEDID__FEDERATION__KEY_CACHE_TTL_SECS", "-1")]).contains("federation.key_cache_ttl_secs"));
    }

    #[test]
    fn serving_and_log_keys_are_checked_by_every_command() {
        let err = |pairs: &[(&str, &str)]| Config::load_from(None, env(pairs)).unwrap_err().to_string();
        assert!(err(&[("FEDID__LOG__LEVEL", "loud")]).contains("log.level"));
        assert!(err(&[("FEDID__SERVER__BIND", "nonsense")]).contains("server.bind"));
        assert!(err(&[("FEDID__SERVER__BIND", "127.0.0.1:99999")]).contains("server.bind"));
        assert!(err(&[("FEDID__SERVER__WORKERS", "0")]).contains("server.workers"));
        assert!(err(&[("FEDID__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,nope")]).contains("server.trusted_proxies"));
        for (key, value) in [
            ("FEDID__LOG__LEVEL", "WARN"),
            ("FEDID__LOG__LEVEL", "info,fedid_http=debug"),
            ("FEDID__SERVER__BIND", "[::]:8080"),
            ("FEDID__SERVER__BIND", "localhost:8080"),
        ] {
            assert!(Config::load_from(None, env(&[(key, value)])).is_ok(), "{key}={value}");
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fedid.toml");
        std::fs::write(&file, "[server]\nbindd = \"x\"\n").unwrap();
        assert!(Config::load_from(Some(&file), env(&[]))
            .unwrap_err()
            .to_string()
            .contains("bindd"));
    }
}
