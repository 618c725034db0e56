//! Sinks apply events to a target up to a watermark — never half a cycle — and store their
//! checkpoint in the target in the same transaction as the data (see `checkpoint.rs`):
//! `staging` (Aurora PostgreSQL, every cycle) and `redshift` (micro-batches through S3 and
//! COPY, or COPY FROM STDIN).

pub mod names;
pub mod pg;
pub mod redshift;
pub mod staging;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::checkpoint::{self, key_to_json, Phase, Positions, TableCheckpoint};
use crate::event::{ChangeEvent, Op, TableId, Value};
use crate::metrics;
use crate::retry::Backoff;
use crate::stream::row_hash;

/// Advisory lock key serialising target set-up on PostgreSQL (any value unlikely to clash;
/// "edficdc" in hex).
pub const SETUP_LOCK: i64 = 0x65_64_66_69_63_64_63;

/// Source commit times of rows a sink wrote out of memory (spilled), counted per whole second:
/// their commit-to-target latency is observed when they are applied, without a time per row.
#[derive(Default, Clone)]
pub struct CommitSeconds(std::collections::BTreeMap<i64, u64>);

impl CommitSeconds {
    pub fn add<'a>(&mut self, events: impl IntoIterator<Item = &'a ChangeEvent>) {
        for t in events.into_iter().filter_map(|ev| ev.commit_time) {
            *self.0.entry(t.timestamp()).or_default() += 1;
        }
    }

    pub fn absorb(&mut self, other: CommitSeconds) {
        for (second, n) in other.0 {
            *self.0.entry(second).or_default() += n;
        }
    }

    /// The rows were committed at the target now: into the latency histogram, and their
    /// latencies (seconds, one per row) into `into`, for the sink's log.
    pub fn observe(
        &self,
        connector: &str,
        sink: &str,
        now: chrono::DateTime<chrono::Utc>,
        into: &mut Vec<f64>,
    ) {
        let now = now.timestamp_micros() as f64 / 1e6;
        for (second, n) in &self.0 {
            let latency = (now - *second as f64).max(0.0);
            for _ in 0..*n {
                metrics::latency(connector, sink, latency);
                into.push(latency);
            }
        }
    }
}

/// Changes collapsed to the last change per key and table, with their count before collapsing
/// and an estimate of their size as CSV.
///
/// The last change of a key is the one of the highest version, the later arrival among equal
/// versions (one source transaction). In a stream they arrive in that order, except a change
/// of a cycle the poller gave up on: Kinesis may store one of its calls after the cycle was
/// sent again (a killed poller cannot wait for its calls in flight), and that older change
/// must not overwrite the newer one.
#[derive(Default)]
pub struct Compacted {
    pub tables: HashMap<TableId, HashMap<String, ChangeEvent>>,
    /// Events added (before collapsing).
    pub events: usize,
    /// Distinct keys held.
    pub rows: usize,
    /// Estimated bytes of the held rows.
    pub bytes: usize,
}

/// Rough CSV size of an event's row.
fn approx_bytes(ev: &ChangeEvent) -> usize {
    let values = ev.after.as_deref().unwrap_or(&ev.key);
    values
        .iter()
        .map(|v| match v {
            Value::String(s) | Value::Decimal(s) => s.len() + 3,
            Value::Bytes(b) => 2 * b.len() + 3,
            Value::Uuid(_) => 37,
            Value::Timestamp(_) | Value::TimestampTz(_) => 30,
            _ => 9,
        })
        .sum::<usize>()
        + 4
}

impl Compacted {
    pub fn add(&mut self, ev: ChangeEvent) {
        let key = key_to_json(&ev.key).to_string();
        self.events += 1;
        self.bytes += approx_bytes(&ev);
        let table = self.tables.entry(ev.table.id.clone()).or_default();
        match table.entry(key) {
            Entry::Occupied(mut held) => {
                if ev.version >= held.get().version {
                    let old = held.insert(ev);
                    self.bytes = self.bytes.saturating_sub(approx_bytes(&old));
                } else {
                    self.bytes = self.bytes.saturating_sub(approx_bytes(&ev));
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(ev);
                self.rows += 1;
            }
        }
    }

    /// Add `other`'s changes after this one's.
    pub fn absorb(&mut self, other: Compacted) {
        let events = self.events + other.events;
        for evs in other.tables.into_values() {
            for ev in evs.into_values() {
                self.add(ev);
            }
        }
        self.events = events;
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Let go of `table`'s changes (a snapshot that covers them has started).
    pub fn drop_table(&mut self, table: &TableId) {
        if let Some(evs) = self.tables.remove(table) {
            self.rows -= evs.len();
            self.events = self.events.saturating_sub(evs.len());
            self.bytes = self
                .bytes
                .saturating_sub(evs.values().map(approx_bytes).sum());
        }
    }
}

/// Keep each key of a snapshot's rows once, its last copy, in arrival order. A poller that
/// lost its source connection mid-chunk sends the chunk again from its first key, so the rows it
/// had already sent arrive twice: they are the same rows, and loading both would break the
/// target's key (PostgreSQL) or duplicate them (Redshift, which does not enforce keys).
pub fn dedup_snapshot_rows(events: &mut Vec<ChangeEvent>) {
    let mut seen = HashSet::with_capacity(events.len());
    let keep: Vec<bool> = events
        .iter()
        .rev()
        .map(|ev| seen.insert(key_to_json(&ev.key).to_string()))
        .collect();
    let mut keep = keep.into_iter().rev();
    events.retain(|_| keep.next().expect("one flag per row"));
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink} sink: database error: {message}")]
    Transient { sink: String, message: String },
    #[error("{sink} sink rejected a row of {table} (key {key}): {reason}. Nothing of this transaction was applied and the sink stopped; widen the target column or fix the source row, then restart")]
    Rejected {
        sink: String,
        table: TableId,
        key: String,
        reason: String,
    },
    #[error("{sink} sink: target table {target} cannot hold source table {table}:\n  {}", .problems.join("\n  "))]
    Incompatible {
        sink: String,
        table: TableId,
        target: String,
        problems: Vec<String>,
    },
    #[error("{sink} sink: {message}")]
    Fatal { sink: String, message: String },
    #[error("{sink} sink: another worker now applies lane {lane} (its stored stream positions moved); this worker's copy stops")]
    Fenced { sink: String, lane: String },
}

impl SinkError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, SinkError::Transient { .. })
    }

    /// Classify a PostgreSQL error: connection, serialization (Redshift's 1023 included),
    /// resource and shutdown faults are transient; everything else is fatal.
    pub fn from_pg(sink: &str, e: &tokio_postgres::Error) -> SinkError {
        let transient = match e.as_db_error() {
            None => true,
            Some(db) => {
                let code = db.code().code();
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || ["40001", "40P01", "55P03"].contains(&code)
                    || redshift_serialization_conflict(db)
            }
        };
        let message = match e.as_db_error() {
            Some(db) => match db.detail() {
                Some(d) if d.starts_with("Failing row contains") && !row_values_logged() => {
                    format!(
                        "{} (the row's values are left out of the log; {ROW_VALUES_ENV}=1 shows them)",
                        db.message()
                    )
                }
                Some(d) => format!("{} ({d})", db.message()),
                None => db.message().to_string(),
            },
            None => e.to_string(),
        };
        if transient {
            SinkError::Transient {
                sink: sink.into(),
                message,
            }
        } else {
            SinkError::Fatal {
                sink: sink.into(),
                message,
            }
        }
    }
}

/// Set to `1` to let PostgreSQL's `Failing row contains (…)` (every value of a rejected row,
/// student data) into errors and the log.
pub const ROW_VALUES_ENV: &str = "EDFI_CDC_LOG_ROW_VALUES";

fn row_values_logged() -> bool {
    std::env::var(ROW_VALUES_ENV).is_ok_and(|v| v == "1")
}

/// Redshift's serializable isolation violation (`ERROR: 1023 DETAIL: Serializable isolation
/// violation on table …`), which it may report as an internal error (XX000): two transactions
/// conflicted, and the one that failed succeeds when run again.
fn redshift_serialization_conflict(db: &tokio_postgres::error::DbError) -> bool {
    db.message().trim_start().starts_with("1023")
        || db.message().contains("Serializable isolation violation")
        || db
            .detail()
            .is_some_and(|d| d.contains("Serializable isolation violation"))
}

/// Where a sink puts an incoming event.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// A row of the table's snapshot in progress.
    SnapshotRow,
    /// A change after the table's checkpoint: buffer it until its watermark.
    Change,
    /// Already held, covered by a snapshot, or of a snapshot this sink does not take.
    Skip,
}

/// Route `ev` for a table at `state` (`ignoring_snapshot`: the sink does not take the snapshot
/// in progress). Changes of a table being snapshotted are skipped: the snapshot has them.
pub fn route(ev: &ChangeEvent, state: Option<&TableCheckpoint>, ignoring_snapshot: bool) -> Route {
    match (ev.op, state) {
        (Op::Read, Some(s)) if s.phase == Phase::Snapshot && !ignoring_snapshot => {
            Route::SnapshotRow
        }
        (Op::Read, _) => Route::Skip,
        (_, Some(s)) if s.phase != Phase::Snapshot && ev.version > s.version => Route::Change,
        _ => Route::Skip,
    }
}

/// Whether a snapshot starting at `version` is of no use to a sink at `state`: it already
/// streams the table from at least that version and no operator asked for a re-snapshot, or
/// it awaits a later snapshot (this one is read again from before the stream lost records).
pub fn snapshot_not_needed(requested: bool, state: Option<&TableCheckpoint>, version: i64) -> bool {
    match state {
        Some(s) if awaits_snapshot(s) => version < s.version,
        Some(s) => !requested && s.phase != Phase::Snapshot && s.version >= version,
        None => false,
    }
}

/// A table a sink keeps at its checkpoint: it does not take the snapshot of the table in
/// progress (it holds the table from that snapshot's version on), and the poller sends none of
/// the table's changes until the snapshot ends (see [`checkpoint::advance`]).
pub fn held_back(ignoring_snapshot: bool, state: Option<&TableCheckpoint>) -> bool {
    ignoring_snapshot && state.is_some_and(|s| s.phase != Phase::Snapshot)
}

/// The table's rows are not claimed until a snapshot from `state.version` on is published
/// (see [`checkpoint::await_snapshot`]).
pub fn awaits_snapshot(state: &TableCheckpoint) -> bool {
    state.phase == Phase::Snapshot && state.snapshot_started_at.is_none()
}

/// Re-snapshot requests an operator made (`edfi-cdc resnapshot`) that a sink has seen: each is
/// passed to the poller once. The request row itself is deleted in the transaction that starts
/// the snapshot, so a crash cannot lose it.
pub struct Requests {
    seen: HashSet<TableId>,
    poller: Option<mpsc::UnboundedSender<TableId>>,
}

impl Requests {
    pub fn new(stored: &[TableId]) -> Requests {
        Requests {
            seen: stored.iter().cloned().collect(),
            poller: None,
        }
    }

    /// Where requests go from now on.
    pub fn connect(&mut self, poller: mpsc::UnboundedSender<TableId>) {
        self.poller = Some(poller);
    }

    /// Pass a request to the poller, unless it was passed already.
    pub fn forward(&mut self, sink: &str, table: &TableId) {
        if self.seen.insert(table.clone()) {
            info!(sink, table = %table, "re-snapshot requested by an operator");
            if let Some(tx) = &self.poller {
                tx.send(table.clone()).ok();
            }
        }
    }

    pub fn contains(&self, table: &TableId) -> bool {
        self.seen.contains(table)
    }

    /// The snapshot of `table` started: the request is done.
    pub fn done(&mut self, table: &TableId) {
        self.seen.remove(table);
    }
}

/// A sink instance that applies one lane of a Kafka or Kinesis stream (see `stream::lane`):
/// its checkpoint is kept under its own sink name, `{sink}@{lane}`, and every transaction
/// stores the lane's stream positions — after checking that no other worker moved them.
#[derive(Clone)]
pub struct Lane {
    pub id: String,
    worker: String,
    /// As stored in the target.
    stored: Positions,
    /// Who stored each of them: this lane's first transaction takes them over from those
    /// workers, and any other worker's later transaction is fenced.
    holders: checkpoint::Holders,
    /// Where the next transaction's messages reach.
    next: Positions,
    /// Told the positions after each commit (the Kafka offset hint).
    committed: Option<mpsc::UnboundedSender<Positions>>,
    /// Set by a transaction that failed with a transient fault (it is retried), cleared by one
    /// that commits: a worker whose lease keeps renewing is not ready meanwhile.
    faulty: Arc<AtomicBool>,
    /// The rows of each table this lane receives.
    pub share: Share,
}

/// The rows of each table a lane receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Every partition of the stream (Kinesis): every row. Publishing a snapshot replaces the
    /// whole table.
    Whole,
    /// Partition `index` of each table's topic of `of` partitions (Kafka): the rows whose
    /// [`row_hash`] is `index` modulo `of`, as the producer places them. Publishing a snapshot
    /// replaces those rows only.
    Partition { index: u32, of: u32 },
}

impl Share {
    /// Whether this share holds the row of `table` with key `key`.
    pub fn holds(&self, table: &TableId, key: &[Value]) -> bool {
        match *self {
            Share::Whole => true,
            Share::Partition { index, of } => {
                row_hash(table, key) % u128::from(of) == u128::from(index)
            }
        }
    }
}

impl Lane {
    pub fn new(
        id: impl Into<String>,
        worker: impl Into<String>,
        committed: Option<mpsc::UnboundedSender<Positions>>,
    ) -> Lane {
        Lane {
            id: id.into(),
            worker: worker.into(),
            stored: Positions::new(),
            holders: checkpoint::Holders::new(),
            next: Positions::new(),
            committed,
            faulty: Arc::default(),
            share: Share::Whole,
        }
    }

    /// A lane whose faults and commits set and clear `faulty`.
    pub fn with_faults(self, faulty: Arc<AtomicBool>) -> Lane {
        Lane { faulty, ..self }
    }

    /// A transaction of the lane failed with a transient fault and is retried.
    pub fn faulted(&self) {
        self.faulty.store(true, Ordering::Relaxed);
    }

    /// A lane that receives `share` of each table's rows.
    pub fn with_share(self, share: Share) -> Lane {
        Lane { share, ..self }
    }

    /// The checkpoint name of sink `kind`'s copy for this lane.
    pub fn sink_name(&self, kind: &str) -> String {
        format!("{kind}@{}", self.id)
    }

    /// The positions loaded from the target at start, and who stored them.
    pub fn loaded(&mut self, (stored, holders): (Positions, checkpoint::Holders)) {
        self.next = stored.clone();
        self.stored = stored;
        self.holders = holders;
    }

    pub fn stored(&self) -> &Positions {
        &self.stored
    }

    /// The next transaction covers the messages up to `positions`.
    pub fn reach(&mut self, positions: Positions) {
        self.next = positions;
    }

    /// Store the positions in `tx`; [`SinkError::Fenced`] if another worker moved them.
    pub async fn store(
        &self,
        tx: &impl tokio_postgres::GenericClient,
        kind: &str,
        connector: &str,
        version: Option<i64>,
    ) -> Result<(), SinkError> {
        let ours = checkpoint::store_positions(
            tx,
            connector,
            &self.sink_name(kind),
            &self.stored,
            &self.holders,
            &self.next,
            version,
            &self.worker,
        )
        .await
        .map_err(|e| SinkError::from_pg(kind, &e))?;
        if ours {
            Ok(())
        } else {
            Err(SinkError::Fenced {
                sink: kind.into(),
                lane: self.id.clone(),
            })
        }
    }

    /// The transaction that stored the positions committed.
    pub fn stored_now(&mut self) {
        self.faulty.store(false, Ordering::Relaxed);
        for part in self.next.keys() {
            self.holders.insert(part.clone(), self.worker.clone());
        }
        if self.stored != self.next {
            self.stored = self.next.clone();
            if let Some(tx) = &self.committed {
                tx.send(self.stored.clone()).ok();
            }
        }
    }
}

/// After a transient fault of a sink (its `reset` for [`retry`]): the next attempt opens a fresh
/// connection, and its lane, if any, is marked faulty until a transaction commits.
pub(crate) fn after_fault(client: &mut Option<tokio_postgres::Client>, lane: Option<&Lane>) {
    *client = None;
    if let Some(lane) = lane {
        lane.faulted();
    }
}

/// Begin a transaction of sink `kind` on `client`, fenced first: with a lane, its positions are
/// stored (and so checked) before anything is written, so a worker that lost the lane stops
/// before it touches data or shadow tables.
pub async fn begin_fenced<'a>(
    kind: &str,
    client: &'a mut tokio_postgres::Client,
    lane: Option<&Lane>,
    connector: &str,
    version: Option<i64>,
) -> Result<tokio_postgres::Transaction<'a>, SinkError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| SinkError::from_pg(kind, &e))?;
    if let Some(lane) = lane {
        lane.store(&tx, kind, connector, version).await?;
    }
    Ok(tx)
}

/// Commit a transaction begun with [`begin_fenced`]; the lane's positions are then stored.
pub async fn commit_fenced(
    kind: &str,
    tx: tokio_postgres::Transaction<'_>,
    lane: Option<&mut Lane>,
) -> Result<(), SinkError> {
    tx.commit()
        .await
        .map_err(|e| SinkError::from_pg(kind, &e))?;
    if let Some(lane) = lane {
        lane.stored_now();
    }
    Ok(())
}

/// Log and count the records a lane's stream lost (`version`: the latest the lane saw).
pub fn report_gaps(connector: &str, sink: &str, gaps: &[crate::stream::lane::Gap], version: i64) {
    for g in gaps {
        tracing::error!(sink, part = %g.part, position = %g.position, sent = g.sent,
            received = g.received, version,
            "the stream lost records it had acknowledged: re-snapshotting every table of the lane");
        crate::metrics::stream_lost(connector, sink, &g.part, g.sent - g.received);
    }
}

/// A unit of sink work that may be retried (it runs in its own transaction).
pub type Attempt<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// Run `op` on `sink`, retrying transient faults: `reset` drops the broken connection, then
/// `backoff` waits (or gives up). Errors are counted by kind.
pub async fn retry<S, F>(
    name: &str,
    sink: &mut S,
    backoff: &mut Backoff,
    stop: &CancellationToken,
    reset: fn(&mut S),
    mut op: F,
) -> Result<(), SinkError>
where
    F: for<'a> FnMut(&'a mut S) -> Attempt<'a>,
{
    loop {
        match op(sink).await {
            Ok(()) => {
                backoff.reset();
                return Ok(());
            }
            Err(e) if e.is_retriable() => {
                metrics::error(name, "transient");
                reset(sink);
                if !backoff.pause(name, &e, stop).await {
                    return Err(e);
                }
            }
            Err(e) => {
                metrics::error(name, "fatal");
                return Err(e);
            }
        }
    }
}

/// A data error of a COPY: the server's message, the 1-based line and the column it names
/// (`CONTEXT: COPY t, line N, column c: …`). `None` for other errors.
pub fn copy_failure(e: &tokio_postgres::Error) -> Option<(String, Option<usize>, String)> {
    let db = e.as_db_error()?;
    if !["22", "23", "XX"].contains(&&db.code().code()[..2]) || redshift_serialization_conflict(db)
    {
        return None;
    }
    let context = db.where_().unwrap_or_default();
    let line = context
        .split("line ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    let column = context
        .split("column ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .unwrap_or("?")
        .to_string();
    Some((db.message().to_string(), line, column))
}

/// Ask for a re-snapshot of every table a sink holds that changed at the source while it was
/// not running: its target had to change at open (`evolved`), or the shape its last snapshot
/// was read in differs from the catalog's. The requests join `cp`'s, so the sink takes the
/// snapshots they bring even where its checkpoint is at their version.
pub(crate) async fn request_changed(
    client: &impl tokio_postgres::GenericClient,
    connector: &str,
    sink: &str,
    schemas: &[std::sync::Arc<crate::event::TableSchema>],
    evolved: &[TableId],
    cp: &mut crate::checkpoint::SinkCheckpoint,
) -> Result<(), tokio_postgres::Error> {
    for schema in schemas {
        let id = &schema.id;
        let reshaped = cp
            .shapes
            .get(id)
            .is_some_and(|s| *s != crate::event::shape_digest(schema));
        if !evolved.contains(id) && !reshaped {
            continue;
        }
        if reshaped && !evolved.contains(id) {
            tracing::warn!(sink, table = %id, "the table changed at the source while the replicator was stopped: re-snapshotting it");
        }
        crate::metrics::schema_change(connector, &id.to_string(), sink);
        crate::checkpoint::request_resnapshot(client, connector, id).await?;
        if !cp.resnapshot_requests.contains(id) {
            cp.resnapshot_requests.push(id.clone());
        }
    }
    Ok(())
}

/// The primary key a target table declares: its constraint's name and its columns in key
/// order; `None` without one. The same query on PostgreSQL (staging, the Redshift stand-in)
/// and on Redshift, which does not enforce the key but whose planner trusts it.
pub(crate) async fn declared_key(
    client: &impl tokio_postgres::GenericClient,
    table: &names::PgName,
) -> Result<Option<(String, Vec<String>)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT tc.constraint_name::text, kcu.column_name::text \
             FROM information_schema.table_constraints tc \
             JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name \
             AND kcu.table_schema = tc.table_schema AND kcu.table_name = tc.table_name \
             WHERE tc.table_schema = $1 AND tc.table_name = $2 AND tc.constraint_type = 'PRIMARY KEY' \
             ORDER BY kcu.ordinal_position",
            &[&table.schema, &table.name],
        )
        .await?;
    Ok(rows
        .first()
        .map(|r| (r.get(0), rows.iter().map(|r| r.get(1)).collect())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::every_type_schema;

    fn state(phase: Phase, version: i64) -> TableCheckpoint {
        TableCheckpoint {
            phase,
            version,
            commit_time: None,
            snapshot_last_key: None,
            snapshot_rows: 0,
            snapshot_total_rows: None,
            snapshot_started_at: None,
            snapshot_into_target: false,
        }
    }

    fn ev(op: Op, version: i64) -> ChangeEvent {
        ChangeEvent {
            table: every_type_schema(),
            op,
            key: vec![Value::Int(1)],
            after: None,
            version,
            commit_time: None,
        }
    }

    #[test]
    fn events_go_where_the_table_state_says() {
        let streaming = state(Phase::Streaming, 10);
        let snapshot = state(Phase::Snapshot, 10);
        let pending = state(Phase::PendingSwap, 10);
        assert_eq!(
            route(&ev(Op::Update, 11), Some(&streaming), false),
            Route::Change
        );
        assert_eq!(
            route(&ev(Op::Update, 10), Some(&streaming), false),
            Route::Skip,
            "already held"
        );
        assert_eq!(
            route(&ev(Op::Delete, 12), Some(&pending), false),
            Route::Change
        );
        assert_eq!(
            route(&ev(Op::Update, 12), Some(&snapshot), false),
            Route::Skip,
            "in the snapshot"
        );
        assert_eq!(
            route(&ev(Op::Read, 10), Some(&snapshot), false),
            Route::SnapshotRow
        );
        assert_eq!(route(&ev(Op::Read, 10), Some(&snapshot), true), Route::Skip);
        assert_eq!(
            route(&ev(Op::Read, 10), Some(&streaming), false),
            Route::Skip
        );
        assert_eq!(route(&ev(Op::Create, 1), None, false), Route::Skip);
        assert!(snapshot_not_needed(false, Some(&streaming), 10));
        assert!(
            !snapshot_not_needed(true, Some(&streaming), 10),
            "an operator asked"
        );
        assert!(!snapshot_not_needed(false, Some(&streaming), 11));
        assert!(!snapshot_not_needed(false, None, 1));
        let awaiting = state(Phase::Snapshot, 10);
        assert!(
            snapshot_not_needed(false, Some(&awaiting), 9),
            "an earlier one"
        );
        assert!(!snapshot_not_needed(false, Some(&awaiting), 10));
        let loading = TableCheckpoint {
            snapshot_started_at: Some(chrono::Utc::now()),
            snapshot_into_target: false,
            ..state(Phase::Snapshot, 10)
        };
        assert!(!snapshot_not_needed(false, Some(&loading), 9));
    }

    #[test]
    fn a_keys_change_of_the_highest_version_is_kept_whatever_arrives_after_it() {
        let change = |v: i64, value: i64| ChangeEvent {
            after: Some(vec![Value::Int(1), Value::Int(value)]),
            ..ev(Op::Update, v)
        };
        let kept = |c: &Compacted| {
            let evs: Vec<&ChangeEvent> = c.tables.values().flat_map(|t| t.values()).collect();
            assert_eq!(evs.len(), 1);
            (evs[0].version, evs[0].after.as_ref().unwrap()[1].clone())
        };
        let mut c = Compacted::default();
        c.add(change(20, 2));
        c.add(change(15, 1));
        assert_eq!(kept(&c), (20, Value::Int(2)), "a late older change");
        c.add(change(20, 3));
        assert_eq!(kept(&c), (20, Value::Int(3)), "one transaction: the later");
        let mut later = Compacted::default();
        later.add(change(18, 4));
        c.absorb(later);
        assert_eq!(kept(&c), (20, Value::Int(3)), "across stretches");
        assert_eq!((c.events, c.rows), (4, 1));
        assert_eq!(c.bytes, approx_bytes(&change(20, 3)));
    }

    #[test]
    fn a_repeated_snapshot_row_counts_once_and_its_last_copy_wins() {
        let row = |k: i64, v: i64| ChangeEvent {
            key: vec![Value::Int(k)],
            after: Some(vec![Value::Int(k), Value::Int(v)]),
            ..ev(Op::Read, 1)
        };
        let mut rows = vec![row(1, 10), row(2, 20), row(1, 11), row(3, 30)];
        dedup_snapshot_rows(&mut rows);
        let kept: Vec<(Value, Value)> = rows
            .iter()
            .map(|e| {
                let a = e.after.as_ref().unwrap();
                (a[0].clone(), a[1].clone())
            })
            .collect();
        assert_eq!(
            kept,
            vec![
                (Value::Int(2), Value::Int(20)),
                (Value::Int(1), Value::Int(11)),
                (Value::Int(3), Value::Int(30)),
            ]
        );
    }

    #[test]
    fn a_tables_later_change_replaces_its_earlier_one() {
        let mut a = Compacted::default();
        a.add(ev(Op::Create, 1));
        let mut b = Compacted::default();
        b.add(ev(Op::Delete, 2));
        a.absorb(b);
        assert_eq!((a.events, a.rows), (2, 1));
        let only = a.tables.values().next().unwrap().values().next().unwrap();
        assert_eq!(only.op, Op::Delete);
    }
}
