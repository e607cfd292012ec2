//! fedid's outbound federation on ureq: delivery (PROTOCOL.md section 7)
//! and key discovery (section 6). Every connection goes through
//! [`GuardedResolver`], which checks each address it hands to ureq; no
//! redirects, no environment proxies, capped answers, bounded time.

#![forbid(unsafe_code)]

pub mod guard;
mod lookup_pool;
pub mod probe;

use std::fmt;
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

pub use crate::lookup_pool::LookupPool;
use fedid_domain::json;
use fedid_domain::ports::{KeyFetchFailure, KeyLogFetch, PublishedKeys};
use fedid_domain::{
    DeliveryFailure, Domain, EncryptionKey, Handle, KeyFetcher, Scheme, SigningKey, Transport, UnixTime,
};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Answers are read up to this many bytes (problem bodies, key documents).
const ANSWER_CAP: u64 = 16 * 1024;

/// Turns a host and port into addresses. The system's resolver by default;
/// tests plug in their own (for example one that rebinds).
pub trait Lookup: Send + Sync + fmt::Debug + 'static {
    fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver (getaddrinfo).
#[derive(Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Marks a connection the guard refused, through ureq's error type.
#[derive(Debug)]
struct BlockedAddress(SocketAddr);

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocked address {}", self.0.ip())
    }
}

impl std::error::Error for BlockedAddress {}

/// The resolver ureq connects through: looks the name up, then refuses the
/// whole domain if any address it resolved to is not allowed.
#[derive(Debug)]
pub struct GuardedResolver {
    lookup: Arc<dyn Lookup>,
    allow_private_networks: bool,
    pool: Arc<LookupPool>,
}

impl GuardedResolver {
    /// A resolver with a lookup pool of its own.
    pub fn new(lookup: Arc<dyn Lookup>, allow_private_networks: bool) -> Self {
        Self::with_pool(lookup, allow_private_networks, Arc::new(LookupPool::default()))
    }

    /// A resolver whose lookups run on `pool` (shared by several agents).
    pub fn with_pool(lookup: Arc<dyn Lookup>, allow_private_networks: bool, pool: Arc<LookupPool>) -> Self {
        Self {
            lookup,
            allow_private_networks,
            pool,
        }
    }
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri
            .host()
            .ok_or_else(|| ureq::Error::BadUri("no host".into()))?
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
        let lookup = Arc::clone(&self.lookup);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let queued = self.pool.submit(move || {
            let _ = tx.send(lookup.lookup(&host, port));
        });
        if !queued {
            return Err(ureq::Error::HostNotFound);
        }
        let wait = if timeout.after.is_not_happening() {
            Duration::from_secs(30)
        } else {
            *timeout.after
        };
        let found = match rx.recv_timeout(wait) {
            Ok(found) => found.map_err(|_| ureq::Error::HostNotFound)?,
            Err(_) => return Err(ureq::Error::Timeout(timeout.reason)),
        };
        if let Some(refused) = found
            .iter()
            .find(|a| !guard::allowed(a.ip(), self.allow_private_networks))
        {
            return Err(ureq::Error::Other(Box::new(BlockedAddress(*refused))));
        }
        let mut out = self.empty();
        for addr in found.into_iter().take(16) {
            out.push(addr);
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// Settings of the HTTP side of federation.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    pub scheme: Scheme,
    pub allow_private_networks: bool,
    /// When not empty, the only domains this server talks to.
    pub allowed_domains: Vec<Domain>,
    pub delivery_connect_timeout: Duration,
    pub delivery_timeout: Duration,
    pub fetch_connect_timeout: Duration,
    pub fetch_timeout: Duration,
}

/// Delivery and key discovery over HTTP(S).
#[derive(Debug)]
pub struct HttpTransport {
    settings: TransportSettings,
    delivery: ureq::Agent,
    fetch: ureq::Agent,
    /// The agents' lookup, for `probe`.
    lookup: Arc<dyn Lookup>,
}

fn agent(
    lookup: Arc<dyn Lookup>,
    pool: Arc<LookupPool>,
    settings: &TransportSettings,
    connect: Duration,
    whole: Duration,
) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(None)
        .https_only(settings.scheme == Scheme::Https)
        .timeout_connect(Some(connect))
        .timeout_global(Some(whole))
        .user_agent("fedid")
        .build();
    ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        GuardedResolver::with_pool(lookup, settings.allow_private_networks, pool),
    )
}

impl HttpTransport {
    pub fn new(settings: TransportSettings) -> Self {
        Self::with_lookup(settings, Arc::new(SystemLookup))
    }

    pub fn with_lookup(settings: TransportSettings, lookup: Arc<dyn Lookup>) -> Self {
        let pool = Arc::new(LookupPool::default());
        let delivery = agent(
            Arc::clone(&lookup),
            Arc::clone(&pool),
            &settings,
            settings.delivery_connect_timeout,
            settings.delivery_timeout,
        );
        let fetch = agent(
            Arc::clone(&lookup),
            pool,
            &settings,
            settings.fetch_connect_timeout,
            settings.fetch_timeout,
        );
        Self {
            settings,
            delivery,
            fetch,
            lookup,
        }
    }

    fn allowed(&self, domain: &str) -> bool {
        self.settings.allowed_domains.is_empty() || self.settings.allowed_domains.iter().any(|d| d.as_str() == domain)
    }

    fn url(&self, domain: &str, path: &str) -> String {
        format!("{}://{domain}{path}", self.settings.scheme.as_str())
    }
}

/// The reason a failed request is recorded with (PROTOCOL.md section 7).
fn failure(error: &ureq::Error) -> DeliveryFailure {
    use ureq::Error as E;
    match error {
        E::Timeout(_) => DeliveryFailure::Timeout,
        E::HostNotFound => DeliveryFailure::Dns,
        E::ConnectionFailed => DeliveryFailure::ConnectRefused,
        E::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => DeliveryFailure::ConnectRefused,
        E::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => DeliveryFailure::Timeout,
        E::Tls(_) | E::Rustls(_) | E::TlsRequired | E::RequireHttpsOnly(_) => DeliveryFailure::Tls,
        E::TooManyRedirects | E::RedirectFailed => DeliveryFailure::Redirect,
        E::Other(inner) if inner.is::<BlockedAddress>() => DeliveryFailure::BlockedAddress,
        _ => DeliveryFailure::Io,
    }
}

/// Reads at most `cap` bytes of an answer; `None` if it is larger.
fn capped_at(body: &mut ureq::Body, cap: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    body.as_reader().take(cap + 1).read_to_end(&mut out).ok()?;
    (out.len() as u64 <= cap).then_some(out)
}

fn is_json(response: &ureq::http::Response<ureq::Body>) -> bool {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

impl Transport for HttpTransport {
    fn deliver(&self, to: &Domain, wire_form: &str) -> Result<(), DeliveryFailure> {
        if !self.allowed(to.as_str()) {
            return Err(DeliveryFailure::BlockedDomain);
        }
        let mut response = self
            .delivery
            .post(&self.url(to.as_str(), "/federation/inbox"))
            .header("Content-Type", "application/json")
            .send(wire_form)
            .map_err(|e| failure(&e))?;
        let status = response.status().as_u16();
        // Seconds only: an HTTP date is not worth its parsing here.
        let retry_after_secs = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match status {
            200..=299 => Ok(()),
            300..=399 => Err(DeliveryFailure::Redirect),
            _ => {
                let code = capped_at(response.body_mut(), ANSWER_CAP)
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                    .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
                    .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
                Err(DeliveryFailure::Http {
                    status,
                    code,
                    retry_after_secs,
                })
            }
        }
    }
}

impl HttpTransport {
    /// `GET path` on `handle`'s server for a JSON document of at most
    /// `cap` bytes, under the rules of section 6 (allow-list, guard, no
    /// redirects, timeouts); `refetch` asks caches to revalidate.
    fn get_json(
        &self,
        handle: &Handle,
        path: &str,
        refetch: bool,
        cap: u64,
    ) -> Result<serde_json::Value, KeyFetchFailure> {
        let failed = |reason: String| KeyFetchFailure::Failed(reason);
        if !self.allowed(handle.domain_str()) {
            return Err(failed("blocked domain".into()));
        }
        let mut request = self
            .fetch
            .get(&self.url(handle.domain_str(), path))
            .header("Accept", "application/json");
        if refetch {
            request = request.header("Cache-Control", "no-cache");
        }
        let mut response = request
            .call()
            .map_err(|e| KeyFetchFailure::Unreachable(failure(&e).to_string()))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(KeyFetchFailure::NotFound),
            other => return Err(failed(format!("http {other}"))),
        }
        if !is_json(&response) {
            return Err(failed("not application/json".into()));
        }
        let body =
            capped_at(response.body_mut(), cap).ok_or_else(|| failed(format!("answer over {} KiB", cap / 1024)))?;
        json::parse_strict(&body).map_err(|_| failed("malformed JSON document".into()))
    }
}

impl KeyFetcher for HttpTransport {
    fn fetch_keys(&self, handle: &Handle, refetch: bool) -> Result<PublishedKeys, KeyFetchFailure> {
        let failed = |reason: String| KeyFetchFailure::Failed(reason);
        let doc = self.get_json(
            handle,
            &format!("/federation/users/{}", handle.alias_str()),
            refetch,
            ANSWER_CAP,
        )?;
        let text = |name: &str| doc.get(name).and_then(|v| v.as_str());
        if text("handle") != Some(handle.as_str()) {
            return Err(failed("the document names another handle".into()));
        }
        let signing_key = text("signingKey")
            .and_then(|k| SigningKey::parse(k).ok())
            .ok_or_else(|| failed("invalid signingKey".into()))?;
        let encryption_key = text("encryptionKey")
            .and_then(|k| EncryptionKey::parse(k).ok())
            .ok_or_else(|| failed("invalid encryptionKey".into()))?;
        let key_log = match (doc.get("keyLogSeq"), text("keyLogHead")) {
            (None, None) => None,
            (Some(seq), Some(head)) if is_hash(head) => Some((
                seq.as_u64().ok_or_else(|| failed("invalid keyLogSeq".into()))?,
                head.to_owned(),
            )),
            _ => return Err(failed("keyLogSeq and keyLogHead come together".into())),
        };
        Ok(PublishedKeys {
            handle: handle.clone(),
            signing_key,
            encryption_key,
            keys_updated_at: text("keysUpdatedAt").and_then(UnixTime::parse_rfc3339),
            key_log,
        })
    }

    fn fetch_key_log(&self, handle: &Handle, after: u64, refetch: bool) -> Result<KeyLogFetch, KeyFetchFailure> {
        let failed = |reason: String| KeyFetchFailure::Failed(reason);
        let page = self.get_json(
            handle,
            &format!("/federation/users/{}/keylog?after={after}", handle.alias_str()),
            refetch,
            KEY_LOG_PAGE_CAP,
        )?;
        if page.get("handle").and_then(|h| h.as_str()) != Some(handle.as_str()) {
            return Err(failed("the page names another handle".into()));
        }
        let entries = page
            .get("entries")
            .and_then(|e| e.as_array())
            .ok_or_else(|| failed("the page holds no entries".into()))?
            .clone();
        let seq = page
            .get("seq")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| failed("invalid seq".into()))?;
        let head = page
            .get("head")
            .and_then(|h| h.as_str())
            .filter(|h| h.is_empty() || is_hash(h))
            .ok_or_else(|| failed("invalid head".into()))?
            .to_owned();
        Ok(KeyLogFetch { entries, seq, head })
    }
}

/// A key-log page is read up to this many bytes (PROTOCOL.md section 12).
const KEY_LOG_PAGE_CAP: u64 = 256 * 1024;

/// Whether `text` is a SHA-256 in unpadded base64url.
fn is_hash(text: &str) -> bool {
    text.len() == 43 && fedid_domain::base64url::decode_array::<32>(text).is_some()
}
