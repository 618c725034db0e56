//! `verify`'s view of a table in a target (staging PostgreSQL, Redshift): the same canonical
//! row text, hashes and buckets as the source's (`source::mssql::queries::VerifyQueries`), in
//! SQL that PostgreSQL and Redshift both run. A PostgreSQL source's table is read with the
//! same SQL ([`TargetTable::postgres_source`]).

use crate::config::{RedshiftSinkConfig, StagingSinkConfig};
use crate::event::{ColumnSchema, TableSchema, ValueKind};
use crate::sink::names::{case, ident, redshift_table, staging_table, PgName};
use crate::sink::redshift::sql as redshift;
use crate::sink::staging::ddl::pg_type;

/// Which sink a target belongs to: it decides the names and how values are stored.
#[derive(Clone, Copy)]
pub enum Sink<'a> {
    Staging(&'a StagingSinkConfig),
    Redshift(&'a RedshiftSinkConfig),
}

impl Sink<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Staging(_) => "staging",
            Sink::Redshift(_) => "redshift",
        }
    }

    /// The fractional digits of a time column the target keeps: staging stores `datetime` as
    /// `timestamp(3)` and `smalldatetime` as `timestamp(0)`; Redshift keeps microseconds.
    pub fn scale(&self, c: &ColumnSchema) -> u8 {
        match (self, c.source_type.name.as_str()) {
            (Sink::Staging(_), "datetime") => 3,
            (Sink::Staging(_), "smalldatetime") => 0,
            _ => 6,
        }
    }
}

/// One table of one target.
pub struct TargetTable {
    pub name: PgName,
    /// Quoted target column names, in the schema's column order.
    columns: Vec<String>,
    schema: TableSchema,
    staging: bool,
    /// `WHERE` of the live rows (Redshift with soft deletes keeps deleted rows).
    live: Option<String>,
    /// The rows' `xmin` listed with them (a PostgreSQL source: it changes whenever a row is
    /// written).
    stamped: bool,
}

/// `(strpos('0123456789abcdef', substr(h, i, 1)) - 1) * 16^k`, summed over 8 hexadecimal digits
/// of `h` from `start`: the unsigned 32-bit number they spell, without PostgreSQL's `bit` casts
/// or Redshift's `strtol`, so that both run it.
pub fn hex8(h: &str, start: usize) -> String {
    let digits: Vec<String> = (0..8)
        .map(|i| {
            format!(
                "(CAST(strpos('0123456789abcdef', substr({h}, {}, 1)) AS bigint) - 1) * {}",
                start + i,
                1u64 << (4 * (7 - i))
            )
        })
        .collect();
    format!("({})", digits.join(" + "))
}

impl TargetTable {
    pub fn new(sink: Sink<'_>, schema: &TableSchema, soft_deletes: bool) -> TargetTable {
        let (name, columns) = match sink {
            Sink::Staging(cfg) => (
                staging_table(cfg, &schema.id),
                schema
                    .columns
                    .iter()
                    .map(|c| ident(&case(cfg, &c.name)))
                    .collect(),
            ),
            Sink::Redshift(cfg) => (redshift_table(cfg, &schema.id), redshift::columns(schema)),
        };
        TargetTable {
            name,
            columns,
            schema: schema.clone(),
            staging: matches!(sink, Sink::Staging(_)),
            live: soft_deletes.then(|| format!("{} IS NULL", ident(redshift::DELETED_AT))),
            stamped: false,
        }
    }

    /// A table of a PostgreSQL source, whose values the staging sink stores in the same types:
    /// the canonical text is a staging table's. Text-like columns of other types (`json`,
    /// arrays, …, which travel as text) are read as text.
    pub fn postgres_source(schema: &TableSchema) -> TargetTable {
        let columns = schema
            .columns
            .iter()
            .map(|c| {
                let q = ident(&c.name);
                match (c.source_type.kind(), c.source_type.name.as_str()) {
                    (ValueKind::String, "char" | "nchar") => q,
                    (ValueKind::String, _) => format!("CAST({q} AS text)"),
                    _ => q,
                }
            })
            .collect();
        TargetTable {
            name: PgName {
                schema: schema.id.schema.clone(),
                name: schema.id.name.clone(),
            },
            columns,
            schema: schema.clone(),
            staging: true,
            live: None,
            stamped: true,
        }
    }

    /// The canonical text of column `i` (see `verify_column` of the source's queries).
    fn column(&self, i: usize) -> Option<String> {
        let c = &self.schema.columns[i];
        let q = &self.columns[i];
        let t = &c.source_type;
        Some(match t.kind() {
            ValueKind::Bool => format!("CASE WHEN {q} THEN '1' ELSE '0' END"),
            ValueKind::Int | ValueKind::Decimal => format!("CAST({q} AS varchar)"),
            ValueKind::Float => return None,
            // PostgreSQL's `char(n)` drops trailing blanks when read as text; SQL Server's keeps
            // them (Redshift stores the padded value as `varchar`).
            ValueKind::String if self.staging && matches!(t.name.as_str(), "char" | "nchar") => {
                match t.max_length {
                    Some(n) if n > 0 => escaped(&format!("rpad({q}, {n})")),
                    _ => escaped(q),
                }
            }
            ValueKind::String => escaped(q),
            ValueKind::Bytes if self.staging => format!("upper(encode({q}, 'hex'))"),
            ValueKind::Bytes => format!("upper({q})"),
            ValueKind::Date => format!("to_char({q}, 'YYYY-MM-DD')"),
            ValueKind::Timestamp => format!("to_char({q}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            ValueKind::TimestampTz => {
                format!("to_char({q} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
            }
            // Redshift's to_char takes timestamps only.
            ValueKind::Time => format!("to_char(DATE '2000-01-01' + {q}, 'HH24:MI:SS.US')"),
            ValueKind::Uuid => format!("lower(CAST({q} AS varchar))"),
        })
    }

    fn text(&self, columns: impl Iterator<Item = usize>) -> String {
        let parts: Vec<String> = columns
            .filter_map(|i| {
                let text = self.column(i)?;
                Some(format!(
                    "CASE WHEN {} IS NULL THEN '-' ELSE '+' || {text} END",
                    self.columns[i]
                ))
            })
            .collect();
        if parts.is_empty() {
            "''".into()
        } else {
            parts.join(" || '|' || ")
        }
    }

    /// The key's canonical text.
    pub fn key_text(&self) -> String {
        self.text(self.schema.key.iter().copied())
    }

    /// `SELECT` of every live row's key text `kt` and the hexadecimal MD5s of its key `kh` and
    /// row `rh` (and its `xmin` as `xv`, when stamped).
    fn hashed(&self) -> String {
        format!(
            "SELECT {kt} AS kt, md5({kt}) AS kh, md5({}) AS rh{} FROM {}{}",
            self.text(0..self.schema.columns.len()),
            if self.stamped {
                ", CAST(xmin AS text) AS xv"
            } else {
                ""
            },
            self.name.sql(),
            self.live
                .as_ref()
                .map_or(String::new(), |w| format!(" WHERE {w}")),
            kt = self.key_text(),
        )
    }

    fn bucket(buckets: u32) -> String {
        format!("{} % {buckets}", hex8("r.kh", 1))
    }

    /// Per bucket of `buckets`: bucket, rows, and the sums of the first and second 4 bytes of
    /// the rows' hashes.
    pub fn buckets(&self, buckets: u32) -> String {
        format!(
            "SELECT x.b, count(*), CAST(sum(x.h1) AS bigint), CAST(sum(x.h2) AS bigint) FROM \
             (SELECT {} AS b, {} AS h1, {} AS h2 FROM ({}) AS r) AS x GROUP BY x.b",
            Self::bucket(buckets),
            hex8("r.rh", 1),
            hex8("r.rh", 9),
            self.hashed()
        )
    }

    /// The key text and row hash (and `xmin`, when stamped) of every row in the listed
    /// buckets.
    pub fn bucket_rows(&self, buckets: u32, list: &[u32]) -> String {
        let list: Vec<String> = list.iter().map(u32::to_string).collect();
        format!(
            "SELECT r.kt, r.rh{} FROM ({}) AS r WHERE {} IN ({})",
            if self.stamped { ", r.xv" } else { "" },
            self.hashed(),
            Self::bucket(buckets),
            list.join(", ")
        )
    }

    /// `DELETE` of the rows whose key texts are `keys` (quoted as literals).
    pub fn delete_keys(&self, keys: &[String]) -> String {
        let list: Vec<String> = keys.iter().map(|k| literal(k)).collect();
        format!(
            "DELETE FROM {} WHERE {} IN ({})",
            self.name.sql(),
            self.key_text(),
            list.join(", ")
        )
    }

    /// `INSERT … ON CONFLICT DO UPDATE` of whole rows given as PostgreSQL literals (staging).
    pub fn upsert(&self, rows: &[Vec<Option<String>>]) -> String {
        let values: Vec<String> = rows
            .iter()
            .map(|row| {
                let cells: Vec<String> = row
                    .iter()
                    .zip(&self.schema.columns)
                    .map(|(v, c)| match v {
                        None => "NULL".into(),
                        Some(text) => {
                            format!("CAST({} AS {})", literal(text), pg_type(&c.source_type))
                        }
                    })
                    .collect();
                format!("({})", cells.join(", "))
            })
            .collect();
        let keys: Vec<String> = self
            .schema
            .key
            .iter()
            .map(|&i| self.columns[i].clone())
            .collect();
        let set: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.schema.key.contains(i))
            .map(|(_, c)| format!("{c} = EXCLUDED.{c}"))
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO {}",
            self.name.sql(),
            self.columns.join(", "),
            values.join(", "),
            keys.join(", "),
            if set.is_empty() {
                "NOTHING".into()
            } else {
                format!("UPDATE SET {}", set.join(", "))
            }
        )
    }
}

/// Text with `\` and `|` escaped, so that no value can imitate the separator of the row text.
/// The backslash is `chr(92)`: Redshift reads a backslash in a literal as an escape.
fn escaped(text: &str) -> String {
    format!("replace(replace({text}, chr(92), chr(92) || chr(92)), '|', chr(92) || '|')")
}

/// A standard SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::{col, every_type_schema};
    use crate::event::TableId;

    fn staging() -> StagingSinkConfig {
        toml::from_str("url = \"postgres://x\"").unwrap()
    }

    #[test]
    fn each_target_renders_the_sources_text() {
        let cfg = staging();
        let s = every_type_schema();
        let t = TargetTable::new(Sink::Staging(&cfg), &s, false);
        let sql = t.buckets(8);
        for part in [
            "CASE WHEN \"studentusi\" IS NULL THEN '-' ELSE '+' || CAST(\"studentusi\" AS varchar) END || '|' || ",
            "to_char(\"birthdate\", 'YYYY-MM-DD')",
            "lower(CAST(\"id\" AS varchar))",
            "to_char(\"createdate\", 'YYYY-MM-DD HH24:MI:SS.US')",
            "CASE WHEN \"active\" THEN '1' ELSE '0' END",
            "upper(encode(\"photo\", 'hex'))",
            "to_char(\"offset\" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
            "to_char(DATE '2000-01-01' + \"starttime\", 'HH24:MI:SS.US')",
            "ELSE '+' || replace(replace(\"firstname\", chr(92), chr(92) || chr(92)), '|', chr(92) || '|') END",
            "FROM \"edfi\".\"student\") AS r) AS x GROUP BY x.b",
            ") % 8 AS b",
        ] {
            assert!(sql.contains(part), "{part} in {sql}");
        }
        assert!(!sql.contains("ratio"), "floats are not compared: {sql}");

        let padded = TableSchema {
            id: TableId::new("edfi", "Code"),
            columns: vec![
                ColumnSchema {
                    name: "Code".into(),
                    source_type: crate::event::SourceType {
                        max_length: Some(10),
                        ..col("Code", "nchar").source_type
                    },
                    nullable: false,
                },
                col("Blob", "varbinary"),
            ],
            key: vec![0],
        };
        let staged = TargetTable::new(Sink::Staging(&cfg), &padded, false).key_text();
        assert!(
            staged.contains("replace(replace(rpad(\"code\", 10), "),
            "{staged}"
        );
        let red: RedshiftSinkConfig = toml::from_str("url = \"postgres://x\"").unwrap();
        let shifted = TargetTable::new(Sink::Redshift(&red), &padded, true);
        assert_eq!(
            shifted.key_text(),
            "CASE WHEN \"code\" IS NULL THEN '-' ELSE '+' || replace(replace(\"code\", chr(92), chr(92) || chr(92)), '|', chr(92) || '|') END"
        );
        let rows = shifted.bucket_rows(4, &[1, 3]);
        assert!(rows.contains("upper(\"blob\")"), "{rows}");
        assert!(
            rows.contains("WHERE \"edfi_cdc_deleted_at\" IS NULL"),
            "{rows}"
        );
        assert!(rows.ends_with("% 4 IN (1, 3)"), "{rows}");
    }

    #[test]
    fn repairs_upsert_typed_literals_and_delete_by_key_text() {
        let cfg = staging();
        let s = every_type_schema();
        let t = TargetTable::new(Sink::Staging(&cfg), &s, false);
        let mut row: Vec<Option<String>> = vec![None; s.columns.len()];
        row[0] = Some("7".into());
        row[2] = Some("O'Neil".into());
        let sql = t.upsert(&[row]);
        assert!(
            sql.starts_with("INSERT INTO \"edfi\".\"student\" (\"studentusi\", "),
            "{sql}"
        );
        assert!(
            sql.contains("(CAST('7' AS integer), NULL, CAST('O''Neil' AS text), NULL"),
            "{sql}"
        );
        assert!(sql.contains("ON CONFLICT (\"studentusi\", \"birthdate\") DO UPDATE SET \"firstname\" = EXCLUDED.\"firstname\""), "{sql}");
        let del = t.delete_keys(&["+7|+2010-01-02".into()]);
        assert!(del.ends_with(" IN ('+7|+2010-01-02')"), "{del}");
    }

    #[test]
    fn hex8_spells_unsigned_numbers() {
        let sql = hex8("h", 1);
        assert!(sql.starts_with(
            "((CAST(strpos('0123456789abcdef', substr(h, 1, 1)) AS bigint) - 1) * 268435456 + "
        ));
        assert!(sql.ends_with("substr(h, 8, 1)) AS bigint) - 1) * 1)"));
    }
}
