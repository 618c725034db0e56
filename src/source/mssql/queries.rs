//! Every T-SQL statement the poller and `verify` send. Identifiers are bracket-quoted; values are always
//! parameters (`@P1`, …).

use crate::event::{ColumnSchema, TableSchema, ValueKind};

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

/// The columns of some tables in catalog order, as [`COLUMNS`] reads them: `groups` gives, per
/// schema, how many of its tables are asked for; the parameters are each schema followed by
/// its tables' names. Read in every cycle to notice a table that changed (an `IN` list per
/// schema: a catalog view filtered by pairs costs several times more).
pub fn columns_of(groups: &[usize]) -> String {
    let mut n = 0;
    let mut param = || {
        n += 1;
        format!("@P{n}")
    };
    let each: Vec<String> = groups
        .iter()
        .map(|&tables| {
            let schema = param();
            let names: Vec<String> = (0..tables).map(|_| param()).collect();
            format!(
                "(c.TABLE_SCHEMA = {schema} AND c.TABLE_NAME IN ({}))",
                names.join(", ")
            )
        })
        .collect();
    format!(
        "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, \
         c.CHARACTER_MAXIMUM_LENGTH, c.NUMERIC_PRECISION, c.NUMERIC_SCALE, c.IS_NULLABLE, \
         c.ORDINAL_POSITION FROM INFORMATION_SCHEMA.COLUMNS AS c WHERE {} \
         ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION",
        each.join(" OR ")
    )
}

pub const PRIMARY_KEYS: &str = "SELECT kcu.TABLE_SCHEMA, kcu.TABLE_NAME, kcu.COLUMN_NAME, \
     kcu.ORDINAL_POSITION FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS AS tc \
     JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE AS kcu ON kcu.CONSTRAINT_NAME = tc.CONSTRAINT_NAME \
     AND kcu.TABLE_SCHEMA = tc.TABLE_SCHEMA AND kcu.TABLE_NAME = tc.TABLE_NAME \
     WHERE tc.CONSTRAINT_TYPE = 'PRIMARY KEY' \
     ORDER BY kcu.TABLE_SCHEMA, kcu.TABLE_NAME, kcu.ORDINAL_POSITION";

/// `SELECT` and `VIEW CHANGE TRACKING` on a table (`@P1` = `schema.table`).
pub const PERMISSIONS: &str = "SELECT HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'SELECT') AS can_select, \
     HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'VIEW CHANGE TRACKING') AS can_view_ct";

/// Whether the login may write the heartbeat table (`@P1`; the UPDATE's WHERE reads it).
pub const HEARTBEAT_PERMISSIONS: &str =
    "SELECT HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'INSERT') AS can_insert, \
     HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'UPDATE') AS can_update, \
     HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'SELECT') AS can_select";

/// Whether the login holds VIEW SERVER STATE, without which `sys.dm_tran_commit_table` shows it
/// no commit times (SQL Server documents the view as incomplete then).
pub const SERVER_STATE: &str = "SELECT HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE')";

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

/// `(k1 > @Pn) OR (k1 = @Pn AND k2 > @Pn+1) …`: keys after the key bound from `@P{first}` on.
fn keys_after(keys: &[String], first: usize) -> String {
    let disjuncts: Vec<String> = (0..keys.len())
        .map(|i| {
            let mut terms: Vec<String> = (0..i)
                .map(|j| format!("{} = @P{}", keys[j], j + first))
                .collect();
            terms.push(format!("{} > @P{}", keys[i], i + first));
            format!("({})", terms.join(" AND "))
        })
        .collect();
    disjuncts.join(" OR ")
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
        // The leading `k1 >= @P2` is implied by the disjunction but lets the server seek the
        // primary key index instead of scanning the table for every chunk.
        sql.push_str(&format!(
            " WHERE {} >= @P2 AND ({})",
            keys[0],
            keys_after(&keys, 2)
        ));
    }
    sql.push_str(&format!(" ORDER BY {}", keys.join(", ")));
    sql
}

/// The canonical text of one column for `verify`, or `None` for a column it does not compare
/// (`float`, `real`: their text forms differ between SQL Server and the targets). Every target
/// renders the same text from its copy of the value (`verify::target`): integers and decimals
/// in plain notation at the column's scale, `bit` as 1/0, dates `yyyy-mm-dd`, times and
/// timestamps with six fractional digits after rounding to `scale` digits (the precision the
/// target keeps), GUIDs in lower case, binary as upper-case hexadecimal.
fn verify_column(c: &ColumnSchema, scale: u8) -> Option<String> {
    let q = quote(&c.name);
    let t = &c.source_type;
    Some(match t.kind() {
        ValueKind::Bool => format!("CONVERT(varchar(1), CAST({q} AS int))"),
        ValueKind::Int => format!("CONVERT(varchar(20), {q})"),
        ValueKind::Float => return None,
        ValueKind::Decimal if t.name.ends_with("money") => {
            format!("CONVERT(varchar(50), CAST({q} AS decimal(19,4)))")
        }
        ValueKind::Decimal => format!("CONVERT(varchar(50), {q})"),
        ValueKind::String
            if matches!(t.name.as_str(), "char" | "nchar" | "varchar" | "nvarchar") =>
        {
            escaped(&q)
        }
        ValueKind::String => escaped(&format!("CONVERT(nvarchar(max), {q})")),
        ValueKind::Bytes if t.name == "image" => {
            format!("CONVERT(varchar(max), CONVERT(varbinary(max), {q}), 2)")
        }
        ValueKind::Bytes => format!("CONVERT(varchar(max), {q}, 2)"),
        ValueKind::Date => format!("CONVERT(varchar(10), {q}, 23)"),
        ValueKind::Timestamp if scale < 6 => format!(
            "CONVERT(varchar(26), CAST(CAST({q} AS datetime2({scale})) AS datetime2(6)), 121)"
        ),
        ValueKind::Timestamp => format!("CONVERT(varchar(26), CAST({q} AS datetime2(6)), 121)"),
        ValueKind::TimestampTz => {
            format!("CONVERT(varchar(26), CAST(SWITCHOFFSET({q}, '+00:00') AS datetime2(6)), 121)")
        }
        ValueKind::Time => format!("CONVERT(varchar(15), CAST({q} AS time(6)), 121)"),
        ValueKind::Uuid => format!("LOWER(CONVERT(char(36), {q}))"),
    })
}

/// Text with `\` and `|` escaped, so that no value can imitate the separator of the row text.
fn escaped(text: &str) -> String {
    format!("REPLACE(REPLACE({text}, N'\\', N'\\\\'), N'|', N'\\|')")
}

/// `CONCAT` returns at most 4,000 characters unless an argument is `nvarchar(max)`: each one
/// starts with this.
const LONG: &str = "CONVERT(nvarchar(max), ";

/// The canonical text of some columns of a row (`nvarchar(max)`): each column `+text`, or `-`
/// when NULL, joined by `|`.
fn verify_text<'a>(
    columns: impl Iterator<Item = &'a ColumnSchema>,
    scale: &dyn Fn(&ColumnSchema) -> u8,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in columns {
        let Some(text) = verify_column(c, scale(c)) else {
            continue;
        };
        if !parts.is_empty() {
            parts.push("N'|'".into());
        }
        parts.push(format!(
            "CASE WHEN {} IS NULL THEN N'-' ELSE CONCAT({LONG}N'+'), {text}) END",
            quote(&c.name)
        ));
    }
    format!("CONCAT({LONG}N''), {})", parts.join(", "))
}

/// The MD5 of a text as UTF-8 (`varchar` under a UTF-8 collation, SQL Server 2019 and later),
/// which equals the targets' `md5()` of the same text.
fn md5(text: &str) -> String {
    format!("HASHBYTES('MD5', CONVERT(varchar(max), {text} COLLATE Latin1_General_100_BIN2_UTF8))")
}

/// `verify`'s view of a table at the source: every query hashes the canonical row text
/// ([`verify_text`]) and puts each row in a bucket by the hash of its key's text, so that the
/// source and a target (whose collations may order keys differently) agree on which rows a
/// bucket holds. `@P1` is the number of buckets.
pub struct VerifyQueries {
    key: String,
    row: String,
    table: String,
    keys: Vec<String>,
    columns: Vec<String>,
}

impl VerifyQueries {
    /// `scale`: the fractional digits the target keeps of a time column.
    pub fn new(schema: &TableSchema, scale: &dyn Fn(&ColumnSchema) -> u8) -> VerifyQueries {
        VerifyQueries {
            key: verify_text(schema.key_columns(), scale),
            row: verify_text(schema.columns.iter(), scale),
            table: qualified(schema),
            keys: schema.key_columns().map(|c| quote(&c.name)).collect(),
            columns: schema.columns.iter().map(|c| quote(&c.name)).collect(),
        }
    }

    fn bucket(&self) -> String {
        format!("CAST(SUBSTRING({}, 1, 4) AS BIGINT) % @P1", md5(&self.key))
    }

    /// Per bucket: bucket, rows, and the sums of the first and second 4 bytes of the rows'
    /// hashes (unsigned).
    pub fn buckets(&self) -> String {
        format!(
            "SELECT x.b, COUNT_BIG(*), SUM(x.h1), SUM(x.h2) FROM (SELECT {} AS b, \
             CAST(SUBSTRING({row}, 1, 4) AS BIGINT) AS h1, \
             CAST(SUBSTRING({row}, 5, 4) AS BIGINT) AS h2 FROM {}) AS x \
             GROUP BY x.b",
            self.bucket(),
            self.table,
            row = md5(&self.row),
        )
    }

    /// The key columns, the key's text and the row's hash (hexadecimal) of every row in the
    /// `n` buckets `@P2…`.
    pub fn bucket_rows(&self, n: usize) -> String {
        format!(
            "SELECT {}, {}, CONVERT(char(32), {}, 2) {}",
            self.keys.join(", "),
            self.key,
            md5(&self.row),
            self.in_buckets(n)
        )
    }

    /// `FROM` the table `WHERE` a row's bucket is one of the `n` buckets `@P2…`.
    fn in_buckets(&self, n: usize) -> String {
        let list: Vec<String> = (0..n).map(|i| format!("@P{}", i + 2)).collect();
        format!(
            "FROM {} WHERE {} IN ({})",
            self.table,
            self.bucket(),
            list.join(", ")
        )
    }

    /// Every column and then the key's text of every row in the `n` buckets `@P2…`.
    pub fn bucket_full_rows(&self, n: usize) -> String {
        format!(
            "SELECT {}, {} {}",
            self.columns.join(", "),
            self.key,
            self.in_buckets(n)
        )
    }

    /// The key texts of the rows Change Tracking has changed after version `@P1`.
    pub fn changed_keys(&self) -> String {
        format!(
            "SELECT {} FROM CHANGETABLE(CHANGES {}, @P1) AS ct",
            self.key, self.table
        )
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// The heartbeat: the connector's row (`@P1`) in the heartbeat table, updated; inserted when
/// the update finds none.
pub fn heartbeat_update(table: &crate::event::TableId) -> String {
    format!(
        "UPDATE {}.{} SET [BeatAt] = SYSUTCDATETIME() WHERE [Connector] = @P1",
        quote(&table.schema),
        quote(&table.name)
    )
}

pub fn heartbeat_insert(table: &crate::event::TableId) -> String {
    format!(
        "INSERT INTO {}.{} ([Connector], [BeatAt]) VALUES (@P1, SYSUTCDATETIME())",
        quote(&table.schema),
        quote(&table.name)
    )
}

/// The T-SQL that turns Change Tracking on for a database and tables, and creates the
/// heartbeat table when the heartbeat is on (`enable-ct --print`).
pub fn enable_ct(
    database: &str,
    tables: &[crate::event::TableId],
    heartbeat: Option<&crate::event::TableId>,
) -> String {
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
    if let Some(t) = heartbeat {
        let name = format!("{}.{}", quote(&t.schema), quote(&t.name));
        let lit = name.replace('\'', "''");
        out.push_str(&format!(
            "-- The heartbeat (source.heartbeat_interval): a row per connector that the replicator updates, so\n\
             -- that a quiet database still commits and the lag is measured end to end.\n\
             IF SCHEMA_ID(N'{schema}') IS NULL EXEC(N'CREATE SCHEMA {qschema}');\n\
             IF OBJECT_ID(N'{lit}') IS NULL\n    \
             CREATE TABLE {name} ([Connector] nvarchar(128) NOT NULL PRIMARY KEY, [BeatAt] datetime2(3) NOT NULL);\n\
             IF NOT EXISTS (SELECT 1 FROM sys.change_tracking_tables WHERE object_id = OBJECT_ID(N'{lit}'))\n    \
             ALTER TABLE {name} ENABLE CHANGE_TRACKING;\n\
             -- and the replicator's login needs: GRANT SELECT, INSERT, UPDATE ON {name} TO <login>;\n",
            schema = t.schema.replace('\'', "''"),
            qschema = quote(&t.schema).replace('\'', "''"),
        ));
    }
    out.push_str(
        "-- The replicator's login needs, per table: GRANT SELECT, VIEW CHANGE TRACKING ON <table> TO <login>;\n\
         -- and, for commit times (lag) from sys.dm_tran_commit_table, in master: GRANT VIEW SERVER STATE TO <login>;\n",
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
    fn verify_hashes_a_canonical_utf8_text_of_every_comparable_column() {
        let s = every_type_schema();
        let q = VerifyQueries::new(&s, &|c: &ColumnSchema| {
            if c.name == "CreateDate" {
                3
            } else {
                6
            }
        });
        let buckets = q.buckets();
        for part in [
            "CONCAT(CONVERT(nvarchar(max), N''), CASE WHEN [StudentUSI] IS NULL THEN N'-' ELSE CONCAT(CONVERT(nvarchar(max), N'+'), CONVERT(varchar(20), [StudentUSI])) END, N'|', ",
            "CONCAT(CONVERT(nvarchar(max), N'+'), CONVERT(varchar(10), [BirthDate], 23))",
            "CONCAT(CONVERT(nvarchar(max), N'+'), REPLACE(REPLACE([FirstName], N'\\', N'\\\\'), N'|', N'\\|'))",
            "LOWER(CONVERT(char(36), [Id]))",
            "CONVERT(varchar(26), CAST(CAST([CreateDate] AS datetime2(3)) AS datetime2(6)), 121)",
            "CONVERT(varchar(1), CAST([Active] AS int))",
            "CONVERT(varchar(max), [Photo], 2)",
            "CONVERT(varchar(15), CAST([StartTime] AS time(6)), 121)",
            "COLLATE Latin1_General_100_BIN2_UTF8)), 1, 4) AS BIGINT) % @P1 AS b",
            "FROM [edfi].[Student]) AS x GROUP BY x.b",
        ] {
            assert!(buckets.contains(part), "{part} in {buckets}");
        }
        assert!(
            !buckets.contains("[Ratio]"),
            "floats are not compared: {buckets}"
        );
        let rows = q.bucket_rows(2);
        assert!(
            rows.starts_with("SELECT [StudentUSI], [BirthDate], CONCAT("),
            "{rows}"
        );
        assert!(rows.ends_with("% @P1 IN (@P2, @P3)"), "{rows}");
        assert_eq!(
            q.changed_keys(),
            "SELECT CONCAT(CONVERT(nvarchar(max), N''), CASE WHEN [StudentUSI] IS NULL THEN N'-' \
             ELSE CONCAT(CONVERT(nvarchar(max), N'+'), CONVERT(varchar(20), [StudentUSI])) END, N'|', \
             CASE WHEN [BirthDate] IS NULL THEN N'-' ELSE CONCAT(CONVERT(nvarchar(max), N'+'), \
             CONVERT(varchar(10), [BirthDate], 23)) END) \
             FROM CHANGETABLE(CHANGES [edfi].[Student], @P1) AS ct"
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
