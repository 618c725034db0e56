//! The configured tables in the PostgreSQL catalog, mapped onto the event model's SQL Server
//! type names (so the sinks create the same target columns whichever source feeds them), and
//! the checks that logical decoding can replicate them: `wal_level = logical`, the replication
//! privilege, a primary key and a replica identity on every table.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use crate::config::ConnectorConfig;
use crate::event::{ColumnSchema, SourceType, TableId, TableSchema};
use crate::source::{table_schema, SourceError};

use super::{pg_error, queries};

pub struct Catalog {
    pub schemas: Vec<Arc<TableSchema>>,
}

/// A table as the catalog describes it: replica identity (`pg_class.relreplident`), kind
/// (`relkind`) and columns.
struct Found {
    id: TableId,
    identity: char,
    kind: char,
    columns: Vec<ColumnSchema>,
}

/// The event model's type for a PostgreSQL column type (`pg_type.typname`, typmod-decoded
/// length, precision and scale). Types without an equivalent travel as text.
pub fn source_type(
    typname: &str,
    length: Option<i32>,
    precision: Option<i32>,
    scale: Option<i32>,
) -> SourceType {
    let st = |name: &str, max_length: Option<i32>| SourceType {
        name: name.into(),
        max_length,
        precision: None,
        scale: None,
    };
    match typname {
        "bool" => st("bit", None),
        "int2" => st("smallint", None),
        "int4" | "oid" => st("int", None),
        "int8" => st("bigint", None),
        "float4" => st("real", None),
        "float8" => st("float", None),
        "numeric" => SourceType {
            name: "decimal".into(),
            max_length: None,
            precision: precision.map(|p| p.clamp(1, 255) as u8),
            scale: scale.map(|s| s.clamp(0, 255) as u8),
        },
        "varchar" => st("nvarchar", length),
        "bpchar" => st("nchar", length),
        "bytea" => st("varbinary", None),
        "date" => st("date", None),
        "timestamp" => st("datetime2", None),
        "timestamptz" => st("datetimeoffset", None),
        "time" => st("time", None),
        "uuid" => st("uniqueidentifier", None),
        _ => st("nvarchar", None),
    }
}

/// Read the configured tables' columns and keys; every table that cannot be replicated is
/// named in one error, with its fix.
pub async fn discover(client: &Client, config: &ConnectorConfig) -> Result<Catalog, SourceError> {
    let mut setup = Vec::new();
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    if wal_level != "logical" {
        setup.push(format!(
            "wal_level is `{wal_level}`, logical decoding needs `logical`: set it (on RDS/Aurora: rds.logical_replication = 1 in the parameter group) and restart the server"
        ));
    }
    let row = client
        .query_one(queries::ROLE, &[])
        .await
        .map_err(pg_error)?;
    let (user, can_replicate): (String, bool) = (row.get(0), row.get(1));
    if !can_replicate {
        setup.push(format!(
            "role `{user}` may not read replication slots: ALTER ROLE \"{user}\" REPLICATION (on RDS/Aurora: GRANT rds_replication TO \"{user}\")"
        ));
    }

    let wanted = config.tables();
    let lookup = |schema: &str, table: &str| (schema.to_lowercase(), table.to_lowercase());
    let mut tables: HashMap<(String, String), Found> = HashMap::new();
    for r in client
        .query(queries::COLUMNS, &[])
        .await
        .map_err(pg_error)?
    {
        let (schema, table): (String, String) = (r.get(0), r.get(1));
        let key = lookup(&schema, &table);
        if !wanted.iter().any(|t| lookup(&t.schema, &t.name) == key) {
            continue;
        }
        let identity = r.get::<_, i8>(8) as u8 as char;
        let kind = r.get::<_, i8>(9) as u8 as char;
        let entry = tables.entry(key).or_insert_with(|| Found {
            id: TableId::new(&schema, &table),
            identity,
            kind,
            columns: Vec::new(),
        });
        entry.columns.push(ColumnSchema {
            name: r.get(2),
            source_type: source_type(r.get(3), r.get(4), r.get(5), r.get(6)),
            nullable: r.get(7),
        });
    }
    let mut keys: HashMap<(String, String), Vec<String>> = HashMap::new();
    for r in client
        .query(queries::PRIMARY_KEYS, &[])
        .await
        .map_err(pg_error)?
    {
        keys.entry(lookup(r.get(0), r.get(1)))
            .or_default()
            .push(r.get(2));
    }

    let mut problems = Vec::new();
    let mut schemas = Vec::new();
    for t in &wanted {
        let key = lookup(&t.schema, &t.name);
        let Some(Found {
            id,
            identity,
            kind,
            columns: cols,
        }) = tables.remove(&key)
        else {
            problems.push(format!(
                "table {t} does not exist in the source database (or the login cannot see it)"
            ));
            continue;
        };
        let Some(key_names) = keys.get(&key) else {
            problems.push(format!(
                "table {id} has no primary key: every target row is keyed by it; add one (ALTER TABLE {id} ADD PRIMARY KEY (…)) or remove the table from the connector"
            ));
            continue;
        };
        if kind == 'p' {
            problems.push(format!(
                "table {id} is partitioned: its changes are published under each partition's name, which edfi-cdc does not replicate; remove it from the connector"
            ));
            continue;
        }
        match identity {
            'n' => {
                problems.push(format!(
                    "table {id} has REPLICA IDENTITY NOTHING, so its updates and deletes are not decoded: ALTER TABLE {id} REPLICA IDENTITY DEFAULT"
                ));
                continue;
            }
            'i' => {
                problems.push(format!(
                    "table {id} has REPLICA IDENTITY USING INDEX: deletes would carry that index's columns, not the primary key: ALTER TABLE {id} REPLICA IDENTITY DEFAULT"
                ));
                continue;
            }
            _ => {}
        }
        schemas.push(table_schema(config, t, id, cols, key_names, &mut problems));
    }
    if !setup.is_empty() {
        return Err(SourceError::NotDecodable(setup));
    }
    if !problems.is_empty() {
        return Err(SourceError::Tables(problems));
    }
    Ok(Catalog { schemas })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_types_map_to_the_event_models_names() {
        assert_eq!(
            source_type("varchar", Some(60), None, None).name,
            "nvarchar"
        );
        assert_eq!(
            source_type("varchar", Some(60), None, None).max_length,
            Some(60)
        );
        assert_eq!(source_type("text", None, None, None).max_length, None);
        let d = source_type("numeric", None, Some(9), Some(2));
        assert_eq!(
            (d.name.as_str(), d.precision, d.scale),
            ("decimal", Some(9), Some(2))
        );
        assert_eq!(
            source_type("timestamptz", None, None, None).name,
            "datetimeoffset"
        );
        assert_eq!(source_type("jsonb", None, None, None).name, "nvarchar");
    }
}
