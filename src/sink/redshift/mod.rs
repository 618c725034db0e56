//! The Redshift sink: micro-batches of compacted changes, loaded with COPY and merged.
//!
//! Guarantees:
//! - Changes are buffered per table and collapsed to the last change per key. A batch is
//!   committed only at a watermark — never half a cycle — when the buffered rows or bytes reach
//!   `max_rows`/`max_bytes`, when the batch is `max_age` old (see `age.rs`), or at
//!   shutdown; each flush logs and counts its reason (`rows`, `bytes`, `age`, `watermark` for a
//!   checkpoint-only flush, `shutdown`). While a flush runs the sink reads nothing, so the
//!   bounded stream holds the poller back: memory stays bounded by the limits plus one cycle.
//! - A flush writes each table's rows as CSV parts (gzip, with a manifest, in S3 under keys
//!   derived from the batch — the watermark version — so a retry overwrites), then in one
//!   transaction: per table, create a temporary table, COPY into it (from S3 with the IAM
//!   role, or FROM STDIN), delete the changed keys from the target, insert the new rows; publish
//!   finished snapshots; refresh the reporting models whose inputs changed; advance the
//!   checkpoint. A crash anywhere loses nothing and applies nothing twice.
//! - Snapshots load a shadow table in batches of up to `max_rows` (at most 100,000) rows, each
//!   one transaction with its progress, and replace the target's rows at the next flush after
//!   they complete (on PostgreSQL, a table with students in student order: `sql::publish`).
//! - A row the target rejects stops the sink naming the table, key and reason.

mod age;
pub mod csv;
pub mod files;
mod spill;
pub mod sql;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoint::{self, Phase, Positions, SinkCheckpoint, TableCheckpoint};
use crate::config::{Deletes, LoadMode, RedshiftSinkConfig, RetryConfig};
use crate::event::{
    describe_key, ChangeEvent, Message, Op, SnapshotMarker, TableId, TableSchema, Value, Watermark,
};
use crate::metrics;
use crate::models::{self, Changed, Models, RefreshError};
use crate::retry::Backoff;
use crate::sink::names::{
    redshift_table, shadow_table, PgName, OP_COLUMN, SEQ_COLUMN, VERSION_COLUMN,
};
use crate::stream::Input;

use super::{
    after_fault, begin_fenced, commit_fenced, copy_failure, dedup_snapshot_rows, held_back, retry,
    route, snapshot_not_needed, Attempt, CommitSeconds, Compacted, Lane, Requests, Route,
    SinkError, SETUP_LOCK,
};
use age::AgeClock;
use files::Files;
use sql::CopySource;

/// The sink's checkpoint name in `edfi_cdc.table_state`.
pub const SINK: &str = "redshift";
const IDLE_REQUEST_CHECK: Duration = Duration::from_secs(2);
/// Most snapshot rows held before they are loaded (memory bound; `max_rows` if smaller).
const SNAPSHOT_LOAD_ROWS: usize = 100_000;
/// How often files past `file_retention` are looked for.
const RETENTION_SWEEP: Duration = Duration::from_secs(60);

/// Why a flush ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    Rows,
    Bytes,
    Age,
    /// Nothing buffered, but the checkpoint is behind the last watermark by `max_age`.
    Watermark,
    /// A snapshot finished loading: what the last watermark covers is committed first.
    Snapshot,
    Shutdown,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Rows => "rows",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::Watermark => "watermark",
            FlushReason::Snapshot => "snapshot",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

/// Snapshot rows received and not yet loaded, with the progress they bring the table to.
#[derive(Default)]
struct SnapshotRows {
    events: Vec<ChangeEvent>,
    last_key: Option<Vec<Value>>,
    rows: u64,
    /// Rows received since the last chunk marker.
    unmarked: usize,
}

struct TableRt {
    schema: Arc<TableSchema>,
    target: PgName,
    shadow: PgName,
    columns: Vec<String>,
    /// The target's column types, in source column order (for the staging table).
    types: Vec<String>,
    state: Option<TableCheckpoint>,
    /// A snapshot this sink does not need (it already holds everything up to its version).
    ignoring_snapshot: bool,
    /// The shadow may hold rows past the snapshot's progress (a chunk was read again from an
    /// earlier key, or this process took the snapshot over part-way): the rest of the
    /// snapshot's chunks are merged into it, not copied.
    merge_chunks: bool,
    stage: String,
    snapshot: SnapshotRows,
}

/// One table's share of a load: its CSV parts and, per record, the key (to name a rejected
/// row).
struct TableLoad {
    id: TableId,
    dest: PgName,
    parts: Vec<String>,
    keys: Vec<Vec<Value>>,
    bytes: usize,
    /// Manifest URL and keys once uploaded.
    uploaded: Option<files::Uploaded>,
}

pub struct RedshiftSink {
    connector: String,
    cfg: RedshiftSinkConfig,
    retry: RetryConfig,
    client: Option<Client>,
    files: Option<Files>,
    models: Models,
    tables: HashMap<TableId, TableRt>,
    ready: Compacted,
    watermark: Option<Watermark>,
    /// When the batch is old enough to flush.
    age: AgeClock,
    open: Compacted,
    /// Changes written to the target because the held ones reached `spill_rows`.
    spill: spill::Spill,
    /// Per table, the spilled rows the last flush transaction applied.
    collected: Vec<(TableId, u64)>,
    loads: Vec<TableLoad>,
    requests: Requests,
    last_sweep: Instant,
    /// When the models' custom inputs were last looked at while no flush was due.
    custom_checked: Instant,
    /// With a Kafka/Kinesis stream (`--role sink`): the lane over every partition or shard,
    /// whose positions each transaction stores (fenced against another worker).
    lane: Option<Lane>,
    /// The lane's positions at the last watermark that the next flush may claim.
    ready_positions: Option<Positions>,
    /// The highest watermark received.
    seen_version: i64,
}

async fn connect(url: &str) -> Result<Client, SinkError> {
    super::pg::connect(SINK, url).await
}

fn pg(e: tokio_postgres::Error) -> SinkError {
    SinkError::from_pg(SINK, &e)
}

/// A table's batch rows in the order they are staged: by student (then by the key's text)
/// when the key has a student column, else by the key's text — not in the batch's hash order.
/// The merge deletes the staged keys one index probe at a time, in this order, and appends the
/// rows in it: a student's probes then go to that student's pages one after another, and a
/// student's new rows land side by side, where the models' copies by student read them. On the
/// 1,000,000-student stand-in the deletes of 3,000 random students' rows took 3–9 % less than
/// in hash order (`StudentAssessmentItem`, 36,000 rows: 798–809 ms against 865–918 ms).
fn in_student_order<'a>(
    events: &'a HashMap<String, ChangeEvent>,
    schema: &TableSchema,
) -> Vec<&'a ChangeEvent> {
    let student = sql::student_key(schema);
    let mut rows: Vec<(Option<i64>, &String, &ChangeEvent)> = events
        .iter()
        .map(|(key, ev)| {
            let usi = student.and_then(|i| match ev.key.get(i) {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            });
            (usi, key, ev)
        })
        .collect();
    rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    rows.into_iter().map(|(_, _, ev)| ev).collect()
}

/// What follows a row's columns in a batch file.
#[derive(Clone, Copy)]
enum Tail {
    /// Nothing: rows COPied straight into a table of the target's columns.
    Nothing,
    /// The operation and the change's version (staging tables).
    OpAndVersion,
    /// Those and a sequence number, from the given one on (spill tables).
    Spill(i64),
}

/// Encode events as CSV parts of about `part_bytes`, each row followed by `tail`.
fn encode(
    events: &[&ChangeEvent],
    schema: &TableSchema,
    part_bytes: usize,
    tail: Tail,
) -> (Vec<String>, Vec<Vec<Value>>, usize) {
    let mut parts = vec![String::new()];
    let mut keys = Vec::with_capacity(events.len());
    let mut bytes = 0;
    let nulls = vec![Value::Null; schema.columns.len()];
    for ev in events {
        let row;
        let values: &[Value] = match &ev.after {
            Some(after) => after,
            None => {
                let mut r = nulls.clone();
                for (&k, v) in schema.key.iter().zip(&ev.key) {
                    r[k] = v.clone();
                }
                row = r;
                &row
            }
        };
        let part = parts.last_mut().expect("one part at least");
        let before = part.len();
        match tail {
            Tail::Nothing => csv::push_row(part, values),
            Tail::OpAndVersion | Tail::Spill(_) => {
                let op = Value::String(if ev.op == Op::Delete { "d" } else { "u" }.into());
                let version = Value::Int(ev.version);
                let seq = match tail {
                    Tail::Spill(first) => Some(Value::Int(first + keys.len() as i64)),
                    _ => None,
                };
                csv::push_row(
                    part,
                    values.iter().chain([&op, &version]).chain(seq.as_ref()),
                );
            }
        }
        bytes += part.len() - before;
        keys.push(ev.key.clone());
        if part.len() >= part_bytes {
            parts.push(String::new());
        }
    }
    if parts.len() > 1 && parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    (parts, keys, bytes)
}

impl RedshiftSink {
    /// The poller resumes a snapshot of `table` begun at `version` that this sink does not take
    /// (it already holds the table from that version on; another sink needs the snapshot): the
    /// poller sends none of the table's changes until the snapshot ends, so the table stays at
    /// its checkpoint until then (see [`checkpoint::advance`]).
    pub fn hold_during_resumed_snapshot(&mut self, table: &TableId, version: i64) {
        if let Some(rt) = self.tables.get_mut(table) {
            if super::snapshot_not_needed(false, rt.state.as_ref(), version) {
                rt.ignoring_snapshot = true;
            }
        }
    }

    /// Connect, create the checkpoint tables and missing targets, check existing ones, load the
    /// checkpoint, check the bucket and remove files of batches that never committed. Retries
    /// transient faults.
    pub async fn open(
        connector: &str,
        cfg: &RedshiftSinkConfig,
        models: Models,
        retry: &RetryConfig,
        schemas: &[Arc<TableSchema>],
        lane: Option<Lane>,
        stop: &CancellationToken,
    ) -> Result<(RedshiftSink, SinkCheckpoint), SinkError> {
        let mut backoff = Backoff::new(retry);
        loop {
            match Self::open_once(connector, cfg, &models, retry, schemas, lane.clone()).await {
                Ok((mut sink, cp)) => {
                    // Incremental refreshes read only their students' rows of these.
                    let students = sink
                        .tables
                        .values()
                        .filter(|rt| sql::has_students(&rt.schema))
                        .map(|rt| rt.target.to_string());
                    sink.models = models.with_student_tables(students);
                    return Ok((sink, cp));
                }
                Err(e) if e.is_retriable() => {
                    if !backoff.pause(SINK, &e, stop).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn open_once(
        connector: &str,
        cfg: &RedshiftSinkConfig,
        models: &Models,
        retry: &RetryConfig,
        schemas: &[Arc<TableSchema>],
        mut lane: Option<Lane>,
    ) -> Result<(RedshiftSink, SinkCheckpoint), SinkError> {
        let files = if cfg.bucket.is_empty() {
            None
        } else {
            Some(Files::connect(&cfg.bucket, &cfg.prefix, connector).await?)
        };
        let client = connect(cfg.url.expose()).await?;
        // On PostgreSQL, connectors sharing a target set it up one at a time (Redshift has no
        // advisory locks; there, give each connector its own schema).
        if cfg.load == LoadMode::Stdin {
            client
                .execute("SELECT pg_advisory_lock($1)", &[&SETUP_LOCK])
                .await
                .map_err(pg)?;
        }
        checkpoint::install(&client).await.map_err(pg)?;
        client
            .batch_execute("CREATE SCHEMA IF NOT EXISTS edfi_cdc_shadow")
            .await
            .map_err(pg)?;
        let spill = spill::Spill::open(&client, connector).await?;
        let mut tables = HashMap::new();
        let mut evolved = Vec::new();
        for (i, schema) in schemas.iter().enumerate() {
            let target = redshift_table(cfg, &schema.id);
            let soft = cfg.deletes == Deletes::Soft;
            let held = checkpoint::may_follow_source(
                &client,
                connector,
                SINK,
                &schema.id,
                &crate::event::shape_digest(schema),
            )
            .await
            .map_err(pg)?;
            let ensured = ensure_table(&client, cfg.load, schema, &target, soft, held)
                .await
                .map_err(pg)?;
            if !ensured.problems.is_empty() {
                return Err(SinkError::Incompatible {
                    sink: SINK.into(),
                    table: schema.id.clone(),
                    target: target.to_string(),
                    problems: ensured.problems,
                });
            }
            if !ensured.evolved.is_empty() {
                warn!(sink = SINK, table = %schema.id, target = %target, changes = %ensured.evolved.join("; "),
                    "the table changed at the source while the replicator was stopped: target changed to match");
                evolved.push(schema.id.clone());
            }
            let types = ensured.types;
            let shadow = shadow_table(connector, &target);
            ensure_deletes(&client, cfg.load, soft, schema, &target, &shadow)
                .await
                .map_err(pg)?;
            if let Some(index) = sql::student_index(cfg.load, schema, &target) {
                client.batch_execute(&index).await.map_err(pg)?;
            }
            tables.insert(
                schema.id.clone(),
                TableRt {
                    schema: schema.clone(),
                    shadow,
                    columns: sql::columns(schema),
                    types,
                    target,
                    state: None,
                    ignoring_snapshot: false,
                    merge_chunks: false,
                    stage: format!("edfi_cdc_stage_{i}"),
                    snapshot: SnapshotRows::default(),
                },
            );
        }
        models.install(&client).await.map_err(pg)?;
        for m in models.models() {
            metrics::model_values_truncated(connector, &m.name, 0);
        }
        if cfg.load == LoadMode::Stdin {
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&SETUP_LOCK])
                .await
                .map_err(pg)?;
        }
        let mut cp = checkpoint::load(&client, connector, SINK, schemas)
            .await
            .map_err(pg)?;
        // A table whose target just gained columns has rows without their values; one
        // reshaped otherwise needs its rows read again too.
        crate::sink::request_changed(&client, connector, SINK, schemas, &evolved, &mut cp)
            .await
            .map_err(pg)?;
        for (id, state) in &cp.tables {
            if let Some(rt) = tables.get_mut(id) {
                metrics::table_applied(connector, SINK, &id.to_string(), state.version);
                rt.state = Some(state.clone());
                rt.merge_chunks = state.phase == Phase::Snapshot;
            }
        }
        if let Some(lane) = &mut lane {
            lane.loaded(
                checkpoint::load_positions(&client, connector, &lane.sink_name(SINK))
                    .await
                    .map_err(pg)?,
            );
        }
        if let Some(f) = &files {
            // Files left now belong to batches that never committed (committed batches remove
            // theirs), or are past their retention.
            f.abort_unfinished().await?;
            let removed = f.remove_old(cfg.file_retention).await?;
            if removed > 0 {
                info!(
                    sink = SINK,
                    files = removed,
                    "removed batch files of earlier runs"
                );
            }
        }
        info!(sink = SINK, tables = tables.len(), load = ?cfg.load, bucket = %cfg.bucket, "redshift sink ready");
        let sink = RedshiftSink {
            connector: connector.to_string(),
            cfg: cfg.clone(),
            retry: retry.clone(),
            client: Some(client),
            files,
            models: Models::default(),
            tables,
            ready: Compacted::default(),
            watermark: None,
            age: AgeClock::new(cfg.max_age),
            open: Compacted::default(),
            spill,
            collected: Vec::new(),
            loads: Vec::new(),
            requests: Requests::new(&cp.resnapshot_requests),
            last_sweep: Instant::now(),
            custom_checked: Instant::now(),
            lane,
            ready_positions: None,
            seen_version: 0,
        };
        Ok((sink, cp))
    }

    /// The lane's stream positions as loaded at start (none without a lane).
    pub fn lane_positions(&self) -> Positions {
        self.lane
            .as_ref()
            .map(|l| l.stored().clone())
            .unwrap_or_default()
    }

    /// Apply messages until the stream ends (the poller stopped) or a fatal error; then flush
    /// what is complete.
    pub async fn run(
        mut self,
        mut input: Input,
        resnapshots: mpsc::UnboundedSender<TableId>,
        stop: CancellationToken,
    ) -> Result<(), SinkError> {
        self.requests.connect(resnapshots);
        let mut backoff = Backoff::new(&self.retry);
        loop {
            let due = self.age.due().map(tokio::time::Instant::from_std);
            let latest = self.age.latest().map(tokio::time::Instant::from_std);
            let msg = tokio::select! {
                // A due batch is flushed when nothing waits in the stream, or at its latest
                // even if the stream never pauses (see `age.rs`).
                biased;
                _ = async { tokio::time::sleep_until(latest.expect("guarded")).await }, if latest.is_some() => {
                    self.flush_aged(&mut backoff, &stop).await?;
                    continue;
                }
                m = input.recv() => m,
                _ = async { tokio::time::sleep_until(due.expect("guarded")).await }, if due.is_some() => {
                    self.flush_aged(&mut backoff, &stop).await?;
                    continue;
                }
                _ = tokio::time::sleep(IDLE_REQUEST_CHECK) => {
                    self.check_requests().await;
                    // A quiet source sends no watermark, so no flush rebuilds the models: look at
                    // their custom inputs every max_age.
                    if self.watermark.is_none()
                        && self.models.models().iter().any(|m| !m.custom.is_empty())
                        && self.custom_checked.elapsed() >= self.cfg.max_age
                    {
                        self.custom_checked = Instant::now();
                        self.with_retry(&mut backoff, &stop, |s| Box::pin(s.refresh_custom()))
                            .await?;
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            let gaps = input.take_gaps();
            if !gaps.is_empty() {
                self.stream_lost(&gaps, &mut backoff, &stop).await?;
            }
            match msg {
                Message::Change(ev) => {
                    self.accept(ev);
                    if self.open.rows + self.ready.rows >= self.cfg.spill_rows {
                        self.spill(&mut backoff, &stop).await?;
                    }
                }
                Message::Watermark(w) => {
                    self.ready.absorb(std::mem::take(&mut self.open));
                    self.spill.watermark();
                    self.seen_version = self.seen_version.max(w.version);
                    // The next flush may claim the messages so far when every snapshot row
                    // among them is followed by its chunk's marker (the flush loads them).
                    if self.lane.is_some()
                        && self.tables.values().all(|rt| rt.snapshot.unmarked == 0)
                    {
                        if let Some(p) = input.consumed() {
                            self.ready_positions = Some(p);
                        }
                    }
                    self.watermark = Some(w);
                    let snapshotting = self
                        .tables
                        .values()
                        .any(|rt| rt.state.as_ref().is_none_or(|s| s.phase == Phase::Snapshot));
                    self.age.watermark(Instant::now(), snapshotting);
                    let rows = self.ready.rows + self.spill.batch_rows() as usize;
                    let reason = if rows >= self.cfg.max_rows {
                        Some(FlushReason::Rows)
                    } else if self.ready.bytes >= self.cfg.max_bytes {
                        Some(FlushReason::Bytes)
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        self.flush(reason, &mut backoff, &stop).await?;
                    } else if self.age.flush_now(Instant::now(), !input.is_empty()) {
                        self.flush_aged(&mut backoff, &stop).await?;
                    }
                }
                Message::Snapshot(marker) => self.snapshot(marker, &mut backoff, &stop).await?,
            }
        }
        self.flush(FlushReason::Shutdown, &mut backoff, &stop)
            .await?;
        if self.open.events > 0 {
            info!(sink = SINK, events = self.open.events, "stream ended mid-cycle: the unfinished cycle is not applied and will be read again");
        }
        Ok(())
    }

    /// The batch is `max_age` old: flush it (or, with nothing buffered, move the checkpoint).
    async fn flush_aged(
        &mut self,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let reason = if self.ready.is_empty() {
            FlushReason::Watermark
        } else {
            FlushReason::Age
        };
        self.flush(reason, backoff, stop).await
    }

    /// Target names (`edfi.table`) of the tables without their snapshot's rows: never
    /// snapshotted, being snapshotted, or awaiting a publish that the flush at `flushed` (if
    /// any) does not do.
    fn loading(&self, flushed: Option<i64>) -> HashSet<String> {
        self.tables
            .values()
            .filter(|rt| match rt.state.as_ref() {
                None => true,
                Some(s) => match s.phase {
                    Phase::Snapshot => true,
                    Phase::PendingSwap => flushed.is_none_or(|v| s.version > v),
                    Phase::Streaming => false,
                },
            })
            .map(|rt| rt.target.to_string())
            .collect()
    }

    /// Rebuild, in a transaction of their own, the models whose custom inputs changed since
    /// they last read them; the replicated tables stay at their checkpoint, which the models'
    /// freshness rows keep naming.
    async fn refresh_custom(&mut self) -> Result<(), SinkError> {
        let version = self
            .tables
            .values()
            .filter_map(|t| t.state.as_ref())
            .filter(|s| s.phase == Phase::Streaming)
            .map(|s| s.version)
            .max()
            .unwrap_or(0);
        let loading = self.loading(None);
        self.client().await?;
        let client = self.client.as_mut().expect("connected above");
        let tx = client.transaction().await.map_err(pg)?;
        let refreshed = self
            .models
            .refresh_batch(&tx, &HashMap::new(), &loading, version, None)
            .await
            .map_err(refresh_error)?;
        tx.commit().await.map_err(pg)?;
        for r in refreshed {
            metrics::model_refresh(&self.connector, &r.model, r.incremental, r.seconds);
            metrics::model_values_truncated(&self.connector, &r.model, r.truncated);
            info!(sink = SINK, model = %r.model, rows = r.rows, kept = r.kept, "model rebuilt: its definition or custom inputs changed");
        }
        Ok(())
    }

    /// The stream lost records it had acknowledged (see [`crate::stream::lane`]): every table
    /// that has rows here awaits a re-snapshot from the latest version seen, recorded with the
    /// requests in one transaction, as on the staging sink. Until that snapshot is published
    /// the table's rows are not claimed.
    async fn stream_lost(
        &mut self,
        gaps: &[crate::stream::lane::Gap],
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let name = self
            .lane
            .as_ref()
            .map_or_else(|| SINK.to_string(), |l| l.sink_name(SINK));
        super::report_gaps(&self.connector, &name, gaps, self.seen_version);
        // What is held is of no use: every table with rows is marked below, and the others
        // take no changes.
        self.ready = Compacted::default();
        self.open = Compacted::default();
        self.ready_positions = None;
        let version = self.seen_version;
        let tables: Vec<TableId> = self
            .tables
            .iter()
            .filter(|(_, rt)| rt.state.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in self.tables.keys() {
            self.spill.discard(id);
        }
        let connector = self.connector.clone();
        self.with_retry(backoff, stop, |s| {
            let (connector, tables) = (connector.clone(), tables.clone());
            Box::pin(async move {
                s.client().await?;
                let client = s.client.as_mut().expect("connected above");
                let tx = begin_fenced(SINK, client, s.lane.as_ref(), &connector, None).await?;
                for id in &tables {
                    checkpoint::await_snapshot(&tx, &connector, SINK, id, version)
                        .await
                        .map_err(pg)?;
                }
                commit_fenced(SINK, tx, s.lane.as_mut()).await
            })
        })
        .await?;
        for rt in self.tables.values_mut() {
            rt.snapshot = SnapshotRows::default();
            let Some(s) = rt.state.as_mut() else { continue };
            s.await_snapshot(version);
            rt.ignoring_snapshot = true;
        }
        Ok(())
    }

    async fn check_requests(&mut self) {
        let connector = self.connector.clone();
        let requests = match self.client().await {
            Ok(client) => checkpoint::resnapshot_requests(&*client, &connector)
                .await
                .ok(),
            Err(_) => None,
        };
        for t in requests.unwrap_or_default() {
            self.requests.forward(SINK, &t);
        }
    }

    fn accept(&mut self, ev: ChangeEvent) {
        let Some(rt) = self.tables.get_mut(&ev.table.id) else {
            return;
        };
        let ev = ev.conform(&rt.schema);
        match route(&ev, rt.state.as_ref(), rt.ignoring_snapshot) {
            Route::SnapshotRow => {
                rt.snapshot.events.push(ev);
                rt.snapshot.unmarked += 1;
            }
            Route::Change => self.open.add(ev),
            Route::Skip => {}
        }
    }

    async fn client(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(self.cfg.url.expose()).await?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Run `op`, retrying transient faults with a fresh connection.
    async fn with_retry<F>(
        &mut self,
        backoff: &mut Backoff,
        stop: &CancellationToken,
        op: F,
    ) -> Result<(), SinkError>
    where
        F: for<'a> FnMut(&'a mut RedshiftSink) -> Attempt<'a>,
    {
        retry(
            SINK,
            self,
            backoff,
            stop,
            |s| after_fault(&mut s.client, s.lane.as_ref()),
            op,
        )
        .await
    }

    /// Commit everything up to the last watermark.
    async fn flush(
        &mut self,
        reason: FlushReason,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let Some(w) = self.watermark.clone() else {
            return Ok(());
        };
        let pending_swap = self.tables.values().any(|t| {
            t.state
                .as_ref()
                .is_some_and(|s| s.phase == Phase::PendingSwap)
        });
        let behind = self.tables.values().any(|t| {
            t.state
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Streaming && s.version < w.version)
        });
        let spilled = self.spill.batch_rows();
        if self.ready.is_empty() && spilled == 0 && !pending_swap && !behind {
            self.watermark = None;
            self.age.empty();
            return Ok(());
        }
        // What reaches the stream from now on waits for the next flush (see `age.rs`).
        self.age.flushing(Instant::now());
        if let Some(positions) = self.ready_positions.take() {
            // The snapshot rows before the positions go to their shadow tables first, so that
            // nothing the flush claims is only in memory.
            let held: Vec<TableId> = self
                .tables
                .iter()
                .filter(|(_, rt)| rt.snapshot.last_key.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            for id in held {
                self.load_snapshot(&id, backoff, stop).await?;
            }
            if let Some(lane) = &mut self.lane {
                lane.reach(positions);
            }
        }
        let started = Instant::now();
        self.prepare();
        let held = self.loads.iter().map(|l| l.keys.len()).sum::<usize>();
        let bytes: usize = self.loads.iter().map(|l| l.bytes).sum();
        let connector = self.connector.clone();
        crate::slow::watched(
            &connector,
            "redshift flush",
            self.with_retry(backoff, stop, |s| Box::pin(s.apply(w.clone()))),
        )
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        // The spilled rows applied (keys not replaced by rows held in memory).
        let spilled_applied: Vec<(String, u64, CommitSeconds)> = self
            .collected
            .iter()
            .map(|(id, n)| (id.to_string(), *n, self.spill.batch_times(id)))
            .collect();
        let rows = held
            + spilled_applied
                .iter()
                .map(|(_, n, _)| *n as usize)
                .sum::<usize>();
        self.spill.cleared();
        self.after_commit().await;
        metrics::flush(&self.connector, SINK, reason.as_str(), seconds);
        metrics::flush_size(&self.connector, SINK, rows as u64, bytes as u64);
        metrics::applied(&self.connector, SINK, w.version, w.commit_time);
        let now = Utc::now();
        let batch = std::mem::take(&mut self.ready);
        // Every applied row's latency, the spilled rows' too (to the second).
        let mut latencies = Vec::new();
        for (table, n, times) in &spilled_applied {
            metrics::applied_events(&self.connector, SINK, table, *n);
            times.observe(&self.connector, SINK, now, &mut latencies);
        }
        for (table, evs) in &batch.tables {
            metrics::applied_events(&self.connector, SINK, &table.to_string(), evs.len() as u64);
            for ev in evs.values() {
                if let Some(t) = ev.commit_time {
                    let lat = (now - t).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    metrics::latency(&self.connector, SINK, lat);
                    latencies.push(lat);
                }
            }
        }
        for rt in self.tables.values_mut() {
            if held_back(rt.ignoring_snapshot, rt.state.as_ref()) {
                continue;
            }
            if let Some(s) = rt
                .state
                .as_mut()
                .filter(|s| s.phase != Phase::Snapshot && s.version <= w.version)
            {
                s.phase = Phase::Streaming;
                s.version = w.version;
                s.commit_time = w.commit_time;
                metrics::table_applied(&self.connector, SINK, &rt.schema.id.to_string(), w.version);
            }
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
                .map(|s| (s * 1000.0).round())
        };
        info!(
            sink = SINK,
            reason = reason.as_str(),
            version = w.version,
            events = batch.events,
            rows,
            spilled,
            bytes,
            ms = (seconds * 1000.0).round(),
            latency_p50_ms = pct(0.5),
            latency_p99_ms = pct(0.99),
            "flushed"
        );
        self.watermark = None;
        Ok(())
    }

    /// The held changes reached `spill_rows`: write them to the spill tables (`spill.rs`) and
    /// let go of them.
    async fn spill(
        &mut self,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let rows = self.ready.rows + self.open.rows;
        if self.spill.rows() == 0 {
            info!(sink = SINK, rows, spill_rows = self.cfg.spill_rows,
                "a large batch: its changes are written to the target as they arrive and merged at its flush");
        }
        let started = Instant::now();
        let connector = self.connector.clone();
        crate::slow::watched(
            &connector,
            "redshift spill",
            self.with_retry(backoff, stop, |s| Box::pin(s.write_spill())),
        )
        .await?;
        self.ready = Compacted::default();
        self.open = Compacted::default();
        metrics::flush(
            &self.connector,
            SINK,
            "spill",
            started.elapsed().as_secs_f64(),
        );
        debug!(
            sink = SINK,
            rows,
            held = self.spill.rows(),
            "held changes written to the spill tables"
        );
        Ok(())
    }

    /// One spill write: per table, the batch's rows, then the unfinished cycle's, numbered in
    /// that order, in one transaction (after their upload, in `s3` mode).
    async fn write_spill(&mut self) -> Result<(), SinkError> {
        let mut ids: Vec<TableId> = self
            .ready
            .tables
            .keys()
            .chain(self.open.tables.keys())
            .filter(|id| self.tables.contains_key(*id))
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        self.client().await?;
        let client = self.client.as_ref().expect("connected above");
        for id in &ids {
            self.spill
                .prepare(client, self.cfg.load, &self.tables[id])
                .await?;
        }
        let batch_rows = self.ready.rows as u64;
        let mut next = self.spill.next();
        let mut loads = Vec::new();
        // The batch's rows first, so that they end where `upto` will.
        for (in_batch, from) in [(true, &self.ready), (false, &self.open)] {
            for id in &ids {
                let Some(evs) = from.tables.get(id) else {
                    continue;
                };
                let rt = &self.tables[id];
                let refs: Vec<&ChangeEvent> = evs.values().collect();
                let (parts, keys, bytes) =
                    encode(&refs, &rt.schema, self.cfg.part_bytes, Tail::Spill(next));
                let mut load = TableLoad {
                    id: id.clone(),
                    dest: rt.target.clone(),
                    parts,
                    keys,
                    bytes,
                    uploaded: None,
                };
                if let (LoadMode::S3, Some(files)) = (self.cfg.load, &self.files) {
                    let batch = format!("spill{next:020}");
                    load.uploaded = Some(
                        files
                            .put_table(&batch, &rt.target.to_string(), &load.parts)
                            .await
                            .map_err(|e| with_table(e, id))?,
                    );
                }
                next += refs.len() as i64;
                loads.push((in_batch, load));
            }
        }
        let client = self.client.as_mut().expect("connected above");
        let tx = client.transaction().await.map_err(pg)?;
        for (_, load) in &loads {
            let rt = &self.tables[&load.id];
            let mut cols = rt.columns.clone();
            cols.push(OP_COLUMN.into());
            cols.push(VERSION_COLUMN.into());
            cols.push(SEQ_COLUMN.into());
            copy_in(&tx, &self.cfg, rt, self.spill.table(&load.id), &cols, load).await?;
        }
        tx.commit().await.map_err(pg)?;
        let written = loads
            .iter()
            .map(|(in_batch, load)| {
                let from = if *in_batch { &self.ready } else { &self.open };
                let mut times = CommitSeconds::default();
                times.add(from.tables[&load.id].values());
                (load.id.clone(), *in_batch, load.keys.len() as u64, times)
            })
            .collect();
        self.spill.written(written, batch_rows, next);
        if let Some(files) = &self.files {
            let keys: Vec<String> = loads
                .iter()
                .filter_map(|(_, l)| l.uploaded.as_ref())
                .flat_map(|u| u.keys.iter().cloned())
                .collect();
            if let Err(e) = files.remove(&keys).await {
                warn!(sink = SINK, error = %e, "could not remove spilled batch files (removed at the next start)");
            }
        }
        Ok(())
    }

    /// Turn the ready changes into per-table CSV loads.
    fn prepare(&mut self) {
        self.loads.clear();
        let mut ids: Vec<&TableId> = self
            .ready
            .tables
            .keys()
            .chain(self.spill.batch_tables())
            .collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let Some(rt) = self.tables.get(id) else {
                continue;
            };
            // A table being (re-)snapshotted takes no changes: they are in the snapshot.
            let dest = match rt.state.as_ref().map(|s| s.phase) {
                Some(Phase::PendingSwap) => rt.shadow.clone(),
                Some(Phase::Streaming) => rt.target.clone(),
                Some(Phase::Snapshot) | None => continue,
            };
            let events = self
                .ready
                .tables
                .get(id)
                .map(|evs| in_student_order(evs, &rt.schema))
                .unwrap_or_default();
            let (parts, keys, bytes) =
                encode(&events, &rt.schema, self.cfg.part_bytes, Tail::OpAndVersion);
            self.loads.push(TableLoad {
                id: id.clone(),
                dest,
                parts,
                keys,
                bytes,
                uploaded: None,
            });
        }
    }

    /// Upload what is not uploaded yet (batch `batch`).
    async fn upload(&mut self, batch: &str) -> Result<(), SinkError> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        for load in self
            .loads
            .iter_mut()
            .filter(|l| l.uploaded.is_none() && !l.keys.is_empty())
        {
            let rt = &self.tables[&load.id];
            let up = files
                .put_table(batch, &rt.target.to_string(), &load.parts)
                .await
                .map_err(|e| with_table(e, &load.id))?;
            debug!(sink = SINK, table = %load.id, parts = load.parts.len(), compressed_bytes = up.compressed_bytes, "batch files uploaded");
            load.uploaded = Some(up);
        }
        Ok(())
    }

    /// The flush transaction (after the upload).
    async fn apply(&mut self, w: Watermark) -> Result<(), SinkError> {
        self.upload(&format!("v{:020}", w.version)).await?;
        // The tables this flush leaves without their snapshot: the models reading them wait.
        let loading = self.loading(Some(w.version));
        self.client().await?;
        let connector = self.connector.clone();
        let mode = self.cfg.load;
        let client = self.client.as_mut().expect("connected above");
        let tx = begin_fenced(
            SINK,
            client,
            self.lane.as_ref(),
            &connector,
            Some(w.version),
        )
        .await?;
        // Soft deletes are stamped with the source commit time of the flush's watermark.
        let soft_at = (self.cfg.deletes == Deletes::Soft)
            .then(|| sql::timestamp(w.commit_time.unwrap_or_else(Utc::now)));
        // Changed target → its staging table (incremental models find the students touched
        // in them); the staging tables live until the models are done.
        let mut changed: HashMap<String, Changed> = HashMap::new();
        self.collected.clear();
        for load in &self.loads {
            let rt = &self.tables[&load.id];
            let spilled = self.spill.collect(rt);
            let collected = stage_and_merge(
                &tx,
                &self.cfg,
                rt,
                load,
                spilled.as_ref(),
                soft_at.as_deref(),
            )
            .await?;
            if spilled.is_some() {
                self.collected.push((load.id.clone(), collected));
            }
            let merged = Changed::Merged {
                stage: rt.stage.clone(),
                students: sql::has_students(&rt.schema),
            };
            changed.insert(rt.target.to_string(), merged);
        }
        for rt in self.tables.values() {
            if !held_back(rt.ignoring_snapshot, rt.state.as_ref())
                && rt
                    .state
                    .as_ref()
                    .is_some_and(|s| s.phase == Phase::PendingSwap && s.version <= w.version)
            {
                // Another primary key at the source: the emptied target is declared with it.
                let declared = super::declared_key(&tx, &rt.target).await.map_err(pg)?;
                let keys: Vec<String> = rt
                    .schema
                    .key_columns()
                    .map(|c| c.name.to_lowercase())
                    .collect();
                let old = declared.as_ref().map(|(_, columns)| columns.join(", "));
                let rekey = declared
                    .filter(|(_, columns)| *columns != keys)
                    .map(|(constraint, _)| sql::rekey(&rt.target, &constraint, &rt.schema));
                if rekey.is_some() {
                    warn!(sink = SINK, table = %rt.schema.id, target = %rt.target,
                        old_key = %old.unwrap_or_default(), new_key = %keys.join(", "),
                        "the target takes the source's new primary key with the re-snapshot");
                }
                tx.batch_execute(&sql::publish(
                    mode,
                    &rt.schema,
                    &rt.target,
                    &rt.shadow,
                    soft_at.as_deref(),
                    rekey.as_deref(),
                ))
                .await
                .map_err(pg)?;
                changed.insert(rt.target.to_string(), Changed::Replaced);
                // Fresh statistics before the models read the replaced table (PostgreSQL
                // would plan the refresh with the empty table's); Redshift analyzes on its own.
                if mode == LoadMode::Stdin {
                    tx.batch_execute(&format!("ANALYZE {}", rt.target.sql()))
                        .await
                        .map_err(pg)?;
                }
                info!(sink = SINK, table = %rt.schema.id, target = %rt.target, version = w.version, "snapshot published");
            }
        }
        // Also without models: the freshness rows of the changed tables tell the models of
        // another connector that read them (custom inputs) to rebuild.
        if !changed.is_empty() {
            if !self.cfg.incremental_models {
                changed.values_mut().for_each(|c| *c = Changed::Replaced);
            }
            let refreshed = self
                .models
                .refresh_batch(&tx, &changed, &loading, w.version, w.commit_time)
                .await
                .map_err(refresh_error)?;
            for r in refreshed {
                metrics::model_refresh(&connector, &r.model, r.incremental, r.seconds);
                metrics::model_values_truncated(&connector, &r.model, r.truncated);
                debug!(sink = SINK, model = %r.model, rows = r.rows, incremental = r.incremental,
                    students = r.students, kept = r.kept, ms = (r.seconds * 1000.0).round(),
                    "model refreshed");
            }
        }
        for load in &self.loads {
            tx.batch_execute(&format!("DROP TABLE {}", self.tables[&load.id].stage))
                .await
                .map_err(pg)?;
        }
        for clear in self.spill.clear() {
            tx.batch_execute(&clear).await.map_err(pg)?;
        }
        let held: Vec<&TableId> = self
            .tables
            .iter()
            .filter(|(_, rt)| held_back(rt.ignoring_snapshot, rt.state.as_ref()))
            .map(|(id, _)| id)
            .collect();
        checkpoint::advance(&tx, &connector, SINK, &w, &held)
            .await
            .map_err(pg)?;
        let requests = checkpoint::resnapshot_requests(&tx, &connector)
            .await
            .map_err(pg)?;
        commit_fenced(SINK, tx, self.lane.as_mut()).await?;
        for t in requests {
            self.requests.forward(SINK, &t);
        }
        Ok(())
    }

    /// Remove the committed batch's files (or, with a retention, files past it).
    async fn after_commit(&mut self) {
        let Some(files) = &self.files else {
            self.loads.clear();
            return;
        };
        let result = if self.cfg.file_retention.is_zero() {
            let keys: Vec<String> = self
                .loads
                .iter()
                .filter_map(|l| l.uploaded.as_ref())
                .flat_map(|u| u.keys.iter().cloned())
                .collect();
            files.remove(&keys).await
        } else if self.last_sweep.elapsed() >= RETENTION_SWEEP {
            self.last_sweep = Instant::now();
            files.remove_old(self.cfg.file_retention).await.map(|_| ())
        } else {
            Ok(())
        };
        if let Err(e) = result {
            // The batch is committed; its files are removed at the next start at the latest.
            warn!(sink = SINK, error = %e, "could not remove committed batch files");
        }
        self.loads.clear();
    }

    async fn snapshot(
        &mut self,
        marker: SnapshotMarker,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let id = marker.table().id.clone();
        let Some(rt) = self.tables.get_mut(&id) else {
            return Ok(());
        };
        match marker {
            SnapshotMarker::Started {
                table,
                version,
                total_rows,
                requested,
                ..
            } => {
                rt.ignoring_snapshot = snapshot_not_needed(
                    requested || self.requests.contains(&id),
                    rt.state.as_ref(),
                    version,
                );
                if rt.ignoring_snapshot {
                    info!(sink = SINK, table = %id, version, "snapshot not needed: this sink is already at or past its version");
                    return Ok(());
                }
                rt.snapshot = SnapshotRows::default();
                let reshaped = *table != *rt.schema;
                // The changes held for the table are older than the snapshot, which has them.
                self.ready.drop_table(&id);
                self.open.drop_table(&id);
                self.spill.discard(&id);
                // Read in another shape than the target has: the table changed at the source.
                if reshaped {
                    let table = table.clone();
                    self.with_retry(backoff, stop, |s| Box::pin(s.evolve(table.clone())))
                        .await?;
                }
                let started = Instant::now();
                self.with_retry(backoff, stop, |s| {
                    Box::pin(s.start_snapshot(id.clone(), version, total_rows))
                })
                .await?;
                metrics::flush(
                    &self.connector,
                    SINK,
                    "snapshot_start",
                    started.elapsed().as_secs_f64(),
                );
                self.requests.done(&id);
                let rt = self.tables.get_mut(&id).expect("table exists");
                rt.merge_chunks = false;
                rt.state = Some(TableCheckpoint {
                    phase: Phase::Snapshot,
                    version,
                    commit_time: None,
                    snapshot_last_key: None,
                    snapshot_rows: 0,
                    snapshot_total_rows: total_rows,
                    snapshot_started_at: Some(Utc::now()),
                    snapshot_into_target: false,
                });
            }
            SnapshotMarker::Chunk { last_key, rows, .. } => {
                if rt.ignoring_snapshot
                    || rt.state.as_ref().is_none_or(|s| s.phase != Phase::Snapshot)
                {
                    rt.snapshot = SnapshotRows::default();
                    return Ok(());
                }
                rt.snapshot.last_key = Some(last_key);
                rt.snapshot.rows = rows;
                rt.snapshot.unmarked = 0;
                if rt.snapshot.events.len() >= self.cfg.max_rows.min(SNAPSHOT_LOAD_ROWS) {
                    self.load_snapshot(&id, backoff, stop).await?;
                }
            }
            SnapshotMarker::Done { version, rows, .. } => {
                if rt.ignoring_snapshot
                    || rt.state.as_ref().is_none_or(|s| s.phase != Phase::Snapshot)
                {
                    // A held table's changes since the snapshot's version follow this marker:
                    // a watermark received before it is committed with the table still held.
                    if held_back(rt.ignoring_snapshot, rt.state.as_ref())
                        && self.watermark.is_some()
                    {
                        self.flush(FlushReason::Snapshot, backoff, stop).await?;
                    }
                    let rt = self.tables.get_mut(&id).expect("table exists");
                    rt.ignoring_snapshot = false;
                    rt.snapshot = SnapshotRows::default();
                    return Ok(());
                }
                // The table's changes since the snapshot's version follow this marker, before
                // the next watermark: a watermark received before it must not publish the
                // table, so what it covers is committed now.
                if self.watermark.is_some() {
                    self.flush(FlushReason::Snapshot, backoff, stop).await?;
                }
                self.load_snapshot(&id, backoff, stop).await?;
                // Rows after the last chunk marker are copies of it, sent again by a poller
                // that retried its last step.
                self.tables.get_mut(&id).expect("table exists").snapshot = SnapshotRows::default();
                let connector = self.connector.clone();
                self.with_retry(backoff, stop, |s| {
                    let connector = connector.clone();
                    let id = id.clone();
                    Box::pin(async move {
                        s.client().await?;
                        let client = s.client.as_mut().expect("connected above");
                        let tx =
                            begin_fenced(SINK, client, s.lane.as_ref(), &connector, None).await?;
                        checkpoint::snapshot_loaded(&tx, &connector, SINK, &id, rows)
                            .await
                            .map_err(pg)?;
                        commit_fenced(SINK, tx, s.lane.as_mut()).await
                    })
                })
                .await?;
                info!(sink = SINK, table = %id, version, rows, "snapshot loaded; published at the next flush");
                let s = self
                    .tables
                    .get_mut(&id)
                    .and_then(|rt| rt.state.as_mut())
                    .expect("snapshot state");
                s.phase = Phase::PendingSwap;
                s.snapshot_rows = rows;
            }
        }
        Ok(())
    }

    /// Change the target of a table that changed at the source so that it holds `shape` (see
    /// [`ensure_table`]), and take that shape; the re-snapshot that follows fills the new
    /// columns of every row.
    async fn evolve(&mut self, shape: Arc<TableSchema>) -> Result<(), SinkError> {
        let mode = self.cfg.load;
        let soft = self.cfg.deletes == Deletes::Soft;
        self.client().await?;
        let client = self.client.as_ref().expect("connected above");
        let rt = &self.tables[&shape.id];
        let ensured = ensure_table(client, mode, &shape, &rt.target, soft, true)
            .await
            .map_err(pg)?;
        if !ensured.problems.is_empty() {
            return Err(SinkError::Incompatible {
                sink: SINK.into(),
                table: shape.id.clone(),
                target: rt.target.to_string(),
                problems: ensured.problems,
            });
        }
        if soft {
            // The live view lists the columns.
            client
                .batch_execute(&sql::recreate_live_view(mode, &shape, &rt.target))
                .await
                .map_err(pg)?;
        }
        warn!(sink = SINK, table = %shape.id, target = %rt.target,
            source_changes = %shape.changes_from(&rt.schema).join("; "),
            target_changes = %ensured.evolved.join("; "),
            "the table changed at the source: target changed to match, re-snapshotting it");
        let rt = self.tables.get_mut(&shape.id).expect("table exists");
        rt.columns = sql::columns(&shape);
        rt.types = ensured.types;
        rt.schema = shape;
        Ok(())
    }

    async fn start_snapshot(
        &mut self,
        id: TableId,
        version: i64,
        total: Option<u64>,
    ) -> Result<(), SinkError> {
        let connector = self.connector.clone();
        let mode = self.cfg.load;
        self.client().await?;
        let client = self.client.as_mut().expect("connected above");
        let rt = &self.tables[&id];
        let tx = begin_fenced(SINK, client, self.lane.as_ref(), &connector, None).await?;
        tx.batch_execute(&sql::create_shadow(mode, &rt.shadow, &rt.target))
            .await
            .map_err(pg)?;
        checkpoint::begin_snapshot(
            &tx,
            &connector,
            SINK,
            &rt.schema,
            &rt.target.schema,
            &rt.target.name,
            version,
            total,
        )
        .await
        .map_err(pg)?;
        commit_fenced(SINK, tx, self.lane.as_mut()).await
    }

    /// Load the table's received snapshot rows into its shadow table, with their progress.
    async fn load_snapshot(
        &mut self,
        id: &TableId,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let rt = self.tables.get_mut(id).expect("table exists");
        let Some(last_key) = rt.snapshot.last_key.clone() else {
            return Ok(());
        };
        let already = rt.state.as_ref().map_or(0, |s| s.snapshot_rows);
        let target_rows = rt.snapshot.rows;
        let mut events = std::mem::take(&mut rt.snapshot.events);
        // Rows after the last chunk marker (a flush came between) wait for their own marker:
        // loaded now, they would make the counts below disagree.
        rt.snapshot.events = events.split_off(events.len().saturating_sub(rt.snapshot.unmarked));
        dedup_snapshot_rows(&mut events);
        // Rows this sink already holds are re-sent only when the poller resumed from another
        // sink's earlier position or read a chunk again; then merge, else COPY straight into
        // the shadow table.
        let overlap = rt.merge_chunks || already + events.len() as u64 != target_rows;
        let refs: Vec<&ChangeEvent> = events.iter().collect();
        let tail = if overlap {
            Tail::OpAndVersion
        } else {
            Tail::Nothing
        };
        let (parts, keys, bytes) = encode(&refs, &rt.schema, self.cfg.part_bytes, tail);
        self.loads = vec![TableLoad {
            id: id.clone(),
            dest: rt.shadow.clone(),
            parts,
            keys,
            bytes,
            uploaded: None,
        }];
        let started = Instant::now();
        let (id2, key2) = (id.clone(), last_key.clone());
        self.with_retry(backoff, stop, |s| {
            Box::pin(s.apply_snapshot(id2.clone(), key2.clone(), target_rows, overlap))
        })
        .await?;
        self.tables.get_mut(id).expect("table exists").merge_chunks = overlap;
        self.after_commit().await;
        metrics::flush(
            &self.connector,
            SINK,
            "snapshot_chunk",
            started.elapsed().as_secs_f64(),
        );
        metrics::flush_size(&self.connector, SINK, events.len() as u64, bytes as u64);
        metrics::snapshot_rows(&self.connector, SINK, &id.to_string(), events.len() as u64);
        let rt = self.tables.get_mut(id).expect("table exists");
        rt.snapshot.last_key = None;
        let s = rt.state.as_mut().expect("snapshot state");
        s.snapshot_last_key = Some(last_key);
        s.snapshot_rows = target_rows;
        Ok(())
    }

    async fn apply_snapshot(
        &mut self,
        id: TableId,
        last_key: Vec<Value>,
        rows: u64,
        overlap: bool,
    ) -> Result<(), SinkError> {
        let version = self.tables[&id].state.as_ref().map_or(0, |s| s.version);
        self.upload(&format!(
            "s{version:020}-{}-{rows:012}",
            self.tables[&id].target
        ))
        .await?;
        self.client().await?;
        let connector = self.connector.clone();
        let client = self.client.as_mut().expect("connected above");
        let rt = &self.tables[&id];
        let load = &self.loads[0];
        let tx = begin_fenced(SINK, client, self.lane.as_ref(), &connector, None).await?;
        if overlap {
            stage_and_merge(&tx, &self.cfg, rt, load, None, None).await?;
            tx.batch_execute(&format!("DROP TABLE {}", rt.stage))
                .await
                .map_err(pg)?;
        } else if !load.keys.is_empty() {
            copy_in(&tx, &self.cfg, rt, &rt.shadow.sql(), &rt.columns, load).await?;
        }
        checkpoint::snapshot_progress(&tx, &connector, SINK, &id, &last_key, rows)
            .await
            .map_err(pg)?;
        commit_fenced(SINK, tx, self.lane.as_mut()).await
    }
}

/// Name the table in an S3 error.
fn with_table(e: SinkError, table: &TableId) -> SinkError {
    match e {
        SinkError::Fatal { sink, message } => SinkError::Fatal {
            sink,
            message: format!("{message} (while writing the batch files of {table})"),
        },
        other => other,
    }
}

/// Load `load` into the table's staging table (created here, with the operation column), add
/// the batch's spilled rows with `spilled` ([`spill::Spill::collect`]), and merge it into the
/// load's destination (deletes soft at `soft_at`, see [`sql::merge`]). The staging table is
/// left for the caller to drop.
async fn stage_and_merge(
    tx: &Transaction<'_>,
    cfg: &RedshiftSinkConfig,
    rt: &TableRt,
    load: &TableLoad,
    spilled: Option<&[String; 2]>,
    soft_at: Option<&str>,
) -> Result<u64, SinkError> {
    let mut cols = rt.columns.clone();
    cols.push(OP_COLUMN.into());
    cols.push(VERSION_COLUMN.into());
    tx.batch_execute(&sql::create_stage(
        cfg.load, &rt.schema, &rt.types, &rt.stage,
    ))
    .await
    .map_err(pg)?;
    if !load.keys.is_empty() {
        copy_in(tx, cfg, rt, &rt.stage, &cols, load).await?;
    }
    let collected = match spilled {
        Some([outdated, newer]) => {
            // PostgreSQL (the `stdin` stand-in) estimates the pick of each key's change at a
            // row or two and checks each spilled row against the whole staging table in a
            // nested loop: over ten minutes for 87,000 spilled rows against 40,000 received,
            // half a second hashed.
            let stand_in = cfg.load == LoadMode::Stdin;
            if stand_in {
                tx.batch_execute("SET LOCAL enable_nestloop = off")
                    .await
                    .map_err(pg)?;
            }
            let replaced = tx.execute(outdated.as_str(), &[]).await.map_err(pg)?;
            let added = tx.execute(newer.as_str(), &[]).await.map_err(pg)?;
            if stand_in {
                tx.batch_execute("SET LOCAL enable_nestloop = on")
                    .await
                    .map_err(pg)?;
            }
            // Keys whose change held in memory a spilled one replaced are counted with those.
            added.saturating_sub(replaced)
        }
        None => 0,
    };
    tx.batch_execute(&sql::merge(&rt.schema, &load.dest, &rt.stage, soft_at))
        .await
        .map_err(|e| merge_error(rt, &load.dest, e))?;
    Ok(collected)
}

/// COPY one load into `dest`, from S3 or from the CSV in memory. A row the target rejects
/// becomes [`SinkError::Rejected`] naming its key.
async fn copy_in(
    tx: &Transaction<'_>,
    cfg: &RedshiftSinkConfig,
    rt: &TableRt,
    dest: &str,
    columns: &[String],
    load: &TableLoad,
) -> Result<(), SinkError> {
    match cfg.load {
        LoadMode::S3 => {
            let manifest_url = load
                .uploaded
                .as_ref()
                .map(|u| u.manifest_url.as_str())
                .expect("uploaded before the transaction");
            let sql = sql::copy(
                dest,
                columns,
                &CopySource::S3 {
                    manifest_url,
                    iam_role: &cfg.iam_role,
                    region: &cfg.region,
                },
            );
            tx.batch_execute(&sql).await.map_err(|e| {
                let mut err = rejected(rt, load, &e);
                if let SinkError::Rejected { reason, .. } = &mut err {
                    reason.push_str(" (see stl_load_errors on the cluster for the line)");
                }
                err
            })
        }
        LoadMode::Stdin => {
            let sql = sql::copy(dest, columns, &CopySource::Stdin);
            let copy = tx.copy_in::<_, Bytes>(&sql).await.map_err(pg)?;
            futures_util::pin_mut!(copy);
            for part in &load.parts {
                copy.send(Bytes::from(part.clone()))
                    .await
                    .map_err(|e| rejected(rt, load, &e))?;
            }
            copy.finish().await.map_err(|e| rejected(rt, load, &e))?;
            Ok(())
        }
    }
}

/// Map a COPY failure to the record it names.
fn rejected(rt: &TableRt, load: &TableLoad, e: &tokio_postgres::Error) -> SinkError {
    let Some((message, line, column)) = copy_failure(e) else {
        return pg_ref(e);
    };
    let key = line
        .and_then(|n| load.keys.get(n.wrapping_sub(1)))
        .map_or_else(|| "unknown".to_string(), |k| describe_key(&rt.schema, k));
    SinkError::Rejected {
        sink: SINK.into(),
        table: rt.schema.id.clone(),
        key,
        reason: format!("{message} (target {} column {column})", rt.target),
    }
}

/// A model refresh that met a value too long for its column the first time is retried (the
/// model's values are then checked); one that must fail on such a value stops the sink.
fn refresh_error(e: RefreshError) -> SinkError {
    match e {
        RefreshError::Database(e) => pg(e),
        e @ RefreshError::Overflow { .. } => SinkError::Transient {
            sink: SINK.into(),
            message: e.to_string(),
        },
        e @ RefreshError::Rejected(_) => SinkError::Fatal {
            sink: SINK.into(),
            message: e.to_string(),
        },
    }
}

fn pg_ref(e: &tokio_postgres::Error) -> SinkError {
    SinkError::from_pg(SINK, e)
}

fn merge_error(rt: &TableRt, dest: &PgName, e: tokio_postgres::Error) -> SinkError {
    let data_error = e
        .as_db_error()
        .is_some_and(|db| ["22", "23"].contains(&&db.code().code()[..2]));
    match pg_ref(&e) {
        SinkError::Fatal { message, .. } if data_error => SinkError::Rejected {
            sink: SINK.into(),
            table: rt.schema.id.clone(),
            key: "unknown (the merge rejected the batch as a whole)".into(),
            reason: format!("{message} (merging into {dest})"),
        },
        other => other,
    }
}

/// What [`ensure_table`] found and did.
struct Ensured {
    /// The target's column types, in source column order (for the staging table).
    types: Vec<String>,
    /// Why the target cannot hold the source's rows (empty: it can).
    problems: Vec<String>,
    /// What was changed in an existing target: columns added (NULL in its rows until the table
    /// is re-snapshotted) or widened.
    evolved: Vec<String>,
}

/// Create the target table if it is missing, or check that an existing one can hold the
/// source's rows. With `evolve` (a table this connector holds, which the source changed), make
/// it able to: a column the source added is added, a `varchar` the source widened is widened
/// (each its own statement: Redshift alters a column's type outside a transaction only, and
/// adds one column per statement); without, those are problems too. A column the source
/// dropped stays as it is: nullable, it is no longer written; `NOT NULL` (Redshift cannot drop
/// the constraint), it is a problem, as is a column of another type family.
async fn ensure_table(
    client: &Client,
    mode: LoadMode,
    schema: &TableSchema,
    target: &PgName,
    soft: bool,
    evolve: bool,
) -> Result<Ensured, tokio_postgres::Error> {
    let existing = client
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length::int, \
             numeric_precision::int, numeric_scale::int, is_nullable::text = 'YES' \
             FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            &[&target.schema, &target.name],
        )
        .await?;
    let mapped: Vec<String> = schema
        .columns
        .iter()
        .map(|c| sql::redshift_type(&c.source_type))
        .collect();
    if existing.is_empty() {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                crate::sink::names::ident(&target.schema)
            ))
            .await?;
        client
            .batch_execute(&sql::create_table(mode, schema, target, soft))
            .await?;
        return Ok(Ensured {
            types: mapped,
            problems: Vec::new(),
            evolved: Vec::new(),
        });
    }
    let family = |t: &str| -> &'static str {
        match t.split('(').next().unwrap_or_default() {
            "boolean" => "bool",
            "smallint" | "integer" | "bigint" => "int",
            "numeric" | "decimal" | "double precision" | "real" => "number",
            "character varying" | "character" | "text" | "varchar" | "char" => "text",
            "date" => "date",
            "timestamp without time zone" | "timestamp" => "timestamp",
            "timestamp with time zone" | "timestamptz" => "timestamptz",
            "time without time zone" | "time" => "time",
            _ => "other",
        }
    };
    let mut out = Ensured {
        types: Vec::with_capacity(schema.columns.len()),
        problems: Vec::new(),
        evolved: Vec::new(),
    };
    let mut alter = Vec::new();
    for (c, wanted) in schema.columns.iter().zip(&mapped) {
        let name = c.name.to_lowercase();
        let column = crate::sink::names::ident(&name);
        match existing.iter().find(|r| r.get::<_, &str>(0) == name) {
            None if evolve => {
                alter.push(format!("ADD COLUMN {column} {wanted}"));
                out.evolved.push(format!("added {name} {wanted}"));
                out.types.push(wanted.clone());
            }
            None => out.problems.push(format!(
                "column {name} is missing (source {} {})",
                c.name, c.source_type.name
            )),
            Some(r) => {
                let have: &str = r.get(1);
                let have_len: Option<i32> = r.get(2);
                let (want, got) = (family(wanted), family(have));
                let wider = |w: &str| {
                    w.strip_prefix("varchar(")
                        .and_then(|n| n.trim_end_matches(')').parse::<i32>().ok())
                };
                let key = schema.key_columns().any(|k| k.name == c.name);
                // Redshift changes a column's type only for a `varchar` outside the key: any
                // other change means a new table, which only the operator can decide on.
                let rebuild = |why: String| {
                    format!(
                        "{why}, and Redshift cannot change that column in place: drop {} and run `edfi-cdc resnapshot -c CONFIG {}` once the replicator runs again (the table is created anew)",
                        target.sql(),
                        schema.id
                    )
                };
                let described = sql::described_type(have, have_len, r.get(3), r.get(4));
                let narrower = |a: &str, b: &str| -> bool {
                    let width = |t: &str| match t {
                        "smallint" => 2,
                        "integer" => 4,
                        _ => 8,
                    };
                    let digits = |t: &str| {
                        let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
                        let (p, s) = inner.split_once(',')?;
                        let (p, s): (i32, i32) = (p.parse().ok()?, s.parse().ok()?);
                        Some((p - s, s))
                    };
                    match (digits(a), digits(b)) {
                        (Some((ai, as_)), Some((bi, bs))) => ai < bi || as_ < bs,
                        (None, None) if family(a) == "int" && family(b) == "int" => {
                            width(a) < width(b)
                        }
                        _ => false,
                    }
                };
                match (have, have_len, wider(wanted)) {
                    ("character varying", Some(n), Some(w)) if w > n && evolve && !key => {
                        alter.push(format!("ALTER COLUMN {column} TYPE {wanted}"));
                        out.evolved
                            .push(format!("widened {name} from varchar({n}) to {wanted}"));
                        out.types.push(wanted.clone());
                    }
                    ("character varying", Some(n), Some(w)) if w > n && evolve => out
                        .problems
                        .push(rebuild(format!(
                            "key column {name} is varchar({n}); the source's values need {wanted}"
                        ))),
                    _ if got == want && narrower(&described, wanted) => out.problems.push(
                        rebuild(format!("column {name} is {described}; the source's values need {wanted}")),
                    ),
                    _ if got == want || (want == "int" && got == "number") => {
                        out.types.push(described);
                    }
                    _ if evolve => out.problems.push(rebuild(format!(
                        "column {name} is {have}; the source's values, now {}, need {wanted}",
                        c.source_type.name
                    ))),
                    _ => out.problems.push(format!(
                        "column {name} is {have}, which cannot hold source {} values (mapped type {wanted})",
                        c.source_type.name
                    )),
                }
                let nullable: bool = r.get(5);
                if evolve && c.nullable && !nullable && !key {
                    out.problems.push(rebuild(format!(
                        "column {name} is NOT NULL and the source now allows NULL in it"
                    )));
                }
            }
        }
    }
    for r in &existing {
        let name: &str = r.get(0);
        let nullable: bool = r.get(5);
        if !nullable && !schema.columns.iter().any(|c| c.name.to_lowercase() == name) {
            out.problems.push(format!(
                "column {name} is NOT NULL and the source no longer has it; Redshift cannot make it nullable: drop it (ALTER TABLE {} DROP COLUMN {name}) if nothing reads it, or add it back at the source",
                target.sql()
            ));
        }
    }
    if out.problems.is_empty() {
        if soft && !alter.is_empty() {
            // Created again by the caller: on PostgreSQL a view stops a column's type change.
            client
                .batch_execute(&format!(
                    "DROP VIEW IF EXISTS {}",
                    sql::live_view(target).sql()
                ))
                .await?;
        }
        for a in &alter {
            client
                .batch_execute(&format!("ALTER TABLE {} {a}", target.sql()))
                .await?;
        }
    } else {
        out.evolved.clear();
    }
    Ok(out)
}

/// `deletes = "soft"`: the target, and a snapshot's shadow table left from before, have
/// [`sql::DELETED_AT`] (added if missing), and the target its live view. `hard`: rows an earlier
/// soft-deleting run kept as deleted are removed from both.
async fn ensure_deletes(
    client: &Client,
    mode: LoadMode,
    soft: bool,
    schema: &TableSchema,
    target: &PgName,
    shadow: &PgName,
) -> Result<(), tokio_postgres::Error> {
    for table in [target, shadow] {
        let name = table.to_string();
        if !models::table_exists(client, &name).await? {
            continue;
        }
        let has = models::has_column(client, &name, sql::DELETED_AT).await?;
        if soft && !has {
            client
                .batch_execute(&format!(
                    "ALTER TABLE {} ADD COLUMN {} timestamp",
                    table.sql(),
                    sql::DELETED_AT
                ))
                .await?;
            info!(sink = SINK, table = %table, "deletes = \"soft\": deleted rows are kept from now on");
        } else if !soft && has {
            let removed = client
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE {} IS NOT NULL",
                        table.sql(),
                        sql::DELETED_AT
                    ),
                    &[],
                )
                .await?;
            if removed > 0 {
                info!(sink = SINK, table = %table, rows = removed,
                    "deletes = \"hard\": rows kept as deleted by an earlier run removed");
            }
        }
    }
    if soft {
        let replaced = client
            .batch_execute(&sql::create_live_view(mode, schema, target))
            .await;
        if replaced.is_err() {
            // Its columns changed; a view built on it stops this, naming the view.
            client
                .batch_execute(&sql::recreate_live_view(mode, schema, target))
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::every_type_schema;

    #[test]
    fn parts_split_at_record_boundaries_and_deletes_carry_only_the_key() {
        let t = every_type_schema();
        let row: Vec<Value> = t.columns.iter().map(|_| Value::Null).collect();
        let mut key_row = row.clone();
        key_row[t.key[0]] = Value::Int(1);
        let ev = |op, after: Option<Vec<Value>>| ChangeEvent {
            table: t.clone(),
            op,
            key: vec![Value::Int(1)],
            after,
            version: 1,
            commit_time: None,
        };
        let upsert = ev(Op::Update, Some(key_row.clone()));
        let delete = ev(Op::Delete, None);
        let events = vec![&upsert, &delete, &upsert];
        let (parts, keys, bytes) = encode(&events, &t, 1, Tail::OpAndVersion);
        assert_eq!(parts.len(), 3, "each record fills a 1-byte part");
        assert_eq!(keys.len(), 3);
        assert_eq!(bytes, parts.iter().map(String::len).sum::<usize>());
        assert!(parts[0].ends_with(",\"u\",1\n") && parts[1].ends_with(",\"d\",1\n"));
        let (one, _, _) = encode(&events, &t, 1 << 20, Tail::Nothing);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].lines().count(), 3);
    }

    #[test]
    fn a_batch_is_staged_by_student_then_by_key() {
        let mut t = (*every_type_schema()).clone();
        // The student column second in the key.
        t.key = vec![1, 0];
        let t = Arc::new(t);
        let ev = |day: u32, usi: i64| ChangeEvent {
            table: t.clone(),
            op: Op::Delete,
            key: vec![
                Value::Date(chrono::NaiveDate::from_ymd_opt(2010, 1, day).unwrap()),
                Value::Int(usi),
            ],
            after: None,
            version: 1,
            commit_time: None,
        };
        let batch: HashMap<String, ChangeEvent> =
            [("a", 1, 30), ("d", 2, 10), ("c", 3, 20), ("b", 4, 10)]
                .into_iter()
                .map(|(k, day, usi)| (k.to_string(), ev(day, usi)))
                .collect();
        let staged: Vec<Vec<Value>> = in_student_order(&batch, &t)
            .iter()
            .map(|ev| ev.key.clone())
            .collect();
        assert_eq!(
            staged,
            [ev(4, 10), ev(2, 10), ev(3, 20), ev(1, 30)].map(|e| e.key)
        );
    }
}
