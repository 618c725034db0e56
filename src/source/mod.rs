//! Sources of change events. One today: SQL Server Change Tracking (`mssql`), with the
//! poller's own position (`position`) when the stream outlives the process.

pub mod mssql;
pub mod position;
