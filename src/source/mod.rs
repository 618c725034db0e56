//! Sources of change events: SQL Server Change Tracking (`mssql`, the default) and PostgreSQL
//! logical decoding (`postgres`). Both feed the same events, watermarks and snapshots; what
//! their pollers share is in `tables` (each table's phase and its snapshot), and the poller's
//! own position when the stream outlives the process in `position`.

pub mod mssql;
mod poll;
pub mod position;
pub mod postgres;
pub mod tables;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::TableStart;
use crate::config::{ConnectorConfig, SourceKind};
use crate::event::{ColumnSchema, TableId, TableSchema};
use crate::http::Health;
use crate::retry::Backoff;
use crate::stream::{Producer, StreamError};
use position::PollerPosition;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach SQL Server at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("SQL Server refused the login of user `{user}` on {addr} (error 18456): check the source user and password (ODS_USER / ODS_PASSWORD)")]
    Login { user: String, addr: String },
    #[error("SQL Server error {code} (class {class}): {message}")]
    Server {
        code: u32,
        class: u8,
        message: String,
    },
    #[error("SQL Server connection failed: {0}")]
    Io(String),
    #[error("TLS to SQL Server at {addr}: {message}")]
    Tls { addr: String, message: String },
    #[error("PostgreSQL source: {message}")]
    Postgres { message: String, transient: bool },
    #[error("the PostgreSQL source is not set up for logical decoding:\n  {}\nrun `edfi-cdc enable-ct --print` for the SQL a DBA runs", .0.join("\n  "))]
    NotDecodable(Vec<String>),
    #[error("the source tables cannot be replicated:\n  {}", .0.join("\n  "))]
    Tables(Vec<String>),
    #[error("Change Tracking is not enabled on {}: run `edfi-cdc enable-ct --print` for the T-SQL that turns it on", list(.0))]
    NotTracked(Vec<TableId>),
    /// Tracked at start, untracked now: switching Change Tracking off and on is how a tracked
    /// table's primary key changes, so the poller waits for it (retried), then re-snapshots.
    #[error("Change Tracking was switched off on {} while replicating: waiting for it to be switched on again (switching it off and on is how a primary key changes; the table is then re-snapshotted); if it was meant, remove the table from the connector", list(.0))]
    TrackingOff(Vec<TableId>),
    #[error("Change Tracking is not enabled on database {0}: run `edfi-cdc enable-ct --print` for the T-SQL that turns it on")]
    DatabaseNotTracked(String),
    #[error("the stream to the sinks is closed")]
    StreamClosed,
    #[error("stream {0}")]
    Stream(StreamError),
    #[error("cannot record the poller's position: {0}")]
    Position(Box<crate::sink::SinkError>),
}

impl From<StreamError> for SourceError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Closed => SourceError::StreamClosed,
            e => SourceError::Stream(e),
        }
    }
}

fn list(tables: &[TableId]) -> String {
    tables
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl SourceError {
    pub fn position(e: crate::sink::SinkError) -> SourceError {
        SourceError::Position(Box::new(e))
    }

    pub fn is_retriable(&self) -> bool {
        match self {
            SourceError::Connect { .. } | SourceError::Io(_) | SourceError::TrackingOff(_) => true,
            SourceError::Postgres { transient, .. } => *transient,
            SourceError::Stream(e) => e.is_retriable(),
            SourceError::Position(e) => e.is_retriable(),
            SourceError::Server { code, class, .. } => {
                *class >= 20 || mssql::TRANSIENT_ERRORS.contains(code)
            }
            _ => false,
        }
    }
}

/// The replicated shape of table `id` (configured as `t`) from the catalog's columns `cols`
/// and primary key `key_names`: the columns `tables."t".columns` lists, with the key always
/// included, or all of them. A listed column the table lacks is pushed to `problems`.
pub(crate) fn table_schema(
    config: &ConnectorConfig,
    t: &TableId,
    id: TableId,
    cols: Vec<ColumnSchema>,
    key_names: &[String],
    problems: &mut Vec<String>,
) -> Arc<TableSchema> {
    let selected: Vec<ColumnSchema> = match config.table_options(t).and_then(|o| o.columns.as_ref())
    {
        None => cols,
        Some(list) => {
            for name in list {
                if !cols.iter().any(|c| c.name.eq_ignore_ascii_case(name)) {
                    problems.push(format!(
                        "table {id} has no column `{name}` (listed in tables.\"{t}\".columns)"
                    ));
                }
            }
            cols.into_iter()
                .filter(|c| {
                    key_names.contains(&c.name)
                        || list.iter().any(|n| n.eq_ignore_ascii_case(&c.name))
                })
                .collect()
        }
    };
    let key: Vec<usize> = key_names
        .iter()
        .filter_map(|k| selected.iter().position(|c| &c.name == k))
        .collect();
    Arc::new(TableSchema {
        id,
        columns: selected,
        key,
    })
}

/// One read of the configured tables' schemas, with the tables that lack Change Tracking.
async fn read_catalog(
    config: &ConnectorConfig,
) -> Result<(Vec<Arc<TableSchema>>, Vec<TableId>), SourceError> {
    match config.source.kind {
        SourceKind::Mssql => {
            let mut conn = mssql::Connection::connect(&config.source).await?;
            let catalog = mssql::schema::discover(&mut conn, config).await?;
            Ok((catalog.schemas, catalog.untracked))
        }
        SourceKind::Postgres => {
            let client = postgres::connect(&config.source).await?;
            let catalog = postgres::catalog::discover(&client, config).await?;
            Ok((catalog.schemas, Vec::new()))
        }
    }
}

/// The configured tables' shapes as the source's catalog has them now, read once (a sink
/// worker opening a lane; it does not need Change Tracking).
pub async fn read_shapes(config: &ConnectorConfig) -> Result<Vec<Arc<TableSchema>>, SourceError> {
    Ok(read_catalog(config).await?.0)
}

/// Connect to the source (retrying transient faults) and read the configured tables' schemas,
/// failing on tables that cannot be replicated.
pub async fn discover(
    config: &ConnectorConfig,
    stop: &CancellationToken,
) -> Result<Vec<Arc<TableSchema>>, SourceError> {
    let mut backoff = Backoff::new(&config.retry);
    loop {
        let attempt = async {
            let (schemas, untracked) = read_catalog(config).await?;
            if !untracked.is_empty() {
                return Err(SourceError::NotTracked(untracked));
            }
            Ok(schemas)
        };
        match attempt.await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_retriable() => {
                if !backoff.pause("source", &e, stop).await {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The poller of the configured source kind.
pub enum Poller {
    Mssql(Box<mssql::Poller>),
    Postgres(Box<postgres::Poller>),
}

impl Poller {
    pub fn new(
        config: Arc<ConnectorConfig>,
        schemas: &[Arc<TableSchema>],
        start: &HashMap<TableId, TableStart>,
        out: Producer,
        position: Option<PollerPosition>,
        resnapshots: mpsc::UnboundedReceiver<TableId>,
        health: Arc<Health>,
    ) -> Poller {
        match config.source.kind {
            SourceKind::Mssql => Poller::Mssql(Box::new(mssql::Poller::new(
                config,
                schemas,
                start,
                out,
                position,
                resnapshots,
                health,
            ))),
            SourceKind::Postgres => Poller::Postgres(Box::new(postgres::Poller::new(
                config,
                schemas,
                start,
                out,
                position,
                resnapshots,
                health,
            ))),
        }
    }

    /// Poll until `stop` is cancelled or a fault outlasts the retry budget.
    pub async fn run(self, stop: CancellationToken) -> Result<(), SourceError> {
        match self {
            Poller::Mssql(p) => p.run(stop).await,
            Poller::Postgres(p) => p.run(stop).await,
        }
    }
}
