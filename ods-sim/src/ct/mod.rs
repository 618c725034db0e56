//! Change Tracking emulation and the SQL Server catalog inside the backing PostgreSQL database.
//!
//! `install` creates the `ct`, `sim`, `sys` and `"INFORMATION_SCHEMA"` objects (`install.sql`);
//! the other functions are thin wrappers over the PostgreSQL functions it defines, so the same
//! operations are reachable from T-SQL through the translator. See `docs/ods-simulator.md`,
//! "Change Tracking emulation (schema ct)".

use crate::types::{SqlType, TableDef};
use tokio_postgres::Client;

const INSTALL_SQL: &str = include_str!("install.sql");

/// PostgreSQL's identifier length limit, in bytes (NAMEDATALEN - 1).
const MAX_IDENT_BYTES: usize = 63;

/// Install the `ct`, `sys`, `INFORMATION_SCHEMA` and `sim` schemas into an empty database.
/// Idempotent. `database` is the name the database has over TDS.
pub async fn install(client: &Client, database: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "set client_min_messages = warning;\n{INSTALL_SQL}\nreset client_min_messages;"
        ))
        .await?;
    client
        .execute(
            "insert into sim.meta (key, value) values ('database_name', $1) \
             on conflict (key) do update set value = excluded.value",
            &[&database],
        )
        .await?;
    Ok(())
}

/// Create a user table from its SQL Server definition and record its declared types.
pub async fn create_table(client: &Client, def: &TableDef) -> Result<(), tokio_postgres::Error> {
    // One simple-query string runs as one implicit transaction.
    client
        .batch_execute(&create_table_statements(def).join(";\n"))
        .await
}

/// The PostgreSQL statements that create `def` (table with its primary key `<Name>_PK`) and
/// record its declared SQL Server types in `sim.columns`, each a single statement without
/// parameters. For the translator's `CREATE TABLE`; run them in one transaction.
pub fn create_table_statements(def: &TableDef) -> Vec<String> {
    let schema = pg_truncate(&def.schema);
    let name = pg_truncate(&def.name);
    let mut items: Vec<String> = def
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                quote_ident(&c.name),
                c.ty.pg_type(),
                if c.nullable { "" } else { " not null" }
            )
        })
        .collect();
    if !def.primary_key.is_empty() {
        let keys: Vec<String> = def.primary_key.iter().map(|k| quote_ident(k)).collect();
        items.push(format!(
            "constraint {} primary key ({})",
            quote_ident(&pg_object_name("", &format!("{}_PK", def.name))),
            keys.join(", ")
        ));
    }
    let mut statements = vec![
        format!(
            "create table {}.{} ({})",
            quote_ident(&schema),
            quote_ident(&name),
            items.join(", ")
        ),
        format!(
            "delete from sim.columns where table_schema = {} and table_name = {}",
            quote_literal(&schema),
            quote_literal(&name)
        ),
    ];
    if !def.columns.is_empty() {
        let rows: Vec<String> = def
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let t = declared_type(&c.ty);
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                    quote_literal(&schema),
                    quote_literal(&name),
                    quote_literal(&pg_truncate(&c.name)),
                    i + 1,
                    quote_literal(t.data_type),
                    sql_int(t.max_length),
                    sql_int(t.numeric_precision),
                    sql_int(t.numeric_scale),
                    sql_int(t.datetime_precision),
                    c.nullable
                )
            })
            .collect();
        statements.push(format!(
            "insert into sim.columns (table_schema, table_name, column_name, ordinal, data_type, \
             max_length, numeric_precision, numeric_scale, datetime_precision, is_nullable) \
             values {}",
            rows.join(", ")
        ));
    }
    statements
}

/// `ALTER DATABASE … SET CHANGE_TRACKING = ON (CHANGE_RETENTION = n units, AUTO_CLEANUP = …)`.
/// `units`: 1 minutes, 2 hours, 3 days. When CT is already on, updates the settings.
pub async fn enable_database(
    client: &Client,
    retention: i32,
    units: i32,
    auto_cleanup: bool,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "select ct.enable_database($1, $2, $3)",
            &[&retention, &units, &auto_cleanup],
        )
        .await?;
    Ok(())
}

/// `ALTER DATABASE … SET CHANGE_TRACKING = OFF` (fails while a table is tracked).
pub async fn disable_database(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.execute("select ct.disable_database()", &[]).await?;
    Ok(())
}

/// `ALTER TABLE s.t ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = …)`.
pub async fn enable_table(
    client: &Client,
    schema: &str,
    name: &str,
    track_columns: bool,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "select ct.enable_table($1, $2, $3)",
            &[&pg_truncate(schema), &pg_truncate(name), &track_columns],
        )
        .await?;
    Ok(())
}

/// `ALTER TABLE s.t DISABLE CHANGE_TRACKING`.
pub async fn disable_table(
    client: &Client,
    schema: &str,
    name: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "select ct.disable_table($1, $2)",
            &[&pg_truncate(schema), &pg_truncate(name)],
        )
        .await?;
    Ok(())
}

/// Retention cleanup on demand (`sim.cleanup_change_tracking`): removes the changes of
/// transactions committed at least `retention_seconds` ago (`None`: the database's retention).
/// Returns the highest removed version, `None` when nothing was old enough or CT is off.
pub async fn cleanup(
    client: &Client,
    retention_seconds: Option<i64>,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "select sim.cleanup_change_tracking($1)",
            &[&retention_seconds],
        )
        .await?;
    row.try_get(0)
}

/// The quoted, schema-qualified name of the change function of table `schema.name`, e.g.
/// `ct."changes:edfi.Student"`: `CHANGETABLE(CHANGES edfi.Student, @last)` is
/// `ct."changes:edfi.Student"($1)`.
pub fn changes_function(schema: &str, name: &str) -> String {
    format!(
        "ct.{}",
        quote_ident(&pg_object_name(
            "changes:",
            &format!("{}.{}", pg_truncate(schema), pg_truncate(name))
        ))
    )
}

/// The quoted, schema-qualified name of the change log table of `schema.name`.
pub fn log_table(schema: &str, name: &str) -> String {
    format!(
        "ct.{}",
        quote_ident(&pg_object_name(
            "log:",
            &format!("{}.{}", pg_truncate(schema), pg_truncate(name))
        ))
    )
}

/// `prefix` + `rest` when it fits PostgreSQL's 63-byte identifiers, else its first 54 bytes
/// (whole characters), `~` and 8 hex digits of a hash of the whole text. Identical to the
/// PostgreSQL function `ct.object_ident`.
fn pg_object_name(prefix: &str, rest: &str) -> String {
    let whole = format!("{prefix}{rest}");
    if whole.len() <= MAX_IDENT_BYTES {
        return whole;
    }
    let hash = whole
        .bytes()
        .fold(0i64, |h, b| (h * 31 + i64::from(b)) % 2_147_483_647);
    format!("{}~{hash:08x}", clip(&whole, MAX_IDENT_BYTES - 9))
}

/// An identifier as PostgreSQL stores it: clipped to 63 bytes on a character boundary.
fn pg_truncate(ident: &str) -> String {
    clip(ident, MAX_IDENT_BYTES).to_string()
}

fn clip(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_int(v: Option<i32>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

/// A declared type as `INFORMATION_SCHEMA.COLUMNS` describes it.
struct DeclaredType {
    data_type: &'static str,
    max_length: Option<i32>,
    numeric_precision: Option<i32>,
    numeric_scale: Option<i32>,
    datetime_precision: Option<i32>,
}

fn declared_type(ty: &SqlType) -> DeclaredType {
    fn base(data_type: &'static str) -> DeclaredType {
        DeclaredType {
            data_type,
            max_length: None,
            numeric_precision: None,
            numeric_scale: None,
            datetime_precision: None,
        }
    }
    fn exact(data_type: &'static str, precision: i32, scale: i32) -> DeclaredType {
        DeclaredType {
            numeric_precision: Some(precision),
            numeric_scale: Some(scale),
            ..base(data_type)
        }
    }
    fn chars(data_type: &'static str, n: Option<u16>) -> DeclaredType {
        DeclaredType {
            max_length: Some(n.map_or(-1, i32::from)),
            ..base(data_type)
        }
    }
    fn datetime(data_type: &'static str, precision: i32) -> DeclaredType {
        DeclaredType {
            datetime_precision: Some(precision),
            ..base(data_type)
        }
    }
    match ty {
        SqlType::Bit => base("bit"),
        SqlType::TinyInt => exact("tinyint", 3, 0),
        SqlType::SmallInt => exact("smallint", 5, 0),
        SqlType::Int => exact("int", 10, 0),
        SqlType::BigInt => exact("bigint", 19, 0),
        SqlType::Decimal { precision, scale } => {
            exact("decimal", i32::from(*precision), i32::from(*scale))
        }
        SqlType::Float => DeclaredType {
            numeric_precision: Some(53),
            ..base("float")
        },
        SqlType::NVarChar(n) => chars("nvarchar", *n),
        SqlType::VarChar(n) => chars("varchar", *n),
        SqlType::NChar(n) => chars("nchar", Some(*n)),
        SqlType::Date => datetime("date", 0),
        SqlType::DateTime2 { scale } => datetime("datetime2", i32::from(*scale)),
        SqlType::DateTime => datetime("datetime", 3),
        SqlType::UniqueIdentifier => base("uniqueidentifier"),
        SqlType::VarBinary(n) => chars("varbinary", *n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(
            changes_function("edfi", "Student"),
            "ct.\"changes:edfi.Student\""
        );
        assert_eq!(log_table("dbo", "A\"b"), "ct.\"log:dbo.A\"\"b\"");
    }

    #[test]
    fn long_names_are_hashed_like_postgres() {
        // Same value as `select ct.object_ident('changes', 'edfi',
        // 'StudentEducationOrganizationAssociationStudentCharacteristicPeriod')`: the table
        // name is first clipped to 63 bytes, as PostgreSQL stores it.
        assert_eq!(
            changes_function(
                "edfi",
                "StudentEducationOrganizationAssociationStudentCharacteristicPeriod"
            ),
            "ct.\"changes:edfi.StudentEducationOrganizationAssociationSt~0229dc9a\""
        );
    }

    #[test]
    fn clip_respects_char_boundaries() {
        let s = "é".repeat(40);
        assert_eq!(pg_truncate(&s).len(), 62);
    }
}
