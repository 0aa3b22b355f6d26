//! Reading and writing read-model rows generically, for any sea-orm entity,
//! under a table name chosen at run time (the live table or its rebuild
//! shadow).

use std::collections::{BTreeMap, BTreeSet};

use eventstore::{InsertInto, Script, Shapes, Unscriptable, padded_chunks};
use sea_orm::sea_query::{Alias, DeleteStatement, Expr, ExprTrait, InsertStatement, Order, Query};
use sea_orm::{
    ConnectionTrait, DbErr, EntityTrait, FromQueryResult, IdenStatic, Iterable, ModelTrait, PrimaryKeyToColumn, Value,
};
use serde::Serialize;

/// Most rows per statement (a power of two: see `eventstore::Shapes`).
const ROWS_PER_STATEMENT: usize = 512;

fn primary_columns<E: EntityTrait>() -> Vec<E::Column> {
    E::PrimaryKey::iter().map(|key| key.into_column()).collect()
}

/// The rows of `table` whose primary keys are in `keys` (each key is the
/// primary-key values in column order).
pub(crate) async fn load<E>(
    conn: &impl ConnectionTrait,
    table: &str,
    keys: &[Vec<Value>],
) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromQueryResult,
{
    let primary = primary_columns::<E>();
    let mut rows = Vec::with_capacity(keys.len());
    for chunk in padded_chunks(keys, ROWS_PER_STATEMENT) {
        // One IN list per key column selects a superset that every backend
        // answers from the primary key; rows not asked for are dropped here.
        let mut select = Query::select();
        select.columns(E::Column::iter()).from(Alias::new(table));
        for (index, column) in primary.iter().enumerate() {
            let values: Vec<Value> = chunk.iter().filter_map(|key| key.get(index).cloned()).collect();
            select.and_where(Expr::col(*column).is_in(values));
        }
        let wanted: BTreeSet<String> = chunk.iter().map(|key| format!("{key:?}")).collect();
        for row in conn.query_all(&select).await? {
            let model = E::Model::from_query_result(&row, "")?;
            let key: Vec<Value> = primary.iter().map(|c| model.get(*c)).collect();
            if primary.len() == 1 || wanted.contains(&format!("{key:?}")) {
                rows.push(model);
            }
        }
    }
    Ok(rows)
}

/// Every row of `table`, in primary-key order.
pub(crate) async fn dump<E>(conn: &impl ConnectionTrait, table: &str) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromQueryResult,
{
    let mut select = Query::select();
    select.columns(E::Column::iter()).from(Alias::new(table));
    for column in primary_columns::<E>() {
        select.order_by(column, Order::Asc);
    }
    conn.query_all(&select).await?.iter().map(|row| E::Model::from_query_result(row, "")).collect()
}

/// Rows to write: run as statements one by one, or put in a script. The
/// statements are cut when run or scripted, each way as it is best sent
/// ([`Shapes`]).
#[derive(Debug, Default)]
pub struct Writes(Vec<Write>);

#[derive(Debug)]
enum Write {
    /// Rows (values in `columns` order) to insert, replacing any with the same primary key.
    Upsert { table: String, columns: Vec<&'static str>, primary: Vec<&'static str>, rows: Vec<Vec<Value>> },
    /// Primary keys of rows to delete.
    Delete { table: String, primary: Vec<&'static str>, keys: Vec<Vec<Value>> },
}

/// One statement of a [`Write`].
enum Statement {
    Upsert(InsertStatement),
    Delete(DeleteStatement),
}

impl Write {
    /// An upsert's insert.
    fn insert(table: &str, columns: &[&'static str], primary: &[&'static str]) -> InsertInto {
        let others = columns.iter().copied().filter(|column| !primary.contains(column));
        InsertInto::new(table, columns.iter().copied()).updating(primary.iter().copied(), others)
    }

    /// The deletes of the rows of `table` with the primary keys `keys`, cut as `shapes` says.
    fn deletes(table: &str, primary: &[&'static str], keys: &[Vec<Value>], shapes: Shapes) -> Vec<DeleteStatement> {
        shapes
            .padded(keys, ROWS_PER_STATEMENT)
            .into_iter()
            .map(|chunk| {
                let condition = Expr::tuple(primary.iter().map(|column| Expr::col(Alias::new(*column))))
                    .is_in(chunk.iter().map(|key| Expr::tuple(key.iter().cloned().map(Expr::val))));
                Query::delete().from_table(Alias::new(table)).and_where(condition).to_owned()
            })
            .collect()
    }

    /// The statements to run prepared.
    fn statements(&self) -> Result<Vec<Statement>, DbErr> {
        match self {
            Write::Upsert { table, columns, primary, rows } => {
                let insert = Write::insert(table, columns, primary);
                // A row repeated to pad a prepared statement is written twice with the same values.
                Shapes::Prepared
                    .padded(rows, ROWS_PER_STATEMENT)
                    .into_iter()
                    .map(|chunk| {
                        insert.statement(&chunk).map(Statement::Upsert).map_err(|e| DbErr::Custom(e.to_string()))
                    })
                    .collect()
            }
            Write::Delete { table, primary, keys } => {
                Ok(Write::deletes(table, primary, keys, Shapes::Prepared).into_iter().map(Statement::Delete).collect())
            }
        }
    }
}

impl Writes {
    /// Runs every statement on `conn`, in order.
    pub(crate) async fn run(&self, conn: &impl ConnectionTrait) -> Result<(), DbErr> {
        for write in &self.0 {
            for statement in write.statements()? {
                match statement {
                    Statement::Upsert(insert) => conn.execute(&insert).await?,
                    Statement::Delete(delete) => conn.execute(&delete).await?,
                };
            }
        }
        Ok(())
    }

    /// Appends every statement to `script`, in order: upserts written
    /// straight in (building a statement first cost more than writing it).
    pub(crate) fn script(&self, script: &mut Script) -> Result<(), Unscriptable> {
        for write in &self.0 {
            match write {
                Write::Upsert { table, columns, primary, rows } => {
                    let insert = Write::insert(table, columns, primary);
                    for chunk in Shapes::Script.chunks(rows, ROWS_PER_STATEMENT) {
                        script.push_insert(&insert, chunk)?;
                    }
                }
                Write::Delete { table, primary, keys } => {
                    for delete in Write::deletes(table, primary, keys, Shapes::Script) {
                        script.push(&delete)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The statements of `self`, then those of `other`.
    pub(crate) fn then(mut self, other: Writes) -> Writes {
        self.0.extend(other.0);
        self
    }

    /// Inserts `models` into `table`, replacing the rows with the same primary key.
    fn upsert<E>(&mut self, table: &str, models: &[&E::Model])
    where
        E: EntityTrait,
    {
        if models.is_empty() {
            return;
        }
        let columns: Vec<E::Column> = E::Column::iter().collect();
        self.0.push(Write::Upsert {
            table: table.to_string(),
            columns: columns.iter().map(|column| column.as_str()).collect(),
            primary: primary_columns::<E>().iter().map(|column| column.as_str()).collect(),
            rows: models.iter().map(|model| columns.iter().map(|column| model.get(*column)).collect()).collect(),
        });
    }

    /// Deletes the rows of `table` with the primary keys `keys`.
    fn delete<E>(&mut self, table: &str, keys: Vec<Vec<Value>>)
    where
        E: EntityTrait,
    {
        if keys.is_empty() {
            return;
        }
        self.0.push(Write::Delete {
            table: table.to_string(),
            primary: primary_columns::<E>().iter().map(|column| column.as_str()).collect(),
            keys,
        });
    }
}

/// The rows of one table that a batch reads and changes, keyed by `K`.
#[derive(Debug, Clone)]
pub struct Rows<K: Ord, M> {
    rows: BTreeMap<K, M>,
    changed: BTreeSet<K>,
    removed: BTreeSet<K>,
}

impl<K: Ord, M> Default for Rows<K, M> {
    fn default() -> Self {
        Self { rows: BTreeMap::new(), changed: BTreeSet::new(), removed: BTreeSet::new() }
    }
}

impl<K: Ord + Clone, M> Rows<K, M> {
    /// Rows as loaded, nothing changed yet.
    pub(crate) fn loaded(rows: impl IntoIterator<Item = (K, M)>) -> Self {
        Self { rows: rows.into_iter().collect(), ..Self::default() }
    }

    /// Adds rows as loaded (not changed), keeping any already held.
    pub(crate) fn extend_loaded(&mut self, rows: impl IntoIterator<Item = (K, M)>) {
        for (key, row) in rows {
            self.rows.entry(key).or_insert(row);
        }
    }

    /// Lays `saved`, rows just saved (nothing changed since), over these:
    /// its rows replace those with the same keys. Saving forgets removals,
    /// so a row `saved` removed stays here: for tables whose rows are never
    /// removed.
    pub(crate) fn lay_over(&mut self, saved: Rows<K, M>) {
        self.rows.extend(saved.rows);
    }

    /// How many rows are held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row at `key`, if any.
    pub fn get(&self, key: &K) -> Option<&M> {
        self.rows.get(key)
    }

    /// The row at `key` for changing, if any.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut M> {
        let row = self.rows.get_mut(key)?;
        self.removed.remove(key);
        self.changed.insert(key.clone());
        Some(row)
    }

    /// Sets the row at `key`.
    pub(crate) fn put(&mut self, key: K, row: M) {
        self.removed.remove(&key);
        self.changed.insert(key.clone());
        self.rows.insert(key, row);
    }

    /// Removes the row at `key`.
    pub(crate) fn remove(&mut self, key: &K) {
        if self.rows.remove(key).is_some() {
            self.changed.remove(key);
            self.removed.insert(key.clone());
        }
    }

    /// The statements that write what changed to `table`; the changes are
    /// then forgotten.
    pub(crate) fn writes<E>(&mut self, table: &str, key_values: impl Fn(&K) -> Vec<Value>) -> Result<Writes, DbErr>
    where
        E: EntityTrait<Model = M>,
        M: ModelTrait<Entity = E>,
    {
        let mut writes = Writes::default();
        let changed: Vec<&M> = self.changed.iter().filter_map(|k| self.rows.get(k)).collect();
        writes.upsert::<E>(table, &changed);
        writes.delete::<E>(table, self.removed.iter().map(&key_values).collect());
        self.changed.clear();
        self.removed.clear();
        Ok(writes)
    }
}

/// One row that differs between what the log says and what is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The read-model table.
    pub table: &'static str,
    /// The row's primary key.
    pub key: String,
    /// The row a replay of the log gives (`null`: the row should not exist).
    pub expected: serde_json::Value,
    /// The stored row (`null`: it is missing).
    pub found: serde_json::Value,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: expected {}, found {}", self.table, self.key, self.expected, self.found)
    }
}

/// Every difference between two versions of one table.
pub(crate) fn diff<K, M>(table: &'static str, expected: &Rows<K, M>, found: &Rows<K, M>) -> Vec<Difference>
where
    K: Ord + Clone + std::fmt::Debug,
    M: Serialize + PartialEq,
{
    let as_json =
        |row: Option<&M>| row.map_or(serde_json::Value::Null, |r| serde_json::to_value(r).unwrap_or_default());
    let keys: BTreeSet<&K> = expected.rows.keys().chain(found.rows.keys()).collect();
    keys.into_iter()
        .filter(|key| expected.rows.get(*key) != found.rows.get(*key))
        .map(|key| Difference {
            table,
            key: format!("{key:?}"),
            expected: as_json(expected.rows.get(key)),
            found: as_json(found.rows.get(key)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::MysqlQueryBuilder;

    use super::*;
    use crate::entities::balances;
    use crate::read_models::wallets::empty_balance;

    fn balance(member: &str, points: i64) -> balances::Model {
        balances::Model { balance: points, earned: points, last_position: 7, ..empty_balance(member, "cafe") }
    }

    /// Three changed rows and one removed, as `Rows::writes` gives them.
    fn writes() -> Writes {
        let key = |m: &balances::Model| (m.member_id.clone(), m.store_id.clone());
        let mut rows = Rows::loaded([("dan", 1)].map(|(m, p)| (key(&balance(m, p)), balance(m, p))));
        for (member, points) in [("ann", 100), ("bob", 200), ("cyd", 300)] {
            rows.put(key(&balance(member, points)), balance(member, points));
        }
        rows.remove(&("dan".to_string(), "cafe".to_string()));
        rows.writes::<balances::Entity>("balances", |(m, s)| vec![m.as_str().into(), s.as_str().into()])
            .expect("rows make statements")
    }

    #[test]
    fn a_script_writes_each_changed_row_once() {
        let mut script = Script::new();
        writes().script(&mut script).expect("a balance has literals");
        let sql = script.sql();
        assert_eq!(script.len(), 2, "one upsert and one delete: {sql}");
        let upsert = sql.split(';').next().unwrap_or_default();
        assert_eq!(upsert.matches("X'63616665'").count(), 3, "the store, once a row: {upsert}");
        for points in [100, 200, 300] {
            assert_eq!(upsert.matches(&format!(", {points}, {points}, ")).count(), 1, "{upsert}");
        }
        assert!(sql.contains("DELETE FROM `balances`"), "{sql}");
    }

    #[test]
    fn prepared_statements_are_padded_to_a_few_shapes() {
        let statements: Vec<Statement> =
            writes().0.iter().flat_map(|write| write.statements().expect("statements")).collect();
        let Some(Statement::Upsert(upsert)) = statements.first() else { panic!("the upsert comes first") };
        let (sql, values) = upsert.build(MysqlQueryBuilder);
        // Four rows of eleven columns: the third row repeated.
        assert_eq!(values.0.len(), 4 * 11, "{sql}");
        assert!(matches!(statements.get(1), Some(Statement::Delete(_))));
    }
}
