//! T-SQL → PostgreSQL translation (stub: being written).

use crate::types::SqlError;

/// Transaction isolation levels a session can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Snapshot,
    Serializable,
}

/// One statement of a batch, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// Run on PostgreSQL. `$n` refers to the T-SQL parameter named `params[n-1]` (e.g. `@P1`).
    /// `returns_rows`: a result set is sent (even when empty); otherwise only a row count.
    Query {
        sql: String,
        params: Vec<String>,
        returns_rows: bool,
    },
    /// `BEGIN TRAN[SACTION]`.
    Begin,
    /// `COMMIT [TRAN[SACTION]]`.
    Commit,
    /// `ROLLBACK [TRAN[SACTION]]`.
    Rollback,
    /// `SET TRANSACTION ISOLATION LEVEL …`: applies to transactions begun after it.
    SetIsolation(Isolation),
    /// `USE db`.
    Use(String),
    /// Accepted and ignored session options (`SET NOCOUNT ON`, `SET ANSI_NULLS ON`, …).
    Nothing,
}

/// Translate one T-SQL batch into statements. Errors name what is unsupported.
pub fn translate(batch: &str) -> Result<Vec<Statement>, SqlError> {
    Err(SqlError::unsupported(format!("batch {batch:?} (translator not written yet)")))
}
