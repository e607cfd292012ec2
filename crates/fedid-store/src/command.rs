//! Transaction control statements for SQLite that stay prepared. diesel
//! sends `BEGIN`, `COMMIT` and `SAVEPOINT` text through `sqlite3_exec`, which
//! parses them anew every time; on the hot paths (every read, every unit of
//! a group commit) that parsing was a measurable share of the work.

use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel::{QueryResult, RunQueryDsl};

/// One constant statement; diesel caches its prepared form by its text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Command(pub &'static str);

impl QueryId for Command {
    type QueryId = ();
    // No static id: the cache key is the SQL text, distinct per command.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Sqlite> for Command {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(self.0);
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for Command {}

impl Command {
    pub(crate) fn run(self, conn: &mut SqliteConnection) -> QueryResult<()> {
        self.execute(conn).map(|_| ())
    }
}
