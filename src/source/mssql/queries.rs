//! Every T-SQL statement the poller sends. Identifiers are bracket-quoted; values are always
//! parameters (`@P1`, …).

use crate::event::TableSchema;

/// `[name]`, with `]` doubled.
pub fn quote(ident: &str) -> String {
    format!("[{}]", ident.replace(']', "]]"))
}

pub fn qualified(schema: &TableSchema) -> String {
    format!("{}.{}", quote(&schema.id.schema), quote(&schema.id.name))
}

/// Opens the poll cycle's transaction: everything read until COMMIT is one consistent cut.
pub const BEGIN_SNAPSHOT: &str = "SET TRANSACTION ISOLATION LEVEL SNAPSHOT; BEGIN TRAN";
pub const COMMIT: &str = "COMMIT TRAN";

pub const CURRENT_VERSION: &str = "SELECT CHANGE_TRACKING_CURRENT_VERSION()";

/// Min valid version of every tracked table, by name.
pub const TRACKED_TABLES: &str = "SELECT OBJECT_SCHEMA_NAME(t.object_id) AS schema_name, \
     OBJECT_NAME(t.object_id) AS table_name, t.min_valid_version, t.begin_version \
     FROM sys.change_tracking_tables AS t";

pub const DATABASE_CT: &str = "SELECT d.retention_period, d.retention_period_units, \
     d.is_auto_cleanup_on FROM sys.change_tracking_databases AS d WHERE d.database_id = DB_ID()";

pub const SNAPSHOT_ISOLATION: &str =
    "SELECT d.snapshot_isolation_state FROM sys.databases AS d WHERE d.name = DB_NAME()";

pub const COLUMNS: &str = "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, \
     c.CHARACTER_MAXIMUM_LENGTH, c.NUMERIC_PRECISION, c.NUMERIC_SCALE, c.IS_NULLABLE, \
     c.ORDINAL_POSITION FROM INFORMATION_SCHEMA.COLUMNS AS c \
     ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION";

pub const PRIMARY_KEYS: &str = "SELECT kcu.TABLE_SCHEMA, kcu.TABLE_NAME, kcu.COLUMN_NAME, \
     kcu.ORDINAL_POSITION FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS AS tc \
     JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE AS kcu ON kcu.CONSTRAINT_NAME = tc.CONSTRAINT_NAME \
     AND kcu.TABLE_SCHEMA = tc.TABLE_SCHEMA AND kcu.TABLE_NAME = tc.TABLE_NAME \
     WHERE tc.CONSTRAINT_TYPE = 'PRIMARY KEY' \
     ORDER BY kcu.TABLE_SCHEMA, kcu.TABLE_NAME, kcu.ORDINAL_POSITION";

/// `SELECT` and `VIEW CHANGE TRACKING` on a table (`@P1` = `schema.table`).
pub const PERMISSIONS: &str = "SELECT HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'SELECT') AS can_select, \
     HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'VIEW CHANGE TRACKING') AS can_view_ct";

/// Commit time of one version (`@P1`).
pub const COMMIT_TIME: &str =
    "SELECT tc.commit_time FROM sys.dm_tran_commit_table AS tc WHERE tc.commit_ts = @P1";

/// Commit time of the oldest version above `@P1` and at most `@P2` (lag of a sink at `@P1`).
pub const OLDEST_COMMIT_AFTER: &str = "SELECT TOP (1) tc.commit_ts, tc.commit_time \
     FROM sys.dm_tran_commit_table AS tc WHERE tc.commit_ts > @P1 AND tc.commit_ts <= @P2 \
     ORDER BY tc.commit_ts";

/// Net changes of one table after `@P1`, up to the cycle's bound `@P2`, with the row's current
/// values and the commit time. Columns: version, operation, commit time, then the key columns as
/// CHANGETABLE returns them, then every replicated column of the joined row (all NULL when the
/// row is gone).
pub fn changes(schema: &TableSchema) -> String {
    let key_ct: Vec<String> = schema
        .key_columns()
        .map(|c| format!("ct.{}", quote(&c.name)))
        .collect();
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("t.{}", quote(&c.name)))
        .collect();
    let join: Vec<String> = schema
        .key_columns()
        .map(|c| format!("t.{q} = ct.{q}", q = quote(&c.name)))
        .collect();
    format!(
        "SELECT ct.SYS_CHANGE_VERSION, ct.SYS_CHANGE_OPERATION, tc.commit_time, {}, {} \
         FROM CHANGETABLE(CHANGES {}, @P1) AS ct \
         LEFT OUTER JOIN {} AS t ON {} \
         LEFT OUTER JOIN sys.dm_tran_commit_table AS tc ON tc.commit_ts = ct.SYS_CHANGE_VERSION \
         WHERE ct.SYS_CHANGE_VERSION <= @P2 ORDER BY ct.SYS_CHANGE_VERSION",
        key_ct.join(", "),
        cols.join(", "),
        qualified(schema),
        qualified(schema),
        join.join(" AND "),
    )
}

pub fn count_rows(schema: &TableSchema) -> String {
    format!("SELECT COUNT_BIG(*) FROM {}", qualified(schema))
}

/// One snapshot chunk in key order: `@P1` rows; with `after_key`, only keys after `@P2…` (the
/// last key of the previous chunk, keyset pagination).
pub fn snapshot_chunk(schema: &TableSchema, after_key: bool) -> String {
    let cols: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    let keys: Vec<String> = schema.key_columns().map(|c| quote(&c.name)).collect();
    let mut sql = format!(
        "SELECT TOP (@P1) {} FROM {}",
        cols.join(", "),
        qualified(schema)
    );
    if after_key {
        let disjuncts: Vec<String> = (0..keys.len())
            .map(|i| {
                let mut terms: Vec<String> = (0..i)
                    .map(|j| format!("{} = @P{}", keys[j], j + 2))
                    .collect();
                terms.push(format!("{} > @P{}", keys[i], i + 2));
                format!("({})", terms.join(" AND "))
            })
            .collect();
        // The leading `k1 >= @P2` is implied by the disjunction but lets the server seek the
        // primary key index instead of scanning the table for every chunk.
        sql.push_str(&format!(
            " WHERE {} >= @P2 AND ({})",
            keys[0],
            disjuncts.join(" OR ")
        ));
    }
    sql.push_str(&format!(" ORDER BY {}", keys.join(", ")));
    sql
}

/// The T-SQL that turns Change Tracking on for a database and tables (`enable-ct --print`).
pub fn enable_ct(database: &str, tables: &[crate::event::TableId]) -> String {
    let mut out = format!(
        "-- Change Tracking for edfi-cdc. Review, then run as a member of db_owner.\n\
         ALTER DATABASE {db} SET ALLOW_SNAPSHOT_ISOLATION ON;\n\
         IF NOT EXISTS (SELECT 1 FROM sys.change_tracking_databases WHERE database_id = DB_ID({lit}))\n    \
         ALTER DATABASE {db} SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON);\n",
        db = quote(database),
        lit = format_args!("N'{}'", database.replace('\'', "''")),
    );
    for t in tables {
        let name = format!("{}.{}", quote(&t.schema), quote(&t.name));
        out.push_str(&format!(
            "IF NOT EXISTS (SELECT 1 FROM sys.change_tracking_tables WHERE object_id = OBJECT_ID(N'{lit}'))\n    \
             ALTER TABLE {name} ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = ON);\n",
            lit = name.replace('\'', "''"),
        ));
    }
    out.push_str(
        "-- The replicator's login needs, per table: GRANT SELECT, VIEW CHANGE TRACKING ON <table> TO <login>;\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::{col, every_type_schema};
    use crate::event::{TableId, TableSchema};

    #[test]
    fn change_query_joins_on_every_key_column() {
        let s = every_type_schema();
        let q = changes(&s);
        assert!(
            q.contains("FROM CHANGETABLE(CHANGES [edfi].[Student], @P1) AS ct"),
            "{q}"
        );
        assert!(
            q.contains("ON t.[StudentUSI] = ct.[StudentUSI] AND t.[BirthDate] = ct.[BirthDate]"),
            "{q}"
        );
        assert!(
            q.contains("WHERE ct.SYS_CHANGE_VERSION <= @P2 ORDER BY ct.SYS_CHANGE_VERSION"),
            "{q}"
        );
    }

    #[test]
    fn snapshot_chunk_uses_keyset_pagination() {
        let s = TableSchema {
            id: TableId::new("edfi", "T]x"),
            columns: vec![col("a", "int"), col("b", "int"), col("c", "int")],
            key: vec![0, 1],
        };
        assert_eq!(
            snapshot_chunk(&s, false),
            "SELECT TOP (@P1) [a], [b], [c] FROM [edfi].[T]]x] ORDER BY [a], [b]"
        );
        assert_eq!(
            snapshot_chunk(&s, true),
            "SELECT TOP (@P1) [a], [b], [c] FROM [edfi].[T]]x] WHERE [a] >= @P2 AND (([a] > @P2) OR ([a] = @P2 AND [b] > @P3)) ORDER BY [a], [b]"
        );
    }
}
