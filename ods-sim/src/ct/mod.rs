//! Change Tracking emulation inside the backing PostgreSQL database (stub: being written).

use crate::types::TableDef;
use tokio_postgres::Client;

/// Install the `ct`, `sys`, `INFORMATION_SCHEMA` and `sim` schemas into an empty database.
/// Idempotent. `database` is the name the database has over TDS.
pub async fn install(_client: &Client, _database: &str) -> Result<(), tokio_postgres::Error> {
    unimplemented!("ct::install")
}

/// Create a user table from its SQL Server definition and record its declared types.
pub async fn create_table(_client: &Client, _def: &TableDef) -> Result<(), tokio_postgres::Error> {
    unimplemented!("ct::create_table")
}

/// `ALTER DATABASE … SET CHANGE_TRACKING = ON (CHANGE_RETENTION = n units, AUTO_CLEANUP = …)`.
pub async fn enable_database(
    _client: &Client,
    _retention: i32,
    _units: i32,
    _auto_cleanup: bool,
) -> Result<(), tokio_postgres::Error> {
    unimplemented!("ct::enable_database")
}

/// `ALTER TABLE s.t ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = …)`.
pub async fn enable_table(
    _client: &Client,
    _schema: &str,
    _name: &str,
    _track_columns: bool,
) -> Result<(), tokio_postgres::Error> {
    unimplemented!("ct::enable_table")
}
