//! `ALTER TABLE … ADD / ALTER COLUMN / DROP COLUMN / ADD PRIMARY KEY / DROP CONSTRAINT` of a
//! user table, tracked or not: SQL Server's checks first, with its error numbers and texts, then
//! the backing table's change and its declared types in `sim.columns`, in one transaction.
//! Change Tracking logs only key columns, which cannot be altered or dropped (nor the key itself
//! while the table is tracked), so a tracked table stays tracked; the DDL itself logs no change,
//! as in SQL Server.
//!
//! SQL Server's rules:
//! - `ADD`: a name already in the table (in any case) or twice in the list is error 2705; a
//!   `NOT NULL` column without a default needs an empty table (4901). A `NOT NULL` column with a
//!   default fills the existing rows with it, a nullable one leaves them NULL (SQL Server's
//!   `WITH VALUES` is not supported). The new column's ordinal (`column_id`) is one above the
//!   highest the table ever used, which is its PostgreSQL column number.
//! - `ALTER COLUMN`: the new type and nullability (nullable when not written); data that does
//!   not fit fails (PostgreSQL's errors, mapped by the server: 8152 for strings too long).
//! - `ALTER COLUMN` or `DROP COLUMN` of a primary key column: 5074 "The object 'PK' is dependent
//!   on column 'c'." then 4922; of a column the table does not have: 4924 (`DROP COLUMN IF
//!   EXISTS` skips it); dropping every column: 4923. A missing table: 4902.
//!
//! - `ADD [CONSTRAINT name] PRIMARY KEY (…)`: a table with a primary key is 1779; a nullable or
//!   missing column 8111 or 1911; duplicate keys in the rows 1505; each followed by 1750. The
//!   constraint is named `<Table>_PK` when the statement names none, as `CREATE TABLE` names it.
//! - `DROP CONSTRAINT`: only a primary key; while the table is tracked, 3735 (Change Tracking
//!   needs the key: switch it off, change the key, switch it on again — the only way a tracked
//!   table's key changes); a name that is no constraint of the table 3728 (`IF EXISTS` skips
//!   it); each followed by 3727.
//!
//! Column names match exactly or, failing that, case-insensitively when one column matches (SQL
//! Server's default collation).

use super::{declared_values, pg_truncate, quote_ident, quote_literal, SIM_COLUMNS};
use crate::types::{ColumnChange, ColumnDef, SqlError, SqlType, TableAlter};
use tokio_postgres::Client;

/// Why [`alter_table`] changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum AlterError {
    /// SQL Server refuses the change with this error.
    #[error(transparent)]
    Refused(#[from] SqlError),
    /// The backing database failed (e.g. existing data does not fit the new type).
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// Columns in order, and the primary key's constraint name and columns, of a user table
/// (`$1`: its quoted name), the columns that are `NOT NULL`, and whether Change Tracking is on
/// for it; no row for a missing table.
const TABLE: &str = "\
select array(select a.attname::text from pg_catalog.pg_attribute a
             where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
             order by a.attnum),
       con.conname::text,
       array(select a.attname::text from pg_catalog.pg_attribute a
             where a.attrelid = c.oid and a.attnum = any(con.conkey)),
       array(select a.attname::text from pg_catalog.pg_attribute a
             where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attnotnull),
       exists (select 1 from ct.tables t where t.object_id = c.oid::integer)
from pg_catalog.pg_class c
left join pg_catalog.pg_constraint con on con.conrelid = c.oid and con.contype = 'p'
where c.oid = to_regclass($1) and c.relkind in ('r', 'p')";

/// What the checks know of the table.
#[derive(Debug)]
struct Table {
    columns: Vec<String>,
    /// Constraint name and key columns.
    primary_key: Option<(String, Vec<String>)>,
    not_null: Vec<String>,
    tracked: bool,
}

/// Check `alter` as SQL Server does, then run it. Atomic: the table and `sim.columns` change
/// together or not at all (one implicit transaction, or the caller's).
pub async fn alter_table(client: &Client, alter: &TableAlter) -> Result<(), AlterError> {
    let target = relation(alter);
    let row = client
        .query_opt(TABLE, &[&target])
        .await?
        .ok_or_else(|| {
            SqlError::new(
                4902,
                16,
                format!(
                    "Cannot find the object \"{}\" because it does not exist or you do not have permissions.",
                    alter.name
                ),
            )
        })?;
    let key_name: Option<String> = row.get(1);
    let table = Table {
        columns: row.get(0),
        primary_key: key_name.map(|name| (name, row.get(2))),
        not_null: row.get(3),
        tracked: row.get(4),
    };
    let statements = statements(alter, &table)?;
    if let ColumnChange::Add(columns) = &alter.change {
        if let Some(col) = columns.iter().find(|c| !c.nullable && c.default.is_none()) {
            let filled: bool = client
                .query_one(&format!("select exists (select 1 from {target})"), &[])
                .await?
                .get(0);
            if filled {
                return Err(not_null_on_filled_table(col, &alter.name).into());
            }
        }
    }
    if !statements.is_empty() {
        // One simple-query string runs as one implicit transaction.
        if let Err(e) = client.batch_execute(&statements.join(";\n")).await {
            return Err(match (&alter.change, duplicate_key(&e)) {
                (ColumnChange::AddPrimaryKey { name, .. }, Some(value)) => {
                    let index = name.clone().unwrap_or_else(|| default_key_name(alter));
                    not_created(SqlError::new(
                        1505,
                        16,
                        format!(
                            "The CREATE UNIQUE INDEX statement terminated because a duplicate key was found for the object name '{}.{}' and the index name '{index}'. The duplicate key value is {value}.",
                            alter.schema, alter.name
                        ),
                    ))
                    .into()
                }
                _ => e.into(),
            });
        }
    }
    Ok(())
}

/// The duplicated key of a unique index PostgreSQL could not build, as SQL Server prints it:
/// `(1, 2)`.
fn duplicate_key(e: &tokio_postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    if db.code() != &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
        return None;
    }
    // "Key (a, b)=(1, 2) is duplicated."
    let detail = db.detail()?;
    let start = detail.find(")=(")? + 2;
    let end = detail.rfind(") is duplicated")? + 1;
    (start < end).then(|| detail[start..end].to_string())
}

/// The name `CREATE TABLE` gives a primary key: `<Table>_PK`.
fn default_key_name(alter: &TableAlter) -> String {
    format!("{}_PK", alter.name)
}

/// `e`, then 1750: how SQL Server ends a failed `ADD … PRIMARY KEY`.
fn not_created(e: SqlError) -> SqlError {
    SqlError::new(
        1750,
        16,
        "Could not create constraint or index. See previous errors.",
    )
    .after(e)
}

/// `e`, then 3727: how SQL Server ends a failed `DROP CONSTRAINT`.
fn not_dropped(e: SqlError) -> SqlError {
    SqlError::new(3727, 16, "Could not drop constraint. See previous errors.").after(e)
}

/// The PostgreSQL statements of `alter` on `table`, or the error SQL Server refuses it with (all
/// but 4901, which depends on the data). Empty when there is nothing to do.
fn statements(alter: &TableAlter, table: &Table) -> Result<Vec<String>, SqlError> {
    let target = relation(alter);
    match &alter.change {
        ColumnChange::Add(columns) => {
            for (i, col) in columns.iter().enumerate() {
                let earlier = columns[..i].iter().map(|c| &c.name);
                if table
                    .columns
                    .iter()
                    .chain(earlier)
                    .any(|c| c.eq_ignore_ascii_case(&col.name))
                {
                    return Err(SqlError::new(
                        2705,
                        16,
                        format!(
                            "Column names in each table must be unique. Column name '{}' in table '{}' is specified more than once.",
                            col.name, alter.name
                        ),
                    ));
                }
            }
            let items: Vec<String> = columns.iter().flat_map(add_items).collect();
            let mut out = vec![format!("alter table {target} {}", items.join(", "))];
            out.extend(
                columns
                    .iter()
                    .map(|c| record(alter, &c.name, &c.ty, c.nullable)),
            );
            Ok(out)
        }
        ColumnChange::Alter { name, ty, nullable } => {
            let col =
                find(table, name).ok_or_else(|| missing("ALTER COLUMN", name, &alter.name))?;
            refuse_key(table, col, "ALTER COLUMN", name)?;
            let quoted = quote_ident(col);
            Ok(vec![
                format!(
                    "alter table {target} alter column {quoted} type {}, alter column {quoted} {} not null",
                    ty.pg_type(),
                    if *nullable { "drop" } else { "set" }
                ),
                record(alter, col, ty, *nullable),
            ])
        }
        ColumnChange::Drop(columns) => {
            let mut dropped: Vec<&str> = Vec::new();
            for c in columns {
                match find(table, &c.name) {
                    None if c.if_exists => {}
                    None => return Err(missing("DROP COLUMN", &c.name, &alter.name)),
                    Some(col) => {
                        refuse_key(table, col, "DROP COLUMN", &c.name)?;
                        if !dropped.contains(&col) {
                            dropped.push(col);
                        }
                    }
                }
            }
            let Some(last) = dropped.last() else {
                return Ok(Vec::new());
            };
            if dropped.len() == table.columns.len() {
                return Err(SqlError::new(
                    4923,
                    16,
                    format!(
                        "ALTER TABLE DROP COLUMN failed because '{last}' is the only data column in table '{}'. A table must have at least one data column.",
                        alter.name
                    ),
                ));
            }
            let items: Vec<String> = dropped
                .iter()
                .map(|c| format!("drop column {}", quote_ident(c)))
                .collect();
            let names: Vec<String> = dropped
                .iter()
                .map(|c| quote_literal(&pg_truncate(c)))
                .collect();
            Ok(vec![
                format!("alter table {target} {}", items.join(", ")),
                format!(
                    "delete from sim.columns where table_schema = {} and table_name = {} \
                     and column_name in ({})",
                    quote_literal(&pg_truncate(&alter.schema)),
                    quote_literal(&pg_truncate(&alter.name)),
                    names.join(", ")
                ),
            ])
        }
        ColumnChange::AddPrimaryKey { name, columns } => {
            if table.primary_key.is_some() {
                return Err(not_created(SqlError::new(
                    1779,
                    16,
                    format!(
                        "Table '{}' already has a primary key defined on it.",
                        alter.name
                    ),
                )));
            }
            let mut key: Vec<&str> = Vec::new();
            for c in columns {
                let col = find(table, c).ok_or_else(|| {
                    not_created(SqlError::new(
                        1911,
                        16,
                        format!("Column name '{c}' does not exist in the target table or view."),
                    ))
                })?;
                if !table.not_null.iter().any(|n| n == col) {
                    return Err(not_created(SqlError::new(
                        8111,
                        16,
                        format!(
                            "Cannot define PRIMARY KEY constraint on nullable column in table '{}'.",
                            alter.name
                        ),
                    )));
                }
                key.push(col);
            }
            let name = name.clone().unwrap_or_else(|| default_key_name(alter));
            let key: Vec<String> = key.iter().map(|c| quote_ident(c)).collect();
            Ok(vec![format!(
                "alter table {target} add constraint {} primary key ({})",
                quote_ident(&pg_truncate(&name)),
                key.join(", ")
            )])
        }
        ColumnChange::DropConstraint { name, if_exists } => match &table.primary_key {
            Some((key, _)) if key.eq_ignore_ascii_case(name) => {
                if table.tracked {
                    return Err(not_dropped(SqlError::new(
                        3735,
                        16,
                        format!(
                            "The primary key constraint '{key}' on table '{}' cannot be dropped because change tracking is enabled on the table. Change tracking requires a primary key constraint on the table. Disable change tracking before dropping the constraint.",
                            alter.name
                        ),
                    )));
                }
                Ok(vec![format!(
                    "alter table {target} drop constraint {}",
                    quote_ident(key)
                )])
            }
            _ if *if_exists => Ok(Vec::new()),
            _ => Err(not_dropped(SqlError::new(
                3728,
                16,
                format!("'{name}' is not a constraint."),
            ))),
        },
    }
}

/// The `ALTER TABLE` items that add `col`. A default fills the existing rows only of a
/// `NOT NULL` column: a nullable column gets its default after it is added.
fn add_items(col: &ColumnDef) -> Vec<String> {
    let name = quote_ident(&col.name);
    let ty = col.ty.pg_type();
    match (col.default, col.nullable) {
        (Some(d), true) => vec![
            format!("add column {name} {ty}"),
            format!("alter column {name} set default {}", d.pg()),
        ],
        (Some(d), false) => vec![format!(
            "add column {name} {ty} default {} not null",
            d.pg()
        )],
        (None, true) => vec![format!("add column {name} {ty}")],
        (None, false) => vec![format!("add column {name} {ty} not null")],
    }
}

/// Records the declared type of column `column` (as PostgreSQL names it) in `sim.columns`, its
/// ordinal its column number.
fn record(alter: &TableAlter, column: &str, ty: &SqlType, nullable: bool) -> String {
    format!(
        "insert into sim.columns ({SIM_COLUMNS}) \
         select {}, {}, a.attname, a.attnum, {} from pg_catalog.pg_attribute a \
         where a.attrelid = {}::regclass and a.attname = {} \
         on conflict (table_schema, table_name, column_name) do update set \
         ordinal = excluded.ordinal, data_type = excluded.data_type, \
         max_length = excluded.max_length, numeric_precision = excluded.numeric_precision, \
         numeric_scale = excluded.numeric_scale, \
         datetime_precision = excluded.datetime_precision, is_nullable = excluded.is_nullable",
        quote_literal(&pg_truncate(&alter.schema)),
        quote_literal(&pg_truncate(&alter.name)),
        declared_values(ty, nullable),
        quote_literal(&relation(alter)),
        quote_literal(&pg_truncate(column))
    )
}

/// The table as PostgreSQL names it, quoted.
fn relation(alter: &TableAlter) -> String {
    format!(
        "{}.{}",
        quote_ident(&pg_truncate(&alter.schema)),
        quote_ident(&pg_truncate(&alter.name))
    )
}

/// The table's column `name`: the one of that exact name, else the only one of that name in
/// another case.
fn find<'a>(table: &'a Table, name: &str) -> Option<&'a str> {
    if let Some(col) = table.columns.iter().find(|c| *c == name) {
        return Some(col);
    }
    let mut same = table
        .columns
        .iter()
        .filter(|c| c.eq_ignore_ascii_case(name));
    match (same.next(), same.next()) {
        (Some(col), None) => Some(col),
        _ => None,
    }
}

/// 5074 then 4922 for a primary key column `col` (`written` as the statement names it).
fn refuse_key(table: &Table, col: &str, action: &str, written: &str) -> Result<(), SqlError> {
    match &table.primary_key {
        Some((key, columns)) if columns.iter().any(|c| c == col) => Err(SqlError::new(
            4922,
            16,
            format!("ALTER TABLE {action} {written} failed because one or more objects access this column."),
        )
        .after(SqlError::new(
            5074,
            16,
            format!("The object '{key}' is dependent on column '{written}'."),
        ))),
        _ => Ok(()),
    }
}

fn missing(action: &str, column: &str, table: &str) -> SqlError {
    SqlError::new(
        4924,
        16,
        format!(
            "ALTER TABLE {action} failed because column '{column}' does not exist in table '{table}'."
        ),
    )
}

fn not_null_on_filled_table(col: &ColumnDef, table: &str) -> SqlError {
    SqlError::new(
        4901,
        16,
        format!(
            "ALTER TABLE only allows columns to be added that can contain nulls, or have a DEFAULT definition specified, or the column being added is an identity or timestamp column, or alternatively if none of the previous conditions are satisfied the table must be empty to allow addition of this column. Column '{}' cannot be added to non-empty table '{table}' because it does not satisfy these conditions.",
            col.name
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ColumnDefault, DroppedColumn};

    fn item() -> Table {
        Table {
            columns: vec!["Id".into(), "Name".into(), "Val".into()],
            primary_key: Some(("Item_PK".into(), vec!["Id".into()])),
            not_null: vec!["Id".into(), "Name".into()],
            tracked: true,
        }
    }

    fn alter(change: ColumnChange) -> TableAlter {
        TableAlter {
            schema: "dbo".into(),
            name: "Item".into(),
            change,
        }
    }

    fn col(name: &str, nullable: bool, default: Option<ColumnDefault>) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            ty: SqlType::NVarChar(Some(20)),
            nullable,
            identity: false,
            default,
        }
    }

    fn drop(names: &[&str], if_exists: bool) -> TableAlter {
        alter(ColumnChange::Drop(
            names
                .iter()
                .map(|n| DroppedColumn {
                    name: n.to_string(),
                    if_exists,
                })
                .collect(),
        ))
    }

    fn error(alter: &TableAlter) -> SqlError {
        statements(alter, &item()).expect_err("refused")
    }

    #[test]
    fn add_fills_existing_rows_only_of_not_null_columns() {
        let stmts = statements(
            &alter(ColumnChange::Add(vec![
                col("A", true, None),
                col("B", true, Some(ColumnDefault::GetDate)),
                col("C", false, Some(ColumnDefault::NewId)),
            ])),
            &item(),
        )
        .unwrap();
        assert_eq!(
            stmts[0],
            "alter table \"dbo\".\"Item\" add column \"A\" varchar(20), \
             add column \"B\" varchar(20), \
             alter column \"B\" set default (statement_timestamp() AT TIME ZONE 'UTC'), \
             add column \"C\" varchar(20) default gen_random_uuid() not null"
        );
        assert_eq!(stmts.len(), 4);
        assert!(
            stmts[3].starts_with(
                "insert into sim.columns (table_schema, table_name, column_name, ordinal, \
                 data_type, max_length, numeric_precision, numeric_scale, datetime_precision, \
                 is_nullable) select 'dbo', 'Item', a.attname, a.attnum, 'nvarchar', 20, null, \
                 null, null, false from pg_catalog.pg_attribute a \
                 where a.attrelid = '\"dbo\".\"Item\"'::regclass and a.attname = 'C' on conflict"
            ),
            "{}",
            stmts[3]
        );
    }

    #[test]
    fn add_refuses_a_name_the_table_has_in_any_case() {
        for names in [&["name"][..], &["X", "x"][..]] {
            let e = error(&alter(ColumnChange::Add(
                names.iter().map(|n| col(n, true, None)).collect(),
            )));
            assert_eq!(e.number, 2705);
            assert_eq!(
                e.message,
                format!(
                    "Column names in each table must be unique. Column name '{}' in table 'Item' is specified more than once.",
                    names[names.len() - 1]
                )
            );
        }
    }

    #[test]
    fn alter_column_sets_type_and_nullability() {
        let stmts = statements(
            &alter(ColumnChange::Alter {
                name: "name".into(),
                ty: SqlType::NVarChar(Some(100)),
                nullable: true,
            }),
            &item(),
        )
        .unwrap();
        assert_eq!(
            stmts[0],
            "alter table \"dbo\".\"Item\" alter column \"Name\" type varchar(100), \
             alter column \"Name\" drop not null"
        );
        assert!(stmts[1].contains("'nvarchar', 100, null, null, null, true"));
        assert!(stmts[1].contains("a.attname = 'Name'"));
    }

    #[test]
    fn key_columns_cannot_be_altered_or_dropped() {
        let e = error(&alter(ColumnChange::Alter {
            name: "Id".into(),
            ty: SqlType::BigInt,
            nullable: false,
        }));
        assert_eq!(
            (e.number, e.message.as_str()),
            (
                4922,
                "ALTER TABLE ALTER COLUMN Id failed because one or more objects access this column."
            )
        );
        assert_eq!(
            e.preceding,
            vec![SqlError::new(
                5074,
                16,
                "The object 'Item_PK' is dependent on column 'Id'."
            )]
        );
        let e = error(&drop(&["Val", "Id"], false));
        assert_eq!(
            (e.number, e.message.as_str()),
            (
                4922,
                "ALTER TABLE DROP COLUMN Id failed because one or more objects access this column."
            )
        );
        assert_eq!(e.preceding[0].number, 5074);
    }

    #[test]
    fn a_tracked_key_cannot_be_dropped_and_a_second_key_not_added() {
        let drop_key = alter(ColumnChange::DropConstraint {
            name: "item_pk".into(),
            if_exists: false,
        });
        let e = error(&drop_key);
        assert_eq!((e.number, e.preceding[0].number), (3727, 3735));
        assert!(e.preceding[0]
            .message
            .starts_with("The primary key constraint 'Item_PK' on table 'Item' cannot be dropped because change tracking is enabled"));
        let untracked = Table {
            tracked: false,
            ..item()
        };
        assert_eq!(
            statements(&drop_key, &untracked).unwrap(),
            vec!["alter table \"dbo\".\"Item\" drop constraint \"Item_PK\""]
        );
        let e = statements(
            &alter(ColumnChange::DropConstraint {
                name: "Nope".into(),
                if_exists: false,
            }),
            &untracked,
        )
        .unwrap_err();
        assert_eq!(
            (
                e.number,
                e.preceding[0].number,
                e.preceding[0].message.as_str()
            ),
            (3727, 3728, "'Nope' is not a constraint.")
        );
        let skipped = alter(ColumnChange::DropConstraint {
            name: "Nope".into(),
            if_exists: true,
        });
        assert!(statements(&skipped, &untracked).unwrap().is_empty());
        let e = error(&alter(ColumnChange::AddPrimaryKey {
            name: None,
            columns: vec!["Id".into(), "Name".into()],
        }));
        assert_eq!(
            (
                e.number,
                e.preceding[0].number,
                e.preceding[0].message.as_str()
            ),
            (
                1750,
                1779,
                "Table 'Item' already has a primary key defined on it."
            )
        );
    }

    #[test]
    fn a_key_is_added_on_not_null_columns_of_a_table_without_one() {
        let keyless = Table {
            primary_key: None,
            tracked: false,
            ..item()
        };
        let add = |name: Option<&str>, columns: &[&str]| {
            statements(
                &alter(ColumnChange::AddPrimaryKey {
                    name: name.map(str::to_string),
                    columns: columns.iter().map(|c| c.to_string()).collect(),
                }),
                &keyless,
            )
        };
        assert_eq!(
            add(None, &["name", "Id"]).unwrap(),
            vec!["alter table \"dbo\".\"Item\" add constraint \"Item_PK\" primary key (\"Name\", \"Id\")"]
        );
        assert_eq!(
            add(Some("PK_Item2"), &["Id"]).unwrap(),
            vec!["alter table \"dbo\".\"Item\" add constraint \"PK_Item2\" primary key (\"Id\")"]
        );
        let e = add(None, &["Id", "Val"]).unwrap_err();
        assert_eq!(
            (
                e.number,
                e.preceding[0].number,
                e.preceding[0].message.as_str()
            ),
            (
                1750,
                8111,
                "Cannot define PRIMARY KEY constraint on nullable column in table 'Item'."
            )
        );
        let e = add(None, &["Gone"]).unwrap_err();
        assert_eq!((e.number, e.preceding[0].number), (1750, 1911));
    }

    #[test]
    fn missing_columns() {
        let e = error(&alter(ColumnChange::Alter {
            name: "Nope".into(),
            ty: SqlType::Int,
            nullable: true,
        }));
        assert_eq!(
            (e.number, e.message.as_str()),
            (
                4924,
                "ALTER TABLE ALTER COLUMN failed because column 'Nope' does not exist in table 'Item'."
            )
        );
        let e = error(&drop(&["Val", "Nope"], false));
        assert_eq!(
            (e.number, e.message.as_str()),
            (
                4924,
                "ALTER TABLE DROP COLUMN failed because column 'Nope' does not exist in table 'Item'."
            )
        );
        assert_eq!(
            statements(&drop(&["Nope"], true), &item()).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn drop_columns_and_their_declared_types() {
        assert_eq!(
            statements(&drop(&["val", "Name", "Nope"], true), &item()).unwrap(),
            vec![
                "alter table \"dbo\".\"Item\" drop column \"Val\", drop column \"Name\"",
                "delete from sim.columns where table_schema = 'dbo' and table_name = 'Item' \
                 and column_name in ('Val', 'Name')",
            ]
        );
        let keyless = Table {
            columns: vec!["A".into()],
            primary_key: None,
            not_null: Vec::new(),
            tracked: false,
        };
        let e = statements(&drop(&["A"], false), &keyless).unwrap_err();
        assert_eq!(e.number, 4923);
    }
}
