//! Every statement the Redshift sink sends: target DDL from source metadata (the SQL Server →
//! Redshift type mapping of `docs/type-mapping.md`), the staging table, the COPY of each load
//! mode, and the merge. The text of the COPY and merge is pinned by golden files
//! (`tests/golden/redshift/`).
//!
//! Identifiers are lower-cased (Redshift folds them unless case sensitivity is switched on) and
//! always quoted. Only the COPY source and a few Redshift-only table attributes differ between
//! the load modes; the merge is the same text for both.

use crate::config::LoadMode;
use crate::event::{SourceType, TableSchema};
use crate::sink::names::{ident, index_name, PgName, OP_COLUMN, SEQ_COLUMN, VERSION_COLUMN};

/// With `deletes = "soft"`: the column of a replicated table holding when its row was deleted
/// at the source (NULL while it is not).
pub const DELETED_AT: &str = "edfi_cdc_deleted_at";
/// Redshift's longest VARCHAR, in bytes.
const MAX_VARCHAR: i64 = 65_535;

/// The Redshift type for a SQL Server column type. Character lengths are bytes in Redshift and
/// characters in SQL Server: a UTF-16 code unit takes at most 3 bytes of UTF-8 (a surrogate
/// pair, 2 units, takes 4), so `n` characters need at most `3n` bytes. Binary values arrive as
/// hexadecimal text.
pub fn redshift_type(t: &SourceType) -> String {
    let bytes = |chars: Option<i32>| match chars {
        Some(n) if n > 0 => format!("varchar({})", (i64::from(n) * 3).min(MAX_VARCHAR)),
        _ => format!("varchar({MAX_VARCHAR})"),
    };
    match t.name.as_str() {
        "bit" => "boolean".into(),
        "tinyint" | "smallint" => "smallint".into(),
        "int" => "integer".into(),
        "bigint" => "bigint".into(),
        "decimal" | "numeric" => match (t.precision, t.scale) {
            (Some(p), Some(s)) => format!("decimal({p},{s})"),
            _ => "decimal(38,10)".into(),
        },
        "money" => "decimal(19,4)".into(),
        "smallmoney" => "decimal(10,4)".into(),
        "float" => "double precision".into(),
        "real" => "real".into(),
        "char" | "nchar" | "varchar" | "nvarchar" => bytes(t.max_length),
        "date" => "date".into(),
        "datetime2" | "datetime" | "smalldatetime" => "timestamp".into(),
        "datetimeoffset" => "timestamptz".into(),
        "time" => "time".into(),
        "uniqueidentifier" => "char(36)".into(),
        "binary" | "varbinary" | "image" | "rowversion" | "timestamp" => match t.max_length {
            Some(n) if n > 0 => format!("varchar({})", (i64::from(n) * 2).min(MAX_VARCHAR)),
            _ => format!("varchar({MAX_VARCHAR})"),
        },
        _ => format!("varchar({MAX_VARCHAR})"),
    }
}

/// Quoted, lower-cased column names in source column order.
pub fn columns(schema: &TableSchema) -> Vec<String> {
    schema
        .columns
        .iter()
        .map(|c| ident(&c.name.to_lowercase()))
        .collect()
}

/// Quoted, lower-cased key column names in key order.
pub fn key_columns(schema: &TableSchema) -> Vec<String> {
    schema
        .key_columns()
        .map(|c| ident(&c.name.to_lowercase()))
        .collect()
}

/// The distribution key: the student column when the key has one (student tables are joined
/// on it), else the first key column.
fn dist_key(schema: &TableSchema) -> String {
    schema
        .key_columns()
        .find(|c| is_student(&c.name))
        .or_else(|| schema.key_columns().next())
        .map(|c| ident(&c.name.to_lowercase()))
        .expect("tables have a primary key")
}

/// On PostgreSQL (`stdin`), an index on the student column of a table whose key does not
/// begin with it: a refresh of the models by student reads those students' rows through it.
/// `None` on Redshift (no indexes: there the refresh scans the column) and for tables without
/// students.
pub fn student_index(mode: LoadMode, schema: &TableSchema, target: &PgName) -> Option<String> {
    if mode != LoadMode::Stdin
        || !has_students(schema)
        || schema
            .key_columns()
            .next()
            .is_some_and(|k| is_student(&k.name))
    {
        return None;
    }
    Some(format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} (studentusi)",
        ident(&index_name(&target.name, "studentusi")),
        target.sql()
    ))
}

/// `CREATE TABLE` for a missing target (with [`DELETED_AT`] when `soft`). On Redshift (`s3`)
/// it carries the distribution key and a compound sort key on the primary key.
pub fn create_table(mode: LoadMode, schema: &TableSchema, target: &PgName, soft: bool) -> String {
    let mut cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                ident(&c.name.to_lowercase()),
                redshift_type(&c.source_type),
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    if soft {
        cols.push(format!("{DELETED_AT} timestamp"));
    }
    let keys = key_columns(schema).join(", ");
    let mut sql = format!(
        "CREATE TABLE {} (\n    {},\n    PRIMARY KEY ({keys})\n)",
        target.sql(),
        cols.join(",\n    ")
    );
    if mode == LoadMode::S3 {
        sql.push_str(&format!(
            "\nDISTKEY ({})\nCOMPOUND SORTKEY ({keys})",
            dist_key(schema)
        ));
    }
    sql
}

/// The session's staging table for one source table: the target's column types (`types`, in
/// source column order, so that a value the target cannot take fails the COPY, which names
/// the line), every column nullable (a delete carries only its key), plus the operation and
/// version columns.
pub fn create_stage(mode: LoadMode, schema: &TableSchema, types: &[String], stage: &str) -> String {
    batch_table("CREATE TEMP TABLE", mode, schema, types, stage, "")
}

/// The DDL of a staging or spill table: the columns, the operation and version columns, `extra`
/// columns.
fn batch_table(
    create: &str,
    mode: LoadMode,
    schema: &TableSchema,
    types: &[String],
    name: &str,
    extra: &str,
) -> String {
    let cols: Vec<String> = schema
        .columns
        .iter()
        .zip(types)
        .map(|(c, t)| format!("{} {t}", ident(&c.name.to_lowercase())))
        .collect();
    let mut sql = format!(
        "{create} {name} (\n    {},\n    {OP_COLUMN} char(1) NOT NULL,\n    {VERSION_COLUMN} bigint NOT NULL{extra}\n)",
        cols.join(",\n    ")
    );
    if mode == LoadMode::S3 {
        sql.push_str(&format!("\nDISTKEY ({})", dist_key(schema)));
    }
    sql
}

/// A spill table (`spill.rs`): the staging table's columns and the sequence column, kept
/// across transactions.
pub fn create_spill(mode: LoadMode, schema: &TableSchema, types: &[String], table: &str) -> String {
    format!(
        "DROP TABLE IF EXISTS {table};\n{}",
        batch_table(
            "CREATE TABLE",
            mode,
            schema,
            types,
            table,
            &format!(",\n    {SEQ_COLUMN} bigint NOT NULL"),
        )
    )
}

/// The two statements that add to a loaded staging table the spilled rows numbered `from` to
/// `upto`: the first deletes the staged rows (received after the spill) whose key a spilled row
/// of a higher version holds; the second adds each key's spilled row of the highest version
/// (the last to arrive among equal versions) unless the staging table still holds the key.
/// Between two copies of a change, as between a change and a newer one, the highest version
/// wins whichever arrived last (see [`crate::sink::Compacted`]).
pub fn collect_spill(
    schema: &TableSchema,
    stage: &str,
    spill: &str,
    from: i64,
    upto: i64,
) -> [String; 2] {
    let mut cols = columns(schema);
    cols.push(OP_COLUMN.into());
    cols.push(VERSION_COLUMN.into());
    let cols = cols.join(", ");
    let keys = key_columns(schema).join(", ");
    let same = |other: &str| {
        key_columns(schema)
            .iter()
            .map(|k| format!("{stage}.{k} = {other}.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let range = format!("{SEQ_COLUMN} BETWEEN {from} AND {upto}");
    [
        format!(
            "DELETE FROM {stage} WHERE EXISTS (SELECT 1 FROM {spill} p \
             WHERE p.{range} AND {same_p} AND p.{VERSION_COLUMN} > {stage}.{VERSION_COLUMN})",
            same_p = same("p"),
        ),
        format!(
            "INSERT INTO {stage} ({cols}) SELECT {cols} FROM (\
             SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {keys} \
             ORDER BY {VERSION_COLUMN} DESC, {SEQ_COLUMN} DESC) AS edfi_cdc_rn \
             FROM {spill} WHERE {range}) s \
             WHERE s.edfi_cdc_rn = 1 AND NOT EXISTS (SELECT 1 FROM {stage} WHERE {same_s})",
            same_s = same("s"),
        ),
    ]
}

/// A column type as `information_schema.columns` describes it, in DDL form.
pub fn described_type(
    data_type: &str,
    char_len: Option<i32>,
    precision: Option<i32>,
    scale: Option<i32>,
) -> String {
    match (data_type, char_len, precision, scale) {
        ("character varying", Some(n), _, _) => format!("varchar({n})"),
        ("character varying", None, _, _) => format!("varchar({MAX_VARCHAR})"),
        ("character", Some(n), _, _) => format!("char({n})"),
        ("numeric", _, Some(p), Some(s)) => format!("decimal({p},{s})"),
        (other, _, _, _) => other.to_string(),
    }
}

/// The snapshot's shadow table, shaped like the target.
pub fn create_shadow(mode: LoadMode, shadow: &PgName, target: &PgName) -> String {
    let like = match mode {
        LoadMode::S3 => format!("LIKE {}", target.sql()),
        LoadMode::Stdin => format!("LIKE {} INCLUDING ALL", target.sql()),
    };
    format!(
        "DROP TABLE IF EXISTS {s}; CREATE TABLE {s} ({like})",
        s = shadow.sql()
    )
}

/// Where a load reads its CSV from.
pub enum CopySource<'a> {
    /// A manifest in S3 listing gzip CSV parts.
    S3 {
        manifest_url: &'a str,
        iam_role: &'a str,
        region: &'a str,
    },
    Stdin,
}

/// The COPY of a batch into `table` (`columns` in file order). Strict: no truncation, no
/// replaced characters, no skipped rows — a value the column cannot take fails the load.
pub fn copy(table: &str, columns: &[String], from: &CopySource<'_>) -> String {
    let cols = columns.join(", ");
    match from {
        CopySource::S3 {
            manifest_url,
            iam_role,
            region,
        } => {
            let mut sql = format!(
                "COPY {table} ({cols})\nFROM {}\nIAM_ROLE {}\nFORMAT AS CSV\nGZIP\nMANIFEST\nNULL AS '\\\\N'\nTIMEFORMAT 'auto'\nDATEFORMAT 'auto'\nCOMPUPDATE OFF\nSTATUPDATE OFF",
                literal(manifest_url),
                literal(iam_role)
            );
            if !region.is_empty() {
                sql.push_str(&format!("\nREGION {}", literal(region)));
            }
            sql
        }
        CopySource::Stdin => {
            format!("COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv, NULL '\\N')")
        }
    }
}

/// Apply a loaded staging table to `dest`: delete every changed key, insert the rows that are
/// not deletes. Two statements, valid on Redshift and PostgreSQL alike (no alias on the
/// DELETE target, no ON CONFLICT).
///
/// With `soft_at` (`deletes = "soft"`, the deletion time as SQL): a deleted key's row is kept
/// and marked deleted at that time, unless it already was; an upserted key's row (marked or
/// not) is replaced by a live one.
pub fn merge(schema: &TableSchema, dest: &PgName, stage: &str, soft_at: Option<&str>) -> String {
    let cols = columns(schema).join(", ");
    let on: Vec<String> = key_columns(schema)
        .iter()
        .map(|k| format!("{}.{k} = {stage}.{k}", dest.sql()))
        .collect();
    let on = on.join(" AND ");
    let d = dest.sql();
    let insert =
        format!("INSERT INTO {d} ({cols}) SELECT {cols} FROM {stage} WHERE {OP_COLUMN} <> 'd';");
    match soft_at {
        None => format!("DELETE FROM {d} USING {stage} WHERE {on};\n{insert}"),
        Some(at) => format!(
            "DELETE FROM {d} USING {stage} WHERE {on} AND {stage}.{OP_COLUMN} <> 'd';\n\
             UPDATE {d} SET {DELETED_AT} = {at} FROM {stage} \
             WHERE {on} AND {stage}.{OP_COLUMN} = 'd' AND {d}.{DELETED_AT} IS NULL;\n{insert}"
        ),
    }
}

/// Publish a snapshot's shadow table into the target. With `soft_at`, rows of the target that
/// the snapshot no longer holds are kept, marked deleted at that time (or when they were).
///
/// On PostgreSQL (`stdin`) a table with students gets its rows in student order: a refresh of
/// the models reads a flush's students' rows through the student index, and rows in key order
/// put a few percent of a district's students on nearly every page, so the read was the whole
/// table (BENCHMARKS.md, 1,000,000 students). Redshift reads the student column alone.
/// The target declared with `schema`'s primary key instead of its constraint `constraint`: run
/// by [`publish`] on the emptied target (PostgreSQL, standing in, checks the key).
pub fn rekey(target: &PgName, constraint: &str, schema: &TableSchema) -> String {
    format!(
        "ALTER TABLE {t} DROP CONSTRAINT {c};\nALTER TABLE {t} ADD PRIMARY KEY ({k})",
        t = target.sql(),
        c = ident(constraint),
        k = key_columns(schema).join(", ")
    )
}

/// Replace the target's rows with the shadow's (a published snapshot); `rekey` (see [`rekey`])
/// runs on the emptied target.
pub fn publish(
    mode: LoadMode,
    schema: &TableSchema,
    target: &PgName,
    shadow: &PgName,
    soft_at: Option<&str>,
    rekey: Option<&str>,
) -> String {
    let mut cols = columns(schema);
    let (t, s) = (target.sql(), shadow.sql());
    let mut sql = String::new();
    if let Some(at) = soft_at {
        let same: Vec<String> = key_columns(schema)
            .iter()
            .map(|k| format!("{s}.{k} = {t}.{k}"))
            .collect();
        let list = cols.join(", ");
        sql.push_str(&format!(
            "INSERT INTO {s} ({list}, {DELETED_AT}) SELECT {list}, COALESCE({DELETED_AT}, {at}) \
             FROM {t} WHERE NOT EXISTS (SELECT 1 FROM {s} WHERE {});\n",
            same.join(" AND ")
        ));
        cols.push(DELETED_AT.to_string());
    }
    let cols = cols.join(", ");
    let order = if mode == LoadMode::Stdin && has_students(schema) {
        " ORDER BY studentusi"
    } else {
        ""
    };
    sql.push_str(&format!("DELETE FROM {t};\n"));
    if let Some(rekey) = rekey {
        sql.push_str(&format!("{rekey};\n"));
    }
    sql.push_str(&format!(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM {s}{order};\nDROP TABLE {s}"
    ));
    sql
}

/// Whether a table has a `StudentUSI` column.
pub fn has_students(schema: &TableSchema) -> bool {
    schema.columns.iter().any(|c| is_student(&c.name))
}

/// The position within the key of the student column, when the key has one.
pub fn student_key(schema: &TableSchema) -> Option<usize> {
    schema.key_columns().position(|c| is_student(&c.name))
}

/// Whether a column is the student column, `StudentUSI`.
fn is_student(column: &str) -> bool {
    column.eq_ignore_ascii_case("StudentUSI")
}

/// The view of a soft-deleting target's live rows: `<schema>_live.<table>`. Reporting models
/// read these in place of the tables.
pub fn live_view(target: &PgName) -> PgName {
    PgName {
        schema: format!("{}{LIVE_SUFFIX}", target.schema),
        name: target.name.clone(),
    }
}

/// A timestamp as SQL both databases take (UTC, microseconds).
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "CAST('{}' AS timestamp)",
        t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f")
    )
}

/// Suffix of the schema of [`live_view`]s.
pub const LIVE_SUFFIX: &str = "_live";

/// The [`live_view`] (and its schema if missing), replaced in place: `CREATE OR REPLACE VIEW`
/// keeps views built on it, but fails when the table's columns changed (then
/// [`recreate_live_view`]). On Redshift a late-binding view (`WITH NO SCHEMA BINDING`), which
/// never holds the table's columns back.
pub fn create_live_view(mode: LoadMode, schema: &TableSchema, target: &PgName) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {};\nCREATE OR REPLACE VIEW {}",
        ident(&live_view(target).schema),
        live_view_body(mode, schema, target)
    )
}

/// The [`live_view`] dropped and created again, for columns that changed.
pub fn recreate_live_view(mode: LoadMode, schema: &TableSchema, target: &PgName) -> String {
    format!(
        "DROP VIEW IF EXISTS {};\nCREATE VIEW {}",
        live_view(target).sql(),
        live_view_body(mode, schema, target)
    )
}

fn live_view_body(mode: LoadMode, schema: &TableSchema, target: &PgName) -> String {
    let binding = match mode {
        LoadMode::S3 => " WITH NO SCHEMA BINDING",
        LoadMode::Stdin => "",
    };
    format!(
        "{} AS SELECT {} FROM {} WHERE {DELETED_AT} IS NULL{binding}",
        live_view(target).sql(),
        columns(schema).join(", "),
        target.sql()
    )
}

/// A string literal (single quotes doubled; backslashes doubled for Redshift's escapes).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::col;
    use crate::event::TableId;
    use std::sync::Arc;

    fn student_school_association() -> Arc<TableSchema> {
        let mut entry = col("EntryGradeLevelDescriptorId", "int");
        entry.nullable = false;
        let mut columns = vec![
            col("StudentUSI", "int"),
            col("SchoolId", "int"),
            col("EntryDate", "date"),
            entry,
            col("ExitWithdrawDate", "date"),
            col("Discriminator", "nvarchar"),
            col("Id", "uniqueidentifier"),
            col("LastModifiedDate", "datetime2"),
        ];
        columns[5].source_type.max_length = Some(128);
        for c in &mut columns[..3] {
            c.nullable = false;
        }
        Arc::new(TableSchema {
            id: TableId::new("edfi", "StudentSchoolAssociation"),
            columns,
            key: vec![1, 2, 0],
        })
    }

    fn golden(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/redshift")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn target() -> PgName {
        PgName {
            schema: "edfi".into(),
            name: "studentschoolassociation".into(),
        }
    }

    fn shadow() -> PgName {
        PgName {
            schema: "edfi_cdc_shadow".into(),
            name: "edfi_ods__studentschoolassociation".into(),
        }
    }

    #[test]
    fn student_tables_get_an_index_on_the_student_column_on_postgresql_only() {
        let t = student_school_association();
        assert_eq!(
            student_index(LoadMode::Stdin, &t, &target()).as_deref(),
            Some(
                "CREATE INDEX IF NOT EXISTS \"studentschoolassociation__studentusi\" \
                 ON \"edfi\".\"studentschoolassociation\" (studentusi)"
            )
        );
        assert_eq!(student_index(LoadMode::S3, &t, &target()), None);
        // A key that begins with the student column serves the lookups itself.
        let led = TableSchema {
            key: vec![0, 1, 2],
            ..(*t).clone()
        };
        assert_eq!(student_index(LoadMode::Stdin, &led, &target()), None);
        let no_students = TableSchema {
            columns: t.columns[1..].to_vec(),
            key: vec![0, 1],
            ..(*t).clone()
        };
        assert_eq!(
            student_index(LoadMode::Stdin, &no_students, &target()),
            None
        );
    }

    #[test]
    fn generated_sql_matches_the_golden_files() {
        let t = student_school_association();
        let mut cols = columns(&t);
        cols.push(OP_COLUMN.into());
        cols.push(VERSION_COLUMN.into());
        let s3 = CopySource::S3 {
            manifest_url: "s3://reporting-bucket/edfi-cdc/edfi-ods/v00000000000000001234/edfi.studentschoolassociation/manifest",
            iam_role: "arn:aws:iam::123456789012:role/edfi-cdc-copy",
            region: "",
        };
        let cases = [
            (
                "create_table_s3.sql",
                create_table(LoadMode::S3, &t, &target(), false),
            ),
            (
                "create_table_stdin.sql",
                create_table(LoadMode::Stdin, &t, &target(), false),
            ),
            (
                "create_table_soft.sql",
                create_table(LoadMode::Stdin, &t, &target(), true),
            ),
            (
                "create_stage_s3.sql",
                create_stage(
                    LoadMode::S3,
                    &t,
                    &t.columns
                        .iter()
                        .map(|c| redshift_type(&c.source_type))
                        .collect::<Vec<_>>(),
                    "edfi_cdc_stage_7",
                ),
            ),
            (
                "create_spill_s3.sql",
                create_spill(
                    LoadMode::S3,
                    &t,
                    &t.columns
                        .iter()
                        .map(|c| redshift_type(&c.source_type))
                        .collect::<Vec<_>>(),
                    "edfi_cdc_spill.s0123abcd_edfi_cdc_stage_7",
                ),
            ),
            (
                "collect_spill.sql",
                collect_spill(
                    &t,
                    "edfi_cdc_stage_7",
                    "edfi_cdc_spill.s0123abcd_edfi_cdc_stage_7",
                    0,
                    41,
                )
                .join(";\n"),
            ),
            ("copy_s3.sql", copy("edfi_cdc_stage_7", &cols, &s3)),
            (
                "copy_stdin.sql",
                copy("edfi_cdc_stage_7", &cols, &CopySource::Stdin),
            ),
            ("merge.sql", merge(&t, &target(), "edfi_cdc_stage_7", None)),
            (
                "merge_soft.sql",
                merge(
                    &t,
                    &target(),
                    "edfi_cdc_stage_7",
                    Some("CAST('2025-03-04 05:06:07' AS timestamp)"),
                ),
            ),
            (
                "publish_soft.sql",
                publish(
                    LoadMode::S3,
                    &t,
                    &target(),
                    &shadow(),
                    Some("CAST('2025-03-04 05:06:07' AS timestamp)"),
                    None,
                ),
            ),
            (
                "publish_rekey.sql",
                publish(
                    LoadMode::S3,
                    &t,
                    &target(),
                    &shadow(),
                    None,
                    Some(&rekey(&target(), "studentschoolassociation_pkey", &t)),
                ),
            ),
            (
                "live_view.sql",
                create_live_view(LoadMode::S3, &t, &target()),
            ),
            (
                "live_view_recreate.sql",
                recreate_live_view(LoadMode::Stdin, &t, &target()),
            ),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/redshift");
        for (file, sql) in cases {
            // EDFI_CDC_BLESS=1 rewrites the golden files from the generator (review the diff).
            if std::env::var_os("EDFI_CDC_BLESS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(file), format!("{sql}\n")).unwrap();
            }
            assert_eq!(
                sql.trim_end(),
                golden(file).trim_end(),
                "{file} differs:\n{sql}"
            );
        }
    }

    #[test]
    fn lengths_are_bytes_and_capped() {
        let ty = |name: &str, len: Option<i32>| SourceType {
            name: name.into(),
            max_length: len,
            precision: None,
            scale: None,
        };
        assert_eq!(redshift_type(&ty("nvarchar", Some(60))), "varchar(180)");
        assert_eq!(redshift_type(&ty("nvarchar", None)), "varchar(65535)");
        assert_eq!(
            redshift_type(&ty("nvarchar", Some(30000))),
            "varchar(65535)"
        );
        assert_eq!(redshift_type(&ty("uniqueidentifier", None)), "char(36)");
        assert_eq!(redshift_type(&ty("datetime2", None)), "timestamp");
        assert_eq!(redshift_type(&ty("bit", None)), "boolean");
    }
}
