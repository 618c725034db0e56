//! A cycle larger than memory: the changes of an unfinished cycle are written to staging as they
//! arrive, once `spill_rows` rows are held, and merged at the cycle's watermark.
//!
//! - The rows go to unlogged tables of schema `edfi_cdc_spill`, one per target table and sink
//!   process, shaped like the target plus the operation, the change's version and a sequence
//!   number. Each write is its own short transaction; nothing of the target changes until the
//!   watermark's transaction.
//! - That transaction writes the rows still in memory after them, takes the last change per key
//!   (the highest version, then the highest sequence number: see [`crate::sink::Compacted`])
//!   into the table's temporary batch table, merges as usual, and empties the spill tables. A
//!   failed attempt rolls all of that back, so it can be retried.
//! - A write retried after its commit went through unacknowledged would add its rows twice: the
//!   next attempt first deletes every row past the last write known to be committed, so the
//!   tables always hold exactly the rows counted.
//! - Unlogged tables are emptied by a crash of the PostgreSQL server. The number of rows is
//!   checked before the merge: a shortfall stops the sink, and the restart reads the cycle again.
//! - A restarted sink drops what a process of the same sink left behind: those changes were not
//!   committed, and the stream sends them again. The names carry a token of the process, so a
//!   worker that lost its lane and still runs never writes into the tables of the one that took
//!   it over; it finds its own tables gone and stops as fenced.
//! - With a stream lane, no transaction stores positions past changes that are only spilled:
//!   a snapshot marker's transaction covers the messages before it only when nothing of the
//!   cycle is held, in memory or here.

use std::collections::HashMap;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};
use tracing::info;

use super::{copy_rows, After, TableRt, SINK};
use crate::event::{shape_digest, ChangeEvent, TableId};
use crate::sink::names::{ident, OP_COLUMN, SEQ_COLUMN, VERSION_COLUMN};
use crate::sink::{CommitSeconds, SinkError};

pub const SCHEMA: &str = "edfi_cdc_spill";

/// One target table's spilled rows.
struct Spilled {
    /// Quoted, schema-qualified.
    table: String,
    /// The source shape the table was created for (its target's at the time).
    shape: String,
    rows: u64,
    /// The sequence number of the last row known to be committed.
    seq: i64,
    /// The spilled rows' source commit times.
    times: CommitSeconds,
}

pub struct Spill {
    /// `{sink}_{process}_`: every table name starts with it.
    prefix: String,
    /// The lane this sink applies, if any (a table dropped under it means another worker took
    /// the lane).
    lane: Option<String>,
    tables: HashMap<TableId, Spilled>,
    /// Changes written (before collapsing), for the applied counts.
    events: u64,
    /// A write began and is not known to have committed.
    unsettled: bool,
}

/// The part of the names that is the same for every process of `sink`.
fn sink_prefix(connector: &str, sink: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{connector}\0{sink}").as_bytes());
    format!("{:08x}_", h as u32)
}

impl Spill {
    /// Drop the spill tables a process of this sink left behind (its cycle was not committed),
    /// and start this process's. Schema [`SCHEMA`] exists.
    pub async fn open(
        client: &Client,
        connector: &str,
        sink: &str,
        lane: Option<String>,
    ) -> Result<Spill, SinkError> {
        let prefix = sink_prefix(connector, sink);
        let fail = |e: tokio_postgres::Error| SinkError::from_pg(SINK, &e);
        let left: Vec<String> = client
            .query(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND starts_with(tablename, $2)",
                &[&SCHEMA, &prefix],
            )
            .await
            .map_err(fail)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !left.is_empty() {
            let names: Vec<String> = left
                .iter()
                .map(|t| format!("{SCHEMA}.{}", ident(t)))
                .collect();
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {}", names.join(", ")))
                .await
                .map_err(fail)?;
            info!(
                sink,
                tables = left.len(),
                "dropped the spill tables of an earlier process of this sink"
            );
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        Ok(Spill {
            prefix: format!("{prefix}{}_", &token[..8]),
            lane,
            tables: HashMap::new(),
            events: 0,
            unsettled: false,
        })
    }

    /// A database error of a spill statement: a spill table that vanished was dropped by
    /// another process of this sink.
    fn error(&self, e: tokio_postgres::Error) -> SinkError {
        if e.code() != Some(&SqlState::UNDEFINED_TABLE) {
            return SinkError::from_pg(SINK, &e);
        }
        match &self.lane {
            Some(lane) => SinkError::Fenced {
                sink: SINK.into(),
                lane: lane.clone(),
            },
            None => SinkError::Fatal {
                sink: SINK.into(),
                message: format!("a spill table of this sink was dropped by another process of the same sink (is the connector running twice?): {e}"),
            },
        }
    }

    /// Rows held in the spill tables.
    pub fn rows(&self) -> u64 {
        self.tables.values().map(|s| s.rows).sum()
    }

    /// Changes written since the last commit, before collapsing.
    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn has(&self, id: &TableId) -> bool {
        self.tables.get(id).is_some_and(|s| s.rows > 0)
    }

    /// The written rows of `id` were committed at the source at these times.
    pub fn add_times<'a>(
        &mut self,
        id: &TableId,
        events: impl IntoIterator<Item = &'a ChangeEvent>,
    ) {
        if let Some(s) = self.tables.get_mut(id) {
            s.times.add(events);
        }
    }

    /// The source commit times of the spilled rows of `tables`.
    pub fn times(&self, tables: &[(TableId, u64)]) -> CommitSeconds {
        let mut all = CommitSeconds::default();
        for (id, _) in tables {
            if let Some(s) = self.tables.get(id) {
                all.absorb(s.times.clone());
            }
        }
        all
    }

    /// The tables with spilled rows, and how many each.
    pub fn per_table(&self) -> Vec<(TableId, u64)> {
        self.tables
            .iter()
            .filter(|(_, s)| s.rows > 0)
            .map(|(id, s)| (id.clone(), s.rows))
            .collect()
    }

    /// Make sure `rt`'s spill table exists for the table's current shape (outside a
    /// transaction, so that a rolled-back write leaves it known).
    pub async fn prepare(&mut self, client: &Client, rt: &TableRt) -> Result<(), SinkError> {
        let id = &rt.schema.id;
        let shape = shape_digest(&rt.schema);
        if self.tables.get(id).is_some_and(|s| s.shape != shape) {
            // The table changed at the source and is re-snapshotted: rows of the old shape
            // belong to the cycle in which its snapshot started, which takes no changes of it.
            let old = self.tables.remove(id).expect("checked above");
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {}", old.table))
                .await
                .map_err(|e| self.error(e))?;
        }
        if self.tables.contains_key(id) {
            return Ok(());
        }
        let table = format!("{SCHEMA}.{}", ident(&format!("{}{}", self.prefix, rt.temp)));
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; \
                 CREATE UNLOGGED TABLE {table} AS SELECT {cols} FROM {target} WITH NO DATA; \
                 ALTER TABLE {table} ADD COLUMN {OP_COLUMN} \"char\", \
                 ADD COLUMN {VERSION_COLUMN} bigint NOT NULL, \
                 ADD COLUMN {SEQ_COLUMN} bigint GENERATED ALWAYS AS IDENTITY",
                cols = rt.columns.join(", "),
                target = rt.target.sql(),
            ))
            .await
            .map_err(|e| self.error(e))?;
        self.tables.insert(
            id.clone(),
            Spilled {
                table,
                shape,
                rows: 0,
                seq: 0,
                times: CommitSeconds::default(),
            },
        );
        Ok(())
    }

    /// First in a transaction that writes spill rows: rows of a write not known to have
    /// committed (it may have, unacknowledged) are removed.
    pub async fn settle(&self, tx: &Transaction<'_>) -> Result<(), SinkError> {
        if !self.unsettled {
            return Ok(());
        }
        for s in self.tables.values() {
            tx.execute(
                &format!("DELETE FROM {} WHERE {SEQ_COLUMN} > $1", s.table),
                &[&s.seq],
            )
            .await
            .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// A write of spill rows begins; [`Spill::written`] once its transaction committed.
    pub fn begin_write(&mut self) {
        self.unsettled = true;
    }

    /// Write `events` (the table's collapsed changes) after the rows already spilled, in `tx`;
    /// the table was [prepared](Spill::prepare). Returns the last row's sequence number.
    pub async fn write(
        &self,
        tx: &Transaction<'_>,
        rt: &TableRt,
        events: &[&ChangeEvent],
    ) -> Result<i64, SinkError> {
        let table = &self.tables[&rt.schema.id].table;
        copy_rows(
            tx,
            rt,
            &format!(
                "COPY {table} ({}, {OP_COLUMN}, {VERSION_COLUMN}) FROM STDIN",
                rt.columns.join(", ")
            ),
            events,
            After::OpAndVersion,
        )
        .await?;
        let seq: i64 = tx
            .query_one(
                &format!("SELECT currval(pg_get_serial_sequence($1, '{SEQ_COLUMN}'))"),
                &[table],
            )
            .await
            .map_err(|e| self.error(e))?
            .get(0);
        Ok(seq)
    }

    /// The write's transaction committed: per table, the rows (distinct keys) and the last
    /// sequence number it wrote, and the changes it held before collapsing.
    pub fn written(&mut self, tables: &[(TableId, u64, i64)], events: u64) {
        for (id, rows, seq) in tables {
            if let Some(s) = self.tables.get_mut(id) {
                s.rows += rows;
                s.seq = *seq;
            }
        }
        self.events += events;
        self.unsettled = false;
    }

    /// In the watermark's transaction: after `remaining` (the table's changes still in memory)
    /// are written, the last change of each key into the table's temporary batch table.
    pub async fn collect(
        &self,
        tx: &Transaction<'_>,
        rt: &TableRt,
        remaining: &[&ChangeEvent],
    ) -> Result<(), SinkError> {
        if !remaining.is_empty() {
            self.write(tx, rt, remaining).await?;
        }
        let s = &self.tables[&rt.schema.id];
        let expected = s.rows + remaining.len() as u64;
        let found: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", s.table), &[])
            .await
            .map_err(|e| self.error(e))?
            .get(0);
        if found as u64 != expected {
            return Err(SinkError::Fatal {
                sink: SINK.into(),
                message: format!(
                    "{found} of the {expected} changes of {} written to {} are there (an unlogged table is emptied when the PostgreSQL server restarts): nothing of the cycle was applied; a restart reads it again",
                    rt.schema.id, s.table
                ),
            });
        }
        let cols = rt.columns.join(", ");
        tx.batch_execute(&format!(
            "INSERT INTO {temp} ({cols}, {OP_COLUMN}) \
             SELECT DISTINCT ON ({keys}) {cols}, {OP_COLUMN} FROM {table} \
             ORDER BY {keys}, {VERSION_COLUMN} DESC, {SEQ_COLUMN} DESC",
            temp = rt.temp,
            keys = rt.keys.join(", "),
            table = s.table,
        ))
        .await
        .map_err(|e| self.error(e))
    }

    /// In the watermark's transaction (or one that drops the cycle): empty every spill table.
    pub async fn empty(&self, tx: &Transaction<'_>) -> Result<(), SinkError> {
        let held: Vec<&str> = self
            .tables
            .values()
            .filter(|s| s.rows > 0)
            .map(|s| s.table.as_str())
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        tx.batch_execute(&format!("TRUNCATE {}", held.join(", ")))
            .await
            .map_err(|e| self.error(e))
    }

    /// The transaction of [`Spill::empty`] committed.
    pub fn emptied(&mut self) {
        for s in self.tables.values_mut() {
            s.rows = 0;
            s.times = CommitSeconds::default();
        }
        self.events = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_per_sink_and_short() {
        let a = sink_prefix("edfi-ods", "staging");
        let b = sink_prefix("edfi-ods", "staging@edfi-ods/3");
        assert_ne!(a, b);
        assert_eq!(a.len(), 9);
        // prefix, process token, the batch table's name: well within PostgreSQL's 63 bytes.
        assert!(format!("{a}0123abcd_edfi_cdc_batch_36").len() < 63);
    }
}
