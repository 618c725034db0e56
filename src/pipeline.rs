//! Wires source → stream → sinks for each connector, and stops them cleanly.
//!
//! Start-up: connect to the source and read the catalog (every configured table must exist,
//! have a primary key and Change Tracking), open every sink (targets created or checked,
//! checkpoints loaded), compute where the poller resumes, then run the poller and the sinks as
//! tasks joined by the embedded stream. A stop request cancels the poller between steps; the
//! sinks then apply what is complete (up to the last watermark) and return. If the grace period
//! runs out first, open transactions are abandoned (rolled back by the servers) — the
//! checkpoints make that safe.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::checkpoint::{self, TableStart};
use crate::config::ConnectorConfig;
use crate::event::TableSchema;
use crate::http::Health;
use crate::retry::Backoff;
use crate::sink::staging::StagingSink;
use crate::source::mssql::{schema, Connection, Poller, SourceError};
use crate::stream::embedded;

/// Connect to the source (retrying transient faults) and read the configured tables' schemas.
pub async fn discover(
    config: &ConnectorConfig,
    stop: &CancellationToken,
) -> Result<Vec<Arc<TableSchema>>, SourceError> {
    let mut backoff = Backoff::new(&config.retry);
    loop {
        let attempt = async {
            let mut conn = Connection::connect(&config.source).await?;
            let catalog = schema::discover(&mut conn, config).await?;
            if !catalog.untracked.is_empty() {
                return Err(SourceError::NotTracked(catalog.untracked));
            }
            Ok(catalog.schemas)
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

/// Run one connector until `stop` is cancelled or a part fails.
pub async fn run_connector(
    config: Arc<ConnectorConfig>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    let schemas = discover(&config, &stop)
        .await
        .with_context(|| format!("connector {name}: source"))?;
    info!(connector = %name, tables = schemas.len(), "source catalog read");
    let staging_cfg = config
        .sinks
        .staging
        .clone()
        .filter(|s| s.enabled)
        .context("no enabled sink")?;
    let (sink, cp) = StagingSink::open(&name, &staging_cfg, &config.retry, &schemas, &stop)
        .await
        .with_context(|| format!("connector {name}: staging sink"))?;
    let start = checkpoint::resume_point(&[cp], &schemas);
    let resuming = start
        .values()
        .filter(|s| !matches!(s, TableStart::Snapshot))
        .count();
    info!(connector = %name, resuming, snapshots = start.len() - resuming, "starting");

    let (producer, mut consumers) = embedded::channel(config.stream.capacity, 1);
    let (resnap_tx, resnap_rx) = mpsc::unbounded_channel();
    let poller = Poller::new(
        config.clone(),
        &schemas,
        &start,
        producer,
        resnap_rx,
        health,
    );
    let poller_stop = stop.child_token();
    let sink_stop = stop.child_token();
    let mut poller_task = tokio::spawn(poller.run(poller_stop.clone()));
    let mut sink_task = tokio::spawn(sink.run(consumers.remove(0), resnap_tx, sink_stop.clone()));

    // Whichever part ends first decides: a failure stops the other part; a clean stop of the
    // poller lets the sink drain what is complete.
    let result = tokio::select! {
        r = &mut poller_task => {
            let r = r.context("poller task panicked")?.with_context(|| format!("connector {name}: source"));
            if r.is_err() {
                sink_stop.cancel();
            }
            let s = sink_task.await.context("sink task panicked")?.with_context(|| format!("connector {name}: staging sink"));
            r.and(s)
        }
        s = &mut sink_task => {
            poller_stop.cancel();
            let s = s.context("sink task panicked")?.with_context(|| format!("connector {name}: staging sink"));
            // The poller may be blocked sending to the stopped sink; it ends with StreamClosed.
            let p = poller_task.await.context("poller task panicked")?;
            match (s, p) {
                (Err(e), _) => Err(e),
                (Ok(()), Err(SourceError::StreamClosed)) | (Ok(()), Ok(())) => Ok(()),
                (Ok(()), Err(e)) => Err(anyhow::Error::new(e).context(format!("connector {name}: source"))),
            }
        }
    };
    if let Err(e) = &result {
        error!(connector = %name, error = format!("{e:#}"), "connector stopped");
    }
    result
}

/// Run every connector until `stop`; the first failure stops them all. The HTTP port serves
/// `metrics_addr` (or the first connector's `metrics_addr`).
pub async fn run(
    configs: Vec<ConnectorConfig>,
    metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let health =
        Arc::new(Health::new(configs.iter().map(|c| {
            (c.name.clone(), c.poll.interval * c.readiness_multiple)
        })));
    let addr = metrics_addr
        .or_else(|| configs.first().map(|c| c.metrics_addr))
        .context("no connector")?;
    crate::http::serve(addr, health.clone(), stop.clone())
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let mut tasks = tokio::task::JoinSet::new();
    for c in configs {
        tasks.spawn(run_connector(Arc::new(c), health.clone(), stop.clone()));
    }
    let mut result = Ok(());
    while let Some(r) = tasks.join_next().await {
        let r = r.context("connector task panicked").and_then(|r| r);
        if r.is_err() && result.is_ok() {
            stop.cancel();
            result = r;
        }
    }
    result
}
