//! The key log (PROTOCOL.md section 12): entries, their signed bytes, entry
//! bytes and hash, the class of each `keys` entry, the pin check a peer
//! runs on every discovery answer, and the short grace after a proven
//! rotation. Everything here is pure: no store, no network, no clock.
//!
//! What the log guarantees, and no more: after a peer's first contact with
//! a handle, every change of that handle's keys reaches that peer as an
//! entry of one append-only chain, classified by whether the previous key
//! vouched for it; a history that is rewritten, forked or rolled back is
//! refused. A server can still give a peer a made-up log at first contact,
//! and can still append entries nobody vouched for (`reset`, `replaced`).

use serde_json::{Map, Value};

use crate::base64url;
use crate::envelope::canonical;
use crate::handle::{DomainPolicy, Handle};
use crate::keys::{EncryptionKey, Signature, SigningKey};
use crate::time::{Timestamp, UnixTime};

/// The `log` member of every entry.
pub const KEY_LOG_TAG: &str = "fedid-keylog-1";
/// At most this many entries are checked at once.
pub const MAX_CHECKED_ENTRIES: usize = 10_000;

/// Why an entry, or a log, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyLogError(pub String);

fn refused(reason: impl Into<String>) -> KeyLogError {
    KeyLogError(reason.into())
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Keys registered or replaced.
    Keys {
        /// The new signing key.
        signing: SigningKey,
        /// The new encryption key.
        encryption: EncryptionKey,
    },
    /// Keys erased by an identity reset.
    Reset,
}

/// How a `keys` entry came about, weakest first (section 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryClass {
    /// New keys nobody vouched for: to be treated like a reset.
    Replaced,
    /// Right after a `reset` entry: the user lost the old keys.
    Reset,
    /// The first entry.
    First,
    /// The same keys (an alias change).
    Unchanged,
    /// The old key vouches for the new one.
    Rotated,
}

impl EntryClass {
    /// The name in API answers and vectors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replaced => "replaced",
            Self::Reset => "reset",
            Self::First => "first",
            Self::Unchanged => "unchanged",
            Self::Rotated => "rotated",
        }
    }

    /// Whether peers' users see it as a break (a changed safety number).
    pub fn is_break(self) -> bool {
        matches!(self, Self::Replaced | Self::Reset)
    }

    /// The class named `text` ([`Self::as_str`]).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Replaced, Self::Reset, Self::First, Self::Unchanged, Self::Rotated]
            .into_iter()
            .find(|class| class.as_str() == text)
    }
}

/// One entry of a key log, checked member by member.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyLogEntry {
    handle: Handle,
    seq: u64,
    prev: Option<[u8; 32]>,
    at: Timestamp,
    kind: EntryKind,
    proof: Option<Signature>,
    rotation_proof: Option<Signature>,
    signed_bytes: Vec<u8>,
    entry_bytes: Vec<u8>,
}

/// The bytes of `text` if it is unpadded base64url exactly (no lenient
/// forms inside entries).
fn strict_base64url<const N: usize>(text: &str, member: &str) -> Result<[u8; N], KeyLogError> {
    let bytes: [u8; N] =
        base64url::decode_array(text).ok_or_else(|| refused(format!("{member}: not {N} bytes of base64url")))?;
    if base64url::encode(&bytes) != text {
        return Err(refused(format!("{member}: not unpadded base64url")));
    }
    Ok(bytes)
}

impl KeyLogEntry {
    /// Reads an entry: exactly the members of section 12, each under its
    /// rule.
    pub fn parse(value: &Value) -> Result<Self, KeyLogError> {
        let object = value.as_object().ok_or_else(|| refused("an entry is a JSON object"))?;
        const MEMBERS: [&str; 10] = [
            "log",
            "handle",
            "seq",
            "prev",
            "at",
            "kind",
            "signingKey",
            "encryptionKey",
            "proof",
            "rotationProof",
        ];
        if let Some(other) = object.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
            return Err(refused(format!("unknown member {other}")));
        }
        let text = |name: &str| -> Result<&str, KeyLogError> {
            object
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| refused(format!("{name} must be a string")))
        };
        if text("log")? != KEY_LOG_TAG {
            return Err(refused(format!("log must be {KEY_LOG_TAG}")));
        }
        let handle_text = text("handle")?;
        let handle = Handle::parse(handle_text, DomainPolicy::ANY).map_err(|e| refused(format!("handle: {e}")))?;
        if handle.as_str() != handle_text {
            return Err(refused("handle: not canonical"));
        }
        let seq = object
            .get("seq")
            .and_then(Value::as_u64)
            .filter(|s| *s >= 1)
            .ok_or_else(|| refused("seq must be an integer, 1 or more"))?;
        let prev = match (seq, text("prev")?) {
            (1, "") => None,
            (1, _) => return Err(refused("prev must be empty for seq 1")),
            (_, prev) => Some(strict_base64url::<32>(prev, "prev")?),
        };
        let at = Timestamp::parse(text("at")?).map_err(|e| refused(format!("at: {e}")))?;
        let proof = |name: &str| -> Result<Option<Signature>, KeyLogError> {
            match object.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(Signature::from_bytes(strict_base64url::<64>(s, name)?))),
                Some(_) => Err(refused(format!("{name} must be a string"))),
            }
        };
        let (proof, rotation_proof) = (proof("proof")?, proof("rotationProof")?);
        let kind = match text("kind")? {
            "keys" => {
                let signing = SigningKey::from_bytes(strict_base64url::<32>(text("signingKey")?, "signingKey")?)
                    .map_err(|e| refused(format!("signingKey: {e}")))?;
                let encryption =
                    EncryptionKey::from_bytes(strict_base64url::<32>(text("encryptionKey")?, "encryptionKey")?)
                        .map_err(|e| refused(format!("encryptionKey: {e}")))?;
                EntryKind::Keys { signing, encryption }
            }
            "reset" => {
                if !text("signingKey")?.is_empty() || !text("encryptionKey")?.is_empty() {
                    return Err(refused("a reset entry holds empty keys"));
                }
                if proof.is_some() || rotation_proof.is_some() {
                    return Err(refused("a reset entry holds no proof"));
                }
                EntryKind::Reset
            }
            other => return Err(refused(format!("kind {other:?} is not keys or reset"))),
        };
        let mut signed: Map<String, Value> = object.clone();
        signed.remove("proof");
        signed.remove("rotationProof");
        Ok(Self {
            handle,
            seq,
            prev,
            at,
            kind,
            proof,
            rotation_proof,
            signed_bytes: canonical(&Value::Object(signed)),
            entry_bytes: canonical(value),
        })
    }

    /// Builds an entry from its parts (`prev`: the previous entry's hash,
    /// `""` for seq 1), under the same rules as [`parse`](Self::parse).
    pub fn build(
        handle: &Handle,
        seq: u64,
        prev: &str,
        at: &Timestamp,
        kind: &EntryKind,
        proof: Option<&Signature>,
        rotation_proof: Option<&Signature>,
    ) -> Result<Self, KeyLogError> {
        let mut object = Map::new();
        object.insert("log".into(), Value::String(KEY_LOG_TAG.into()));
        object.insert("handle".into(), Value::String(handle.as_str().into()));
        object.insert("seq".into(), Value::from(seq));
        object.insert("prev".into(), Value::String(prev.into()));
        object.insert("at".into(), Value::String(at.as_str().into()));
        let (kind_name, signing, encryption) = match kind {
            EntryKind::Keys { signing, encryption } => ("keys", signing.to_base64url(), encryption.to_base64url()),
            EntryKind::Reset => ("reset", String::new(), String::new()),
        };
        object.insert("kind".into(), Value::String(kind_name.into()));
        object.insert("signingKey".into(), Value::String(signing));
        object.insert("encryptionKey".into(), Value::String(encryption));
        if let Some(proof) = proof {
            object.insert("proof".into(), Value::String(proof.to_base64url()));
        }
        if let Some(proof) = rotation_proof {
            object.insert("rotationProof".into(), Value::String(proof.to_base64url()));
        }
        Self::parse(&Value::Object(object))
    }

    /// Reads an entry as stored or served: its entry bytes.
    pub fn from_entry_bytes(bytes: &[u8]) -> Result<Self, KeyLogError> {
        let value = crate::json::parse_strict(bytes).map_err(|e| refused(e.to_string()))?;
        Self::parse(&value)
    }

    /// The entry bytes as text (RFC 8785 output is UTF-8).
    pub fn entry_text(&self) -> String {
        String::from_utf8_lossy(&self.entry_bytes).into_owned()
    }

    /// The handle it was written for.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Its position: 1 for the first.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When the change was made, as written.
    pub fn at(&self) -> &Timestamp {
        &self.at
    }

    /// What it records.
    pub fn kind(&self) -> &EntryKind {
        &self.kind
    }

    /// The signing key of a `keys` entry.
    pub fn signing_key(&self) -> Option<&SigningKey> {
        match &self.kind {
            EntryKind::Keys { signing, .. } => Some(signing),
            EntryKind::Reset => None,
        }
    }

    /// RFC 8785 of the entry without its proofs: what the proofs sign.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed_bytes
    }

    /// RFC 8785 of the whole entry.
    pub fn entry_bytes(&self) -> &[u8] {
        &self.entry_bytes
    }

    /// SHA-256 of the entry bytes, unpadded base64url: the next entry's
    /// `prev`, and the log's head when it is the last.
    pub fn hash(&self) -> String {
        base64url::encode(ring::digest::digest(&ring::digest::SHA256, &self.entry_bytes).as_ref())
    }

    fn hash_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &self.entry_bytes).as_ref());
        out
    }

    /// Whether its `proof`, when present, verifies with its own key.
    fn proof_holds(&self) -> bool {
        match (&self.proof, self.signing_key()) {
            (None, _) => true,
            (Some(proof), Some(key)) => proof.verify(key, &self.signed_bytes),
            (Some(_), None) => false,
        }
    }

    /// Checks this entry as the one following `previous` (none for the
    /// first) and gives a `keys` entry its class; the rules of section 12's
    /// "Checking entries" but the last entry's handle.
    pub fn follows(
        &self,
        previous: Option<&KeyLogEntry>,
        now: UnixTime,
        skew_secs: i64,
    ) -> Result<Option<EntryClass>, KeyLogError> {
        self.follows_with(previous, self.signatures(previous), now, skew_secs)
    }

    /// Whether this entry's proof holds, and its rotation proof (if it has
    /// one) against `previous`'s signing key: the costly part of
    /// [`Self::follows`], apart so that a long log's run in parallel.
    fn signatures(&self, previous: Option<&KeyLogEntry>) -> Signatures {
        let previous_key = previous.and_then(KeyLogEntry::signing_key);
        Signatures {
            proof: self.proof_holds(),
            rotation: self.rotation_proof.as_ref().map(|proof| {
                matches!((previous_key, self.signing_key()), (Some(old), Some(_)) if proof.verify(old, &self.signed_bytes))
            }),
        }
    }

    /// [`Self::follows`] with this entry's signatures already checked.
    fn follows_with(
        &self,
        previous: Option<&KeyLogEntry>,
        signatures: Signatures,
        now: UnixTime,
        skew_secs: i64,
    ) -> Result<Option<EntryClass>, KeyLogError> {
        let expected_seq = previous.map_or(1, |p| p.seq + 1);
        if self.seq != expected_seq {
            return Err(refused(format!("seq {} where {expected_seq} was due", self.seq)));
        }
        if self.prev != previous.map(KeyLogEntry::hash_bytes) {
            return Err(refused(format!(
                "entry {}: prev is not the previous entry's hash",
                self.seq
            )));
        }
        if !signatures.proof {
            return Err(refused(format!("entry {}: proof does not verify", self.seq)));
        }
        let rotated = match signatures.rotation {
            None => false,
            Some(true) => true,
            Some(false) => {
                return Err(refused(format!(
                    "entry {}: rotationProof does not verify against the previous keys entry",
                    self.seq
                )))
            }
        };
        if previous.is_some_and(|p| self.at.instant() < p.at.instant()) {
            return Err(refused(format!("entry {}: at goes back", self.seq)));
        }
        if self.at.instant() > now.plus_secs(skew_secs) {
            return Err(refused(format!("entry {}: at is in the future", self.seq)));
        }
        let EntryKind::Keys { signing, encryption } = &self.kind else {
            return Ok(None);
        };
        Ok(Some(match previous {
            None => EntryClass::First,
            Some(p) => match &p.kind {
                EntryKind::Reset => EntryClass::Reset,
                _ if rotated => EntryClass::Rotated,
                EntryKind::Keys {
                    signing: old_signing,
                    encryption: old_encryption,
                } if old_signing == signing && old_encryption == encryption => EntryClass::Unchanged,
                EntryKind::Keys { .. } => EntryClass::Replaced,
            },
        }))
    }
}

/// What an entry's signatures say: its proof, and its rotation proof if
/// it has one.
#[derive(Debug, Clone, Copy)]
struct Signatures {
    proof: bool,
    rotation: Option<bool>,
}

/// Each thread checks the signatures of at least this many entries, so a
/// log runs in parallel from twice as many.
const ENTRIES_PER_THREAD: usize = 64;

/// The machine's cores, asked once: on Linux the answer reads cgroup
/// files, which a key lookup should not do each time.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// The signatures of `entries`, each after the one before it (the first
/// after `before`), on as many threads as the machine has cores: a first
/// contact with a long log verifies up to two signatures per entry and
/// waits for them all (docs/key-log.md). The remote log-entry budget
/// bounds how much of this strangers can ask for, however it is spread.
fn signatures_of(before: Option<&KeyLogEntry>, entries: &[KeyLogEntry]) -> Vec<Signatures> {
    type Pair<'a> = (Option<&'a KeyLogEntry>, &'a KeyLogEntry);
    let pairs: Vec<Pair<'_>> = std::iter::once(before)
        .chain(entries.iter().map(Some))
        .zip(entries)
        .collect();
    let check = |pairs: &[Pair<'_>]| -> Vec<Signatures> {
        pairs
            .iter()
            .map(|(previous, entry)| entry.signatures(*previous))
            .collect()
    };
    let threads = if pairs.len() < 2 * ENTRIES_PER_THREAD {
        1
    } else {
        cores().min(pairs.len() / ENTRIES_PER_THREAD)
    };
    let mut chunks = pairs.chunks(pairs.len().div_ceil(threads).max(1));
    let Some(first) = chunks.next() else {
        return Vec::new();
    };
    std::thread::scope(|scope| {
        let others: Vec<_> = chunks
            .map(|chunk| {
                let spawned = std::thread::Builder::new().spawn_scoped(scope, move || check(chunk));
                (chunk, spawned)
            })
            .collect();
        let mut all = check(first);
        for (chunk, spawned) in others {
            // A thread that could not start or did not finish: its share
            // is checked here instead.
            let done = spawned.ok().and_then(|thread| thread.join().ok());
            all.extend(done.unwrap_or_else(|| check(chunk)));
        }
        all
    })
}

/// The last break a peer saw in a handle's log (API.md `lastBreak`).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyBreak {
    /// The entry that broke the chain of vouching.
    pub seq: u64,
    /// `reset` or `replaced`.
    pub change: EntryClass,
    /// Its `at`.
    pub at: Timestamp,
    /// When this server first saw it.
    pub seen_at: UnixTime,
}

/// What a server remembers about a remote handle (section 12).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPin {
    /// The last entry accepted, whole.
    pub entry: KeyLogEntry,
    /// Its class (`None`: a `reset` entry).
    pub class: Option<EntryClass>,
    /// The signing key of the `keys` entry right before it, when there is
    /// one: what the rotation grace accepts for a while.
    pub previous_signing_key: Option<SigningKey>,
    /// The last break seen.
    pub last_break: Option<KeyBreak>,
}

impl KeyPin {
    /// The log's head when this pin was taken.
    pub fn head(&self) -> String {
        self.entry.hash()
    }
}

/// A pin as a server keeps it for a remote handle: the pin, what its
/// latest move crossed and when this server made it (`peerKeys` in
/// API.md).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerPin {
    /// Whose log.
    pub handle: Handle,
    /// The pin.
    pub pin: KeyPin,
    /// `first` after first contact, else the weakest class the latest move
    /// crossed (`reset` for a move onto a `reset` entry).
    pub change: EntryClass,
    /// When this server moved the pin, by its own clock.
    pub changed_at: UnixTime,
}

impl PeerPin {
    /// The pinned seq and head: what a compare-and-set compares.
    pub fn position(&self) -> (u64, String) {
        (self.pin.entry.seq, self.pin.head())
    }
}

/// What `fedid-server federation unpin` forgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinTarget {
    /// One remote handle.
    Handle(Handle),
    /// Every handle of one domain (after it restored a backup, say).
    Domain(crate::handle::Domain),
}

/// A conflict recorded for the operator (`fedid-server federation
/// conflicts`): the pinned position, what the peer offered, and why it
/// was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConflict {
    /// Whose log.
    pub handle: Handle,
    /// When it was first recorded.
    pub at: UnixTime,
    /// The pin's seq.
    pub pinned_seq: u64,
    /// The pin's head.
    pub pinned_head: String,
    /// `keyLogSeq` of the refused answer, when it had one.
    pub offered_seq: Option<u64>,
    /// `keyLogHead` of the refused answer, when it had one.
    pub offered_head: Option<String>,
    /// Why.
    pub reason: String,
}

/// A discovery answer as the pin check reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogAnswer {
    /// The published signing key.
    pub signing: SigningKey,
    /// The published encryption key.
    pub encryption: EncryptionKey,
    /// `keyLogSeq` and `keyLogHead`, when the peer publishes a log.
    pub log: Option<(u64, String)>,
}

/// The outcome of a pin check.
#[derive(Debug, Clone, PartialEq)]
pub enum PinVerdict {
    /// The keys may be used; `pin` is the new pin and `change` what a
    /// peer's user is shown (the weakest class among the new entries;
    /// `None` when nothing changed).
    Ok {
        /// What changed.
        change: Option<EntryClass>,
        /// The pin to keep (moved by compare-and-set on the old one).
        pin: Box<KeyPin>,
    },
    /// No pin and no log published (a version 1 peer): the keys are used
    /// as in version 1, and nothing is pinned.
    Unlogged,
    /// The log contradicts the pin or the answer: the keys are not
    /// obtainable (`502 key_log_conflict`).
    Conflict(String),
}

/// The pin check of section 12 for `handle`: the current `pin` (none at
/// first contact), the `entries` a keylog fetch returned (after the pinned
/// seq, up to the answer's `keyLogSeq`), the discovery `answer`, at `now`.
pub fn check_pin(
    handle: &Handle,
    pin: Option<&KeyPin>,
    entries: &[Value],
    answer: &LogAnswer,
    now: UnixTime,
    skew_secs: i64,
) -> PinVerdict {
    if pin.is_none() && answer.log.is_none() {
        return PinVerdict::Unlogged;
    }
    match check(handle, pin, entries, answer, now, skew_secs) {
        Ok((change, pin)) => PinVerdict::Ok {
            change,
            pin: Box::new(pin),
        },
        Err(e) => PinVerdict::Conflict(e.0),
    }
}

fn check(
    handle: &Handle,
    pin: Option<&KeyPin>,
    entries: &[Value],
    answer: &LogAnswer,
    now: UnixTime,
    skew_secs: i64,
) -> Result<(Option<EntryClass>, KeyPin), KeyLogError> {
    let Some((answer_seq, answer_head)) = &answer.log else {
        return Err(refused("a downgrade: the answer publishes no log for a pinned handle"));
    };
    if let Some(pin) = pin {
        if *answer_seq == pin.entry.seq && *answer_head == pin.head() {
            let same_keys = pin.entry.signing_key() == Some(&answer.signing)
                && matches!(&pin.entry.kind, EntryKind::Keys { encryption, .. } if *encryption == answer.encryption);
            return if same_keys {
                Ok((None, pin.clone()))
            } else {
                Err(refused("the answer's keys are not the pinned entry's"))
            };
        }
        if *answer_seq <= pin.entry.seq {
            return Err(refused("the log went back or forked at a pinned seq"));
        }
    }
    let wanted: Vec<&Value> = entries
        .iter()
        .filter(|e| e.get("seq").and_then(Value::as_u64).is_none_or(|s| s <= *answer_seq))
        .collect();
    if wanted.is_empty() || wanted.len() > MAX_CHECKED_ENTRIES {
        return Err(refused(format!("{} entries to check", wanted.len())));
    }
    let parsed: Vec<KeyLogEntry> = wanted.into_iter().map(KeyLogEntry::parse).collect::<Result<_, _>>()?;
    let mut previous = pin.map(|p| p.entry.clone());
    let mut weakest: Option<EntryClass> = None;
    let mut last_break = pin.and_then(|p| p.last_break.clone());
    let mut last_class = None;
    let mut previous_signing_key = None;
    let signatures = signatures_of(previous.as_ref(), &parsed);
    for (entry, signatures) in parsed.iter().zip(signatures) {
        let class = entry.follows_with(previous.as_ref(), signatures, now, skew_secs)?;
        if let Some(class) = class {
            weakest = Some(weakest.map_or(class, |w| w.min(class)));
            if class.is_break() {
                last_break = Some(KeyBreak {
                    seq: entry.seq,
                    change: class,
                    at: entry.at.clone(),
                    seen_at: now,
                });
            }
        }
        previous_signing_key = previous.as_ref().and_then(|p| p.signing_key().copied());
        last_class = class;
        previous = Some(entry.clone());
    }
    let last = previous.ok_or_else(|| refused("no entry"))?;
    if last.seq != *answer_seq {
        return Err(refused(format!(
            "the log ends at {} where the answer says {answer_seq}",
            last.seq
        )));
    }
    let EntryKind::Keys { signing, encryption } = &last.kind else {
        return Err(refused("the log ends with a reset, yet keys are published"));
    };
    if *signing != answer.signing || *encryption != answer.encryption {
        return Err(refused("the last entry's keys are not the published keys"));
    }
    if last.hash() != *answer_head {
        return Err(refused("the last entry does not hash to keyLogHead"));
    }
    if last.handle != *handle {
        return Err(refused("the last entry names another handle"));
    }
    let change = if pin.is_none() {
        Some(EntryClass::First)
    } else {
        weakest
    };
    Ok((
        change,
        KeyPin {
            entry: last,
            class: last_class,
            previous_signing_key,
            last_break,
        },
    ))
}

/// The check of a pinned handle whose discovery answers `404` (no keys):
/// its log alone, the `entries` after the pin up to the log's last. `Ok`
/// with the moved pin when the log ends in a `reset` entry (and `lastBreak`
/// then names it); `Ok(None)` when there is nothing to move; `Err` for a
/// log that contradicts the pin.
pub fn check_log_alone(
    handle: &Handle,
    pin: &KeyPin,
    entries: &[Value],
    now: UnixTime,
    skew_secs: i64,
) -> Result<Option<KeyPin>, KeyLogError> {
    if entries.len() > MAX_CHECKED_ENTRIES {
        return Err(refused(format!("{} entries to check", entries.len())));
    }
    let mut previous = pin.entry.clone();
    for value in entries {
        let entry = KeyLogEntry::parse(value)?;
        entry.follows(Some(&previous), now, skew_secs)?;
        previous = entry;
    }
    if previous.handle != *handle {
        return Err(refused("the last entry names another handle"));
    }
    if previous.kind != EntryKind::Reset || previous.seq == pin.entry.seq {
        return Ok(None);
    }
    // The reset is the latest break: any break before it is older.
    Ok(Some(KeyPin {
        last_break: Some(KeyBreak {
            seq: previous.seq,
            change: EntryClass::Reset,
            at: previous.at.clone(),
            seen_at: now,
        }),
        entry: previous,
        class: None,
        // Keys before a reset are presumed lost: no grace for them.
        previous_signing_key: None,
    }))
}

/// The rotation grace of section 12: right after a proven rotation, an
/// envelope signed with the previous key still verifies while its
/// `timestamp` is at most the rotation's `at` plus the skew and `now` at
/// most `at` plus twice the skew. Never after a reset, a replaced or a
/// first entry. The key to try, if any.
pub fn grace_key(pin: &KeyPin, timestamp: UnixTime, now: UnixTime, skew_secs: i64) -> Option<&SigningKey> {
    if pin.class != Some(EntryClass::Rotated) {
        return None;
    }
    let at = pin.entry.at.instant();
    (timestamp <= at.plus_secs(skew_secs) && now <= at.plus_secs(2 * skew_secs))
        .then_some(pin.previous_signing_key.as_ref())
        .flatten()
}
