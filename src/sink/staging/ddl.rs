//! The SQL Server → PostgreSQL type mapping (`docs/type-mapping.md`), creating missing target
//! tables and checking existing ones (target names: `sink::names`).

use tokio_postgres::GenericClient;

use crate::config::StagingSinkConfig;
use crate::event::{SourceType, TableSchema, ValueKind};
use crate::sink::names::{case, ident, PgName};

/// The PostgreSQL type for a SQL Server column type.
pub fn pg_type(t: &SourceType) -> String {
    let len = |default: &str| match t.max_length {
        Some(n) if n > 0 => format!("{default}({n})"),
        _ => "text".to_string(),
    };
    match t.name.as_str() {
        "bit" => "boolean".into(),
        "tinyint" | "smallint" => "smallint".into(),
        "int" => "integer".into(),
        "bigint" => "bigint".into(),
        "decimal" | "numeric" => match (t.precision, t.scale) {
            (Some(p), Some(s)) => format!("numeric({p},{s})"),
            _ => "numeric".into(),
        },
        "money" => "numeric(19,4)".into(),
        "smallmoney" => "numeric(10,4)".into(),
        "float" => "double precision".into(),
        "real" => "real".into(),
        "char" | "nchar" => match t.max_length {
            Some(n) if n > 0 => format!("char({n})"),
            _ => "text".into(),
        },
        "varchar" | "nvarchar" => len("varchar"),
        "date" => "date".into(),
        "datetime2" => "timestamp(6)".into(),
        "datetime" => "timestamp(3)".into(),
        "smalldatetime" => "timestamp(0)".into(),
        "datetimeoffset" => "timestamptz".into(),
        "time" => "time".into(),
        "uniqueidentifier" => "uuid".into(),
        "binary" | "varbinary" | "image" | "rowversion" | "timestamp" => "bytea".into(),
        _ => "text".into(),
    }
}

/// `CREATE TABLE` for a missing target.
pub fn create_table_sql(cfg: &StagingSinkConfig, schema: &TableSchema, target: &PgName) -> String {
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                ident(&case(cfg, &c.name)),
                pg_type(&c.source_type),
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    let keys: Vec<String> = schema
        .key_columns()
        .map(|c| ident(&case(cfg, &c.name)))
        .collect();
    format!(
        "CREATE TABLE {} (\n    {},\n    PRIMARY KEY ({})\n)",
        target.sql(),
        cols.join(",\n    "),
        keys.join(", ")
    )
}

/// Type family used to decide whether an existing column can hold the source's values.
fn family(pg: &str) -> &'static str {
    match pg {
        "boolean" => "bool",
        "smallint" | "integer" | "bigint" => "int",
        "numeric" | "double precision" | "real" => "number",
        "character varying" | "text" | "character" => "text",
        "date" => "date",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" => "time",
        "uuid" => "uuid",
        "bytea" => "bytes",
        _ => "other",
    }
}

fn int_width(pg: &str) -> u8 {
    match pg {
        "smallint" => 2,
        "integer" => 4,
        _ => 8,
    }
}

/// What [`ensure_table`] found and did.
#[derive(Debug, Default)]
pub struct Ensured {
    /// Why the target cannot hold the source's rows (empty: it can).
    pub problems: Vec<String>,
    /// What was changed in an existing target so that it can: columns added (NULL in its
    /// rows until the table is re-snapshotted), widened, or made nullable because the source
    /// no longer has them.
    pub evolved: Vec<String>,
    /// The source's primary key is another: the target takes it when the table's re-snapshot
    /// is published ([`rekey`]); until then its rows keep the old one.
    pub rekey: bool,
}

/// Give `table` (a target, or its snapshot's shadow) the source's primary key if its own is
/// another: the old key's constraint is dropped, the new one added (the table must hold no
/// two rows with the same new key: an empty target, or a shadow), and columns of the old key
/// that the source allows NULL in, or no longer has, lose their `NOT NULL`. A table without
/// a primary key (someone else's, keyed by a unique index) is left alone. Returns the old
/// key's columns when it changed the key.
pub async fn rekey(
    client: &impl GenericClient,
    cfg: &StagingSinkConfig,
    schema: &TableSchema,
    table: &PgName,
) -> Result<Option<Vec<String>>, tokio_postgres::Error> {
    let keys: Vec<String> = schema.key_columns().map(|c| case(cfg, &c.name)).collect();
    let Some((constraint, old)) = crate::sink::declared_key(client, table).await? else {
        return Ok(None);
    };
    if old == keys {
        return Ok(None);
    }
    let quoted: Vec<String> = keys.iter().map(|k| ident(k)).collect();
    let mut sql = vec![
        format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            table.sql(),
            ident(&constraint)
        ),
        format!(
            "ALTER TABLE {} ADD PRIMARY KEY ({})",
            table.sql(),
            quoted.join(", ")
        ),
    ];
    for name in old.iter().filter(|c| !keys.contains(c)) {
        let source = schema.columns.iter().find(|c| case(cfg, &c.name) == *name);
        if source.is_none_or(|c| c.nullable) {
            sql.push(format!(
                "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL",
                table.sql(),
                ident(name)
            ));
        }
    }
    client.batch_execute(&sql.join(";\n")).await?;
    Ok(Some(old))
}

/// Why a sink worker of some Kafka partitions does not change a target's primary key: every
/// lane holds some of the table's rows, which must all take the new key at once.
pub fn rekey_refused(schema: &TableSchema, target: &PgName) -> String {
    let keys: Vec<&str> = schema.key_columns().map(|c| c.name.as_str()).collect();
    format!(
        "the source's primary key is now ({}); the sink workers of a Kafka topic's partitions each hold some of the table's rows and cannot change the key of {target} one by one: stop the workers, drop {target} (it is created again with the new key) and run `edfi-cdc resnapshot -c CONFIG {}` once they run",
        keys.join(", "),
        schema.id
    )
}

/// Create the target table if it is missing, or check that an existing one can hold the
/// source's rows. With `evolve` (a table this connector holds, which the source changed), make
/// it able to: a column the source added is added, a column the source widened is widened, a
/// `NOT NULL` column the source no longer has becomes nullable. Without, those are problems
/// too (a table created by someone else is not changed). With `rekey` (`evolve`, or a
/// snapshot of the table in the source's shape is under way), another primary key at the
/// source is noted ([`Ensured::rekey`]) for the re-snapshot's publish; without, it is a
/// problem. What cannot be made to fit (another type family) is returned as problems, and
/// then nothing is changed.
pub async fn ensure_table(
    client: &impl GenericClient,
    cfg: &StagingSinkConfig,
    schema: &TableSchema,
    target: &PgName,
    evolve: bool,
    rekey: bool,
) -> Result<Ensured, tokio_postgres::Error> {
    let existing = client
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length, is_nullable = 'YES', \
             numeric_precision::int, numeric_scale::int \
             FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            &[&target.schema, &target.name],
        )
        .await?;
    let mut out = Ensured::default();
    if existing.is_empty() {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                ident(&target.schema)
            ))
            .await?;
        client
            .batch_execute(&create_table_sql(cfg, schema, target))
            .await?;
        return Ok(out);
    }
    // The target's own key columns keep `NOT NULL` while they are its key ([`rekey`]).
    let own_key = crate::sink::declared_key(client, target)
        .await?
        .map(|(_, columns)| columns)
        .unwrap_or_default();
    let mut alter = Vec::new();
    for c in &schema.columns {
        let name = case(cfg, &c.name);
        let wanted = pg_type(&c.source_type);
        let Some(row) = existing.iter().find(|r| r.get::<_, &str>(0) == name) else {
            if evolve {
                alter.push(format!(
                    "ADD COLUMN IF NOT EXISTS {} {wanted}",
                    ident(&name)
                ));
                out.evolved.push(format!("added {name} {wanted}"));
            } else {
                out.problems.push(format!(
                    "column {name} is missing (source {} {})",
                    c.name, c.source_type.name
                ));
            }
            continue;
        };
        let have: &str = row.get(1);
        let have_len: Option<i32> = row.get(2);
        let want_family = match c.source_type.kind() {
            ValueKind::Bool => "bool",
            ValueKind::Int => "int",
            ValueKind::Float | ValueKind::Decimal => "number",
            ValueKind::String => "text",
            ValueKind::Bytes => "bytes",
            ValueKind::Date => "date",
            ValueKind::Timestamp => "timestamp",
            ValueKind::TimestampTz => "timestamptz",
            ValueKind::Time => "time",
            ValueKind::Uuid => "uuid",
        };
        let have_desc = have_len.map_or_else(|| have.to_string(), |n| format!("{have}({n})"));
        // Digits before and after the point a numeric target holds (unconstrained: any).
        let digits = match (
            have,
            row.get::<_, Option<i32>>(4),
            row.get::<_, Option<i32>>(5),
        ) {
            ("numeric", Some(p), Some(s)) => Some((p - s, s)),
            _ => None,
        };
        let decimal = match (
            c.source_type.name.as_str(),
            c.source_type.precision,
            c.source_type.scale,
        ) {
            ("decimal" | "numeric", Some(p), Some(s)) => {
                Some((i32::from(p) - i32::from(s), i32::from(s)))
            }
            _ => None,
        };
        let fits = match (want_family, family(have)) {
            ("int", "int") => int_width(have) >= int_width(&wanted),
            ("number", "number") => match (decimal, digits) {
                (Some((wi, ws)), Some((hi, hs))) => hi >= wi && hs >= ws,
                _ => true,
            },
            ("int", "number") => true,
            ("text", "text") => match (c.source_type.max_length, have_len) {
                (_, None) => true,
                (Some(src), Some(dst)) => dst >= src,
                (None, Some(_)) => false,
            },
            ("uuid", "text") => have_len.is_none_or(|n| n >= 36),
            (a, b) => a == b,
        };
        // The type that holds both what the column holds and the source's values.
        let wider = match (want_family, family(have), decimal, digits) {
            ("int", "int", ..) | ("text", "text", ..) => Some(wanted.clone()),
            ("number", "number", Some((wi, ws)), Some((hi, hs))) => {
                let (int, scale) = (wi.max(hi), ws.max(hs));
                Some(format!("numeric({},{scale})", int + scale))
            }
            _ => None,
        };
        match wider {
            Some(to) if !fits && evolve => {
                alter.push(format!("ALTER COLUMN {} TYPE {to}", ident(&name)));
                out.evolved
                    .push(format!("widened {name} from {have_desc} to {to}"));
            }
            _ if !fits => {
                let mut problem = format!("column {name} is {have_desc}, which cannot hold source {} values (mapped type {wanted})", c.source_type.name);
                if evolve {
                    problem.push_str(&format!(": the column changed kind at the source; drop {target} and run `edfi-cdc resnapshot -c CONFIG {}` once the replicator runs again (the table is created anew)", schema.id));
                }
                out.problems.push(problem)
            }
            _ => {}
        }
        let key = schema.key_columns().any(|k| k.name == c.name) || own_key.contains(&name);
        if evolve && c.nullable && !key && !row.get::<_, bool>(3) {
            alter.push(format!("ALTER COLUMN {} DROP NOT NULL", ident(&name)));
            out.evolved
                .push(format!("{name} made nullable (as at the source)"));
        }
    }
    for row in &existing {
        let name: &str = row.get(0);
        let nullable: bool = row.get(3);
        if evolve
            && !nullable
            && !own_key.iter().any(|k| k == name)
            && !schema.columns.iter().any(|c| case(cfg, &c.name) == name)
        {
            alter.push(format!("ALTER COLUMN {} DROP NOT NULL", ident(name)));
            out.evolved
                .push(format!("{name} made nullable (no longer at the source)"));
        }
    }
    let keys: Vec<String> = schema.key_columns().map(|c| case(cfg, &c.name)).collect();
    let has_key: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 \
             AND i.indisunique AND i.indpred IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname) \
             FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) = \
             (SELECT array_agg(k ORDER BY k) FROM unnest($3::text[]) AS k))",
            &[&target.schema, &target.name, &keys],
        )
        .await?
        .get(0);
    if !has_key && rekey && !own_key.is_empty() {
        out.rekey = true;
        out.evolved.push(format!(
            "primary key ({}) → ({}) when the table's re-snapshot is published",
            own_key.join(", "),
            keys.join(", ")
        ));
    } else if !has_key {
        out.problems.push(format!(
            "no primary key or unique index on ({}), which upserts need; if the source's primary key changed, stop the replicator, drop {target} (it is created again with the new key) and run `edfi-cdc resnapshot -c CONFIG {}` once it runs",
            keys.join(", "),
            schema.id
        ));
    }
    if out.problems.is_empty() && !alter.is_empty() {
        client
            .batch_execute(&format!(
                "ALTER TABLE {} {}",
                target.sql(),
                alter.join(", ")
            ))
            .await?;
    }
    if !out.problems.is_empty() {
        out.evolved.clear();
        out.rekey = false;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str, len: Option<i32>, p: Option<u8>, s: Option<u8>) -> SourceType {
        SourceType {
            name: name.into(),
            max_length: len,
            precision: p,
            scale: s,
        }
    }

    #[test]
    fn maps_ed_fi_column_types() {
        assert_eq!(
            pg_type(&st("nvarchar", Some(60), None, None)),
            "varchar(60)"
        );
        assert_eq!(pg_type(&st("nvarchar", None, None, None)), "text");
        assert_eq!(
            pg_type(&st("decimal", None, Some(9), Some(2))),
            "numeric(9,2)"
        );
        assert_eq!(pg_type(&st("datetime2", None, None, None)), "timestamp(6)");
        assert_eq!(pg_type(&st("uniqueidentifier", None, None, None)), "uuid");
        assert_eq!(pg_type(&st("bit", None, None, None)), "boolean");
        assert_eq!(pg_type(&st("tinyint", None, None, None)), "smallint");
    }
}
