//! Sink workers for a Kafka or Kinesis stream (`edfi-cdc run --role sink`, or beside the poller
//! with `--role all`).
//!
//! A worker runs one staging sink per *lane* it holds (see `stream::lane`): with Kafka, lane
//! `p` is partition `p` of every topic, and the consumer group decides which worker holds it;
//! with Kinesis, one lane reads every shard. The Redshift sink, one writer by nature, always
//! reads the whole stream as one lane. A lane over the whole stream is applied by the worker
//! holding its lease in that sink's target (`edfi_cdc.stream_leases`) while the others stand by.
//! Each lane keeps its own stream positions in its target (`staging@{lane}`,
//! `redshift@{lane}`), written in the same transaction as the data; every lane transaction
//! checks those positions first, so a worker that lost its lane writes nothing.
//!
//! Rebalances: a lane whose partitions are revoked is stopped and waited for before the worker
//! reads on. If another worker commits a lane's positions first (the lane is *fenced*), this
//! worker stops all its lanes and rejoins the group, so every partition is read again from the
//! offsets committed to Kafka — which trail the positions in the target, so nothing is missed;
//! what is at or before a stored position is skipped.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checkpoint::{self, Positions};
use crate::config::{ConnectorConfig, LoadMode, RedshiftSinkConfig, StagingSinkConfig, StreamKind};
use crate::event::TableSchema;
use crate::http::Health;
use crate::models::Models;
use crate::sink::redshift::RedshiftSink;
use crate::sink::staging::StagingSink;
use crate::sink::{Lane, Share, SinkError, SETUP_LOCK};
use crate::stream::lane::{self, Delivery};
use crate::stream::{kafka, kinesis, worker_id, Input, StreamError};

/// The sink a lane applies.
#[derive(Clone)]
enum Target {
    Staging(StagingSinkConfig),
    Redshift(Box<RedshiftSinkConfig>, Models),
}

impl Target {
    fn kind(&self) -> &'static str {
        match self {
            Target::Staging(_) => crate::sink::staging::SINK,
            Target::Redshift(..) => crate::sink::redshift::SINK,
        }
    }

    fn url(&self) -> &str {
        match self {
            Target::Staging(cfg) => cfg.url.expose(),
            Target::Redshift(cfg, _) => cfg.url.expose(),
        }
    }

    /// PostgreSQL, which has advisory locks (Redshift has not; the `stdin` mode is PostgreSQL).
    fn is_postgres(&self) -> bool {
        match self {
            Target::Staging(_) => true,
            Target::Redshift(cfg, _) => cfg.load == LoadMode::Stdin,
        }
    }
}

/// A running lane.
struct LaneTask {
    kind: &'static str,
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), SinkError>>,
    /// Whether the lane's last transaction failed with a transient fault and none has
    /// committed since (see [`Lane::faulted`]).
    faulty: Arc<AtomicBool>,
}

impl LaneTask {
    /// Stop reading: the lane applies what is complete and returns.
    async fn finish(self) -> Result<(), SinkError> {
        drop(self.tx);
        self.stop.cancel();
        match self.handle.await {
            Ok(r) => r,
            Err(e) => Err(SinkError::Fatal {
                sink: self.kind.into(),
                message: format!("lane task panicked: {e}"),
            }),
        }
    }
}

/// Open lane `id`'s sink and apply what arrives on `rx` from `parts`.
#[allow(clippy::too_many_arguments)]
fn spawn_lane(
    config: &Arc<ConnectorConfig>,
    schemas: &Arc<Vec<Arc<TableSchema>>>,
    target: &Target,
    id: String,
    parts: Vec<String>,
    committed: mpsc::UnboundedSender<Positions>,
    share: Share,
    stop: &CancellationToken,
) -> LaneTask {
    let (tx, rx) = mpsc::channel(config.stream.capacity);
    let stop = stop.child_token();
    let (config, schemas, lane_stop) = (config.clone(), schemas.clone(), stop.clone());
    let kind = target.kind();
    let target = target.clone();
    let faulty = Arc::new(AtomicBool::new(false));
    let lane_faulty = faulty.clone();
    let handle = tokio::spawn(async move {
        let lane = Lane::new(id.clone(), worker_id(), Some(committed))
            .with_share(share)
            .with_faults(lane_faulty);
        // The name of its series: a staging lane's own, the Redshift sink's as with the
        // embedded stream.
        let series = match &target {
            Target::Staging(_) => lane.sink_name(kind),
            Target::Redshift(..) => kind.to_string(),
        };
        // A lane over every partition gets each snapshot marker in all of them (with Kafka,
        // in all of its table's topic): a barrier.
        let barrier = share == Share::Whole;
        let topics = (barrier && config.stream.kind == StreamKind::Kafka).then(|| {
            schemas
                .iter()
                .map(|t| (t.id.clone(), kafka::topic(&config.stream.kafka, &t.id)))
                .collect()
        });
        let input = |rx, parts, stored| {
            let input = lane::Input::new(rx, parts, stored, barrier);
            match topics {
                Some(topics) => input.with_marker_topics(topics),
                None => input,
            }
        };
        // Re-snapshot requests reach the poller through the sinks' databases in this mode.
        let (requests, _) = mpsc::unbounded_channel();
        let result = match target {
            Target::Staging(cfg) => {
                let (sink, _) = StagingSink::open(
                    &config.name,
                    &cfg,
                    &config.retry,
                    &schemas,
                    Some(lane),
                    &lane_stop,
                )
                .await?;
                let input = input(rx, parts, sink.lane_positions());
                info!(lane = %id, sink = kind, "lane started");
                sink.run(Input::Lane(Box::new(input)), requests, lane_stop)
                    .await
            }
            Target::Redshift(cfg, models) => {
                let (sink, _) = RedshiftSink::open(
                    &config.name,
                    &cfg,
                    models,
                    &config.retry,
                    &schemas,
                    Some(lane),
                    &lane_stop,
                )
                .await?;
                let input = input(rx, parts, sink.lane_positions());
                info!(lane = %id, sink = kind, "lane started");
                sink.run(Input::Lane(Box::new(input)), requests, lane_stop)
                    .await
            }
        };
        crate::metrics::sink_gone(&config.name, &series);
        result
    });
    LaneTask {
        kind,
        tx,
        stop,
        handle,
        faulty,
    }
}

/// The source's tables as the catalog shapes them now, read again whenever partitions are
/// assigned (or a Kinesis turn starts): a lane resumed past the start marker of a table that
/// changed at the source must hold the new shape, which no message it reads will carry again.
/// When the source cannot be read, `last` is kept (a worker does not need the source to apply
/// what the stream holds; the next marker still brings a new shape).
async fn current_shapes(
    config: &ConnectorConfig,
    last: &Arc<Vec<Arc<TableSchema>>>,
) -> Arc<Vec<Arc<TableSchema>>> {
    match crate::source::read_shapes(config).await {
        Ok(schemas) => Arc::new(schemas),
        Err(e) => {
            warn!(error = %e, "cannot read the source catalog; lanes keep the tables' last known shapes");
            last.clone()
        }
    }
}

/// Run this process's sink workers until `stop` or a fatal error: the staging sink's lanes and
/// the Redshift sink's, each where enabled.
pub async fn run(
    config: Arc<ConnectorConfig>,
    schemas: Vec<Arc<TableSchema>>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    anyhow::ensure!(
        config.stream.kind != StreamKind::Embedded,
        "sink workers need a Kafka or Kinesis stream"
    );
    let staging = config.sinks.staging.clone().filter(|s| s.enabled);
    let redshift = match config.sinks.redshift.clone().filter(|s| s.enabled) {
        Some(cfg) => Some(Target::Redshift(
            Box::new(cfg),
            crate::pipeline::reporting_models(&config)?,
        )),
        None => None,
    };
    anyhow::ensure!(
        staging.is_some() || redshift.is_some(),
        "connector {name}: a sink worker needs an enabled staging or Redshift sink"
    );
    let schemas = Arc::new(schemas);
    // The first failure stops the other sink.
    let failed = stop.child_token();
    let guard = |r: anyhow::Result<()>| {
        if r.is_err() {
            failed.cancel();
        }
        r
    };
    let staging = async {
        match staging {
            None => Ok(()),
            Some(cfg) if config.stream.kind == StreamKind::Kafka => {
                run_kafka(
                    config.clone(),
                    schemas.clone(),
                    cfg,
                    health.clone(),
                    failed.clone(),
                )
                .await
            }
            Some(cfg) => {
                let target = Target::Staging(cfg);
                run_whole(
                    config.clone(),
                    schemas.clone(),
                    target,
                    health.clone(),
                    failed.clone(),
                )
                .await
            }
        }
    };
    let redshift = async {
        match redshift {
            None => Ok(()),
            Some(target) => {
                run_whole(
                    config.clone(),
                    schemas.clone(),
                    target,
                    health.clone(),
                    failed.clone(),
                )
                .await
            }
        }
    };
    let (a, b) = tokio::join!(async { guard(staging.await) }, async {
        guard(redshift.await)
    });
    a.and(b)
}

async fn run_kafka(
    config: Arc<ConnectorConfig>,
    mut schemas: Arc<Vec<Arc<TableSchema>>>,
    cfg: StagingSinkConfig,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    let target = Target::Staging(cfg);
    let mut consumer = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        c = kafka::Consumer::connect(&config, "staging", &schemas) => {
            c.with_context(|| format!("connector {name}: kafka consumer"))?
        }
    };
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
        // A lane retrying a failed transaction makes the worker unready until it commits.
        let faulty = lanes.values().any(|t| t.faulty.load(Ordering::Relaxed));
        let event = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            Some(p) = committed_rx.recv() => {
                consumer.commit_hint(&p);
                if !faulty {
                    health.cycle_ok(&name);
                }
                continue;
            }
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                if faulty {
                    health.cycle_failed(&name);
                }
                continue;
            }
            e = consumer.next() => e,
        };
        match event {
            Err(e) if e.is_retriable() => {
                warn!(error = %e, "kafka consumer; retrying");
                health.cycle_failed(&name);
            }
            Err(e) => break Err(anyhow::Error::new(e).context(format!("connector {name}"))),
            Ok(kafka::Event::Assigned(ls)) => {
                // Before any message of these partitions is decoded.
                schemas = current_shapes(&config, &schemas).await;
                let parts: Vec<String> = ls.iter().flat_map(|&l| consumer.lane_parts(l)).collect();
                consumer.use_catalog(&schemas, &parts);
                assigned.extend(ls);
            }
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
                        &target,
                        lane.to_string(),
                        consumer.lane_parts(lane),
                        committed_tx.clone(),
                        consumer.lane_share(lane),
                        &stop,
                    ));
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

/// How long a whole lane's lease lasts without renewal: a dead worker's lane is taken over
/// within this time.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the holder renews its lease, and a standby worker asks for it.
const LEASE_EVERY: Duration = Duration::from_secs(3);

/// The lease of a lane over the whole stream in its sink's target (the part DynamoDB plays
/// for the Kinesis Client Library): one worker applies the lane, the others stand by.
struct Lease {
    kind: &'static str,
    url: String,
    connector: String,
    sink: String,
    worker: String,
    client: Option<tokio_postgres::Client>,
    /// Each answer about the lease counts as a good cycle for `/readyz`, a failure as a failed
    /// one: a standby worker commits nothing, and the holder of a Redshift lane commits once
    /// per flush (every `max_age`), yet both are doing their job while their target answers —
    /// unless the lane this worker applies is retrying a failed transaction (`lane_faulty`).
    health: Arc<Health>,
    /// While this worker applies the lane: whether its last transaction failed.
    lane_faulty: Option<Arc<AtomicBool>>,
}

impl Lease {
    /// Take or renew the lease; the holder if another worker has it.
    async fn take(&mut self) -> Result<Option<checkpoint::LeaseHolder>, SinkError> {
        let taken = self.ask().await;
        let faulty = self
            .lane_faulty
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed));
        match &taken {
            Ok(_) if !faulty => self.health.cycle_ok(&self.connector),
            _ => self.health.cycle_failed(&self.connector),
        }
        taken
    }

    /// [`Lease::take`] without the readiness.
    async fn ask(&mut self) -> Result<Option<checkpoint::LeaseHolder>, SinkError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(crate::sink::pg::connect(self.kind, &self.url).await?);
        }
        let client = self.client.as_mut().expect("connected above");
        let taken =
            checkpoint::take_lease(client, &self.connector, &self.sink, &self.worker, LEASE_TTL)
                .await;
        taken.map_err(|e| {
            self.client = None;
            SinkError::from_pg(self.kind, &e)
        })
    }

    /// Stand by until the lease is this worker's; `false` if stopped first.
    async fn wait(&mut self, stop: &CancellationToken) -> Result<bool, SinkError> {
        let mut said = false;
        loop {
            match self.take().await {
                Ok(None) => {
                    info!(lane = %self.sink, worker = %self.worker, "lane lease taken");
                    return Ok(true);
                }
                Ok(Some((holder, left))) => {
                    if !said {
                        info!(lane = %self.sink, holder = %holder, expires_in_s = left.round(),
                              "another worker applies the lane; standing by to take it over");
                        said = true;
                    }
                }
                Err(e) if e.is_retriable() => warn!(error = %e, "lane lease; trying again"),
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(false),
                _ = tokio::time::sleep(LEASE_EVERY) => {}
            }
        }
    }

    async fn release(&mut self) {
        if let Some(client) = self.client.as_ref().filter(|c| !c.is_closed()) {
            let released =
                checkpoint::release_lease(client, &self.connector, &self.sink, &self.worker).await;
            if let Err(e) = released {
                warn!(error = %e, "could not release the lane lease; it expires by itself");
            }
        }
    }
}

/// How a worker's turn at a whole lane ended.
enum Turn {
    Stopped,
    /// Another worker holds the lane now: stand by again.
    Lost,
}

/// The id of the lane that reads the whole stream.
fn whole_lane(config: &ConnectorConfig) -> &'static str {
    match config.stream.kind {
        StreamKind::Kafka => kafka::WHOLE_LANE,
        _ => kinesis::LANE,
    }
}

/// The stream positions stored for `lane` of `target`, without opening the sink (the
/// checkpoint tables are created if missing).
async fn stored_positions(
    connector: &str,
    target: &Target,
    lane: &Lane,
) -> Result<Positions, SinkError> {
    let kind = target.kind();
    let pg = |e: tokio_postgres::Error| SinkError::from_pg(kind, &e);
    let client = crate::sink::pg::connect(kind, target.url()).await?;
    if target.is_postgres() {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&SETUP_LOCK])
            .await
            .map_err(pg)?;
    }
    checkpoint::install(&client).await.map_err(pg)?;
    if target.is_postgres() {
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&SETUP_LOCK])
            .await
            .map_err(pg)?;
    }
    let (positions, _) = checkpoint::load_positions(&client, connector, &lane.sink_name(kind))
        .await
        .map_err(pg)?;
    Ok(positions)
}

/// Apply `target`'s lane over the whole stream (every Kinesis shard, or every partition of
/// every Kafka topic) whenever this worker holds its lease.
async fn run_whole(
    config: Arc<ConnectorConfig>,
    mut schemas: Arc<Vec<Arc<TableSchema>>>,
    target: Target,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    let kind = target.kind();
    let lane = Lane::new(whole_lane(&config), worker_id(), None);
    // Creates the checkpoint tables, the lease's among them.
    stored_positions(&config.name, &target, &lane)
        .await
        .with_context(|| format!("connector {name}"))?;
    let mut lease = Lease {
        kind,
        url: target.url().to_string(),
        connector: name.clone(),
        sink: lane.sink_name(kind),
        worker: worker_id(),
        client: None,
        health: health.clone(),
        lane_faulty: None,
    };
    loop {
        if !lease
            .wait(&stop)
            .await
            .with_context(|| format!("connector {name}: lane lease"))?
        {
            return Ok(());
        }
        schemas = current_shapes(&config, &schemas).await;
        let turn = whole_turn(&config, &schemas, &target, &health, &mut lease, &stop).await;
        match turn {
            Ok(Turn::Lost) => continue,
            Ok(Turn::Stopped) => {
                lease.release().await;
                return Ok(());
            }
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        }
    }
}

type Reading = Pin<Box<dyn Future<Output = Result<(), StreamError>> + Send>>;
/// Starts reading the stream into a lane.
type StartReading = Box<dyn FnOnce(mpsc::Sender<Delivery>) -> Reading>;

/// Apply the whole lane while this worker holds its lease.
async fn whole_turn(
    config: &Arc<ConnectorConfig>,
    schemas: &Arc<Vec<Arc<TableSchema>>>,
    target: &Target,
    health: &Health,
    lease: &mut Lease,
    stop: &CancellationToken,
) -> anyhow::Result<Turn> {
    let name = config.name.clone();
    let kind = target.kind();
    let stream = config.stream.kind.name();
    let turn_stop = stop.child_token();
    let (committed_tx, mut committed_rx) = mpsc::unbounded_channel::<Positions>();
    let id = whole_lane(config);
    let stored = stored_positions(&config.name, target, &Lane::new(id, worker_id(), None))
        .await
        .with_context(|| format!("connector {name}"))?;
    let (parts, reader): (Vec<String>, StartReading) = match config.stream.kind {
        StreamKind::Kafka => {
            let reader = kafka::WholeReader::connect(config, kind, schemas, &stored)
                .await
                .with_context(|| format!("connector {name}: kafka"))?;
            let stop = turn_stop.clone();
            (
                reader.parts(),
                Box::new(move |tx| Box::pin(reader.run(tx, stop))),
            )
        }
        _ => {
            let reader = kinesis::Reader::connect(config, schemas)
                .await
                .with_context(|| format!("connector {name}: kinesis"))?;
            let stop = turn_stop.clone();
            // Shards join the lane as they are found.
            (
                Vec::new(),
                Box::new(move |tx| Box::pin(reader.run(stored, tx, stop))),
            )
        }
    };
    let task = spawn_lane(
        config,
        schemas,
        target,
        id.into(),
        parts,
        committed_tx,
        Share::Whole,
        &turn_stop,
    );
    lease.lane_faulty = Some(task.faulty.clone());
    let mut read = reader(task.tx.clone());
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + LEASE_EVERY, LEASE_EVERY);
    let mut lost = false;
    let result = loop {
        tokio::select! {
            r = &mut read => break r.with_context(|| format!("connector {name}: {stream}")),
            Some(_) = committed_rx.recv() => health.cycle_ok(&name),
            _ = renew.tick() => match lease.take().await {
                Ok(None) => {}
                Ok(Some((holder, _))) => {
                    warn!(lane = %lease.sink, holder = %holder, "the lane lease was taken over; this worker stands by");
                    lost = true;
                    break Ok(());
                }
                Err(e) => warn!(error = %e, "renewing the lane lease failed; trying again"),
            },
            _ = tokio::time::sleep(Duration::from_secs(1)), if task.handle.is_finished() => break Ok(()),
        }
    };
    turn_stop.cancel();
    lease.lane_faulty = None;
    drop(read); // lets the lane's input end
    match task.finish().await {
        // Another worker committed to the lane: it holds it now.
        Err(SinkError::Fenced { .. }) => lost = true,
        Err(e) => {
            return result
                .and(Err(anyhow::Error::new(e)))
                .with_context(|| format!("connector {name}: {kind} lane"))
        }
        Ok(()) => {}
    }
    result?;
    Ok(if lost && !stop.is_cancelled() {
        Turn::Lost
    } else {
        Turn::Stopped
    })
}
