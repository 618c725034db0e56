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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use tiberius::{AuthMethod, Client, Config, EncryptionLevel, Query};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checkpoint::TableStart;
use crate::config::{ConnectorConfig, SourceConfig};
use crate::event::{ChangeEvent, Message, Op, TableId, TableSchema, Value};
use crate::http::Health;
use crate::source::poll;
use crate::source::position::PollerPosition;
use crate::source::tables::{snapshot_row, Phase, Tables};
pub use crate::source::SourceError;
use crate::stream::Producer;

/// SQL Server error numbers that mean "try again": deadlock victim, snapshot update conflict,
/// database failing over or throttled, connection-level faults.
pub(crate) const TRANSIENT_ERRORS: &[u32] = &[
    207, 233, 1205, 3960, 3961, 4060, 4221, 10053, 10054, 10060, 10928, 10929, 40143, 40197, 40501,
    40613, 49918, 49919, 49920,
];

impl SourceError {
    fn from_tiberius(e: tiberius::error::Error, cfg: &SourceConfig) -> Self {
        match e {
            tiberius::error::Error::Server(t) if t.code() == 18456 => SourceError::Login {
                user: cfg.user.clone(),
                addr: format!("{}:{}", cfg.host, cfg.port),
            },
            tiberius::error::Error::Tls(message) => SourceError::Tls {
                addr: format!("{}:{}", cfg.host, cfg.port),
                message: format!(
                    "{}; give the CA file that signed the server's certificate as source.ca_file \
                     (ODS_CA_FILE; for RDS the Amazon RDS CA bundle) and connect by a host name \
                     the certificate holds (trust_server_certificate = true skips the check: a \
                     trusted network only)",
                    message
                        .split(" To connect anyway")
                        .next()
                        .unwrap_or_default()
                        .trim_end()
                        .trim_end_matches('.')
                ),
            },
            tiberius::error::Error::Protocol(m) if m.contains("encryption level") => {
                SourceError::Tls {
                    addr: format!("{}:{}", cfg.host, cfg.port),
                    message: format!(
                        "{}: the server offers no TLS and source.encrypt = true requires it",
                        m.trim_end_matches('.')
                    ),
                }
            }
            // Change Tracking switched off between the cycle's check and its read of the table
            // (how a primary key changes): as when the check finds it off.
            tiberius::error::Error::Server(t) if t.code() == 22105 => {
                match tracking_off_table(t.message()) {
                    Some(table) => SourceError::TrackingOff(vec![table]),
                    None => SourceError::Server {
                        code: t.code(),
                        class: t.class(),
                        message: t.message().to_string(),
                    },
                }
            }
            tiberius::error::Error::Server(t) => SourceError::Server {
                code: t.code(),
                class: t.class(),
                message: t.message().to_string(),
            },
            other => SourceError::Io(other.to_string()),
        }
    }
}

/// The table of SQL Server's error 22105, `Change tracking is not enabled on table 'schema.name'.`
fn tracking_off_table(message: &str) -> Option<crate::event::TableId> {
    let name = message.split('\'').nth(1)?;
    let (schema, table) = name.split_once('.')?;
    Some(crate::event::TableId::new(schema, table))
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
        config.command_timeout(Some(cfg.query_timeout));
        config.authentication(AuthMethod::sql_server(&cfg.user, cfg.password.expose()));
        if cfg.encrypt {
            config.encryption(EncryptionLevel::Required);
            if cfg.trust_server_certificate {
                config.trust_cert();
            } else if !cfg.ca_file.is_empty() {
                config.trust_cert_ca(&cfg.ca_file);
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
            // As on the PostgreSQL connections (`sink::pg`): a peer gone silent between
            // queries is found in about a minute, and an idle connection is not dropped by a
            // load balancer or NAT on the way.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(30))
                .with_interval(Duration::from_secs(10))
                .with_retries(3);
            socket2::SockRef::from(&tcp)
                .set_tcp_keepalive(&keepalive)
                .ok();
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

    /// Run one statement; the rows it affected.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SourceError> {
        let mut query = Query::new(sql);
        for p in params {
            value::bind(&mut query, p);
        }
        let result = query
            .execute(&mut self.client)
            .await
            .map_err(|e| SourceError::from_tiberius(e, &self.config))?;
        Ok(result.total())
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

/// Reads CT from one source database and sends events and watermarks to the stream.
pub struct Poller {
    config: Arc<ConnectorConfig>,
    conn: Option<Connection>,
    tables: Tables,
    out: Producer,
    /// Kept with a durable stream (Kafka, Kinesis).
    position: Option<PollerPosition>,
    resnapshots: mpsc::UnboundedReceiver<TableId>,
    health: Arc<Health>,
    /// The source's Change Tracking retention, read once per connection.
    retention_seconds: Option<i64>,
    /// The whole catalog is read again at the next cycle: after a failed cycle (a column
    /// dropped under it fails it with error 207), after a snapshot chunk found its table's
    /// columns changed, and when a table's Change Tracking was switched off and on (how its
    /// primary key changes).
    check_catalog: bool,
    /// The version and time of the last columns check: with no change committed since, no
    /// change can be read in a stale shape, and a quiet source is checked every
    /// [`QUIET_SCHEMA_CHECK`].
    columns_checked: Option<(i64, Instant)>,
    heartbeat: Option<Heartbeat>,
}

/// The connector's row in the heartbeat table, written every `source.heartbeat_interval` before
/// a cycle: a quiet source still commits, each cycle's watermark then names a recent commit,
/// and the sinks' `edfi_cdc_heartbeat_lag_seconds` measures replication end to end.
struct Heartbeat {
    table: TableId,
    update: String,
    insert: String,
    every: std::time::Duration,
    last: Option<Instant>,
    /// The server refused the last write (logged once until one succeeds).
    refused: bool,
}

/// How often the columns of a source where nothing changed are checked.
const QUIET_SCHEMA_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

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
        let tables = Tables::new(schemas, start, position.is_some());
        Poller {
            conn: None,
            tables,
            out,
            position,
            resnapshots,
            health,
            retention_seconds: None,
            check_catalog: false,
            columns_checked: None,
            heartbeat: config.source.heartbeat().map(|table| Heartbeat {
                update: queries::heartbeat_update(&table),
                insert: queries::heartbeat_insert(&table),
                table,
                every: config.source.heartbeat_interval,
                last: None,
                refused: false,
            }),
            config,
        }
    }

    /// Poll until `stop` is cancelled or a fault outlasts the retry budget.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), SourceError> {
        poll::run(&mut self, stop).await
    }

    async fn connection(&mut self) -> Result<&mut Connection, SourceError> {
        if self.conn.is_none() {
            let conn = Connection::connect(&self.config.source).await?;
            info!(host = %self.config.source.host, database = %self.config.source.database, "connected to source");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Inside the cycle's transaction at `version`, before its reads: when the replicated
    /// columns changed (or [`Poller::check_catalog`] asks), read the catalog again and
    /// re-snapshot every table whose replicated shape changed, in that shape: its start marker
    /// carries it to the sinks, which change their targets to match (`docs/operations.md`,
    /// "Schema changes at the source"). Checked in every cycle that has changes to read, so
    /// that no value of a widened column is read before the sinks widened their targets.
    async fn check_schema(&mut self, version: i64) -> Result<(), SourceError> {
        let quiet = self
            .columns_checked
            .is_some_and(|(v, at)| v == version && at.elapsed() < QUIET_SCHEMA_CHECK);
        if quiet && !self.check_catalog {
            return Ok(());
        }
        let config = self.config.clone();
        let current: Vec<Arc<TableSchema>> =
            self.tables.runs.iter().map(|t| t.schema.clone()).collect();
        let conn = self.conn.as_mut().expect("connected in this cycle");
        let changed =
            self.check_catalog || schema::columns_changed(conn, &config, &current).await?;
        self.columns_checked = Some((version, Instant::now()));
        if !changed {
            return Ok(());
        }
        self.check_catalog = false;
        // A table that can no longer be read as configured (a configured column dropped, the
        // primary key removed) stops the poller, naming it.
        let catalog = schema::discover(conn, &config).await?;
        for new in catalog.schemas {
            let Some(i) = self.tables.position(&new.id) else {
                continue;
            };
            let changes = new.changes_from(&self.tables.runs[i].schema);
            if changes.is_empty() {
                continue;
            }
            warn!(table = %new.id, changes = %changes.join("; "),
                "the table changed at the source: re-snapshotting it in its new shape");
            crate::metrics::schema_change(&config.name, &new.id.to_string(), "poller");
            self.tables.runs[i].schema = new.clone();
            self.tables.request_snapshot(&new.id);
        }
        Ok(())
    }

    /// Write the heartbeat row when one is due, in a statement of its own before the cycle's
    /// transaction, which then reads its version. A write the server refuses (no table, no
    /// permission) is logged and counted, not fatal: only the end-to-end lag is lost.
    async fn beat(&mut self) -> Result<(), SourceError> {
        let due = self
            .heartbeat
            .as_ref()
            .is_some_and(|h| h.last.is_none_or(|t| t.elapsed() >= h.every));
        if !due {
            return Ok(());
        }
        let connector = self.config.name.clone();
        self.connection().await?;
        let conn = self.conn.as_mut().expect("connected above");
        let hb = self.heartbeat.as_mut().expect("due above");
        let name = [Value::String(connector.clone())];
        let written = match conn.execute(&hb.update, &name).await {
            Ok(0) => conn.execute(&hb.insert, &name).await.map(|_| ()),
            other => other.map(|_| ()),
        };
        hb.last = Some(Instant::now());
        match written {
            Ok(()) => {
                if hb.refused {
                    info!(table = %hb.table, "heartbeat written again");
                }
                hb.refused = false;
                Ok(())
            }
            Err(SourceError::Server { code, message, .. }) if !TRANSIENT_ERRORS.contains(&code) => {
                crate::metrics::error("heartbeat", "refused");
                if !hb.refused {
                    warn!(table = %hb.table, code, error = %message,
                        "cannot write the heartbeat: lag is measured end to end only while the tables change; \
                         create the table and grant INSERT, UPDATE on it (edfi-cdc enable-ct --print)");
                }
                hb.refused = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn cycle_inner(&mut self) -> Result<u64, SourceError> {
        let started = Instant::now();
        let database = self.config.source.database.clone();
        self.beat().await?;
        // Sinks that are behind are waited for here, not inside the SNAPSHOT transaction (it
        // would keep row versions at the ODS for as long).
        self.out.wait_for_room().await?;
        let conn = self.connection().await?;
        conn.batch(queries::BEGIN_SNAPSHOT).await?;
        let version = conn
            .current_version()
            .await?
            .ok_or(SourceError::DatabaseNotTracked(database))?;
        // Untracked tables first: while Change Tracking is off a table's key may be gone (how
        // a key changes), which the catalog check would take for a table that cannot be read.
        let min_valid = conn.min_valid_versions().await?;
        let mut untracked = Vec::new();
        let mut reset = Vec::new();
        for (i, t) in self.tables.runs.iter().enumerate() {
            let baseline = match t.phase {
                Phase::Streaming { last } => last,
                Phase::Snapshotting { version, .. } => version,
                Phase::Queued { at: Some(at), .. } => at,
                Phase::Queued { at: None, .. } => continue,
            };
            match min_valid.get(&lookup_key(&t.schema.id)).copied().flatten() {
                None => untracked.push(t.schema.id.clone()),
                Some(mv) if baseline < mv => {
                    warn!(table = %t.schema.id, baseline, min_valid_version = mv,
                        "baseline is below the table's min valid version (retention cleanup, TRUNCATE, or Change Tracking switched off and on): re-snapshotting the table");
                    reset.push(i);
                }
                Some(_) => {}
            }
        }
        if !untracked.is_empty() {
            return Err(SourceError::TrackingOff(untracked));
        }
        self.check_schema(version).await?;
        for i in reset {
            let id = self.tables.runs[i].schema.id.clone();
            self.tables.request_snapshot(&id);
            // Change Tracking switched off and on: the primary key may have changed too.
            self.check_catalog = true;
        }
        if self.check_catalog {
            self.check_schema(version).await?;
        }
        self.start_snapshots(version).await?;
        let mut events = 0u64;
        for i in 0..self.tables.runs.len() {
            let Phase::Streaming { last } = self.tables.runs[i].phase else {
                continue;
            };
            if last >= version {
                continue;
            }
            let schema = self.tables.runs[i].schema.clone();
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
        self.tables
            .end_cycle(version, commit_time, events, &self.out, &mut self.position)
            .await?;
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
        for t in &self.tables.runs {
            let baseline = match t.phase {
                Phase::Streaming { last } => Some(last.max(version)),
                Phase::Snapshotting { version, .. } => Some(version),
                Phase::Queued { at, .. } => at,
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
        for q in 0..self.tables.queue.len() {
            let i = self.tables.queue[q];
            if !matches!(self.tables.runs[i].phase, Phase::Queued { .. }) {
                continue;
            }
            let schema = self.tables.runs[i].schema.clone();
            let conn = self.conn.as_mut().expect("connected in this cycle");
            let total = value::as_i64(&conn.scalar(&queries::count_rows(&schema), &[]).await?)
                .map(|n| n as u64);
            self.tables
                .start_snapshot(i, version, total, &self.out, &mut self.position)
                .await?;
        }
        Ok(())
    }

    async fn snapshot_step_inner(&mut self) -> Result<bool, SourceError> {
        // Snapshots start in a poll cycle (see `start_snapshots`); until then a queued table
        // waits.
        let Some((qpos, i)) = self.tables.snapshotting() else {
            return Ok(false);
        };
        let schema = self.tables.runs[i].schema.clone();
        let Phase::Snapshotting {
            version, last_key, ..
        } = &self.tables.runs[i].phase
        else {
            unreachable!("snapshotting() found a snapshotting table");
        };
        let version = *version;
        let chunk = self.config.poll.snapshot_chunk_rows;
        let mut params = vec![Value::Int(chunk.into())];
        if let Some(k) = last_key {
            params.extend(k.iter().cloned());
        }
        let sql = queries::snapshot_chunk(&schema, last_key.is_some());
        let mut read = 0u32;
        let mut new_last: Option<Vec<Value>> = None;
        let config = self.config.clone();
        let conn = self.connection().await?;
        // A table changed since the cycle that checked it is read in its new shape, from the
        // start, once the next cycle has read the catalog. (No transaction joins the check and
        // the read: it would stay open while the sinks hold the chunk's rows back.)
        if schema::columns_changed(conn, &config, std::slice::from_ref(&schema)).await? {
            self.check_catalog = true;
            return Ok(false);
        }
        let out = &self.out;
        let conn = self.conn.as_mut().expect("connected above");
        conn.each_row(&sql, &params, |row| {
            read += 1;
            let ev = snapshot_row(&schema, row, version);
            new_last = Some(ev.key.clone());
            async move { Ok(out.send(Message::Change(ev)).await?) }
        })
        .await?;
        self.tables
            .end_chunk(qpos, read, chunk, new_last, &self.out, &mut self.position)
            .await
    }
}

impl poll::Source for Poller {
    fn config(&self) -> &ConnectorConfig {
        &self.config
    }

    fn health(&self) -> &Health {
        &self.health
    }

    fn out(&self) -> &Producer {
        &self.out
    }

    fn tables(&mut self) -> &mut Tables {
        &mut self.tables
    }

    fn requests(
        &mut self,
    ) -> (
        &mut mpsc::UnboundedReceiver<TableId>,
        &mut Option<PollerPosition>,
    ) {
        (&mut self.resnapshots, &mut self.position)
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
            self.check_catalog = true;
        }
        result
    }

    /// Read one chunk of the first snapshot in progress. Returns whether snapshot work remains.
    async fn snapshot_step(&mut self) -> Result<bool, SourceError> {
        let result = self.snapshot_step_inner().await;
        if result.is_err() {
            self.conn = None;
        }
        result
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_22105_names_the_table_whose_tracking_is_off() {
        assert_eq!(
            tracking_off_table("Change tracking is not enabled on table 'edfi.Student'."),
            Some(crate::event::TableId::new("edfi", "Student"))
        );
        assert_eq!(tracking_off_table("Change tracking is not enabled."), None);
    }
}
