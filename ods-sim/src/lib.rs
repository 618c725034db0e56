//! ods-sim: a stand-in for SQL Server with Change Tracking on an Ed-Fi ODS.
//!
//! It speaks TDS 7.4 (`tds`), translates the T-SQL it is sent into PostgreSQL (`sql`), emulates
//! Change Tracking inside the backing PostgreSQL database (`ct`), and holds the Ed-Fi 3.3 tables
//! of the seed pipelines with sample data and a change workload (`edfi`). `server` ties them
//! together: one TDS session per client connection, each with its own PostgreSQL connection.
//! See `docs/ods-simulator.md`.

pub mod ct;
pub mod edfi;
pub mod server;
pub mod sql;
pub mod tds;
pub mod types;
