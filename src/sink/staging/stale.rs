//! Rows a partial lane's snapshot must remove: a Kafka lane receives one partition of each
//! table's topic, so its snapshot holds only the rows placed in that partition, and publishing
//! it replaces those rows only. A row deleted at the source before the snapshot began, whose
//! delete the lane never received (a stream that lost records, a re-snapshot asked for because
//! the target is wrong), is in no snapshot; left alone it would stay in the target for good.
//!
//! The target's keys are read back and placed as the producer places them
//! ([`Share::holds`]); those of this lane that its snapshot (brought up to the publishing
//! watermark in the shadow) does not hold are deleted. Placing a row needs its key exactly as
//! the source sent it, so a table whose key types do not read back exactly (floating point,
//! money, `char(n)`, times finer than microseconds or of unknown scale) is left alone, and so is
//! one where a row of the snapshot reads back into another partition, or where some lane
//! stored a position in a partition beyond this lane's count (partitions were added) — each
//! said in the log.

use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;
use tracing::{info, warn};

use crate::event::{ColumnSchema, Value};
use crate::sink::{Share, SinkError};
use crate::source::postgres::value;

use super::ddl::pg_type;
use super::{pg, TableRt};

/// Keys per `DELETE` statement.
const DELETE_CHUNK: usize = 5000;

/// Whether a key column's value, written to the target and read back as text, is the value the
/// source sent: SQL Server types named one by one (anything else — float, money, `char(n)`,
/// `datetime`, a type the catalog gives no scale for — is not placed).
fn reads_back(c: &ColumnSchema) -> bool {
    let t = &c.source_type;
    match t.name.as_str() {
        "tinyint" | "smallint" | "int" | "bigint" | "bit" | "decimal" | "numeric" | "varchar"
        | "nvarchar" | "date" | "uniqueidentifier" | "binary" | "varbinary" => true,
        "datetime2" | "time" | "datetimeoffset" => t.scale.is_some_and(|s| s <= 6),
        _ => false,
    }
}

/// Delete the rows of `rt`'s target that `share` holds and the shadow does not; the number
/// deleted. Runs in the publishing transaction, before the shadow's rows replace the target's.
pub(super) async fn delete_stale_rows(
    tx: &Transaction<'_>,
    connector: &str,
    rt: &TableRt,
    share: Share,
) -> Result<u64, SinkError> {
    let Share::Partition { of, .. } = share else {
        return Ok(0);
    };
    let table = &rt.schema.id;
    let columns: Vec<&ColumnSchema> = rt.schema.key_columns().collect();
    if let Some(c) = columns.iter().find(|c| !reads_back(c)) {
        warn!(table = %table, column = %c.name, source_type = %c.source_type.name,
            "rows deleted at the source before this snapshot whose deletes the lane never received \
             are not looked for: the key column does not read back exactly; `edfi-cdc verify` finds them");
        return Ok(0);
    }
    let on: Vec<String> = rt.keys.iter().map(|k| format!("s.{k} = t.{k}")).collect();
    let select: Vec<String> = rt.keys.iter().map(|k| format!("t.{k}::text")).collect();
    tx.batch_execute(
        "SET LOCAL DateStyle = ISO; SET LOCAL TimeZone = 'UTC'; SET LOCAL bytea_output = hex",
    )
    .await
    .map_err(pg)?;
    let rows = tx
        .query_raw(
            &format!(
                "SELECT {select}, EXISTS (SELECT 1 FROM {shadow} AS s WHERE {on}) FROM {target} AS t",
                select = select.join(", "),
                shadow = rt.shadow.sql(),
                on = on.join(" AND "),
                target = rt.target.sql(),
            ),
            std::iter::empty::<&(dyn ToSql + Sync)>(),
        )
        .await
        .map_err(pg)?;
    futures_util::pin_mut!(rows);
    let n = columns.len();
    let mut stale: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut checked = 0u64;
    while let Some(row) = rows.try_next().await.map_err(pg)? {
        let Some(texts) = (0..n)
            .map(|i| row.get::<_, Option<&str>>(i))
            .collect::<Option<Vec<&str>>>()
        else {
            warn!(table = %table, "the target holds a row with a NULL key; stale rows are not looked for");
            return Ok(0);
        };
        let key: Option<Vec<Value>> = columns
            .iter()
            .zip(&texts)
            .map(|(c, t)| value::parse(c.source_type.kind(), t))
            .collect();
        let Some(key) = key else {
            warn!(table = %table, key = ?texts, "a key of the target does not read back; stale rows are not looked for");
            return Ok(0);
        };
        let in_snapshot: bool = row.get(n);
        let ours = share.holds(table, &key);
        if in_snapshot && !ours {
            warn!(table = %table, key = ?texts,
                "a row of this lane's snapshot reads back into another partition; stale rows are not looked for");
            return Ok(0);
        }
        checked += u64::from(in_snapshot);
        if ours && !in_snapshot {
            for (keys, t) in stale.iter_mut().zip(&texts) {
                keys.push((*t).to_string());
            }
        }
    }
    let found = stale[0].len();
    if found == 0 {
        return Ok(0);
    }
    // Kafka only ever adds partitions. A lane that stored a position in a partition beyond the
    // count this lane places rows by received rows placed by a larger count (committed with
    // their positions, so visible now if the rows read above were), and this lane's placement
    // would take some of them for its own.
    let beyond: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM edfi_cdc.stream_positions WHERE connector = $1 \
             AND sink LIKE 'staging@%' AND substring(part from '/([0-9]+)$')::bigint >= $2)",
            &[&connector, &i64::from(of)],
        )
        .await
        .map_err(pg)?
        .get(0);
    if beyond {
        warn!(table = %table, partitions = of,
            "the topics have more partitions than when this worker started: stale rows are not deleted; restart the workers");
        return Ok(0);
    }
    let params: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let matches: Vec<String> = rt
        .keys
        .iter()
        .zip(&columns)
        .enumerate()
        .map(|(i, (k, c))| format!("t.{k} = u.k{i}::{}", pg_type(&c.source_type)))
        .collect();
    let sql = format!(
        "DELETE FROM {target} AS t USING unnest({params}) AS u({names}) WHERE {matches}",
        target = rt.target.sql(),
        params = params.join(", "),
        names = names.join(", "),
        matches = matches.join(" AND "),
    );
    let mut deleted = 0;
    for start in (0..found).step_by(DELETE_CHUNK) {
        let end = (start + DELETE_CHUNK).min(found);
        let chunks: Vec<&[String]> = stale.iter().map(|keys| &keys[start..end]).collect();
        let args: Vec<&(dyn ToSql + Sync)> =
            chunks.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        deleted += tx.execute(&sql, &args).await.map_err(pg)?;
    }
    info!(table = %table, target = %rt.target, deleted, snapshot_rows_checked = checked,
        "rows of this lane the source no longer has were deleted from the target");
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SourceType;

    fn col(name: &str, scale: Option<u8>) -> ColumnSchema {
        ColumnSchema {
            name: "c".into(),
            source_type: SourceType {
                name: name.into(),
                max_length: Some(20),
                precision: None,
                scale,
            },
            nullable: false,
        }
    }

    #[test]
    fn keys_that_read_back_exactly_are_those_placed_again() {
        for (ty, scale) in [
            ("int", None),
            ("nvarchar", None),
            ("date", None),
            ("uniqueidentifier", None),
            ("decimal", Some(2)),
            ("datetime2", Some(6)),
            ("time", Some(3)),
        ] {
            assert!(reads_back(&col(ty, scale)), "{ty}");
        }
        for (ty, scale) in [
            ("float", None),
            ("money", Some(4)),
            ("nchar", None),
            ("sql_variant", None),
            ("datetime", Some(3)),
            ("datetime2", Some(7)),
            ("datetime2", None),
            ("datetimeoffset", Some(7)),
        ] {
            assert!(!reads_back(&col(ty, scale)), "{ty}({scale:?})");
        }
    }
}
