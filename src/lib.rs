//! edfi-cdc: change data capture from SQL Server Change Tracking on an Ed-Fi ODS into Aurora
//! PostgreSQL staging (and, later, Redshift). See `docs/ARCHITECTURE.md`.

pub mod aws;
pub mod checkpoint;
pub mod commands;
pub mod config;
pub mod event;
pub mod http;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod retry;
pub mod sink;
pub mod slow;
pub mod source;
pub mod stream;
pub mod verify;
pub mod worker;
