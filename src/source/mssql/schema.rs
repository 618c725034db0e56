//! Table metadata from the source catalog, and the checks that every configured table can be
//! replicated: it exists, has a primary key, has Change Tracking on, and the columns named in
//! the configuration exist.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ConnectorConfig;
use crate::event::{ColumnSchema, SourceType, TableId, TableSchema, Value};

use super::value::{as_i64, as_str};
use super::{queries, Connection, SourceError};
use crate::source::table_schema;

/// What the catalog says about the configured tables.
pub struct Catalog {
    pub schemas: Vec<Arc<TableSchema>>,
    /// Tables without Change Tracking, by name; empty when all are tracked.
    pub untracked: Vec<TableId>,
}

/// Columns by lower-cased `(schema, table)`, with the table's id as the catalog spells it.
type Columns = HashMap<(String, String), (TableId, Vec<ColumnSchema>)>;

/// The columns `sql` reads (rows shaped as [`queries::COLUMNS`]) of the tables in `wanted`.
async fn read_columns(
    conn: &mut Connection,
    sql: &str,
    params: &[Value],
    wanted: &[TableId],
) -> Result<Columns, SourceError> {
    let wanted: std::collections::HashSet<(String, String)> = wanted
        .iter()
        .map(|t| (t.schema.to_lowercase(), t.name.to_lowercase()))
        .collect();
    let mut columns: Columns = HashMap::new();
    for row in conn.rows(sql, params).await? {
        let (Some(schema), Some(table), Some(name), Some(ty)) = (
            as_str(&row[0]),
            as_str(&row[1]),
            as_str(&row[2]),
            as_str(&row[3]),
        ) else {
            continue;
        };
        let lookup = (schema.to_lowercase(), table.to_lowercase());
        if !wanted.contains(&lookup) {
            continue;
        }
        let max_length = as_i64(&row[4]).and_then(|n| (n >= 0).then_some(n as i32));
        let entry = columns
            .entry(lookup)
            .or_insert_with(|| (TableId::new(schema, table), Vec::new()));
        entry.1.push(ColumnSchema {
            name: name.to_string(),
            source_type: SourceType {
                name: ty.to_lowercase(),
                max_length,
                precision: as_i64(&row[5]).map(|p| p as u8),
                scale: as_i64(&row[6]).map(|s| s as u8),
            },
            nullable: as_str(&row[7]) == Some("YES"),
        });
    }
    Ok(columns)
}

/// Whether the replicated columns of any of `current` differ in the catalog now (one query
/// over their columns, cheap enough for every poll cycle). A table that vanished counts as
/// changed. A primary key changes only with Change Tracking switched off and on again, which
/// the cycle notices by the table's min valid version.
pub async fn columns_changed(
    conn: &mut Connection,
    config: &ConnectorConfig,
    current: &[Arc<TableSchema>],
) -> Result<bool, SourceError> {
    let wanted: Vec<TableId> = current.iter().map(|s| s.id.clone()).collect();
    let mut by_schema: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for t in &wanted {
        by_schema.entry(&t.schema).or_default().push(&t.name);
    }
    let mut params = Vec::new();
    for (schema, names) in &by_schema {
        params.push(Value::String(schema.to_string()));
        params.extend(names.iter().map(|n| Value::String(n.to_string())));
    }
    let groups: Vec<usize> = by_schema.values().map(Vec::len).collect();
    let sql = queries::columns_of(&groups);
    let mut columns = read_columns(conn, &sql, &params, &wanted).await?;
    let configured = config.tables();
    for schema in current {
        let lookup = (
            schema.id.schema.to_lowercase(),
            schema.id.name.to_lowercase(),
        );
        let Some((id, cols)) = columns.remove(&lookup) else {
            return Ok(true);
        };
        let key: Vec<String> = schema.key_columns().map(|c| c.name.clone()).collect();
        let spelled = wanted_spelling(&configured, &schema.id);
        let now = table_schema(config, &spelled, id, cols, &key, &mut Vec::new());
        if now.columns != schema.columns {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `id` as the configuration spells it (`configured`: its options are looked up by that name).
fn wanted_spelling(configured: &[TableId], id: &TableId) -> TableId {
    configured
        .iter()
        .find(|t| {
            t.schema.eq_ignore_ascii_case(&id.schema) && t.name.eq_ignore_ascii_case(&id.name)
        })
        .unwrap_or(id)
        .clone()
}

/// Read columns, keys and CT state of the configured tables. Problems that make a table
/// impossible to replicate (missing, no primary key, unknown configured column) are collected and
/// returned together as [`SourceError::Tables`].
pub async fn discover(
    conn: &mut Connection,
    config: &ConnectorConfig,
) -> Result<Catalog, SourceError> {
    let wanted = config.tables();
    let mut columns = read_columns(conn, queries::COLUMNS, &[], &wanted).await?;
    let mut keys: HashMap<(String, String), Vec<String>> = HashMap::new();
    for row in conn.rows(queries::PRIMARY_KEYS, &[]).await? {
        if let (Some(s), Some(t), Some(c)) = (as_str(&row[0]), as_str(&row[1]), as_str(&row[2])) {
            keys.entry((s.to_lowercase(), t.to_lowercase()))
                .or_default()
                .push(c.to_string());
        }
    }
    let tracked: Vec<(String, String)> = conn
        .rows(queries::TRACKED_TABLES, &[])
        .await?
        .iter()
        .filter_map(|r| Some((as_str(&r[0])?.to_lowercase(), as_str(&r[1])?.to_lowercase())))
        .collect();

    let mut problems = Vec::new();
    let mut schemas = Vec::new();
    let mut untracked = Vec::new();
    for t in &wanted {
        let lookup = (t.schema.to_lowercase(), t.name.to_lowercase());
        let Some((id, cols)) = columns.remove(&lookup) else {
            problems.push(format!(
                "table {t} does not exist in the source database (or the login cannot see it)"
            ));
            continue;
        };
        let Some(key_names) = keys.get(&lookup) else {
            problems.push(format!("table {id} has no primary key: Change Tracking needs one; add a primary key or remove the table from the connector"));
            continue;
        };
        if !tracked.contains(&lookup) {
            untracked.push(id.clone());
        }
        schemas.push(table_schema(config, t, id, cols, key_names, &mut problems));
    }
    if problems.is_empty() {
        Ok(Catalog { schemas, untracked })
    } else {
        Err(SourceError::Tables(problems))
    }
}
