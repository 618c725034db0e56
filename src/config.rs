//! Connector configuration: one TOML file per ODS database.
//!
//! Loading runs in three steps, each reporting the file, the key and the reason of every problem
//! before anything connects: `${VAR}` / `${VAR:-default}` expansion on the file's text (a value
//! inside a quoted string is escaped for TOML), parsing into the structs below (unknown keys are
//! errors), then validation of values and of the connectors against each other.
//! `docs/configuration.md` documents every key; keep it in step with this file.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::event::TableId;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Dotted key path (`sinks.staging.url`), or the line when no key applies.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}`: {}",
            self.file.display(),
            self.key,
            self.reason
        )
    }
}

/// Every problem found while loading a set of connector files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// A secret string: never shown by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration ({e}); write e.g. \"500ms\", \"1s\", \"5m\""
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Connector name: checkpoints in every target are kept per connector.
    pub name: String,
    pub source: SourceConfig,
    #[serde(default)]
    pub poll: PollConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub stream: StreamConfig,
    /// Table groups (`ic`, `illuminate`, …), each switchable.
    pub groups: BTreeMap<String, GroupConfig>,
    /// Per-table options, keyed `schema.Table`.
    #[serde(default)]
    pub tables: BTreeMap<String, TableOptions>,
    pub sinks: SinksConfig,
    /// How long a stop request (SIGTERM/SIGINT) may take before the process exits anyway.
    #[serde(default = "default_shutdown_grace", deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Address of the HTTP port serving `/metrics`, `/healthz` and `/readyz` (one per process:
    /// the first connector's, unless `--metrics-addr` is given).
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: std::net::SocketAddr,
    /// `/readyz` answers ready while the last successful poll cycle is at most this many poll
    /// intervals old.
    #[serde(default = "default_readiness_multiple")]
    pub readiness_multiple: u32,
    #[serde(skip)]
    pub file: PathBuf,
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_metrics_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 9720))
}
fn default_readiness_multiple() -> u32 {
    10
}

/// What the source is: SQL Server with Change Tracking, or PostgreSQL with logical decoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    #[default]
    Mssql,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(default)]
    pub kind: SourceKind,
    /// SQL Server: host, port, database, user and password.
    #[serde(default)]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// SQL Server: the database. PostgreSQL: taken from `url`.
    #[serde(default)]
    pub database: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: Secret,
    /// PostgreSQL: the connection URL (`postgres://user:pw@host:5432/db?sslmode=require`).
    #[serde(default)]
    pub url: Secret,
    /// PostgreSQL: the logical replication slot the connector owns (default
    /// `edfi_cdc_{connector}`, `-` as `_`).
    #[serde(default)]
    pub slot: String,
    /// PostgreSQL: the publication over the configured tables (default as `slot`).
    #[serde(default)]
    pub publication: String,
    /// TLS to SQL Server. On by default; only a test server without TLS turns it off.
    #[serde(default = "yes")]
    pub encrypt: bool,
    /// Accept the server certificate without validation (self-signed RDS test instances).
    #[serde(default)]
    pub trust_server_certificate: bool,
    /// SQL Server: a PEM file of CA certificates trusted besides the system's (the Amazon RDS
    /// CA bundle), to verify a server certificate they signed.
    #[serde(default)]
    pub ca_file: String,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// SQL Server: how long a query may wait for the server's next response before it fails
    /// as a transient fault (the connection is then opened again).
    #[serde(default = "default_query_timeout", deserialize_with = "duration")]
    pub query_timeout: Duration,
    /// SQL Server: how often the poller updates the connector's row in `heartbeat_table` (0s:
    /// never), so that a quiet source still commits and the lag is measured end to end.
    #[serde(default, deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// SQL Server: the heartbeat table, `schema.table` (`enable-ct --print` creates it).
    #[serde(default = "default_heartbeat_table")]
    pub heartbeat_table: String,
}

impl SourceConfig {
    /// The heartbeat table when the heartbeat is on.
    pub fn heartbeat(&self) -> Option<crate::event::TableId> {
        if self.heartbeat_interval.is_zero() {
            return None;
        }
        let (schema, name) = self.heartbeat_table.split_once('.')?;
        Some(crate::event::TableId::new(schema, name))
    }
}

fn default_heartbeat_table() -> String {
    "edfi_cdc.Heartbeat".into()
}

fn default_port() -> u16 {
    1433
}
fn yes() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(120)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Time between the starts of two poll cycles.
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// A cycle with at least this many changes is followed by the next one at once.
    #[serde(default = "default_busy_threshold")]
    pub busy_threshold: u64,
    /// Rows per snapshot chunk (one short read, one sink transaction).
    #[serde(default = "default_chunk_rows")]
    pub snapshot_chunk_rows: u32,
    /// How long snapshot reading may run between two poll cycles, so that other tables keep
    /// streaming while one table is (re-)snapshotted.
    #[serde(default = "default_snapshot_slice", deserialize_with = "duration")]
    pub snapshot_slice: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_busy_threshold() -> u64 {
    10_000
}
fn default_chunk_rows() -> u32 {
    10_000
}
fn default_snapshot_slice() -> Duration {
    Duration::from_secs(2)
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval: default_interval(),
            busy_threshold: default_busy_threshold(),
            snapshot_chunk_rows: default_chunk_rows(),
            snapshot_slice: default_snapshot_slice(),
        }
    }
}

/// Exponential backoff with jitter for transient faults; past `max_attempts` the process exits
/// non-zero so that its supervisor restarts it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_initial_delay", deserialize_with = "duration")]
    pub initial_delay: Duration,
    #[serde(default = "default_max_delay", deserialize_with = "duration")]
    pub max_delay: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: usize,
}

fn default_initial_delay() -> Duration {
    Duration::from_millis(500)
}
fn default_max_delay() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> usize {
    10
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_delay: default_initial_delay(),
            max_delay: default_max_delay(),
            max_attempts: default_max_attempts(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Embedded,
    Kafka,
    Kinesis,
}

impl StreamKind {
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Embedded => "embedded",
            StreamKind::Kafka => "kafka",
            StreamKind::Kinesis => "kinesis",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    #[serde(default = "default_stream_kind")]
    pub kind: StreamKind,
    /// Messages the embedded stream holds before the poller waits for the sinks; with Kafka or
    /// Kinesis, messages a sink lane holds before the worker stops reading.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub kinesis: KinesisConfig,
}

fn default_stream_kind() -> StreamKind {
    StreamKind::Embedded
}
fn default_capacity() -> usize {
    20_000
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            kind: default_stream_kind(),
            capacity: default_capacity(),
            kafka: KafkaConfig::default(),
            kinesis: KinesisConfig::default(),
        }
    }
}

/// How clients reach the brokers (librdkafka's `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaSecurity {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaSecurity {
    pub fn name(self) -> &'static str {
        match self {
            KafkaSecurity::Plaintext => "plaintext",
            KafkaSecurity::Ssl => "ssl",
            KafkaSecurity::SaslPlaintext => "sasl_plaintext",
            KafkaSecurity::SaslSsl => "sasl_ssl",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, KafkaSecurity::Ssl | KafkaSecurity::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, KafkaSecurity::SaslPlaintext | KafkaSecurity::SaslSsl)
    }
}

/// How records are written to the topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaFormat {
    /// Compact JSON: the key, and a Debezium-shaped envelope without schemas.
    Envelope,
    /// As Debezium's SQL Server connector through Kafka Connect's JsonConverter with schemas
    /// (`stream::debezium`).
    Debezium,
}

/// How change topics are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicLayout {
    /// `{topic_prefix}.{schema}.{table}`, as Debezium names them.
    PerTable,
    /// `{topic_prefix}`: every table in one topic.
    Single,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,…` of the brokers.
    #[serde(default)]
    pub bootstrap_servers: String,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_topic_layout")]
    pub topics: TopicLayout,
    /// Partitions of topics the poller creates (existing topics are used as they are).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics the poller creates.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// `plaintext`, `ssl` (TLS), `sasl_ssl` (SASL over TLS, e.g. MSK's SCRAM listener) or
    /// `sasl_plaintext`.
    #[serde(default = "default_kafka_security")]
    pub security_protocol: KafkaSecurity,
    /// PEM file of the CA certificates that sign the brokers' (empty: the system's).
    #[serde(default)]
    pub ca_file: String,
    /// `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`, with a `sasl_*` protocol.
    #[serde(default)]
    pub sasl_mechanism: String,
    #[serde(default)]
    pub sasl_username: String,
    #[serde(default)]
    pub sasl_password: Secret,
    /// Record format: `envelope` (compact) or `debezium` (Connect JSON with schemas).
    #[serde(default = "default_kafka_format")]
    pub format: KafkaFormat,
    /// Send a tombstone (null value) after each delete, as Debezium does by default.
    #[serde(default = "default_true")]
    pub tombstones: bool,
    /// librdkafka's idempotent producer (`enable.idempotence`).
    #[serde(default = "default_true")]
    pub idempotence: bool,
    /// Consumer group of the sink workers (default `{topic_prefix}.{sink}`).
    #[serde(default)]
    pub group: Option<String>,
    /// Consumer session timeout: how long a dead worker keeps its partitions.
    #[serde(default = "default_session_timeout", deserialize_with = "duration")]
    pub session_timeout: Duration,
}

fn default_true() -> bool {
    true
}
fn default_topic_prefix() -> String {
    "edfi-cdc".into()
}
fn default_kafka_security() -> KafkaSecurity {
    KafkaSecurity::Plaintext
}
fn default_kafka_format() -> KafkaFormat {
    KafkaFormat::Envelope
}
fn default_topic_layout() -> TopicLayout {
    TopicLayout::PerTable
}
fn default_partitions() -> i32 {
    6
}
fn default_replication_factor() -> i32 {
    3
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: String::new(),
            topic_prefix: default_topic_prefix(),
            topics: default_topic_layout(),
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            security_protocol: default_kafka_security(),
            ca_file: String::new(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            format: default_kafka_format(),
            tombstones: true,
            idempotence: true,
            group: None,
            session_timeout: default_session_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisConfig {
    /// The data stream; created (with `shards` shards) if missing, used as is if present.
    #[serde(default)]
    pub stream_name: String,
    #[serde(default = "default_shards")]
    pub shards: i32,
    /// Wait between reads of a shard that returned nothing.
    #[serde(default = "default_kinesis_idle", deserialize_with = "duration")]
    pub idle_wait: Duration,
    /// Retention of a stream the poller creates, in hours: at least Change Tracking's (2 days
    /// as `enable-ct --print` sets it), so that sinks stopped for as long as the source keeps
    /// its changes still find them in the stream.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: i32,
}

fn default_shards() -> i32 {
    2
}
fn default_retention_hours() -> i32 {
    48
}
fn default_kinesis_idle() -> Duration {
    Duration::from_millis(500)
}

impl Default for KinesisConfig {
    fn default() -> Self {
        KinesisConfig {
            stream_name: String::new(),
            shards: default_shards(),
            idle_wait: default_kinesis_idle(),
            retention_hours: default_retention_hours(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Source schema of the group's tables.
    #[serde(default = "default_schema")]
    pub schema: String,
    pub tables: Vec<String>,
}

fn default_schema() -> String {
    "edfi".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableOptions {
    /// Replicate only these columns (the primary key columns are always included).
    pub columns: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    pub staging: Option<StagingSinkConfig>,
    pub redshift: Option<RedshiftSinkConfig>,
}

impl SinksConfig {
    /// Whether any sink is configured and enabled.
    pub fn any_enabled(&self) -> bool {
        !self.urls().is_empty()
    }

    /// The enabled sinks' target URLs: staging's first, then Redshift's.
    pub fn urls(&self) -> Vec<&str> {
        let staging = self.staging.as_ref().filter(|s| s.enabled);
        let redshift = self.redshift.as_ref().filter(|s| s.enabled);
        [
            staging.map(|s| s.url.expose()),
            redshift.map(|s| s.url.expose()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// How the Redshift sink loads a batch into its temporary table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Gzip CSV parts and a manifest in S3, then `COPY … FROM 's3://…' IAM_ROLE … MANIFEST`
    /// (Amazon Redshift).
    S3,
    /// The same CSV through `COPY … FROM STDIN` (any PostgreSQL-protocol target).
    Stdin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedshiftSinkConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_load_mode")]
    pub load: LoadMode,
    /// PostgreSQL-protocol URL of the Redshift database (`postgres://user@cluster:5439/db`).
    pub url: Secret,
    /// The password, when the URL has none (e.g. one key of a managed JSON secret); put into
    /// the URL at load, percent-encoded.
    #[serde(default)]
    pub password: Secret,
    /// Target schema of every replicated table (names are lower-cased, as Redshift folds them).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Per-table target, `"edfi.Student" = "otherschema.student"`, overriding `schema`.
    #[serde(default)]
    pub table_map: BTreeMap<String, String>,
    /// S3 bucket for the batch files. Required with `load = "s3"`; optional with `stdin`
    /// (then the files are written there too, e.g. for audit).
    #[serde(default)]
    pub bucket: String,
    /// Key prefix for the batch files.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// IAM role Redshift assumes to read the bucket. Required with `load = "s3"`.
    #[serde(default)]
    pub iam_role: String,
    /// Region of the bucket, if it differs from the cluster's (`COPY … REGION`).
    #[serde(default)]
    pub region: String,
    /// Flush when the buffered changes (after collapsing per key) reach this many rows…
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// …or this many bytes of CSV…
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// …or when the batch is this old (counted from its first watermark, or from the start of
    /// the flush before it: `sink/redshift/age.rs`).
    #[serde(default = "default_max_age", deserialize_with = "duration")]
    pub max_age: Duration,
    /// Held changes (the unflushed batch and the unfinished cycle, distinct keys) past which
    /// they are written to spill tables in the target and let go of (`sink/redshift/spill.rs`).
    #[serde(default = "default_spill_rows")]
    pub spill_rows: usize,
    /// Uncompressed CSV bytes per file part.
    #[serde(default = "default_part_bytes")]
    pub part_bytes: usize,
    /// How long batch files stay in S3 after their batch commits (0: removed at once).
    #[serde(default, deserialize_with = "duration")]
    pub file_retention: Duration,
    /// Reporting models directory (`<dir>/<group>/*.sql`), relative to the connector file;
    /// empty: no models.
    #[serde(default)]
    pub models: String,
    /// Refresh `-- incremental` models for the flush's students only (else rebuild them).
    #[serde(default = "yes")]
    pub incremental_models: bool,
    /// What a source delete does to a replicated table: remove the row, or keep it with its
    /// deletion time in `edfi_cdc_deleted_at` (live rows in the views of `<schema>_live`).
    #[serde(default)]
    pub deletes: Deletes,
}

/// [`RedshiftSinkConfig::deletes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deletes {
    #[default]
    Hard,
    Soft,
}

fn default_load_mode() -> LoadMode {
    LoadMode::S3
}
fn default_prefix() -> String {
    "edfi-cdc".into()
}
fn default_max_rows() -> usize {
    200_000
}
fn default_max_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_max_age() -> Duration {
    Duration::from_secs(60)
}
fn default_part_bytes() -> usize {
    64 * 1024 * 1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentifierCase {
    /// `edfi.Student.StudentUSI` → `edfi.student.studentusi`, as Ed-Fi's PostgreSQL DDL has them.
    Lower,
    /// Keep the source spelling (quoted).
    Preserve,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagingSinkConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// libpq-style URL of the staging database (`postgres://user@host:5432/db`); the password
    /// belongs in the environment (`PGPASSWORD`), in `${VAR}`, or in `password`.
    pub url: Secret,
    /// The password, when the URL has none (e.g. one key of a managed JSON secret); put into
    /// the URL at load, percent-encoded.
    #[serde(default)]
    pub password: Secret,
    #[serde(default = "default_identifiers")]
    pub identifiers: IdentifierCase,
    /// Source schema → target schema. Unmapped schemas keep their name (after `identifiers`).
    #[serde(default)]
    pub schema_map: BTreeMap<String, String>,
    /// A transaction takes whole cycles until it holds at least this many events.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// A cycle with more changed rows than this is written to staging as it arrives (unlogged
    /// tables of schema `edfi_cdc_spill`) and merged at its watermark: memory stays bounded
    /// whatever the size of a source transaction.
    #[serde(default = "default_spill_rows")]
    pub spill_rows: usize,
}

fn default_identifiers() -> IdentifierCase {
    IdentifierCase::Lower
}
fn default_max_batch_events() -> usize {
    50_000
}
fn default_spill_rows() -> usize {
    50_000
}

impl ConnectorConfig {
    /// The tables of all enabled groups, in configuration order, each once.
    pub fn tables(&self) -> Vec<TableId> {
        let mut out: Vec<TableId> = Vec::new();
        for g in self.groups.values().filter(|g| g.enabled) {
            for t in &g.tables {
                let id = match t.split_once('.') {
                    Some((s, n)) => TableId::new(s, n),
                    None => TableId::new(g.schema.clone(), t.clone()),
                };
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }

    pub fn table_options(&self, table: &TableId) -> Option<&TableOptions> {
        self.tables.get(&table.to_string())
    }
}

/// Expand `${VAR}` and `${VAR:-default}` in `text`; `$${` is a literal `${`. Values landing
/// inside a double-quoted TOML string are escaped for it. Problems name the line's key.
pub fn expand_env(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut section = String::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && !trimmed.starts_with("[[") {
            section = trimmed
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
        }
        let key = || {
            let k = line.split('=').next().unwrap_or("").trim();
            if section.is_empty() {
                k.to_string()
            } else {
                format!("{section}.{k}")
            }
        };
        let mut in_string = false;
        let mut rest = line;
        while let Some(pos) = rest.find(['$', '"', '\\', '#']) {
            let (before, at) = rest.split_at(pos);
            out.push_str(before);
            let c = at.as_bytes()[0];
            match c {
                b'"' => {
                    in_string = !in_string;
                    out.push('"');
                    rest = &at[1..];
                }
                b'\\' if in_string => {
                    let n = at.char_indices().nth(2).map_or(at.len(), |(i, _)| i);
                    out.push_str(&at[..n]);
                    rest = &at[n..];
                }
                b'#' if !in_string => {
                    out.push_str(at);
                    rest = "";
                }
                b'$' if at.starts_with("$${") => {
                    out.push_str("${");
                    rest = &at[3..];
                }
                b'$' if at.starts_with("${") => {
                    let Some(end) = at.find('}') else {
                        problems.push(Problem {
                            file: file.into(),
                            key: key(),
                            reason: "`${` without a closing `}`".into(),
                        });
                        out.push_str(at);
                        rest = "";
                        continue;
                    };
                    let inner = &at[2..end];
                    let (name, default) = match inner.split_once(":-") {
                        Some((n, d)) => (n, Some(d)),
                        None => (inner, None),
                    };
                    let valid_name = !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    let value = if !valid_name {
                        problems.push(Problem {
                            file: file.into(),
                            key: key(),
                            reason: format!("`${{{inner}}}` is not a valid variable reference"),
                        });
                        String::new()
                    } else {
                        match (env(name), default) {
                            (Some(v), _) => v,
                            (None, Some(d)) => d.to_string(),
                            (None, None) => {
                                problems.push(Problem {
                                    file: file.into(),
                                    key: key(),
                                    reason: format!(
                                        "environment variable {name} is not set (set it, or write ${{{name}:-default}})"
                                    ),
                                });
                                String::new()
                            }
                        }
                    };
                    if in_string {
                        for ch in value.chars() {
                            match ch {
                                '"' => out.push_str("\\\""),
                                '\\' => out.push_str("\\\\"),
                                '\n' => out.push_str("\\n"),
                                c => out.push(c),
                            }
                        }
                    } else {
                        out.push_str(&value);
                    }
                    rest = &at[end + 1..];
                }
                _ => {
                    out.push(c as char);
                    rest = &at[1..];
                }
            }
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The dotted key at byte `offset` of `text`: the section header above it and the key on its
/// line.
fn key_at(text: &str, offset: usize) -> String {
    let mut section = String::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        }
        if offset < line_start + line.len() {
            let line_no = text[..line_start].matches('\n').count() + 1;
            let k = line.split('=').next().unwrap_or("").trim();
            if trimmed.starts_with('[') || !line.contains('=') {
                return format!("{section} (line {line_no})");
            }
            return if section.is_empty() {
                format!("{k} (line {line_no})")
            } else {
                format!("{section}.{k} (line {line_no})")
            };
        }
        line_start += line.len();
    }
    section
}

/// Parse one connector file's (already expanded) text.
/// `url` with `password` put in (percent-encoded in a `postgres://` URL, quoted in a
/// `key=value` one); `url` itself when `password` is empty.
fn url_with_password(url: &str, password: &str) -> Result<String, String> {
    // An empty URL stays empty, for the checks of an enabled sink to name it.
    if password.is_empty() || url.trim().is_empty() {
        return Ok(url.to_string());
    }
    let twice = Err("is set and the URL has a password too: keep one".to_string());
    let Some((scheme, rest)) = url.split_once("://") else {
        if url.split_whitespace().any(|kv| kv.starts_with("password=")) {
            return twice;
        }
        let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
        return Ok(format!("{url} password='{quoted}'"));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return Err("needs the user in the URL (postgres://user@host:5432/db) to apply to".into());
    };
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    if rest[..at].contains(':') || query.split('&').any(|kv| kv.starts_with("password=")) {
        return twice;
    }
    let encoded =
        percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC);
    Ok(format!(
        "{scheme}://{}:{encoded}{}",
        &rest[..at],
        &rest[at..]
    ))
}

pub fn parse(file: &Path, text: &str) -> Result<ConnectorConfig, Vec<Problem>> {
    let mut config: ConnectorConfig = toml::from_str(text).map_err(|e| {
        // Never echo the offending line: after expansion it may hold a secret.
        let key = e
            .span()
            .map(|s| key_at(text, s.start))
            .unwrap_or_else(|| "(file)".into());
        vec![Problem {
            file: file.into(),
            key,
            reason: e.message().to_string(),
        }]
    })?;
    config.file = file.into();
    let mut problems = Vec::new();
    let mut with_password = |key: &str, url: &mut Secret, password: &Secret| match url_with_password(
        url.expose(),
        password.expose(),
    ) {
        Ok(u) => *url = Secret(u),
        Err(reason) => problems.push(Problem {
            file: file.into(),
            key: key.into(),
            reason,
        }),
    };
    if let Some(s) = config.sinks.staging.as_mut() {
        with_password("sinks.staging.password", &mut s.url, &s.password);
    }
    if let Some(r) = config.sinks.redshift.as_mut() {
        with_password("sinks.redshift.password", &mut r.url, &r.password);
    }
    if config.source.kind == SourceKind::Postgres {
        with_password(
            "source.password",
            &mut config.source.url,
            &config.source.password,
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if config.source.kind == SourceKind::Postgres {
        let default = format!("edfi_cdc_{}", config.name.replace('-', "_")).to_lowercase();
        for name in [&mut config.source.slot, &mut config.source.publication] {
            if name.is_empty() {
                name.clone_from(&default);
            }
        }
        if let Ok(url) = crate::sink::pg::parse(config.source.url.expose()).map(|t| t.config) {
            config.source.database = url.get_dbname().unwrap_or_default().to_string();
            config.source.host = url
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default();
        }
    }
    let problems = validate(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn validate(c: &ConnectorConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, reason: String| {
        problems.push(Problem {
            file: c.file.clone(),
            key: key.into(),
            reason,
        })
    };
    if c.name.is_empty()
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
    {
        bad(
            "name",
            "must be non-empty letters, digits, `-` or `_`".into(),
        );
    }
    match c.source.kind {
        SourceKind::Mssql => {
            if c.source.host.is_empty() {
                bad("source.host", "must not be empty".into());
            }
            if c.source.database.is_empty() {
                bad("source.database", "must not be empty".into());
            }
            if c.source.port == 0 {
                bad("source.port", "must be a TCP port (1-65535)".into());
            }
            if !c.source.ca_file.is_empty() {
                if !c.source.encrypt {
                    bad(
                        "source.ca_file",
                        "is for TLS, which encrypt = false turns off".into(),
                    );
                } else if c.source.trust_server_certificate {
                    bad(
                        "source.ca_file",
                        "verifies the server's certificate, which trust_server_certificate = true skips: set one of them".into(),
                    );
                } else if let Err(e) = std::fs::metadata(&c.source.ca_file) {
                    bad(
                        "source.ca_file",
                        format!("cannot read {}: {e}", c.source.ca_file),
                    );
                }
            }
            let plain = |part: &str| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            };
            if !c
                .source
                .heartbeat_table
                .split_once('.')
                .is_some_and(|(schema, table)| plain(schema) && plain(table))
            {
                bad(
                    "source.heartbeat_table",
                    format!(
                        "`{}` must be `schema.table` (letters, digits and `_`)",
                        c.source.heartbeat_table
                    ),
                );
            }
        }
        SourceKind::Postgres => {
            if let Err(e) = crate::sink::pg::parse(c.source.url.expose()) {
                bad(
                    "source.url",
                    format!("is not a PostgreSQL connection URL ({e}); write postgres://user:password@host:5432/database"),
                );
            } else if c.source.database.is_empty() {
                bad(
                    "source.url",
                    "must name the database (postgres://…/database)".into(),
                );
            }
            if !c.source.heartbeat_interval.is_zero() {
                bad(
                    "source.heartbeat_interval",
                    "is for SQL Server sources: a PostgreSQL source has no heartbeat (set 0s)"
                        .into(),
                );
            }
            for (key, name) in [
                ("source.slot", &c.source.slot),
                ("source.publication", &c.source.publication),
            ] {
                if name.is_empty()
                    || name.len() > 63
                    || !name
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
                {
                    bad(
                        key,
                        format!("`{name}` must be 1-63 lower-case letters, digits or `_`"),
                    );
                }
            }
        }
    }
    if c.poll.interval.is_zero() {
        bad("poll.interval", "must be greater than zero".into());
    }
    if c.readiness_multiple == 0 {
        bad("readiness_multiple", "must be at least 1".into());
    }
    if c.poll.snapshot_chunk_rows == 0 {
        bad("poll.snapshot_chunk_rows", "must be at least 1".into());
    }
    if c.retry.max_attempts == 0 {
        bad("retry.max_attempts", "must be at least 1".into());
    }
    if c.stream.capacity == 0 {
        bad("stream.capacity", "must be at least 1".into());
    }
    match c.stream.kind {
        StreamKind::Embedded => {}
        StreamKind::Kafka => {
            let k = &c.stream.kafka;
            if k.bootstrap_servers.trim().is_empty() {
                bad(
                    "stream.kafka.bootstrap_servers",
                    "must name the brokers (host:port,…) for stream kind `kafka` (KAFKA_BOOTSTRAP_SERVERS in the shipped connector)".into(),
                );
            }
            if k.topic_prefix.is_empty()
                || !k
                    .topic_prefix
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
            {
                bad(
                    "stream.kafka.topic_prefix",
                    "must be non-empty letters, digits, `.`, `_` or `-`".into(),
                );
            }
            if k.partitions < 1 {
                bad("stream.kafka.partitions", "must be at least 1".into());
            }
            if !k.ca_file.is_empty() {
                if !k.security_protocol.tls() {
                    bad(
                        "stream.kafka.ca_file",
                        format!(
                            "is for TLS, which security_protocol `{}` does not use: set ssl or sasl_ssl",
                            k.security_protocol.name()
                        ),
                    );
                } else if let Err(e) = std::fs::metadata(&k.ca_file) {
                    bad(
                        "stream.kafka.ca_file",
                        format!("cannot read {}: {e}", k.ca_file),
                    );
                }
            }
            let iam = k.sasl_mechanism == crate::stream::kafka::MSK_IAM;
            if iam {
                if k.security_protocol != KafkaSecurity::SaslSsl {
                    bad(
                        "stream.kafka.sasl_mechanism",
                        format!(
                            "AWS_MSK_IAM needs security_protocol sasl_ssl (MSK's IAM listener, port 9098), not `{}`",
                            k.security_protocol.name()
                        ),
                    );
                }
            } else if k.security_protocol.sasl() {
                if !["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"].contains(&k.sasl_mechanism.as_str())
                {
                    bad(
                        "stream.kafka.sasl_mechanism",
                        format!(
                            "`{}` is not one of AWS_MSK_IAM, SCRAM-SHA-512, SCRAM-SHA-256, PLAIN (KAFKA_SASL_MECHANISM)",
                            k.sasl_mechanism
                        ),
                    );
                }
                if k.sasl_username.is_empty() || k.sasl_password.expose().is_empty() {
                    bad(
                        "stream.kafka.sasl_username",
                        "and sasl_password must be set for a sasl_* security_protocol (KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)".into(),
                    );
                }
            } else if !k.sasl_mechanism.is_empty() {
                bad(
                    "stream.kafka.sasl_mechanism",
                    format!(
                        "needs security_protocol sasl_ssl (or sasl_plaintext), not `{}`",
                        k.security_protocol.name()
                    ),
                );
            }
            if k.replication_factor < 1 {
                bad(
                    "stream.kafka.replication_factor",
                    "must be at least 1".into(),
                );
            }
        }
        StreamKind::Kinesis => {
            let k = &c.stream.kinesis;
            if k.stream_name.trim().is_empty() {
                bad(
                    "stream.kinesis.stream_name",
                    "must name the data stream for stream kind `kinesis` (KINESIS_STREAM_NAME in the shipped connector)".into(),
                );
            }
            if k.shards < 1 {
                bad("stream.kinesis.shards", "must be at least 1".into());
            }
            if !(24..=8760).contains(&k.retention_hours) {
                bad(
                    "stream.kinesis.retention_hours",
                    "must be 24 to 8760 (what Kinesis allows)".into(),
                );
            }
        }
    }
    for (name, g) in &c.groups {
        if g.tables.is_empty() {
            bad(&format!("groups.{name}.tables"), "lists no table".into());
        }
        for t in &g.tables {
            if t.is_empty() || t.split('.').count() > 2 {
                bad(
                    &format!("groups.{name}.tables"),
                    format!("`{t}` is not `Table` or `schema.Table`"),
                );
            }
        }
    }
    let tables = c.tables();
    if tables.is_empty() {
        bad(
            "groups",
            "no enabled group lists a table: nothing to replicate".into(),
        );
    }
    for (key, opts) in &c.tables {
        let known = tables.iter().any(|t| &t.to_string() == key);
        if !known {
            bad(
                &format!("tables.{key}"),
                "is not a table of any enabled group".into(),
            );
        }
        if opts.columns.as_ref().is_some_and(|cols| cols.is_empty()) {
            bad(
                &format!("tables.{key}.columns"),
                "must list at least one column".into(),
            );
        }
    }
    match &c.sinks.staging {
        Some(s) if s.enabled => {
            if s.url.expose().is_empty() {
                bad("sinks.staging.url", "must not be empty".into());
            } else if let Err(e) = crate::sink::pg::parse(s.url.expose()) {
                bad(
                    "sinks.staging.url",
                    format!(
                        "is not a PostgreSQL connection URL (postgres://user@host:port/db): {e}"
                    ),
                );
            }
            if s.max_batch_events == 0 {
                bad(
                    "sinks.staging.max_batch_events",
                    "must be at least 1".into(),
                );
            }
            if s.spill_rows == 0 {
                bad("sinks.staging.spill_rows", "must be at least 1".into());
            }
        }
        _ => {}
    }
    if let Some(r) = c.sinks.redshift.as_ref().filter(|r| r.enabled) {
        if r.url.expose().is_empty() {
            bad("sinks.redshift.url", "must not be empty".into());
        } else if let Err(e) = crate::sink::pg::parse(r.url.expose()) {
            bad(
                "sinks.redshift.url",
                format!(
                    "is not a PostgreSQL-protocol connection URL (postgres://user@host:5439/db): {e}"
                ),
            );
        }
        if r.load == LoadMode::S3 {
            if r.bucket.is_empty() {
                bad(
                    "sinks.redshift.bucket",
                    "is required with load = \"s3\" (set S3_BUCKET)".into(),
                );
            }
            if r.iam_role.is_empty() {
                bad(
                    "sinks.redshift.iam_role",
                    "is required with load = \"s3\" (set REDSHIFT_IAM_ROLE)".into(),
                );
            }
        }
        for (k, v) in [
            ("max_rows", r.max_rows),
            ("max_bytes", r.max_bytes),
            ("part_bytes", r.part_bytes),
            ("spill_rows", r.spill_rows),
        ] {
            if v == 0 {
                bad(&format!("sinks.redshift.{k}"), "must be at least 1".into());
            }
        }
        if !r.models.is_empty() && (r.schema != "edfi" || !r.table_map.is_empty()) {
            bad(
                "sinks.redshift.models",
                "reporting models read the replicated tables as edfi.<table>: keep schema = \"edfi\" and no table_map, or set models = \"\"".into(),
            );
        }
        for (from, to) in &r.table_map {
            if from.split_once('.').is_none() || to.split_once('.').is_none() {
                bad(
                    &format!("sinks.redshift.table_map.{from}"),
                    "source and target must both be schema.table".into(),
                );
            }
        }
    }
    if !c.sinks.any_enabled() {
        bad(
            "sinks",
            "no sink is enabled: configure and enable [sinks.staging] or [sinks.redshift]".into(),
        );
    }
    problems
}

/// Load connector files (a directory means every `*.toml` in it), check each and all of them
/// together. `env` looks up environment variables.
pub fn load(
    paths: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ConnectorConfig>, ConfigError> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        problems.push(Problem {
                            file: p.clone(),
                            key: "(directory)".into(),
                            reason: "holds no *.toml connector file".into(),
                        });
                    }
                    files.extend(found);
                }
                Err(e) => problems.push(Problem {
                    file: p.clone(),
                    key: "(directory)".into(),
                    reason: e.to_string(),
                }),
            }
        } else {
            files.push(p.clone());
        }
    }
    let mut configs = Vec::new();
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem {
                    file: f.clone(),
                    key: "(file)".into(),
                    reason: format!("cannot be read: {e}"),
                });
                continue;
            }
        };
        match expand_env(f, &text, env).and_then(|t| parse(f, &t)) {
            Ok(c) => configs.push(c),
            Err(p) => problems.extend(p),
        }
    }
    problems.extend(cross_check(&configs));
    if problems.is_empty() {
        Ok(configs)
    } else {
        Err(ConfigError(problems))
    }
}

/// Connectors run side by side must have distinct names and must not write the same target
/// table.
fn cross_check(configs: &[ConnectorConfig]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut names: HashMap<&str, &Path> = HashMap::new();
    let mut targets: HashMap<(String, String), (&str, &Path)> = HashMap::new();
    for c in configs {
        if let Some(other) = names.insert(&c.name, &c.file) {
            problems.push(Problem {
                file: c.file.clone(),
                key: "name".into(),
                reason: format!(
                    "connector name `{}` is also used by {}",
                    c.name,
                    other.display()
                ),
            });
        }
        let Some(staging) = c.sinks.staging.as_ref().filter(|s| s.enabled) else {
            continue;
        };
        let db = target_database(staging.url.expose());
        for t in c.tables() {
            let target = crate::sink::names::staging_table(staging, &t);
            let key = (db.clone(), target.to_string());
            if let Some((other, other_file)) = targets.get(&key) {
                problems.push(Problem {
                    file: c.file.clone(),
                    key: "sinks.staging".into(),
                    reason: format!(
                        "connectors `{}` and `{other}` ({}) both write staging table {}",
                        c.name,
                        other_file.display(),
                        key.1
                    ),
                });
            } else {
                targets.insert(key, (&c.name, &c.file));
            }
        }
    }
    problems
}

/// Host, port and database of a PostgreSQL URL, to tell whether two sinks share a database.
fn target_database(url: &str) -> String {
    match crate::sink::pg::parse(url).map(|t| t.config) {
        Ok(cfg) => format!(
            "{:?}/{:?}/{:?}",
            cfg.get_hosts(),
            cfg.get_ports(),
            cfg.get_dbname()
        ),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "edfi-ods"
[source]
host = "${ODS_HOST}"
port = ${ODS_PORT:-1433}
database = "EdFi_Ods"
user = "sa"
password = "${ODS_PASSWORD}"
[groups.ic]
tables = ["Student", "School"]
[sinks.staging]
url = "${STAGING_DATABASE_URL}"
"#;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<ConnectorConfig, Vec<Problem>> {
        let f = Path::new("test.toml");
        expand_env(f, text, &env(vars)).and_then(|t| parse(f, &t))
    }

    const VARS: &[(&str, &str)] = &[
        ("ODS_HOST", "127.0.0.1"),
        ("ODS_PASSWORD", "p\"w\\d"),
        (
            "STAGING_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/staging",
        ),
    ];

    #[test]
    fn a_source_ca_file_must_exist_and_excludes_trusting_any_certificate() {
        let with =
            |extra: &str| MINIMAL.replace("user = \"sa\"", &format!("user = \"sa\"\n{extra}"));
        let err = load_text(&with("ca_file = \"/no/such/ca.pem\""), VARS).unwrap_err();
        assert!(
            err[0].to_string().contains("`source.ca_file`")
                && err[0].to_string().contains("/no/such/ca.pem"),
            "{}",
            err[0]
        );
        let both = with("ca_file = \"Cargo.toml\"\ntrust_server_certificate = true");
        let err = load_text(&both, VARS).unwrap_err();
        assert!(
            err[0].to_string().contains("trust_server_certificate"),
            "{}",
            err[0]
        );
        let c = load_text(&with("ca_file = \"Cargo.toml\""), VARS).unwrap();
        assert_eq!(c.source.ca_file, "Cargo.toml");
    }

    #[test]
    fn kafka_tls_and_sasl_settings_are_checked_together() {
        let kafka = |extra: &str| {
            format!("{MINIMAL}[stream]\nkind = \"kafka\"\n[stream.kafka]\nbootstrap_servers = \"b-1:9096\"\n{extra}")
        };
        let problems = |extra: &str| -> Vec<String> {
            load_text(&kafka(extra), VARS)
                .err()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let p = problems("security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"GSSAPI\"");
        assert!(
            p.iter()
                .any(|t| t.contains("`stream.kafka.sasl_mechanism`") && t.contains("GSSAPI"))
                && p.iter().any(|t| t.contains("`stream.kafka.sasl_username`")),
            "{p:?}"
        );
        let p = problems("security_protocol = \"ssl\"\nsasl_mechanism = \"AWS_MSK_IAM\"");
        assert!(
            p.iter()
                .any(|t| t.contains("AWS_MSK_IAM needs security_protocol sasl_ssl")),
            "{p:?}"
        );
        assert!(
            problems("security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"AWS_MSK_IAM\"")
                .is_empty()
        );
        let p = problems("ca_file = \"Cargo.toml\"");
        assert!(
            p.iter()
                .any(|t| t.contains("`stream.kafka.ca_file`") && t.contains("plaintext")),
            "{p:?}"
        );
        let p = problems("sasl_mechanism = \"PLAIN\"");
        assert!(
            p.iter()
                .any(|t| t.contains("needs security_protocol sasl_ssl")),
            "{p:?}"
        );
        let ok = kafka(
            "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"u\"\nsasl_password = \"p\"",
        );
        let c = load_text(&ok, VARS).unwrap();
        assert_eq!(c.stream.kafka.security_protocol, KafkaSecurity::SaslSsl);
        assert_eq!(
            format!("{:?}", c.stream.kafka.sasl_password),
            "\"<redacted>\""
        );
    }

    #[test]
    fn redshift_sink_settings_are_checked_together() {
        let s3 = format!("{MINIMAL}[sinks.redshift]\nurl = \"postgres://r@h:5439/db\"\n");
        let err = load_text(&s3, VARS).unwrap_err();
        let text: Vec<String> = err.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("`sinks.redshift.bucket`") && t.contains("S3_BUCKET")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("`sinks.redshift.iam_role`")),
            "{text:?}"
        );
        let models = format!(
            "{MINIMAL}[sinks.redshift]\nurl = \"postgres://r@h:5439/db\"\nload = \"stdin\"\nschema = \"ods\"\nmodels = \"models\"\n"
        );
        let err = load_text(&models, VARS).unwrap_err();
        assert!(
            err[0].to_string().contains("`sinks.redshift.models`"),
            "{}",
            err[0]
        );
        let fine = format!(
            "{MINIMAL}[sinks.redshift]\nurl = \"postgres://r@h:5439/db\"\nload = \"stdin\"\n"
        );
        let c = load_text(&fine, VARS).unwrap();
        let r = c.sinks.redshift.unwrap();
        assert_eq!(
            (r.max_rows, r.max_age, r.schema.as_str()),
            (200_000, Duration::from_secs(60), "edfi")
        );
    }

    #[test]
    fn a_password_key_goes_into_the_url_as_the_target_reads_it() {
        // What a managed secret's `password` key may hold.
        let pw = "p@ss:w/rd#?%'\\ é\"";
        let text = MINIMAL.replace(
            "url = \"${STAGING_DATABASE_URL}\"",
            "url = \"${STAGING_DATABASE_URL}\"\npassword = \"${STAGING_PASSWORD:-}\"",
        );
        let vars = [
            VARS[0],
            VARS[1],
            (
                "STAGING_DATABASE_URL",
                "postgres://edfi_cdc@aurora:5432/staging?sslmode=require",
            ),
            ("STAGING_PASSWORD", pw),
        ];
        let c = load_text(&text, &vars).unwrap();
        let url = c.sinks.staging.unwrap().url;
        let pg: tokio_postgres::Config = url.expose().parse().unwrap();
        assert_eq!(pg.get_password(), Some(pw.as_bytes()));
        assert_eq!(
            (pg.get_user(), pg.get_dbname()),
            (Some("edfi_cdc"), Some("staging"))
        );
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        // Unset: the URL as it is.
        let c = load_text(&text, VARS).unwrap();
        assert_eq!(
            c.sinks.staging.unwrap().url.expose(),
            "postgres://postgres@127.0.0.1:5432/staging"
        );
        // key=value form.
        let kv: tokio_postgres::Config =
            url_with_password("host=aurora user=edfi_cdc dbname=staging", pw)
                .unwrap()
                .parse()
                .unwrap();
        assert_eq!(kv.get_password(), Some(pw.as_bytes()));
        assert!(url_with_password("host=aurora password=p", pw).is_err());
        assert_eq!(url_with_password("", pw).unwrap(), "");
        // No user to apply to, or a password twice: said, naming the key.
        for url in [
            "postgres://aurora/staging",
            "postgres://u:p@aurora/staging",
            "postgres://u@aurora/staging?sslmode=require&password=p",
        ] {
            let vars = [
                VARS[0],
                VARS[1],
                ("STAGING_DATABASE_URL", url),
                ("STAGING_PASSWORD", "x"),
            ];
            let err = load_text(&text, &vars).unwrap_err();
            assert!(
                err[0].to_string().contains("`sinks.staging.password`"),
                "{}",
                err[0]
            );
        }
    }

    #[test]
    fn expands_variables_defaults_and_escapes_secrets() {
        let c = load_text(MINIMAL, VARS).unwrap();
        assert_eq!(c.source.host, "127.0.0.1");
        assert_eq!(c.source.port, 1433);
        assert_eq!(c.source.password.expose(), "p\"w\\d");
        assert_eq!(format!("{:?}", c.source.password), "\"<redacted>\"");
        assert_eq!(c.poll.interval, Duration::from_secs(1));
        assert_eq!(
            c.tables(),
            vec![
                TableId::new("edfi", "Student"),
                TableId::new("edfi", "School")
            ]
        );
    }

    #[test]
    fn missing_variable_names_file_key_and_variable() {
        let err = load_text(MINIMAL, &VARS[..1]).unwrap_err();
        let text: Vec<String> = err.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("test.toml: `source.password`") && t.contains("ODS_PASSWORD")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("`sinks.staging.url`") && t.contains("STAGING_DATABASE_URL")),
            "{text:?}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = MINIMAL.replace("[groups.ic]", "[groups.ic]\ntabels = []");
        let err = load_text(&text, VARS).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].reason.contains("unknown field `tabels`"),
            "{}",
            err[0]
        );
        assert!(err[0].key.starts_with("groups.ic.tabels"), "{}", err[0]);
    }

    #[test]
    fn bad_values_are_reported_together_without_secrets() {
        let text = MINIMAL.replace(
            "[groups.ic]",
            "[poll]\ninterval = \"0s\"\nsnapshot_chunk_rows = 0\n[groups.ic]",
        );
        let err = load_text(&text, VARS).unwrap_err();
        let keys: Vec<&str> = err.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["poll.interval", "poll.snapshot_chunk_rows"]);
        let text = MINIMAL.replace("port = ${ODS_PORT:-1433}", "port = \"${ODS_PASSWORD}\"");
        let err = load_text(&text, VARS).unwrap_err();
        assert!(err[0].key.starts_with("source.port"), "{}", err[0]);
        assert!(
            !err[0].to_string().contains("w\\d"),
            "secret leaked: {}",
            err[0]
        );
        let text = MINIMAL.replace(
            "[sinks.staging]",
            "[poll]\ninterval = \"soon\"\n[sinks.staging]",
        );
        let err = load_text(&text, VARS).unwrap_err();
        assert!(err[0].reason.contains("not a duration"), "{}", err[0]);
    }

    #[test]
    fn shipped_connector_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/edfi-ods.toml");
        let vars = [
            ("ODS_HOST", "h"),
            ("ODS_PORT", "1433"),
            ("ODS_DATABASE", "EdFi_Ods"),
            ("ODS_USER", "u"),
            ("ODS_PASSWORD", "p"),
            (
                "STAGING_DATABASE_URL",
                "postgres://postgres@127.0.0.1/staging",
            ),
        ];
        let configs = load(&[path], &env(&vars)).unwrap();
        let tables = configs[0].tables();
        assert_eq!(tables.len(), 37, "{tables:?}");
        assert!(configs[0].source.encrypt, "TLS must be on by default");
    }

    #[test]
    fn two_connectors_writing_one_table_is_an_error_naming_both() {
        let dir = std::env::temp_dir().join(format!("edfi-cdc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.toml"), MINIMAL).unwrap();
        std::fs::write(
            dir.join("b.toml"),
            MINIMAL.replace("edfi-ods", "edfi-ods-2025"),
        )
        .unwrap();
        let err = load(std::slice::from_ref(&dir), &env(VARS)).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.0
                .iter()
                .any(|p| p.reason.contains("`edfi-ods-2025` and `edfi-ods`")
                    && p.reason.contains("edfi.student")),
            "{err}"
        );
    }
}
