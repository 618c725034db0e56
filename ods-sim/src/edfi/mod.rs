//! The Ed-Fi 3.3 side of the simulator: the table definitions of both seed pipelines (IC and
//! Illuminate, 37 tables in schema `edfi`), a deterministic sample-data generator loaded with
//! COPY, database setup with Change Tracking, and a paced change workload.
//!
//! - [`tables()`], [`table`], [`ic`], [`illuminate`], [`create_table_tsql`]: definitions.
//! - [`setup`], [`load`], [`database_url`]: the backing database and its data.
//! - [`init_script`]: the same database as a T-SQL script for a real SQL Server.
//! - [`run_workload`]: changes written straight to the backing database; the CT triggers record
//!   them.
//! - [`dangling_references`], [`invariant_violations`]: consistency checks (also usable on a
//!   replica with the same table names).

mod checks;
pub mod descriptors;
mod generate;
pub mod plan;
mod setup;
mod tables;
mod tsql;
mod workload;

pub use checks::{dangling_references, invariant_violations};
pub use setup::{
    connect, count_rows, database_url, load, load_postgres, setup, SetupOptions, SetupOutcome,
};
pub use tables::{create_table_tsql, identity_column, table, tables, SCHEMA};
pub use tsql::init_script;
pub use workload::{run_workload, Op, WorkloadConfig, WorkloadStats};

/// Table names of pipeline "IC" (22 tables).
pub fn ic() -> Vec<&'static str> {
    tables::IC.to_vec()
}

/// Table names of pipeline "Illuminate" (16 tables).
pub fn illuminate() -> Vec<&'static str> {
    tables::ILLUMINATE.to_vec()
}
