//! The poller's own position, kept when the stream is Kafka or Kinesis: the sinks then read the
//! stream at their own pace, so the poller cannot resume from their checkpoints.
//!
//! It lives in the first enabled sink's target database, in the checkpoint tables under sink
//! name `poller` (`edfi_cdc.table_state`), and is written only after the stream acknowledged
//! what it covers: a restarted poller re-sends at most the last cycle or snapshot chunk, which
//! the sinks skip or upsert. A snapshot's start is recorded *before* its first marker is sent,
//! so a restart either repeats the start or continues the snapshot — never streams a table the
//! sinks are snapshotting. The operators' re-snapshot requests are read here too.

use std::sync::Arc;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, SinkCheckpoint};
use crate::config::{ConnectorConfig, RetryConfig};
use crate::event::{TableId, TableSchema, Value, Watermark};
use crate::retry::Backoff;
use crate::sink::{pg, SinkError, SETUP_LOCK};
use crate::stream::lane::Run;

/// The checkpoint name of the poller's position.
pub const POLLER: &str = "poller";

pub struct PollerPosition {
    connector: String,
    url: String,
    client: Option<Client>,
    /// The other enabled sinks' databases, where their workers (a Redshift lane that lost
    /// records) ask for re-snapshots too.
    others: Vec<(String, Option<Client>)>,
    /// This process's first run ([`checkpoint::begin_run`]).
    run: Run,
}

fn err(e: tokio_postgres::Error) -> SinkError {
    SinkError::from_pg(POLLER, &e)
}

impl PollerPosition {
    /// The database holding the position of `config`'s poller: its first enabled sink's target.
    pub fn url(config: &ConnectorConfig) -> Option<String> {
        config.sinks.urls().first().map(|u| u.to_string())
    }

    /// Connect (retrying transient faults), create the checkpoint tables if needed and load the
    /// stored position.
    pub async fn open(
        config: &ConnectorConfig,
        schemas: &[Arc<TableSchema>],
        retry: &RetryConfig,
        stop: &CancellationToken,
    ) -> Result<(PollerPosition, SinkCheckpoint), SinkError> {
        let url = Self::url(config).ok_or_else(|| SinkError::Fatal {
            sink: POLLER.into(),
            message: "no enabled sink whose database could hold the poller's position".into(),
        })?;
        let others = config
            .sinks
            .urls()
            .into_iter()
            .filter(|u| *u != url)
            .map(|u| (u.to_string(), None))
            .collect();
        let mut position = PollerPosition {
            connector: config.name.clone(),
            url,
            client: None,
            others,
            run: 0,
        };
        let mut backoff = Backoff::new(retry);
        loop {
            match position.load(schemas).await {
                Ok(cp) => return Ok((position, cp)),
                Err(e) if e.is_retriable() => {
                    position.client = None;
                    if !backoff.pause(POLLER, &e, stop).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn load(&mut self, schemas: &[Arc<TableSchema>]) -> Result<SinkCheckpoint, SinkError> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&SETUP_LOCK])
            .await
            .map_err(err)?;
        checkpoint::install(&*client).await.map_err(err)?;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&SETUP_LOCK])
            .await
            .map_err(err)?;
        let connector = self.connector.clone();
        let client = self.client().await?;
        self.run = checkpoint::begin_run(client, &connector, chrono::Utc::now())
            .await
            .map_err(err)?;
        let client = self.client().await?;
        let mut cp = checkpoint::load(&*client, &connector, POLLER, schemas)
            .await
            .map_err(err)?;
        // A table changed while the poller was stopped: its sink workers still hold the old
        // shape, and only a snapshot start marker tells them the new one.
        crate::sink::request_changed(&*client, &connector, POLLER, schemas, &[], &mut cp)
            .await
            .map_err(err)?;
        Ok(cp)
    }

    /// This process's first run: the stream producer's barriers carry it
    /// ([`crate::stream::lane::Run`]).
    pub fn run(&self) -> Run {
        self.run
    }

    async fn client(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(pg::connect(POLLER, &self.url).await?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// A write's outcome; a failure drops the connection (the next call reconnects).
    fn done(&mut self, r: Result<(), tokio_postgres::Error>) -> Result<(), SinkError> {
        if r.is_err() {
            self.client = None;
        }
        r.map_err(err)
    }

    /// Record a snapshot's start; returns whether it consumed a re-snapshot request.
    pub async fn begin_snapshot(
        &mut self,
        table: &TableSchema,
        version: i64,
        total: Option<u64>,
    ) -> Result<bool, SinkError> {
        let connector = self.connector.clone();
        let client = self.client().await?;
        let r = checkpoint::begin_snapshot(
            &*client,
            &connector,
            POLLER,
            table,
            &table.id.schema,
            &table.id.name,
            version,
            total,
        )
        .await;
        let consumed = r.as_ref().is_ok_and(|c| *c);
        self.done(r.map(|_| ())).map(|()| consumed)
    }

    pub async fn snapshot_progress(
        &mut self,
        table: &TableId,
        last_key: &[Value],
        rows: u64,
    ) -> Result<(), SinkError> {
        let connector = self.connector.clone();
        let client = self.client().await?;
        let r = checkpoint::snapshot_progress(&*client, &connector, POLLER, table, last_key, rows)
            .await;
        self.done(r)
    }

    pub async fn snapshot_loaded(&mut self, table: &TableId, rows: u64) -> Result<(), SinkError> {
        let connector = self.connector.clone();
        let client = self.client().await?;
        let r = checkpoint::snapshot_loaded(&*client, &connector, POLLER, table, rows).await;
        self.done(r)
    }

    pub async fn advance(&mut self, w: &Watermark) -> Result<(), SinkError> {
        let connector = self.connector.clone();
        let client = self.client().await?;
        let r = checkpoint::advance(&*client, &connector, POLLER, w, &[]).await;
        self.done(r)
    }

    /// Tables operators asked to re-snapshot (`edfi-cdc resnapshot`).
    pub async fn requests(&mut self) -> Result<Vec<TableId>, SinkError> {
        let connector = self.connector.clone();
        let client = self.client().await?;
        let r = checkpoint::resnapshot_requests(&*client, &connector).await;
        if r.is_err() {
            self.client = None;
        }
        let mut tables = r.map_err(err)?;
        // Another sink's database that cannot be read now is read at the next cycle; one
        // whose checkpoint tables do not exist yet has no requests.
        for (url, client) in &mut self.others {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                match pg::connect(POLLER, url).await {
                    Ok(c) => *client = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read a sink's re-snapshot requests; trying again next cycle");
                        continue;
                    }
                }
            }
            let c = client.as_ref().expect("connected above");
            match checkpoint::resnapshot_requests(c, &connector).await {
                Ok(more) => tables.extend(more),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a sink's re-snapshot requests; trying again next cycle");
                    *client = None;
                }
            }
        }
        tables.sort();
        tables.dedup();
        Ok(tables)
    }
}

/// How often a sink worker without the poller reads the poller's position for the lag metrics.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The lag metrics of a process that runs sinks but not the poller (`--role sink`): what the
/// poller sent is learnt from its position, read every [`FOLLOW_EVERY`] — each table's version
/// and the source commit time of the cycle that reached it count as sent, and the highest
/// version as the source's current one. Lag is then the age of the newest commit of the oldest
/// cycle the poller stored and the sink has not applied: exact to within a cycle, like the
/// poller's own, and never ahead of what the stream acknowledged.
pub async fn follow(config: Arc<ConnectorConfig>, stop: CancellationToken) {
    let Some(url) = PollerPosition::url(&config) else {
        return;
    };
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = pg::connect(POLLER, &url).await.ok();
        }
        let Some(c) = &client else { continue };
        let rows = c
            .query(
                "SELECT source_schema, source_table, version, commit_time FROM edfi_cdc.table_state \
                 WHERE connector = $1 AND sink = $2 AND phase = 'streaming' AND commit_time IS NOT NULL",
                &[&config.name, &POLLER],
            )
            .await;
        match rows {
            Ok(rows) => {
                let mut current = None;
                for r in rows {
                    let table = TableId::new(r.get::<_, &str>(0), r.get::<_, &str>(1)).to_string();
                    let version: i64 = r.get(2);
                    crate::metrics::sent(&config.name, &table, version, r.get(3));
                    current = current.max(Some(version));
                }
                if let Some(v) = current {
                    crate::metrics::source_version(&config.name, v);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the poller's position for the lag metrics; trying again");
                client = None;
            }
        }
    }
}
