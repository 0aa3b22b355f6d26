//! A group commit's writes as one MySQL script: every statement in one
//! `COM_QUERY`, one round trip where sending them one by one (prepared) takes
//! one each.
//!
//! A script carries its values as literals: integers as digits, text as
//! hexadecimal literals (`X'…'`), which the server reads byte for byte
//! whatever its `sql_mode` (no escaping to get right). The server runs the
//! statements in order and stops at the first error, which comes back as the
//! script's error; the caller then rolls its transaction back.
//!
//! Statements whose outcome matters are written so that the wrong outcome is
//! an error rather than a count to inspect (see [`fails_unless`]).

use std::fmt::Write;

use sea_orm::sea_query::{
    Alias, Expr, InsertStatement, MysqlQueryBuilder, OnConflict, Query, QueryStatementWriter, Value,
};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, RuntimeErr, sqlx};

/// A script longer than this is not built: the statements go one by one
/// (a quarter of the smallest default `max_allowed_packet`, MySQL 5.7's 4 MiB).
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;

/// Statements to run in one round trip, in order.
#[derive(Debug, Default)]
pub struct Script {
    sql: String,
    statements: usize,
}

/// Why a statement cannot go in a script: a value with no literal form here,
/// or the script would grow past [`MAX_SCRIPT_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not scriptable: {0}")]
pub struct Unscriptable(pub String);

impl Script {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `statement` (a sea-query statement for MySQL) with its values
    /// written in.
    pub fn push(&mut self, statement: &impl QueryStatementWriter) -> Result<(), Unscriptable> {
        let (sql, values) = statement.build(MysqlQueryBuilder);
        self.push_sql(&sql, &values.0)
    }

    /// Appends `sql`, whose `?` placeholders (outside quotes) take `values` in order.
    pub fn push_sql(&mut self, sql: &str, values: &[Value]) -> Result<(), Unscriptable> {
        let start = self.sql.len();
        let written = write_statement(&mut self.sql, sql, values);
        self.close(start, written)
    }

    /// Appends `insert` of `rows` (values in its columns' order), as
    /// [`Script::push`] of [`InsertInto::statement`] would, without building
    /// the statement first. No rows: nothing is appended.
    pub fn push_insert<R: AsRef<[Value]>>(&mut self, insert: &InsertInto, rows: &[R]) -> Result<(), Unscriptable> {
        if rows.is_empty() {
            return Ok(());
        }
        let start = self.sql.len();
        let written = insert.write(&mut self.sql, rows);
        self.close(start, written)
    }

    /// Ends the statement written from `start` on, or takes it back if it
    /// could not be written or makes the script too long.
    fn close(&mut self, start: usize, written: Result<(), Unscriptable>) -> Result<(), Unscriptable> {
        if let Err(unscriptable) = written {
            self.sql.truncate(start);
            return Err(unscriptable);
        }
        self.sql.push(';');
        if self.sql.len() > MAX_SCRIPT_BYTES {
            self.sql.truncate(start);
            return Err(Unscriptable(format!("a script over {MAX_SCRIPT_BYTES} bytes")));
        }
        self.statements += 1;
        Ok(())
    }

    /// Appends the statements of `other`.
    pub fn append(&mut self, other: Script) -> Result<(), Unscriptable> {
        if self.sql.len() + other.sql.len() > MAX_SCRIPT_BYTES {
            return Err(Unscriptable(format!("a script over {MAX_SCRIPT_BYTES} bytes")));
        }
        self.sql.push_str(&other.sql);
        self.statements += other.statements;
        Ok(())
    }

    /// Number of statements.
    pub fn len(&self) -> usize {
        self.statements
    }

    /// Whether it holds no statement.
    pub fn is_empty(&self) -> bool {
        self.statements == 0
    }

    /// The script's text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Runs the script as a transaction of its own in one round trip:
    /// `BEGIN`, every statement, `COMMIT`, on one connection of `db` (a MySQL
    /// pool), READ COMMITTED if `read_committed` (else the session's level).
    /// The first failing statement stops the script before `COMMIT`, and the
    /// transaction is rolled back on the same connection. An error: nothing
    /// was sent (no connection could be had).
    pub async fn commit(&self, db: &DatabaseConnection, read_committed: bool) -> Result<Ran, DbErr> {
        let pool = match db.get_database_backend() {
            DbBackend::MySql => db.get_mysql_connection_pool(),
            other => return Err(DbErr::Custom(format!("a script runs on MySQL only, not {other:?}"))),
        };
        let mut connection = pool.acquire().await.map_err(|err| DbErr::Conn(RuntimeErr::SqlxError(err.into())))?;
        let isolation = if read_committed { "SET TRANSACTION ISOLATION LEVEL READ COMMITTED;" } else { "" };
        let mut text = String::with_capacity(isolation.len() + self.sql.len() + 16);
        text.push_str(isolation);
        text.push_str("BEGIN;");
        text.push_str(&self.sql);
        text.push_str("COMMIT");
        let failed = match sqlx::Executor::execute(&mut *connection, sqlx::AssertSqlSafe(text)).await {
            Ok(_) => return Ok(Ran::Committed),
            Err(err) => DbErr::Exec(RuntimeErr::SqlxError(err.into())),
        };
        match sqlx::Executor::execute(&mut *connection, "ROLLBACK").await {
            Ok(_) => Ok(Ran::RolledBack(failed)),
            Err(_) => {
                // The connection may still hold the transaction, or have
                // committed it: it goes, and the caller finds out which.
                connection.close_on_drop();
                Ok(Ran::InDoubt(failed))
            }
        }
    }
}

/// A multi-row `INSERT` (an upsert if it names columns to update): the
/// group commit writes one per table and batch, straight into its script.
#[derive(Debug, Clone)]
pub struct InsertInto {
    table: String,
    columns: Vec<String>,
    key: Vec<String>,
    update: Vec<String>,
}

impl InsertInto {
    /// An insert into `table`; each row holds a value for each of `columns`, in order.
    pub fn new(table: impl Into<String>, columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let columns = columns.into_iter().map(Into::into).collect();
        Self { table: table.into(), columns, key: Vec::new(), update: Vec::new() }
    }

    /// The same, where a row whose `key` (its primary key's columns) exists
    /// already updates `columns` of it instead (MySQL's `ON DUPLICATE KEY
    /// UPDATE`, which names no key; `ON CONFLICT` elsewhere).
    pub fn updating(
        mut self,
        key: impl IntoIterator<Item = impl Into<String>>,
        columns: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.key = key.into_iter().map(Into::into).collect();
        self.update = columns.into_iter().map(Into::into).collect();
        self
    }

    /// The insert of `rows` as a sea-query statement (to run prepared).
    pub fn statement<R: AsRef<[Value]>>(&self, rows: &[R]) -> Result<InsertStatement, Unscriptable> {
        let names = |names: &[String]| names.iter().map(|name| Alias::new(name.as_str())).collect::<Vec<_>>();
        let mut insert = Query::insert();
        insert.into_table(Alias::new(self.table.as_str())).columns(names(&self.columns));
        if !self.update.is_empty() {
            insert.on_conflict(OnConflict::columns(names(&self.key)).update_columns(names(&self.update)).to_owned());
        }
        for row in rows {
            insert
                .values(row.as_ref().iter().cloned().map(Expr::val))
                .map_err(|e| Unscriptable(format!("cannot build an insert into {}: {e}", self.table)))?;
        }
        Ok(insert)
    }

    fn write<R: AsRef<[Value]>>(&self, out: &mut String, rows: &[R]) -> Result<(), Unscriptable> {
        out.push_str("INSERT INTO ");
        identifier(out, &self.table);
        out.push_str(" (");
        for (i, column) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            identifier(out, column);
        }
        out.push_str(") VALUES ");
        for (i, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != self.columns.len() {
                return Err(Unscriptable(format!(
                    "{} values for the {} columns of {}",
                    row.len(),
                    self.columns.len(),
                    self.table
                )));
            }
            out.push_str(if i > 0 { ", (" } else { "(" });
            for (j, value) in row.iter().enumerate() {
                if j > 0 {
                    out.push_str(", ");
                }
                literal(out, value)?;
            }
            out.push(')');
        }
        for (i, column) in self.update.iter().enumerate() {
            out.push_str(if i > 0 { ", " } else { " ON DUPLICATE KEY UPDATE " });
            identifier(out, column);
            out.push_str(" = VALUES(");
            identifier(out, column);
            out.push(')');
        }
        Ok(())
    }
}

/// `name` quoted as a MySQL identifier.
fn identifier(out: &mut String, name: &str) {
    out.push('`');
    for c in name.chars() {
        if c == '`' {
            out.push('`');
        }
        out.push(c);
    }
    out.push('`');
}

/// How a script run as a transaction of its own ([`Script::commit`]) ended.
#[derive(Debug)]
pub enum Ran {
    /// Every statement ran, and the transaction committed.
    Committed,
    /// A statement failed (the error): the transaction was rolled back, nothing is written.
    RolledBack(DbErr),
    /// The connection failed (the error) with the outcome unknown: the
    /// transaction may have committed, or may be rolled back by the server.
    InDoubt(DbErr),
}

/// `value` if `condition` holds, else NULL: assigned to a `NOT NULL` column
/// it fails the statement (MySQL's strict mode, which the script's
/// connections run in), and with it the rest of the script. SQL with two
/// placeholders: the condition's (write it in as SQL) and the value.
pub fn fails_unless(condition: &str) -> String {
    format!("IF({condition}, ?, NULL)")
}

fn write_statement(out: &mut String, sql: &str, values: &[Value]) -> Result<(), Unscriptable> {
    let mut values = values.iter();
    let mut quote: Option<u8> = None;
    // Quotes and placeholders are ASCII, so a byte scan never splits a
    // character: the text between placeholders is copied whole.
    let mut copied = 0;
    for (at, byte) in sql.bytes().enumerate() {
        match (quote, byte) {
            (Some(open), byte) if byte == open => quote = None,
            (Some(_), _) => {}
            (None, b'`' | b'\'' | b'"') => quote = Some(byte),
            (None, b'?') => {
                let value = values.next().ok_or_else(|| Unscriptable("more placeholders than values".into()))?;
                out.push_str(&sql[copied..at]);
                literal(out, value)?;
                copied = at + 1;
            }
            (None, _) => {}
        }
    }
    out.push_str(&sql[copied..]);
    if values.next().is_some() {
        return Err(Unscriptable("more values than placeholders".into()));
    }
    Ok(())
}

/// Writes `value` as a MySQL literal.
fn literal(out: &mut String, value: &Value) -> Result<(), Unscriptable> {
    // Writing to a String cannot fail.
    let _ = match value {
        Value::Bool(Some(b)) => write!(out, "{}", u8::from(*b)),
        Value::TinyInt(Some(n)) => write!(out, "{n}"),
        Value::SmallInt(Some(n)) => write!(out, "{n}"),
        Value::Int(Some(n)) => write!(out, "{n}"),
        Value::BigInt(Some(n)) => write!(out, "{n}"),
        Value::TinyUnsigned(Some(n)) => write!(out, "{n}"),
        Value::SmallUnsigned(Some(n)) => write!(out, "{n}"),
        Value::Unsigned(Some(n)) => write!(out, "{n}"),
        Value::BigUnsigned(Some(n)) => write!(out, "{n}"),
        Value::String(Some(text)) => {
            // The introducer makes it text, compared in the column's collation
            // (a bare hexadecimal literal is a binary string).
            out.push_str("_utf8mb4");
            hex_literal(out, text.as_bytes())
        }
        Value::Bytes(Some(bytes)) => hex_literal(out, bytes),
        Value::Bool(None)
        | Value::TinyInt(None)
        | Value::SmallInt(None)
        | Value::Int(None)
        | Value::BigInt(None)
        | Value::TinyUnsigned(None)
        | Value::SmallUnsigned(None)
        | Value::Unsigned(None)
        | Value::BigUnsigned(None)
        | Value::String(None)
        | Value::Bytes(None) => write!(out, "NULL"),
        other => return Err(Unscriptable(format!("no literal for {other:?}"))),
    };
    Ok(())
}

/// ` X'…'`; the empty string is ` ''` (an empty hexadecimal literal is not SQL everywhere).
fn hex_literal(out: &mut String, bytes: &[u8]) -> std::fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    if bytes.is_empty() {
        return write!(out, " ''");
    }
    // Written straight in: the `hex` crate's encoders go through a string
    // of their own, a seventh of the group commit's time in profiles.
    out.reserve(2 * bytes.len() + 4);
    out.push_str(" X'");
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out.push('\'');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDatabase;
    use sea_orm::Statement;
    use sea_orm::sea_query::{Alias, Query};

    #[test]
    fn values_are_written_in_as_literals() {
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("t"))
            .columns([Alias::new("a"), Alias::new("b"), Alias::new("c")])
            .values_panic([1i64.into(), "it's ?".into(), Option::<String>::None.into()])
            .values_panic([(-2i32).into(), "".into(), true.into()]);
        let mut script = Script::new();
        script.push(&insert).expect("scriptable");
        script.push_sql("UPDATE `t?` SET a = ? WHERE b = 'x?'", &[7u64.into()]).expect("scriptable");
        assert_eq!(
            script.sql(),
            "INSERT INTO `t` (`a`, `b`, `c`) VALUES (1, _utf8mb4 X'69742773203F', NULL), (-2, _utf8mb4 '', 1);\
             UPDATE `t?` SET a = 7 WHERE b = 'x?';"
        );
        assert_eq!(script.len(), 2);
    }

    #[test]
    fn an_insert_written_straight_in_is_the_statement_built_and_written_in() {
        let rows: Vec<Vec<Value>> = vec![
            vec![1i64.into(), "it's ?".into(), Option::<String>::None.into()],
            vec![(-2i32).into(), "".into(), vec![0u8, 96].into()],
        ];
        for insert in
            [InsertInto::new("t`x", ["a", "b", "c"]), InsertInto::new("t", ["a", "b", "c"]).updating(["a"], ["b", "c"])]
        {
            let (mut straight, mut built) = (Script::new(), Script::new());
            straight.push_insert(&insert, &rows).expect("scriptable");
            built.push(&insert.statement(&rows).expect("builds")).expect("scriptable");
            assert_eq!(straight.sql(), built.sql());
            assert_eq!(straight.len(), 1);
        }
        let mut script = Script::new();
        script.push_insert(&InsertInto::new("t", ["a"]), &[] as &[Vec<Value>]).expect("nothing to write");
        assert!(script.is_empty() && script.sql().is_empty());
        assert!(script.push_insert(&InsertInto::new("t", ["a", "b"]), &rows).is_err(), "three values for two columns");
        assert!(
            script.push_insert(&InsertInto::new("t", ["a", "b", "c"]), &[vec![Value::Float(Some(1.5)); 3]]).is_err()
        );
        assert!(script.is_empty() && script.sql().is_empty(), "a statement that cannot be written leaves nothing");
    }

    #[test]
    fn a_statement_that_cannot_be_written_leaves_the_script_as_it_was() {
        let mut script = Script::new();
        script.push_sql("SELECT ?", &[1i32.into()]).expect("scriptable");
        let before = script.sql().to_string();
        assert!(script.push_sql("SELECT ?, ?", &[1i32.into()]).is_err());
        assert!(script.push_sql("SELECT ?", &[1i32.into(), 2i32.into()]).is_err());
        assert!(script.push_sql("SELECT ?", &[1.5f64.into()]).is_err());
        let huge = "x".repeat(MAX_SCRIPT_BYTES);
        assert!(script.push_sql("SELECT ?", &[huge.into()]).is_err());
        assert_eq!((script.sql(), script.len()), (before.as_str(), 1));
    }
    /// Rows of table `t` as another connection sees them.
    async fn committed_rows(db: &DatabaseConnection) -> i64 {
        use sea_orm::ConnectionTrait;
        let row = db.query_one_raw(Statement::from_string(DbBackend::MySql, "SELECT COUNT(*) AS n FROM t")).await;
        row.expect("counts").expect("a row").try_get::<i64>("", "n").expect("a count")
    }

    #[tokio::test]
    async fn a_script_commits_whole_or_rolls_back_on_its_own_connection() {
        use sea_orm::ConnectionTrait;
        let Some(scratch) = ScratchDatabase::mysql().await.unwrap_or_else(|e| panic!("{e}")) else { return };
        let db = crate::connection::connect_writer(&scratch.url, 2).await.expect("connects");
        db.execute_unprepared("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB").await.expect("creates");

        // A statement fails after another wrote: nothing stays, on any of
        // the pool's connections, even once later transactions commit.
        for attempt in 0..4 {
            let mut failing = Script::new();
            failing.push_sql("INSERT INTO t (id) VALUES (?)", &[(100 + attempt).into()]).expect("scriptable");
            failing.push_sql("INSERT INTO t (id) VALUES (?), (?)", &[1.into(), 1.into()]).expect("scriptable");
            assert!(matches!(failing.commit(&db, true).await.expect("sent"), Ran::RolledBack(_)));
        }
        let mut good = Script::new();
        good.push_sql("INSERT INTO t (id) VALUES (?)", &[1.into()]).expect("scriptable");
        for _ in 0..2 {
            // The second time the key is taken: rolled back, and the first stays.
            let ran = good.commit(&db, false).await.expect("sent");
            assert_eq!(committed_rows(&db).await, 1, "after {ran:?}");
        }

        // The connection dies mid-script: the outcome is in doubt, and the
        // server rolled back what had not committed.
        let mut killed = Script::new();
        killed.push_sql("INSERT INTO t (id) VALUES (?)", &[2.into()]).expect("scriptable");
        killed.push_sql("KILL CONNECTION_ID()", &[]).expect("scriptable");
        assert!(matches!(killed.commit(&db, true).await.expect("sent"), Ran::InDoubt(_)));
        assert_eq!(committed_rows(&db).await, 1);
        // Or after its work committed: in doubt too, and stored.
        let mut late = Script::new();
        late.push_sql("INSERT INTO t (id) VALUES (?)", &[3.into()]).expect("scriptable");
        late.push_sql("COMMIT", &[]).expect("scriptable");
        late.push_sql("KILL CONNECTION_ID()", &[]).expect("scriptable");
        assert!(matches!(late.commit(&db, true).await.expect("sent"), Ran::InDoubt(_)));
        assert_eq!(committed_rows(&db).await, 2);

        // The killed connections left the pool: the next scripts run.
        for id in [4, 5, 6] {
            let mut next = Script::new();
            next.push_sql("INSERT INTO t (id) VALUES (?)", &[id.into()]).expect("scriptable");
            assert!(matches!(next.commit(&db, true).await.expect("sent"), Ran::Committed));
        }
        assert_eq!(committed_rows(&db).await, 5);
    }
}
