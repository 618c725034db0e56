//! Sources of change events. One today: SQL Server Change Tracking (`mssql`).

pub mod mssql;
