//! How targets are named, for both sinks and for the configuration checks: the staging
//! sink's table names (`identifiers`, `schema_map`), the Redshift sink's (`schema`,
//! `table_map`), quoted identifiers, the shadow tables snapshots load, and the columns both
//! sinks add to their batch and spill tables.

use std::fmt;

use crate::config::{IdentifierCase, RedshiftSinkConfig, StagingSinkConfig};
use crate::event::TableId;

/// The operation column of a batch or spill table: `d` for a delete, `u` for an upsert.
pub const OP_COLUMN: &str = "edfi_cdc_op";
/// The version column of a batch or spill table: the change's version (`SYS_CHANGE_VERSION` or
/// commit LSN), which decides between two changes of a key (see [`crate::sink::Compacted`]).
pub const VERSION_COLUMN: &str = "edfi_cdc_version";
/// The sequence column of a spill table: the order in which the sink received its rows.
pub const SEQ_COLUMN: &str = "edfi_cdc_seq";

/// A PostgreSQL `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PgName {
    pub schema: String,
    pub name: String,
}

impl PgName {
    /// Quoted for SQL.
    pub fn sql(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
}

impl fmt::Display for PgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A quoted PostgreSQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A source name as the staging sink's `identifiers` setting spells it.
pub fn case(cfg: &StagingSinkConfig, s: &str) -> String {
    match cfg.identifiers {
        IdentifierCase::Lower => s.to_lowercase(),
        IdentifierCase::Preserve => s.to_string(),
    }
}

/// The staging table of source table `t`.
pub fn staging_table(cfg: &StagingSinkConfig, t: &TableId) -> PgName {
    PgName {
        schema: cfg
            .schema_map
            .get(&t.schema)
            .cloned()
            .unwrap_or_else(|| case(cfg, &t.schema)),
        name: case(cfg, &t.name),
    }
}

/// The shadow table a snapshot loads before it replaces the target: schema `edfi_cdc_shadow`,
/// named after the target (shortened with a hash past PostgreSQL's 63-byte limit).
pub fn shadow_table(connector: &str, target: &PgName) -> PgName {
    PgName {
        schema: "edfi_cdc_shadow".into(),
        name: fitted(format!("{connector}__{}__{}", target.schema, target.name)),
    }
}

/// The name of the index on `column` of `table` that edfi-cdc creates on a PostgreSQL target
/// (in the table's schema, as PostgreSQL puts indexes).
pub fn index_name(table: &str, column: &str) -> String {
    fitted(format!("{table}__{column}"))
}

/// `full` within PostgreSQL's 63-byte limit on names: past it, cut and told apart by a hash.
fn fitted(full: String) -> String {
    if full.len() <= 63 {
        return full;
    }
    let hash = full.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let mut cut = 54;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{:08x}", &full[..cut], hash as u32)
}

/// The Redshift table of source table `t`: `table_map`, else `schema` + the lower-cased name.
pub fn redshift_table(cfg: &RedshiftSinkConfig, t: &TableId) -> PgName {
    let mapped = cfg
        .table_map
        .iter()
        .find(|(from, _)| from.eq_ignore_ascii_case(&t.to_string()))
        .and_then(|(_, to)| to.split_once('.'));
    match mapped {
        Some((schema, name)) => PgName {
            schema: schema.to_lowercase(),
            name: name.to_lowercase(),
        },
        None => PgName {
            schema: cfg.schema.to_lowercase(),
            name: t.name.to_lowercase(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_map_overrides_the_schema() {
        let cfg: RedshiftSinkConfig = toml::from_str(
            "url = \"postgres://r@h/db\"\nload = \"stdin\"\n[table_map]\n\"edfi.Student\" = \"People.Student\"",
        )
        .unwrap();
        assert_eq!(
            redshift_table(&cfg, &TableId::new("edfi", "Student")).to_string(),
            "people.student"
        );
        assert_eq!(
            redshift_table(&cfg, &TableId::new("edfi", "School")).to_string(),
            "edfi.school"
        );
    }

    #[test]
    fn shadow_names_fit_postgres_limit_and_stay_distinct() {
        let a = shadow_table(
            "edfi-ods",
            &PgName {
                schema: "edfi".into(),
                name: "studenteducationorganizationassociationelectronicmail".into(),
            },
        );
        let b = shadow_table(
            "edfi-ods",
            &PgName {
                schema: "edfi".into(),
                name: "studenteducationorganizationassociationelectronicmai2".into(),
            },
        );
        assert!(a.name.len() <= 63 && b.name.len() <= 63);
        assert_ne!(a, b);
    }
}
