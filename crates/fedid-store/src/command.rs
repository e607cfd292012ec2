//! Statements that stay prepared where diesel's would not. diesel sends
//! `BEGIN`, `COMMIT` and `SAVEPOINT` text through `sqlite3_exec`, which
//! parses them anew every time, and never caches an UPDATE; on the hot
//! paths (every read, every unit of a group commit, every stored envelope)
//! that parsing was a measurable share of the work.

use diesel::backend::Backend;
use diesel::pg::{Pg, PgConnection};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, QueryResult, RunQueryDsl};

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

/// PostgreSQL: a message stored and its user's inbox count raised in one
/// statement, so one round trip instead of two for every stored envelope;
/// answers the message's id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InsertCountedMessage<'a> {
    pub user: i64,
    pub received_at: i64,
    pub envelope: &'a str,
    /// `''` for a consented message (the sender index is partial).
    pub sender: &'a str,
}

/// The statement's one shape: [`InsertCountedMessage`]'s cache key.
pub(crate) struct InsertCountedMessageId;

impl QueryId for InsertCountedMessage<'_> {
    type QueryId = InsertCountedMessageId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for InsertCountedMessage<'_> {
    type SqlType = BigInt;
}

impl QueryFragment<Pg> for InsertCountedMessage<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH message AS (INSERT INTO inbox_messages (user_id, received_at, envelope, sender) VALUES (");
        out.push_bind_param::<BigInt, _>(&self.user)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.received_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.envelope)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.sender)?;
        out.push_sql(") RETURNING id) UPDATE users SET inbox_count = inbox_count + 1 WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.user)?;
        out.push_sql(" RETURNING (SELECT id FROM message)");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for InsertCountedMessage<'_> {}
