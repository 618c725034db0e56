//! Wires source → stream → sinks for each connector, and stops them cleanly.
//!
//! Roles (`--role`): `all` runs the poller and the sinks in one process — joined by the
//! embedded stream, or through Kafka/Kinesis with the sink workers of `worker.rs`; `poller`
//! runs only the poller (into Kafka or Kinesis, keeping its own position); `sink` runs only
//! sink workers.
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
use crate::config::{ConnectorConfig, StreamKind};
use crate::event::TableSchema;
use crate::http::Health;
use crate::models::Models;
use crate::sink::redshift::RedshiftSink;
use crate::sink::staging::StagingSink;
use crate::source::position::PollerPosition;
use crate::source::{discover, Poller, SourceError};
use crate::stream::{embedded, kafka, Input, Producer};

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The poller and the sinks.
    All,
    /// Only the poller (Kafka or Kinesis stream).
    Poller,
    /// Only sink workers (Kafka or Kinesis stream).
    Sink,
}

/// An opened sink, ready to run.
enum SinkTask {
    Staging(Box<StagingSink>),
    Redshift(Box<RedshiftSink>),
}

/// A connector that calls AWS (batch files in S3, a Kinesis stream) needs a region, without
/// which every call fails: a configuration error, reported before anything connects. The region
/// comes from the standard places (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile; on EC2 the
/// instance metadata; ECS sets `AWS_REGION` in every task).
pub async fn aws_region(config: &ConnectorConfig) -> anyhow::Result<()> {
    let files = config
        .sinks
        .redshift
        .as_ref()
        .is_some_and(|r| r.enabled && !r.bucket.is_empty());
    let kinesis = config.stream.kind == crate::config::StreamKind::Kinesis;
    if !files && !kinesis {
        return Ok(());
    }
    if crate::aws::sdk_config().await.region().is_some() {
        return Ok(());
    }
    let uses = match (files, kinesis) {
        (true, true) => "S3 for the Redshift batch files and a Kinesis stream",
        (true, false) => "S3 for the Redshift batch files (sinks.redshift.bucket)",
        _ => "a Kinesis stream (stream.kind)",
    };
    anyhow::bail!(
        "{}: connector `{}` uses {uses}, and no AWS region is set: set AWS_REGION (or AWS_DEFAULT_REGION, or a region in the AWS profile)",
        config.file.display(),
        config.name
    )
}

/// The reporting models an enabled Redshift sink refreshes (none without a `models` directory),
/// read and checked without connecting to anything.
pub fn reporting_models(config: &ConnectorConfig) -> anyhow::Result<Models> {
    let Some(cfg) = config
        .sinks
        .redshift
        .as_ref()
        .filter(|s| s.enabled && !s.models.is_empty())
    else {
        return Ok(Models::default());
    };
    let dir = config
        .file
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(&cfg.models);
    let models = Models::load_for_connector(&dir, config).with_context(|| {
        format!(
            "connector {}: reporting models in {}",
            config.name,
            dir.display()
        )
    })?;
    Ok(match cfg.load {
        crate::config::LoadMode::Stdin => models.on_postgres(),
        crate::config::LoadMode::S3 => models,
    })
}

/// Run one connector's `role` until `stop` is cancelled or a part fails.
pub async fn run_connector(
    config: Arc<ConnectorConfig>,
    health: Arc<Health>,
    role: Role,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    if role != Role::Poller {
        tokio::spawn(crate::verify::export_results(config.clone(), stop.clone()));
    }
    if role == Role::Sink {
        tokio::spawn(crate::source::position::follow(
            config.clone(),
            stop.clone(),
        ));
    }
    if config.stream.kind == StreamKind::Embedded {
        anyhow::ensure!(
            role == Role::All,
            "connector {}: --role {role:?} needs a Kafka or Kinesis stream (stream.kind is `embedded`)",
            config.name
        );
        return run_embedded(config, health, stop).await;
    }
    let name = config.name.clone();
    let schemas = discover(&config, &stop)
        .await
        .with_context(|| format!("connector {name}: source"))?;
    info!(connector = %name, tables = schemas.len(), stream = config.stream.kind.name(), ?role, "source catalog read");
    let poller = async {
        if role == Role::Sink {
            return Ok(());
        }
        run_stream_poller(config.clone(), &schemas, health.clone(), stop.clone()).await
    };
    let sinks = async {
        if role == Role::Poller {
            return Ok(());
        }
        crate::worker::run(
            config.clone(),
            schemas.clone(),
            health.clone(),
            stop.clone(),
        )
        .await
    };
    // The first failure stops the other part.
    let failed = stop.child_token();
    let guard = |r: anyhow::Result<()>| {
        if r.is_err() {
            failed.cancel();
        }
        r
    };
    let (p, s) = tokio::join!(
        async {
            tokio::select! {
                r = poller => guard(r),
                _ = failed.cancelled() => Ok(()),
            }
        },
        async {
            tokio::select! {
                r = sinks => guard(r),
                _ = failed.cancelled() => Ok(()),
            }
        }
    );
    let result = p.and(s);
    if let Err(e) = &result {
        error!(connector = %name, error = format!("{e:#}"), "connector stopped");
    }
    result
}

/// The poller of a Kafka or Kinesis stream: resumes from its own stored position.
async fn run_stream_poller(
    config: Arc<ConnectorConfig>,
    schemas: &[Arc<TableSchema>],
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    let (position, cp) = PollerPosition::open(&config, schemas, &config.retry, &stop)
        .await
        .with_context(|| format!("connector {name}: the poller's position"))?;
    let start = checkpoint::resume_point(&[cp], schemas);
    let producer = match config.stream.kind {
        StreamKind::Kafka => Producer::Kafka(Box::new(
            kafka::Producer::connect(&config, schemas, position.run())
                .await
                .with_context(|| format!("connector {name}: kafka"))?,
        )),
        StreamKind::Kinesis => Producer::Kinesis(Box::new(
            crate::stream::kinesis::Producer::connect(&config, position.run())
                .await
                .with_context(|| format!("connector {name}: kinesis"))?,
        )),
        StreamKind::Embedded => unreachable!("embedded streams run in run_embedded"),
    };
    let resuming = start
        .values()
        .filter(|s| !matches!(s, TableStart::Snapshot))
        .count();
    info!(connector = %name, resuming, snapshots = start.len() - resuming, "poller starting");
    let (_requests, requests_rx) = mpsc::unbounded_channel();
    Poller::new(
        config.clone(),
        schemas,
        &start,
        producer,
        Some(position),
        requests_rx,
        health,
    )
    .run(stop)
    .await
    .with_context(|| format!("connector {name}: source"))
}

/// Poller and sinks in one process, joined by the embedded stream.
async fn run_embedded(
    config: Arc<ConnectorConfig>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    let redshift_models = reporting_models(&config)?;
    let schemas = discover(&config, &stop)
        .await
        .with_context(|| format!("connector {name}: source"))?;
    info!(connector = %name, tables = schemas.len(), "source catalog read");
    let mut checkpoints = Vec::new();
    let mut sinks: Vec<SinkTask> = Vec::new();
    if let Some(cfg) = config.sinks.staging.as_ref().filter(|s| s.enabled) {
        let (sink, cp) = StagingSink::open(&name, cfg, &config.retry, &schemas, None, &stop)
            .await
            .with_context(|| format!("connector {name}"))?;
        checkpoints.push(cp);
        sinks.push(SinkTask::Staging(Box::new(sink)));
    }
    if let Some(cfg) = config.sinks.redshift.as_ref().filter(|s| s.enabled) {
        let (sink, cp) = RedshiftSink::open(
            &name,
            cfg,
            redshift_models,
            &config.retry,
            &schemas,
            None,
            &stop,
        )
        .await
        .with_context(|| format!("connector {name}"))?;
        checkpoints.push(cp);
        sinks.push(SinkTask::Redshift(Box::new(sink)));
    }
    anyhow::ensure!(!sinks.is_empty(), "connector {name}: no enabled sink");
    let start = checkpoint::resume_point(&checkpoints, &schemas);
    let resuming = start
        .values()
        .filter(|s| !matches!(s, TableStart::Snapshot))
        .count();
    info!(connector = %name, resuming, snapshots = start.len() - resuming, "starting");
    for (table, at) in &start {
        if let TableStart::ResumeSnapshot { version, .. } = at {
            for sink in &mut sinks {
                match sink {
                    SinkTask::Staging(s) => s.hold_during_resumed_snapshot(table, *version),
                    SinkTask::Redshift(s) => s.hold_during_resumed_snapshot(table, *version),
                }
            }
        }
    }

    let (producer, consumers) = embedded::channel(config.stream.capacity, sinks.len());
    let (resnap_tx, resnap_rx) = mpsc::unbounded_channel();
    let poller = Poller::new(
        config.clone(),
        &schemas,
        &start,
        Producer::Embedded(producer),
        None,
        resnap_rx,
        health,
    );
    let poller_stop = stop.child_token();
    let sink_stop = stop.child_token();
    let mut poller_task = tokio::spawn(poller.run(poller_stop.clone()));
    let mut sink_tasks = tokio::task::JoinSet::new();
    for (sink, input) in sinks.into_iter().zip(consumers) {
        let (resnap, stop) = (resnap_tx.clone(), sink_stop.clone());
        sink_tasks.spawn(async move {
            // The error names its sink.
            let r = match sink {
                SinkTask::Staging(s) => s.run(Input::Embedded(input), resnap, stop).await,
                SinkTask::Redshift(s) => s.run(Input::Embedded(input), resnap, stop).await,
            };
            r.map_err(anyhow::Error::new)
        });
    }
    drop(resnap_tx);

    // Whichever part ends first decides: a failure stops the rest; a clean stop of the poller
    // lets the sinks drain what is complete.
    let result = tokio::select! {
        r = &mut poller_task => {
            let r = r.context("poller task panicked")?;
            if r.is_err() {
                sink_stop.cancel();
            }
            let mut s = Ok(());
            while let Some(done) = sink_tasks.join_next().await {
                let done = done.context("sink task panicked").and_then(|d| d);
                if s.is_ok() {
                    s = done.with_context(|| format!("connector {name}"));
                }
            }
            match r {
                // A sink that failed closed the stream: its error is the cause.
                Err(SourceError::StreamClosed) if s.is_err() => s,
                r => r.with_context(|| format!("connector {name}: source")).and(s),
            }
        }
        Some(s) = sink_tasks.join_next() => {
            // A sink ended while the poller runs: it failed, or the stop request reached it.
            poller_stop.cancel();
            sink_stop.cancel();
            let mut first = s.context("sink task panicked").and_then(|d| d).with_context(|| format!("connector {name}"));
            while let Some(done) = sink_tasks.join_next().await {
                let done = done.context("sink task panicked").and_then(|d| d);
                if first.is_ok() {
                    first = done.with_context(|| format!("connector {name}"));
                }
            }
            // The poller may be blocked sending to a stopped sink; it ends with StreamClosed.
            let p = poller_task.await.context("poller task panicked")?;
            match (first, p) {
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
/// The components whose faults `role` can count: the source and the poller's position, and each
/// enabled sink.
fn components(configs: &[ConnectorConfig], role: Role) -> Vec<&'static str> {
    let mut names = vec![];
    if role != Role::Sink {
        names.push("source");
    }
    names.push(crate::source::position::POLLER);
    if role != Role::Poller {
        if configs
            .iter()
            .any(|c| c.sinks.staging.as_ref().is_some_and(|s| s.enabled))
        {
            names.push(crate::sink::staging::SINK);
        }
        if configs
            .iter()
            .any(|c| c.sinks.redshift.as_ref().is_some_and(|s| s.enabled))
        {
            names.push(crate::sink::redshift::SINK);
        }
    }
    names
}

pub async fn run(
    configs: Vec<ConnectorConfig>,
    metrics_addr: Option<SocketAddr>,
    role: Role,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // A sink worker hears from a whole-stream lane's lease every few seconds whatever the poll
    // interval: its readiness spans at least the lease's validity.
    let health = Arc::new(Health::new(configs.iter().map(|c| {
        let within = c.poll.interval * c.readiness_multiple;
        let within = match role {
            Role::Sink => within.max(crate::worker::LEASE_TTL),
            _ => within,
        };
        (c.name.clone(), within)
    })));
    crate::metrics::components(&components(&configs, role));
    for c in configs.iter().filter(|c| c.source.heartbeat().is_some()) {
        crate::metrics::heartbeat_on(&c.name);
        if role != Role::Sink {
            crate::metrics::errors_at_zero("heartbeat", &["refused"]);
        }
    }
    let addr = metrics_addr
        .or_else(|| configs.first().map(|c| c.metrics_addr))
        .context("no connector")?;
    crate::http::serve(addr, health.clone(), stop.clone())
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let mut tasks = tokio::task::JoinSet::new();
    for c in configs {
        tasks.spawn(run_connector(
            Arc::new(c),
            health.clone(),
            role,
            stop.clone(),
        ));
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
