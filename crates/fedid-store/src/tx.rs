//! The `Tx` port over one diesel connection inside a transaction. The same
//! query code serves SQLite and PostgreSQL (the `impl_tx!` macro); only row
//! locking differs: PostgreSQL locks the user row with `FOR UPDATE`, SQLite
//! needs nothing because its write transactions start `IMMEDIATE`.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use fedid_domain::keylog::{KeyConflict, PeerPin, PinTarget};
use fedid_domain::ports::{inbox_batch_view_by_steps, StoreError, Tx};
use fedid_domain::{
    Alias, AliasChanges, AuditRecord, Domain, EncryptionKey, Handle, IdentityRecord, InboxBatchView, InboxMessage,
    NewMessage, PeerDomainHealth, QueuedRevocation, Relationship, RelationshipState, ReplayRecord, SigningKey,
    UnixTime, UserId,
};

use crate::command::{
    AdjustInboxCount, InboxBatchRow, InsertCountedMessages, InsertReplays, MessageColumns, ReadInboxBatch,
    ReplayColumns, ReplayLookup, ReplaysInWay, StoreInboxBatch, Unsolicited, WithNonce, WithoutNonce,
};
use crate::rows::*;
use crate::schema::*;

pub(crate) struct DbTx<'c, C> {
    pub conn: &'c mut C,
    /// Lock rows read for update (write transactions on PostgreSQL).
    pub lock_rows: bool,
    /// Set when the database asked for the transaction to be retried.
    pub retry: bool,
}

impl<C> DbTx<'_, C> {
    fn db<T>(&mut self, result: QueryResult<T>) -> Result<T, StoreError> {
        result.map_err(|e| {
            // Conflicts that PostgreSQL resolves by failing one side: the
            // writer runs that unit again.
            self.retry |= match &e {
                DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
                DieselError::DatabaseError(_, info) => info.message().contains("deadlock"),
                _ => false,
            };
            StoreError::Unavailable(e.to_string())
        })
    }
}

macro_rules! no_lock {
    ($self:ident, $query:expr) => {
        $query.get_result::<UserRow>($self.conn).optional()
    };
}

macro_rules! pg_lock {
    ($self:ident, $query:expr) => {
        if $self.lock_rows {
            $query.for_update().get_result::<UserRow>($self.conn).optional()
        } else {
            $query.get_result::<UserRow>($self.conn).optional()
        }
    };
}

/// Loads due revocation rows: SQLite's write transaction already excludes
/// every other writer.
macro_rules! load_due {
    ($self:ident, $query:expr) => {
        $query.load::<RevocationRow>($self.conn)
    };
}

/// Loads due revocation rows on PostgreSQL, skipping rows another
/// instance's transaction holds: two deliverers never claim one row.
macro_rules! load_due_skip_locked {
    ($self:ident, $query:expr) => {
        $query.for_update().skip_locked().load::<RevocationRow>($self.conn)
    };
}

/// The user's last key-log entry, in one statement: the row whose seq is
/// the user's highest, both found by the primary key. Not `ORDER BY seq
/// DESC LIMIT ?`: SQLite prepared that again on every run, the bound LIMIT
/// taking part in its plan (docs/performance.md).
macro_rules! last_key_log_entry {
    ($user:expr) => {{
        let all = diesel::alias!(key_log as all_entries);
        let last_seq = all
            .filter(all.field(key_log::user_id).eq($user.0))
            .select(diesel::dsl::max(all.field(key_log::seq)))
            .single_value();
        key_log::table
            .filter(key_log::user_id.eq($user.0))
            .filter(key_log::seq.nullable().eq(last_seq))
    }};
}

// What each backend does its own way with a batch of rows. SQLite runs
// in-process: a statement per row costs no round trip, and each stays
// prepared. PostgreSQL takes a batch in one statement, one round trip.

impl DbTx<'_, SqliteConnection> {
    /// Stores `messages` and raises their user's inbox count; their ids.
    fn store_messages(&mut self, user: UserId, messages: &[NewMessage<'_>]) -> Result<Vec<i64>, StoreError> {
        let mut ids = Vec::with_capacity(messages.len());
        for message in messages {
            let id = diesel::insert_into(inbox_messages::table)
                .values((
                    inbox_messages::user_id.eq(user.0),
                    inbox_messages::received_at.eq(nanos(message.received_at)),
                    inbox_messages::envelope.eq(message.envelope),
                    // '' for consented messages: the sender index is
                    // partial, so the common case pays nothing for it.
                    inbox_messages::sender.eq(message.unsolicited_from.unwrap_or("")),
                ))
                .returning(inbox_messages::id)
                .get_result::<i64>(self.conn);
            ids.push(self.db(id)?);
        }
        if !ids.is_empty() {
            self.adjust_inbox_count(user, ids.len() as i64)?;
        }
        Ok(ids)
    }

    fn replays_in_way_of(&mut self, records: &[ReplayRecord]) -> Result<Vec<ReplayRecord>, StoreError> {
        let mut found = Vec::with_capacity(records.len());
        for record in records {
            found.extend(self.replay_in_way(record)?.map(|(_, earlier)| earlier));
        }
        Ok(found)
    }

    /// Inserts each record unless a row is in its way; those not inserted.
    fn insert_replays<'r>(&mut self, records: &'r [ReplayRecord]) -> Result<Vec<&'r ReplayRecord>, StoreError> {
        let mut missing = Vec::new();
        for record in records {
            if !self.insert_replay(record)? {
                missing.push(record);
            }
        }
        Ok(missing)
    }
}

impl DbTx<'_, PgConnection> {
    /// Stores `messages` and raises their user's inbox count, in one
    /// statement; their ids.
    fn store_messages(&mut self, user: UserId, messages: &[NewMessage<'_>]) -> Result<Vec<i64>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let ids = InsertCountedMessages {
            messages: MessageColumns::of(user, messages),
        }
        .load::<i64>(self.conn);
        self.db(ids)
    }

    fn replays_in_way_of(&mut self, records: &[ReplayRecord]) -> Result<Vec<ReplayRecord>, StoreError> {
        let rows = ReplaysInWay {
            lookup: ReplayLookup::of(records),
        }
        .load::<(Vec<u8>, String, String, i64)>(self.conn);
        self.db(rows)?.into_iter().map(replay_row).collect()
    }

    /// Inserts each record unless a row is in its way, in one statement;
    /// those not inserted.
    fn insert_replays<'r>(&mut self, records: &'r [ReplayRecord]) -> Result<Vec<&'r ReplayRecord>, StoreError> {
        let inserted = InsertReplays {
            replays: ReplayColumns::of(records),
        }
        .load::<Vec<u8>>(self.conn);
        let inserted = self.db(inserted)?;
        Ok(not_inserted(records, &inserted))
    }
}

/// `Tx` for one backend: `$lock` locks the rows a write reads, `$claim`
/// loads due revocations, and `$own` are the methods this backend does its
/// own way instead of the port's provided ones.
macro_rules! impl_tx {
    ($conn:ty, $lock:ident, $claim:ident, { $($own:item)* }) => {
        impl DbTx<'_, $conn> {
            /// Inserts `record` unless a row is in its way; whether it did.
            fn insert_replay(&mut self, record: &ReplayRecord) -> Result<bool, StoreError> {
                let inserted = diesel::insert_into(replay_keys::table)
                    .values((
                        replay_keys::replay_key.eq(record.key.as_bytes().as_slice()),
                        replay_keys::sender.eq(record.sender.as_str()),
                        replay_keys::nonce.eq(record.nonce.as_str()),
                        replay_keys::expires_at.eq(nanos(record.expires_at)),
                    ))
                    .on_conflict_do_nothing()
                    .execute(self.conn);
                self.db(inserted).map(|n| n > 0)
            }

            /// The row in the way of `record` (see `Tx::replays_in_way`)
            /// and its id. The literal predicates let the planner use the
            /// matching partial index.
            fn replay_in_way(&mut self, record: &ReplayRecord) -> Result<Option<(i64, ReplayRecord)>, StoreError> {
                let key = record.key.as_bytes().as_slice();
                let columns = (
                    replay_keys::id,
                    replay_keys::replay_key,
                    replay_keys::sender,
                    replay_keys::nonce,
                    replay_keys::expires_at,
                );
                let found = if record.nonce.is_empty() {
                    replay_keys::table
                        .filter(replay_keys::replay_key.eq(key))
                        .filter(WithoutNonce)
                        .select(columns)
                        .get_result::<(i64, Vec<u8>, String, String, i64)>(self.conn)
                } else {
                    replay_keys::table
                        .filter(replay_keys::sender.eq(record.sender.as_str()))
                        .filter(replay_keys::nonce.eq(record.nonce.as_str()))
                        .filter(WithNonce)
                        .select(columns)
                        .get_result::<(i64, Vec<u8>, String, String, i64)>(self.conn)
                }
                .optional();
                self.db(found)?
                    .map(|(id, key, sender, nonce, expires_at)| Ok((id, replay_row((key, sender, nonce, expires_at))?)))
                    .transpose()
            }

            /// Records `record` after its first insert met a row in its
            /// way: an expired row is replaced. A live one is another
            /// instance's, recorded since the caller looked: the
            /// transaction is run again (PostgreSQL) rather than the key
            /// claimed.
            fn replace_expired_replay(&mut self, record: &ReplayRecord, now: UnixTime) -> Result<(), StoreError> {
                // An expired row in the way goes; the insert is tried again
                // (also when the row went meanwhile, pruned by another
                // instance), and fails only on a live row.
                if let Some((id, earlier)) = self.replay_in_way(record)? {
                    if earlier.expires_at <= now {
                        let deleted = diesel::delete(replay_keys::table.find(id)).execute(self.conn);
                        self.db(deleted)?;
                    }
                }
                if self.insert_replay(record)? {
                    return Ok(());
                }
                self.retry = true;
                Err(StoreError::Unavailable(
                    "a replay record was recorded by another transaction meanwhile".into(),
                ))
            }

            fn adjust_inbox_count(&mut self, user: UserId, by: i64) -> Result<(), StoreError> {
                let done = AdjustInboxCount { user: user.0, by }.execute(self.conn);
                self.db(done).map(|_| ())
            }
        }

        impl Tx for DbTx<'_, $conn> {
            fn create_user(&mut self, at: UnixTime) -> Result<UserId, StoreError> {
                let id = diesel::insert_into(users::table)
                    .values(users::created_at.eq(nanos(at)))
                    .returning(users::id)
                    .get_result::<i64>(self.conn);
                self.db(id).map(UserId)
            }

            fn identity(&mut self, user: UserId) -> Result<Option<IdentityRecord>, StoreError> {
                let row = $lock!(
                    self,
                    users::table
                        .filter(users::id.eq(user.0))
                        .select(UserRow::as_select())
                );
                self.db(row)?.map(UserRow::into_record).transpose()
            }

            fn insert_session(
                &mut self,
                user: UserId,
                hash: &[u8; 32],
                expires_at: UnixTime,
            ) -> Result<(), StoreError> {
                let done = diesel::insert_into(sessions::table)
                    .values((
                        sessions::token_hash.eq(hash.as_slice()),
                        sessions::user_id.eq(user.0),
                        sessions::expires_at.eq(nanos(expires_at)),
                    ))
                    .execute(self.conn);
                self.db(done).map(|_| ())
            }

            fn session_user(&mut self, hash: &[u8; 32], now: UnixTime) -> Result<Option<UserId>, StoreError> {
                let user = sessions::table
                    .filter(sessions::token_hash.eq(hash.as_slice()))
                    .filter(sessions::revoked_at.is_null())
                    .filter(sessions::expires_at.gt(nanos(now)))
                    .select(sessions::user_id)
                    .get_result::<i64>(self.conn)
                    .optional();
                self.db(user).map(|u| u.map(UserId))
            }

            fn revoke_sessions(&mut self, user: UserId, now: UnixTime) -> Result<u64, StoreError> {
                let n = diesel::update(
                    sessions::table
                        .filter(sessions::user_id.eq(user.0))
                        .filter(sessions::revoked_at.is_null())
                        .filter(sessions::expires_at.gt(nanos(now))),
                )
                .set(sessions::revoked_at.eq(nanos(now)))
                .execute(self.conn);
                self.db(n).map(|n| n as u64)
            }

            fn identity_by_alias(&mut self, alias: &Alias) -> Result<Option<IdentityRecord>, StoreError> {
                let row = $lock!(
                    self,
                    users::table
                        .filter(users::alias.eq(alias.as_str()))
                        .select(UserRow::as_select())
                );
                self.db(row)?.map(UserRow::into_record).transpose()
            }

            fn alias_holder(&mut self, alias: &Alias) -> Result<Option<UserId>, StoreError> {
                let holder = alias_history::table
                    .filter(alias_history::alias.eq(alias.as_str()))
                    .select(alias_history::user_id)
                    .get_result::<i64>(self.conn)
                    .optional();
                self.db(holder).map(|h| h.map(UserId))
            }

            fn set_alias(&mut self, user: UserId, alias: &Alias, at: UnixTime) -> Result<(), StoreError> {
                if self.alias_holder(alias)?.is_some_and(|holder| holder != user) {
                    return Err(StoreError::AliasTaken);
                }
                let recorded = diesel::insert_into(alias_history::table)
                    .values((
                        alias_history::alias.eq(alias.as_str()),
                        alias_history::user_id.eq(user.0),
                    ))
                    .on_conflict_do_nothing()
                    .execute(self.conn);
                self.db(recorded)?;
                let set = diesel::update(users::table.filter(users::id.eq(user.0)))
                    .set(users::alias.eq(alias.as_str()))
                    .execute(self.conn);
                match set {
                    Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                        return Err(StoreError::AliasTaken)
                    }
                    other => self.db(other)?,
                };
                let change = diesel::insert_into(alias_changes::table)
                    .values((alias_changes::user_id.eq(user.0), alias_changes::at.eq(nanos(at))))
                    .execute(self.conn);
                self.db(change).map(|_| ())
            }

            fn alias_changes(&mut self, user: UserId, since: UnixTime) -> Result<AliasChanges, StoreError> {
                let mine = || alias_changes::table.filter(alias_changes::user_id.eq(user.0));
                let ever = mine().count().get_result::<i64>(self.conn);
                let ever = self.db(ever)?;
                let recent = mine()
                    .filter(alias_changes::at.ge(nanos(since)))
                    .select((diesel::dsl::count_star(), diesel::dsl::min(alias_changes::at)))
                    .get_result::<(i64, Option<i64>)>(self.conn);
                let (recent, oldest) = self.db(recent)?;
                Ok(AliasChanges {
                    ever: ever as u64,
                    recent: recent as u64,
                    oldest_recent: oldest.map(|n| UnixTime::from_nanos(i128::from(n))),
                })
            }

            fn set_keys(
                &mut self,
                user: UserId,
                signing: &SigningKey,
                encryption: &EncryptionKey,
                at: UnixTime,
            ) -> Result<(), StoreError> {
                let done = diesel::update(users::table.filter(users::id.eq(user.0)))
                    .set((
                        users::signing_key.eq(Some(signing.as_bytes().as_slice())),
                        users::encryption_key.eq(Some(encryption.as_bytes().as_slice())),
                        users::keys_updated_at.eq(Some(nanos(at))),
                    ))
                    .execute(self.conn);
                self.db(done).map(|_| ())
            }

            fn clear_keys(&mut self, user: UserId, at: UnixTime) -> Result<(), StoreError> {
                let done = diesel::update(users::table.filter(users::id.eq(user.0)))
                    .set((
                        users::signing_key.eq(None::<Vec<u8>>),
                        users::encryption_key.eq(None::<Vec<u8>>),
                        users::keys_updated_at.eq(None::<i64>),
                        users::last_reset_at.eq(Some(nanos(at))),
                    ))
                    .execute(self.conn);
                self.db(done).map(|_| ())
            }

            fn relationship(&mut self, user: UserId, peer: &Handle) -> Result<Option<Relationship>, StoreError> {
                let row = relationships::table
                    .find((user.0, peer.as_str()))
                    .select(RelationshipRow::as_select())
                    .get_result(self.conn)
                    .optional();
                self.db(row)?.map(RelationshipRow::into_record).transpose()
            }

            fn put_relationship(&mut self, user: UserId, relationship: &Relationship) -> Result<(), StoreError> {
                let row = RelationshipRow::new(user, relationship);
                let done = diesel::insert_into(relationships::table)
                    .values(&row)
                    .on_conflict((relationships::user_id, relationships::peer))
                    .do_update()
                    .set((
                        relationships::state.eq(&row.state),
                        relationships::since.eq(row.since),
                    ))
                    .execute(self.conn);
                self.db(done).map(|_| ())
            }

            fn delete_relationship(&mut self, user: UserId, peer: &Handle) -> Result<bool, StoreError> {
                let n = diesel::delete(relationships::table.find((user.0, peer.as_str()))).execute(self.conn);
                self.db(n).map(|n| n > 0)
            }

            fn delete_relationships(&mut self, user: UserId) -> Result<Vec<Handle>, StoreError> {
                let peers = diesel::delete(relationships::table.filter(relationships::user_id.eq(user.0)))
                    .returning(relationships::peer)
                    .get_results::<String>(self.conn);
                let mut peers = self.db(peers)?;
                peers.sort();
                peers.iter().map(|p| handle(p)).collect()
            }

            fn relationships_after(
                &mut self,
                user: UserId,
                after: Option<&Handle>,
                limit: usize,
            ) -> Result<Vec<Relationship>, StoreError> {
                let rows = relationships::table
                    .filter(relationships::user_id.eq(user.0))
                    .filter(relationships::peer.gt(after.map_or("", |h| h.as_str())))
                    .order(relationships::peer.asc())
                    .limit(limit as i64)
                    .select(RelationshipRow::as_select())
                    .load(self.conn);
                self.db(rows)?
                    .into_iter()
                    .map(RelationshipRow::into_record)
                    .collect()
            }

            fn count_relationships(
                &mut self,
                user: UserId,
                state: Option<RelationshipState>,
            ) -> Result<u64, StoreError> {
                let mut query = relationships::table
                    .filter(relationships::user_id.eq(user.0))
                    .into_boxed();
                if let Some(state) = state {
                    query = query.filter(relationships::state.eq(state.as_str()));
                }
                let n = query.count().get_result::<i64>(self.conn);
                self.db(n).map(|n| n as u64)
            }

            fn insert_messages(&mut self, user: UserId, messages: &[NewMessage<'_>]) -> Result<Vec<i64>, StoreError> {
                self.store_messages(user, messages)
            }

            fn count_unsolicited(&mut self, user: UserId, from: &str) -> Result<u64, StoreError> {
                let n = inbox_messages::table
                    .filter(inbox_messages::user_id.eq(user.0))
                    .filter(inbox_messages::sender.eq(from))
                    .filter(Unsolicited)
                    .count()
                    .get_result::<i64>(self.conn);
                self.db(n).map(|n| n as u64)
            }

            fn delete_messages(&mut self, user: UserId) -> Result<u64, StoreError> {
                let n =
                    diesel::delete(inbox_messages::table.filter(inbox_messages::user_id.eq(user.0))).execute(self.conn);
                let n = self.db(n)?;
                let zero = diesel::update(users::table.find(user.0))
                    .set(users::inbox_count.eq(0))
                    .execute(self.conn);
                self.db(zero)?;
                Ok(n as u64)
            }

            fn messages_after(
                &mut self,
                user: UserId,
                after: Option<i64>,
                limit: usize,
            ) -> Result<Vec<InboxMessage>, StoreError> {
                let rows = inbox_messages::table
                    .filter(inbox_messages::user_id.eq(user.0))
                    .filter(inbox_messages::id.gt(after.unwrap_or(i64::MIN)))
                    .order(inbox_messages::id.asc())
                    .limit(limit as i64)
                    .select(MessageRow::as_select())
                    .load(self.conn);
                Ok(self.db(rows)?.into_iter().map(MessageRow::into_record).collect())
            }

            fn delete_message(&mut self, user: UserId, id: i64) -> Result<bool, StoreError> {
                let n = diesel::delete(
                    inbox_messages::table
                        .filter(inbox_messages::id.eq(id))
                        .filter(inbox_messages::user_id.eq(user.0)),
                )
                .execute(self.conn);
                let deleted = self.db(n)? > 0;
                if deleted {
                    self.adjust_inbox_count(user, -1)?;
                }
                Ok(deleted)
            }

            fn queued(&mut self, user: UserId, peer: &Handle) -> Result<Option<QueuedRevocation>, StoreError> {
                let row = revocations::table
                    .find((user.0, peer.as_str()))
                    .select(RevocationRow::as_select())
                    .get_result(self.conn)
                    .optional();
                self.db(row)?.map(RevocationRow::into_record).transpose()
            }

            fn enqueue(&mut self, user: UserId, row: &QueuedRevocation) -> Result<bool, StoreError> {
                let n = diesel::insert_into(revocations::table)
                    .values(&RevocationRow::new(user, row))
                    .on_conflict_do_nothing()
                    .execute(self.conn);
                self.db(n).map(|n| n > 0)
            }

            fn update_queued(&mut self, user: UserId, row: &QueuedRevocation) -> Result<(), StoreError> {
                let r = RevocationRow::new(user, row);
                let n = diesel::update(revocations::table.find((user.0, row.peer.as_str())))
                    .set((
                        revocations::attempts.eq(r.attempts),
                        revocations::last_attempt_at.eq(r.last_attempt_at),
                        revocations::last_error.eq(&r.last_error),
                        revocations::claimed_until.eq(r.claimed_until),
                        revocations::envelope.eq(&r.envelope),
                        revocations::expires_at.eq(r.expires_at),
                        revocations::next_attempt_at.eq(r.next_attempt_at),
                        revocations::retries.eq(r.retries),
                        revocations::unauthorized.eq(r.unauthorized),
                    ))
                    .execute(self.conn);
                self.db(n).map(|_| ())
            }

            fn claim_due(
                &mut self,
                now: UnixTime,
                until: UnixTime,
                limit: usize,
            ) -> Result<Vec<(UserId, QueuedRevocation)>, StoreError> {
                let now_nanos = nanos(now);
                let due = revocations::table
                    .filter(revocations::next_attempt_at.le(now_nanos))
                    .filter(
                        revocations::claimed_until
                            .is_null()
                            .or(revocations::claimed_until.le(now_nanos)),
                    )
                    .order(revocations::next_attempt_at.asc())
                    .limit(limit as i64)
                    .select(RevocationRow::as_select());
                let rows = $claim!(self, due);
                let rows = self.db(rows)?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in rows {
                    let done = diesel::update(revocations::table.find((row.user_id, &row.peer)))
                        .set(revocations::claimed_until.eq(nanos(until)))
                        .execute(self.conn);
                    self.db(done)?;
                    let user = UserId(row.user_id);
                    let mut record = row.into_record()?;
                    record.claimed_until = Some(until);
                    claimed.push((user, record));
                }
                Ok(claimed)
            }

            fn key_log_head(&mut self, user: UserId) -> Result<Option<(u64, String)>, StoreError> {
                // Every identity GET and discovery reads it.
                let head = last_key_log_entry!(user)
                    .select((key_log::seq, key_log::hash))
                    .get_result::<(i64, String)>(self.conn)
                    .optional();
                Ok(self.db(head)?.map(|(seq, hash)| (seq.max(0) as u64, hash)))
            }

            fn key_log_last(&mut self, user: UserId) -> Result<Option<String>, StoreError> {
                let entry = last_key_log_entry!(user)
                    .select(key_log::entry)
                    .get_result::<String>(self.conn)
                    .optional();
                self.db(entry)
            }

            fn key_log_append(
                &mut self,
                user: UserId,
                seq: u64,
                entry: &str,
                hash: &str,
                at: UnixTime,
            ) -> Result<bool, StoreError> {
                let n = diesel::insert_into(key_log::table)
                    .values((
                        key_log::user_id.eq(user.0),
                        key_log::seq.eq(i64::try_from(seq).unwrap_or(i64::MAX)),
                        key_log::entry.eq(entry),
                        key_log::hash.eq(hash),
                        key_log::appended_at.eq(nanos(at)),
                    ))
                    .on_conflict_do_nothing()
                    .execute(self.conn);
                self.db(n).map(|n| n > 0)
            }

            fn key_log_after(&mut self, user: UserId, after: u64, limit: usize) -> Result<Vec<String>, StoreError> {
                let entries = key_log::table
                    .filter(key_log::user_id.eq(user.0))
                    .filter(key_log::seq.gt(i64::try_from(after).unwrap_or(i64::MAX)))
                    .order(key_log::seq.asc())
                    .limit(limit as i64)
                    .select(key_log::entry)
                    .load::<String>(self.conn);
                self.db(entries)
            }

            fn key_log_appended_since(&mut self, user: UserId, since: UnixTime) -> Result<u64, StoreError> {
                let n = key_log::table
                    .filter(key_log::user_id.eq(user.0))
                    .filter(key_log::appended_at.ge(nanos(since)))
                    .count()
                    .get_result::<i64>(self.conn);
                self.db(n).map(|n| n.max(0) as u64)
            }

            fn users_missing_key_log(&mut self, limit: usize) -> Result<Vec<UserId>, StoreError> {
                let users = users::table
                    .filter(users::alias.is_not_null())
                    .filter(users::signing_key.is_not_null())
                    .filter(users::encryption_key.is_not_null())
                    .filter(diesel::dsl::not(diesel::dsl::exists(
                        key_log::table.filter(key_log::user_id.eq(users::id)),
                    )))
                    .order(users::id.asc())
                    .limit(limit as i64)
                    .select(users::id)
                    .load::<i64>(self.conn);
                Ok(self.db(users)?.into_iter().map(UserId).collect())
            }

            fn peer_domain(&mut self, domain: &Domain) -> Result<Option<PeerDomainHealth>, StoreError> {
                let row = peer_domains::table
                    .find(domain.as_str())
                    .select(PeerDomainRow::as_select())
                    .get_result(self.conn)
                    .optional();
                self.db(row)?.map(PeerDomainRow::into_record).transpose()
            }

            fn peer_domains(&mut self) -> Result<Vec<PeerDomainHealth>, StoreError> {
                let rows = peer_domains::table
                    .order(peer_domains::domain.asc())
                    .select(PeerDomainRow::as_select())
                    .load(self.conn);
                self.db(rows)?
                    .into_iter()
                    .map(PeerDomainRow::into_record)
                    .collect()
            }

            fn record_peer_outcome(
                &mut self,
                domain: &Domain,
                failure: Option<&str>,
                at: UnixTime,
            ) -> Result<(), StoreError> {
                let at = nanos(at);
                let known = peer_domains::table
                    .find(domain.as_str())
                    .select(PeerDomainRow::as_select())
                    .get_result(self.conn)
                    .optional();
                let known = self.db(known)?;
                let (failures, failing_since) = known
                    .as_ref()
                    .map_or((0, None), |row| (row.consecutive_failures, row.failing_since));
                let row = PeerDomainRow {
                    domain: domain.as_str().to_owned(),
                    consecutive_failures: if failure.is_some() {
                        failures.saturating_add(1)
                    } else {
                        0
                    },
                    last_success_at: if failure.is_none() {
                        Some(at)
                    } else {
                        known.as_ref().and_then(|row| row.last_success_at)
                    },
                    last_failure_at: if failure.is_some() {
                        Some(at)
                    } else {
                        known.as_ref().and_then(|row| row.last_failure_at)
                    },
                    last_failure: match failure {
                        Some(reason) => Some(reason.to_owned()),
                        None => known.as_ref().and_then(|row| row.last_failure.clone()),
                    },
                    failing_since: failure.map(|_| failing_since.unwrap_or(at)),
                    lease_until: known.as_ref().and_then(|row| row.lease_until),
                };
                // An upsert: two instances may meet a new domain at once.
                // (Health is a heuristic: of two concurrent failures on
                // PostgreSQL, one may count once.)
                let done = diesel::insert_into(peer_domains::table)
                    .values(&row)
                    .on_conflict(peer_domains::domain)
                    .do_update()
                    .set((
                        peer_domains::consecutive_failures.eq(row.consecutive_failures),
                        peer_domains::last_success_at.eq(row.last_success_at),
                        peer_domains::last_failure_at.eq(row.last_failure_at),
                        peer_domains::last_failure.eq(&row.last_failure),
                        peer_domains::failing_since.eq(row.failing_since),
                    ))
                    .execute(self.conn);
                self.db(done).map(|_| ())
            }

            fn lease_peer_domain(
                &mut self,
                domain: &Domain,
                now: UnixTime,
                until: UnixTime,
            ) -> Result<bool, StoreError> {
                let now = nanos(now);
                let taken = diesel::update(
                    peer_domains::table.find(domain.as_str()).filter(
                        peer_domains::lease_until
                            .is_null()
                            .or(peer_domains::lease_until.le(now)),
                    ),
                )
                .set(peer_domains::lease_until.eq(nanos(until)))
                .execute(self.conn);
                self.db(taken).map(|n| n > 0)
            }

            fn release_peer_domain(&mut self, domain: &Domain) -> Result<(), StoreError> {
                let done = diesel::update(peer_domains::table.find(domain.as_str()))
                    .set(peer_domains::lease_until.eq(None::<i64>))
                    .execute(self.conn);
                self.db(done).map(|_| ())
            }

            fn key_pin(&mut self, handle: &Handle) -> Result<Option<PeerPin>, StoreError> {
                let row = key_pins::table
                    .find(handle.as_str())
                    .select(KeyPinRow::as_select())
                    .get_result(self.conn)
                    .optional();
                self.db(row)?.map(KeyPinRow::into_record).transpose()
            }

            fn key_pins(&mut self, handles: &[Handle]) -> Result<Vec<PeerPin>, StoreError> {
                let rows = key_pins::table
                    .filter(key_pins::handle.eq_any(handles.iter().map(Handle::as_str)))
                    .select(KeyPinRow::as_select())
                    .load(self.conn);
                self.db(rows)?.into_iter().map(KeyPinRow::into_record).collect()
            }

            fn move_key_pin(&mut self, pin: &PeerPin, from: Option<&(u64, String)>) -> Result<bool, StoreError> {
                let row = KeyPinRow::new(pin);
                let n = match from {
                    None => diesel::insert_into(key_pins::table)
                        .values(&row)
                        .on_conflict_do_nothing()
                        .execute(self.conn),
                    Some((seq, head)) => diesel::update(
                        key_pins::table
                            .find(pin.handle.as_str())
                            .filter(key_pins::seq.eq(stored_seq(*seq)))
                            .filter(key_pins::head.eq(head)),
                    )
                    .set((
                        key_pins::seq.eq(row.seq),
                        key_pins::head.eq(&row.head),
                        key_pins::entry.eq(&row.entry),
                        key_pins::class.eq(&row.class),
                        key_pins::previous_signing_key.eq(&row.previous_signing_key),
                        key_pins::change.eq(&row.change),
                        key_pins::changed_at.eq(row.changed_at),
                        key_pins::break_seq.eq(row.break_seq),
                        key_pins::break_change.eq(&row.break_change),
                        key_pins::break_at.eq(&row.break_at),
                        key_pins::break_seen_at.eq(row.break_seen_at),
                    ))
                    .execute(self.conn),
                };
                self.db(n).map(|n| n > 0)
            }

            fn key_conflict(&mut self, handle: &Handle) -> Result<Option<KeyConflict>, StoreError> {
                let row = key_log_conflicts::table
                    .find(handle.as_str())
                    .select(KeyConflictRow::as_select())
                    .get_result(self.conn)
                    .optional();
                self.db(row)?.map(KeyConflictRow::into_record).transpose()
            }

            fn record_key_conflict(&mut self, conflict: &KeyConflict) -> Result<bool, StoreError> {
                let n = diesel::insert_into(key_log_conflicts::table)
                    .values(&KeyConflictRow::new(conflict))
                    .on_conflict_do_nothing()
                    .execute(self.conn);
                self.db(n).map(|n| n > 0)
            }

            fn key_conflicts(&mut self) -> Result<Vec<KeyConflict>, StoreError> {
                let rows = key_log_conflicts::table
                    .order(key_log_conflicts::handle.asc())
                    .select(KeyConflictRow::as_select())
                    .load(self.conn);
                self.db(rows)?
                    .into_iter()
                    .map(KeyConflictRow::into_record)
                    .collect()
            }

            fn count_key_conflicts(&mut self) -> Result<u64, StoreError> {
                let n = key_log_conflicts::table.count().get_result::<i64>(self.conn);
                self.db(n).map(|n| n.max(0) as u64)
            }

            fn unpin(&mut self, target: &PinTarget) -> Result<Vec<Handle>, StoreError> {
                let (pins, conflicts) = match target {
                    PinTarget::Handle(handle) => (
                        diesel::delete(key_pins::table.find(handle.as_str()))
                            .returning(key_pins::handle)
                            .get_results::<String>(self.conn),
                        diesel::delete(key_log_conflicts::table.find(handle.as_str())).execute(self.conn),
                    ),
                    PinTarget::Domain(domain) => (
                        diesel::delete(key_pins::table.filter(key_pins::domain.eq(domain.as_str())))
                            .returning(key_pins::handle)
                            .get_results::<String>(self.conn),
                        diesel::delete(key_log_conflicts::table.filter(key_log_conflicts::domain.eq(domain.as_str())))
                            .execute(self.conn),
                    ),
                };
                self.db(conflicts)?;
                self.db(pins)?.iter().map(|h| handle(h)).collect()
            }

            fn users_related_to(&mut self, peer: &Handle, limit: usize) -> Result<Vec<UserId>, StoreError> {
                let users = relationships::table
                    .filter(relationships::peer.eq(peer.as_str()))
                    .order(relationships::user_id.asc())
                    .limit(limit as i64)
                    .select(relationships::user_id)
                    .load::<i64>(self.conn);
                Ok(self.db(users)?.into_iter().map(UserId).collect())
            }

            fn queued_for_domain(&mut self, domain: &Domain) -> Result<u64, StoreError> {
                // Domains hold no `%` or `_`: the pattern matches the domain only.
                let n = revocations::table
                    .filter(revocations::peer.like(format!("%@{}", domain.as_str())))
                    .count()
                    .get_result::<i64>(self.conn);
                self.db(n).map(|n| n.max(0) as u64)
            }

            fn total_scheduled(&mut self) -> Result<u64, StoreError> {
                let n = revocations::table
                    .filter(revocations::next_attempt_at.is_not_null())
                    .count()
                    .get_result::<i64>(self.conn);
                self.db(n).map(|n| n.max(0) as u64)
            }

            fn dequeue(&mut self, user: UserId, peer: &Handle) -> Result<bool, StoreError> {
                let n = diesel::delete(revocations::table.find((user.0, peer.as_str()))).execute(self.conn);
                self.db(n).map(|n| n > 0)
            }

            fn queue_after(
                &mut self,
                user: UserId,
                after: Option<&Handle>,
                limit: usize,
            ) -> Result<Vec<QueuedRevocation>, StoreError> {
                let rows = revocations::table
                    .filter(revocations::user_id.eq(user.0))
                    .filter(revocations::peer.gt(after.map_or("", |h| h.as_str())))
                    .order(revocations::peer.asc())
                    .limit(limit as i64)
                    .select(RevocationRow::as_select())
                    .load(self.conn);
                self.db(rows)?
                    .into_iter()
                    .map(RevocationRow::into_record)
                    .collect()
            }

            fn queue_len(&mut self, user: UserId) -> Result<u64, StoreError> {
                let n = revocations::table
                    .filter(revocations::user_id.eq(user.0))
                    .count()
                    .get_result::<i64>(self.conn);
                self.db(n).map(|n| n as u64)
            }

            fn total_queue_len(&mut self) -> Result<u64, StoreError> {
                let n = revocations::table.count().get_result::<i64>(self.conn);
                self.db(n).map(|n| n as u64)
            }

            fn replays_in_way(&mut self, records: &[ReplayRecord]) -> Result<Vec<ReplayRecord>, StoreError> {
                self.replays_in_way_of(records)
            }

            fn record_replays(&mut self, records: &[ReplayRecord], now: UnixTime) -> Result<(), StoreError> {
                // The common case costs one statement; only a row in the way looks further.
                for record in self.insert_replays(records)? {
                    self.replace_expired_replay(record, now)?;
                }
                Ok(())
            }

            fn prune_replays(&mut self, now: UnixTime, limit: usize) -> Result<u64, StoreError> {
                let batch = replay_keys::table
                    .filter(replay_keys::expires_at.le(nanos(now)))
                    .select(replay_keys::id)
                    .limit(limit as i64)
                    .load::<i64>(self.conn);
                let batch = self.db(batch)?;
                let n = diesel::delete(replay_keys::table.filter(replay_keys::id.eq_any(&batch))).execute(self.conn);
                self.db(n).map(|n| n as u64)
            }

            fn record_readiness(&mut self, at: UnixTime) -> Result<(), StoreError> {
                let done = diesel::update(readiness::table.filter(readiness::id.eq(1)))
                    .set(readiness::checked_at.eq(nanos(at)))
                    .execute(self.conn);
                self.db(done).map(|_| ())
            }

            fn append_audit(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
                let done = diesel::insert_into(audit_log::table)
                    .values((
                        audit_log::user_id.eq(record.user.0),
                        audit_log::at.eq(nanos(record.at)),
                        audit_log::action.eq(&record.action),
                        audit_log::details.eq(record.details.to_string()),
                    ))
                    .execute(self.conn);
                self.db(done).map(|_| ())
            }

            fn audit_records(&mut self, user: UserId) -> Result<Vec<AuditRecord>, StoreError> {
                let rows = audit_log::table
                    .filter(audit_log::user_id.eq(user.0))
                    .order(audit_log::id.asc())
                    .select(AuditRow::as_select())
                    .load(self.conn);
                self.db(rows)?.into_iter().map(AuditRow::into_record).collect()
            }

            $($own)*
        }
    };
}

// SQLite keeps the port's provided batch methods: one statement per row
// or step costs no round trip there.
impl_tx!(SqliteConnection, no_lock, load_due, {});

impl_tx!(PgConnection, pg_lock, load_due_skip_locked, {
    fn relationships_with(&mut self, user: UserId, peers: &[Handle]) -> Result<Vec<Relationship>, StoreError> {
        let rows = relationships::table
            .filter(relationships::user_id.eq(user.0))
            .filter(relationships::peer.eq_any(peers.iter().map(Handle::as_str)))
            .select(RelationshipRow::as_select())
            .load(self.conn);
        self.db(rows)?.into_iter().map(RelationshipRow::into_record).collect()
    }

    fn inbox_batch_view(
        &mut self,
        alias: &Alias,
        senders: &[Handle],
        records: &[ReplayRecord],
    ) -> Result<Option<InboxBatchView>, StoreError> {
        if !self.lock_rows {
            // A read-only transaction may not lock: the steps one by one.
            return inbox_batch_view_by_steps(self, alias, senders, records);
        }
        let rows = ReadInboxBatch {
            alias: alias.as_str(),
            senders: senders.iter().map(Handle::as_str).collect(),
            lookup: ReplayLookup::of(records),
        }
        .load::<InboxBatchRow>(self.conn);
        inbox_batch_view(self.db(rows)?)
    }

    fn store_inbox_batch(
        &mut self,
        user: UserId,
        replays: &[ReplayRecord],
        now: UnixTime,
        messages: &[NewMessage<'_>],
    ) -> Result<(), StoreError> {
        if replays.is_empty() && messages.is_empty() {
            return Ok(());
        }
        let inserted = StoreInboxBatch {
            replays: ReplayColumns::of(replays),
            messages: MessageColumns::of(user, messages),
        }
        .load::<Vec<u8>>(self.conn);
        let inserted = self.db(inserted)?;
        for record in not_inserted(replays, &inserted) {
            self.replace_expired_replay(record, now)?;
        }
        Ok(())
    }
});

/// The records of `records` whose key is not among `inserted`.
fn not_inserted<'r>(records: &'r [ReplayRecord], inserted: &[Vec<u8>]) -> Vec<&'r ReplayRecord> {
    if inserted.len() == records.len() {
        return Vec::new();
    }
    records
        .iter()
        .filter(|r| !inserted.iter().any(|key| key.as_slice() == r.key.as_bytes().as_slice()))
        .collect()
}

/// The recipient, relationships and replay rows of [`ReadInboxBatch`]'s
/// rows (their columns as [`InboxBatchRow`] says).
fn inbox_batch_view(rows: Vec<InboxBatchRow>) -> Result<Option<InboxBatchView>, StoreError> {
    let mut recipient = None;
    let (mut relationships, mut replays_in_way) = (Vec::new(), Vec::new());
    for (shape, n1, n2, n3, n4, t1, t2, b1, b2) in rows {
        match (shape, t1, t2, b1) {
            (0, alias, _, signing_key) => {
                let row = UserRow {
                    id: n1,
                    alias,
                    signing_key,
                    encryption_key: b2,
                    keys_updated_at: n2,
                    last_reset_at: n3,
                    inbox_count: n4,
                };
                recipient = Some(row.into_record()?);
            }
            (1, Some(peer), Some(state), _) => relationships.push(
                RelationshipRow {
                    user_id: 0,
                    peer,
                    state,
                    since: n1,
                    created_at: n2.ok_or_else(|| corrupt("relationship"))?,
                }
                .into_record()?,
            ),
            (2, Some(sender), Some(nonce), Some(key)) => replays_in_way.push(replay_row((key, sender, nonce, n1))?),
            _ => return Err(corrupt("inbox batch row")),
        }
    }
    Ok(recipient.map(|recipient| InboxBatchView {
        recipient,
        relationships,
        replays_in_way,
    }))
}
