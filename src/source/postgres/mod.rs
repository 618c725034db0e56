//! The logical decoding poller: reads a PostgreSQL source through a `pgoutput` replication slot
//! the connector owns, into the same events, watermarks and snapshots as the Change Tracking
//! poller.
//!
//! A version is a WAL position (LSN). A poll cycle reads the flushed WAL position, bounds the
//! cycle at `upto` (at most [`WAL_PER_CYCLE`] past the last watermark), peeks the slot's
//! decoded transactions that committed before `upto`
//! (`pg_logical_slot_peek_binary_changes`, read row by row), sends each change of a
//! streaming table whose commit LSN is past the table's version, and sends the watermark
//! `upto - 1`: every transaction committed at or before it has been sent. The slot is only ever
//! advanced (`pg_replication_slot_advance`) to just past the lowest version some sink has not
//! committed yet — read from the sinks' checkpoints with the embedded stream, from the poller's
//! own recorded position with Kafka/Kinesis — so a crash at any moment finds every change the
//! sinks still need in the slot.
//!
//! Snapshots read each table in key order in short chunks, as on SQL Server, once the
//! transactions their version covers are visible. A table's changes
//! are not sent while it is snapshotted; the slot keeps them (it is held at the snapshot's start
//! version) and they follow once the snapshot is done. A `TRUNCATE` re-snapshots the table.
//! Values travel in PostgreSQL's text form; an unchanged TOASTed value (which `pgoutput` does
//! not send) is read back from the table, so a value is never overwritten with NULL.
//!
//! DDL while running: `pgoutput` describes a table anew (a Relation message) before its first
//! change in every decoding session and after its columns, types or key changed. A description
//! unlike the last one re-snapshots that table alone in its new shape, read from the catalog
//! (its later changes in the cycle are in the snapshot); the first description of a table in
//! the process has the catalog read again after the cycle's changes, and a table whose shape
//! differs from it is re-snapshotted too.

pub mod catalog;
pub mod pgoutput;
pub mod queries;
pub mod value;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::{pin_mut, TryStreamExt};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoint::{self, TableStart};
use crate::config::{ConnectorConfig, SourceConfig};
use crate::event::{ChangeEvent, Message, Op, TableId, TableSchema, Value, ValueKind};
use crate::http::Health;
use crate::sink::SinkError;
use crate::source::poll;
use crate::source::position::PollerPosition;
use crate::source::tables::{snapshot_row, Phase, Tables};
use crate::source::SourceError;
use crate::stream::Producer;

use pgoutput::Datum;

/// WAL one poll cycle covers at most, so that a catch-up after an outage arrives in cycles the
/// sinks can hold, not in one.
const WAL_PER_CYCLE: u64 = 16 << 20;

/// How long a snapshot waits for decoded transactions to become visible before the cycle
/// fails (and is retried).
const INVISIBLE_WAIT: Duration = Duration::from_secs(30);

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

pub(crate) fn pg_error(e: tokio_postgres::Error) -> SourceError {
    // 55006: the slot is still active for the backend of a connection that just went (a
    // killed poller); it frees within seconds. A second poller on the same slot stays refused.
    let transient = SinkError::from_pg("source", &e).is_retriable()
        || e.as_db_error().is_some_and(|d| d.code().code() == "55006");
    let message = match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    SourceError::Postgres { message, transient }
}

fn fatal(message: String) -> SourceError {
    SourceError::Postgres {
        message,
        transient: false,
    }
}

/// Connect to the source with the session settings its values are read under.
pub async fn connect(cfg: &SourceConfig) -> Result<Client, SourceError> {
    let client = crate::sink::pg::connect("source", cfg.url.expose())
        .await
        .map_err(|e| SourceError::Postgres {
            transient: e.is_retriable(),
            message: format!("cannot connect to {}/{}: {e}", cfg.host, cfg.database),
        })?;
    client
        .batch_execute(value::SESSION)
        .await
        .map_err(pg_error)?;
    Ok(client)
}

/// `16/B374D848` as a number.
pub fn parse_lsn(text: &str) -> Result<u64, SourceError> {
    let bad = || fatal(format!("`{text}` is not a WAL position"));
    let (hi, lo) = text.split_once('/').ok_or_else(bad)?;
    let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
    let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
    Ok(hi << 32 | lo)
}

pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// One column from its text form (`None`: NULL).
fn read_value(schema: &TableSchema, col: usize, text: Option<&str>) -> Result<Value, SourceError> {
    let Some(text) = text else {
        return Ok(Value::Null);
    };
    let c = &schema.columns[col];
    let kind = c.source_type.kind();
    value::parse(kind, text).ok_or_else(|| {
        let shown: String = text.chars().take(60).collect();
        let why = match kind {
            ValueKind::Date | ValueKind::Timestamp | ValueKind::TimestampTz => {
                " (edfi-cdc carries no infinity and no date before year 1)"
            }
            _ => "",
        };
        fatal(format!(
            "table {t} column {}: cannot read the {} value {shown:?}{why}; change it at the \
             source, or leave the column out of `[tables.\"{t}\"] columns`",
            c.name,
            c.source_type.name,
            t = schema.id,
        ))
    })
}

/// How a relation of the decoded stream maps onto a replicated table.
struct RelMap {
    table: usize,
    /// Per relation column, its index in the table's replicated columns.
    columns: Vec<Option<usize>>,
}

/// A sink whose committed checkpoint bounds the slot (embedded stream only).
struct SinkPosition {
    name: &'static str,
    url: String,
    client: Option<Client>,
}

/// Reads one PostgreSQL database's slot and sends events and watermarks to the stream.
pub struct Poller {
    config: Arc<ConnectorConfig>,
    client: Option<Client>,
    /// Reads rows back by key (unchanged TOASTed values) while `client` streams the slot.
    lookup: Option<Client>,
    tables: Tables,
    out: Producer,
    /// Kept with a durable stream (Kafka, Kinesis).
    position: Option<PollerPosition>,
    resnapshots: mpsc::UnboundedReceiver<TableId>,
    health: Arc<Health>,
    relations: HashMap<u32, Option<RelMap>>,
    /// Each relation's columns as `pgoutput` last described them, up to the last cycle that
    /// completed; `described_now` holds this cycle's descriptions until it completes (a failed
    /// cycle is read again, and must find the same descriptions new).
    described: HashMap<u32, Vec<pgoutput::Column>>,
    described_now: HashMap<u32, Vec<pgoutput::Column>>,
    /// Tables described anew in this cycle: their later changes are not sent, they are
    /// re-snapshotted in their new shape.
    reshaped: HashSet<usize>,
    /// A table was described for the first time in this process: the catalog is compared with
    /// the tables' shapes after the cycle's changes.
    verify_shapes: bool,
    /// The publication and slot were checked by this process.
    ready: bool,
    /// The slot's confirmed position: transactions committed before it are no longer decoded.
    confirmed: u64,
    sinks: Vec<SinkPosition>,
    /// Transactions decoded that may not be visible to other sessions yet (their commit record
    /// is flushed before they are; with a synchronous standby, for as long as it takes to
    /// answer). A snapshot starting at a version must wait for those at or before it.
    maybe_invisible: Vec<u32>,
    /// Transactions committed before this position were put in `maybe_invisible` when decoded.
    checked_to: u64,
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
        let tables = Tables::new(schemas, start, position.is_some());
        let mut sinks = Vec::new();
        if position.is_none() {
            if let Some(s) = config.sinks.staging.as_ref().filter(|s| s.enabled) {
                sinks.push(SinkPosition {
                    name: crate::sink::staging::SINK,
                    url: s.url.expose().to_string(),
                    client: None,
                });
            }
            if let Some(s) = config.sinks.redshift.as_ref().filter(|s| s.enabled) {
                sinks.push(SinkPosition {
                    name: crate::sink::redshift::SINK,
                    url: s.url.expose().to_string(),
                    client: None,
                });
            }
        }
        Poller {
            config,
            client: None,
            lookup: None,
            tables,
            out,
            position,
            resnapshots,
            health,
            relations: HashMap::new(),
            described: HashMap::new(),
            described_now: HashMap::new(),
            reshaped: HashSet::new(),
            verify_shapes: false,
            ready: false,
            confirmed: 0,
            sinks,
            maybe_invisible: Vec::new(),
            checked_to: 0,
        }
    }

    /// Poll until `stop` is cancelled or a fault outlasts the retry budget.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), SourceError> {
        poll::run(&mut self, stop).await
    }

    async fn connection(&mut self) -> Result<&Client, SourceError> {
        if self.client.is_none() {
            let client = connect(&self.config.source).await?;
            info!(host = %self.config.source.host, database = %self.config.source.database, slot = %self.config.source.slot, "connected to source");
            self.client = Some(client);
            self.relations.clear();
            if !self.ready {
                self.set_up().await?;
                self.ready = true;
            }
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// Check the publication (creating it or adding missing tables where the login may) and the
    /// slot (creating it on first start). Tables whose changes the slot can no longer give are
    /// re-snapshotted.
    async fn set_up(&mut self) -> Result<(), SourceError> {
        let client = self.client.as_ref().expect("connected");
        let src = &self.config.source;
        let ids: Vec<TableId> = self
            .tables
            .runs
            .iter()
            .map(|t| t.schema.id.clone())
            .collect();
        let names = |ids: &[&TableId]| {
            ids.iter()
                .map(|t| format!("{}.{}", queries::quote(&t.schema), queries::quote(&t.name)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // A slot this connector cannot use stops it before anything is created.
        let database: String = client
            .query_one(queries::DATABASE, &[])
            .await
            .map_err(pg_error)?
            .get(0);
        if let Some(r) = client
            .query_opt(queries::SLOT, &[&src.slot])
            .await
            .map_err(pg_error)?
        {
            let (plugin, owner): (Option<String>, Option<String>) = (r.get(0), r.get(3));
            let plugin = plugin.unwrap_or_else(|| "none (a physical slot)".into());
            if owner.as_deref() != Some(database.as_str()) {
                return Err(SourceError::NotDecodable(vec![format!(
                    "replication slot `{}` belongs to database {}, not {database} (slot names are shared by the whole server): set source.slot to another name, or drop that slot if nothing uses it",
                    src.slot,
                    owner.unwrap_or_default()
                )]));
            }
            if plugin != "pgoutput" {
                return Err(SourceError::NotDecodable(vec![format!(
                    "replication slot `{}` uses the plugin `{plugin}`, not pgoutput: drop it or set source.slot to another name",
                    src.slot
                )]));
            }
        }
        let publication = queries::quote(&src.publication);
        let covered: Option<bool> = client
            .query_opt(queries::PUBLICATION, &[&src.publication])
            .await
            .map_err(pg_error)?
            .map(|r| r.get(0));
        let fix = |what: String, e: tokio_postgres::Error| {
            SourceError::NotDecodable(vec![format!("{what}: {}", pg_error(e))])
        };
        // Tables just added to the publication: their changes before now were never published.
        let mut added: Vec<TableId> = Vec::new();
        let mut created_publication = false;
        match covered {
            None => {
                let all: Vec<&TableId> = ids.iter().collect();
                client
                    .batch_execute(&format!(
                        "CREATE PUBLICATION {publication} FOR TABLE {}",
                        names(&all)
                    ))
                    .await
                    .map_err(|e| {
                        fix(
                            format!(
                                "publication `{}` does not exist and cannot be created",
                                src.publication
                            ),
                            e,
                        )
                    })?;
                info!(publication = %src.publication, "publication created");
                created_publication = true;
            }
            Some(false) => {
                return Err(SourceError::NotDecodable(vec![format!(
                    "publication `{}` does not publish every operation: ALTER PUBLICATION {publication} SET (publish = 'insert, update, delete, truncate')",
                    src.publication
                )]));
            }
            Some(true) => {
                let have: HashSet<(String, String)> = client
                    .query(queries::PUBLICATION_TABLES, &[&src.publication])
                    .await
                    .map_err(pg_error)?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                let missing: Vec<&TableId> = ids
                    .iter()
                    .filter(|t| !have.contains(&(t.schema.clone(), t.name.clone())))
                    .collect();
                if !missing.is_empty() {
                    client
                        .batch_execute(&format!(
                            "ALTER PUBLICATION {publication} ADD TABLE {}",
                            names(&missing)
                        ))
                        .await
                        .map_err(|e| {
                            fix(
                                format!(
                                    "publication `{}` lacks {} and cannot be extended",
                                    src.publication,
                                    names(&missing)
                                ),
                                e,
                            )
                        })?;
                    info!(publication = %src.publication, tables = %names(&missing), "tables added to the publication");
                    added = missing.into_iter().cloned().collect();
                }
            }
        }

        let slot = client
            .query_opt(queries::SLOT, &[&src.slot])
            .await
            .map_err(pg_error)?;
        let lost = match slot {
            Some(r) if r.get::<_, bool>(1) => {
                self.confirmed = parse_lsn(&r.get::<_, String>(2))?;
                None
            }
            Some(_) => {
                client
                    .query_one(queries::DROP_SLOT, &[&src.slot])
                    .await
                    .map_err(pg_error)?;
                Some("was invalidated (it held back more WAL than max_slot_wal_keep_size)")
            }
            None => Some("does not exist"),
        };
        if let Some(why) = lost {
            let created: String = client
                .query_one(queries::CREATE_SLOT, &[&src.slot])
                .await
                .map_err(|e| {
                    fix(
                        format!("replication slot `{}` cannot be created", src.slot),
                        e,
                    )
                })?
                .get(0);
            self.confirmed = parse_lsn(&created)?;
            info!(slot = %src.slot, why, at = %created, "replication slot created");
        } else if created_publication
            || self.tables.runs.iter().any(|t| {
                added.contains(&t.schema.id) && !matches!(t.phase, Phase::Queued { at: None, .. })
            })
        {
            // The slot holds changes from before the publication covered tables the sinks
            // hold: those were never published (and before PostgreSQL 18, decoding WAL older
            // than the publication fails). Move the slot to now. Every table that needs older
            // changes is then re-snapshotted below, and again after a crash, since the slot's
            // own position says so.
            let now: String = client
                .query_one(queries::FLUSH_LSN, &[])
                .await
                .map_err(pg_error)?
                .get(0);
            client
                .query_one(queries::ADVANCE, &[&src.slot, &now])
                .await
                .map_err(pg_error)?;
            self.confirmed = parse_lsn(&now)?;
            warn!(slot = %src.slot, at = %now, "the publication was created or extended under an existing slot: the slot moves to now");
        }
        // Every table that needs changes from before the slot's position lost them.
        let gone: Vec<TableId> = self
            .tables
            .runs
            .iter()
            .filter(|t| match t.phase {
                Phase::Streaming { last }
                | Phase::Snapshotting { version: last, .. }
                | Phase::Queued { at: Some(last), .. } => ((last + 1) as u64) < self.confirmed,
                Phase::Queued { at: None, .. } => false,
            })
            .map(|t| t.schema.id.clone())
            .collect();
        if !gone.is_empty() {
            crate::metrics::slot_reset(&self.config.name);
            warn!(slot = %src.slot, confirmed = %lsn_text(self.confirmed), tables = gone.len(),
                "the replication slot no longer holds changes the sinks need (dropped, invalidated, advanced by hand, or the tables were not in the publication): re-snapshotting those tables");
            for t in &gone {
                self.tables.request_snapshot(t);
            }
        }
        Ok(())
    }

    async fn lookup_row(
        &mut self,
        schema: &Arc<TableSchema>,
        key: &[Value],
    ) -> Result<Option<Vec<Value>>, SourceError> {
        if self.lookup.is_none() {
            self.lookup = Some(connect(&self.config.source).await?);
        }
        let client = self.lookup.as_ref().expect("connected above");
        let params: Vec<Option<String>> = key.iter().map(value::to_text).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let row = client
            .query_opt(&queries::row_by_key(schema), &refs)
            .await
            .map_err(pg_error)?;
        row.map(|r| {
            (0..schema.columns.len())
                .map(|c| read_value(schema, c, r.get(c)))
                .collect()
        })
        .transpose()
    }

    /// A decoded tuple as the table's row; the indexes of the columns it left out as unchanged.
    fn tuple_row(
        &self,
        map: &RelMap,
        tuple: &[Datum],
    ) -> Result<(Vec<Value>, Vec<usize>), SourceError> {
        let schema = &self.tables.runs[map.table].schema;
        let mut row = vec![Value::Null; schema.columns.len()];
        let mut unchanged = Vec::new();
        for (datum, col) in tuple.iter().zip(&map.columns) {
            let Some(c) = *col else { continue };
            match datum {
                Datum::Null => {}
                Datum::Unchanged => unchanged.push(c),
                Datum::Text(t) => row[c] = read_value(schema, c, Some(t))?,
            }
        }
        Ok((row, unchanged))
    }

    /// A Relation message, inside the transaction committed at `version`: a description of a
    /// table unlike the one before it (in this cycle, else the last completed one) marks the
    /// table reshaped when the table takes that transaction's changes. Descriptions inside
    /// transactions it has already taken (the slot is read again from its confirmed position in
    /// every cycle) only become the one to compare with.
    fn relation(&mut self, r: pgoutput::Relation, version: Option<i64>) {
        let found = self.tables.runs.iter().position(|t| {
            t.schema.id.schema.eq_ignore_ascii_case(&r.namespace)
                && t.schema.id.name.eq_ignore_ascii_case(&r.name)
        });
        let map = found.map(|i| {
            let schema = &self.tables.runs[i].schema;
            RelMap {
                table: i,
                columns: r
                    .columns
                    .iter()
                    .map(|c| schema.columns.iter().position(|s| s.name == c.name))
                    .collect(),
            }
        });
        if let Some(i) = found.filter(|&i| version.is_some_and(|v| self.wanted(i, v))) {
            let before = self
                .described_now
                .get(&r.oid)
                .or_else(|| self.described.get(&r.oid));
            match before {
                None => self.verify_shapes = true,
                Some(before) if self.replicated(i, before) != self.replicated(i, &r.columns) => {
                    self.reshaped.insert(i);
                }
                Some(_) => {}
            }
        }
        self.described_now.insert(r.oid, r.columns);
        self.relations.insert(r.oid, map);
    }

    /// What of a description of table `i` its replication depends on: every column, or with a
    /// `columns` list in the connector only the listed ones (the key is always listed).
    fn replicated<'a>(
        &self,
        i: usize,
        columns: &'a [pgoutput::Column],
    ) -> Vec<&'a pgoutput::Column> {
        let schema = &self.tables.runs[i].schema;
        let listed = self
            .config
            .table_options(&schema.id)
            .is_some_and(|o| o.columns.is_some());
        columns
            .iter()
            .filter(|c| !listed || schema.columns.iter().any(|s| s.name == c.name))
            .collect()
    }

    /// After a cycle's changes: the tables described anew, and when a table was described for
    /// the first time in this process every table whose shape the catalog gives otherwise, take
    /// their new shape and are re-snapshotted in it, each said in the log and
    /// `edfi_cdc_schema_changes_total`. A table that can no longer be read as configured (a
    /// listed column dropped, the primary key gone) stops the poller, naming it.
    async fn reshape(&mut self) -> Result<(), SourceError> {
        if self.reshaped.is_empty() && !self.verify_shapes {
            return Ok(());
        }
        let config = self.config.clone();
        let catalog = catalog::discover(self.connection().await?, &config).await?;
        self.verify_shapes = false;
        let reshaped = std::mem::take(&mut self.reshaped);
        for new in catalog.schemas {
            let Some(i) = self.tables.position(&new.id) else {
                continue;
            };
            let changes = new.changes_from(&self.tables.runs[i].schema);
            if changes.is_empty() && !reshaped.contains(&i) {
                continue;
            }
            let changes = if changes.is_empty() {
                "described anew by the source, same shape".to_string()
            } else {
                changes.join("; ")
            };
            warn!(table = %new.id, changes = %changes,
                "the table changed at the source: re-snapshotting it in its new shape");
            crate::metrics::schema_change(&config.name, &new.id.to_string(), "poller");
            self.tables.runs[i].schema = new.clone();
            self.tables.request_snapshot(&new.id);
        }
        Ok(())
    }

    async fn cycle_inner(&mut self) -> Result<u64, SourceError> {
        let started = Instant::now();
        // Sinks that are behind are waited for here, not while the slot's changes are read (the
        // peek's snapshot would hold back the source's vacuum for as long).
        self.out.wait_for_room().await?;
        let flush: String = self
            .connection()
            .await?
            .query_one(queries::FLUSH_LSN, &[])
            .await
            .map_err(pg_error)?
            .get(0);
        let flush = parse_lsn(&flush)?;
        let from = (self.tables.last_watermark().max(0) as u64 + 1).max(self.confirmed);
        let upto = flush.min(from + WAL_PER_CYCLE).max(from);
        let version = upto as i64 - 1;

        self.described_now.clear();
        self.reshaped.clear();
        self.verify_shapes = false;
        let client = self.client.take().expect("connected above");
        let result = self.read_changes(&client, upto).await;
        self.client = Some(client);
        let (events, truncated, commit_time) = result?;
        self.checked_to = self.checked_to.max(upto);

        for i in truncated {
            let id = self.tables.runs[i].schema.id.clone();
            warn!(table = %id, "table truncated at the source: re-snapshotting it");
            self.tables.request_snapshot(&id);
        }
        self.reshape().await?;
        self.start_snapshots(version).await?;
        self.tables
            .end_cycle(version, commit_time, events, &self.out, &mut self.position)
            .await?;
        self.described.extend(self.described_now.drain());
        self.advance_slot().await?;
        crate::metrics::cycle(
            &self.config.name,
            started.elapsed().as_secs_f64(),
            events,
            version,
        );
        Ok(events)
    }

    /// Send the changes of the transactions committed before `upto`. Returns the number of
    /// events, the tables truncated, and the last commit's time.
    async fn read_changes(
        &mut self,
        client: &Client,
        upto: u64,
    ) -> Result<(u64, HashSet<usize>, Option<DateTime<Utc>>), SourceError> {
        let src = self.config.source.clone();
        let upto_text = lsn_text(upto);
        let no_limit: Option<i32> = None;
        let params: [&(dyn ToSql + Sync); 4] = [&src.slot, &upto_text, &no_limit, &src.publication];
        let rows = client
            .query_raw(queries::PEEK, params)
            .await
            .map_err(pg_error)?;
        pin_mut!(rows);
        let connector = self.config.name.clone();
        let mut events = 0u64;
        let mut truncated = HashSet::new();
        let mut txn: Option<(i64, Option<DateTime<Utc>>)> = None;
        let mut last_commit = None;
        let mut first: HashMap<usize, (i64, DateTime<Utc>)> = HashMap::new();
        while let Some(row) = rows.try_next().await.map_err(pg_error)? {
            let data: &[u8] = row.get(0);
            let msg = pgoutput::decode(data).map_err(|e| fatal(e.to_string()))?;
            let (relation, old, new, op) = match msg {
                pgoutput::Message::Begin {
                    final_lsn,
                    commit_time,
                    xid,
                } => {
                    if final_lsn < upto && final_lsn >= self.checked_to {
                        self.maybe_invisible.push(xid);
                    }
                    // A commit at or past the bound belongs to the next cycle.
                    txn = (final_lsn < upto).then(|| {
                        let at = DateTime::from_timestamp_micros(PG_EPOCH_MICROS + commit_time);
                        (final_lsn as i64, at)
                    });
                    continue;
                }
                pgoutput::Message::Commit { .. } => {
                    if let Some((_, at)) = txn.take() {
                        last_commit = at.or(last_commit);
                    }
                    continue;
                }
                pgoutput::Message::Relation(r) => {
                    self.relation(r, txn.map(|(version, _)| version));
                    continue;
                }
                pgoutput::Message::Insert { relation, new } => {
                    (relation, None, Some(new), Op::Create)
                }
                pgoutput::Message::Update { relation, old, new } => {
                    (relation, old, Some(new), Op::Update)
                }
                pgoutput::Message::Delete { relation, old } => {
                    (relation, Some(old), None, Op::Delete)
                }
                pgoutput::Message::Truncate { relations } => {
                    if let Some((version, _)) = txn {
                        for oid in relations {
                            if let Some(Some(m)) = self.relations.get(&oid) {
                                if self.wanted(m.table, version) {
                                    truncated.insert(m.table);
                                }
                            }
                        }
                    }
                    continue;
                }
                pgoutput::Message::Other => continue,
            };
            let Some((version, commit_time)) = txn else {
                continue;
            };
            let Some(Some(map)) = self.relations.get(&relation) else {
                continue;
            };
            let i = map.table;
            if !self.wanted(i, version) || truncated.contains(&i) || self.reshaped.contains(&i) {
                continue;
            }
            let schema = self.tables.runs[i].schema.clone();
            let key_of = |row: &[Value]| -> Vec<Value> {
                schema.key.iter().map(|&k| row[k].clone()).collect()
            };
            let mut out = Vec::new();
            let old_key = match &old {
                Some(t) => Some(key_of(&self.tuple_row(map, t)?.0)),
                None => None,
            };
            match new {
                None => out.push((Op::Delete, old_key.unwrap_or_default(), None)),
                Some(t) => {
                    let (mut row, unchanged) = self.tuple_row(map, &t)?;
                    let key = key_of(&row);
                    if let Some(old) = old_key.filter(|k| k != &key) {
                        out.push((Op::Delete, old, None));
                    }
                    if unchanged.is_empty() {
                        out.push((op, key, Some(row)));
                    } else {
                        match self.lookup_row(&schema, &key).await? {
                            Some(current) => {
                                for c in unchanged {
                                    row[c] = current[c].clone();
                                }
                                out.push((op, key, Some(row)));
                            }
                            // Deleted since: its delete follows in the slot.
                            None => out.push((Op::Delete, key, None)),
                        }
                    }
                }
            }
            for (op, key, after) in out {
                events += 1;
                crate::metrics::source_events(&connector, &schema.id.to_string(), op.code(), 1);
                if let Some(at) = commit_time {
                    first.entry(i).or_insert((version, at));
                }
                self.out
                    .send(Message::Change(ChangeEvent {
                        table: schema.clone(),
                        op,
                        key,
                        after,
                        version,
                        commit_time,
                    }))
                    .await?;
            }
        }
        for (i, (v, at)) in first {
            crate::metrics::sent(
                &connector,
                &self.tables.runs[i].schema.id.to_string(),
                v,
                at,
            );
        }
        Ok((events, truncated, last_commit))
    }

    /// Whether table `i` takes a change committed at `version`.
    fn wanted(&self, i: usize, version: i64) -> bool {
        matches!(self.tables.runs[i].phase, Phase::Streaming { last } if version > last)
    }

    /// Start every queued snapshot at the cycle's version, before its watermark (as on SQL
    /// Server): a sink that holds the table must see the start before a watermark moves its
    /// checkpoint past changes the poller no longer sends. Their chunks must see every
    /// transaction the version covers: it first waits until those decoded are visible.
    async fn start_snapshots(&mut self, version: i64) -> Result<(), SourceError> {
        self.forget_visible().await?;
        let queued: Vec<usize> = self
            .tables
            .queue
            .iter()
            .copied()
            .filter(|&i| matches!(self.tables.runs[i].phase, Phase::Queued { .. }))
            .collect();
        if queued.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        while !self.maybe_invisible.is_empty() {
            if started.elapsed() > INVISIBLE_WAIT {
                return Err(SourceError::Postgres {
                    message: format!(
                        "transactions {:?} are committed in the WAL but still not visible after {INVISIBLE_WAIT:?} (a synchronous standby not answering?)",
                        self.maybe_invisible
                    ),
                    transient: true,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.forget_visible().await?;
        }
        for i in queued {
            let sql = queries::count_rows(&self.tables.runs[i].schema);
            let total: i64 = self
                .connection()
                .await?
                .query_one(&sql, &[])
                .await
                .map_err(pg_error)?
                .get(0);
            self.tables
                .start_snapshot(
                    i,
                    version,
                    Some(total as u64),
                    &self.out,
                    &mut self.position,
                )
                .await?;
        }
        Ok(())
    }

    /// Drop the decoded transactions that are visible now from [`Poller::maybe_invisible`].
    async fn forget_visible(&mut self) -> Result<(), SourceError> {
        if self.maybe_invisible.is_empty() {
            return Ok(());
        }
        let rows = self
            .connection()
            .await?
            .query(queries::IN_PROGRESS, &[])
            .await
            .map_err(pg_error)?;
        let xmax = rows
            .iter()
            .find_map(|r| r.get::<_, Option<i64>>(0))
            .map_or(0, |x| x as u32);
        let in_progress: HashSet<u32> = rows
            .iter()
            .filter_map(|r| r.get::<_, Option<i64>>(1).map(|x| x as u32))
            .collect();
        // At or past xmax (modulo 2^32, as xids compare): not completed yet either.
        self.maybe_invisible
            .retain(|&x| in_progress.contains(&x) || x.wrapping_sub(xmax) as i32 >= 0);
        Ok(())
    }

    /// Advance the slot to just past the lowest version still needed: by a table of this
    /// poller, and (embedded stream) by a sink's committed checkpoint. A sink whose checkpoint
    /// cannot be read holds the slot where it is.
    async fn advance_slot(&mut self) -> Result<(), SourceError> {
        let mut needed = self.tables.lowest_needed();
        let schemas: Vec<Arc<TableSchema>> =
            self.tables.runs.iter().map(|t| t.schema.clone()).collect();
        for sink in &mut self.sinks {
            if sink.client.is_none() {
                match crate::sink::pg::connect(sink.name, &sink.url).await {
                    Ok(c) => sink.client = Some(c),
                    Err(e) => {
                        warn!(sink = sink.name, error = %e, "cannot read the sink's checkpoint; the slot stays where it is");
                        return Ok(());
                    }
                }
            }
            let client = sink.client.as_ref().expect("connected above");
            let cp = match checkpoint::load(client, &self.config.name, sink.name, &schemas).await {
                Ok(cp) => cp,
                Err(e) => {
                    debug!(sink = sink.name, error = %e, "sink checkpoint not readable yet; the slot stays where it is");
                    sink.client = None;
                    return Ok(());
                }
            };
            for start in checkpoint::resume_point(&[cp], &schemas).values() {
                let v = match start {
                    TableStart::Stream { version } | TableStart::ResumeSnapshot { version, .. } => {
                        *version
                    }
                    TableStart::Snapshot => continue,
                };
                needed = Some(needed.map_or(v, |n: i64| n.min(v)));
            }
        }
        let client = self.client.as_ref().expect("connected in this cycle");
        let slot = &self.config.source.slot;
        if let Some(n) = needed {
            let target = (n + 1) as u64;
            if target > self.confirmed {
                client
                    .query_one(queries::ADVANCE, &[slot, &lsn_text(target)])
                    .await
                    .map_err(pg_error)?;
                self.confirmed = target;
            }
        }
        if let Some(r) = client
            .query_opt(queries::SLOT_LAG, &[slot])
            .await
            .map_err(pg_error)?
        {
            crate::metrics::slot_retained(
                &self.config.name,
                r.get::<_, Option<i64>>(0).unwrap_or(0),
            );
        }
        Ok(())
    }

    async fn snapshot_step_inner(&mut self) -> Result<bool, SourceError> {
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
        let sql = queries::snapshot_chunk(&schema, last_key.is_some());
        let limit = i64::from(chunk);
        let keys: Vec<Option<String>> = last_key.iter().flatten().map(value::to_text).collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
        params.extend(keys.iter().map(|k| k as &(dyn ToSql + Sync)));
        let rows = self
            .connection()
            .await?
            .query(&sql, &params)
            .await
            .map_err(pg_error)?;
        let mut read = 0u32;
        let mut new_last = None;
        for r in rows {
            let row = (0..schema.columns.len())
                .map(|c| read_value(&schema, c, r.get(c)))
                .collect::<Result<Vec<_>, _>>()?;
            read += 1;
            let ev = snapshot_row(&schema, row, version);
            new_last = Some(ev.key.clone());
            self.out.send(Message::Change(ev)).await?;
        }
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

    async fn cycle(&mut self) -> Result<u64, SourceError> {
        let result = self.cycle_inner().await;
        if result.is_err() {
            self.client = None;
            self.lookup = None;
        }
        result
    }

    async fn snapshot_step(&mut self) -> Result<bool, SourceError> {
        let result = self.snapshot_step_inner().await;
        if result.is_err() {
            self.client = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_positions_read_and_print_as_postgres_writes_them() {
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(lsn_text(parse_lsn("0/0").unwrap()), "0/0");
        assert!(parse_lsn("16B374D848").is_err());
    }
}
