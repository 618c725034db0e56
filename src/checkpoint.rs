//! Where each sink's position lives, and where the poller resumes.
//!
//! Every sink keeps its checkpoint in its own target database, schema `edfi_cdc`, written in
//! the same transaction as the data it covers:
//! - `edfi_cdc.table_state`: per connector, sink and source table — the phase (`snapshot`,
//!   `pending_swap`, `streaming`), the version the target table reflects, snapshot progress;
//! - `edfi_cdc.sink_state`: per connector and sink — the last applied watermark and its source
//!   commit time;
//! - `edfi_cdc.stream_positions`: with Kafka or Kinesis, per sink lane and stream partition
//!   (topic partition, shard) — the position of the last message the lane's transactions
//!   cover, and the worker that wrote it. Each lane transaction checks that the stored
//!   positions are still the ones it started from, so a worker that lost its partitions to
//!   another (a rebalance) cannot commit over the new owner's work;
//! - `edfi_cdc.stream_leases`: for a lane over the whole stream (Kinesis's staging lane, the
//!   Redshift sink's lane), which worker applies it and until when; a worker renews its lease
//!   while it runs, and another takes the lane over once it expired;
//! - `edfi_cdc.poller_runs`: with Kafka or Kinesis, per connector, the first run of the last
//!   poller start (see [`crate::stream::lane::Run`]): a restarted poller's barriers are ordered
//!   after the dead one's by it, not by the hosts' clocks;
//! - `edfi_cdc.resnapshot_requests`: tables an operator asked to re-snapshot
//!   (`edfi-cdc resnapshot`), seen by the running sink within seconds and deleted in the
//!   transaction that starts the snapshot.
//!
//! On start the poller resumes every table from the least advanced position over all sinks
//! ([`resume_point`]); a sink skips what it already holds.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use tokio_postgres::GenericClient;

use crate::event::{TableId, TableSchema, Value};
use crate::stream::lane::{Run, RUNS_PER_START};

/// The checkpoint tables, in SQL that PostgreSQL and Redshift both run: no jsonb (keys are JSON
/// text), no CHECK constraints or indexes, no `ON CONFLICT`, no server clock (times are bound).
pub const SCHEMA_DDL: &str = "
CREATE SCHEMA IF NOT EXISTS edfi_cdc;
CREATE TABLE IF NOT EXISTS edfi_cdc.table_state (
    connector           varchar(256)   NOT NULL,
    sink                varchar(64)    NOT NULL,
    source_schema       varchar(256)   NOT NULL,
    source_table        varchar(256)   NOT NULL,
    target_schema       varchar(256)   NOT NULL,
    target_table        varchar(256)   NOT NULL,
    phase               varchar(16)    NOT NULL,
    version             bigint         NOT NULL,
    commit_time         timestamptz,
    snapshot_last_key   varchar(65535),
    snapshot_rows       bigint         NOT NULL,
    snapshot_total_rows bigint,
    snapshot_started_at timestamptz,
    updated_at          timestamptz    NOT NULL,
    source_shape        varchar(65535),
    snapshot_into_target boolean,
    PRIMARY KEY (connector, sink, source_schema, source_table)
);
CREATE TABLE IF NOT EXISTS edfi_cdc.sink_state (
    connector   varchar(256) NOT NULL,
    sink        varchar(64)  NOT NULL,
    version     bigint       NOT NULL,
    commit_time timestamptz,
    updated_at  timestamptz  NOT NULL,
    PRIMARY KEY (connector, sink)
);
CREATE TABLE IF NOT EXISTS edfi_cdc.stream_positions (
    connector   varchar(256) NOT NULL,
    sink        varchar(64)  NOT NULL,
    part        varchar(512) NOT NULL,
    position    varchar(256) NOT NULL,
    version     bigint,
    worker      varchar(256) NOT NULL,
    updated_at  timestamptz  NOT NULL,
    PRIMARY KEY (connector, sink, part)
);
CREATE TABLE IF NOT EXISTS edfi_cdc.stream_leases (
    connector   varchar(256) NOT NULL,
    sink        varchar(64)  NOT NULL,
    worker      varchar(256) NOT NULL,
    expires_at  timestamptz  NOT NULL,
    PRIMARY KEY (connector, sink)
);
CREATE TABLE IF NOT EXISTS edfi_cdc.verify_results (
    connector     varchar(256) NOT NULL,
    sink          varchar(64)  NOT NULL,
    source_schema varchar(256) NOT NULL,
    source_table  varchar(256) NOT NULL,
    differing     bigint       NOT NULL,
    unsettled     bigint       NOT NULL,
    verified_at   timestamptz  NOT NULL,
    PRIMARY KEY (connector, sink, source_schema, source_table)
);
CREATE TABLE IF NOT EXISTS edfi_cdc.poller_runs (
    connector   varchar(256) NOT NULL,
    run         bigint       NOT NULL,
    updated_at  timestamptz  NOT NULL,
    PRIMARY KEY (connector)
);
CREATE TABLE IF NOT EXISTS edfi_cdc.resnapshot_requests (
    connector     varchar(256) NOT NULL,
    source_schema varchar(256) NOT NULL,
    source_table  varchar(256) NOT NULL,
    requested_at  timestamptz  NOT NULL,
    PRIMARY KEY (connector, source_schema, source_table)
);
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Rows are being loaded into a shadow table; the target is untouched (but for an initial
    /// load into an empty target, which takes the rows itself: `snapshot_into_target`).
    Snapshot,
    /// The shadow table is complete as of `version`; it replaces the target at the next
    /// watermark, together with the changes after `version`.
    PendingSwap,
    /// The target reflects every change up to `version`.
    Streaming,
}

impl Phase {
    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "snapshot" => Phase::Snapshot,
            "pending_swap" => Phase::PendingSwap,
            "streaming" => Phase::Streaming,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableCheckpoint {
    pub phase: Phase,
    pub version: i64,
    pub commit_time: Option<DateTime<Utc>>,
    pub snapshot_last_key: Option<Vec<Value>>,
    pub snapshot_rows: u64,
    pub snapshot_total_rows: Option<u64>,
    pub snapshot_started_at: Option<DateTime<Utc>>,
    /// The snapshot loads the target itself, not a shadow table: the target was empty when it
    /// started (an initial load), or held only rows of an earlier such snapshot never
    /// published. Cleared when the table is published.
    pub snapshot_into_target: bool,
}

impl TableCheckpoint {
    /// What [`await_snapshot`] stores: the table awaits a snapshot from `version` on.
    pub fn await_snapshot(&mut self, version: i64) {
        self.phase = Phase::Snapshot;
        self.version = self.version.max(version);
        self.commit_time = None;
        self.snapshot_last_key = None;
        self.snapshot_rows = 0;
        self.snapshot_total_rows = None;
        self.snapshot_started_at = None;
    }
}

/// One sink's stored position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkCheckpoint {
    pub tables: HashMap<TableId, TableCheckpoint>,
    /// The shape each table's last snapshot was read in ([`crate::event::shape_digest`]), where
    /// stored (checkpoints older than this column have none): a table whose catalog shape
    /// differs changed at the source since.
    pub shapes: HashMap<TableId, String>,
    /// Tables an operator asked to re-snapshot.
    pub resnapshot_requests: Vec<TableId>,
}

/// Where the poller starts a table.
#[derive(Debug, Clone, PartialEq)]
pub enum TableStart {
    /// Read changes after `version`.
    Stream { version: i64 },
    /// Continue the snapshot begun at `version` after `last_key`.
    ResumeSnapshot {
        version: i64,
        last_key: Option<Vec<Value>>,
        rows: u64,
        total: Option<u64>,
    },
    /// Take a new snapshot.
    Snapshot,
}

/// The least advanced position of each table over all sinks. A table some sink has never
/// synced (or was asked to re-snapshot) is snapshotted anew; a snapshot in progress resumes
/// only when every other sink either shares it or already streams from at least its version;
/// otherwise tables stream from the lowest version any sink holds.
pub fn resume_point(
    sinks: &[SinkCheckpoint],
    tables: &[Arc<TableSchema>],
) -> HashMap<TableId, TableStart> {
    let mut out = HashMap::new();
    for t in tables {
        let states: Vec<Option<&TableCheckpoint>> = sinks
            .iter()
            .map(|s| {
                if s.resnapshot_requests.contains(&t.id) {
                    None
                } else {
                    s.tables.get(&t.id)
                }
            })
            .collect();
        let start = if states.is_empty() || states.iter().any(Option::is_none) {
            TableStart::Snapshot
        } else {
            let states: Vec<&TableCheckpoint> = states.into_iter().flatten().collect();
            let snapshots: Vec<&&TableCheckpoint> = states
                .iter()
                .filter(|c| c.phase == Phase::Snapshot)
                .collect();
            match snapshots.iter().min_by_key(|c| c.snapshot_rows) {
                Some(least) => {
                    let compatible = states.iter().all(|c| match c.phase {
                        Phase::Snapshot => c.version == least.version,
                        _ => c.version >= least.version,
                    });
                    if compatible {
                        TableStart::ResumeSnapshot {
                            version: least.version,
                            last_key: least.snapshot_last_key.clone(),
                            rows: least.snapshot_rows,
                            total: least.snapshot_total_rows,
                        }
                    } else {
                        TableStart::Snapshot
                    }
                }
                None => TableStart::Stream {
                    version: states.iter().map(|c| c.version).min().unwrap_or(0),
                },
            }
        };
        out.insert(t.id.clone(), start);
    }
    out
}

/// JSON array of a key, as stored in `snapshot_last_key`.
pub fn key_to_json(key: &[Value]) -> Json {
    Json::Array(key.iter().map(Value::to_json).collect())
}

pub fn key_from_json(schema: &TableSchema, json: &Json) -> Option<Vec<Value>> {
    let items = json.as_array()?;
    schema
        .key_columns()
        .zip(items)
        .map(|(c, j)| Value::from_json(c.source_type.kind(), j).ok())
        .collect()
}

/// Create the checkpoint tables if missing. A staging database set up by an earlier version
/// (`snapshot_last_key jsonb`) has the column turned into JSON text.
pub async fn install(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA_DDL).await?;
    let jsonb = client
        .query_opt(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'edfi_cdc' \
             AND table_name = 'table_state' AND column_name = 'snapshot_last_key' AND data_type = 'jsonb'",
            &[],
        )
        .await?
        .is_some();
    if jsonb {
        client
            .batch_execute(
                "ALTER TABLE edfi_cdc.table_state ALTER COLUMN snapshot_last_key \
                 TYPE varchar(65535) USING snapshot_last_key::text",
            )
            .await?;
    }
    for (column, definition) in [
        ("source_shape", "varchar(65535)"),
        ("snapshot_into_target", "boolean"),
    ] {
        let present = client
            .query_opt(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = 'edfi_cdc' \
                 AND table_name = 'table_state' AND column_name = $1",
                &[&column],
            )
            .await?
            .is_some();
        if !present {
            client
                .batch_execute(&format!(
                    "ALTER TABLE edfi_cdc.table_state ADD COLUMN {column} {definition}"
                ))
                .await?;
        }
    }
    Ok(())
}

/// Read one sink's checkpoint for the given tables.
pub async fn load(
    client: &impl GenericClient,
    connector: &str,
    sink: &str,
    schemas: &[Arc<TableSchema>],
) -> Result<SinkCheckpoint, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT source_schema, source_table, phase, version, commit_time, snapshot_last_key, \
             snapshot_rows, snapshot_total_rows, snapshot_started_at, source_shape, \
             snapshot_into_target FROM edfi_cdc.table_state WHERE connector = $1 AND sink = $2",
            &[&connector, &sink],
        )
        .await?;
    let mut cp = SinkCheckpoint::default();
    for r in rows {
        let id = TableId::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let Some(schema) = schemas.iter().find(|s| s.id == id) else {
            continue;
        };
        let Some(phase) = Phase::parse(r.get(2)) else {
            continue;
        };
        let last_key: Option<Json> = r
            .get::<_, Option<String>>(5)
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(shape) = r.get::<_, Option<String>>(9) {
            cp.shapes.insert(id.clone(), shape);
        }
        cp.tables.insert(
            id,
            TableCheckpoint {
                phase,
                version: r.get(3),
                commit_time: r.get(4),
                snapshot_last_key: last_key.as_ref().and_then(|j| key_from_json(schema, j)),
                snapshot_rows: r.get::<_, i64>(6) as u64,
                snapshot_total_rows: r.get::<_, Option<i64>>(7).map(|n| n as u64),
                snapshot_started_at: r.get(8),
                snapshot_into_target: r.get::<_, Option<bool>>(10).unwrap_or(false),
            },
        );
    }
    cp.resnapshot_requests = resnapshot_requests(client, connector).await?;
    Ok(cp)
}

/// Pending re-snapshot requests of a connector.
pub async fn resnapshot_requests(
    client: &impl GenericClient,
    connector: &str,
) -> Result<Vec<TableId>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT source_schema, source_table FROM edfi_cdc.resnapshot_requests WHERE connector = $1",
            &[&connector],
        )
        .await?
        .iter()
        .map(|r| TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// A table's snapshot starts (or restarts) at `version`: its row says `snapshot` with no
/// progress, and an operator's request for it is consumed (returns whether there was one). Run
/// in the transaction that creates the snapshot's shadow table, so a crash leaves either both
/// or neither.
#[allow(clippy::too_many_arguments)]
pub async fn begin_snapshot(
    tx: &impl GenericClient,
    connector: &str,
    sink: &str,
    table: &TableSchema,
    target_schema: &str,
    target_table: &str,
    version: i64,
    total_rows: Option<u64>,
) -> Result<bool, tokio_postgres::Error> {
    let shape = crate::event::shape_digest(table);
    let table = &table.id;
    let consumed = tx
        .execute(
            "DELETE FROM edfi_cdc.resnapshot_requests WHERE connector = $1 AND source_schema = $2 \
         AND source_table = $3",
            &[&connector, &table.schema, &table.name],
        )
        .await?;
    let now = Utc::now();
    let total = total_rows.map(|n| n as i64);
    let updated = tx
        .execute(
            "UPDATE edfi_cdc.table_state SET target_schema = $5, target_table = $6, phase = 'snapshot', \
             version = $7, commit_time = NULL, snapshot_last_key = NULL, snapshot_rows = 0, \
             snapshot_total_rows = $8, snapshot_started_at = $9, updated_at = $9, source_shape = $10, \
             snapshot_into_target = NULL \
             WHERE connector = $1 AND sink = $2 AND source_schema = $3 AND source_table = $4",
            &[&connector, &sink, &table.schema, &table.name, &target_schema, &target_table, &version, &total, &now, &shape],
        )
        .await?;
    if updated == 0 {
        tx.execute(
            "INSERT INTO edfi_cdc.table_state (connector, sink, source_schema, source_table, target_schema, \
             target_table, phase, version, snapshot_rows, snapshot_total_rows, snapshot_started_at, updated_at, \
             source_shape) VALUES ($1, $2, $3, $4, $5, $6, 'snapshot', $7, 0, $8, $9, $9, $10)",
            &[&connector, &sink, &table.schema, &table.name, &target_schema, &target_table, &version, &total, &now, &shape],
        )
        .await?;
    }
    Ok(consumed > 0)
}

/// The snapshot [`begin_snapshot`] started loads the target itself (see
/// [`TableCheckpoint::snapshot_into_target`]). Run in the same transaction.
pub async fn snapshot_into_target(
    tx: &impl GenericClient,
    connector: &str,
    sink: &str,
    table: &TableId,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE edfi_cdc.table_state SET snapshot_into_target = TRUE \
         WHERE connector = $1 AND sink = $2 AND source_schema = $3 AND source_table = $4",
        &[&connector, &sink, &table.schema, &table.name],
    )
    .await?;
    Ok(())
}

/// Whether `table`'s snapshot loaded the target itself and was not published since (so the
/// target holds only rows of that load).
pub async fn unpublished_load_into_target(
    tx: &impl GenericClient,
    connector: &str,
    sink: &str,
    table: &TableId,
) -> Result<bool, tokio_postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM edfi_cdc.table_state WHERE connector = $1 AND sink = $2 \
             AND source_schema = $3 AND source_table = $4 AND snapshot_into_target \
             AND phase <> 'streaming'",
            &[&connector, &sink, &table.schema, &table.name],
        )
        .await?
        .is_some())
}

/// Snapshot rows up to `last_key` (`rows` in all) are in the shadow table (or the target, see
/// [`snapshot_into_target`]). Run in the
/// transaction that loaded them.
pub async fn snapshot_progress(
    tx: &impl GenericClient,
    connector: &str,
    sink: &str,
    table: &TableId,
    last_key: &[Value],
    rows: u64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE edfi_cdc.table_state SET snapshot_last_key = $5, snapshot_rows = $6, updated_at = $7 \
         WHERE connector = $1 AND sink = $2 AND source_schema = $3 AND source_table = $4",
        &[&connector, &sink, &table.schema, &table.name, &key_to_json(last_key).to_string(), &(rows as i64), &Utc::now()],
    )
    .await?;
    Ok(())
}

/// The shadow table holds the whole snapshot (`rows` rows); it replaces the target at the next
/// applied watermark.
pub async fn snapshot_loaded(
    client: &impl GenericClient,
    connector: &str,
    sink: &str,
    table: &TableId,
    rows: u64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE edfi_cdc.table_state SET phase = 'pending_swap', snapshot_rows = $5, updated_at = $6 \
             WHERE connector = $1 AND sink = $2 AND source_schema = $3 AND source_table = $4",
            &[&connector, &sink, &table.schema, &table.name, &(rows as i64), &Utc::now()],
        )
        .await?;
    Ok(())
}

/// The version of the last watermark `sink` applied, if any.
pub async fn applied_version(
    tx: &impl GenericClient,
    connector: &str,
    sink: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT version FROM edfi_cdc.sink_state WHERE connector = $1 AND sink = $2",
            &[&connector, &sink],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Every streaming or published table now reflects the source up to watermark `w`, but those
/// of `held`: a sink that does not take a snapshot in progress of a table (it already holds the
/// table from that snapshot's version on) receives none of the table's changes until the
/// snapshot ends — the poller sends them after it — so the table stays where it was. Run in the
/// transaction that applied the changes up to `w`.
pub async fn advance(
    tx: &impl GenericClient,
    connector: &str,
    sink: &str,
    w: &crate::event::Watermark,
    held: &[&TableId],
) -> Result<(), tokio_postgres::Error> {
    let now = Utc::now();
    // Literals, not parameters: the same text runs on Redshift (no arrays).
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let except: String = held
        .iter()
        .map(|t| {
            format!(
                " AND NOT (source_schema = {} AND source_table = {})",
                literal(&t.schema),
                literal(&t.name)
            )
        })
        .collect();
    tx.execute(
        &format!(
            "UPDATE edfi_cdc.table_state SET phase = 'streaming', version = $3, commit_time = $4, \
             snapshot_last_key = NULL, snapshot_into_target = NULL, updated_at = $5 \
             WHERE connector = $1 AND sink = $2 AND phase IN ('streaming', 'pending_swap') \
             AND version <= $3{except}"
        ),
        &[&connector, &sink, &w.version, &w.commit_time, &now],
    )
    .await?;
    let updated = tx
        .execute(
            "UPDATE edfi_cdc.sink_state SET version = $3, commit_time = $4, updated_at = $5 \
             WHERE connector = $1 AND sink = $2",
            &[&connector, &sink, &w.version, &w.commit_time, &now],
        )
        .await?;
    if updated == 0 {
        tx.execute(
            "INSERT INTO edfi_cdc.sink_state (connector, sink, version, commit_time, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&connector, &sink, &w.version, &w.commit_time, &now],
        )
        .await?;
    }
    Ok(())
}

/// Stream positions: partition id (`topic/partition`, shard id) to the position of the last
/// message covered (a Kafka offset, a Kinesis sequence number, or [`END`] for a finished
/// shard).
pub type Positions = std::collections::BTreeMap<String, String>;

/// The position of a Kinesis shard that was read to its end.
pub const END: &str = "end";

/// Per part, the worker that stored its position last.
pub type Holders = HashMap<String, String>;

/// The stored stream positions of one sink lane, and who stored them.
pub async fn load_positions(
    client: &impl GenericClient,
    connector: &str,
    sink: &str,
) -> Result<(Positions, Holders), tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT part, position, worker FROM edfi_cdc.stream_positions \
             WHERE connector = $1 AND sink = $2",
            &[&connector, &sink],
        )
        .await?;
    Ok((
        rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        rows.iter().map(|r| (r.get(0), r.get(2))).collect(),
    ))
}

/// Every sink lane's stored positions, for `status`: (sink, part, position, version, worker,
/// updated_at).
pub type PositionRow = (String, String, String, Option<i64>, String, DateTime<Utc>);

pub async fn all_positions(
    client: &impl GenericClient,
    connector: &str,
) -> Result<Vec<PositionRow>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT sink, part, position, version, worker, updated_at FROM edfi_cdc.stream_positions \
             WHERE connector = $1 ORDER BY sink, part",
            &[&connector],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect())
}

/// Move a lane's positions from `old` (what this lane loaded or last stored, by `holders`) to
/// `new`, in the transaction that applied the messages up to them, as `worker`. Returns
/// `false` — and the caller must roll back — when another worker stored them meanwhile, even
/// at the same positions: the lane's partitions belong to it now.
#[allow(clippy::too_many_arguments)]
pub async fn store_positions(
    tx: &impl GenericClient,
    connector: &str,
    sink: &str,
    old: &Positions,
    holders: &Holders,
    new: &Positions,
    version: Option<i64>,
    worker: &str,
) -> Result<bool, tokio_postgres::Error> {
    let now = Utc::now();
    for (part, position) in new {
        match old.get(part) {
            Some(before) => {
                let holder = holders.get(part).map_or(worker, String::as_str);
                let n = tx
                    .execute(
                        "UPDATE edfi_cdc.stream_positions SET position = $4, \
                         version = COALESCE($5, version), worker = $6, updated_at = $7 \
                         WHERE connector = $1 AND sink = $2 AND part = $3 AND position = $8 \
                         AND worker = $9",
                        &[
                            &connector, &sink, part, position, &version, &worker, &now, before,
                            &holder,
                        ],
                    )
                    .await?;
                if n == 0 {
                    return Ok(false);
                }
            }
            None => {
                let taken = tx
                    .query_opt(
                        "SELECT 1 FROM edfi_cdc.stream_positions WHERE connector = $1 AND sink = $2 AND part = $3",
                        &[&connector, &sink, part],
                    )
                    .await?
                    .is_some();
                if taken {
                    return Ok(false);
                }
                let inserted = tx
                    .execute(
                        "INSERT INTO edfi_cdc.stream_positions (connector, sink, part, position, version, worker, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[&connector, &sink, part, position, &version, &worker, &now],
                    )
                    .await;
                match inserted {
                    Ok(_) => {}
                    // Another worker inserted it first.
                    Err(e)
                        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        return Ok(false)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(true)
}

/// Who holds a lane's lease when it is not `worker`: the holder and the seconds its lease has
/// left.
pub type LeaseHolder = (String, f64);

/// Take or renew the lease of lane `sink` for `worker` for `ttl`. `Ok(None)` when the lease is
/// this worker's now; otherwise the current holder. The same SQL runs on PostgreSQL and
/// Redshift (no row locks there: the table is locked for the short transaction), and expiry is
/// judged by the workers' clocks (a lease decides which worker reads the lane; the positions
/// each transaction checks stop a worker once another stored them).
pub async fn take_lease(
    client: &mut tokio_postgres::Client,
    connector: &str,
    sink: &str,
    worker: &str,
    ttl: std::time::Duration,
) -> Result<Option<LeaseHolder>, tokio_postgres::Error> {
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let tx = client.transaction().await?;
    tx.batch_execute("LOCK edfi_cdc.stream_leases").await?;
    let held = tx
        .query_opt(
            "SELECT worker, expires_at FROM edfi_cdc.stream_leases \
             WHERE connector = $1 AND sink = $2",
            &[&connector, &sink],
        )
        .await?;
    match held {
        Some(r) if r.get::<_, String>(0) != worker && r.get::<_, DateTime<Utc>>(1) > now => {
            let left = (r.get::<_, DateTime<Utc>>(1) - now).num_milliseconds() as f64 / 1000.0;
            return Ok(Some((r.get(0), left)));
        }
        Some(_) => {
            tx.execute(
                "UPDATE edfi_cdc.stream_leases SET worker = $3, expires_at = $4 \
                 WHERE connector = $1 AND sink = $2",
                &[&connector, &sink, &worker, &expires],
            )
            .await?;
        }
        None => {
            tx.execute(
                "INSERT INTO edfi_cdc.stream_leases (connector, sink, worker, expires_at) \
                 VALUES ($1, $2, $3, $4)",
                &[&connector, &sink, &worker, &expires],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(None)
}

/// The first run of a poller of `connector` starting at `now` (see
/// [`crate::stream::lane::Run`]): [`RUNS_PER_START`] past the last start's, or `now` in
/// milliseconds if that is later (the first start, or an upgrade from runs taken from the
/// clock). The same SQL runs on PostgreSQL and Redshift (the table is locked for the short
/// transaction).
pub async fn begin_run(
    client: &mut tokio_postgres::Client,
    connector: &str,
    now: DateTime<Utc>,
) -> Result<Run, tokio_postgres::Error> {
    let clock = now.timestamp_millis().max(0);
    let tx = client.transaction().await?;
    tx.batch_execute("LOCK edfi_cdc.poller_runs").await?;
    let last: Option<i64> = tx
        .query_opt(
            "SELECT run FROM edfi_cdc.poller_runs WHERE connector = $1",
            &[&connector],
        )
        .await?
        .map(|r| r.get(0));
    let run = match last {
        Some(last) => (last + RUNS_PER_START as i64).max(clock),
        None => clock,
    };
    let sql = if last.is_some() {
        "UPDATE edfi_cdc.poller_runs SET run = $2, updated_at = $3 WHERE connector = $1"
    } else {
        "INSERT INTO edfi_cdc.poller_runs (connector, run, updated_at) VALUES ($1, $2, $3)"
    };
    tx.execute(sql, &[&connector, &run, &now]).await?;
    tx.commit().await?;
    Ok(run as Run)
}

/// Give up `worker`'s lease of lane `sink` (a clean stop: another worker need not wait for it
/// to expire).
pub async fn release_lease(
    client: &impl GenericClient,
    connector: &str,
    sink: &str,
    worker: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM edfi_cdc.stream_leases WHERE connector = $1 AND sink = $2 AND worker = $3",
            &[&connector, &sink, &worker],
        )
        .await?;
    Ok(())
}

/// `table` awaits a re-snapshot that starts at `version` or later: its rows are not claimed
/// until that snapshot is published. Asks for the snapshot too.
pub async fn await_snapshot(
    tx: &impl GenericClient,
    connector: &str,
    sink: &str,
    table: &TableId,
    version: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE edfi_cdc.table_state SET phase = 'snapshot', version = GREATEST(version, $5),          commit_time = NULL, snapshot_last_key = NULL, snapshot_rows = 0, snapshot_total_rows = NULL,          snapshot_started_at = NULL, updated_at = $6          WHERE connector = $1 AND sink = $2 AND source_schema = $3 AND source_table = $4",
        &[&connector, &sink, &table.schema, &table.name, &version, &Utc::now()],
    )
    .await?;
    request_resnapshot(tx, connector, table).await
}

/// Whether sink `sink` (with its lanes `sink@…`) may change the target table to follow the
/// source: it holds rows of it (has a checkpoint for it), and the table's shape at the source,
/// `shape`, is not the one some lane's last snapshot was read in (or that is not known). A
/// target that does not fit an unchanged source was changed by someone else, and is left to
/// them.
pub async fn may_follow_source(
    client: &impl GenericClient,
    connector: &str,
    sink: &str,
    table: &TableId,
    shape: &str,
) -> Result<bool, tokio_postgres::Error> {
    let lanes = format!("{sink}@%");
    Ok(client
        .query_opt(
            "SELECT 1 FROM edfi_cdc.table_state WHERE connector = $1 AND (sink = $2 OR sink LIKE $3) \
             AND source_schema = $4 AND source_table = $5 \
             AND (source_shape IS NULL OR source_shape <> $6) LIMIT 1",
            &[&connector, &sink, &lanes, &table.schema, &table.name, &shape],
        )
        .await?
        .is_some())
}

/// Whether sink `sink` is snapshotting `table` (loading it, or holding it loaded until the
/// next watermark publishes it).
pub async fn snapshot_under_way(
    client: &impl GenericClient,
    connector: &str,
    sink: &str,
    table: &TableId,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM edfi_cdc.table_state WHERE connector = $1 AND sink = $2 \
             AND source_schema = $3 AND source_table = $4 AND phase IN ('snapshot', 'pending_swap')",
            &[&connector, &sink, &table.schema, &table.name],
        )
        .await?
        .is_some())
}

/// Ask the running sinks to re-snapshot `table` (idempotent).
pub async fn request_resnapshot(
    client: &impl GenericClient,
    connector: &str,
    table: &TableId,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO edfi_cdc.resnapshot_requests (connector, source_schema, source_table, requested_at) \
             SELECT $1::varchar, $2::varchar, $3::varchar, $4 WHERE NOT EXISTS (SELECT 1 FROM edfi_cdc.resnapshot_requests \
             WHERE connector = $1 AND source_schema = $2 AND source_table = $3)",
            &[&connector, &table.schema, &table.name, &Utc::now()],
        )
        .await?;
    Ok(())
}

/// The last result of `edfi-cdc verify` for one table of one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyResult {
    pub sink: String,
    pub table: TableId,
    /// Rows missing, extra or different.
    pub differing: i64,
    pub unsettled: i64,
    pub verified_at: DateTime<Utc>,
}

/// Record `verify`'s result for a table (replacing the previous one).
pub async fn store_verify_result(
    client: &impl GenericClient,
    connector: &str,
    r: &VerifyResult,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    let stored = async {
        client
            .execute(
                "DELETE FROM edfi_cdc.verify_results WHERE connector = $1 AND sink = $2 \
                 AND source_schema = $3 AND source_table = $4",
                &[&connector, &r.sink, &r.table.schema, &r.table.name],
            )
            .await?;
        client
            .execute(
                "INSERT INTO edfi_cdc.verify_results (connector, sink, source_schema, source_table, \
                 differing, unsettled, verified_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &connector,
                    &r.sink,
                    &r.table.schema,
                    &r.table.name,
                    &r.differing,
                    &r.unsettled,
                    &r.verified_at,
                ],
            )
            .await
    }
    .await;
    match stored {
        Ok(_) => client.batch_execute("COMMIT").await,
        Err(e) => {
            client.batch_execute("ROLLBACK").await.ok();
            Err(e)
        }
    }
}

/// Every stored `verify` result of a connector.
pub async fn verify_results(
    client: &impl GenericClient,
    connector: &str,
) -> Result<Vec<VerifyResult>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT sink, source_schema, source_table, differing, unsettled, verified_at \
             FROM edfi_cdc.verify_results WHERE connector = $1",
            &[&connector],
        )
        .await?
        .iter()
        .map(|r| VerifyResult {
            sink: r.get(0),
            table: TableId::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            differing: r.get(3),
            unsettled: r.get(4),
            verified_at: r.get(5),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::every_type_schema;

    fn cp(phase: Phase, version: i64, rows: u64) -> TableCheckpoint {
        TableCheckpoint {
            phase,
            version,
            commit_time: None,
            snapshot_last_key: None,
            snapshot_rows: rows,
            snapshot_total_rows: None,
            snapshot_started_at: None,
            snapshot_into_target: false,
        }
    }

    fn sink(c: Option<TableCheckpoint>) -> SinkCheckpoint {
        let mut s = SinkCheckpoint::default();
        if let Some(c) = c {
            s.tables.insert(every_type_schema().id.clone(), c);
        }
        s
    }

    fn start(sinks: &[SinkCheckpoint]) -> TableStart {
        let t = every_type_schema();
        resume_point(sinks, std::slice::from_ref(&t))
            .remove(&t.id)
            .unwrap()
    }

    #[test]
    fn resumes_from_the_least_advanced_sink() {
        assert_eq!(start(&[sink(None)]), TableStart::Snapshot);
        assert_eq!(
            start(&[
                sink(Some(cp(Phase::Streaming, 50, 0))),
                sink(Some(cp(Phase::PendingSwap, 40, 0)))
            ]),
            TableStart::Stream { version: 40 }
        );
        assert_eq!(
            start(&[sink(Some(cp(Phase::Streaming, 50, 0))), sink(None)]),
            TableStart::Snapshot
        );
        assert_eq!(
            start(&[
                sink(Some(cp(Phase::Snapshot, 30, 100))),
                sink(Some(cp(Phase::Snapshot, 30, 50)))
            ]),
            TableStart::ResumeSnapshot {
                version: 30,
                last_key: None,
                rows: 50,
                total: None
            }
        );
        // A sink streaming from below the snapshot's version would miss changes: start over.
        assert_eq!(
            start(&[
                sink(Some(cp(Phase::Snapshot, 30, 100))),
                sink(Some(cp(Phase::Streaming, 20, 0)))
            ]),
            TableStart::Snapshot
        );
        let mut asked = sink(Some(cp(Phase::Streaming, 50, 0)));
        asked
            .resnapshot_requests
            .push(every_type_schema().id.clone());
        assert_eq!(start(&[asked]), TableStart::Snapshot);
    }
}
