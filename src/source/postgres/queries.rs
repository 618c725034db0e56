//! Every SQL statement the PostgreSQL poller sends. Identifiers are double-quoted; values are
//! always parameters.

use crate::event::TableSchema;

use super::value;

/// `"name"`, with `"` doubled.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

pub fn qualified(schema: &TableSchema) -> String {
    format!("{}.{}", quote(&schema.id.schema), quote(&schema.id.name))
}

/// The login and whether it may use replication slots.
pub const ROLE: &str = "SELECT current_user::text, rolreplication OR rolsuper OR EXISTS ( \
     SELECT 1 FROM pg_roles AS r WHERE r.rolname = 'rds_replication' \
     AND pg_has_role(current_user, r.oid, 'MEMBER')) \
     FROM pg_roles WHERE rolname = current_user";

/// Columns of every table: schema, table, column, type name, character length, numeric
/// precision and scale (decoded from the typmod), nullable, replica identity, relkind.
/// Generated columns are left out: pgoutput (protocol 1) does not send them.
pub const COLUMNS: &str = "SELECT n.nspname::text, c.relname::text, a.attname::text, \
     t.typname::text, \
     CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 THEN a.atttypmod - 4 END, \
     CASE WHEN t.typname = 'numeric' AND a.atttypmod > 4 THEN ((a.atttypmod - 4) >> 16) & 65535 END, \
     CASE WHEN t.typname = 'numeric' AND a.atttypmod > 4 THEN (a.atttypmod - 4) & 65535 END, \
     NOT a.attnotnull, c.relreplident::\"char\", c.relkind::\"char\" \
     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
     AND c.relkind IN ('r', 'p') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     ORDER BY n.nspname, c.relname, a.attnum";

/// Primary key columns in key order.
pub const PRIMARY_KEYS: &str = "SELECT n.nspname::text, c.relname::text, a.attname::text \
     FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
     WHERE i.indisprimary ORDER BY n.nspname, c.relname, k.ord";

/// The slot (`$1`, a name unique in the whole server): plugin, whether it can still decode,
/// where it confirmed up to, and its database.
pub const SLOT: &str = "SELECT plugin::text, wal_status IS DISTINCT FROM 'lost', \
     confirmed_flush_lsn::text, database::text FROM pg_replication_slots WHERE slot_name = $1";

pub const DATABASE: &str = "SELECT current_database()::text";

pub const CREATE_SLOT: &str =
    "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')";

pub const DROP_SLOT: &str = "SELECT pg_drop_replication_slot($1)";

/// The tables the publication (`$1`) covers, and whether it publishes every operation.
pub const PUBLICATION_TABLES: &str = "SELECT schemaname::text, tablename::text \
     FROM pg_publication_tables WHERE pubname = $1";

pub const PUBLICATION: &str = "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate \
     FROM pg_publication WHERE pubname = $1";

/// The current snapshot's `xmax` and the transactions in progress below it, low 32 bits each
/// (the xmax first, then one row per transaction): a transaction whose commit record is flushed
/// is not visible to other sessions while it is in that list or at or past that xmax.
pub const IN_PROGRESS: &str = "WITH s AS (SELECT pg_current_snapshot() AS s) \
     SELECT (pg_snapshot_xmax(s)::text::bigint % 4294967296)::bigint, NULL::bigint FROM s \
     UNION ALL SELECT NULL, (x::text::bigint % 4294967296)::bigint \
     FROM s, pg_snapshot_xip(s) AS x";

/// Everything flushed to the WAL: every transaction committed before it can be decoded.
pub const FLUSH_LSN: &str = "SELECT pg_current_wal_flush_lsn()::text";

/// The slot's (`$1`) decoded changes of transactions committed before `$2`, at most about `$3`
/// messages (whole transactions), from the publication `$4`; not consumed. The server builds
/// the whole result before it sends the first row.
pub const PEEK: &str =
    "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3, \
     'proto_version', '1', 'publication_names', $4)";

pub const ADVANCE: &str = "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)";

/// Bytes of WAL the slot (`$1`) holds back.
pub const SLOT_LAG: &str = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
     FROM pg_replication_slots WHERE slot_name = $1";

/// The replicated columns of `schema` as text, in order.
fn text_columns(schema: &TableSchema) -> String {
    schema
        .columns
        .iter()
        .map(|c| format!("src.{}::text", quote(&c.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key columns, qualified with the alias `src`: a bare name in ORDER BY would name the
/// selected `::text` column of that name and sort as text.
fn key_list(schema: &TableSchema) -> String {
    schema
        .key_columns()
        .map(|c| format!("src.{}", quote(&c.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Key parameters from `$first` on, each cast from text to its column's kind.
fn key_params(schema: &TableSchema, first: usize) -> String {
    schema
        .key_columns()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "${}::text::{}",
                first + i,
                value::cast(c.source_type.kind())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One snapshot chunk in key order: `$1` rows after the key `$2…` (from the start when
/// `after_key` is false).
pub fn snapshot_chunk(schema: &TableSchema, after_key: bool) -> String {
    let keys = key_list(schema);
    let filter = if after_key {
        format!("WHERE ({keys}) > ({})", key_params(schema, 2))
    } else {
        String::new()
    };
    format!(
        "SELECT {} FROM {} AS src {filter} ORDER BY {keys} LIMIT $1",
        text_columns(schema),
        qualified(schema)
    )
}

/// The current row with key `$1…`.
pub fn row_by_key(schema: &TableSchema) -> String {
    format!(
        "SELECT {} FROM {} AS src WHERE ({}) = ({})",
        text_columns(schema),
        qualified(schema),
        key_list(schema),
        key_params(schema, 1)
    )
}

pub fn count_rows(schema: &TableSchema) -> String {
    format!("SELECT count(*) FROM {}", qualified(schema))
}

/// The SQL a DBA runs once for a connector: the publication over its tables, the login's
/// right to read slots and tables. The slot the connector creates itself on first start.
pub fn setup(publication: &str, user: &str, tables: &[crate::event::TableId]) -> String {
    let list = tables
        .iter()
        .map(|t| {
            format!(
                "{}.{}",
                quote(&t.schema.to_lowercase()),
                quote(&t.name.to_lowercase())
            )
        })
        .collect::<Vec<_>>();
    let mut out = String::from(
        "-- On the PostgreSQL source, as its owner. wal_level must be `logical` (RDS/Aurora: set\n\
         -- rds.logical_replication = 1 in the parameter group); bound what a stopped slot may\n\
         -- hold back with max_slot_wal_keep_size.\n",
    );
    out.push_str(&format!(
        "CREATE PUBLICATION {} FOR TABLE\n    {};\n",
        quote(publication),
        list.join(",\n    ")
    ));
    out.push_str(&format!(
        "ALTER ROLE {u} REPLICATION;  -- RDS/Aurora: GRANT rds_replication TO {u};\n",
        u = quote(user)
    ));
    for t in &list {
        out.push_str(&format!("GRANT SELECT ON {t} TO {};\n", quote(user)));
    }
    out
}
