//! The Kinesis stream (`aws-sdk-kinesis`).
//!
//! One data stream, `stream.kinesis.stream_name`, created by the poller with `shards` shards if
//! it is missing (used as it is if present). Every record's data is the JSON document
//!
//! ```json
//! {"key": <key>, "value": <value>}
//! ```
//!
//! holding the message's wire form (`event::encode`: the primary key as an object and the
//! Debezium-shaped envelope; for markers, their own key and envelope). A watermark or snapshot
//! marker also holds `"sent": <n>, "shard": <shard id>`, the records written to that shard
//! since its previous marker (see `stream::lane`): a copy meant for a shard that split or
//! merged just before it landed is stored on a child, whose reader ignores that count.
//!
//! A change's partition key is `{schema}.{table}` (cut to 256 characters) and its explicit hash
//! key the decimal of `row_hash(table, key)` — a 128-bit number, exactly Kinesis's hash key
//! space — so every change of a row goes to the one open shard whose hash range holds it, and
//! after a split or merge to the child that took the range over.
//!
//! The poller buffers changes and writes them with PutRecords (at most 500 records and 5 MB a
//! call, a few calls in flight), sending again the records a call reports as failed. Kinesis
//! keeps no order between calls in flight, nor for a record sent again: so a call holds at
//! most one record of a row, and a row's next record waits until the call holding its earlier
//! one has ended. A PostgreSQL source sends every change of a transaction, and a row can change
//! twice in one cycle: its later change replaces the earlier one still in the buffer (the sinks
//! apply only a cycle's last change of a row, and a buffer never spans a barrier). Before a
//! watermark or snapshot marker it waits until every change is stored, then writes the marker
//! to every open shard (explicit hash key = the shard's starting hash key) and lists the open
//! shards again until each holds it: a shard split or merged meanwhile gets it in its children.
//!
//! Sink workers read every shard in one lane ([`LANE`]), a task per shard, parents before
//! children: a shard is read once all its parents are read to their end (or have expired), which
//! keeps each row's changes in order across resharding. The shard list is refreshed when a shard
//! ends and every few seconds. A shard read to its end is stored as [`END`]; others at the
//! sequence number of their last applied record, where reading resumes.
//!
//! The reader runs ahead of the lane, so a parent may still hold unapplied records in the lane
//! when its children start: a child is registered with its parents (`Item::Opened { after }`)
//! and joins the lane only once they have left it. Snapshot markers, written to every shard,
//! are barriers in the lane like watermarks; a marker's copies written again during resharding
//! are handed out once (a watermark's copies do no harm).
//!
//! The client takes the standard AWS settings from the environment (`AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, the ECS task role, `AWS_ENDPOINT_URL`). The
//! poller needs `kinesis:DescribeStreamSummary`, `CreateStream` (unless the stream exists),
//! `ListShards` and `PutRecords`; sink workers `DescribeStreamSummary`, `ListShards`,
//! `GetShardIterator` and `GetRecords`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, Record, Shard, ShardFilter, ShardFilterType, ShardIteratorType,
    StreamStatus,
};
use aws_sdk_kinesis::Client;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoint::{Positions, END};
use crate::config::ConnectorConfig;
use crate::event::{self, Message, TableId, TableSchema};

use super::lane::{Delivery, Item, Run};
use super::{row_hash, Shapes, StreamError};

/// The one lane of a Kinesis sink worker: every shard.
pub const LANE: &str = "shards";

const STREAM: &str = "kinesis";
/// PutRecords limits: records and bytes (data and partition keys) per call.
const BATCH_RECORDS: usize = 500;
const BATCH_BYTES: usize = 5_000_000;
/// PutRecords calls in flight at once.
const IN_FLIGHT: usize = 4;
/// Attempts of one PutRecords batch (and of one listing) before the poller gives up the cycle.
const PUT_ATTEMPTS: usize = 15;
/// Rounds of "write the marker to the open shards without it" before giving up.
const MARKER_ROUNDS: usize = 20;
const PARTITION_KEY_CHARS: usize = 256;
/// Records per GetRecords call.
const READ_LIMIT: i32 = 1000;
/// Kinesis allows five GetRecords calls a second per shard.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(200);
/// How often the reader lists the shards to find children.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long the poller waits for a stream to become active.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(300);
const ACTIVE_POLL: Duration = Duration::from_millis(200);

fn transient(message: String) -> StreamError {
    StreamError::Transient {
        stream: STREAM,
        message,
    }
}

fn fatal(message: String) -> StreamError {
    StreamError::Fatal {
        stream: STREAM,
        message,
    }
}

/// Error codes that mean "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ThrottlingException",
    "KMSThrottlingException",
    "InternalFailureException",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ExpiredNextTokenException",
    "ResourceInUseException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Error codes of refused credentials.
const DENIED_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "AccessDeniedException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
];

/// Classify an SDK error of `what` on `stream`.
fn aws_error<E>(stream: &str, what: &str, e: SdkError<E>) -> StreamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or_default().to_string();
    let detail = match e.message() {
        Some(m) => format!("{code}: {m}"),
        None => crate::aws::error_chain(&e),
    };
    match &e {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {}
        SdkError::DispatchFailure(_) => {
            return if crate::aws::no_credentials(&e) {
                fatal(format!(
                    "no AWS credentials ({what}: {detail}): set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or run with a task role"
                ))
            } else {
                transient(format!("{what} on stream `{stream}` failed: {detail}"))
            };
        }
        SdkError::ConstructionFailure(_) => {
            return fatal(format!("{what} on stream `{stream}`: {detail}"));
        }
        _ => return transient(format!("{what} on stream `{stream}` failed: {detail}")),
    }
    if code == "ResourceNotFoundException" {
        fatal(format!(
            "stream `{stream}` does not exist ({what}: {detail}): start the poller (it creates the stream) or point KINESIS_STREAM_NAME at an existing stream"
        ))
    } else if DENIED_CODES.contains(&code.as_str()) || matches!(status, Some(401 | 403)) {
        fatal(format!(
            "AWS refused the credentials for stream `{stream}` ({what}: {detail}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the task role, and its permissions on the stream"
        ))
    } else if TRANSIENT_CODES.contains(&code.as_str())
        || status.is_none_or(|s| s >= 500 || s == 408 || s == 429)
    {
        transient(format!("{what} on stream `{stream}` failed: {detail}"))
    } else {
        fatal(format!(
            "Kinesis rejected {what} on stream `{stream}`: {detail}"
        ))
    }
}

/// A client from the standard AWS environment, TLS by rustls (ring).
async fn client() -> Result<Client, StreamError> {
    let shared = crate::aws::sdk_config().await;
    if shared.region().is_none() {
        return Err(fatal(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION)".into(),
        ));
    }
    Ok(Client::new(&shared))
}

/// Exponential delays with jitter, capped at 5 s.
struct Pause {
    delays: ExponentialBackoff,
    attempts: usize,
}

impl Pause {
    fn new() -> Pause {
        Pause {
            delays: Self::builder().build(),
            attempts: 0,
        }
    }

    fn builder() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
    }

    fn reset(&mut self) {
        if self.attempts > 0 {
            self.delays = Self::builder().build();
            self.attempts = 0;
        }
    }

    /// Wait the next delay after `error`; `false` if `stop` was cancelled meanwhile.
    async fn wait(&mut self, error: &StreamError, stop: Option<&CancellationToken>) -> bool {
        self.attempts += 1;
        let delay = self.delays.next().unwrap_or(Duration::from_secs(5));
        warn!(attempt = self.attempts, retry_in_ms = delay.as_millis() as u64, error = %error,
              "kinesis: transient fault; retrying");
        match stop {
            Some(stop) => tokio::select! {
                _ = tokio::time::sleep(delay) => true,
                _ = stop.cancelled() => false,
            },
            None => {
                tokio::time::sleep(delay).await;
                true
            }
        }
    }
}

/// A barrier's count: the records written to `shard` since its previous barrier there
/// (`None` in records of versions before the shard was named: the shard it is read from), and
/// the poller run that wrote it (`None` in records of versions before runs were named).
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    records: u64,
    shard: Option<String>,
    run: Option<Run>,
}

/// A record's data: the message's key and value, and on a barrier its count (`sent`, with the
/// shard it was written for in `shard`) and the poller's run (`run`).
fn record_data(key: &Json, value: &Json, sent: Option<&Sent>) -> Vec<u8> {
    let mut doc = json!({"key": key, "value": value});
    if let Some(s) = sent {
        doc["sent"] = json!(s.records);
        if let Some(shard) = &s.shard {
            doc["shard"] = json!(shard);
        }
        if let Some(run) = s.run {
            doc["run"] = json!(run);
        }
    }
    serde_json::to_vec(&doc).expect("JSON of JSON")
}

/// Inverse of [`record_data`].
fn parse_record_data(data: &[u8]) -> Result<(Json, Json, Option<Sent>), String> {
    let doc: Json = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let Json::Object(mut m) = doc else {
        return Err("not a JSON object".into());
    };
    let value = m.remove("value").ok_or("no field `value`")?;
    if !value.is_object() {
        return Err("field `value` is not an object".into());
    }
    let key = m.remove("key").unwrap_or(Json::Null);
    let sent = match (m.remove("sent"), m.remove("shard"), m.remove("run")) {
        (None, _, _) => None,
        (Some(n), shard, run) => Some(Sent {
            records: n.as_u64().ok_or("field `sent` is not a count")?,
            shard: match shard {
                None => None,
                Some(Json::String(s)) => Some(s),
                Some(_) => return Err("field `shard` is not a shard id".into()),
            },
            run: match run {
                None => None,
                Some(r) => Some(r.as_u64().ok_or("field `run` is not a poller run")?),
            },
        }),
    };
    Ok((key, value, sent))
}

/// The partition key of `table`'s records.
fn partition_key(table: &TableId) -> String {
    table
        .to_string()
        .chars()
        .take(PARTITION_KEY_CHARS)
        .collect()
}

fn entry(data: Vec<u8>, partition_key: String, hash_key: String) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(data))
        .partition_key(partition_key)
        .explicit_hash_key(hash_key)
        .build()
        .expect("data and partition key are set")
}

/// What an entry counts toward a PutRecords call's size limit.
fn entry_size(e: &PutRecordsRequestEntry) -> usize {
    e.data().as_ref().len()
        + e.partition_key().map_or(0, str::len)
        + e.explicit_hash_key().map_or(0, str::len)
}

/// Write `records`, sending again those a call reports as failed, with backoff. Returns the
/// shards the records went to.
///
/// Records sent again come after later ones of the same call: harmless, since a call holds at
/// most one record of a row, and a row's next record is sent only once the call holding its
/// earlier one has ended (see [`Producer::enqueue`]).
async fn put_all(
    client: Client,
    stream: String,
    mut records: Vec<PutRecordsRequestEntry>,
) -> Result<Vec<String>, StreamError> {
    let mut landed = Vec::with_capacity(records.len());
    let mut pause = Pause::new();
    loop {
        let error = match client
            .put_records()
            .stream_name(&stream)
            .set_records(Some(records.clone()))
            .send()
            .await
        {
            Ok(out) if out.records().len() != records.len() => transient(format!(
                "PutRecords on stream `{stream}` answered {} results for {} records",
                out.records().len(),
                records.len()
            )),
            Ok(out) => {
                let mut failed = Vec::new();
                let mut first = None;
                for (record, result) in records.into_iter().zip(out.records()) {
                    match result.error_code() {
                        None => landed.push(result.shard_id().unwrap_or_default().to_string()),
                        Some(code) => {
                            first.get_or_insert_with(|| {
                                format!("{code}: {}", result.error_message().unwrap_or_default())
                            });
                            failed.push(record);
                        }
                    }
                }
                if failed.is_empty() {
                    return Ok(landed);
                }
                let n = failed.len();
                records = failed;
                transient(format!(
                    "{n} records not stored by stream `{stream}` ({})",
                    first.unwrap_or_default()
                ))
            }
            Err(e) => {
                let e = aws_error(&stream, "PutRecords", e);
                if !e.is_retriable() {
                    return Err(e);
                }
                e
            }
        };
        if pause.attempts + 1 >= PUT_ATTEMPTS {
            return Err(error);
        }
        pause.wait(&error, None).await;
    }
}

/// `check`'s look at the stream: it exists and is active (or it is absent and the poller will
/// create it), the credentials may describe it, and it keeps records at least as long as the
/// source keeps its changes (`source_retention_secs`, when known).
pub async fn probe(
    config: &ConnectorConfig,
    source_retention_secs: Option<i64>,
) -> Vec<(bool, String)> {
    let cfg = &config.stream.kinesis;
    let name = &cfg.stream_name;
    let client = match client().await {
        Ok(c) => c,
        Err(e) => return vec![(false, format!("stream: Kinesis: {e}"))],
    };
    match client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
    {
        Ok(out) => match out.stream_description_summary() {
            Some(s) => {
                let mut lines = vec![(
                    matches!(
                        s.stream_status(),
                        StreamStatus::Active | StreamStatus::Updating | StreamStatus::Creating
                    ),
                    format!(
                        "stream: Kinesis stream {name} {}, {} open shards",
                        s.stream_status().as_str().to_lowercase(),
                        s.open_shard_count()
                    ),
                )];
                let hours = s.retention_period_hours();
                lines.push(match (shorter_than_source(hours, source_retention_secs), source_retention_secs) {
                    (Some(secs), _) => (
                        false,
                        format!(
                            "stream: Kinesis stream {name} keeps records {hours} h, less than the source keeps \
                             its changes ({} h): sinks stopped longer than the stream keeps records lose what they \
                             had not read and re-snapshot; aws kinesis increase-stream-retention-period \
                             --stream-name {name} --retention-period-hours {}",
                            secs / 3600,
                            (secs + 3599) / 3600
                        ),
                    ),
                    (None, Some(secs)) => (
                        true,
                        format!(
                            "stream: Kinesis stream {name} keeps records {hours} h, as long as the source keeps its changes ({} h) or longer",
                            secs / 3600
                        ),
                    ),
                    (None, None) => (
                        true,
                        format!("stream: Kinesis stream {name} keeps records {hours} h"),
                    ),
                });
                lines
            }
            None => vec![(
                false,
                format!("stream: Kinesis stream {name}: no description returned"),
            )],
        },
        Err(e) if e.code() == Some("ResourceNotFoundException") => {
            let short = shorter_than_source(cfg.retention_hours, source_retention_secs);
            vec![(
                short.is_none(),
                format!(
                    "stream: Kinesis stream {name} absent: the poller creates it ({} shards, records kept {} h{})",
                    cfg.shards,
                    cfg.retention_hours,
                    short.map_or(String::new(), |secs| format!(
                        ", less than the source keeps its changes ({} h): raise stream.kinesis.retention_hours",
                        secs / 3600
                    ))
                ),
            )]
        }
        Err(e) => vec![(
            false,
            format!("stream: {}", aws_error(name, "DescribeStreamSummary", e)),
        )],
    }
}

/// The source's retention (seconds) when a stream keeping records `hours` falls short of it.
fn shorter_than_source(hours: i32, source_secs: Option<i64>) -> Option<i64> {
    source_secs.filter(|&secs| i64::from(hours) * 3600 < secs)
}

/// Create `name` with `shards` shards unless it exists, and wait until it takes records.
async fn ensure_stream(
    client: &Client,
    name: &str,
    shards: i32,
    retention_hours: i32,
) -> Result<(), StreamError> {
    let deadline = Instant::now() + ACTIVE_DEADLINE;
    let mut created = false;
    loop {
        match client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
        {
            Ok(out) => {
                let summary = out.stream_description_summary();
                // Reads and writes work while a stream is resharded (UPDATING).
                if let Some(s) = summary.filter(|s| {
                    matches!(
                        s.stream_status(),
                        StreamStatus::Active | StreamStatus::Updating
                    )
                }) {
                    // A stream this poller created keeps records as long as configured (its
                    // retention can change once it is active); one found is used as it is.
                    if created && s.retention_period_hours() < retention_hours {
                        if *s.stream_status() == StreamStatus::Active {
                            match client
                                .increase_stream_retention_period()
                                .stream_name(name)
                                .retention_period_hours(retention_hours)
                                .send()
                                .await
                            {
                                Ok(_) => info!(
                                    stream = name,
                                    hours = retention_hours,
                                    "kinesis stream retention set"
                                ),
                                Err(e) => warn!(stream = name, hours = retention_hours,
                                    error = %aws_error(name, "IncreaseStreamRetentionPeriod", e),
                                    "cannot extend the new stream's retention; `edfi-cdc check` fails until it is"),
                            }
                            created = false;
                        }
                    } else {
                        if s.retention_period_hours() < retention_hours {
                            warn!(stream = name, hours = s.retention_period_hours(), wanted = retention_hours,
                                "the stream keeps records for less time than stream.kinesis.retention_hours; \
                                 extend it with aws kinesis increase-stream-retention-period");
                        }
                        info!(
                            stream = name,
                            open_shards = s.open_shard_count(),
                            retention_hours = s.retention_period_hours(),
                            "kinesis stream ready"
                        );
                        return Ok(());
                    }
                }
                debug!(stream = name, status = ?summary.map(|s| s.stream_status()), "waiting for the kinesis stream");
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                match client
                    .create_stream()
                    .stream_name(name)
                    .shard_count(shards)
                    .send()
                    .await
                {
                    Ok(_) => {
                        info!(stream = name, shards, "kinesis stream created");
                        created = true;
                    }
                    Err(e) if e.code() == Some("ResourceInUseException") => {}
                    Err(e) => return Err(aws_error(name, "CreateStream", e)),
                }
            }
            Err(e) => {
                let e = aws_error(name, "DescribeStreamSummary", e);
                if !e.is_retriable() {
                    return Err(e);
                }
                warn!(error = %e, "kinesis: waiting for the stream");
            }
        }
        if Instant::now() > deadline {
            return Err(transient(format!(
                "stream `{name}` is not active after {} s",
                ACTIVE_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(ACTIVE_POLL).await;
    }
}

/// The shards of `stream` that `filter` selects, every page.
async fn list_shards(
    client: &Client,
    stream: &str,
    filter: ShardFilterType,
) -> Result<Vec<Shard>, StreamError> {
    let filter = ShardFilter::builder()
        .r#type(filter)
        .build()
        .expect("type is set");
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // With a NextToken, Kinesis wants neither the stream name nor the filter.
        let request = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client
                .list_shards()
                .stream_name(stream)
                .shard_filter(filter.clone()),
        };
        let out = request
            .send()
            .await
            .map_err(|e| aws_error(stream, "ListShards", e))?;
        shards.extend(out.shards().iter().cloned());
        match out.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(shards),
        }
    }
}

/// Buffered and in-flight changes.
#[derive(Default)]
struct Batching {
    records: Vec<PutRecordsRequestEntry>,
    bytes: usize,
    /// The rows of the buffered records ([`row_id`]): their place in `records`, and whether
    /// the record is a change (not a snapshot row).
    rows: HashMap<String, (usize, bool)>,
    in_flight: JoinSet<Result<Vec<String>, StreamError>>,
    /// The rows of each call in flight.
    flying: HashMap<tokio::task::Id, HashSet<String>>,
    /// Records stored per shard since the barrier last written to it. A call that failed, or
    /// one of a killed poller, may still have stored records uncounted: a reader then receives
    /// more, never fewer.
    landed: HashMap<String, u64>,
}

impl Batching {
    /// Wait for one call in flight to end; false if none was in flight.
    async fn join_one(&mut self) -> Result<bool, StreamError> {
        let Some(r) = self.in_flight.join_next_with_id().await else {
            return Ok(false);
        };
        let (id, result) = match r {
            Ok((id, result)) => (id, result),
            Err(e) => (e.id(), Err(fatal(format!("a PutRecords task failed: {e}")))),
        };
        self.flying.remove(&id);
        for shard in result? {
            *self.landed.entry(shard).or_default() += 1;
        }
        Ok(true)
    }

    /// Wait until no call in flight holds a record of `row`.
    async fn landed(&mut self, row: &str) -> Result<(), StreamError> {
        while self.flying.values().any(|rows| rows.contains(row)) {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Forget the buffer after a failure, once no call is in flight (each ends within its own
    /// attempts): the poller sends the cycle again. A call that reached the stream is stored
    /// even if nobody waits for its answer, and one stored after the cycle was sent again would
    /// put a row's older change after its newer one.
    async fn abandon(&mut self) {
        self.records.clear();
        self.bytes = 0;
        self.rows.clear();
        if !self.in_flight.is_empty() {
            warn!(
                calls = self.in_flight.len(),
                "kinesis: waiting for the PutRecords calls still in flight before the cycle is sent again"
            );
        }
        loop {
            match self.join_one().await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => warn!(error = %e, "kinesis: a PutRecords call in flight failed too"),
            }
        }
        self.flying.clear();
    }
}

/// A row's identity among the buffered and in-flight records: its table and key.
fn row_id(table: &TableId, key: &Json) -> String {
    format!("{table}\u{1f}{key}")
}

/// The poller's end.
pub struct Producer {
    client: Client,
    stream: String,
    connector: String,
    database: String,
    batching: Mutex<Batching>,
    /// Written into every barrier (see [`Run`]); a new one after a barrier write failed.
    run: AtomicU64,
}

impl Producer {
    /// Connect, create the stream if it is missing, and wait until it is active.
    /// `run`: this poller process's first run ([`crate::checkpoint::begin_run`]).
    pub async fn connect(
        config: &ConnectorConfig,
        run: super::lane::Run,
    ) -> Result<Producer, StreamError> {
        let cfg = &config.stream.kinesis;
        let client = client().await?;
        ensure_stream(&client, &cfg.stream_name, cfg.shards, cfg.retention_hours).await?;
        Ok(Producer {
            client,
            stream: cfg.stream_name.clone(),
            connector: config.name.clone(),
            database: config.source.database.clone(),
            batching: Mutex::new(Batching::default()),
            run: AtomicU64::new(run),
        })
    }

    pub async fn send(&self, msg: Message) -> Result<(), StreamError> {
        let (key, value) = event::encode(&self.connector, &self.database, &msg);
        match &msg {
            Message::Change(ev) => {
                let hash = row_hash(&ev.table.id, &ev.key).to_string();
                let data = record_data(&key, &value, None);
                let row = row_id(&ev.table.id, &key);
                let change = ev.op != event::Op::Read;
                self.enqueue(entry(data, partition_key(&ev.table.id), hash), row, change)
                    .await
            }
            Message::Watermark(_) => {
                self.flush().await?;
                self.barrier(&key, &value, "watermark").await
            }
            Message::Snapshot(m) => {
                self.flush().await?;
                self.barrier(&key, &value, &partition_key(&m.table().id))
                    .await
            }
        }
    }

    /// Buffer `record` of `row`, keeping the row's records in order: a later change replaces
    /// the row's change still in the buffer (the sinks apply a cycle's last change of a row,
    /// and a buffer never spans a barrier); otherwise the row's earlier record is stored before
    /// this one is sent.
    async fn enqueue(
        &self,
        record: PutRecordsRequestEntry,
        row: String,
        change: bool,
    ) -> Result<(), StreamError> {
        let mut b = self.batching.lock().await;
        let result = async {
            let size = entry_size(&record);
            if let Some(&(i, earlier_change)) = b.rows.get(&row) {
                let bytes = b.bytes - entry_size(&b.records[i]) + size;
                if change && earlier_change && bytes <= BATCH_BYTES {
                    b.records[i] = record;
                    b.bytes = bytes;
                    return Ok(());
                }
                self.dispatch(&mut b).await?;
            }
            b.landed(&row).await?;
            if !b.records.is_empty()
                && (b.records.len() >= BATCH_RECORDS || b.bytes + size > BATCH_BYTES)
            {
                self.dispatch(&mut b).await?;
            }
            let at = b.records.len();
            b.bytes += size;
            b.records.push(record);
            b.rows.insert(row, (at, change));
            Ok(())
        }
        .await;
        if result.is_err() {
            b.abandon().await;
        }
        result
    }

    /// Start writing the buffered records; wait while too many calls are in flight.
    async fn dispatch(&self, b: &mut Batching) -> Result<(), StreamError> {
        let records = std::mem::take(&mut b.records);
        b.bytes = 0;
        let rows = std::mem::take(&mut b.rows).into_keys().collect();
        let call = b
            .in_flight
            .spawn(put_all(self.client.clone(), self.stream.clone(), records));
        b.flying.insert(call.id(), rows);
        while b.in_flight.len() > IN_FLIGHT {
            b.join_one().await?;
        }
        Ok(())
    }

    /// See [`super::Producer::settle`].
    pub async fn settle(&self) {
        self.batching.lock().await.abandon().await;
    }

    /// Wait until the stream stored every change sent so far.
    async fn flush(&self) -> Result<(), StreamError> {
        let mut b = self.batching.lock().await;
        let result = async {
            if !b.records.is_empty() {
                self.dispatch(&mut b).await?;
            }
            while b.join_one().await? {}
            Ok(())
        }
        .await;
        if result.is_err() {
            b.abandon().await;
        }
        result
    }

    /// The open shards: id and starting hash key.
    async fn open_shards(&self) -> Result<Vec<(String, String)>, StreamError> {
        let mut pause = Pause::new();
        loop {
            match list_shards(&self.client, &self.stream, ShardFilterType::AtLatest).await {
                Ok(shards) => {
                    return Ok(shards
                        .iter()
                        .filter_map(|s| {
                            s.hash_key_range().map(|r| {
                                (s.shard_id().to_string(), r.starting_hash_key().to_string())
                            })
                        })
                        .collect())
                }
                Err(e) if e.is_retriable() && pause.attempts + 1 < PUT_ATTEMPTS => {
                    pause.wait(&e, None).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Write a barrier to every open shard. One that failed may be in some shards only: the
    /// barriers after it are of a new run, which sinks hand out after it (see [`Run`]).
    async fn barrier(&self, key: &Json, value: &Json, partition: &str) -> Result<(), StreamError> {
        let result = self.to_every_open_shard(key, value, partition).await;
        if result.is_err() {
            let run = super::lane::next_run(&self.run);
            warn!(run, "kinesis: a barrier may be in some shards only; the barriers after it are of a new poller run");
        }
        result
    }

    /// Write a barrier to every open shard, until the open shards all hold it (a shard split
    /// or merged meanwhile passes it to its children; a child may get it twice, which is
    /// harmless). Each copy carries the records its shard stored since its previous barrier.
    async fn to_every_open_shard(
        &self,
        key: &Json,
        value: &Json,
        partition: &str,
    ) -> Result<(), StreamError> {
        let mut holding: HashSet<String> = HashSet::new();
        for _ in 0..MARKER_ROUNDS {
            let open: Vec<(String, String)> = self
                .open_shards()
                .await?
                .into_iter()
                .filter(|(id, _)| !holding.contains(id))
                .collect();
            if open.is_empty() {
                return Ok(());
            }
            let mut b = self.batching.lock().await;
            let missing: Vec<PutRecordsRequestEntry> = open
                .iter()
                .map(|(id, start)| {
                    let sent = Sent {
                        records: b.landed.get(id).copied().unwrap_or(0),
                        shard: Some(id.clone()),
                        run: Some(self.run.load(Ordering::SeqCst)),
                    };
                    let data = record_data(key, value, Some(&sent));
                    entry(data, partition.to_string(), start.clone())
                })
                .collect();
            for chunk in missing.chunks(BATCH_RECORDS) {
                let landed =
                    match put_all(self.client.clone(), self.stream.clone(), chunk.to_vec()).await {
                        Ok(landed) => landed,
                        Err(e) => {
                            // Some copies may have landed, closing stretches that can no longer
                            // be named: count from zero everywhere (a reader then receives more
                            // than a count says, never fewer).
                            b.landed.clear();
                            return Err(e);
                        }
                    };
                // A copy closes the stretch of the shard it landed on, even one that landed on
                // a child of the shard it was meant for (whose count its reader then ignores).
                for shard in &landed {
                    b.landed.remove(shard);
                }
                holding.extend(landed);
            }
            for (id, _) in &open {
                b.landed.remove(id);
            }
        }
        Err(transient(format!(
            "the open shards of stream `{}` kept changing while a marker was written",
            self.stream
        )))
    }
}

/// What the shard readers share.
struct Shared {
    client: Client,
    stream: String,
    idle_wait: Duration,
    shapes: std::sync::Mutex<Shapes>,
}

impl Shared {
    /// An iterator after `after`, or at the start of the shard.
    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, StreamError> {
        let mut request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard);
        request = match after {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = request
            .send()
            .await
            .map_err(|e| aws_error(&self.stream, &format!("GetShardIterator of {shard}"), e))?;
        out.shard_iterator()
            .map(str::to_string)
            .ok_or_else(|| transient(format!("GetShardIterator of {shard} gave no iterator")))
    }

    /// The record's message, and on a barrier the records its shard stored before it and the
    /// poller run that wrote it. A copy written for a shard that split or merged just before it
    /// landed counts that shard's records, not this one's: its count is unknown here.
    fn decode(
        &self,
        shard: &str,
        r: &Record,
    ) -> Result<(Message, Option<u64>, Option<Run>), StreamError> {
        let at = || format!("shard {shard} sequence number {}", r.sequence_number());
        let (key, value, sent) = parse_record_data(r.data().as_ref())
            .map_err(|e| fatal(format!("{}: malformed record: {e}", at())))?;
        let msg = self
            .shapes
            .lock()
            .expect("no reader panics holding the shapes")
            .decode(shard, &key, &value)
            .map_err(|e| fatal(format!("{}: {e}", at())))?;
        let run = sent.as_ref().and_then(|s| s.run);
        let sent = sent
            .filter(|s| s.shard.as_deref().is_none_or(|s| s == shard))
            .map(|s| s.records);
        Ok((msg, sent, run))
    }
}

/// How a shard reader finished.
#[derive(Debug)]
enum Outcome {
    /// The shard is closed and was read to its end; `last` is its last sequence number known
    /// ("" if none), `children` its children with their parents.
    Ended {
        shard: String,
        last: String,
        children: Vec<(String, Vec<String>)>,
    },
    /// Stopped, or the lane is gone.
    Quit,
}

/// Send `d` to the lane; `false` if the lane is gone or `stop` was cancelled.
async fn deliver(tx: &mpsc::Sender<Delivery>, stop: &CancellationToken, d: Delivery) -> bool {
    tokio::select! {
        r = tx.send(d) => r.is_ok(),
        _ = stop.cancelled() => false,
    }
}

/// Sleep `d`; `false` if `stop` was cancelled meanwhile.
async fn nap(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

/// Read `shard` from after `after` (or its start) to its end, or until stopped.
async fn read_shard(
    shared: Arc<Shared>,
    shard: String,
    after: Option<String>,
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
) -> Result<Outcome, StreamError> {
    let mut last = after;
    let mut iterator: Option<String> = None;
    let mut pause = Pause::new();
    let mut last_call: Option<Instant> = None;
    debug!(shard = %shard, after = ?last, "kinesis: reading shard");
    loop {
        if stop.is_cancelled() {
            return Ok(Outcome::Quit);
        }
        let it = match iterator.take() {
            Some(it) => it,
            None => match shared.iterator(&shard, last.as_deref()).await {
                Ok(it) => it,
                Err(e) if e.is_retriable() => {
                    if !pause.wait(&e, Some(&stop)).await {
                        return Ok(Outcome::Quit);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        if let Some(t) = last_call {
            let wait = (t + MIN_READ_INTERVAL).saturating_duration_since(Instant::now());
            if !wait.is_zero() && !nap(wait, &stop).await {
                return Ok(Outcome::Quit);
            }
        }
        last_call = Some(Instant::now());
        let out = match shared
            .client
            .get_records()
            .shard_iterator(&it)
            .limit(READ_LIMIT)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("ExpiredIteratorException") => {
                debug!(shard = %shard, "kinesis: shard iterator expired; getting a new one");
                continue; // a new iterator after `last`
            }
            Err(e) => {
                let e = aws_error(&shared.stream, &format!("GetRecords of {shard}"), e);
                if !e.is_retriable() {
                    return Err(e);
                }
                iterator = Some(it);
                if !pause.wait(&e, Some(&stop)).await {
                    return Ok(Outcome::Quit);
                }
                continue;
            }
        };
        pause.reset();
        for r in out.records() {
            let (msg, sent, run) = shared.decode(&shard, r)?;
            let seq = r.sequence_number().to_string();
            let d = Delivery {
                part: shard.clone(),
                position: seq.clone(),
                item: Item::Message(msg),
                sent,
                run,
            };
            if !deliver(&tx, &stop, d).await {
                return Ok(Outcome::Quit);
            }
            last = Some(seq);
        }
        match out.next_shard_iterator() {
            None => {
                let children = out
                    .child_shards()
                    .iter()
                    .map(|c| (c.shard_id().to_string(), c.parent_shards().to_vec()))
                    .collect();
                return Ok(Outcome::Ended {
                    shard,
                    last: last.unwrap_or_default(),
                    children,
                });
            }
            Some(next) => {
                iterator = Some(next.to_string());
                // An empty reply behind the tip only skipped a quiet stretch: read on.
                let caught_up = out.millis_behind_latest().unwrap_or(0) == 0;
                if out.records().is_empty() && caught_up && !nap(shared.idle_wait, &stop).await {
                    return Ok(Outcome::Quit);
                }
            }
        }
    }
}

/// The shards to start now: not done, not started, and every parent done or gone (expired
/// from the stream). `shards` maps each known shard to its parents.
fn startable(
    shards: &BTreeMap<String, Vec<String>>,
    done: &HashSet<String>,
    started: &HashSet<String>,
) -> Vec<String> {
    shards
        .iter()
        .filter(|(id, parents)| {
            !done.contains(*id)
                && !started.contains(*id)
                && parents
                    .iter()
                    .all(|p| done.contains(p) || !shards.contains_key(p))
        })
        .map(|(id, _)| id.clone())
        .collect()
}

fn parents(s: &Shard) -> Vec<String> {
    [s.parent_shard_id(), s.adjacent_parent_shard_id()]
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect()
}

/// Follows the shards and runs a reader per shard.
struct Coordinator {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
    stored: Positions,
    /// Every shard of the last listing, with its parents.
    listed: BTreeMap<String, Vec<String>>,
    /// Children learned from a parent's end but not yet listed.
    learned: BTreeMap<String, Vec<String>>,
    /// Read to the end (stored as such, or in this run).
    done: HashSet<String>,
    /// Readers started in this run.
    started: HashSet<String>,
    tasks: JoinSet<Result<Outcome, StreamError>>,
}

impl Coordinator {
    fn known(&self) -> BTreeMap<String, Vec<String>> {
        let mut all = self.listed.clone();
        for (id, ps) in &self.learned {
            all.entry(id.clone()).or_insert_with(|| ps.clone());
        }
        all
    }

    async fn list_once(&mut self) -> Result<(), StreamError> {
        let shards = list_shards(
            &self.shared.client,
            &self.shared.stream,
            ShardFilterType::FromTrimHorizon,
        )
        .await?;
        self.listed = shards
            .iter()
            .map(|s| (s.shard_id().to_string(), parents(s)))
            .collect();
        let listed = &self.listed;
        self.learned.retain(|id, _| !listed.contains_key(id));
        Ok(())
    }

    /// List the shards, retrying transient faults; `false` if stopped.
    async fn list(&mut self) -> Result<bool, StreamError> {
        let mut pause = Pause::new();
        loop {
            match self.list_once().await {
                Ok(()) => return Ok(true),
                Err(e) if e.is_retriable() => {
                    if !pause.wait(&e, Some(&self.stop)).await {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Register the shards now startable with the lane, each to join once its parents have
    /// left it; `None` if the lane is gone or stopped.
    /// This happens before the end of the parent that made them startable reaches the lane.
    async fn open_startable(&mut self) -> Option<Vec<String>> {
        let known = self.known();
        let ready = startable(&known, &self.done, &self.started);
        for id in &ready {
            let opened = Delivery {
                part: id.clone(),
                position: String::new(),
                item: Item::Opened {
                    after: known.get(id).cloned().unwrap_or_default(),
                },
                sent: None,
                run: None,
            };
            if !deliver(&self.tx, &self.stop, opened).await {
                return None;
            }
        }
        Some(ready)
    }

    fn spawn(&mut self, shards: Vec<String>) {
        for id in shards {
            let after = self
                .stored
                .get(&id)
                .filter(|p| p.as_str() != END && !p.is_empty())
                .cloned();
            info!(shard = %id, after = ?after, "kinesis: reading shard");
            self.started.insert(id.clone());
            self.tasks.spawn(read_shard(
                self.shared.clone(),
                id,
                after,
                self.tx.clone(),
                self.stop.clone(),
            ));
        }
    }

    async fn run(mut self) -> Result<(), StreamError> {
        self.done = self
            .stored
            .iter()
            .filter(|(_, p)| p.as_str() == END)
            .map(|(id, _)| id.clone())
            .collect();
        if !self.list().await? {
            return Ok(());
        }
        // Every first shard joins the lane before any of them delivers a message.
        let Some(ready) = self.open_startable().await else {
            return Ok(());
        };
        info!(stream = %self.shared.stream, shards = self.listed.len(), done = self.done.len(),
              reading = ready.len(), "kinesis: reading the stream");
        self.spawn(ready);
        let mut refresh = tokio::time::interval_at(Instant::now() + REFRESH_EVERY, REFRESH_EVERY);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                _ = refresh.tick() => {
                    match self.list_once().await {
                        Ok(()) => {}
                        Err(e) if e.is_retriable() => {
                            warn!(error = %e, "kinesis: listing the shards failed; trying again later");
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    let Some(ready) = self.open_startable().await else {
                        return Ok(());
                    };
                    self.spawn(ready);
                }
                Some(r) = self.tasks.join_next() => {
                    let outcome = r.map_err(|e| fatal(format!("a shard reader failed: {e}")))??;
                    let Outcome::Ended { shard, last, children } = outcome else {
                        return Ok(());
                    };
                    info!(shard = %shard, children = ?children.iter().map(|c| &c.0).collect::<Vec<_>>(),
                          "kinesis: shard read to its end");
                    self.done.insert(shard.clone());
                    for (id, ps) in children {
                        if !self.listed.contains_key(&id) {
                            self.learned.insert(id, ps);
                        }
                    }
                    if !self.list().await? {
                        return Ok(());
                    }
                    // The children join the lane before their parent leaves it.
                    let Some(ready) = self.open_startable().await else {
                        return Ok(());
                    };
                    let end = Delivery { part: shard, position: last, item: Item::Ended, sent: None, run: None };
                    if !deliver(&self.tx, &self.stop, end).await {
                        return Ok(());
                    }
                    self.spawn(ready);
                }
            }
        }
    }
}

/// A sink worker's end: reads every shard into one lane.
pub struct Reader {
    shared: Arc<Shared>,
}

impl Reader {
    /// Connect and wait (up to five minutes) until the stream exists: the poller creates it,
    /// and sink workers may start first.
    pub async fn connect(
        config: &ConnectorConfig,
        schemas: &[Arc<TableSchema>],
    ) -> Result<Reader, StreamError> {
        let cfg = &config.stream.kinesis;
        let client = client().await?;
        let deadline = tokio::time::Instant::now() + ACTIVE_DEADLINE;
        let mut said = false;
        loop {
            let found = client
                .describe_stream_summary()
                .stream_name(&cfg.stream_name)
                .send()
                .await;
            match found {
                Ok(_) => break,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception())
                        && tokio::time::Instant::now() < deadline =>
                {
                    if !said {
                        info!(stream = %cfg.stream_name, "waiting for the poller to create the stream");
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(aws_error(&cfg.stream_name, "DescribeStreamSummary", e)),
            }
        }
        Ok(Reader {
            shared: Arc::new(Shared {
                client,
                stream: cfg.stream_name.clone(),
                idle_wait: cfg.idle_wait,
                shapes: std::sync::Mutex::new(Shapes::new(schemas)),
            }),
        })
    }

    /// Read every shard, parents before children, sending Deliveries into the lane; returns Ok
    /// when `stop` is cancelled (or the lane is gone).
    pub async fn run(
        self,
        stored: Positions,
        tx: mpsc::Sender<Delivery>,
        stop: CancellationToken,
    ) -> Result<(), StreamError> {
        Coordinator {
            shared: self.shared,
            tx,
            stop,
            stored,
            listed: BTreeMap::new(),
            learned: BTreeMap::new(),
            done: HashSet::new(),
            started: HashSet::new(),
            tasks: JoinSet::new(),
        }
        .run()
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::every_type_schema;
    use crate::event::{ChangeEvent, Op, Value, Watermark};
    use chrono::NaiveDate;

    fn map(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(id, ps)| (id.to_string(), ps.iter().map(|p| p.to_string()).collect()))
            .collect()
    }

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn children_wait_for_every_parent() {
        // 0 and 1 are first; 0 split into 2 and 3; 3 and 1 merged into 4.
        let shards = map(&[
            ("0", &[]),
            ("1", &[]),
            ("2", &["0"]),
            ("3", &["0"]),
            ("4", &["3", "1"]),
        ]);
        let none = set(&[]);
        assert_eq!(startable(&shards, &none, &none), vec!["0", "1"]);
        assert!(startable(&shards, &none, &set(&["0", "1"])).is_empty());
        assert_eq!(
            startable(&shards, &set(&["0"]), &set(&["0", "1"])),
            vec!["2", "3"]
        );
        // 4 needs 1 as well as 3
        assert!(startable(&shards, &set(&["0", "3"]), &set(&["0", "1", "2", "3"])).is_empty());
        assert_eq!(
            startable(&shards, &set(&["0", "1", "3"]), &set(&["0", "1", "2", "3"])),
            vec!["4"]
        );
        // stored as done: never started again
        assert_eq!(
            startable(&shards, &set(&["0", "1", "2", "3", "4"]), &none),
            Vec::<String>::new()
        );
    }

    #[test]
    fn expired_parents_count_as_done() {
        let shards = map(&[("2", &["0"]), ("3", &["0"]), ("4", &["3", "1"])]);
        let none = set(&[]);
        assert_eq!(startable(&shards, &none, &none), vec!["2", "3"]);
        assert_eq!(startable(&shards, &set(&["3"]), &set(&["2"])), vec!["4"]);
    }

    /// A parent parked in the lane with records behind it; its child's records must wait.
    #[tokio::test]
    async fn a_child_joins_the_lane_after_its_parents_and_keeps_row_order() {
        use crate::stream::lane;
        let table = every_type_schema();
        let change = |k: i64, v: i64| {
            Item::Message(Message::Change(ChangeEvent {
                table: table.clone(),
                op: Op::Update,
                key: vec![Value::Int(k), Value::Null],
                after: None,
                version: v,
                commit_time: None,
            }))
        };
        let wm = |v| Watermark {
            version: v,
            commit_time: None,
        };
        let d = |part: &str, pos: &str, item| Delivery {
            part: part.into(),
            position: pos.into(),
            item,
            sent: None,
            run: None,
        };
        let w = |v| Item::Message(Message::Watermark(wm(v)));
        let (tx, rx) = mpsc::channel(100);
        let mut input = lane::Input::new(rx, Vec::<String>::new(), Positions::new(), true);
        let opened = |after: &[&str]| Item::Opened {
            after: after.iter().map(|s| s.to_string()).collect(),
        };
        // p split into c (and another child, left out) in cycle 6; c split into g in cycle 7.
        // The reader is ahead of the lane: p and c are read to their end, and their children
        // joined, before q delivers watermark 5.
        for x in [
            d("p", "", opened(&[])),
            d("q", "", opened(&[])),
            d("p", "1", change(1, 5)),
            d("p", "2", w(5)),
            d("p", "3", change(1, 6)),
            d("c", "", opened(&["p"])),
            d("p", "3", Item::Ended),
            d("c", "10", change(2, 6)),
            d("c", "11", w(6)),
            d("c", "12", change(1, 7)),
            d("g", "", opened(&["c"])),
            d("c", "12", Item::Ended),
            d("g", "20", change(3, 7)),
            d("g", "21", w(7)),
            d("g", "22", change(1, 8)),
            d("g", "23", w(8)),
            d("q", "1", w(5)),
            d("q", "2", w(6)),
            d("q", "3", w(7)),
            d("q", "4", w(8)),
        ] {
            tx.send(x).await.unwrap();
        }
        let mut seen = Vec::new();
        while let Some(m) = input.try_recv() {
            seen.push(match m {
                Message::Change(c) => match c.key[0] {
                    Value::Int(k) => format!("k{k}v{}", c.version),
                    _ => unreachable!("int keys"),
                },
                Message::Watermark(w) => format!("W{}", w.version),
                Message::Snapshot(_) => "S".into(),
            });
        }
        assert_eq!(
            seen,
            vec!["k1v5", "W5", "k1v6", "k2v6", "W6", "k1v7", "k3v7", "W7", "k1v8", "W8"]
        );
        let consumed = input.consumed();
        assert_eq!(consumed.get("p").map(String::as_str), Some(END));
        assert_eq!(consumed.get("c").map(String::as_str), Some(END));
        assert_eq!(consumed.get("g").map(String::as_str), Some("23"));
    }

    #[test]
    fn record_data_round_trips() {
        let table = every_type_schema();
        let mut after = vec![Value::Null; table.columns.len()];
        after[0] = Value::Int(42);
        after[1] = Value::Date(NaiveDate::from_ymd_opt(2010, 3, 4).unwrap());
        after[2] = Value::String("Zoë \"Nguyễn\", 日本\n".into());
        let change = Message::Change(ChangeEvent {
            table: table.clone(),
            op: Op::Update,
            key: after[..2].to_vec(),
            after: Some(after),
            version: 17,
            commit_time: None,
        });
        let watermark = Message::Watermark(Watermark {
            version: 18,
            commit_time: None,
        });
        let sent = Sent {
            records: 3,
            shard: Some("shardId-000000000001".into()),
            run: Some(1_764_990_000_000),
        };
        for (msg, sent) in [(change, None), (watermark, Some(sent))] {
            let (key, value) = event::encode("c", "db", &msg);
            let data = record_data(&key, &value, sent.as_ref());
            let (k, v, n) = parse_record_data(&data).unwrap();
            assert_eq!((&k, &v, n), (&key, &value, sent));
            let back = event::decode(&k, &v, |id| (id == &table.id).then(|| table.clone()));
            assert_eq!(back.unwrap(), msg);
        }
    }

    #[test]
    fn malformed_record_data_is_refused() {
        assert!(parse_record_data(b"not json").is_err());
        assert!(parse_record_data(b"[1]").is_err());
        assert!(parse_record_data(br#"{"key": {}}"#).is_err());
        assert!(parse_record_data(br#"{"key": {}, "value": 3}"#).is_err());
        assert!(parse_record_data(br#"{"key": {}, "value": {}, "sent": -1}"#).is_err());
        assert!(parse_record_data(br#"{"key": {}, "value": {}, "sent": 1, "shard": 2}"#).is_err());
        assert!(parse_record_data(br#"{"key": {}, "value": {}, "sent": 1, "run": "x"}"#).is_err());
        // Written before counts named their shard: the shard it is read from.
        let (_, _, sent) = parse_record_data(br#"{"key": {}, "value": {}, "sent": 1}"#).unwrap();
        assert_eq!(sent.map(|s| (s.records, s.shard)), Some((1, None)));
    }

    #[test]
    fn keys_fit_kinesis() {
        let long = TableId::new("edfi", "x".repeat(300));
        assert_eq!(partition_key(&long).chars().count(), PARTITION_KEY_CHARS);
        assert_eq!(
            partition_key(&TableId::new("edfi", "Student")),
            "edfi.Student"
        );
        // A hash key is at most 2^128 - 1: 39 decimal digits.
        assert_eq!(
            u128::MAX.to_string(),
            "340282366920938463463374607431768211455"
        );
        let e = entry(b"{}".to_vec(), "p".into(), u128::MAX.to_string());
        assert_eq!(entry_size(&e), 2 + 1 + 39);
    }
}
