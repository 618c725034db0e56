//! The Kafka stream (librdkafka through `rdkafka`).
//!
//! Topics: `{topic_prefix}.{schema}.{table}` per table (as Debezium names them), or one topic
//! `{topic_prefix}` for all (`topics = "single"`), created by the poller if missing. A change
//! goes to partition `row_hash(table, key) mod partitions`, so a row's changes stay in order;
//! its Kafka key is the primary key as JSON and its value the Debezium-shaped envelope
//! (`event::encode`, or `stream::debezium` with `format = "debezium"`), followed by a tombstone
//! after a delete (unless `tombstones = false`). A row's changes must land in the order sent:
//! a PostgreSQL source sends every change of a transaction, so a row can change twice in one
//! cycle. The idempotent producer (the default) keeps that order; with `idempotence = false`
//! one request is in flight per broker connection, so a batch sent again cannot overtake a
//! later one. A watermark is written to every partition of every topic after the cycle's events are
//! acknowledged; snapshot markers go to every partition of their table's topic. Both carry the
//! header `edfi-cdc-control` (`watermark` / `snapshot`), so that other consumers skip them
//! without parsing the value.
//!
//! Sink workers are one consumer group per sink (classic protocol, range assignor). Lane `p`
//! of a worker is partition `p` of every topic: the range assignor gives one member the same
//! partition numbers of every topic when all topics have the same partition count. Positions
//! live in the target; offsets committed to Kafka are only where a new owner starts reading.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::OAuthToken;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::Value as Json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::checkpoint::Positions;
use crate::config::{ConnectorConfig, KafkaConfig, KafkaFormat, SourceKind, TopicLayout};
use crate::event::{self, Message, TableId, TableSchema};
use crate::sink::Share;

use super::lane::{Delivery, Item};
use super::{debezium, msk_iam, row_hash, Shapes, StreamError};

/// `sasl_mechanism` of MSK's IAM authentication.
pub const MSK_IAM: &str = "AWS_MSK_IAM";

const STREAM: &str = "kafka";

fn transient(e: impl std::fmt::Display) -> StreamError {
    StreamError::Transient {
        stream: STREAM,
        message: e.to_string(),
    }
}

fn fatal(message: String) -> StreamError {
    StreamError::Fatal {
        stream: STREAM,
        message,
    }
}

/// The topic of `table`.
pub fn topic(cfg: &KafkaConfig, table: &TableId) -> String {
    match cfg.topics {
        TopicLayout::PerTable => format!("{}.{}.{}", cfg.topic_prefix, table.schema, table.name),
        TopicLayout::Single => cfg.topic_prefix.clone(),
    }
}

/// Every topic of a connector, sorted.
pub fn topics(cfg: &KafkaConfig, schemas: &[Arc<TableSchema>]) -> Vec<String> {
    let mut t: Vec<String> = schemas.iter().map(|s| topic(cfg, &s.id)).collect();
    t.sort();
    t.dedup();
    t
}

/// `check`'s look at the brokers: reachable and answering, which of the connector's topics
/// exist (the poller creates the missing ones), and whether each keeps its records as long as
/// the source keeps its changes (`source_retention_secs`, when known). One pass/fail line each.
pub async fn probe(
    config: &ConnectorConfig,
    source_retention_secs: Option<i64>,
) -> Vec<(bool, String)> {
    let cfg = &config.stream.kafka;
    let at = &cfg.bootstrap_servers;
    let iam = match iam_tokens(cfg).await {
        Ok(iam) => iam,
        Err(e) => return vec![(false, format!("stream: Kafka at {at}: {e}"))],
    };
    let errors = Arc::new(Mutex::new(Vec::new()));
    let context = Ctx {
        iam: iam.clone(),
        errors: Some(errors.clone()),
        ..Ctx::default()
    };
    let producer: FutureProducer<Ctx> = match client_config(cfg).create_with_context(context) {
        Ok(p) => p,
        Err(e) => return vec![(false, format!("stream: Kafka client for {at}: {e}"))],
    };
    let md = tokio::task::block_in_place(|| {
        producer
            .client()
            .fetch_metadata(None, Duration::from_secs(10))
    });
    let md = match md {
        Ok(md) => md,
        Err(e) => {
            let errors = errors.lock().expect("not poisoned");
            let said = if errors.is_empty() {
                String::new()
            } else {
                format!("; the client said: {}", errors.join("; "))
            };
            return vec![(
                false,
                format!("stream: Kafka at {at} did not answer within 10 s: {e}{said} (check stream.kafka.bootstrap_servers, security_protocol, ca_file and the SASL settings, the network path and the listener)"),
            )];
        }
    };
    let mut out = vec![(
        true,
        format!(
            "stream: Kafka at {at} answered ({} brokers)",
            md.brokers().len()
        ),
    )];
    let mut wanted: Vec<String> = config.tables().iter().map(|t| topic(cfg, t)).collect();
    wanted.sort();
    wanted.dedup();
    let existing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|t| {
            md.topics()
                .iter()
                .any(|m| m.name() == *t && m.error().is_none())
        })
        .collect();
    let mut retention = topic_retention(cfg, iam, &existing).await;
    for t in wanted {
        let found = md.topics().iter().find(|m| m.name() == t);
        out.push(match found {
            Some(m) if m.error().is_none() => {
                let (pass, kept) = retention_line(retention.remove(&t), source_retention_secs);
                (
                    pass,
                    format!("stream: topic {t}: {} partitions, {kept}", m.partitions().len()),
                )
            }
            Some(m) if m.error() != Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => (
                false,
                format!("stream: topic {t}: {:?} (is the connector's principal authorised to describe and write it?)", m.error()),
            ),
            _ => (
                true,
                format!(
                    "stream: topic {t} absent: the poller creates it ({} partitions, replication {})",
                    cfg.partitions,
                    cfg.replication_factor.min(md.brokers().len().max(1) as i32)
                ),
            ),
        });
    }
    out
}

/// `retention.ms` of each of `topics` (-1: kept for ever), or why it could not be read.
async fn topic_retention(
    cfg: &KafkaConfig,
    iam: Option<Arc<msk_iam::Tokens>>,
    topics: &[&str],
) -> HashMap<String, Result<i64, String>> {
    let fail = |e: String| {
        topics
            .iter()
            .map(|t| (t.to_string(), Err(e.clone())))
            .collect()
    };
    if topics.is_empty() {
        return HashMap::new();
    }
    let admin: AdminClient<Ctx> = match client_config(cfg).create_with_context(Ctx {
        iam,
        ..Ctx::default()
    }) {
        Ok(a) => a,
        Err(e) => return fail(e.to_string()),
    };
    let specs: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = match admin.describe_configs(&specs, &opts).await {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    topics
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let ms = r.map_err(|code| code.to_string()).and_then(|c| {
                c.get("retention.ms")
                    .and_then(|e| e.value.as_deref())
                    .ok_or_else(|| "the broker did not return retention.ms".to_string())?
                    .parse::<i64>()
                    .map_err(|e| format!("retention.ms: {e}"))
            });
            (t.to_string(), ms)
        })
        .collect()
}

/// `check`'s verdict on a topic's retention against the source's: records a worker has not
/// read yet are gone after `retention.ms`, and a worker stopped longer than that must have the
/// lost records' tables re-snapshotted.
fn retention_line(ms: Option<Result<i64, String>>, source_secs: Option<i64>) -> (bool, String) {
    match (ms, source_secs) {
        (None, _) => (true, "retention not read".into()),
        (Some(Err(e)), _) => (
            false,
            format!("retention.ms unreadable ({e}): is the connector's principal authorised to describe the topic's configuration?"),
        ),
        (Some(Ok(ms)), _) if ms < 0 => (true, "records kept for ever".into()),
        (Some(Ok(ms)), Some(secs)) if ms / 1000 < secs => (
            false,
            format!(
                "records kept {} h, less than the source keeps its changes ({} h): sink workers stopped longer \
                 than the topic keeps records lose what they had not read and re-snapshot; raise the topic's \
                 retention.ms to {} or more",
                ms / 3_600_000,
                secs / 3600,
                secs * 1000
            ),
        ),
        (Some(Ok(ms)), Some(secs)) => (
            true,
            format!(
                "records kept {} h, as long as the source keeps its changes ({} h) or longer",
                ms / 3_600_000,
                secs / 3600
            ),
        ),
        (Some(Ok(ms)), None) => (true, format!("records kept {} h", ms / 3_600_000)),
    }
}

/// A partition's id in `edfi_cdc.stream_positions`.
pub fn part_id(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", "edfi-cdc")
        .set("log_level", "6")
        .set("security.protocol", cfg.security_protocol.name());
    if cfg.security_protocol.tls() {
        // The brokers' names are verified; without a CA file, against the system's CAs.
        let roots = if cfg.ca_file.is_empty() {
            "probe"
        } else {
            &cfg.ca_file
        };
        c.set("ssl.ca.location", roots)
            .set("ssl.endpoint.identification.algorithm", "https");
    }
    if cfg.sasl_mechanism == MSK_IAM {
        // The token comes from the client context (`generate_oauth_token`).
        c.set("sasl.mechanism", "OAUTHBEARER");
    } else if cfg.security_protocol.sasl() {
        c.set("sasl.mechanism", &cfg.sasl_mechanism)
            .set("sasl.username", &cfg.sasl_username)
            .set("sasl.password", cfg.sasl_password.expose());
    }
    if let Ok(debug) = std::env::var("EDFI_CDC_KAFKA_DEBUG") {
        c.set("debug", debug);
    }
    c
}

/// The poller's end.
pub struct Producer {
    producer: FutureProducer<Ctx>,
    cfg: KafkaConfig,
    connector: String,
    database: String,
    /// Debezium's connector name for the source (`sqlserver`, `postgresql`).
    source_kind: &'static str,
    /// Partitions per topic.
    partitions: HashMap<String, i32>,
    /// Sent, not yet acknowledged.
    pending: Mutex<Vec<DeliveryFuture>>,
    /// Records sent per partition since the barrier last sent to it.
    sent: Mutex<SentCounts>,
    /// Written into every barrier (see [`super::lane::Run`]); a new one after a barrier write failed.
    run: AtomicU64,
}

/// Change records sent per partition since the barrier last sent to it, which a barrier carries
/// (a reader that received fewer lost records). A record whose delivery failed is not counted:
/// the broker may have stored it or not, and a reader must never receive fewer than counted
/// unless records were lost. The others keep their counts, so that a loss elsewhere in the same
/// stretch is still found.
#[derive(Default)]
struct SentCounts(HashMap<(String, i32), u64>);

impl SentCounts {
    fn sent(&mut self, topic: &str, partition: i32) {
        *self.0.entry((topic.to_string(), partition)).or_default() += 1;
    }

    fn failed(&mut self, topic: &str, partition: i32) {
        if let Some(n) = self.0.get_mut(&(topic.to_string(), partition)) {
            *n = n.saturating_sub(1);
        }
    }

    /// The count for the barrier now sent to the partition; it starts again from zero.
    fn take(&mut self, topic: &str, partition: i32) -> u64 {
        self.0.remove(&(topic.to_string(), partition)).unwrap_or(0)
    }
}

/// The header of a barrier that counts the records its partition got since the previous one.
const SENT_HEADER: &str = "edfi-cdc-sent";
/// On a barrier: the run of the poller that wrote it (see [`super::lane::Run`]).
const RUN_HEADER: &str = "edfi-cdc-run";
/// The header that marks a control record (a watermark or a snapshot marker), whose value names
/// it: consumers of the changes skip such records by this header alone, without parsing them.
pub const CONTROL_HEADER: &str = "edfi-cdc-control";

impl Producer {
    /// Connect, create missing topics and read every topic's partition count. `run`: this
    /// poller process's first run ([`crate::checkpoint::begin_run`]).
    pub async fn connect(
        config: &ConnectorConfig,
        schemas: &[Arc<TableSchema>],
        run: super::lane::Run,
    ) -> Result<Producer, StreamError> {
        let cfg = config.stream.kafka.clone();
        let wanted = topics(&cfg, schemas);
        let iam = iam_tokens(&cfg).await.map_err(fatal)?;
        let admin: AdminClient<Ctx> = client_config(&cfg)
            .create_with_context(Ctx {
                iam: iam.clone(),
                ..Ctx::default()
            })
            .map_err(transient)?;
        // As many replicas as asked for, at most one per broker; with three or more, a write
        // acknowledged by all in-sync replicas is on at least two.
        let brokers = tokio::task::block_in_place(|| {
            admin.inner().fetch_metadata(None, Duration::from_secs(10))
        })
        .map_err(transient)?
        .brokers()
        .len() as i32;
        let replicas = cfg.replication_factor.min(brokers.max(1));
        let min_insync = (replicas - 1).to_string();
        let new: Vec<NewTopic> = wanted
            .iter()
            .map(|t| {
                let topic = NewTopic::new(t, cfg.partitions, TopicReplication::Fixed(replicas));
                if replicas >= 3 {
                    topic.set("min.insync.replicas", &min_insync)
                } else {
                    topic
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(&new, &opts).await.map_err(transient)? {
            match result {
                Ok(t) if replicas < cfg.replication_factor => warn!(topic = %t,
                    partitions = cfg.partitions, replicas, replication_factor = cfg.replication_factor, brokers,
                    "topic created with fewer replicas than replication_factor: the cluster has fewer brokers; \
                     a topic does not survive the loss of a broker unless it has two replicas or more"),
                Ok(t) => info!(topic = %t, partitions = cfg.partitions, replicas, "topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(transient(format!("cannot create topic {t}: {code}")));
                }
            }
        }
        let mut producer_config = client_config(&cfg);
        producer_config
            .set("enable.idempotence", cfg.idempotence.to_string())
            .set("acks", "all")
            .set("linger.ms", "5");
        if !cfg.idempotence {
            // Otherwise a batch sent again may land after a later one of its partition.
            producer_config.set("max.in.flight.requests.per.connection", "1");
        }
        let producer: FutureProducer<Ctx> = producer_config
            .create_with_context(Ctx {
                iam,
                ..Ctx::default()
            })
            .map_err(transient)?;
        let partitions = partition_counts(producer.client(), &wanted).await?;
        Ok(Producer {
            producer,
            cfg,
            connector: config.name.clone(),
            source_kind: match config.source.kind {
                SourceKind::Mssql => "sqlserver",
                SourceKind::Postgres => "postgresql",
            },
            database: config.source.database.clone(),
            partitions,
            pending: Mutex::new(Vec::new()),
            sent: Mutex::new(SentCounts::default()),
            run: AtomicU64::new(run),
        })
    }

    pub async fn send(&self, msg: Message) -> Result<(), StreamError> {
        match &msg {
            Message::Change(ev) => {
                let topic = topic(&self.cfg, &ev.table.id);
                let n = self.partitions[&topic];
                let partition = (row_hash(&ev.table.id, &ev.key) % n as u128) as i32;
                let (key, value) = self.encode(&msg)?;
                let key = key.to_string();
                self.enqueue(&topic, partition, &key, Some(value.to_string()))
                    .await?;
                self.sent
                    .lock()
                    .expect("not poisoned")
                    .sent(&topic, partition);
                if self.cfg.tombstones && ev.op == event::Op::Delete {
                    self.enqueue(&topic, partition, &key, None).await?;
                }
                Ok(())
            }
            Message::Watermark(_) => {
                self.acknowledged().await?;
                let (key, value) = self.encode(&msg)?;
                let (key, value) = (key.to_string(), value.to_string());
                let to: Vec<(&str, i32)> = self
                    .partitions
                    .iter()
                    .flat_map(|(t, &n)| (0..n).map(move |p| (t.as_str(), p)))
                    .collect();
                self.barriers(&to, &key, &value, "watermark").await
            }
            Message::Snapshot(m) => {
                self.acknowledged().await?;
                let topic = topic(&self.cfg, &m.table().id);
                let (key, value) = self.encode(&msg)?;
                let (key, value) = (key.to_string(), value.to_string());
                let to: Vec<(&str, i32)> = (0..self.partitions[&topic])
                    .map(|p| (topic.as_str(), p))
                    .collect();
                self.barriers(&to, &key, &value, "snapshot").await
            }
        }
    }

    /// Key and value of `msg` in the configured format.
    fn encode(&self, msg: &Message) -> Result<(Json, Json), StreamError> {
        match self.cfg.format {
            KafkaFormat::Envelope => Ok(event::encode(&self.connector, &self.database, msg)),
            KafkaFormat::Debezium => debezium::encode(
                &self.cfg.topic_prefix,
                self.source_kind,
                &self.database,
                msg,
            )
            .map_err(|e| fatal(format!("format = \"debezium\": {e}"))),
        }
    }

    /// Send a barrier (control record `kind`) to each of `to` (topic, partition) and wait until
    /// the broker acknowledged it. One that failed may be in some partitions only: the barriers
    /// after it are of a new run, which sinks hand out after it (see [`super::lane::Run`]).
    async fn barriers(
        &self,
        to: &[(&str, i32)],
        key: &str,
        value: &str,
        kind: &str,
    ) -> Result<(), StreamError> {
        let result = async {
            for &(topic, p) in to {
                self.barrier(topic, p, key, value, kind).await?;
            }
            self.acknowledged().await
        }
        .await;
        if result.is_err() {
            let run = super::lane::next_run(&self.run);
            warn!(run, "kafka: a barrier may be in some partitions only; the barriers after it are of a new poller run");
        }
        result
    }

    /// Send a barrier (control record `kind`) to `partition`, with the count of records sent
    /// there since the last one.
    async fn barrier(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        value: &str,
        kind: &str,
    ) -> Result<(), StreamError> {
        let sent = self
            .sent
            .lock()
            .expect("not poisoned")
            .take(topic, partition);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: CONTROL_HEADER,
                value: Some(kind),
            })
            .insert(Header {
                key: SENT_HEADER,
                value: Some(&sent.to_string()),
            })
            .insert(Header {
                key: RUN_HEADER,
                value: Some(&self.run.load(Ordering::SeqCst).to_string()),
            });
        self.send_record(topic, partition, key, Some(value), Some(headers))
            .await
    }

    async fn enqueue(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        value: Option<String>,
    ) -> Result<(), StreamError> {
        self.send_record(topic, partition, key, value.as_deref(), None)
            .await
    }

    async fn send_record(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        value: Option<&str>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), StreamError> {
        loop {
            let mut record = FutureRecord::<str, str>::to(topic)
                .partition(partition)
                .key(key);
            if let Some(v) = value {
                record = record.payload(v);
            }
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.pending.lock().expect("not poisoned").push(f);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.acknowledged().await?;
                }
                Err((e, _)) => return Err(transient(format!("cannot send to {topic}: {e}"))),
            }
        }
    }

    /// Wait until the broker acknowledged everything sent so far.
    async fn acknowledged(&self) -> Result<(), StreamError> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        let mut first_error = None;
        for f in pending {
            let outcome = match f.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, msg))) => {
                    // Change records are the ones counted: a payload and no control headers.
                    if msg.payload().is_some() && msg.headers().is_none() {
                        let mut sent = self.sent.lock().expect("not poisoned");
                        sent.failed(msg.topic(), msg.partition());
                    }
                    e.to_string()
                }
                Err(_) => {
                    *self.sent.lock().expect("not poisoned") = SentCounts::default();
                    "the producer was dropped".to_string()
                }
            };
            first_error.get_or_insert(outcome);
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(transient(format!("a message was not delivered: {e}"))),
        }
    }
}

/// Partition counts of those of `topics` the broker's metadata lists, and the names of the
/// others.
async fn partition_counts_now<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &[String],
) -> Result<(HashMap<String, i32>, Vec<String>), StreamError> {
    let md = tokio::task::block_in_place(|| client.fetch_metadata(None, Duration::from_secs(10)))
        .map_err(transient)?;
    let listed: HashMap<&str, i32> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| (t.name(), t.partitions().len() as i32))
        .collect();
    let (mut counts, mut missing) = (HashMap::new(), Vec::new());
    for t in topics {
        match listed.get(t.as_str()) {
            Some(&n) => {
                counts.insert(t.clone(), n);
            }
            None => missing.push(t.clone()),
        }
    }
    Ok((counts, missing))
}

/// Partition counts of `topics`, waiting (up to a minute) until the metadata lists them all.
async fn partition_counts<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &[String],
) -> Result<HashMap<String, i32>, StreamError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (counts, missing) = partition_counts_now(client, topics).await?;
        if missing.is_empty() {
            return Ok(counts);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(transient(format!(
                "topics not available: {}",
                missing.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Wait until every topic exists, all with one partition count, and return the count. A worker
/// that joined the group while some topics were still missing would be assigned partitions of
/// the others only, and its lanes would wait for the missing ones until the consumer next
/// refreshed its metadata (five minutes by default).
async fn wait_for_topics<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &[String],
) -> Result<u32, StreamError> {
    const REPORT_EVERY: Duration = Duration::from_secs(30);
    let mut reported: Option<tokio::time::Instant> = None;
    let mut failed: Option<tokio::time::Instant> = None;
    loop {
        let (counts, missing) = match partition_counts_now(client, topics).await {
            Ok(found) => found,
            // The broker is not there yet: wait for it as for the topics.
            Err(e) if e.is_retriable() => {
                if failed.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                    warn!(error = %e, "kafka broker metadata unavailable; retrying");
                    failed = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if missing.is_empty() {
            let mut distinct: Vec<i32> = counts.values().copied().collect();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() > 1 {
                let mut listed: Vec<String> =
                    counts.iter().map(|(t, n)| format!("{t}: {n}")).collect();
                listed.sort();
                return Err(fatal(format!(
                    "the topics have different partition counts ({}); a worker's lane is one \
                     partition number of every topic, so all need the same count \
                     (add partitions with kafka-topics --alter)",
                    listed.join(", ")
                )));
            }
            return Ok(distinct.first().map_or(0, |&n| n as u32));
        }
        if reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            info!(
                missing = missing.len(),
                first = %missing[0],
                "waiting for the poller to create the topics"
            );
            reported = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every client's context: librdkafka's log lines into this process's log, MSK IAM's tokens,
/// and where given, a worker's rebalances and (for `check`) librdkafka's distinct errors (a
/// refused TLS handshake, a failed authentication), which a metadata timeout alone does not
/// tell.
#[derive(Default)]
struct Ctx {
    iam: Option<Arc<msk_iam::Tokens>>,
    rebalances: Option<mpsc::UnboundedSender<Event>>,
    errors: Option<Arc<Mutex<Vec<String>>>>,
}

impl ClientContext for Ctx {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        librdkafka_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match &self.errors {
            Some(errors) => {
                let mut errors = errors.lock().expect("not poisoned");
                let said = format!("{error}: {reason}");
                if errors.len() < 3 && !errors.contains(&said) {
                    errors.push(said);
                }
            }
            None => warn!(target: "librdkafka", %error, "{reason}"),
        }
    }

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        oauth_token(self.iam.as_deref())
    }
}

/// MSK IAM's tokens, when `sasl_mechanism = "AWS_MSK_IAM"`: the first one signed.
async fn iam_tokens(cfg: &KafkaConfig) -> Result<Option<Arc<msk_iam::Tokens>>, String> {
    if cfg.sasl_mechanism == MSK_IAM {
        msk_iam::Tokens::start().await.map(Some)
    } else {
        Ok(None)
    }
}

/// The token librdkafka asks for (only with OAUTHBEARER, which only MSK IAM sets).
fn oauth_token(iam: Option<&msk_iam::Tokens>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
    match iam {
        Some(tokens) => tokens.oauth_token(),
        None => Err("OAUTHBEARER is only used for sasl_mechanism = \"AWS_MSK_IAM\"".into()),
    }
}

/// librdkafka's own log lines, into this process's log.
fn librdkafka_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

fn lanes_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut lanes: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    lanes.sort_unstable();
    lanes.dedup();
    lanes
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                if let Some(to) = &self.rebalances {
                    let _ = to.send(Event::Revoked(lanes_of(tpl)));
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "kafka rebalance error"),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let lanes = lanes_of(tpl);
            info!(lanes = ?lanes, "kafka partitions assigned");
            if let Some(to) = &self.rebalances {
                let _ = to.send(Event::Assigned(lanes));
            }
        }
    }
}

/// A sink worker's consumer in group `group`: the positions live in the target, so nothing is
/// committed by itself, and a partition without a position is read from its first record.
fn consumer_config(cfg: &KafkaConfig, group: &str) -> ClientConfig {
    let mut c = client_config(cfg);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    c
}

/// The lane id of a sink that reads every partition of every topic (the Redshift sink).
pub const WHOLE_LANE: &str = "partitions";

/// A message as the lane takes it; `None` for a tombstone (nothing to apply).
fn delivery(
    shapes: &mut Shapes,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<Option<Delivery>, StreamError> {
    let Some(payload) = m.payload() else {
        return Ok(None);
    };
    let at = || {
        format!(
            "topic {} partition {} offset {}",
            m.topic(),
            m.partition(),
            m.offset()
        )
    };
    let value: Json = serde_json::from_slice(payload)
        .map_err(|e| fatal(format!("{}: malformed message: {e}", at())))?;
    let key: Json = match m.key() {
        Some(k) => {
            serde_json::from_slice(k).map_err(|e| fatal(format!("{}: malformed key: {e}", at())))?
        }
        None => Json::Null,
    };
    let (key, value) = if debezium::is_wrapped(&value) {
        debezium::unwrap(&key, &value).map_err(|e| fatal(format!("{}: {e}", at())))?
    } else {
        (key, value)
    };
    let part = part_id(m.topic(), m.partition());
    let msg = shapes
        .decode(&part, &key, &value)
        .map_err(|e| fatal(format!("{}: {e}", at())))?;
    let header = |name: &str| -> Option<u64> {
        m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == name)
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
        })
    };
    Ok(Some(Delivery {
        part,
        position: m.offset().to_string(),
        item: Item::Message(msg),
        sent: header(SENT_HEADER),
        run: header(RUN_HEADER),
    }))
}

/// Every partition of every topic, assigned by hand from the positions stored in a sink's
/// target (no group membership: the worker holding the lane's lease reads it alone).
pub struct WholeReader {
    consumer: StreamConsumer<Ctx>,
    parts: Vec<String>,
    shapes: Shapes,
}

impl WholeReader {
    /// Wait until every topic exists (the poller creates them) and assign all their
    /// partitions, each from just after its stored position or from its beginning.
    pub async fn connect(
        config: &ConnectorConfig,
        sink: &str,
        schemas: &[Arc<TableSchema>],
        stored: &Positions,
    ) -> Result<WholeReader, StreamError> {
        let cfg = &config.stream.kafka;
        let iam = iam_tokens(cfg).await.map_err(fatal)?;
        let group = format!("{}.{}.{sink}", cfg.topic_prefix, config.name);
        let consumer: StreamConsumer<Ctx> = consumer_config(cfg, &group)
            .create_with_context(Ctx {
                iam,
                ..Ctx::default()
            })
            .map_err(transient)?;
        let topics = topics(cfg, schemas);
        let partitions = wait_for_topics(consumer.client(), &topics).await?;
        let mut tpl = TopicPartitionList::new();
        let mut parts = Vec::new();
        for topic in &topics {
            for p in 0..partitions as i32 {
                let part = part_id(topic, p);
                let from = match stored.get(&part).and_then(|o| o.parse::<i64>().ok()) {
                    Some(o) => Offset::Offset(o + 1),
                    None => Offset::Beginning,
                };
                tpl.add_partition_offset(topic, p, from)
                    .map_err(transient)?;
                parts.push(part);
            }
        }
        consumer.assign(&tpl).map_err(transient)?;
        info!(
            topics = topics.len(),
            partitions, sink, "kafka partitions assigned to the lane"
        );
        let mut shapes = Shapes::new(schemas);
        shapes.use_catalog(schemas, &parts);
        Ok(WholeReader {
            consumer,
            parts,
            shapes,
        })
    }

    /// The lane's partition ids.
    pub fn parts(&self) -> Vec<String> {
        self.parts.clone()
    }

    /// Hand every message to `tx` until `stop`, or until the lane stops taking them.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Delivery>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), StreamError> {
        loop {
            let m = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = self.consumer.recv() => m.map_err(transient)?,
            };
            if let Some(d) = delivery(&mut self.shapes, &m)? {
                if tx.send(d).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// What a worker's consumer yields.
pub enum Event {
    /// These lanes' partitions are now this worker's.
    Assigned(Vec<i32>),
    /// These lanes' partitions were taken away.
    Revoked(Vec<i32>),
    /// A message (or tombstone-free item) of lane `lane`.
    Delivery { lane: i32, delivery: Delivery },
}

/// A sink worker's end: a member of the sink's consumer group.
pub struct Consumer {
    consumer: StreamConsumer<Ctx>,
    rebalances: mpsc::UnboundedReceiver<Event>,
    topics: Vec<String>,
    /// Of every topic.
    partitions: u32,
    shapes: Shapes,
}

impl Consumer {
    /// Join the sink's consumer group once every topic exists (the poller creates them).
    pub async fn connect(
        config: &ConnectorConfig,
        sink: &str,
        schemas: &[Arc<TableSchema>],
    ) -> Result<Consumer, StreamError> {
        let cfg = &config.stream.kafka;
        let group = cfg
            .group
            .clone()
            .unwrap_or_else(|| format!("{}.{}.{sink}", cfg.topic_prefix, config.name));
        let session = cfg.session_timeout.as_millis().max(1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let iam = iam_tokens(cfg).await.map_err(fatal)?;
        let consumer: StreamConsumer<Ctx> = consumer_config(cfg, &group)
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 3).to_string())
            .create_with_context(Ctx {
                iam,
                rebalances: Some(tx),
                errors: None,
            })
            .map_err(transient)?;
        let topics = topics(cfg, schemas);
        let partitions = wait_for_topics(consumer.client(), &topics).await?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(transient)?;
        info!(group = %group, topics = topics.len(), "kafka consumer subscribed");
        Ok(Consumer {
            consumer,
            rebalances: rx,
            topics,
            partitions,
            shapes: Shapes::new(schemas),
        })
    }

    /// Read the messages of `parts` (just assigned), and of others until a start marker says
    /// otherwise, in `schemas` (the catalog read again now).
    pub fn use_catalog(&mut self, schemas: &[Arc<TableSchema>], parts: &[String]) {
        self.shapes.use_catalog(schemas, parts);
    }

    /// The rows of each table lane `lane` receives.
    pub fn lane_share(&self, lane: i32) -> Share {
        Share::Partition {
            index: lane as u32,
            of: self.partitions,
        }
    }

    /// The partition ids of lane `lane`.
    pub fn lane_parts(&self, lane: i32) -> Vec<String> {
        self.topics.iter().map(|t| part_id(t, lane)).collect()
    }

    pub async fn next(&mut self) -> Result<Event, StreamError> {
        loop {
            tokio::select! {
                biased;
                Some(ev) = self.rebalances.recv() => return Ok(ev),
                m = self.consumer.recv() => {
                    let m = m.map_err(transient)?;
                    if let Some(delivery) = delivery(&mut self.shapes, &m)? {
                        return Ok(Event::Delivery { lane: m.partition(), delivery });
                    }
                }
            }
        }
    }

    /// Leave the group and join again: every partition is revoked and then read again from the
    /// offsets committed to Kafka, which never pass the positions stored in the target.
    pub fn rejoin(&self) -> Result<(), StreamError> {
        self.consumer.unsubscribe();
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&names).map_err(transient)
    }

    /// Tell Kafka where a new owner of these partitions would start (the target holds the
    /// real positions, so a lost commit only means re-reading and skipping).
    pub fn commit_hint(&self, positions: &Positions) {
        let mut tpl = TopicPartitionList::new();
        for (part, pos) in positions {
            let (Some((topic, p)), Ok(offset)) = (part.rsplit_once('/'), pos.parse::<i64>()) else {
                continue;
            };
            let Ok(p) = p.parse::<i32>() else { continue };
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(offset + 1));
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                warn!(error = %e, "kafka offset commit (a hint) failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SentCounts;

    #[test]
    fn a_failed_delivery_uncounts_its_own_record_and_no_other() {
        let mut c = SentCounts::default();
        for _ in 0..3 {
            c.sent("edfi.student", 0);
        }
        c.sent("edfi.student", 1);
        c.sent("edfi.grade", 0);
        c.failed("edfi.student", 0);
        c.failed("edfi.calendar", 2);
        assert_eq!(c.take("edfi.student", 0), 2);
        assert_eq!(c.take("edfi.student", 1), 1);
        assert_eq!(c.take("edfi.grade", 0), 1, "another topic keeps its count");
        assert_eq!(c.take("edfi.grade", 0), 0, "counted from the barrier on");
        c.failed("edfi.student", 1);
        assert_eq!(c.take("edfi.student", 1), 0);
    }
}
