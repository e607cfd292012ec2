//! [`MemoryStore`]: every storage port in memory. A transaction works on a
//! copy of the state and publishes it on success, so a failed unit of work
//! leaves nothing behind, exactly like a database rollback. Meant for tests
//! and small embedded setups: each write copies the whole state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use std::panic::{catch_unwind, AssertUnwindSafe};

use fedid_domain::keylog::{KeyConflict, PeerPin, PinTarget};
use fedid_domain::ports::{StoreError, Tx, Work, WriteUnit};
use fedid_domain::{
    Alias, AuditRecord, Domain, EncryptionKey, Handle, IdentityRecord, InboxMessage, NewMessage, PeerDomainHealth,
    QueuedRevocation, Relationship, RelationshipState, ReplayKey, ReplayRecord, SigningKey, Store, UnixTime, UserId,
};

#[derive(Debug, Clone)]
struct Session {
    user: UserId,
    expires_at: UnixTime,
    revoked: bool,
}

#[derive(Debug, Clone, Default)]
struct State {
    next_user: i64,
    identities: BTreeMap<UserId, IdentityRecord>,
    sessions: HashMap<[u8; 32], Session>,
    alias_history: HashMap<Alias, UserId>,
    relationships: BTreeMap<(UserId, String), Relationship>,
    next_message: i64,
    /// By id: recipient, the sender's handle when unsolicited, message.
    messages: BTreeMap<i64, (UserId, Option<String>, InboxMessage)>,
    alias_changes: Vec<(UserId, UnixTime)>,
    readiness_checked_at: Option<UnixTime>,
    queue: BTreeMap<(UserId, String), QueuedRevocation>,
    replays: HashMap<ReplayKey, ReplayRecord>,
    nonces: HashMap<(String, String), ReplayKey>,
    audit: Vec<AuditRecord>,
    peer_domains: BTreeMap<String, PeerDomainHealth>,
    /// Leases of failing peer domains (section 11).
    peer_leases: BTreeMap<String, UnixTime>,
    /// By (user, seq): entry bytes, hash and when appended.
    key_log: BTreeMap<(UserId, u64), (String, String, UnixTime)>,
    /// Pins of remote handles, and conflicts, by handle.
    key_pins: BTreeMap<String, PeerPin>,
    key_conflicts: BTreeMap<String, KeyConflict>,
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    /// Runs the unit on the caller's thread and answers it before returning.
    fn write(&self, mut unit: Box<dyn WriteUnit>) {
        let outcome = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut copy = state.clone();
            // A unit that panics fails alone, as on the database stores.
            let ran = catch_unwind(AssertUnwindSafe(|| unit.run(&mut copy)))
                .unwrap_or_else(|_| Err(StoreError::Unavailable("a unit of work panicked".into())));
            if ran.is_ok() {
                *state = copy;
            }
            ran
        };
        unit.finish(outcome);
    }

    fn read(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        // Reads must not write; running on a copy enforces it.
        self.write_discarding(work)
    }
}

impl State {
    /// The row in the way of `record` (see [`Tx::replays_in_way`]).
    fn replay_in_way(&self, record: &ReplayRecord) -> Option<&ReplayRecord> {
        if record.nonce.is_empty() {
            self.replays.get(&record.key).filter(|earlier| earlier.nonce.is_empty())
        } else {
            let nonce_key = (record.sender.as_str().to_owned(), record.nonce.as_str().to_owned());
            self.nonces.get(&nonce_key).and_then(|key| self.replays.get(key))
        }
    }
}

impl MemoryStore {
    fn write_discarding(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut copy = state.clone();
        drop(state);
        work(&mut copy)
    }
}

fn range_after<'a, V>(
    map: &'a BTreeMap<(UserId, String), V>,
    user: UserId,
    after: Option<&Handle>,
) -> impl Iterator<Item = &'a V> {
    let after: Option<String> = after.map(|h| h.as_str().to_owned());
    let start = (user, after.clone().unwrap_or_default());
    map.range(start..)
        .take_while(move |((u, _), _)| *u == user)
        .filter(move |((_, peer), _)| after.as_ref().is_none_or(|a| peer.as_str() > a.as_str()))
        .map(|(_, v)| v)
}

impl State {
    /// `record` with its inbox count, as a database keeps it.
    fn counted(&self, record: &IdentityRecord) -> IdentityRecord {
        let inbox_messages = self.messages.values().filter(|(u, _, _)| *u == record.user).count() as u64;
        IdentityRecord {
            inbox_messages,
            ..record.clone()
        }
    }
}

impl Tx for State {
    fn create_user(&mut self, _at: UnixTime) -> Result<UserId, StoreError> {
        self.next_user += 1;
        let user = UserId(self.next_user);
        self.identities.insert(user, IdentityRecord::new(user));
        Ok(user)
    }

    fn identity(&mut self, user: UserId) -> Result<Option<IdentityRecord>, StoreError> {
        Ok(self.identities.get(&user).map(|record| self.counted(record)))
    }

    fn insert_session(&mut self, user: UserId, token_hash: &[u8; 32], expires_at: UnixTime) -> Result<(), StoreError> {
        self.sessions.insert(
            *token_hash,
            Session {
                user,
                expires_at,
                revoked: false,
            },
        );
        Ok(())
    }

    fn session_user(&mut self, token_hash: &[u8; 32], now: UnixTime) -> Result<Option<UserId>, StoreError> {
        Ok(self
            .sessions
            .get(token_hash)
            .filter(|s| !s.revoked && s.expires_at > now)
            .map(|s| s.user))
    }

    fn revoke_sessions(&mut self, user: UserId, now: UnixTime) -> Result<u64, StoreError> {
        let mut count = 0;
        for session in self.sessions.values_mut() {
            if session.user == user && !session.revoked && session.expires_at > now {
                session.revoked = true;
                count += 1;
            }
        }
        Ok(count)
    }

    fn identity_by_alias(&mut self, alias: &Alias) -> Result<Option<IdentityRecord>, StoreError> {
        Ok(self
            .identities
            .values()
            .find(|i| i.alias.as_ref() == Some(alias))
            .map(|record| self.counted(record)))
    }

    fn alias_holder(&mut self, alias: &Alias) -> Result<Option<UserId>, StoreError> {
        Ok(self.alias_history.get(alias).copied())
    }

    fn set_alias(&mut self, user: UserId, alias: &Alias, at: UnixTime) -> Result<(), StoreError> {
        if self.alias_history.get(alias).is_some_and(|holder| *holder != user) {
            return Err(StoreError::AliasTaken);
        }
        let identity = self
            .identities
            .get_mut(&user)
            .ok_or(StoreError::Unavailable("no such user".into()))?;
        identity.alias = Some(alias.clone());
        self.alias_history.insert(alias.clone(), user);
        self.alias_changes.push((user, at));
        Ok(())
    }

    fn alias_changes(&mut self, user: UserId, since: UnixTime) -> Result<fedid_domain::AliasChanges, StoreError> {
        let mine = || self.alias_changes.iter().filter(|(u, _)| *u == user);
        let recent = || mine().map(|(_, at)| *at).filter(|at| *at >= since);
        Ok(fedid_domain::AliasChanges {
            ever: mine().count() as u64,
            recent: recent().count() as u64,
            oldest_recent: recent().min(),
        })
    }

    fn set_keys(
        &mut self,
        user: UserId,
        signing: &SigningKey,
        encryption: &EncryptionKey,
        at: UnixTime,
    ) -> Result<(), StoreError> {
        let identity = self
            .identities
            .get_mut(&user)
            .ok_or(StoreError::Unavailable("no such user".into()))?;
        identity.signing_key = Some(*signing);
        identity.encryption_key = Some(*encryption);
        identity.keys_updated_at = Some(at);
        Ok(())
    }

    fn clear_keys(&mut self, user: UserId, at: UnixTime) -> Result<(), StoreError> {
        let identity = self
            .identities
            .get_mut(&user)
            .ok_or(StoreError::Unavailable("no such user".into()))?;
        identity.signing_key = None;
        identity.encryption_key = None;
        identity.keys_updated_at = None;
        identity.last_reset_at = Some(at);
        Ok(())
    }

    fn relationship(&mut self, user: UserId, peer: &Handle) -> Result<Option<Relationship>, StoreError> {
        Ok(self.relationships.get(&(user, peer.as_str().to_owned())).cloned())
    }

    fn put_relationship(&mut self, user: UserId, relationship: &Relationship) -> Result<(), StoreError> {
        let key = (user, relationship.peer.as_str().to_owned());
        let created_at = self
            .relationships
            .get(&key)
            .map_or(relationship.created_at, |r| r.created_at);
        self.relationships.insert(
            key,
            Relationship {
                created_at,
                ..relationship.clone()
            },
        );
        Ok(())
    }

    fn delete_relationship(&mut self, user: UserId, peer: &Handle) -> Result<bool, StoreError> {
        Ok(self.relationships.remove(&(user, peer.as_str().to_owned())).is_some())
    }

    fn delete_relationships(&mut self, user: UserId) -> Result<Vec<Handle>, StoreError> {
        let peers: Vec<Handle> = range_after(&self.relationships, user, None)
            .map(|r| r.peer.clone())
            .collect();
        self.relationships.retain(|(u, _), _| *u != user);
        Ok(peers)
    }

    fn relationships_after(
        &mut self,
        user: UserId,
        after: Option<&Handle>,
        limit: usize,
    ) -> Result<Vec<Relationship>, StoreError> {
        Ok(range_after(&self.relationships, user, after)
            .take(limit)
            .cloned()
            .collect())
    }

    fn count_relationships(&mut self, user: UserId, state: Option<RelationshipState>) -> Result<u64, StoreError> {
        Ok(range_after(&self.relationships, user, None)
            .filter(|r| state.is_none_or(|s| r.state == s))
            .count() as u64)
    }

    fn insert_messages(&mut self, user: UserId, messages: &[NewMessage<'_>]) -> Result<Vec<i64>, StoreError> {
        let mut ids = Vec::with_capacity(messages.len());
        for message in messages {
            self.next_message += 1;
            let id = self.next_message;
            let stored = InboxMessage {
                id,
                received_at: message.received_at,
                envelope: message.envelope.to_owned(),
            };
            self.messages
                .insert(id, (user, message.unsolicited_from.map(str::to_owned), stored));
            ids.push(id);
        }
        Ok(ids)
    }

    fn record_readiness(&mut self, at: UnixTime) -> Result<(), StoreError> {
        self.readiness_checked_at = Some(at);
        Ok(())
    }

    fn count_unsolicited(&mut self, user: UserId, from: &str) -> Result<u64, StoreError> {
        Ok(self
            .messages
            .values()
            .filter(|(u, sender, _)| *u == user && sender.as_deref() == Some(from))
            .count() as u64)
    }

    fn delete_messages(&mut self, user: UserId) -> Result<u64, StoreError> {
        let before = self.messages.len();
        self.messages.retain(|_, (u, _, _)| *u != user);
        Ok((before - self.messages.len()) as u64)
    }

    fn messages_after(
        &mut self,
        user: UserId,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>, StoreError> {
        let start = after.map_or(i64::MIN, |a| a.saturating_add(1));
        Ok(self
            .messages
            .range(start..)
            .filter(|(_, (u, _, _))| *u == user)
            .take(limit)
            .map(|(_, (_, _, m))| m.clone())
            .collect())
    }

    fn delete_message(&mut self, user: UserId, id: i64) -> Result<bool, StoreError> {
        if self.messages.get(&id).is_some_and(|(u, _, _)| *u == user) {
            self.messages.remove(&id);
            return Ok(true);
        }
        Ok(false)
    }

    fn queued(&mut self, user: UserId, peer: &Handle) -> Result<Option<QueuedRevocation>, StoreError> {
        Ok(self.queue.get(&(user, peer.as_str().to_owned())).cloned())
    }

    fn enqueue(&mut self, user: UserId, row: &QueuedRevocation) -> Result<bool, StoreError> {
        let key = (user, row.peer.as_str().to_owned());
        if self.queue.contains_key(&key) {
            return Ok(false);
        }
        self.queue.insert(key, row.clone());
        Ok(true)
    }

    fn update_queued(&mut self, user: UserId, row: &QueuedRevocation) -> Result<(), StoreError> {
        if let Some(existing) = self.queue.get_mut(&(user, row.peer.as_str().to_owned())) {
            *existing = QueuedRevocation {
                peer: existing.peer.clone(),
                queued_at: existing.queued_at,
                ..row.clone()
            };
        }
        Ok(())
    }

    fn claim_due(
        &mut self,
        now: UnixTime,
        until: UnixTime,
        limit: usize,
    ) -> Result<Vec<(UserId, QueuedRevocation)>, StoreError> {
        let mut due: Vec<(UserId, String, UnixTime)> = self
            .queue
            .iter()
            .filter(|(_, row)| row.next_attempt_at.is_some_and(|at| at <= now))
            .filter(|(_, row)| row.claimed_until.is_none_or(|claim| claim <= now))
            .filter_map(|((user, peer), row)| Some((*user, peer.clone(), row.next_attempt_at?)))
            .collect();
        due.sort_by_key(|(_, _, at)| *at);
        let mut claimed = Vec::new();
        for (user, peer, _) in due.into_iter().take(limit) {
            if let Some(row) = self.queue.get_mut(&(user, peer)) {
                row.claimed_until = Some(until);
                claimed.push((user, row.clone()));
            }
        }
        Ok(claimed)
    }

    fn key_log_head(&mut self, user: UserId) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self
            .key_log
            .range((user, 0)..=(user, u64::MAX))
            .next_back()
            .map(|((_, seq), (_, hash, _))| (*seq, hash.clone())))
    }

    fn key_log_last(&mut self, user: UserId) -> Result<Option<String>, StoreError> {
        Ok(self
            .key_log
            .range((user, 0)..=(user, u64::MAX))
            .next_back()
            .map(|(_, (entry, _, _))| entry.clone()))
    }

    fn key_log_append(
        &mut self,
        user: UserId,
        seq: u64,
        entry: &str,
        hash: &str,
        at: UnixTime,
    ) -> Result<bool, StoreError> {
        if self.key_log.contains_key(&(user, seq)) {
            return Ok(false);
        }
        self.key_log
            .insert((user, seq), (entry.to_owned(), hash.to_owned(), at));
        Ok(true)
    }

    fn key_log_after(&mut self, user: UserId, after: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self
            .key_log
            .range((user, after.saturating_add(1))..=(user, u64::MAX))
            .take(limit)
            .map(|(_, (entry, _, _))| entry.clone())
            .collect())
    }

    fn key_log_appended_since(&mut self, user: UserId, since: UnixTime) -> Result<u64, StoreError> {
        Ok(self
            .key_log
            .range((user, 0)..=(user, u64::MAX))
            .filter(|(_, (_, _, at))| *at >= since)
            .count() as u64)
    }

    fn users_missing_key_log(&mut self, limit: usize) -> Result<Vec<UserId>, StoreError> {
        Ok(self
            .identities
            .values()
            .filter(|r| r.is_active())
            .filter(|r| self.key_log.range((r.user, 0)..=(r.user, u64::MAX)).next().is_none())
            .map(|r| r.user)
            .take(limit)
            .collect())
    }

    fn peer_domain(&mut self, domain: &Domain) -> Result<Option<PeerDomainHealth>, StoreError> {
        Ok(self.peer_domains.get(domain.as_str()).cloned())
    }

    fn peer_domains(&mut self) -> Result<Vec<PeerDomainHealth>, StoreError> {
        Ok(self.peer_domains.values().cloned().collect())
    }

    fn record_peer_outcome(&mut self, domain: &Domain, failure: Option<&str>, at: UnixTime) -> Result<(), StoreError> {
        let health = self
            .peer_domains
            .entry(domain.as_str().to_owned())
            .or_insert_with(|| PeerDomainHealth {
                domain: domain.clone(),
                consecutive_failures: 0,
                last_success_at: None,
                last_failure_at: None,
                last_failure: None,
                failing_since: None,
            });
        match failure {
            None => {
                health.consecutive_failures = 0;
                health.last_success_at = Some(at);
                health.failing_since = None;
            }
            Some(reason) => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                health.last_failure_at = Some(at);
                health.last_failure = Some(reason.to_owned());
                health.failing_since = health.failing_since.or(Some(at));
            }
        }
        Ok(())
    }

    fn lease_peer_domain(&mut self, domain: &Domain, now: UnixTime, until: UnixTime) -> Result<bool, StoreError> {
        if !self.peer_domains.contains_key(domain.as_str()) {
            return Ok(false);
        }
        match self.peer_leases.get(domain.as_str()) {
            Some(held) if *held > now => Ok(false),
            _ => {
                self.peer_leases.insert(domain.as_str().to_owned(), until);
                Ok(true)
            }
        }
    }

    fn release_peer_domain(&mut self, domain: &Domain) -> Result<(), StoreError> {
        self.peer_leases.remove(domain.as_str());
        Ok(())
    }

    fn key_pin(&mut self, handle: &Handle) -> Result<Option<PeerPin>, StoreError> {
        Ok(self.key_pins.get(handle.as_str()).cloned())
    }

    fn key_pins(&mut self, handles: &[Handle]) -> Result<Vec<PeerPin>, StoreError> {
        Ok(handles
            .iter()
            .filter_map(|h| self.key_pins.get(h.as_str()).cloned())
            .collect())
    }

    fn move_key_pin(&mut self, pin: &PeerPin, from: Option<&(u64, String)>) -> Result<bool, StoreError> {
        let current = self.key_pins.get(pin.handle.as_str()).map(PeerPin::position);
        if current.as_ref() != from {
            return Ok(false);
        }
        self.key_pins.insert(pin.handle.as_str().to_owned(), pin.clone());
        Ok(true)
    }

    fn key_conflict(&mut self, handle: &Handle) -> Result<Option<KeyConflict>, StoreError> {
        Ok(self.key_conflicts.get(handle.as_str()).cloned())
    }

    fn record_key_conflict(&mut self, conflict: &KeyConflict) -> Result<bool, StoreError> {
        if self.key_conflicts.contains_key(conflict.handle.as_str()) {
            return Ok(false);
        }
        self.key_conflicts
            .insert(conflict.handle.as_str().to_owned(), conflict.clone());
        Ok(true)
    }

    fn key_conflicts(&mut self) -> Result<Vec<KeyConflict>, StoreError> {
        Ok(self.key_conflicts.values().cloned().collect())
    }

    fn count_key_conflicts(&mut self) -> Result<u64, StoreError> {
        Ok(self.key_conflicts.len() as u64)
    }

    fn unpin(&mut self, target: &PinTarget) -> Result<Vec<Handle>, StoreError> {
        let hit = |handle: &str| match target {
            PinTarget::Handle(h) => h.as_str() == handle,
            PinTarget::Domain(d) => handle.rsplit_once('@').is_some_and(|(_, domain)| domain == d.as_str()),
        };
        self.key_conflicts.retain(|handle, _| !hit(handle));
        let unpinned: Vec<Handle> = self
            .key_pins
            .iter()
            .filter(|(handle, _)| hit(handle))
            .map(|(_, pin)| pin.handle.clone())
            .collect();
        self.key_pins.retain(|handle, _| !hit(handle));
        Ok(unpinned)
    }

    fn users_related_to(&mut self, peer: &Handle, limit: usize) -> Result<Vec<UserId>, StoreError> {
        Ok(self
            .relationships
            .keys()
            .filter(|(_, p)| p == peer.as_str())
            .map(|(user, _)| *user)
            .take(limit)
            .collect())
    }

    fn queued_for_domain(&mut self, domain: &Domain) -> Result<u64, StoreError> {
        let suffix = format!("@{}", domain.as_str());
        Ok(self.queue.keys().filter(|(_, peer)| peer.ends_with(&suffix)).count() as u64)
    }

    fn total_scheduled(&mut self) -> Result<u64, StoreError> {
        Ok(self.queue.values().filter(|row| row.next_attempt_at.is_some()).count() as u64)
    }

    fn dequeue(&mut self, user: UserId, peer: &Handle) -> Result<bool, StoreError> {
        Ok(self.queue.remove(&(user, peer.as_str().to_owned())).is_some())
    }

    fn queue_after(
        &mut self,
        user: UserId,
        after: Option<&Handle>,
        limit: usize,
    ) -> Result<Vec<QueuedRevocation>, StoreError> {
        Ok(range_after(&self.queue, user, after).take(limit).cloned().collect())
    }

    fn queue_len(&mut self, user: UserId) -> Result<u64, StoreError> {
        Ok(range_after(&self.queue, user, None).count() as u64)
    }

    fn total_queue_len(&mut self) -> Result<u64, StoreError> {
        Ok(self.queue.len() as u64)
    }

    fn replays_in_way(&mut self, records: &[ReplayRecord]) -> Result<Vec<ReplayRecord>, StoreError> {
        Ok(records
            .iter()
            .filter_map(|record| self.replay_in_way(record).cloned())
            .collect())
    }

    fn record_replays(&mut self, records: &[ReplayRecord], now: UnixTime) -> Result<(), StoreError> {
        for record in records {
            if let Some(earlier) = self.replay_in_way(record) {
                if earlier.expires_at > now {
                    return Err(StoreError::Unavailable("a live replay record is in the way".into()));
                }
                let expired = earlier.key;
                self.replays.remove(&expired);
            }
            if !record.nonce.is_empty() {
                let nonce_key = (record.sender.as_str().to_owned(), record.nonce.as_str().to_owned());
                self.nonces.insert(nonce_key, record.key);
            }
            self.replays.insert(record.key, record.clone());
        }
        Ok(())
    }

    fn prune_replays(&mut self, now: UnixTime, limit: usize) -> Result<u64, StoreError> {
        let expired: Vec<ReplayKey> = self
            .replays
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(k, _)| *k)
            .take(limit)
            .collect();
        for key in &expired {
            if let Some(record) = self.replays.remove(key) {
                let nonce_key = (record.sender.as_str().to_owned(), record.nonce.as_str().to_owned());
                if self.nonces.get(&nonce_key) == Some(key) {
                    self.nonces.remove(&nonce_key);
                }
            }
        }
        Ok(expired.len() as u64)
    }

    fn append_audit(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        self.audit.push(record.clone());
        Ok(())
    }

    fn audit_records(&mut self, user: UserId) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self.audit.iter().filter(|r| r.user == user).cloned().collect())
    }
}
