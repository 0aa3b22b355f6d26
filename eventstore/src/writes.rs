//! Writes whose answers nobody reads, gathered for one transaction and sent
//! together just before it commits.
//!
//! On MySQL each prepared statement is a round trip of its own, and an append
//! transaction holds the log head for all of them. Gathered here, the
//! statements go to the server as one multi-statement text query: one round
//! trip, however many tables the append and its inline projections write.
//! The server runs them in order and stops at the first error, which the
//! caller gets (a unique key stays a unique-key error) and answers by rolling
//! the transaction back, as for a failed prepared statement.
//!
//! The text carries the values as literals. None is spliced in as typed:
//! numbers are written by Rust's formatter and every string or byte value as
//! a hexadecimal literal (`_utf8mb4 X'…'`), so no quote, backslash or
//! `sql_mode` setting can end a literal early. A statement holding a value of
//! another kind is sent prepared, alone, in its place in the order. SQLite
//! runs in process: there each statement stays prepared.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, StatementBuilder, Value};

/// Most bytes of SQL text sent in one round trip (MariaDB refuses a packet
/// over `max_allowed_packet`, 16 MiB by default); a single statement longer
/// than this is sent alone.
const TEXT_BYTES: usize = 4 << 20;

/// Statements to run, in order, before the transaction commits.
#[derive(Debug)]
pub struct Writes {
    backend: DbBackend,
    statements: Vec<Statement>,
}

impl Writes {
    /// No statement yet, for a connection to `backend`.
    pub fn new(backend: DbBackend) -> Self {
        Writes { backend, statements: Vec::new() }
    }

    /// Adds `statement` after those already gathered.
    pub fn push(&mut self, statement: &impl StatementBuilder) {
        self.statements.push(self.backend.build(statement));
    }

    /// How many statements are gathered.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Runs every gathered statement on `conn`, in order, and forgets them.
    pub async fn send(&mut self, conn: &impl ConnectionTrait) -> Result<(), DbErr> {
        let statements = std::mem::take(&mut self.statements);
        if self.backend != DbBackend::MySql {
            for statement in statements {
                conn.execute_raw(statement).await?;
            }
            return Ok(());
        }
        let mut text = String::new();
        for statement in statements {
            match literal_sql(&statement) {
                Some(sql) => {
                    if !text.is_empty() && text.len() + sql.len() > TEXT_BYTES {
                        conn.execute_unprepared(&std::mem::take(&mut text)).await?;
                    }
                    if !text.is_empty() {
                        text.push_str(";\n");
                    }
                    text.push_str(&sql);
                }
                None => {
                    if !text.is_empty() {
                        conn.execute_unprepared(&std::mem::take(&mut text)).await?;
                    }
                    conn.execute_raw(statement).await?;
                }
            }
        }
        if !text.is_empty() {
            conn.execute_unprepared(&text).await?;
        }
        Ok(())
    }
}

/// `statement` (MySQL, `?` placeholders) with its values written in as
/// literals; `None` if a value is of a kind not written here, or the
/// placeholders and values do not pair up.
fn literal_sql(statement: &Statement) -> Option<String> {
    let values = statement.values.as_ref().map_or(&[][..], |values| values.0.as_slice());
    let mut values = values.iter();
    let mut sql = String::with_capacity(statement.sql.len() + 32 * values.len());
    let mut quoted_by = None;
    for ch in statement.sql.chars() {
        match quoted_by {
            // Inside a quoted identifier or literal a `?` is text; a doubled
            // quote closes and reopens, which this toggling follows.
            Some(quote) => {
                if ch == quote {
                    quoted_by = None;
                }
                sql.push(ch);
            }
            None if ch == '?' => literal(values.next()?, &mut sql)?,
            None => {
                if matches!(ch, '`' | '\'' | '"') {
                    quoted_by = Some(ch);
                }
                sql.push(ch);
            }
        }
    }
    (quoted_by.is_none() && values.next().is_none()).then_some(sql)
}

/// Writes `value` as a MySQL literal; `None` for a kind not written here.
fn literal(value: &Value, sql: &mut String) -> Option<()> {
    fn number(sql: &mut String, value: Option<impl std::fmt::Display>) {
        match value {
            Some(value) => sql.push_str(&value.to_string()),
            None => sql.push_str("NULL"),
        }
    }
    fn hex(sql: &mut String, introducer: &str, value: Option<&[u8]>) {
        let Some(bytes) = value else { return sql.push_str("NULL") };
        sql.push_str(introducer);
        sql.push_str("X'");
        sql.push_str(&hex::encode(bytes));
        sql.push('\'');
    }
    match value {
        Value::Bool(value) => number(sql, value.map(u8::from)),
        Value::TinyInt(value) => number(sql, *value),
        Value::SmallInt(value) => number(sql, *value),
        Value::Int(value) => number(sql, *value),
        Value::BigInt(value) => number(sql, *value),
        Value::TinyUnsigned(value) => number(sql, *value),
        Value::SmallUnsigned(value) => number(sql, *value),
        Value::Unsigned(value) => number(sql, *value),
        Value::BigUnsigned(value) => number(sql, *value),
        Value::String(value) => hex(sql, "_utf8mb4 ", value.as_deref().map(str::as_bytes)),
        Value::Char(value) => {
            let mut buffer = [0; 4];
            hex(sql, "_utf8mb4 ", value.map(|c| &*c.encode_utf8(&mut buffer)).map(str::as_bytes))
        }
        Value::Bytes(value) => hex(sql, "", value.as_deref()),
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::{Alias, Query};

    use super::*;

    fn mysql(statement: &impl StatementBuilder) -> Option<String> {
        literal_sql(&DbBackend::MySql.build(statement))
    }

    #[test]
    fn values_become_literals_that_no_content_can_end_early() {
        let insert = Query::insert()
            .into_table(Alias::new("t"))
            .columns([Alias::new("a"), Alias::new("b"), Alias::new("c"), Alias::new("d"), Alias::new("e")])
            .values_panic([
                "it's a `?`; \\' --".into(),
                (-42i64).into(),
                Option::<String>::None.into(),
                true.into(),
                vec![0u8, 255].into(),
            ])
            .to_owned();
        assert_eq!(
            mysql(&insert).expect("renders"),
            "INSERT INTO `t` (`a`, `b`, `c`, `d`, `e`) VALUES (_utf8mb4 X'69742773206120603f603b205c27202d2d', \
             -42, NULL, 1, X'00ff')"
        );
    }

    #[test]
    fn a_value_of_another_kind_keeps_the_statement_prepared() {
        let update = Query::update().table(Alias::new("t")).value(Alias::new("f"), 1.5f64).to_owned();
        assert_eq!(mysql(&update), None);
    }

    #[test]
    fn placeholders_and_values_must_pair_up() {
        let statement = Statement::from_sql_and_values(DbBackend::MySql, "SELECT ?, '?'", [1i64.into()]);
        assert_eq!(literal_sql(&statement).as_deref(), Some("SELECT 1, '?'"));
        let missing = Statement::from_sql_and_values(DbBackend::MySql, "SELECT ?, ?", [1i64.into()]);
        assert_eq!(literal_sql(&missing), None);
        let extra = Statement::from_sql_and_values(DbBackend::MySql, "SELECT ?", [1i64.into(), 2i64.into()]);
        assert_eq!(literal_sql(&extra), None);
    }
}
