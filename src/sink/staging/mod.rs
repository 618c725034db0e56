//! The staging sink: mirrors each source table into Aurora PostgreSQL.
//!
//! Guarantees:
//! - Events are applied only up to a watermark; one transaction takes one or more whole cycles
//!   (until `max_batch_events`), and stores the checkpoint (`edfi_cdc.table_state`,
//!   `edfi_cdc.sink_state`) in the same transaction. A crash loses nothing and applies nothing
//!   twice: the poller resumes from the stored checkpoint, and events at or below a table's
//!   checkpoint are skipped.
//! - Set-based: per table, the transaction's events are collapsed to the last change per key,
//!   COPYed into a temporary table, then deleted / upserted into the target in two statements.
//! - Memory is bounded: a cycle with more than `spill_rows` changed rows is written to staging as
//!   it arrives and merged at its watermark (`spill.rs`).
//! - A snapshot loads a shadow table chunk by chunk (each chunk one transaction with its
//!   progress); at the first watermark after the snapshot is complete, the changes since the
//!   snapshot's version are applied to the shadow and it replaces the target's rows in one
//!   transaction (DELETE + INSERT, so readers see the old rows or the new, never an empty or
//!   half-loaded table).
//! - A row the target rejects stops the sink with the table, key and reason; nothing is skipped.

pub mod copy;
pub mod ddl;
mod spill;
mod stale;

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

use crate::checkpoint::{self, Phase, SinkCheckpoint, TableCheckpoint};
use crate::config::{RetryConfig, StagingSinkConfig};
use crate::event::{
    describe_key, ChangeEvent, Message, Op, SnapshotMarker, TableId, TableSchema, Watermark,
};
use crate::metrics;
use crate::retry::Backoff;
use crate::stream::Input;

use super::{
    after_fault, awaits_snapshot, begin_fenced, commit_fenced, copy_failure, dedup_snapshot_rows,
    held_back, retry, route, snapshot_not_needed, Attempt, Compacted, Lane, Requests, Route, Share,
    SinkError, SETUP_LOCK,
};
use crate::sink::names::{case, ident, shadow_table, staging_table, PgName, OP_COLUMN};

/// The sink's checkpoint name in `edfi_cdc.table_state` (embedded stream).
pub const SINK: &str = "staging";
const IDLE_REQUEST_CHECK: Duration = Duration::from_secs(2);

struct TableRt {
    schema: Arc<TableSchema>,
    target: PgName,
    shadow: PgName,
    /// Quoted target column names, in schema column order.
    columns: Vec<String>,
    keys: Vec<String>,
    state: Option<TableCheckpoint>,
    /// A snapshot this sink does not need (it already holds everything up to its version).
    ignoring_snapshot: bool,
    /// The shadow may hold rows past the snapshot's progress (a chunk was read again from an
    /// earlier key, or this process took the snapshot over part-way): the rest of the
    /// snapshot's chunks are merged into it, not copied.
    merge_chunks: bool,
    temp: String,
}

impl TableRt {
    /// Where the table's snapshot goes: its shadow table, or the target itself on an initial
    /// load (see [`TableCheckpoint::snapshot_into_target`]).
    fn loading(&self) -> &PgName {
        if self.state.as_ref().is_some_and(|s| s.snapshot_into_target) {
            &self.target
        } else {
            &self.shadow
        }
    }
}

/// Counters for the periodic progress line.
struct Progress {
    since: Instant,
    events: u64,
    latencies: Vec<f64>,
}

pub struct StagingSink {
    connector: String,
    /// Checkpoint name: `staging`, or `staging@{lane}` for a lane of a Kafka/Kinesis stream.
    name: String,
    lane: Option<Lane>,
    cfg: StagingSinkConfig,
    retry: RetryConfig,
    client: Option<Client>,
    temps: HashSet<String>,
    tables: HashMap<TableId, TableRt>,
    /// Events up to the last watermark received: committable.
    ready: Compacted,
    watermark: Option<Watermark>,
    /// Events after the last watermark: not committable yet.
    open: Compacted,
    /// Changes of the unfinished cycle written to staging because it outgrew `spill_rows`.
    spill: spill::Spill,
    /// `r` events of the current snapshot chunk, per table: with a stream lane over several
    /// topics, the snapshots of several tables arrive interleaved.
    snapshot_rows: HashMap<TableId, Vec<ChangeEvent>>,
    requests: Requests,
    progress: Progress,
    /// The highest source version of the watermarks and snapshots seen: a snapshot that makes
    /// up for records a stream lost starts here or later.
    seen_version: i64,
}

async fn connect(url: &str) -> Result<Client, SinkError> {
    super::pg::connect(SINK, url).await
}

fn pg(e: tokio_postgres::Error) -> SinkError {
    SinkError::from_pg(SINK, &e)
}

impl StagingSink {
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

    /// Connect, create the checkpoint tables and missing target tables, check existing ones,
    /// and load the stored checkpoint. Retries transient faults.
    pub async fn open(
        connector: &str,
        cfg: &StagingSinkConfig,
        retry: &RetryConfig,
        schemas: &[Arc<TableSchema>],
        lane: Option<Lane>,
        stop: &CancellationToken,
    ) -> Result<(StagingSink, SinkCheckpoint), SinkError> {
        let mut backoff = Backoff::new(retry);
        loop {
            match Self::open_once(connector, cfg, retry, schemas, lane.clone()).await {
                Ok(r) => return Ok(r),
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
        cfg: &StagingSinkConfig,
        retry: &RetryConfig,
        schemas: &[Arc<TableSchema>],
        mut lane: Option<Lane>,
    ) -> Result<(StagingSink, SinkCheckpoint), SinkError> {
        let name = lane
            .as_ref()
            .map_or(SINK.to_string(), |l| l.sink_name(SINK));
        let shadow_owner = lane
            .as_ref()
            .map_or(connector.to_string(), |l| format!("{connector}@{}", l.id));
        let client = connect(cfg.url.expose()).await?;
        // Connectors sharing a staging database create schemas and tables one at a time
        // (concurrent CREATE … IF NOT EXISTS can still collide in PostgreSQL's catalog). The
        // lock is the session's: a failed start-up releases it with its connection.
        client
            .execute("SELECT pg_advisory_lock($1)", &[&SETUP_LOCK])
            .await
            .map_err(pg)?;
        checkpoint::install(&client).await.map_err(pg)?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS edfi_cdc_shadow; CREATE SCHEMA IF NOT EXISTS {}",
                spill::SCHEMA
            ))
            .await
            .map_err(pg)?;
        let mut tables = HashMap::new();
        let mut evolved = Vec::new();
        let mut rekey_only = Vec::new();
        for (i, schema) in schemas.iter().enumerate() {
            let target = staging_table(cfg, &schema.id);
            let owner: Option<String> = client
                .query_opt(
                    "SELECT connector FROM edfi_cdc.table_state WHERE sink = $1 AND target_schema = $2 \
                     AND target_table = $3 AND connector <> $4",
                    &[&SINK, &target.schema, &target.name, &connector],
                )
                .await
                .map_err(pg)?
                .map(|r| r.get(0));
            if let Some(owner) = owner {
                return Err(SinkError::Fatal {
                    sink: SINK.into(),
                    message: format!("staging table {target} is already written by connector `{owner}`; connector `{connector}` cannot write it too (map one of them to another schema with schema_map)"),
                });
            }
            let held = checkpoint::may_follow_source(
                &client,
                connector,
                SINK,
                &schema.id,
                &crate::event::shape_digest(schema),
            )
            .await
            .map_err(pg)?;
            // A snapshot in the source's shape under way (a restart, say, before it published
            // a new key) still changes the target's key at its publish.
            let rekey = held
                || checkpoint::snapshot_under_way(&client, connector, &name, &schema.id)
                    .await
                    .map_err(pg)?;
            let mut ensured = ddl::ensure_table(&client, cfg, schema, &target, held, rekey)
                .await
                .map_err(pg)?;
            if ensured.rekey && lane.as_ref().is_some_and(|l| l.share != Share::Whole) {
                ensured.problems.push(ddl::rekey_refused(schema, &target));
            }
            if !ensured.problems.is_empty() {
                return Err(SinkError::Incompatible {
                    sink: SINK.into(),
                    table: schema.id.clone(),
                    target: target.to_string(),
                    problems: ensured.problems,
                });
            }
            if ensured.rekey && ensured.evolved.len() == 1 {
                // Only the key: a snapshot in the new shape may be under way already.
                rekey_only.push(schema.id.clone());
            } else if !ensured.evolved.is_empty() {
                warn!(sink = %name, table = %schema.id, target = %target, changes = %ensured.evolved.join("; "),
                    "the table changed at the source while the replicator was stopped: target changed to match");
                evolved.push(schema.id.clone());
            }
            tables.insert(
                schema.id.clone(),
                TableRt {
                    schema: schema.clone(),
                    shadow: shadow_table(&shadow_owner, &target),
                    columns: schema
                        .columns
                        .iter()
                        .map(|c| ident(&case(cfg, &c.name)))
                        .collect(),
                    keys: schema
                        .key_columns()
                        .map(|c| ident(&case(cfg, &c.name)))
                        .collect(),
                    target,
                    state: None,
                    ignoring_snapshot: false,
                    merge_chunks: false,
                    temp: format!("edfi_cdc_batch_{i}"),
                },
            );
        }
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&SETUP_LOCK])
            .await
            .map_err(pg)?;
        let spill = spill::Spill::open(
            &client,
            connector,
            &name,
            lane.as_ref().map(|l| l.id.clone()),
        )
        .await?;
        let mut cp = checkpoint::load(&client, connector, &name, schemas)
            .await
            .map_err(pg)?;
        // A target still on the source's old key whose table is not being snapshotted in the
        // new shape needs that snapshot (its publish changes the key).
        for id in rekey_only {
            let shape = schemas
                .iter()
                .find(|s| s.id == id)
                .expect("a configured table");
            if cp.shapes.get(&id) != Some(&crate::event::shape_digest(shape)) {
                evolved.push(id);
            }
        }
        // A table whose target just gained columns (or was widened) has rows without their
        // values; one reshaped otherwise needs its rows read again too. A lane leaves that to
        // the poller, which compares its own stored shapes at start (several lanes would each
        // ask again, restarting the snapshot).
        if lane.is_none() {
            super::request_changed(&client, connector, &name, schemas, &evolved, &mut cp)
                .await
                .map_err(pg)?;
        }
        if let Some(lane) = &mut lane {
            lane.loaded(
                checkpoint::load_positions(&client, connector, &name)
                    .await
                    .map_err(pg)?,
            );
        }
        for (id, state) in &cp.tables {
            if let Some(rt) = tables.get_mut(id) {
                rt.state = Some(state.clone());
                // Chunks of an earlier snapshot may be read again before the awaited one starts.
                rt.ignoring_snapshot = awaits_snapshot(state);
                rt.merge_chunks = state.phase == Phase::Snapshot;
            }
        }
        info!(sink = %name, tables = tables.len(), "staging sink ready");
        let sink = StagingSink {
            connector: connector.to_string(),
            name,
            lane,
            cfg: cfg.clone(),
            retry: retry.clone(),
            client: Some(client),
            temps: HashSet::new(),
            tables,
            ready: Compacted::default(),
            watermark: None,
            open: Compacted::default(),
            spill,
            snapshot_rows: HashMap::new(),
            requests: Requests::new(&cp.resnapshot_requests),
            progress: Progress {
                since: Instant::now(),
                events: 0,
                latencies: Vec::new(),
            },
            seen_version: cp.tables.values().map(|t| t.version).max().unwrap_or(0),
        };
        Ok((sink, cp))
    }

    /// A lane's stream positions as loaded at start.
    pub fn lane_positions(&self) -> crate::checkpoint::Positions {
        self.lane
            .as_ref()
            .map(|l| l.stored().clone())
            .unwrap_or_default()
    }

    /// Apply messages until the stream ends (the poller stopped) or a fatal error. Tables an
    /// operator asks to re-snapshot are passed to `resnapshots`.
    pub async fn run(
        mut self,
        mut input: Input,
        resnapshots: mpsc::UnboundedSender<TableId>,
        stop: CancellationToken,
    ) -> Result<(), SinkError> {
        self.requests.connect(resnapshots);
        let mut backoff = Backoff::new(&self.retry);
        loop {
            // While the stream is idle, look for operator requests every few seconds (a busy
            // sink sees them in each transaction).
            let msg = tokio::select! {
                m = input.recv() => m,
                _ = tokio::time::sleep(IDLE_REQUEST_CHECK) => {
                    self.check_requests().await;
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            let mut next = Some(msg);
            // Take whatever else is ready, up to the batch limit, so that a busy stream is
            // applied in fewer, larger transactions.
            while let Some(msg) = next.take() {
                let gaps = input.take_gaps();
                if !gaps.is_empty() {
                    self.stream_lost(&gaps, &mut backoff, &stop).await?;
                }
                match msg {
                    Message::Change(ev) => {
                        self.accept(ev);
                        if self.open.rows >= self.cfg.spill_rows {
                            self.spill(&mut backoff, &stop).await?;
                        }
                    }
                    Message::Watermark(w) => {
                        self.seen_version = self.seen_version.max(w.version);
                        self.ready.absorb(std::mem::take(&mut self.open));
                        if let (Some(lane), Some(p)) = (&mut self.lane, input.consumed()) {
                            lane.reach(p);
                        }
                        self.watermark = Some(w);
                        if self.ready.events >= self.cfg.max_batch_events {
                            break;
                        }
                    }
                    Message::Snapshot(marker) => {
                        self.flush(&mut backoff, &stop).await?;
                        // The marker's transaction covers the messages so far, unless some
                        // of a cycle, or snapshot rows of another table (a lane over
                        // per-table topics), are still held: then they are read again after
                        // a restart.
                        let others = self
                            .snapshot_rows
                            .iter()
                            .any(|(t, rows)| t != &marker.table().id && !rows.is_empty());
                        if let (Some(lane), Some(p), true) = (
                            &mut self.lane,
                            input.consumed(),
                            self.open.events == 0 && self.spill.rows() == 0 && !others,
                        ) {
                            lane.reach(p);
                        }
                        self.snapshot(marker, &mut backoff, &stop).await?;
                    }
                }
                next = input.try_recv();
            }
            self.flush(&mut backoff, &stop).await?;
        }
        self.flush(&mut backoff, &stop).await?;
        let unfinished = self.open.events as u64 + self.spill.events();
        if unfinished > 0 {
            info!(sink = SINK, events = unfinished, "stream ended mid-cycle: the unfinished cycle is not applied and will be read again");
        }
        Ok(())
    }

    /// The stream lost records it had acknowledged (see [`crate::stream::lane`]): any table of
    /// the lane may miss rows, so each one that has rows here awaits a re-snapshot from the
    /// latest version seen, recorded with the requests in one transaction. Until that snapshot
    /// is published the table's rows are not claimed, and earlier snapshots read again after a
    /// restart are not taken.
    async fn stream_lost(
        &mut self,
        gaps: &[crate::stream::lane::Gap],
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        super::report_gaps(&self.connector, &self.name, gaps, self.seen_version);
        // Every table with rows here is marked below, and tables without take no changes: what
        // is held is of no use (publishing a held snapshot could claim its missing rows).
        self.ready = Compacted::default();
        self.open = Compacted::default();
        let version = self.seen_version;
        let tables: Vec<TableId> = self
            .tables
            .iter()
            .filter(|(_, rt)| rt.state.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        let connector = self.connector.clone();
        self.with_retry(backoff, stop, |s| {
            let (connector, tables) = (connector.clone(), tables.clone());
            Box::pin(async move {
                s.client().await?;
                let client = s.client.as_mut().expect("connected above");
                let tx = begin_fenced(SINK, client, s.lane.as_ref(), &connector, None).await?;
                for id in &tables {
                    checkpoint::await_snapshot(&tx, &connector, &s.name, id, version)
                        .await
                        .map_err(pg)?;
                }
                s.spill.empty(&tx).await?;
                commit_fenced(SINK, tx, s.lane.as_mut()).await?;
                s.spill.emptied();
                Ok(())
            })
        })
        .await?;
        self.snapshot_rows.clear();
        for id in &tables {
            let rt = self.tables.get_mut(id).expect("listed above");
            let s = rt.state.as_mut().expect("listed with a state");
            s.await_snapshot(version);
            rt.ignoring_snapshot = true;
        }
        Ok(())
    }

    /// Look for re-snapshot requests outside a transaction. A failure here is left to the next
    /// transaction, which reads the requests too.
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
        let Some(rt) = self.tables.get(&ev.table.id) else {
            return;
        };
        let ev = ev.conform(&rt.schema);
        match route(&ev, rt.state.as_ref(), rt.ignoring_snapshot) {
            Route::SnapshotRow => self
                .snapshot_rows
                .entry(ev.table.id.clone())
                .or_default()
                .push(ev),
            Route::Change => self.open.add(ev),
            Route::Skip => {}
        }
    }

    /// The unfinished cycle outgrew `spill_rows`: apply what is committable, then write the
    /// cycle's changes so far to staging (see [`spill`]) and let go of them.
    async fn spill(
        &mut self,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        self.flush(backoff, stop).await?;
        let started = Instant::now();
        let rows = self.open.rows;
        if self.spill.rows() == 0 {
            info!(sink = %self.name, rows, spill_rows = self.cfg.spill_rows,
                "a large cycle: its changes are written to staging as they arrive and merged at its watermark");
        }
        let (connector, step) = (self.connector.clone(), format!("{} spill", self.name));
        crate::slow::watched(
            &connector,
            &step,
            self.with_retry(backoff, stop, |s| Box::pin(s.write_spill())),
        )
        .await?;
        self.open = Compacted::default();
        metrics::flush(
            &self.connector,
            SINK,
            "spill",
            started.elapsed().as_secs_f64(),
        );
        debug!(sink = %self.name, rows, held = self.spill.rows(), "changes of the unfinished cycle written to staging");
        Ok(())
    }

    async fn write_spill(&mut self) -> Result<(), SinkError> {
        self.client().await?;
        let client = self.client.as_mut().expect("connected above");
        for id in self.open.tables.keys() {
            if let Some(rt) = self.tables.get(id) {
                self.spill.prepare(client, rt).await?;
            }
        }
        let tx = client.transaction().await.map_err(pg)?;
        self.spill.settle(&tx).await?;
        self.spill.begin_write();
        let mut written = Vec::new();
        for (id, evs) in &self.open.tables {
            let Some(rt) = self.tables.get(id) else {
                continue;
            };
            let events: Vec<&ChangeEvent> = evs.values().collect();
            let seq = self.spill.write(&tx, rt, &events).await?;
            written.push((id.clone(), events.len() as u64, seq));
        }
        tx.commit().await.map_err(pg)?;
        self.spill.written(&written, self.open.events as u64);
        for (id, evs) in &self.open.tables {
            self.spill.add_times(id, evs.values());
        }
        Ok(())
    }

    async fn client(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(self.cfg.url.expose()).await?);
            self.temps.clear();
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
        F: for<'a> FnMut(&'a mut StagingSink) -> Attempt<'a>,
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

    /// Commit everything up to the last watermark, if there is anything new.
    async fn flush(
        &mut self,
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
        if self.ready.events == 0 && self.spill.rows() == 0 && !pending_swap && !behind {
            self.watermark = None;
            return Ok(());
        }
        // Rows of a table whose snapshot started in the cycle are dropped, not applied.
        let spilled: Vec<(TableId, u64)> = self
            .spill
            .per_table()
            .into_iter()
            .filter(|(id, _)| {
                self.tables[id]
                    .state
                    .as_ref()
                    .is_some_and(|s| s.phase != Phase::Snapshot)
            })
            .collect();
        let spilled_events = self.spill.events();
        let spilled_times = self.spill.times(&spilled);
        let started = Instant::now();
        let (connector, step) = (self.connector.clone(), format!("{} flush", self.name));
        let applied = crate::slow::watched(
            &connector,
            &step,
            self.with_retry(backoff, stop, |s| Box::pin(s.apply_watermark(w.clone()))),
        )
        .await;
        if let Err(SinkError::Rejected {
            sink,
            table,
            key,
            reason,
        }) = applied
        {
            // The merge statement names no row: find it by bisection (failure path only).
            let key = if key.is_empty() {
                self.find_rejected(&table).await
            } else {
                key
            };
            return Err(SinkError::Rejected {
                sink,
                table,
                key,
                reason,
            });
        }
        applied?;
        let seconds = started.elapsed().as_secs_f64();
        metrics::flush(&self.connector, SINK, "watermark", seconds);
        metrics::applied(&self.connector, &self.name, w.version, w.commit_time);
        let now = Utc::now();
        let batch = std::mem::take(&mut self.ready);
        for (table, rows) in &spilled {
            metrics::applied_events(&self.connector, SINK, &table.to_string(), *rows);
        }
        spilled_times.observe(&self.connector, SINK, now, &mut self.progress.latencies);
        for (table, evs) in &batch.tables {
            metrics::applied_events(&self.connector, SINK, &table.to_string(), evs.len() as u64);
            for ev in evs.values() {
                if let Some(t) = ev.commit_time {
                    let lat = (now - t).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    metrics::latency(&self.connector, SINK, lat);
                    self.progress.latencies.push(lat);
                }
            }
        }
        self.progress.events += batch.events as u64 + spilled_events;
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
                s.snapshot_into_target = false;
                metrics::table_applied(
                    &self.connector,
                    &self.name,
                    &rt.schema.id.to_string(),
                    w.version,
                );
            }
        }
        debug!(
            sink = SINK,
            version = w.version,
            events = batch.events as u64 + spilled_events,
            ms = (seconds * 1000.0).round(),
            "applied"
        );
        self.watermark = None;
        self.report(w.version);
        Ok(())
    }

    /// Every 5 s: one line with throughput and commit-to-staging latency.
    fn report(&mut self, version: i64) {
        let elapsed = self.progress.since.elapsed();
        if elapsed < Duration::from_secs(5) {
            return;
        }
        let lat = &mut self.progress.latencies;
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .copied()
        };
        info!(
            sink = SINK,
            version,
            events = self.progress.events,
            events_per_sec = (self.progress.events as f64 / elapsed.as_secs_f64()).round(),
            latency_p50_ms = pct(0.5).map(|s| (s * 1000.0).round()),
            latency_p99_ms = pct(0.99).map(|s| (s * 1000.0).round()),
            "replicating"
        );
        self.progress = Progress {
            since: Instant::now(),
            events: 0,
            latencies: Vec::new(),
        };
    }

    /// The key of the first row of `table`'s pending changes that the target rejects, found by
    /// applying halves of them in savepoints that are rolled back.
    async fn find_rejected(&mut self, table: &TableId) -> String {
        let unknown = || "unknown (the target rejected the batch as a whole)".to_string();
        let Some(batch) = self.ready.tables.get(table) else {
            return unknown();
        };
        if self.spill.has(table) {
            // Part of the batch is in a spill table, beyond the reach of the bisection.
            return unknown();
        }
        let events: Vec<ChangeEvent> = batch.values().cloned().collect();
        if self
            .connect_with_temps(std::slice::from_ref(table))
            .await
            .is_err()
        {
            return unknown();
        }
        let client = self.client.as_mut().expect("connected above");
        let rt = &self.tables[table];
        let dest = match rt.state.as_ref().map(|s| s.phase) {
            Some(Phase::PendingSwap) => rt.loading(),
            _ => &rt.target,
        };
        let Ok(mut tx) = client.transaction().await else {
            return unknown();
        };
        let (mut lo, mut hi) = (0, events.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let Ok(sp) = tx.savepoint("probe").await else {
                return unknown();
            };
            let half: Vec<&ChangeEvent> = events[lo..mid].iter().collect();
            let failed = apply_changes(&sp, rt, dest, &half).await.is_err();
            if sp.rollback().await.is_err() {
                return unknown();
            }
            if failed {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        events
            .get(lo)
            .map_or_else(unknown, |ev| describe_key(&rt.schema, &ev.key))
    }

    /// Connect if needed and make sure the temporary tables of `ids` exist on that connection.
    /// A reconnection forgets every temporary table, so it may only happen before they are
    /// created, never between them and the transaction that uses them.
    async fn connect_with_temps(&mut self, ids: &[TableId]) -> Result<(), SinkError> {
        self.client().await?;
        let missing: Vec<&TableRt> = ids
            .iter()
            .map(|id| &self.tables[id])
            .filter(|rt| !self.temps.contains(&rt.temp))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let sql: Vec<String> = missing
            .iter()
            .map(|rt| {
                // Dropped first: one left on this connection may have the table's earlier shape.
                format!(
                    "DROP TABLE IF EXISTS pg_temp.{temp}; \
                     CREATE TEMP TABLE {temp} ON COMMIT DELETE ROWS AS SELECT {cols} FROM {target} WITH NO DATA; \
                     ALTER TABLE {temp} ADD COLUMN {op} \"char\"",
                    temp = rt.temp,
                    cols = rt.columns.join(", "),
                    target = rt.target.sql(),
                    op = OP_COLUMN,
                )
            })
            .collect();
        let created: Vec<String> = missing.iter().map(|rt| rt.temp.clone()).collect();
        let client = self.client.as_ref().expect("connected above");
        client.batch_execute(&sql.join("; ")).await.map_err(pg)?;
        self.temps.extend(created);
        Ok(())
    }

    async fn apply_watermark(&mut self, w: Watermark) -> Result<(), SinkError> {
        let mut ids: Vec<TableId> = self.ready.tables.keys().cloned().collect();
        for (id, _) in self.spill.per_table() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        self.connect_with_temps(&ids).await?;
        let requests;
        {
            let connector = self.connector.clone();
            let client = self
                .client
                .as_mut()
                .expect("connected by connect_with_temps");
            let tx = begin_fenced(
                SINK,
                client,
                self.lane.as_ref(),
                &connector,
                Some(w.version),
            )
            .await?;
            if self.spill.rows() > 0
                && checkpoint::applied_version(&tx, &connector, &self.name)
                    .await
                    .map_err(pg)?
                    >= Some(w.version)
            {
                // An earlier attempt committed, unacknowledged: the spilled rows it merged are
                // gone (with a lane, its positions moved and it stopped as fenced above).
                drop(tx);
                self.spill.emptied();
                return Ok(());
            }
            for id in &ids {
                let rt = &self.tables[id];
                // A table being (re-)snapshotted takes no changes: they are in the snapshot, or
                // copies left by a poll cycle that failed before the table was reset.
                let dest = match rt.state.as_ref().map(|s| s.phase) {
                    Some(Phase::PendingSwap) => rt.loading(),
                    Some(Phase::Streaming) => &rt.target,
                    Some(Phase::Snapshot) | None => continue,
                };
                let events: Vec<&ChangeEvent> = self
                    .ready
                    .tables
                    .get(id)
                    .map(|t| t.values().collect())
                    .unwrap_or_default();
                if self.spill.has(id) {
                    self.spill.collect(&tx, rt, &events).await?;
                    merge_batch(&tx, rt, dest).await?;
                } else {
                    apply_changes(&tx, rt, dest, &events).await?;
                }
                // A lane over some partitions replaces only the keys of its snapshot when it
                // publishes it (below): a row deleted at the source during the snapshot is in
                // none, so its delete must reach the table itself too (where the key does not
                // read back to be found at the publish).
                let pending = rt.state.as_ref().map(|s| s.phase) == Some(Phase::PendingSwap);
                if pending && self.lane.as_ref().is_some_and(|l| l.share != Share::Whole) {
                    tx.batch_execute(&delete_deleted_sql(rt, &rt.target))
                        .await
                        .map_err(pg)?;
                }
            }
            for rt in self.tables.values() {
                if !held_back(rt.ignoring_snapshot, rt.state.as_ref())
                    && rt
                        .state
                        .as_ref()
                        .is_some_and(|s| s.phase == Phase::PendingSwap && s.version <= w.version)
                {
                    if rt.loading() == &rt.target {
                        info!(sink = %self.name, table = %rt.schema.id, target = %rt.target, version = w.version, "snapshot published (loaded into the target)");
                        continue;
                    }
                    let cols = rt.columns.join(", ");
                    // A lane over some partitions (Kafka) has the rows of those only in its
                    // shadow: it replaces those keys, after deleting the rows of its
                    // partitions the shadow does not hold (see `stale`).
                    let share = self.lane.as_ref().map_or(Share::Whole, |l| l.share);
                    if share != Share::Whole {
                        stale::delete_stale_rows(&tx, &connector, rt, share).await?;
                        let on: Vec<String> =
                            rt.keys.iter().map(|k| format!("t.{k} = s.{k}")).collect();
                        tx.batch_execute(&format!(
                            "DELETE FROM {t} AS t USING {s} AS s WHERE {on}",
                            t = rt.target.sql(),
                            s = rt.shadow.sql(),
                            on = on.join(" AND ")
                        ))
                        .await
                        .map_err(pg)?;
                    } else {
                        tx.batch_execute(&format!("DELETE FROM {}", rt.target.sql()))
                            .await
                            .map_err(pg)?;
                        // Emptied: the target can take the source's new primary key.
                        if let Some(old) = ddl::rekey(&tx, &self.cfg, &rt.schema, &rt.target)
                            .await
                            .map_err(pg)?
                        {
                            warn!(sink = %self.name, table = %rt.schema.id, target = %rt.target,
                                old_key = %old.join(", "), new_key = %rt.schema.key_columns().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                                "the target takes the source's new primary key with the re-snapshot");
                        }
                    }
                    tx.batch_execute(&format!(
                        "INSERT INTO {t} ({cols}) SELECT {cols} FROM {s}; DROP TABLE {s}",
                        t = rt.target.sql(),
                        s = rt.shadow.sql()
                    ))
                    .await
                    .map_err(pg)?;
                    info!(sink = %self.name, table = %rt.schema.id, target = %rt.target, version = w.version, "snapshot published");
                }
            }
            let held: Vec<&TableId> = self
                .tables
                .iter()
                .filter(|(_, rt)| held_back(rt.ignoring_snapshot, rt.state.as_ref()))
                .map(|(id, _)| id)
                .collect();
            checkpoint::advance(&tx, &connector, &self.name, &w, &held)
                .await
                .map_err(pg)?;
            requests = checkpoint::resnapshot_requests(&tx, &connector)
                .await
                .map_err(pg)?;
            self.spill.empty(&tx).await?;
            commit_fenced(SINK, tx, self.lane.as_mut()).await?;
            self.spill.emptied();
        }
        for t in requests {
            self.requests.forward(SINK, &t);
        }
        Ok(())
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
                self.seen_version = self.seen_version.max(version);
                // Rows still held for the table belong to an earlier snapshot of it.
                self.snapshot_rows.remove(&id);
                // A sink that already streams this table from at least `version` needs nothing,
                // unless the snapshot was asked for.
                rt.ignoring_snapshot = snapshot_not_needed(
                    requested || self.requests.contains(&id),
                    rt.state.as_ref(),
                    version,
                );
                if rt.ignoring_snapshot {
                    match rt.state.as_ref() {
                        Some(s) if awaits_snapshot(s) => {
                            info!(sink = SINK, table = %id, version, awaiting = s.version, "an earlier snapshot of the table, read again: waiting for the re-snapshot")
                        }
                        _ => {
                            info!(sink = SINK, table = %id, version, "snapshot not needed: this sink is already at or past its version")
                        }
                    }
                    return Ok(());
                }
                // Read in another shape than the target has: the table changed at the source.
                let shape = (*table != *rt.schema).then_some(table);
                let started = Instant::now();
                self.with_retry(backoff, stop, |s| {
                    Box::pin(s.start_snapshot(id.clone(), version, total_rows, shape.clone()))
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
                if let Some(shape) = shape {
                    rt.columns = shape
                        .columns
                        .iter()
                        .map(|c| ident(&case(&self.cfg, &c.name)))
                        .collect();
                    rt.keys = shape
                        .key_columns()
                        .map(|c| ident(&case(&self.cfg, &c.name)))
                        .collect();
                    rt.schema = shape;
                    self.temps.remove(&rt.temp);
                }
                rt.merge_chunks = false;
            }
            SnapshotMarker::Chunk { last_key, rows, .. } => {
                if rt.ignoring_snapshot
                    || rt.state.as_ref().is_none_or(|s| s.phase != Phase::Snapshot)
                {
                    self.snapshot_rows.remove(&id);
                    return Ok(());
                }
                let started = Instant::now();
                if let Some(held) = self.snapshot_rows.get_mut(&id) {
                    dedup_snapshot_rows(held);
                }
                let n = self.snapshot_rows.get(&id).map_or(0, Vec::len) as u64;
                self.with_retry(backoff, stop, |s| {
                    Box::pin(s.apply_chunk(id.clone(), last_key.clone(), rows))
                })
                .await?;
                metrics::flush(
                    &self.connector,
                    SINK,
                    "snapshot_chunk",
                    started.elapsed().as_secs_f64(),
                );
                metrics::snapshot_rows(&self.connector, SINK, &id.to_string(), n);
                self.snapshot_rows.remove(&id);
                let s = self
                    .tables
                    .get_mut(&id)
                    .and_then(|rt| rt.state.as_mut())
                    .expect("snapshot state");
                s.snapshot_last_key = Some(last_key);
                s.snapshot_rows = rows;
            }
            SnapshotMarker::Done { version, rows, .. } => {
                // Rows after the last chunk marker are copies of it, sent again by a poller
                // that retried its last step.
                self.snapshot_rows.remove(&id);
                if rt.ignoring_snapshot
                    || rt.state.as_ref().is_none_or(|s| s.phase != Phase::Snapshot)
                {
                    rt.ignoring_snapshot = false;
                    return Ok(());
                }
                let connector = self.connector.clone();
                self.with_retry(backoff, stop, |s| {
                    let connector = connector.clone();
                    let id = id.clone();
                    Box::pin(async move {
                        s.client().await?;
                        let client = s.client.as_mut().expect("connected above");
                        let tx =
                            begin_fenced(SINK, client, s.lane.as_ref(), &connector, None).await?;
                        checkpoint::snapshot_loaded(&tx, &connector, &s.name, &id, rows)
                            .await
                            .map_err(pg)?;
                        commit_fenced(SINK, tx, s.lane.as_mut()).await
                    })
                })
                .await?;
                info!(sink = SINK, table = %id, version, rows, "snapshot loaded; published at the next watermark");
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

    /// Start a snapshot of `id`: an empty shadow table and the snapshot's checkpoint. `shape`:
    /// the table changed at the source, and its target is first changed to hold it (see
    /// [`ddl::ensure_table`]); the snapshot then fills the new columns of every row.
    ///
    /// An initial load — the target is empty, or holds only rows of an earlier snapshot that
    /// loaded it and was never published — goes into the target itself: there are no rows for
    /// readers to keep seeing, and copying a whole table from a shadow at the publish wrote
    /// every row twice. A lane over some partitions (Kafka) shares the
    /// target with other lanes and always loads a shadow. The table's state says which, once
    /// committed.
    async fn start_snapshot(
        &mut self,
        id: TableId,
        version: i64,
        total: Option<u64>,
        shape: Option<Arc<TableSchema>>,
    ) -> Result<(), SinkError> {
        let connector = self.connector.clone();
        self.client().await?;
        let client = self.client.as_mut().expect("connected above");
        let rt = &self.tables[&id];
        // A second worker on the lane stops here, before it touches the shadow table another
        // worker may be loading.
        let tx = begin_fenced(SINK, client, self.lane.as_ref(), &connector, None).await?;
        if let Some(shape) = &shape {
            let mut ensured = ddl::ensure_table(&tx, &self.cfg, shape, &rt.target, true, true)
                .await
                .map_err(pg)?;
            if ensured.rekey && self.lane.as_ref().is_some_and(|l| l.share != Share::Whole) {
                ensured.problems.push(ddl::rekey_refused(shape, &rt.target));
            }
            if !ensured.problems.is_empty() {
                return Err(SinkError::Incompatible {
                    sink: SINK.into(),
                    table: id.clone(),
                    target: rt.target.to_string(),
                    problems: ensured.problems,
                });
            }
            warn!(sink = %self.name, table = %id, target = %rt.target,
                source_changes = %shape.changes_from(&rt.schema).join("; "),
                target_changes = %ensured.evolved.join("; "),
                "the table changed at the source: target changed to match, re-snapshotting it");
        }
        let whole = self.lane.as_ref().is_none_or(|l| l.share == Share::Whole);
        // Read from the checkpoint, not this process's copy of it: a table this process
        // loaded and published, then set to await a re-snapshot, holds published rows.
        let into_target = whole
            && (checkpoint::unpublished_load_into_target(&tx, &connector, &self.name, &id)
                .await
                .map_err(pg)?
                || tx
                    .query_one(
                        &format!("SELECT NOT EXISTS (SELECT 1 FROM {})", rt.target.sql()),
                        &[],
                    )
                    .await
                    .map_err(pg)?
                    .get::<_, bool>(0));
        let loading = if into_target {
            // Rows an earlier attempt loaded and never published: the source may have deleted
            // some since.
            tx.batch_execute(&format!(
                "DROP TABLE IF EXISTS {s}; DELETE FROM {t}",
                s = rt.shadow.sql(),
                t = rt.target.sql()
            ))
            .await
            .map_err(pg)?;
            &rt.target
        } else {
            tx.batch_execute(&format!(
                "DROP TABLE IF EXISTS {s}; CREATE TABLE {s} (LIKE {t} INCLUDING ALL)",
                s = rt.shadow.sql(),
                t = rt.target.sql()
            ))
            .await
            .map_err(pg)?;
            &rt.shadow
        };
        // A new primary key at the source: the table loaded has it (the target, when it is
        // loaded itself, is empty); else the target gets it at the publish.
        ddl::rekey(
            &tx,
            &self.cfg,
            shape.as_deref().unwrap_or(&rt.schema),
            loading,
        )
        .await
        .map_err(pg)?;
        checkpoint::begin_snapshot(
            &tx,
            &connector,
            &self.name,
            shape.as_deref().unwrap_or(&rt.schema),
            &rt.target.schema,
            &rt.target.name,
            version,
            total,
        )
        .await
        .map_err(pg)?;
        if into_target {
            checkpoint::snapshot_into_target(&tx, &connector, &self.name, &id)
                .await
                .map_err(pg)?;
        }
        commit_fenced(SINK, tx, self.lane.as_mut()).await?;
        if into_target {
            info!(sink = SINK, table = %id, target = %rt.target, "initial load: the snapshot goes into the target itself");
        }
        self.tables.get_mut(&id).expect("table exists").state = Some(TableCheckpoint {
            phase: Phase::Snapshot,
            version,
            commit_time: None,
            snapshot_last_key: None,
            snapshot_rows: 0,
            snapshot_total_rows: total,
            snapshot_started_at: Some(Utc::now()),
            snapshot_into_target: into_target,
        });
        Ok(())
    }

    async fn apply_chunk(
        &mut self,
        id: TableId,
        last_key: Vec<crate::event::Value>,
        rows: u64,
    ) -> Result<(), SinkError> {
        let connector = self.connector.clone();
        let already = self.tables[&id]
            .state
            .as_ref()
            .map_or(0, |s| s.snapshot_rows);
        // Rows this sink already holds are re-sent only when the poller resumed from another
        // sink's earlier position or read a chunk again; then upsert, else load straight into
        // the shadow table.
        let chunk: &[ChangeEvent] = self.snapshot_rows.get(&id).map_or(&[], Vec::as_slice);
        let overlap = self.tables[&id].merge_chunks || already + chunk.len() as u64 != rows;
        let temps = if overlap { vec![id.clone()] } else { vec![] };
        self.connect_with_temps(&temps).await?;
        let client = self.client.as_mut().expect("connected above");
        let rt = &self.tables[&id];
        let tx = begin_fenced(SINK, client, self.lane.as_ref(), &connector, None).await?;
        let events: Vec<&ChangeEvent> = self
            .snapshot_rows
            .get(&id)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .collect();
        if overlap {
            apply_changes(&tx, rt, rt.loading(), &events).await?;
        } else {
            copy_rows(
                &tx,
                rt,
                &format!(
                    "COPY {} ({}) FROM STDIN",
                    rt.loading().sql(),
                    rt.columns.join(", ")
                ),
                &events,
                After::Nothing,
            )
            .await?;
        }
        checkpoint::snapshot_progress(&tx, &connector, &self.name, &id, &last_key, rows)
            .await
            .map_err(pg)?;
        commit_fenced(SINK, tx, self.lane.as_mut()).await?;
        self.tables.get_mut(&id).expect("table exists").merge_chunks = overlap;
        Ok(())
    }
}

/// What a COPY row carries after the table's columns.
#[derive(Clone, Copy, PartialEq)]
enum After {
    Nothing,
    /// [`OP_COLUMN`].
    Op,
    /// [`OP_COLUMN`] and the change's version (a spill table's rows).
    OpAndVersion,
}

/// COPY `events` with `sql`; a row the target rejects becomes [`SinkError::Rejected`] naming
/// its key.
async fn copy_rows(
    tx: &Transaction<'_>,
    rt: &TableRt,
    sql: &str,
    events: &[&ChangeEvent],
    after: After,
) -> Result<(), SinkError> {
    let mut buf = String::with_capacity(64 * 1024);
    let copy = tx.copy_in::<_, Bytes>(sql).await.map_err(pg)?;
    futures_util::pin_mut!(copy);
    let nulls: Vec<crate::event::Value> = vec![crate::event::Value::Null; rt.schema.columns.len()];
    for ev in events {
        let row: Vec<crate::event::Value>;
        let values: &[crate::event::Value] = match &ev.after {
            Some(after) => after,
            None => {
                let mut r = nulls.clone();
                for (&k, v) in rt.schema.key.iter().zip(&ev.key) {
                    r[k] = v.clone();
                }
                row = r;
                &row
            }
        };
        if after == After::Nothing {
            copy::push_row(&mut buf, values);
        } else {
            let op =
                crate::event::Value::String(if ev.op == Op::Delete { "d" } else { "u" }.into());
            let trailer = [op, crate::event::Value::Int(ev.version)];
            let n = if after == After::Op { 1 } else { 2 };
            copy::push_row(&mut buf, values.iter().chain(&trailer[..n]));
        }
        if buf.len() >= 64 * 1024 {
            copy.send(Bytes::from(std::mem::take(&mut buf)))
                .await
                .map_err(|e| rejected(rt, events, &e))?;
        }
    }
    if !buf.is_empty() {
        copy.send(Bytes::from(buf))
            .await
            .map_err(|e| rejected(rt, events, &e))?;
    }
    copy.finish().await.map_err(|e| rejected(rt, events, &e))?;
    Ok(())
}

/// Map a COPY failure to the row it names.
fn rejected(rt: &TableRt, events: &[&ChangeEvent], e: &tokio_postgres::Error) -> SinkError {
    let Some((message, line, column)) = copy_failure(e) else {
        return pg_owned(e);
    };
    let key = line
        .and_then(|n| events.get(n.wrapping_sub(1)))
        .map_or_else(
            || "unknown".to_string(),
            |ev| describe_key(&rt.schema, &ev.key),
        );
    SinkError::Rejected {
        sink: SINK.into(),
        table: rt.schema.id.clone(),
        key,
        reason: format!("{message} (target {} column {column})", rt.target),
    }
}

fn pg_owned(e: &tokio_postgres::Error) -> SinkError {
    SinkError::from_pg(SINK, e)
}

/// Delete from `dest` the keys the batch in the table's temporary table deletes.
fn delete_deleted_sql(rt: &TableRt, dest: &PgName) -> String {
    let on: Vec<String> = rt.keys.iter().map(|k| format!("t.{k} = b.{k}")).collect();
    format!(
        "DELETE FROM {dest} AS t USING {temp} AS b WHERE b.{OP_COLUMN} = 'd' AND {on}",
        dest = dest.sql(),
        temp = rt.temp,
        on = on.join(" AND "),
    )
}

/// Apply collapsed changes to `dest` set-based: COPY into the table's temporary table, delete
/// the deleted keys, upsert the rest.
async fn apply_changes(
    tx: &Transaction<'_>,
    rt: &TableRt,
    dest: &PgName,
    events: &[&ChangeEvent],
) -> Result<(), SinkError> {
    if events.is_empty() {
        return Ok(());
    }
    let cols = rt.columns.join(", ");
    copy_rows(
        tx,
        rt,
        &format!("COPY {} ({cols}, {OP_COLUMN}) FROM STDIN", rt.temp),
        events,
        After::Op,
    )
    .await?;
    merge_batch(tx, rt, dest).await
}

/// Merge the table's temporary batch table (one row per key) into `dest`: delete the deleted
/// keys, upsert the rest.
async fn merge_batch(tx: &Transaction<'_>, rt: &TableRt, dest: &PgName) -> Result<(), SinkError> {
    let cols = rt.columns.join(", ");
    let non_keys: Vec<&String> = rt.columns.iter().filter(|c| !rt.keys.contains(c)).collect();
    let conflict = if non_keys.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!(
            "DO UPDATE SET {}",
            non_keys
                .iter()
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let sql = format!(
        "{deletes}; \
         INSERT INTO {dest} ({cols}) SELECT {cols} FROM {temp} WHERE {OP_COLUMN} <> 'd' \
         ON CONFLICT ({keys}) {conflict}",
        deletes = delete_deleted_sql(rt, dest),
        dest = dest.sql(),
        temp = rt.temp,
        keys = rt.keys.join(", "),
    );
    tx.batch_execute(&sql).await.map_err(|e| {
        let data_error = e
            .as_db_error()
            .is_some_and(|db| ["22", "23"].contains(&&db.code().code()[..2]));
        match pg_owned(&e) {
            SinkError::Fatal { message, .. } if data_error => SinkError::Rejected {
                sink: SINK.into(),
                table: rt.schema.id.clone(),
                key: String::new(),
                reason: format!("{message} (merging into {dest})"),
            },
            other => other,
        }
    })?;
    Ok(())
}
