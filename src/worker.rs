//! Sink workers for a Kafka or Kinesis stream (`edfi-cdc run --role sink`, or beside the poller
//! with `--role all`).
//!
//! A worker runs one staging sink per *lane* it holds (see `stream::lane`): with Kafka, lane
//! `p` is partition `p` of every topic, and the consumer group decides which worker holds it;
//! with Kinesis, one lane reads every shard. Each lane keeps its own checkpoint in the target
//! (`staging@{lane}`) with its stream positions, written in the same transaction as the data.
//!
//! Rebalances: a lane whose partitions are revoked is stopped and waited for before the worker
//! reads on. If another worker commits a lane's positions first (the lane is *fenced*), this
//! worker stops all its lanes and rejoins the group, so every partition is read again from the
//! offsets committed to Kafka — which trail the positions in the target, so nothing is missed;
//! what is at or before a stored position is skipped.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checkpoint::Positions;
use crate::config::{ConnectorConfig, StagingSinkConfig, StreamKind};
use crate::event::TableSchema;
use crate::http::Health;
use crate::sink::staging::StagingSink;
use crate::sink::{Lane, SinkError};
use crate::stream::lane::{self, Delivery};
use crate::stream::{kafka, kinesis, worker_id, Input};

/// A running lane.
struct LaneTask {
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), SinkError>>,
}

impl LaneTask {
    /// Stop reading: the lane applies what is complete and returns.
    async fn finish(self) -> Result<(), SinkError> {
        drop(self.tx);
        self.stop.cancel();
        match self.handle.await {
            Ok(r) => r,
            Err(e) => Err(SinkError::Fatal {
                sink: "staging".into(),
                message: format!("lane task panicked: {e}"),
            }),
        }
    }
}

fn staging(config: &ConnectorConfig) -> anyhow::Result<StagingSinkConfig> {
    config
        .sinks
        .staging
        .clone()
        .filter(|s| s.enabled)
        .with_context(|| {
            format!(
                "connector {}: a sink worker needs an enabled staging sink",
                config.name
            )
        })
}

/// Open lane `id`'s staging sink and apply what arrives on `rx` from `parts`.
fn spawn_lane(
    config: &Arc<ConnectorConfig>,
    schemas: &Arc<Vec<Arc<TableSchema>>>,
    id: String,
    parts: Vec<String>,
    committed: mpsc::UnboundedSender<Positions>,
    marker_barriers: bool,
    stop: &CancellationToken,
) -> anyhow::Result<LaneTask> {
    let cfg = staging(config)?;
    let (tx, rx) = mpsc::channel(config.stream.capacity);
    let stop = stop.child_token();
    let (config, schemas, lane_stop) = (config.clone(), schemas.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let lane = Lane::new(id.clone(), worker_id(), Some(committed));
        let (sink, _) = StagingSink::open(
            &config.name,
            &cfg,
            &config.retry,
            &schemas,
            Some(lane),
            &lane_stop,
        )
        .await?;
        let input = lane::Input::new(rx, parts, sink.lane_positions(), marker_barriers);
        info!(lane = %id, "lane started");
        // Re-snapshot requests reach the poller through its own database in this mode.
        let (requests, _) = mpsc::unbounded_channel();
        sink.run(Input::Lane(input), requests, lane_stop).await
    });
    Ok(LaneTask { tx, stop, handle })
}

/// Run this process's sink workers until `stop` or a fatal error.
pub async fn run(
    config: Arc<ConnectorConfig>,
    schemas: Vec<Arc<TableSchema>>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    staging(&config)?;
    let schemas = Arc::new(schemas);
    match config.stream.kind {
        StreamKind::Kafka => run_kafka(config, schemas, health, stop).await,
        StreamKind::Kinesis => run_kinesis(config, schemas, health, stop).await,
        StreamKind::Embedded => anyhow::bail!("sink workers need a Kafka or Kinesis stream"),
    }
}

async fn run_kafka(
    config: Arc<ConnectorConfig>,
    schemas: Arc<Vec<Arc<TableSchema>>>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    let mut consumer = kafka::Consumer::connect(&config, "staging", &schemas)
        .with_context(|| format!("connector {name}: kafka consumer"))?;
    let (committed_tx, mut committed_rx) = mpsc::unbounded_channel::<Positions>();
    let mut assigned: BTreeSet<i32> = BTreeSet::new();
    let mut lanes: HashMap<i32, LaneTask> = HashMap::new();
    let result: anyhow::Result<()> = loop {
        // A lane that ended by itself failed or was fenced.
        let ended: Vec<i32> = lanes
            .iter()
            .filter(|(_, t)| t.handle.is_finished())
            .map(|(l, _)| *l)
            .collect();
        let mut fenced = false;
        let mut failure = None;
        for l in ended {
            match lanes.remove(&l).expect("listed").finish().await {
                Ok(()) => {}
                Err(e @ SinkError::Fenced { .. }) => {
                    info!(lane = l, reason = %e, "lane fenced; rejoining the group");
                    fenced = true;
                }
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            break Err(anyhow::Error::new(e).context(format!("connector {name}: staging lane")));
        }
        if fenced {
            for (_, t) in lanes.drain() {
                if let Err(e) = t.finish().await {
                    if !matches!(e, SinkError::Fenced { .. }) {
                        warn!(error = %e, "lane stopped with an error while rejoining");
                    }
                }
            }
            assigned.clear();
            consumer.rejoin()?;
            continue;
        }
        let event = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            Some(p) = committed_rx.recv() => {
                consumer.commit_hint(&p);
                health.cycle_ok(&name);
                continue;
            }
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
            e = consumer.next() => e,
        };
        match event {
            Err(e) if e.is_retriable() => {
                warn!(error = %e, "kafka consumer; retrying");
                health.cycle_failed(&name);
            }
            Err(e) => break Err(anyhow::Error::new(e).context(format!("connector {name}"))),
            Ok(kafka::Event::Assigned(ls)) => assigned.extend(ls),
            Ok(kafka::Event::Revoked(ls)) => {
                let mut failure = None;
                for l in ls {
                    assigned.remove(&l);
                    if let Some(t) = lanes.remove(&l) {
                        match t.finish().await {
                            Ok(()) | Err(SinkError::Fenced { .. }) => {
                                info!(lane = l, "lane handed over")
                            }
                            Err(e) => failure = Some(e),
                        }
                    }
                }
                if let Some(e) = failure {
                    break Err(
                        anyhow::Error::new(e).context(format!("connector {name}: staging lane"))
                    );
                }
            }
            Ok(kafka::Event::Delivery { lane, delivery }) => {
                if !assigned.contains(&lane) {
                    continue; // fetched before a revocation
                }
                if let Entry::Vacant(e) = lanes.entry(lane) {
                    e.insert(spawn_lane(
                        &config,
                        &schemas,
                        lane.to_string(),
                        consumer.lane_parts(lane),
                        committed_tx.clone(),
                        false,
                        &stop,
                    )?);
                }
                let task = &lanes[&lane];
                // A full lane holds the consumer: back-pressure.
                if task.tx.send(delivery).await.is_err() {
                    continue; // the lane ended; its outcome is handled at the top
                }
            }
        }
    };
    for (_, t) in lanes.drain() {
        if let Err(e) = t.finish().await {
            if result.is_ok() && !matches!(e, SinkError::Fenced { .. }) {
                return Err(
                    anyhow::Error::new(e).context(format!("connector {name}: staging lane"))
                );
            }
        }
    }
    result
}

async fn run_kinesis(
    config: Arc<ConnectorConfig>,
    schemas: Arc<Vec<Arc<TableSchema>>>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    let (committed_tx, mut committed_rx) = mpsc::unbounded_channel::<Positions>();
    let lane = Lane::new(kinesis::LANE, worker_id(), None);
    let stored = StagingSink::stored_positions(&config.name, &staging(&config)?, &lane)
        .await
        .with_context(|| format!("connector {name}: staging sink"))?;
    let reader = kinesis::Reader::connect(&config, &schemas)
        .await
        .with_context(|| format!("connector {name}: kinesis"))?;
    let task = spawn_lane(
        &config,
        &schemas,
        kinesis::LANE.into(),
        Vec::new(),
        committed_tx,
        true,
        &stop,
    )?;
    let mut read = Box::pin(reader.run(stored, task.tx.clone(), stop.clone()));
    let result = loop {
        tokio::select! {
            r = &mut read => break r.with_context(|| format!("connector {name}: kinesis")),
            Some(_) = committed_rx.recv() => health.cycle_ok(&name),
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)), if task.handle.is_finished() => break Ok(()),
        }
    };
    drop(read); // lets the lane's input end
    let lane_result = task.finish().await.map_err(|e| match e {
        SinkError::Fenced { .. } => {
            anyhow::anyhow!("{e}: only one sink worker may read a Kinesis stream; stop the others")
        }
        e => anyhow::Error::new(e),
    });
    result.and(lane_result.with_context(|| format!("connector {name}: staging lane")))
}
