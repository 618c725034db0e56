//! Where each sink's position lives, and where the poller resumes.
//!
//! Every sink keeps its checkpoint in its own target database, schema `edfi_cdc`, written in
//! the same transaction as the data it covers:
//! - `edfi_cdc.table_state`: per connector, sink and source table — the phase (`snapshot`,
//!   `pending_swap`, `streaming`), the version the target table reflects, snapshot progress;
//! - `edfi_cdc.sink_state`: per connector and sink — the last applied watermark and its source
//!   commit time;
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

pub const SCHEMA_DDL: &str = "
CREATE SCHEMA IF NOT EXISTS edfi_cdc;
CREATE TABLE IF NOT EXISTS edfi_cdc.table_state (
    connector           text        NOT NULL,
    sink                text        NOT NULL,
    source_schema       text        NOT NULL,
    source_table        text        NOT NULL,
    target_schema       text        NOT NULL,
    target_table        text        NOT NULL,
    phase               text        NOT NULL CHECK (phase IN ('snapshot', 'pending_swap', 'streaming')),
    version             bigint      NOT NULL,
    commit_time         timestamptz,
    snapshot_last_key   jsonb,
    snapshot_rows       bigint      NOT NULL DEFAULT 0,
    snapshot_total_rows bigint,
    snapshot_started_at timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, sink, source_schema, source_table)
);
CREATE UNIQUE INDEX IF NOT EXISTS table_state_target
    ON edfi_cdc.table_state (sink, target_schema, target_table);
CREATE TABLE IF NOT EXISTS edfi_cdc.sink_state (
    connector   text        NOT NULL,
    sink        text        NOT NULL,
    version     bigint      NOT NULL,
    commit_time timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, sink)
);
CREATE TABLE IF NOT EXISTS edfi_cdc.resnapshot_requests (
    connector     text        NOT NULL,
    source_schema text        NOT NULL,
    source_table  text        NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, source_schema, source_table)
);
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Rows are being loaded into a shadow table; the target is untouched.
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
}

/// One sink's stored position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkCheckpoint {
    pub tables: HashMap<TableId, TableCheckpoint>,
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

/// Create the checkpoint tables if missing.
pub async fn install(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA_DDL).await
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
             snapshot_rows, snapshot_total_rows, snapshot_started_at \
             FROM edfi_cdc.table_state WHERE connector = $1 AND sink = $2",
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
        let last_key: Option<Json> = r.get(5);
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
