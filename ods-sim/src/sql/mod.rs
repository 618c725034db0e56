//! T-SQL → PostgreSQL translation.
//!
//! A batch is tokenized with `sqlparser`'s MS SQL tokenizer and split into statements. The
//! statements `sqlparser` cannot parse are read by a small recursive descent over the tokens
//! (`front`): transaction control, `SET` options, `USE`, `ALTER DATABASE … SET CHANGE_TRACKING`,
//! `EXEC sim.*`, `DELETE TOP (n)` and `ALTER TABLE` (`alter_table`: `ENABLE/DISABLE
//! CHANGE_TRACKING`, `ADD` column definitions, `ALTER COLUMN`, `DROP COLUMN`, with the column
//! definitions read by `sqlparser`); `CHANGETABLE(CHANGES t, v)` is rewritten at token level into
//! a table function call. The rest is parsed by `sqlparser` and printed as PostgreSQL from its
//! AST (`pg`), identifiers quoted as written, `@P1`… numbered `$1`…, system schemas and functions
//! mapped to the objects described in `docs/ods-simulator.md`; conversions whose results differ
//! between the two (binary to integer, `CONVERT` styles, `HASHBYTES`, `SUM` types) are printed
//! with SQL Server's results (`convert`). Anything not understood is an error naming it.

mod alter_table;
mod convert;
mod front;
mod pg;
mod sqltype;

#[cfg(test)]
mod pg_tests;
#[cfg(test)]
mod tests;

use crate::types::{SqlError, TableAlter, TableDef};

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
    /// An `INSERT` into `table` (as PostgreSQL names it; `name` as T-SQL wrote it), naming
    /// `columns` (empty: no column list): run as [`Statement::Query`] once the session checked
    /// the table's `IDENTITY` column against `SET IDENTITY_INSERT`.
    Insert {
        sql: String,
        params: Vec<String>,
        table: String,
        name: String,
        columns: Vec<String>,
    },
    /// `SET IDENTITY_INSERT table ON|OFF`.
    SetIdentityInsert {
        table: String,
        name: String,
        on: bool,
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
    /// `CREATE TABLE`: run with `ct::create_table`, which creates the table and records the
    /// declared SQL Server types.
    CreateTable(TableDef),
    /// `ALTER TABLE … ADD / ALTER COLUMN / DROP COLUMN`: run with `ct::alter_table`, which checks
    /// the change as SQL Server does, changes the table and records the declared types.
    AlterTable(TableAlter),
}

/// Translate one T-SQL batch into statements. Errors name what is unsupported.
pub fn translate(batch: &str) -> Result<Vec<Statement>, SqlError> {
    let tokens = front::tokenize(batch)?;
    front::translate_tokens(&tokens)
}
