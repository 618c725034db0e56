//! What every poller keeps per table, whatever the source: its phase (streaming after a
//! version, snapshotting, queued for a snapshot), the snapshot queue, and the markers and
//! progress that start and end a snapshot chunk.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::checkpoint::TableStart;
use crate::event::{
    ChangeEvent, Message, Op, SnapshotMarker, TableId, TableSchema, Value, Watermark,
};
use crate::source::position::PollerPosition;
use crate::source::SourceError;
use crate::stream::Producer;

#[derive(Debug)]
pub enum Phase {
    /// Changes after `last` are read in every cycle.
    Streaming { last: i64 },
    /// A snapshot is in progress, consistent with the source's changes from `version` on.
    Snapshotting {
        version: i64,
        last_key: Option<Vec<Value>>,
        rows: u64,
        total: Option<u64>,
        started: Instant,
        rows_at_start: u64,
    },
    /// Waiting its turn for a snapshot; `id` goes into its start marker, the same id however
    /// often the marker is sent (see [`SnapshotMarker::Started`]), and so does whether an
    /// operator (or a sink that lost records) asked for it. `at`: the version the snapshot
    /// starts at, when not the cycle's that starts it — a snapshot the poller had started
    /// before a restart without recording a chunk starts again at its first version, so that
    /// the changes since (deletes of rows the first attempt already sent among them) follow it
    /// in the stream, where consumers that skip the markers find them.
    Queued {
        id: u64,
        requested: bool,
        at: Option<i64>,
    },
}

/// A new snapshot id: unique in this process, and across restarts as its clock moves on.
fn snapshot_id() -> u64 {
    static NEXT: std::sync::LazyLock<std::sync::atomic::AtomicU64> =
        std::sync::LazyLock::new(|| {
            let now = Utc::now().timestamp_nanos_opt().unwrap_or_default();
            std::sync::atomic::AtomicU64::new(now as u64)
        });
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub struct TableRun {
    pub schema: Arc<TableSchema>,
    pub phase: Phase,
}

/// The configured tables in source order, which of them wait for or run a snapshot (one at a
/// time, in queue order), and the last watermark sent.
pub struct Tables {
    pub runs: Vec<TableRun>,
    pub queue: VecDeque<usize>,
    last_watermark: i64,
    /// A snapshot finished since the last watermark: the next cycle sends one even if the
    /// source is idle, so that the sinks publish the table.
    publish_pending: bool,
}

impl Tables {
    /// Each table where the sinks' checkpoints (`start`) leave it. `durable`: the poller keeps
    /// its own position (Kafka, Kinesis), so a snapshot none of whose chunks was recorded starts
    /// again from scratch rather than resuming.
    pub fn new(
        schemas: &[Arc<TableSchema>],
        start: &HashMap<TableId, TableStart>,
        durable: bool,
    ) -> Tables {
        let mut runs = Vec::new();
        let mut queue = VecDeque::new();
        let queued = || Phase::Queued {
            id: snapshot_id(),
            requested: false,
            at: None,
        };
        for (i, schema) in schemas.iter().enumerate() {
            let phase = match start.get(&schema.id) {
                Some(TableStart::Stream { version }) => Phase::Streaming { last: *version },
                // No chunk of it was recorded: the sinks may not even have its start. It starts
                // again, from its first version, and every sink takes it (one already past that
                // version would otherwise move the table on while the poller holds its changes
                // back, and forget why if it restarted meanwhile).
                Some(TableStart::ResumeSnapshot {
                    last_key: None,
                    version,
                    ..
                }) if durable => {
                    queue.push_back(i);
                    Phase::Queued {
                        id: snapshot_id(),
                        requested: true,
                        at: Some(*version),
                    }
                }
                Some(TableStart::ResumeSnapshot {
                    version,
                    last_key,
                    rows,
                    total,
                }) => {
                    queue.push_front(i);
                    Phase::Snapshotting {
                        version: *version,
                        last_key: last_key.clone(),
                        rows: *rows,
                        total: *total,
                        started: Instant::now(),
                        rows_at_start: *rows,
                    }
                }
                Some(TableStart::Snapshot) | None => {
                    queue.push_back(i);
                    queued()
                }
            };
            runs.push(TableRun {
                schema: schema.clone(),
                phase,
            });
        }
        let mut tables = Tables {
            runs,
            queue,
            last_watermark: 0,
            // The first cycle always sends a watermark, so that a snapshot completed before a
            // restart is published even if the source stays idle.
            publish_pending: true,
        };
        tables.last_watermark = tables.lowest_streaming();
        tables
    }

    /// The version of the last watermark sent (at start, the lowest streaming version).
    pub fn last_watermark(&self) -> i64 {
        self.last_watermark
    }

    /// End a cycle that read every change up to `version` and sent `events` of them: send the
    /// watermark `version` (recorded in the poller's position, if it keeps one) when it is new,
    /// carries events, or a snapshot waits to be published; then every streaming table is at
    /// `version`. Only then: had the watermark not gone out (a stream that lost an earlier
    /// event), the cycle is run again and must send the same changes again.
    pub async fn end_cycle(
        &mut self,
        version: i64,
        commit_time: Option<DateTime<Utc>>,
        events: u64,
        out: &Producer,
        position: &mut Option<PollerPosition>,
    ) -> Result<(), SourceError> {
        if version > self.last_watermark || events > 0 || self.publish_pending {
            let w = Watermark {
                version,
                commit_time,
            };
            out.send(Message::Watermark(w.clone())).await?;
            if let Some(position) = position {
                position.advance(&w).await.map_err(SourceError::position)?;
            }
            debug!(version, events, "cycle");
            self.last_watermark = version;
            self.publish_pending = false;
        }
        self.streamed_to(version);
        Ok(())
    }

    /// The lowest version a streaming table was read to (0 when none streams).
    pub fn lowest_streaming(&self) -> i64 {
        self.runs
            .iter()
            .filter_map(|t| match t.phase {
                Phase::Streaming { last } => Some(last),
                _ => None,
            })
            .min()
            .unwrap_or(0)
    }

    /// The lowest version from which some table still needs the source's changes: a streaming
    /// table's last version, a snapshot's start version. `None` when no table needs any.
    pub fn lowest_needed(&self) -> Option<i64> {
        self.runs
            .iter()
            .filter_map(|t| match t.phase {
                Phase::Streaming { last } => Some(last),
                Phase::Snapshotting { version, .. } => Some(version),
                Phase::Queued { at, .. } => at,
            })
            .min()
    }

    pub fn position(&self, table: &TableId) -> Option<usize> {
        self.runs.iter().position(|t| &t.schema.id == table)
    }

    /// Queue `table` for a snapshot that says it was asked for.
    pub fn request_snapshot(&mut self, table: &TableId) {
        let Some(i) = self.position(table) else {
            warn!(table = %table, "re-snapshot requested for a table this connector does not replicate; ignored");
            return;
        };
        if let Phase::Queued { requested, at, .. } = &mut self.runs[i].phase {
            // Queued already (its first snapshot, or one resumed from scratch at start): it
            // now counts as asked for, and starts at the cycle's version (a sink that lost
            // records takes no snapshot older than what it saw; the source may no longer hold
            // the changes since an earlier one).
            *requested = true;
            *at = None;
        } else {
            info!(table = %table, "re-snapshot requested");
            self.runs[i].phase = Phase::Queued {
                id: snapshot_id(),
                requested: true,
                at: None,
            };
            self.queue.retain(|&q| q != i);
            self.queue.push_back(i);
        }
    }

    /// Queue position and table index of the snapshot to read next.
    pub fn snapshotting(&self) -> Option<(usize, usize)> {
        self.queue
            .iter()
            .position(|&i| matches!(self.runs[i].phase, Phase::Snapshotting { .. }))
            .map(|q| (q, self.queue[q]))
    }

    /// Every streaming table has been read up to `version`.
    fn streamed_to(&mut self, version: i64) {
        for t in &mut self.runs {
            if let Phase::Streaming { last } = &mut t.phase {
                *last = (*last).max(version);
            }
        }
    }

    /// Send the start marker of table `i`'s queued snapshot at `version`, or at the version it
    /// was queued to start at (recorded first in the poller's position, if it keeps one); the
    /// table is then snapshotting.
    pub async fn start_snapshot(
        &mut self,
        i: usize,
        version: i64,
        total: Option<u64>,
        out: &Producer,
        position: &mut Option<PollerPosition>,
    ) -> Result<(), SourceError> {
        let Phase::Queued { id, requested, at } = self.runs[i].phase else {
            return Ok(());
        };
        let version = at.unwrap_or(version);
        let schema = self.runs[i].schema.clone();
        info!(table = %schema.id, version, rows = ?total, "snapshot started");
        let consumed = match position {
            Some(position) => position
                .begin_snapshot(&schema, version, total)
                .await
                .map_err(SourceError::position)?,
            None => false,
        };
        out.send(Message::Snapshot(SnapshotMarker::Started {
            table: schema.clone(),
            version,
            total_rows: total,
            id,
            requested,
        }))
        .await?;
        self.runs[i].phase = Phase::Snapshotting {
            version,
            last_key: None,
            rows: 0,
            total,
            started: Instant::now(),
            rows_at_start: 0,
        };
        if consumed && at.is_some() {
            // A request that came after this cycle read them, consumed by a snapshot from an
            // earlier version (which a sink that lost records would not take): it asks for one
            // from now on.
            self.request_snapshot(&schema.id);
        }
        Ok(())
    }

    /// After a chunk of `read` rows (of at most `chunk`) of the snapshot at queue position
    /// `qpos`, ending at `last_key`: send the chunk marker and record it, and when the chunk was
    /// short send the done marker and stream the table from the snapshot's version on (the
    /// next cycle then sends a watermark, so that the sinks publish it). Returns whether
    /// snapshot work remains.
    pub async fn end_chunk(
        &mut self,
        qpos: usize,
        read: u32,
        chunk: u32,
        last_key: Option<Vec<Value>>,
        out: &Producer,
        position: &mut Option<PollerPosition>,
    ) -> Result<bool, SourceError> {
        let i = self.queue[qpos];
        let schema = self.runs[i].schema.clone();
        let Phase::Snapshotting {
            version,
            rows,
            total,
            started,
            rows_at_start,
            ..
        } = self.runs[i].phase
        else {
            return Ok(true);
        };
        let rows_now = rows + u64::from(read);
        if let Some(last_key) = &last_key {
            out.send(Message::Snapshot(SnapshotMarker::Chunk {
                table: schema.clone(),
                last_key: last_key.clone(),
                rows: rows_now,
            }))
            .await?;
            if let Some(position) = position.as_mut() {
                position
                    .snapshot_progress(&schema.id, last_key, rows_now)
                    .await
                    .map_err(SourceError::position)?;
            }
            // Recorded now: a step retried after a failed done marker must not read and mark
            // this chunk again (its marker would follow the done marker in the partitions that
            // took it, where nothing could release it).
            if let Phase::Snapshotting {
                last_key: lk, rows, ..
            } = &mut self.runs[i].phase
            {
                *lk = Some(last_key.clone());
                *rows = rows_now;
            }
        }
        let elapsed = started.elapsed().as_secs_f64().max(1e-3);
        let rate = (rows_now - rows_at_start) as f64 / elapsed;
        if read < chunk {
            info!(table = %schema.id, rows = rows_now, rows_per_sec = rate.round(), seconds = elapsed.round(), "snapshot done");
            out.send(Message::Snapshot(SnapshotMarker::Done {
                table: schema.clone(),
                version,
                rows: rows_now,
            }))
            .await?;
            if let Some(position) = position.as_mut() {
                position
                    .snapshot_loaded(&schema.id, rows_now)
                    .await
                    .map_err(SourceError::position)?;
            }
            self.runs[i].phase = Phase::Streaming { last: version };
            self.queue.remove(qpos);
            self.publish_pending = true;
            return Ok(self.snapshotting().is_some());
        }
        let eta = total
            .filter(|&t| t > rows_now && rate > 0.0)
            .map(|t| Duration::from_secs_f64((t - rows_now) as f64 / rate));
        info!(table = %schema.id, rows = rows_now, total = ?total, rows_per_sec = rate.round(), eta = ?eta.map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()), "snapshot progress");
        Ok(true)
    }
}

/// The event for one row a snapshot read of a table at `version`.
pub fn snapshot_row(schema: &Arc<TableSchema>, row: Vec<Value>, version: i64) -> ChangeEvent {
    let key: Vec<Value> = schema.key.iter().map(|&k| row[k].clone()).collect();
    ChangeEvent {
        table: schema.clone(),
        op: Op::Read,
        key,
        after: Some(row),
        version,
        commit_time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ColumnSchema, SourceType, TableId};
    use crate::stream::embedded;

    fn schema(name: &str) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: TableId::new("edfi", name),
            columns: vec![ColumnSchema {
                name: "Id".into(),
                source_type: SourceType {
                    name: "int".into(),
                    max_length: None,
                    precision: None,
                    scale: None,
                },
                nullable: false,
            }],
            key: vec![0],
        })
    }

    /// The version of the start marker table `i`'s queued snapshot sends in a cycle at `cycle`.
    async fn started_at(tables: &mut Tables, i: usize, cycle: i64) -> i64 {
        let (producer, mut consumers) = embedded::channel(8, 1);
        let out = Producer::Embedded(producer);
        tables
            .start_snapshot(i, cycle, None, &out, &mut None)
            .await
            .unwrap();
        match consumers[0].try_recv() {
            Some(Message::Snapshot(SnapshotMarker::Started { version, .. })) => version,
            other => panic!("no start marker: {other:?}"),
        }
    }

    /// A poller with its own position (Kafka, Kinesis) that died after recording a snapshot's
    /// start and before any chunk starts it again at that version: the changes since then
    /// follow it in the stream. Asked for again meanwhile, it starts at the cycle's version.
    #[tokio::test]
    async fn a_snapshot_without_a_recorded_chunk_starts_again_at_its_version() {
        let schemas = vec![schema("A"), schema("B")];
        let start = HashMap::from([
            (
                schemas[0].id.clone(),
                TableStart::ResumeSnapshot {
                    version: 42,
                    last_key: None,
                    rows: 0,
                    total: None,
                },
            ),
            (schemas[1].id.clone(), TableStart::Stream { version: 50 }),
        ]);
        let mut tables = Tables::new(&schemas, &start, true);
        assert_eq!(
            tables.lowest_needed(),
            Some(42),
            "the source keeps the changes since the snapshot's version"
        );
        assert_eq!(started_at(&mut tables, 0, 60).await, 42);

        let mut tables = Tables::new(&schemas, &start, true);
        tables.request_snapshot(&schemas[0].id);
        assert_eq!(tables.lowest_needed(), Some(50));
        assert_eq!(started_at(&mut tables, 0, 60).await, 60);
    }
}
