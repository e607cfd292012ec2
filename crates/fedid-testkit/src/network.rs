//! [`Network`]: several in-process fedid instances that reach each other by
//! domain, as real servers would over HTTP: deliveries go through the
//! recipient's inbox, key lookups through its discovery answer. A domain
//! can be made unreachable or slow.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use fedid_domain::ports::{KeyFetchFailure, KeyLogFetch, PublishedKeys};
use fedid_domain::{DeliveryFailure, Domain, Fedid, Handle, KeyFetcher, Transport};

#[derive(Default, Clone)]
struct Node {
    instance: Weak<Fedid>,
    unreachable: bool,
    delay: Duration,
    /// Answers discovery as a version 1 server: no key log.
    unlogged: bool,
}

/// The switchboard. Instances join with [`Network::join`] after they are built.
pub struct Network {
    nodes: RwLock<HashMap<String, Node>>,
    timeout: Duration,
}

impl Network {
    /// `timeout` plays the transport's whole-request timeout: a node slower
    /// than that answers `timeout` after waiting that long.
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            nodes: RwLock::new(HashMap::new()),
            timeout,
        })
    }

    /// Makes `instance` reachable as `domain`.
    pub fn join(&self, domain: &Domain, instance: &Arc<Fedid>) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let node = nodes.entry(domain.as_str().to_owned()).or_default();
        node.instance = Arc::downgrade(instance);
    }

    /// Connections to `domain` are refused while this is set.
    pub fn set_unreachable(&self, domain: &str, unreachable: bool) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.entry(domain.to_owned()).or_default().unreachable = unreachable;
    }

    /// `domain` answers discovery as a server without revision 1.1 would
    /// while this is set: no `keyLogSeq`, no key log.
    pub fn set_unlogged(&self, domain: &str, unlogged: bool) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.entry(domain.to_owned()).or_default().unlogged = unlogged;
    }

    /// `domain` answers after `delay`.
    pub fn set_delay(&self, domain: &str, delay: Duration) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.entry(domain.to_owned()).or_default().delay = delay;
    }

    /// The transport port of an instance on this network.
    pub fn transport(self: &Arc<Self>) -> Arc<dyn Transport> {
        Arc::new(Endpoint(Arc::clone(self)))
    }

    /// The key fetcher port of an instance on this network.
    pub fn key_fetcher(self: &Arc<Self>) -> Arc<dyn KeyFetcher> {
        Arc::new(Endpoint(Arc::clone(self)))
    }

    fn unlogged(&self, domain: &str) -> bool {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes.get(domain).is_some_and(|node| node.unlogged)
    }

    fn reach(&self, domain: &str) -> Result<Arc<Fedid>, DeliveryFailure> {
        let node = {
            let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
            nodes.get(domain).cloned().ok_or(DeliveryFailure::Dns)?
        };
        if node.unreachable {
            return Err(DeliveryFailure::ConnectRefused);
        }
        if node.delay >= self.timeout {
            std::thread::sleep(self.timeout);
            return Err(DeliveryFailure::Timeout);
        }
        std::thread::sleep(node.delay);
        node.instance.upgrade().ok_or(DeliveryFailure::ConnectRefused)
    }
}

struct Endpoint(Arc<Network>);

impl Transport for Endpoint {
    fn deliver(&self, to: &Domain, wire_form: &str) -> Result<(), DeliveryFailure> {
        let instance = self.0.reach(to.as_str())?;
        instance
            .receive(wire_form.as_bytes())
            .map(|_| ())
            .map_err(|e| DeliveryFailure::Http {
                retry_after_secs: None,
                status: e.protocol_status(),
                code: Some(e.code().to_owned()),
            })
    }
}

impl KeyFetcher for Endpoint {
    fn fetch_keys(&self, handle: &Handle, _refetch: bool) -> Result<PublishedKeys, KeyFetchFailure> {
        let instance = self
            .0
            .reach(handle.domain_str())
            .map_err(|e| KeyFetchFailure::Unreachable(e.to_string()))?;
        let published = instance
            .published_identity(handle.alias_str())
            .map_err(|e| KeyFetchFailure::Failed(e.to_string()))?
            .ok_or(KeyFetchFailure::NotFound)?;
        Ok(PublishedKeys {
            handle: published.handle,
            signing_key: published.signing_key,
            encryption_key: published.encryption_key,
            keys_updated_at: published.keys_updated_at,
            key_log: (published.key_log.seq > 0 && !self.0.unlogged(handle.domain_str()))
                .then_some((published.key_log.seq, published.key_log.head)),
        })
    }

    fn fetch_key_log(&self, handle: &Handle, after: u64, _refetch: bool) -> Result<KeyLogFetch, KeyFetchFailure> {
        if self.0.unlogged(handle.domain_str()) {
            return Err(KeyFetchFailure::NotFound);
        }
        let instance = self
            .0
            .reach(handle.domain_str())
            .map_err(|e| KeyFetchFailure::Unreachable(e.to_string()))?;
        let page = instance
            .key_log_page(&handle.alias(), after)
            .map_err(|e| KeyFetchFailure::Failed(e.to_string()))?
            .ok_or(KeyFetchFailure::NotFound)?;
        let entries = page
            .entries
            .iter()
            .map(|e| serde_json::from_str(e).map_err(|e| KeyFetchFailure::Failed(e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(KeyLogFetch {
            entries,
            seq: page.head.seq,
            head: page.head.head,
        })
    }
}
