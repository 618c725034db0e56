//! Sinks apply events to a target up to a watermark — never half a cycle — and store their
//! checkpoint in the target in the same transaction as the data (see `checkpoint.rs`). One
//! today: `staging` (Aurora PostgreSQL).

pub mod staging;

use crate::event::TableId;

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
