//! Bounded memory for a large source transaction, a catch-up, or a long batch: once the sink
//! holds `spill_rows` changed rows (the unflushed batch and the unfinished cycle together), it
//! writes them to spill tables in the target, in a transaction of its own, and lets go of them.
//!
//! - One spill table per source table, in schema [`SCHEMA`], named for the connector and kept
//!   across transactions: the staging table's columns (the target's types, so a value the
//!   target cannot take fails the spill's COPY, naming its key) and [`SEQ_COLUMN`], the
//!   order in which the sink received the row.
//! - The rows of the batch (cycles up to the pending watermark) are written before those of the
//!   unfinished cycle; `upto` is the last sequence number of the batch's rows, and a watermark
//!   moves it to the last one written.
//! - The flush that applies the batch adds to each staging table the spilled rows up to `upto`:
//!   each key's change of the highest version, the last to arrive among equal versions, and
//!   only where it is newer than the staging table's (rows received after the spill)
//!   ([`sql::collect_spill`]); it merges as usual and deletes those rows, in its one
//!   transaction. Rows of the unfinished cycle stay for a later flush.
//! - As in memory ([`crate::sink::Compacted`]), a change of a cycle the poller gave up on,
//!   stored by Kinesis after the cycle's newer copy, changes nothing: both tables carry the
//!   version ([`crate::sink::names::VERSION_COLUMN`]).
//! - A write retried after a lost acknowledgement writes the same rows with the same sequence
//!   numbers again: the last-of-each-key pick keeps one of the identical copies.
//! - A restarted sink drops what an earlier process spilled: those rows belong to cycles past
//!   its checkpoint, which the stream sends again.

use std::collections::HashMap;

use tokio_postgres::Client;
use tracing::info;

use super::sql;
use super::{TableRt, SINK};
use crate::config::LoadMode;
use crate::event::TableId;
use crate::sink::names::SEQ_COLUMN;
use crate::sink::{CommitSeconds, SinkError};

pub const SCHEMA: &str = "edfi_cdc_spill";

/// One table's spill table and the rows it holds.
struct Spilled {
    table: String,
    /// The table's shape when the spill table was made.
    shape: String,
    /// Rows up to `upto` (the batch) and after it (the unfinished cycle), and their source
    /// commit times.
    batch: u64,
    after: u64,
    batch_times: CommitSeconds,
    after_times: CommitSeconds,
    /// Rows numbered below this were let go of ([`Spill::discard`]); they are deleted with
    /// the next flush's, not applied.
    from: i64,
}

pub struct Spill {
    /// Start of this connector's spill table names.
    prefix: String,
    tables: HashMap<TableId, Spilled>,
    /// Sequence number of the next row written.
    next: i64,
    /// The last sequence number of rows of the batch (cycles up to the pending watermark).
    upto: i64,
}

fn pg(e: tokio_postgres::Error) -> SinkError {
    SinkError::from_pg(SINK, &e)
}

impl Spill {
    /// Drop the spill tables an earlier process of this connector left (their rows were never
    /// applied) and make sure the schema exists.
    pub async fn open(client: &Client, connector: &str) -> Result<Spill, SinkError> {
        let h = xxhash_rust::xxh3::xxh3_64(connector.as_bytes());
        let prefix = format!("s{:08x}_", h as u32);
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            .await
            .map_err(pg)?;
        let left: Vec<String> = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1",
                &[&SCHEMA],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|t| t.starts_with(&prefix))
            .collect();
        for t in &left {
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {SCHEMA}.{t}"))
                .await
                .map_err(pg)?;
        }
        if !left.is_empty() {
            info!(
                sink = SINK,
                tables = left.len(),
                "dropped the spill tables of an earlier process of this sink"
            );
        }
        Ok(Spill {
            prefix,
            tables: HashMap::new(),
            next: 1,
            upto: 0,
        })
    }

    /// Make sure `rt`'s spill table exists in the table's current shape (outside a
    /// transaction). A table whose shape changed is being re-snapshotted: rows of the old shape
    /// are not applied, so its old spill table goes.
    pub async fn prepare(
        &mut self,
        client: &Client,
        mode: LoadMode,
        rt: &TableRt,
    ) -> Result<(), SinkError> {
        let shape = crate::event::shape_digest(&rt.schema);
        if self
            .tables
            .get(&rt.schema.id)
            .is_some_and(|s| s.shape == shape)
        {
            return Ok(());
        }
        let table = format!("{SCHEMA}.{}{}", self.prefix, rt.stage);
        client
            .batch_execute(&sql::create_spill(mode, &rt.schema, &rt.types, &table))
            .await
            .map_err(pg)?;
        self.tables.insert(
            rt.schema.id.clone(),
            Spilled {
                table,
                shape,
                batch: 0,
                after: 0,
                batch_times: CommitSeconds::default(),
                after_times: CommitSeconds::default(),
                from: 0,
            },
        );
        Ok(())
    }

    /// The spill table of a [prepared](Spill::prepare) table.
    pub fn table(&self, id: &TableId) -> &str {
        &self.tables[id].table
    }

    /// Sequence number of the next row written.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// A write committed: per table, its rows of the batch or of the unfinished cycle, and
    /// their source commit times; `next` follows its last row. The batch's rows were numbered
    /// first. A write with batch rows follows a watermark, which made everything spilled before
    /// part of the batch.
    pub fn written(
        &mut self,
        rows: Vec<(TableId, bool, u64, CommitSeconds)>,
        batch_rows: u64,
        next: i64,
    ) {
        for (id, in_batch, n, times) in rows {
            let s = self.tables.get_mut(&id).expect("prepared before the write");
            if in_batch {
                s.batch += n;
                s.batch_times.absorb(times);
            } else {
                s.after += n;
                s.after_times.absorb(times);
            }
        }
        if batch_rows > 0 {
            self.upto = self.next - 1 + batch_rows as i64;
        }
        self.next = next;
    }

    /// The unfinished cycle is complete: everything spilled belongs to the batch.
    pub fn watermark(&mut self) {
        self.upto = self.next - 1;
        for s in self.tables.values_mut() {
            s.batch += std::mem::take(&mut s.after);
            s.batch_times.absorb(std::mem::take(&mut s.after_times));
        }
    }

    /// Rows spilled in all (for the memory bound) and of the batch (for the flush).
    pub fn rows(&self) -> u64 {
        self.tables.values().map(|s| s.batch + s.after).sum()
    }

    pub fn batch_rows(&self) -> u64 {
        self.tables.values().map(|s| s.batch).sum()
    }

    /// The spilled rows of the batch of `id`, their source commit times.
    pub fn batch_times(&self, id: &TableId) -> CommitSeconds {
        self.tables
            .get(id)
            .map(|s| s.batch_times.clone())
            .unwrap_or_default()
    }

    /// A snapshot of `id` has started: the rows spilled so far are covered by it and are not
    /// applied (the next flush deletes them).
    pub fn discard(&mut self, id: &TableId) {
        let next = self.next;
        if let Some(s) = self.tables.get_mut(id) {
            s.batch = 0;
            s.after = 0;
            s.batch_times = CommitSeconds::default();
            s.after_times = CommitSeconds::default();
            s.from = next;
        }
    }

    /// Tables with spilled rows of the batch.
    pub fn batch_tables(&self) -> impl Iterator<Item = &TableId> {
        self.tables
            .iter()
            .filter(|(_, s)| s.batch > 0)
            .map(|(id, _)| id)
    }

    /// The statements that add `rt`'s spilled rows of the batch to its loaded staging table;
    /// None when it has none (or they are of an earlier shape: not applied).
    pub fn collect(&self, rt: &TableRt) -> Option<[String; 2]> {
        let s = self.tables.get(&rt.schema.id)?;
        (s.batch > 0 && s.shape == crate::event::shape_digest(&rt.schema))
            .then(|| sql::collect_spill(&rt.schema, &rt.stage, &s.table, s.from, self.upto))
    }

    /// The statements, inside the flush's transaction, that remove the batch's spilled rows.
    pub fn clear(&self) -> Vec<String> {
        self.tables
            .values()
            .filter(|s| s.batch > 0 || s.from > 0)
            .map(|s| {
                format!(
                    "DELETE FROM {} WHERE {} <= {}",
                    s.table, SEQ_COLUMN, self.upto
                )
            })
            .collect()
    }

    /// The flush committed: the batch's spilled rows are gone.
    pub fn cleared(&mut self) {
        for s in self.tables.values_mut() {
            s.batch = 0;
            s.batch_times = CommitSeconds::default();
        }
    }
}
