//! The Change Tracking poller: reads SQL Server CT into change events, one consistent cut per
//! poll cycle, and snapshots tables that were never synced or lost their baseline.
//!
//! A poll cycle runs in one SNAPSHOT transaction: it reads `CHANGE_TRACKING_CURRENT_VERSION()`
//! as the bound `V`, checks every table's min valid version against its baseline, reads each
//! table's net changes after its baseline up to `V`, commits, and emits a watermark `V`.
//! Between cycles the poller reads snapshot chunks (keyset pagination, short transactions) of at
//! most one table at a time, for at most `poll.snapshot_slice`, so other tables keep streaming.

pub mod queries;
pub mod schema;
pub mod value;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use tiberius::{AuthMethod, Client, Config, EncryptionLevel, Query};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoint::TableStart;
use crate::config::{ConnectorConfig, SourceConfig};
use crate::event::{
    ChangeEvent, Message, Op, SnapshotMarker, TableId, TableSchema, Value, Watermark,
};
use crate::http::Health;
use crate::retry::Backoff;
use crate::source::position::PollerPosition;
use crate::stream::{Producer, StreamError};

/// SQL Server error numbers that mean "try again": deadlock victim, snapshot update conflict,
/// database failing over or throttled, connection-level faults.
const TRANSIENT_ERRORS: &[u32] = &[
    233, 1205, 3960, 4060, 4221, 10053, 10054, 10060, 10928, 10929, 40143, 40197, 40501, 40613,
    49918, 49919, 49920,
];

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach SQL Server at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("SQL Server refused the login of user `{user}` on {addr} (error 18456): check the source user and password (ODS_USER / ODS_PASSWORD)")]
    Login { user: String, addr: String },
    #[error("SQL Server error {code} (class {class}): {message}")]
    Server {
        code: u32,
        class: u8,
        message: String,
    },
    #[error("SQL Server connection failed: {0}")]
    Io(String),
    #[error("the source tables cannot be replicated:\n  {}", .0.join("\n  "))]
    Tables(Vec<String>),
    #[error("Change Tracking is not enabled on {}: run `edfi-cdc enable-ct --print` for the T-SQL that turns it on", list(.0))]
    NotTracked(Vec<TableId>),
    #[error("Change Tracking is not enabled on database {0}: run `edfi-cdc enable-ct --print` for the T-SQL that turns it on")]
    DatabaseNotTracked(String),
    #[error("the stream to the sinks is closed")]
    StreamClosed,
    #[error("stream {0}")]
    Stream(StreamError),
    #[error("cannot record the poller's position: {0}")]
    Position(crate::sink::SinkError),
}

impl From<StreamError> for SourceError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Closed => SourceError::StreamClosed,
            e => SourceError::Stream(e),
        }
    }
}

fn list(tables: &[TableId]) -> String {
    tables
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl SourceError {
    pub fn is_retriable(&self) -> bool {
        match self {
            SourceError::Connect { .. } | SourceError::Io(_) => true,
            SourceError::Stream(e) => e.is_retriable(),
            SourceError::Position(e) => e.is_retriable(),
            SourceError::Server { code, class, .. } => {
                *class >= 20 || TRANSIENT_ERRORS.contains(code)
            }
            _ => false,
        }
    }

    fn from_tiberius(e: tiberius::error::Error, cfg: &SourceConfig) -> Self {
        match e {
            tiberius::error::Error::Server(t) if t.code() == 18456 => SourceError::Login {
                user: cfg.user.clone(),
                addr: format!("{}:{}", cfg.host, cfg.port),
            },
            tiberius::error::Error::Server(t) => SourceError::Server {
                code: t.code(),
                class: t.class(),
                message: t.message().to_string(),
            },
            other => SourceError::Io(other.to_string()),
        }
    }
}

/// One tiberius connection to the source database.
pub struct Connection {
    client: Client<Compat<TcpStream>>,
    config: SourceConfig,
}

impl Connection {
    pub async fn connect(cfg: &SourceConfig) -> Result<Connection, SourceError> {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let mut config = Config::new();
        config.host(&cfg.host);
        config.port(cfg.port);
        config.database(&cfg.database);
        config.application_name("edfi-cdc");
        config.authentication(AuthMethod::sql_server(&cfg.user, cfg.password.expose()));
        if cfg.encrypt {
            config.encryption(EncryptionLevel::Required);
            if cfg.trust_server_certificate {
                config.trust_cert();
            }
        } else {
            config.encryption(EncryptionLevel::NotSupported);
        }
        let connect = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|e| SourceError::Connect {
                    addr: addr.clone(),
                    message: e.to_string(),
                })?;
            tcp.set_nodelay(true).ok();
            Client::connect(config, tcp.compat_write())
                .await
                .map_err(|e| SourceError::from_tiberius(e, cfg))
        };
        let client = tokio::time::timeout(cfg.connect_timeout, connect)
            .await
            .map_err(|_| SourceError::Connect {
                addr: addr.clone(),
                message: format!("no answer within {:?}", cfg.connect_timeout),
            })??;
        Ok(Connection {
            client,
            config: cfg.clone(),
        })
    }

    /// Run a batch without parameters and discard its results.
    pub async fn batch(&mut self, sql: &str) -> Result<(), SourceError> {
        let stream = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| SourceError::from_tiberius(e, &self.config))?;
        stream
            .into_results()
            .await
            .map_err(|e| SourceError::from_tiberius(e, &self.config))?;
        Ok(())
    }

    /// All rows of the first result set.
    pub async fn rows(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Vec<Value>>, SourceError> {
        let mut out = Vec::new();
        self.each_row(sql, params, |row| {
            out.push(row);
            std::future::ready(Ok(()))
        })
        .await?;
        Ok(out)
    }

    /// Stream the rows of the first result set through `f`, one at a time.
    pub async fn each_row<F, Fut>(
        &mut self,
        sql: &str,
        params: &[Value],
        mut f: F,
    ) -> Result<(), SourceError>
    where
        F: FnMut(Vec<Value>) -> Fut,
        Fut: std::future::Future<Output = Result<(), SourceError>>,
    {
        let mut query = Query::new(sql);
        for p in params {
            value::bind(&mut query, p);
        }
        let config = self.config.clone();
        let err = |e| SourceError::from_tiberius(e, &config);
        let mut rows = query
            .query(&mut self.client)
            .await
            .map_err(err)?
            .into_row_stream();
        while let Some(row) = rows.try_next().await.map_err(err)? {
            f(row.into_iter().map(value::from_column).collect()).await?;
        }
        Ok(())
    }

    pub async fn scalar(&mut self, sql: &str, params: &[Value]) -> Result<Value, SourceError> {
        let rows = self.rows(sql, params).await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or(Value::Null))
    }

    /// Current version and commit time of a version, for `status` and lag.
    pub async fn current_version(&mut self) -> Result<Option<i64>, SourceError> {
        Ok(value::as_i64(
            &self.scalar(queries::CURRENT_VERSION, &[]).await?,
        ))
    }

    pub async fn commit_time(
        &mut self,
        version: i64,
    ) -> Result<Option<DateTime<Utc>>, SourceError> {
        Ok(timestamp(
            &self
                .scalar(queries::COMMIT_TIME, &[Value::Int(version)])
                .await?,
        ))
    }

    /// The database's Change Tracking retention in seconds (None when CT is off).
    pub async fn retention_seconds(&mut self) -> Result<Option<i64>, SourceError> {
        let rows = self.rows(queries::DATABASE_CT, &[]).await?;
        Ok(rows.first().and_then(|r| {
            let unit = match value::as_i64(&r[1])? {
                1 => 60,
                2 => 3600,
                _ => 86400,
            };
            Some(value::as_i64(&r[0])? * unit)
        }))
    }

    /// Commit time of the oldest version above `after` and at most `upto`.
    pub async fn oldest_commit_after(
        &mut self,
        after: i64,
        upto: i64,
    ) -> Result<Option<DateTime<Utc>>, SourceError> {
        let rows = self
            .rows(
                queries::OLDEST_COMMIT_AFTER,
                &[Value::Int(after), Value::Int(upto)],
            )
            .await?;
        Ok(rows.first().and_then(|r| timestamp(&r[1])))
    }

    /// Min valid version of every tracked table, keyed by lower-cased `schema.table`.
    pub async fn min_valid_versions(
        &mut self,
    ) -> Result<HashMap<String, Option<i64>>, SourceError> {
        Ok(self
            .rows(queries::TRACKED_TABLES, &[])
            .await?
            .iter()
            .filter_map(|r| {
                let key =
                    format!("{}.{}", value::as_str(&r[0])?, value::as_str(&r[1])?).to_lowercase();
                Some((key, value::as_i64(&r[2])))
            })
            .collect())
    }
}

fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Timestamp(t) => Some(t.and_utc()),
        Value::TimestampTz(t) => Some(*t),
        _ => None,
    }
}

fn lookup_key(id: &TableId) -> String {
    id.to_string().to_lowercase()
}

#[derive(Clone, Copy)]
enum Step {
    Cycle,
    Snapshot,
}

#[derive(Debug)]
enum Phase {
    /// Changes after `last` are read in every cycle.
    Streaming { last: i64 },
    /// A snapshot is in progress, consistent with CT from `version` on.
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
    /// operator (or a sink that lost records) asked for it.
    Queued { id: u64, requested: bool },
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

struct TableRun {
    schema: Arc<TableSchema>,
    phase: Phase,
}

/// Reads CT from one source database and sends events and watermarks to the stream.
pub struct Poller {
    config: Arc<ConnectorConfig>,
    conn: Option<Connection>,
    tables: Vec<TableRun>,
    snapshot_queue: VecDeque<usize>,
    out: Producer,
    /// Kept with a durable stream (Kafka, Kinesis).
    position: Option<PollerPosition>,
    resnapshots: mpsc::UnboundedReceiver<TableId>,
    health: Arc<Health>,
    last_watermark: i64,
    /// A snapshot finished since the last watermark: the next cycle sends one even if the
    /// source is idle, so that the sinks publish the table.
    publish_pending: bool,
    /// The source's Change Tracking retention, read once per connection.
    retention_seconds: Option<i64>,
}

impl Poller {
    pub fn new(
        config: Arc<ConnectorConfig>,
        schemas: &[Arc<TableSchema>],
        start: &HashMap<TableId, TableStart>,
        out: Producer,
        position: Option<PollerPosition>,
        resnapshots: mpsc::UnboundedReceiver<TableId>,
        health: Arc<Health>,
    ) -> Poller {
        let mut tables = Vec::new();
        let mut snapshot_queue = VecDeque::new();
        for (i, schema) in schemas.iter().enumerate() {
            let phase = match start.get(&schema.id) {
                Some(TableStart::Stream { version }) => Phase::Streaming { last: *version },
                // No chunk of it was recorded: the sinks may not even have its start.
                Some(TableStart::ResumeSnapshot { last_key: None, .. }) if position.is_some() => {
                    snapshot_queue.push_back(i);
                    Phase::Queued {
                        id: snapshot_id(),
                        requested: false,
                    }
                }
                Some(TableStart::ResumeSnapshot {
                    version,
                    last_key,
                    rows,
                    total,
                }) => {
                    snapshot_queue.push_front(i);
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
                    snapshot_queue.push_back(i);
                    Phase::Queued {
                        id: snapshot_id(),
                        requested: false,
                    }
                }
            };
            tables.push(TableRun {
                schema: schema.clone(),
                phase,
            });
        }
        let last_watermark = tables
            .iter()
            .filter_map(|t| match t.phase {
                Phase::Streaming { last } => Some(last),
                _ => None,
            })
            .min()
            .unwrap_or(0);
        Poller {
            config,
            conn: None,
            tables,
            snapshot_queue,
            out,
            position,
            resnapshots,
            health,
            last_watermark,
            // The first cycle always sends a watermark, so that a snapshot completed before a
            // restart is published even if the source stays idle.
            publish_pending: true,
            retention_seconds: None,
        }
    }

    /// Poll until `stop` is cancelled or a fault outlasts the retry budget.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), SourceError> {
        let mut backoff = Backoff::new(&self.config.retry);
        while !stop.is_cancelled() {
            let started = Instant::now();
            while let Ok(t) = self.resnapshots.try_recv() {
                self.request_snapshot(&t);
            }
            if let Some(position) = &mut self.position {
                match position.requests().await {
                    Ok(tables) => {
                        for t in tables {
                            self.request_snapshot(&t);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot read re-snapshot requests; trying again next cycle")
                    }
                }
            }
            let Some(events) = self.step(Step::Cycle, &mut backoff, &stop).await? else {
                break;
            };
            let slice_end = Instant::now() + self.config.poll.snapshot_slice;
            let mut snapshot_pending = !self.snapshot_queue.is_empty();
            while snapshot_pending && Instant::now() < slice_end && !stop.is_cancelled() {
                let Some(pending) = self.step(Step::Snapshot, &mut backoff, &stop).await? else {
                    break;
                };
                snapshot_pending = pending > 0;
            }
            if events >= self.config.poll.busy_threshold || snapshot_pending {
                continue;
            }
            let next = started + self.config.poll.interval;
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = stop.cancelled() => {}
            }
        }
        Ok(())
    }

    /// Run one step, retrying transient faults. `None` when stopped while waiting to retry.
    async fn step(
        &mut self,
        step: Step,
        backoff: &mut Backoff,
        stop: &CancellationToken,
    ) -> Result<Option<u64>, SourceError> {
        loop {
            let result = match step {
                Step::Cycle => self.cycle().await,
                Step::Snapshot => self.snapshot_step().await.map(u64::from),
            };
            match result {
                Ok(n) => {
                    backoff.reset();
                    if matches!(step, Step::Cycle) {
                        self.health.cycle_ok(&self.config.name);
                    }
                    return Ok(Some(n));
                }
                Err(e) if e.is_retriable() => {
                    self.health.cycle_failed(&self.config.name);
                    crate::metrics::error("source", "transient");
                    if !backoff.pause("source", &e, stop).await {
                        return if stop.is_cancelled() {
                            Ok(None)
                        } else {
                            Err(e)
                        };
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn request_snapshot(&mut self, table: &TableId) {
        if let Some(i) = self.tables.iter().position(|t| &t.schema.id == table) {
            if let Phase::Queued { requested, .. } = &mut self.tables[i].phase {
                // Queued already (its first snapshot, or one resumed from scratch at start):
                // it now counts as asked for.
                *requested = true;
            } else {
                info!(table = %table, "re-snapshot requested");
                self.tables[i].phase = Phase::Queued {
                    id: snapshot_id(),
                    requested: true,
                };
                self.snapshot_queue.retain(|&q| q != i);
                self.snapshot_queue.push_back(i);
            }
        } else {
            warn!(table = %table, "re-snapshot requested for a table this connector does not replicate; ignored");
        }
    }

    async fn connection(&mut self) -> Result<&mut Connection, SourceError> {
        if self.conn.is_none() {
            let conn = Connection::connect(&self.config.source).await?;
            info!(host = %self.config.source.host, database = %self.config.source.database, "connected to source");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn send(&self, msg: Message) -> Result<(), SourceError> {
        Ok(self.out.send(msg).await?)
    }

    /// One poll cycle; returns the number of change events sent. On error the connection is
    /// dropped (the server rolls the transaction back) and the cycle may simply be run again:
    /// sinks apply nothing without a watermark, and a later copy of an event supersedes an
    /// earlier one.
    async fn cycle(&mut self) -> Result<u64, SourceError> {
        let result = self.cycle_inner().await;
        if result.is_err() {
            self.conn = None;
            self.retention_seconds = None;
        }
        result
    }

    async fn cycle_inner(&mut self) -> Result<u64, SourceError> {
        let started = Instant::now();
        let database = self.config.source.database.clone();
        let conn = self.connection().await?;
        conn.batch(queries::BEGIN_SNAPSHOT).await?;
        let version = conn
            .current_version()
            .await?
            .ok_or(SourceError::DatabaseNotTracked(database))?;
        let min_valid = conn.min_valid_versions().await?;
        let mut untracked = Vec::new();
        let mut reset = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            let baseline = match t.phase {
                Phase::Streaming { last } => last,
                Phase::Snapshotting { version, .. } => version,
                Phase::Queued { .. } => continue,
            };
            match min_valid.get(&lookup_key(&t.schema.id)).copied().flatten() {
                None => untracked.push(t.schema.id.clone()),
                Some(mv) if baseline < mv => {
                    warn!(table = %t.schema.id, baseline, min_valid_version = mv,
                        "baseline is below the table's min valid version (retention cleanup or TRUNCATE): re-snapshotting the table");
                    reset.push(i);
                }
                Some(_) => {}
            }
        }
        if !untracked.is_empty() {
            return Err(SourceError::NotTracked(untracked));
        }
        for i in reset {
            let id = self.tables[i].schema.id.clone();
            self.request_snapshot(&id);
        }
        self.start_snapshots(version).await?;
        let mut events = 0u64;
        for i in 0..self.tables.len() {
            let Phase::Streaming { last } = self.tables[i].phase else {
                continue;
            };
            if last >= version {
                continue;
            }
            let schema = self.tables[i].schema.clone();
            let sql = queries::changes(&schema);
            let out = &self.out;
            let conn = self.conn.as_mut().expect("connected in this cycle");
            let ncols = schema.columns.len();
            let nkey = schema.key.len();
            let first_key_col = schema.key[0];
            let table_name = schema.id.to_string();
            let connector = self.config.name.clone();
            // The table's oldest change of this cycle, for the sinks' lag.
            let mut first: Option<(i64, DateTime<Utc>)> = None;
            conn.each_row(&sql, &[Value::Int(last), Value::Int(version)], |row| {
                events += 1;
                let ev = change_event(&schema, row, nkey, ncols, first_key_col);
                crate::metrics::source_events(&connector, &table_name, ev.op.code(), 1);
                if let Some(at) = ev.commit_time {
                    if first.is_none_or(|(v, _)| ev.version < v) {
                        first = Some((ev.version, at));
                    }
                }
                async move { Ok(out.send(Message::Change(ev)).await?) }
            })
            .await?;
            if let Some((v, at)) = first {
                crate::metrics::sent(&connector, &table_name, v, at);
            }
        }
        self.retention_metrics(&min_valid, version).await?;
        let conn = self.conn.as_mut().expect("connected in this cycle");
        let commit_time = conn.commit_time(version).await?;
        conn.batch(queries::COMMIT).await?;
        for t in &mut self.tables {
            if let Phase::Streaming { last } = &mut t.phase {
                *last = (*last).max(version);
            }
        }
        if version > self.last_watermark || events > 0 || self.publish_pending {
            let w = Watermark {
                version,
                commit_time,
            };
            self.send(Message::Watermark(w.clone())).await?;
            if let Some(position) = &mut self.position {
                position.advance(&w).await.map_err(SourceError::Position)?;
            }
            debug!(version, events, "cycle");
            self.last_watermark = version;
            self.publish_pending = false;
        }
        crate::metrics::cycle(
            &self.config.name,
            started.elapsed().as_secs_f64(),
            events,
            version,
        );
        Ok(events)
    }

    /// Retention gauges, inside the cycle's transaction after its reads: each table's min valid
    /// version and the headroom of the version the poller reads it from next, and the commit
    /// time of the oldest change after the lowest of those versions (a snapshot in progress
    /// holds its start version; streaming tables move on to `version` with this cycle).
    async fn retention_metrics(
        &mut self,
        min_valid: &HashMap<String, Option<i64>>,
        version: i64,
    ) -> Result<(), SourceError> {
        let connector = self.config.name.clone();
        let mut lowest = version;
        for t in &self.tables {
            let baseline = match t.phase {
                Phase::Streaming { last } => Some(last.max(version)),
                Phase::Snapshotting { version, .. } => Some(version),
                Phase::Queued { .. } => None,
            };
            lowest = lowest.min(baseline.unwrap_or(version));
            if let Some(mv) = min_valid.get(&lookup_key(&t.schema.id)).copied().flatten() {
                crate::metrics::table_retention(&connector, &t.schema.id.to_string(), mv, baseline);
            }
        }
        let conn = self.conn.as_mut().expect("connected in this cycle");
        if self.retention_seconds.is_none() {
            self.retention_seconds = conn.retention_seconds().await?;
        }
        let oldest = if lowest < version {
            conn.oldest_commit_after(lowest, version).await?
        } else {
            None
        };
        if let Some(r) = self.retention_seconds {
            crate::metrics::retention(&connector, r, oldest);
        }
        Ok(())
    }

    /// Start the snapshots of every queued table at the cycle's version `version`, inside the
    /// cycle's snapshot transaction and before its watermark: a sink thus stops counting the
    /// table as part of the cut before the watermark could advance it.
    async fn start_snapshots(&mut self, version: i64) -> Result<(), SourceError> {
        for &i in &self.snapshot_queue {
            let Phase::Queued { id, requested } = self.tables[i].phase else {
                continue;
            };
            let schema = self.tables[i].schema.clone();
            let conn = self.conn.as_mut().expect("connected in this cycle");
            let total = value::as_i64(&conn.scalar(&queries::count_rows(&schema), &[]).await?)
                .map(|n| n as u64);
            info!(table = %schema.id, version, rows = ?total, "snapshot started");
            if let Some(position) = &mut self.position {
                position
                    .begin_snapshot(&schema.id, version, total)
                    .await
                    .map_err(SourceError::Position)?;
            }
            self.out
                .send(Message::Snapshot(SnapshotMarker::Started {
                    table: schema.clone(),
                    version,
                    total_rows: total,
                    id,
                    requested,
                }))
                .await?;
            self.tables[i].phase = Phase::Snapshotting {
                version,
                last_key: None,
                rows: 0,
                total,
                started: Instant::now(),
                rows_at_start: 0,
            };
        }
        Ok(())
    }

    /// Read one chunk of the first snapshot in progress. Returns whether snapshot work remains.
    async fn snapshot_step(&mut self) -> Result<bool, SourceError> {
        let result = self.snapshot_step_inner().await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn snapshot_step_inner(&mut self) -> Result<bool, SourceError> {
        // Snapshots start in a poll cycle (see `start_snapshots`); until then a queued table
        // waits.
        let Some(qpos) = self
            .snapshot_queue
            .iter()
            .position(|&i| matches!(self.tables[i].phase, Phase::Snapshotting { .. }))
        else {
            return Ok(false);
        };
        let i = self.snapshot_queue[qpos];
        let schema = self.tables[i].schema.clone();
        let Phase::Snapshotting {
            version,
            last_key,
            rows,
            total,
            started,
            rows_at_start,
        } = &self.tables[i].phase
        else {
            unreachable!("position() found a snapshotting table");
        };
        let (version, total, started, rows_at_start) = (*version, *total, *started, *rows_at_start);
        let chunk = self.config.poll.snapshot_chunk_rows;
        let mut params = vec![Value::Int(chunk.into())];
        if let Some(k) = last_key {
            params.extend(k.iter().cloned());
        }
        let sql = queries::snapshot_chunk(&schema, last_key.is_some());
        let mut rows_now = *rows;
        let mut read = 0u32;
        let mut new_last: Option<Vec<Value>> = None;
        self.connection().await?;
        let out = &self.out;
        let conn = self.conn.as_mut().expect("connected above");
        conn.each_row(&sql, &params, |row| {
            read += 1;
            rows_now += 1;
            let key: Vec<Value> = schema.key.iter().map(|&k| row[k].clone()).collect();
            new_last = Some(key.clone());
            let ev = ChangeEvent {
                table: schema.clone(),
                op: Op::Read,
                key,
                after: Some(row),
                version,
                commit_time: None,
            };
            async move { Ok(out.send(Message::Change(ev)).await?) }
        })
        .await?;
        if let Some(last_key) = new_last.clone() {
            self.send(Message::Snapshot(SnapshotMarker::Chunk {
                table: schema.clone(),
                last_key: last_key.clone(),
                rows: rows_now,
            }))
            .await?;
            if let Some(position) = &mut self.position {
                position
                    .snapshot_progress(&schema.id, &last_key, rows_now)
                    .await
                    .map_err(SourceError::Position)?;
            }
        }
        let elapsed = started.elapsed().as_secs_f64().max(1e-3);
        let rate = (rows_now - rows_at_start) as f64 / elapsed;
        if read < chunk {
            info!(table = %schema.id, rows = rows_now, rows_per_sec = rate.round(), seconds = elapsed.round(), "snapshot done");
            self.send(Message::Snapshot(SnapshotMarker::Done {
                table: schema.clone(),
                version,
                rows: rows_now,
            }))
            .await?;
            if let Some(position) = &mut self.position {
                position
                    .snapshot_loaded(&schema.id, rows_now)
                    .await
                    .map_err(SourceError::Position)?;
            }
            self.tables[i].phase = Phase::Streaming { last: version };
            self.publish_pending = true;
            self.snapshot_queue.remove(qpos);
            return Ok(self
                .snapshot_queue
                .iter()
                .any(|&i| matches!(self.tables[i].phase, Phase::Snapshotting { .. })));
        }
        let eta = total
            .filter(|&t| t > rows_now && rate > 0.0)
            .map(|t| Duration::from_secs_f64((t - rows_now) as f64 / rate));
        info!(table = %schema.id, rows = rows_now, total = ?total, rows_per_sec = rate.round(), eta = ?eta.map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()), "snapshot progress");
        if let Phase::Snapshotting { last_key, rows, .. } = &mut self.tables[i].phase {
            *last_key = new_last;
            *rows = rows_now;
        }
        Ok(true)
    }
}

/// Build the event for one CHANGETABLE row: version, operation, commit time, key columns (from
/// CHANGETABLE), then the joined row's columns.
fn change_event(
    schema: &Arc<TableSchema>,
    mut row: Vec<Value>,
    nkey: usize,
    ncols: usize,
    first_key_col: usize,
) -> ChangeEvent {
    let after: Vec<Value> = row.split_off(3 + nkey);
    debug_assert_eq!(after.len(), ncols);
    let key: Vec<Value> = row.split_off(3);
    let version = value::as_i64(&row[0]).unwrap_or_default();
    let commit_time = timestamp(&row[2]);
    let gone = matches!(after[first_key_col], Value::Null);
    let op = match value::as_str(&row[1]).map(str::trim) {
        _ if gone => Op::Delete,
        Some("I") => Op::Create,
        _ => Op::Update,
    };
    ChangeEvent {
        table: schema.clone(),
        op,
        key,
        after: (!gone).then_some(after),
        version,
        commit_time,
    }
}
