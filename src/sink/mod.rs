//! Sinks apply events to a target up to a watermark — never half a cycle — and store their
//! checkpoint in the target in the same transaction as the data (see `checkpoint.rs`):
//! `staging` (Aurora PostgreSQL, every cycle) and `redshift` (micro-batches through S3 and
//! COPY, or COPY FROM STDIN).

pub mod pg;
pub mod redshift;
pub mod staging;

use std::collections::HashMap;

use crate::checkpoint::key_to_json;
use crate::event::{ChangeEvent, TableId, Value};

/// Advisory lock key serialising target set-up on PostgreSQL (any value unlikely to clash;
/// "edficdc" in hex).
pub const SETUP_LOCK: i64 = 0x65_64_66_69_63_64_63;

/// Changes collapsed to the last change per key and table, with their count before collapsing
/// and an estimate of their size as CSV.
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
        match table.insert(key, ev) {
            Some(old) => self.bytes = self.bytes.saturating_sub(approx_bytes(&old)),
            None => self.rows += 1,
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
}

impl SinkError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, SinkError::Transient { .. })
    }

    /// Classify a PostgreSQL error: connection, serialization, resource and shutdown faults
    /// are transient; everything else is fatal.
    pub fn from_pg(sink: &str, e: &tokio_postgres::Error) -> SinkError {
        let transient = match e.as_db_error() {
            None => true,
            Some(db) => {
                let code = db.code().code();
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || ["40001", "40P01", "55P03"].contains(&code)
            }
        };
        let message = match e.as_db_error() {
            Some(db) => match db.detail() {
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
