//! Statements that stay prepared where diesel's would not. diesel sends
//! `BEGIN`, `COMMIT` and `SAVEPOINT` text through `sqlite3_exec`, which
//! parses them anew every time, and never caches an UPDATE; on the hot
//! paths (every read, every unit of a group commit, every stored envelope)
//! that parsing was a measurable share of the work.

use diesel::backend::Backend;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::{Pg, PgConnection};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Array, BigInt, Binary, Bool, Integer, Nullable, Text};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, QueryResult, RunQueryDsl};
use fedid_domain::{NewMessage, ReplayRecord, UserId};

use crate::rows::nanos;

/// One constant statement; diesel caches its prepared form by its text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Command(pub &'static str);

impl QueryId for Command {
    type QueryId = ();
    // No static id: the cache key is the SQL text, distinct per command.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: Backend> QueryFragment<DB> for Command {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(self.0);
        Ok(())
    }
}

impl<C: Connection> RunQueryDsl<C> for Command {}

impl Command {
    pub(crate) fn run<C>(self, conn: &mut C) -> QueryResult<()>
    where
        C: Connection,
        Self: diesel::query_dsl::methods::ExecuteDsl<C>,
    {
        self.execute(conn).map(|_| ())
    }

    /// Runs this `BEGIN ...`; a transaction left open by an earlier failure
    /// is rolled back first, once.
    pub(crate) fn begin(self, conn: &mut SqliteConnection) -> QueryResult<()> {
        if self.run(conn).is_err() {
            let _ = Command("ROLLBACK").run(conn);
            self.run(conn)?;
        }
        Ok(())
    }
}

/// Declares a constant SQL condition on one table that diesel keeps
/// prepared with its statement (its `sql()` literals make a statement be
/// prepared anew on every run). Written out rather than bound, the
/// condition lets the planner match a partial index. Each condition is a
/// type of its own: the statement cache knows statements by type.
macro_rules! sql_condition {
    ($(#[$doc:meta])* $name:ident on $table:ident: $sql:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
        pub(crate) struct $name;

        impl Expression for $name {
            type SqlType = Bool;
        }

        impl<DB: Backend> QueryFragment<DB> for $name {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }

        impl AppearsOnTable<crate::schema::$table::table> for $name {}
        impl SelectableExpression<crate::schema::$table::table> for $name {}
    };
}

sql_condition! {
    /// A replay row without a nonce (found by its key).
    WithoutNonce on replay_keys: "nonce = ''"
}

sql_condition! {
    /// A replay row with a nonce (found by sender and nonce).
    WithNonce on replay_keys: "nonce <> ''"
}

sql_condition! {
    /// A message that came unsolicited (it names its sender).
    Unsolicited on inbox_messages: "sender <> ''"
}

/// `UPDATE users SET inbox_count = inbox_count + by WHERE id = user`, kept
/// prepared: diesel never caches its own UPDATE statements, and this one
/// runs with every stored envelope.
#[derive(Debug, Clone, Copy, QueryId)]
pub(crate) struct AdjustInboxCount {
    pub user: i64,
    pub by: i64,
}

impl<DB> QueryFragment<DB> for AdjustInboxCount
where
    DB: Backend,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE users SET inbox_count = inbox_count + ");
        out.push_bind_param::<BigInt, _>(&self.by)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.user)?;
        Ok(())
    }
}

impl<C: Connection> RunQueryDsl<C> for AdjustInboxCount {}

/// Declares a PostgreSQL statement of one shape (so diesel keeps it
/// prepared): `$name` with its fields, the SQL type of its rows, and how
/// its SQL is written.
macro_rules! pg_statement {
    ($(#[$doc:meta])* $name:ident { $($(#[$field_doc:meta])* $field:ident: $ty:ty),* $(,)? } -> $sql_type:ty, |$self:ident, $out:ident| $walk:block) => {
        $(#[$doc])*
        pub(crate) struct $name<'a> {
            $($(#[$field_doc])* pub $field: $ty,)*
        }

        impl QueryId for $name<'_> {
            type QueryId = $name<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl Query for $name<'_> {
            type SqlType = $sql_type;
        }

        impl QueryFragment<Pg> for $name<'_> {
            fn walk_ast<'b>(&'b $self, mut $out: AstPass<'_, 'b, Pg>) -> QueryResult<()> $walk
        }

        impl RunQueryDsl<PgConnection> for $name<'_> {}
    };
}

/// A batch of replay records as the arrays PostgreSQL unnests.
pub(crate) struct ReplayColumns<'a> {
    keys: Vec<&'a [u8]>,
    senders: Vec<&'a str>,
    nonces: Vec<&'a str>,
    expires_at: Vec<i64>,
}

impl<'a> ReplayColumns<'a> {
    pub(crate) fn of(records: &'a [ReplayRecord]) -> Self {
        Self {
            keys: records.iter().map(|r| r.key.as_bytes().as_slice()).collect(),
            senders: records.iter().map(|r| r.sender.as_str()).collect(),
            nonces: records.iter().map(|r| r.nonce.as_str()).collect(),
            expires_at: records.iter().map(|r| nanos(r.expires_at)).collect(),
        }
    }

    /// Inserts each record unless a row is in its way, returning the keys
    /// inserted.
    fn push_insert<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("INSERT INTO replay_keys (replay_key, sender, nonce, expires_at) SELECT * FROM unnest(");
        out.push_bind_param::<Array<Binary>, _>(&self.keys)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.senders)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.nonces)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.expires_at)?;
        out.push_sql(") ON CONFLICT DO NOTHING RETURNING replay_key");
        Ok(())
    }
}

/// A batch of one user's messages as the arrays PostgreSQL unnests.
pub(crate) struct MessageColumns<'a> {
    user: i64,
    received_at: Vec<i64>,
    envelopes: Vec<&'a str>,
    /// `''` for a consented message (the sender index is partial).
    senders: Vec<&'a str>,
}

impl<'a> MessageColumns<'a> {
    pub(crate) fn of(user: UserId, messages: &'a [NewMessage<'a>]) -> Self {
        Self {
            user: user.0,
            received_at: messages.iter().map(|m| nanos(m.received_at)).collect(),
            envelopes: messages.iter().map(|m| m.envelope).collect(),
            senders: messages.iter().map(|m| m.unsolicited_from.unwrap_or("")).collect(),
        }
    }

    /// `message` (the messages stored in their order, their ids) and
    /// `counted` (the user's inbox count raised by their number, when
    /// there are any), as two clauses of a `WITH`.
    fn push_insert_counted<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("message AS (INSERT INTO inbox_messages (user_id, received_at, envelope, sender) SELECT ");
        out.push_bind_param::<BigInt, _>(&self.user)?;
        out.push_sql(", m.received_at, m.envelope, m.sender FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(&self.received_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.envelopes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.senders)?;
        out.push_sql(
            ") WITH ORDINALITY AS m(received_at, envelope, sender, n) ORDER BY m.n RETURNING id), \
             counted AS (UPDATE users SET inbox_count = inbox_count + (SELECT count(*) FROM message) WHERE id = ",
        );
        out.push_bind_param::<BigInt, _>(&self.user)?;
        out.push_sql(" AND EXISTS (SELECT 1 FROM message))");
        Ok(())
    }
}

/// What finds the replay rows in the way of a batch's records (see
/// `Tx::replays_in_way`): keys for records without a nonce, senders and
/// nonces for the others.
pub(crate) struct ReplayLookup<'a> {
    keys_without_nonce: Vec<&'a [u8]>,
    senders: Vec<&'a str>,
    nonces: Vec<&'a str>,
}

impl<'a> ReplayLookup<'a> {
    pub(crate) fn of(records: &'a [ReplayRecord]) -> Self {
        let (with_nonce, without): (Vec<&ReplayRecord>, Vec<&ReplayRecord>) =
            records.iter().partition(|r| !r.nonce.is_empty());
        Self {
            keys_without_nonce: without.iter().map(|r| r.key.as_bytes().as_slice()).collect(),
            senders: with_nonce.iter().map(|r| r.sender.as_str()).collect(),
            nonces: with_nonce.iter().map(|r| r.nonce.as_str()).collect(),
        }
    }

    /// `SELECT columns` of the rows in the way (named `r`), by key, then by
    /// sender and nonce. The literal nonce conditions let the planner use
    /// the matching partial indexes. By sender and nonce it is a lateral
    /// subquery: one index probe per pair, whatever the table's size was
    /// when the plan was made. As a join, PostgreSQL planned it once on a
    /// near-empty table (a hash join over a full scan) and kept that plan
    /// while the table grew: 4 ms per batch after 10,000 envelopes
    /// (docs/performance.md). `LIMIT 1` (a pair is unique) keeps it from
    /// being flattened into a join; PostgreSQL connections disable
    /// sequential scans (`PostgresSetup`), so the probe takes the index
    /// even on a table of a few rows.
    fn push_select<'b>(&'b self, columns: &'static str, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT ");
        out.push_sql(columns);
        out.push_sql(" FROM replay_keys r WHERE r.nonce = '' AND r.replay_key = ANY(");
        out.push_bind_param::<Array<Binary>, _>(&self.keys_without_nonce)?;
        out.push_sql(") UNION ALL SELECT ");
        out.push_sql(columns);
        out.push_sql(" FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.senders)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.nonces)?;
        out.push_sql(
            ") AS w(sender, nonce) CROSS JOIN LATERAL (SELECT x.replay_key, x.sender, x.nonce, x.expires_at \
             FROM replay_keys x WHERE x.sender = w.sender AND x.nonce = w.nonce AND x.nonce <> '' LIMIT 1) r",
        );
        Ok(())
    }
}

pg_statement! {
    /// Messages stored in their order and their user's inbox count raised,
    /// in one statement (one round trip for a whole batch); answers their
    /// ids in order.
    InsertCountedMessages {
        messages: MessageColumns<'a>,
    } -> BigInt,
    |self, out| {
        out.push_sql("WITH ");
        self.messages.push_insert_counted(&mut out)?;
        out.push_sql(" SELECT id FROM message ORDER BY id");
        Ok(())
    }
}

pg_statement! {
    /// The replay rows in the way of a batch's records.
    ReplaysInWay {
        lookup: ReplayLookup<'a>,
    } -> (Binary, Text, Text, BigInt),
    |self, out| {
        self.lookup.push_select("r.replay_key, r.sender, r.nonce, r.expires_at", &mut out)
    }
}

pg_statement! {
    /// A batch's replay records inserted at once, each unless a row is in
    /// its way; answers the keys inserted.
    InsertReplays {
        replays: ReplayColumns<'a>,
    } -> Binary,
    |self, out| {
        self.replays.push_insert(&mut out)
    }
}

pg_statement! {
    /// What the inbox reads for a batch of deliveries (see
    /// `Tx::inbox_batch_view`), in one statement: the recipient, locked,
    /// then its relationships with the senders, then the replay rows in
    /// the way. Rows of the three shapes share columns; [`InboxBatchRow`]
    /// says which holds what.
    ReadInboxBatch {
        alias: &'a str,
        senders: Vec<&'a str>,
        lookup: ReplayLookup<'a>,
    } -> (
        Integer,
        BigInt,
        Nullable<BigInt>,
        Nullable<BigInt>,
        BigInt,
        Nullable<Text>,
        Nullable<Text>,
        Nullable<Binary>,
        Nullable<Binary>,
    ),
    |self, out| {
        out.push_sql(
            "WITH recipient AS (SELECT id, alias, signing_key, encryption_key, keys_updated_at, last_reset_at, \
             inbox_count FROM users WHERE alias = ",
        );
        out.push_bind_param::<Text, _>(&self.alias)?;
        out.push_sql(
            " FOR UPDATE) \
             SELECT 0, id, keys_updated_at, last_reset_at, inbox_count, alias, NULL::text, signing_key, \
             encryption_key FROM recipient \
             UNION ALL SELECT 1, since, created_at, NULL, 0, peer, state, NULL, NULL FROM relationships \
             WHERE user_id = (SELECT id FROM recipient) AND peer = ANY(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.senders)?;
        out.push_sql(") UNION ALL ");
        self.lookup.push_select(
            "2, r.expires_at, NULL, NULL, 0, r.sender, r.nonce, r.replay_key, NULL",
            &mut out,
        )
    }
}

/// A row of [`ReadInboxBatch`]: its shape (0 the recipient, 1 a
/// relationship, 2 a replay row), then the shared columns:
/// - the recipient: id, keys_updated_at, last_reset_at, inbox_count,
///   alias, -, signing_key, encryption_key;
/// - a relationship: since, created_at, -, -, peer, state, -, -;
/// - a replay row: expires_at, -, -, -, sender, nonce, replay_key, -.
pub(crate) type InboxBatchRow = (
    i32,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

pg_statement! {
    /// A batch's replay records and messages written at once (see
    /// `Tx::store_inbox_batch`), the messages in their order and their
    /// user's inbox count raised; answers the replay keys inserted (a row
    /// in the way leaves its record out).
    StoreInboxBatch {
        replays: ReplayColumns<'a>,
        messages: MessageColumns<'a>,
    } -> Binary,
    |self, out| {
        out.push_sql("WITH replay AS (");
        self.replays.push_insert(&mut out)?;
        out.push_sql("), ");
        self.messages.push_insert_counted(&mut out)?;
        out.push_sql(" SELECT replay_key FROM replay");
        Ok(())
    }
}
