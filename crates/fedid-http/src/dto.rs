//! Wire types of the user API (camelCase) and their conversion from the
//! domain's values, in one place.

use fedid_domain::keylog::PeerPin;
use fedid_domain::services::PeerRelationship;
use fedid_domain::services::{
    ClientEntry, FlushItem, FlushReport, IdentityView, KeyLogHead, KeyLogPage, KeysInput, OutboxOutcome,
    PublishedIdentity, ResetReport,
};
use fedid_domain::{Handle, InboxMessage, Page, QueuedRevocation};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

fn empty_object() -> Box<RawValue> {
    // A stored envelope is always JSON; this only keeps a corrupt row from failing the page.
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| Box::<RawValue>::default())
}
use utoipa::ToSchema;

use crate::error::ApiError;

/// The identity object.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    #[schema(example = "42")]
    pub user_id: String,
    pub alias: Option<String>,
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{1,30}[a-z0-9]@[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[1-9][0-9]{0,4})?$")]
    pub handle: Option<String>,
    pub signing_key: Option<String>,
    pub encryption_key: Option<String>,
    /// `active` when alias and both keys are set, else `setup_required`.
    #[schema(example = "active")]
    pub state: &'static str,
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")]
    pub keys_updated_at: Option<String>,
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")]
    pub last_reset_at: Option<String>,
    pub pending_revocations: u64,
    /// The user's key log (PROTOCOL.md section 12): `{"seq": 0, "head": ""}`
    /// while it is empty.
    pub key_log: KeyLogPosition,
}

/// A key log's last seq and head.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyLogPosition {
    pub seq: u64,
    /// SHA-256 of the last entry's entry bytes, unpadded base64url.
    #[schema(pattern = r"^([A-Za-z0-9_-]{43})?$")]
    pub head: String,
}

impl From<KeyLogHead> for KeyLogPosition {
    fn from(h: KeyLogHead) -> Self {
        Self {
            seq: h.seq,
            head: h.head,
        }
    }
}

impl From<IdentityView> for Identity {
    fn from(v: IdentityView) -> Self {
        Self {
            user_id: v.record.user.to_string(),
            alias: v.record.alias.as_ref().map(|a| a.to_string()),
            handle: v.handle.as_ref().map(|h| h.to_string()),
            signing_key: v.record.signing_key.map(|k| k.to_base64url()),
            encryption_key: v.record.encryption_key.map(|k| k.to_base64url()),
            state: v.state(),
            keys_updated_at: v.record.keys_updated_at.map(|t| t.to_rfc3339()),
            last_reset_at: v.record.last_reset_at.map(|t| t.to_rfc3339()),
            pending_revocations: v.pending_revocations,
            key_log: v.key_log.into(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AliasRequest {
    /// ASCII upper case is folded to lower case.
    #[schema(example = "Alice", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,30}[A-Za-z0-9]$")]
    pub alias: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeysRequest {
    /// Ed25519 public key, 32 bytes, base64url (standard alphabet and padding accepted).
    #[schema(pattern = r"^([A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]|[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=?)$")]
    pub signing_key: String,
    /// X25519 public key, 32 bytes, base64url (standard alphabet and padding accepted).
    #[schema(pattern = r"^([A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]|[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=?)$")]
    pub encryption_key: String,
    /// A client-built key-log entry (PROTOCOL.md section 12): `seq`, `at`
    /// and `proof` together, and `rotationProof` only with them.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub seq: Option<u64>,
    #[serde(default)]
    #[schema(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
    )]
    pub at: Option<String>,
    /// The new signing key's Ed25519 signature over the entry's signed bytes, base64url.
    #[serde(default)]
    pub proof: Option<String>,
    /// The previous signing key's signature over the same bytes, for a rotation.
    #[serde(default)]
    pub rotation_proof: Option<String>,
}

impl KeysRequest {
    /// The body as the domain reads it; `400 invalid_request` naming the
    /// member missing from a client-built entry.
    pub fn input(&self) -> Result<KeysInput<'_>, ApiError> {
        let entry = match (self.seq, &self.at, &self.proof) {
            (None, None, None) if self.rotation_proof.is_none() => None,
            (Some(seq), Some(at), Some(proof)) => Some(ClientEntry {
                seq,
                at,
                proof,
                rotation_proof: self.rotation_proof.as_deref(),
            }),
            (seq, at, _) => {
                let missing = if seq.is_none() {
                    "seq"
                } else if at.is_none() {
                    "at"
                } else {
                    "proof"
                };
                return Err(ApiError::invalid_request(
                    missing,
                    "seq, at and proof come together (and rotationProof only with them)",
                ));
            }
        };
        Ok(KeysInput {
            signing_key: &self.signing_key,
            encryption_key: &self.encryption_key,
            entry,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetRequest {
    #[schema(example = "erase-all-my-data", pattern = "^erase-all-my-data$")]
    pub confirm: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Erased {
    pub relationships: u64,
    pub inbox_messages: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetResponse {
    pub revocations_queued: u64,
    pub erased: Erased,
    pub identity: Identity,
}

impl From<ResetReport> for ResetResponse {
    fn from(r: ResetReport) -> Self {
        Self {
            revocations_queued: r.revocations_queued,
            erased: Erased {
                relationships: r.relationships_erased,
                inbox_messages: r.inbox_messages_erased,
            },
            identity: r.identity.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRevocation {
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{1,30}[a-z0-9]@[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[1-9][0-9]{0,4})?$")]
    pub peer_handle: String,
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")]
    pub queued_at: String,
    pub attempts: u32,
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")]
    pub last_attempt_at: Option<String>,
    pub last_error: Option<String>,
    /// The `expires` of the long-lived REVOKE the server retries by itself
    /// (PROTOCOL.md section 11); `null` for a row only a flush delivers.
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$")]
    pub expires_at: Option<String>,
    /// When the server tries that REVOKE again by itself.
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$")]
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingPage {
    pub items: Vec<PendingRevocation>,
    pub next_after: Option<String>,
}

impl From<Page<QueuedRevocation, Handle>> for PendingPage {
    fn from(p: Page<QueuedRevocation, Handle>) -> Self {
        Self {
            items: p
                .items
                .into_iter()
                .map(|r| PendingRevocation {
                    peer_handle: r.peer.to_string(),
                    queued_at: r.queued_at.to_rfc3339(),
                    attempts: r.attempts,
                    last_attempt_at: r.last_attempt_at.map(|t| t.to_rfc3339()),
                    expires_at: r.expires_at.map(|t| t.to_rfc3339()),
                    next_attempt_at: r.next_attempt_at.map(|t| t.to_rfc3339()),
                    last_error: r.last_error,
                })
                .collect(),
            next_after: p.next_after.map(|h| h.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelationshipItem {
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{1,30}[a-z0-9]@[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[1-9][0-9]{0,4})?$")]
    pub peer_handle: String,
    /// `outgoing`, `incoming` or `active`.
    pub state: &'static str,
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")]
    pub since: String,
    /// What this server pinned of the peer's key log (PROTOCOL.md section
    /// 12); `null` until it holds a pin.
    #[schema(required = true)]
    pub peer_keys: Option<PeerKeys>,
}

/// `peerKeys` of a relationship item.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerKeys {
    pub seq: u64,
    pub head: String,
    /// `first`, `unchanged`, `rotated`, `reset` or `replaced`.
    pub change: &'static str,
    pub changed_at: String,
    /// The latest `reset` or `replaced` seen; `null` for none.
    #[schema(required = true)]
    pub last_break: Option<KeyBreakItem>,
}

/// `lastBreak` of `peerKeys`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyBreakItem {
    pub seq: u64,
    /// `reset` or `replaced`.
    pub change: &'static str,
    /// The entry's `at`, as the peer wrote it.
    pub at: String,
    pub seen_at: String,
}

impl From<&PeerPin> for PeerKeys {
    fn from(pin: &PeerPin) -> Self {
        Self {
            seq: pin.pin.entry.seq(),
            head: pin.pin.head(),
            change: pin.change.as_str(),
            changed_at: pin.changed_at.to_rfc3339(),
            last_break: pin.pin.last_break.as_ref().map(|b| KeyBreakItem {
                seq: b.seq,
                change: b.change.as_str(),
                at: b.at.as_str().to_owned(),
                seen_at: b.seen_at.to_rfc3339(),
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelationshipPage {
    pub items: Vec<RelationshipItem>,
    pub next_after: Option<String>,
}

impl From<Page<PeerRelationship, Handle>> for RelationshipPage {
    fn from(p: Page<PeerRelationship, Handle>) -> Self {
        Self {
            items: p
                .items
                .into_iter()
                .map(|r| RelationshipItem {
                    peer_handle: r.relationship.peer.to_string(),
                    state: r.relationship.state.as_str(),
                    since: r.relationship.since.to_rfc3339(),
                    peer_keys: r.peer_keys.as_ref().map(PeerKeys::from),
                })
                .collect(),
            next_after: p.next_after.map(|h| h.to_string()),
        }
    }
}

fn default_version() -> u64 {
    1
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlushItemRequest {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,30}[A-Za-z0-9]@[A-Za-z0-9.-]{1,253}(:[1-9][0-9]{0,4})?$")]
    pub peer_handle: String,
    /// Ed25519 signature, 64 bytes, base64url.
    pub signature: String,
    #[serde(default)]
    pub nonce: Option<String>,
    #[schema(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
    )]
    pub timestamp: String,
    #[serde(default = "default_version")]
    #[schema(minimum = 1)]
    pub message_version: u64,
    /// Makes the item a long-lived REVOKE with payload `{"expires": ...}`
    /// (PROTOCOL.md section 11), which the server retries by itself.
    #[serde(default)]
    #[schema(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
    )]
    pub expires: Option<String>,
}

impl From<FlushItemRequest> for FlushItem {
    fn from(i: FlushItemRequest) -> Self {
        Self {
            peer_handle: i.peer_handle,
            signature: i.signature,
            nonce: i.nonce,
            timestamp: i.timestamp,
            message_version: i.message_version,
            expires: i.expires,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FlushRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub items: Vec<FlushItemRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlushResultItem {
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{1,30}[a-z0-9]@[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[1-9][0-9]{0,4})?$")]
    pub peer_handle: String,
    /// `not_queued`, `in_progress`, `invalid_item`, `invalid_signature`, `delivered` or `failed`.
    pub outcome: &'static str,
    pub error: Option<String>,
    /// For a long-lived item that failed: when the server tries again by
    /// itself, `null` when it will not (a final refusal); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub next_attempt_at: Option<Option<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlushResponse {
    pub results: Vec<FlushResultItem>,
    pub delivered: u64,
    pub failed: u64,
    pub remaining: u64,
}

impl From<FlushReport> for FlushResponse {
    fn from(r: FlushReport) -> Self {
        Self {
            results: r
                .results
                .into_iter()
                .map(|x| FlushResultItem {
                    peer_handle: x.peer.to_string(),
                    outcome: x.outcome.as_str(),
                    error: x.outcome.error().map(str::to_owned),
                    next_attempt_at: x.next_attempt_at.map(|next| next.map(|t| t.to_rfc3339())),
                })
                .collect(),
            delivered: r.delivered,
            failed: r.failed,
            remaining: r.remaining,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxRequestBody {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,30}[A-Za-z0-9]@[A-Za-z0-9.-]{1,253}(:[1-9][0-9]{0,4})?$")]
    pub to: String,
    #[schema(example = "RELATIONSHIP_REQUEST")]
    pub message_type: String,
    #[serde(default = "default_version")]
    #[schema(minimum = 1)]
    pub message_version: u64,
    #[serde(default)]
    pub nonce: Option<String>,
    #[schema(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
    )]
    pub timestamp: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Map<String, Value>>,
    pub signature: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxResponse {
    /// `delivered`, or `queued` for a REVOKE whose delivery failed.
    pub outcome: &'static str,
    /// For a queued long-lived REVOKE: when the server tries it again by
    /// itself (PROTOCOL.md section 11).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

impl From<OutboxOutcome> for OutboxResponse {
    fn from(outcome: OutboxOutcome) -> Self {
        match outcome {
            OutboxOutcome::Delivered => Self {
                outcome: "delivered",
                next_attempt_at: None,
            },
            OutboxOutcome::Queued { next_attempt_at } => Self {
                outcome: "queued",
                next_attempt_at: next_attempt_at.map(|t| t.to_rfc3339()),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxItem {
    pub id: String,
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")]
    pub received_at: String,
    /// The envelope exactly as signed, in wire form.
    #[schema(value_type = EnvelopeDocument)]
    pub envelope: Box<RawValue>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxPage {
    pub items: Vec<InboxItem>,
    pub next_after: Option<String>,
}

impl From<Page<InboxMessage, i64>> for InboxPage {
    fn from(p: Page<InboxMessage, i64>) -> Self {
        Self {
            items: p
                .items
                .into_iter()
                .map(|m| InboxItem {
                    id: m.id.to_string(),
                    received_at: m.received_at.to_rfc3339(),
                    envelope: RawValue::from_string(m.envelope).unwrap_or_else(|_| empty_object()),
                })
                .collect(),
            next_after: p.next_after.map(|id| id.to_string()),
        }
    }
}

/// The status of an inbox answer or an operations probe.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "accepted")]
    pub status: &'static str,
}

/// The key discovery answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedKeys {
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{1,30}[a-z0-9]@[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[1-9][0-9]{0,4})?$")]
    pub handle: String,
    pub signing_key: String,
    pub encryption_key: String,
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")]
    pub keys_updated_at: Option<String>,
    /// The key log's last seq (PROTOCOL.md section 12); absent while empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_log_seq: Option<u64>,
    /// Its head; absent while empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9_-]{43}$")]
    pub key_log_head: Option<String>,
}

impl From<PublishedIdentity> for PublishedKeys {
    fn from(p: PublishedIdentity) -> Self {
        let logged = p.key_log.seq > 0;
        Self {
            handle: p.handle.to_string(),
            signing_key: p.signing_key.to_base64url(),
            encryption_key: p.encryption_key.to_base64url(),
            keys_updated_at: p.keys_updated_at.map(|t| t.to_rfc3339()),
            key_log_seq: logged.then_some(p.key_log.seq),
            key_log_head: logged.then_some(p.key_log.head),
        }
    }
}

/// A page of a user's key log (`GET /federation/users/{alias}/keylog`).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyLogPageDocument {
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{1,30}[a-z0-9]@[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[1-9][0-9]{0,4})?$")]
    pub handle: String,
    /// The entries after `after`, in order, at most 100 (PROTOCOL.md section 12).
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<Box<RawValue>>,
    /// The whole log's last seq.
    pub seq: u64,
    /// The whole log's head (`""` while empty).
    #[schema(pattern = r"^([A-Za-z0-9_-]{43})?$")]
    pub head: String,
}

impl From<KeyLogPage> for KeyLogPageDocument {
    fn from(p: KeyLogPage) -> Self {
        Self {
            handle: p.handle.to_string(),
            // Stored entry bytes are JSON: served exactly as stored.
            entries: p
                .entries
                .into_iter()
                .filter_map(|e| RawValue::from_string(e).ok())
                .collect(),
            seq: p.head.seq,
            head: p.head.head,
        }
    }
}

/// A signed envelope (PROTOCOL.md section 3) as `POST /federation/inbox`
/// takes it and the inbox returns it. Only the OpenAPI document uses this
/// type: the domain reads envelopes with its own strict parser, and rules
/// that a schema cannot state (I-JSON, the signature, `from` and `to`
/// differing, a real calendar date) are refused as `invalid_envelope`.
#[derive(ToSchema)]
#[schema(as = Envelope)]
#[allow(dead_code)]
pub struct EnvelopeDocument {
    /// Default 1; an integer other than 1 is `unsupported_protocol_version`.
    #[schema(nullable = false)]
    protocol_version: Option<i64>,
    /// One of `message_type` and `type` is required; equal when both are
    /// present. Version 1 knows `RELATIONSHIP_REQUEST`,
    /// `RELATIONSHIP_ACCEPT`, `RELATIONSHIP_REVOKE` and `MESSAGE`.
    #[schema(nullable = false, pattern = "^[A-Z_]{1,64}$")]
    message_type: Option<String>,
    /// The older name of `message_type`.
    #[schema(nullable = false, pattern = "^[A-Z_]{1,64}$")]
    r#type: Option<String>,
    /// Default 1.
    #[schema(nullable = false, minimum = 1)]
    message_version: Option<u64>,
    /// Default `""` (none); else 16 to 128 characters.
    #[schema(nullable = false, pattern = "^([A-Za-z0-9_-]{16,128})?$")]
    nonce: Option<String>,
    /// The sender's canonical handle (PROTOCOL.md section 1).
    #[schema(
        pattern = r"^[a-z0-9]([a-z0-9._-]{1,30})[a-z0-9]@[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[1-9][0-9]{0,4})?$"
    )]
    from: String,
    /// The recipient's canonical handle, on this server's domain.
    #[schema(
        pattern = r"^[a-z0-9]([a-z0-9._-]{1,30})[a-z0-9]@[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[1-9][0-9]{0,4})?$"
    )]
    to: String,
    /// RFC 3339 with an upper-case `T`, and `Z` or an offset.
    #[schema(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
    )]
    timestamp: String,
    /// Default `{}`; nesting depth at most 32.
    #[schema(value_type = Object, required = false)]
    payload: Option<serde_json::Map<String, serde_json::Value>>,
    /// Ed25519 over the signed bytes (PROTOCOL.md section 4), base64url.
    #[schema(pattern = "^[A-Za-z0-9_=-]+$")]
    signature: String,
}
