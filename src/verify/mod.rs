//! `edfi-cdc verify`: is each target's copy of each table equal to the source?
//!
//! Both sides hash a canonical text of every row (`source::mssql::queries::VerifyQueries`,
//! [`target::TargetTable`]) and sum the hashes per bucket, a row's bucket being the hash of its
//! key modulo the number of buckets: only per-bucket sums travel. Buckets, not key ranges, because the source and
//! a target may order string keys differently (collations). The rows of the buckets that differ
//! are then listed on both sides, key text and row hash only, to find the keys.
//!
//! It runs beside a live replicator. The target is read in one transaction together with the
//! sink's checkpoint `C` (the data and the checkpoint commit together), so the target is exactly
//! the source at `C`; the source is read in a SNAPSHOT transaction at version `V >= C`. A key
//! whose rows differ but that Change Tracking shows unchanged after `C` differs for certain. A
//! key changed after `C` is in flight: it is checked again once the sink has passed `V`, up to
//! [`ROUNDS`] times, and reported as unsettled if it keeps changing.
//!
//! A PostgreSQL source has no Change Tracking to ask: every key found differing is checked
//! again, the target read at a checkpoint past the first read's position and the source after
//! it. A key whose source row is the same in both reads (same values, same `xmin`: not written
//! in between) and that differs again differs for certain: the target, at a point between the
//! two reads, must hold that row.
//!
//! `--repair` mends a staging table key by key, in a transaction that holds the sink's
//! checkpoint still (exactly once: see [`repair_staging`]), and asks the sink to re-snapshot a
//! Redshift table, a table with more differences than the repair limit, or a table of a
//! PostgreSQL source.

mod source;
pub mod target;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::checkpoint;
use crate::config::{ConnectorConfig, Deletes};
use crate::event::{time_text, TableSchema, Value};
use crate::source::mssql::{queries, value, Connection};
use source::{bucket_params, Source, SourceRows, SourceTable};
pub use target::Sink;
use target::TargetTable;

/// Rounds of re-checking keys that changed while they were compared.
pub const ROUNDS: usize = 5;

/// Buckets of about this many rows, at most [`MAX_BUCKETS`]: the per-bucket sums are small to
/// send, and the rows listed for a difference are few (measured: 2,000 rows per bucket listed
/// 880,000 rows, 800 MiB, for 1,000 scattered differences in 1,020,000 rows).
const ROWS_PER_BUCKET: i64 = 32;

/// 2^20 buckets: about 30 rows each in a 30-million-row table.
const MAX_BUCKETS: i64 = 1 << 20;

/// Buckets per query of their rows (SQL Server takes at most 2,100 parameters).
const BUCKETS_PER_QUERY: usize = 1_000;

/// What `verify` compares and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// `schema.Table` or `Table`; empty: every table of the connector.
    pub tables: Vec<String>,
    /// `staging` or `redshift`; `None`: every enabled sink.
    pub sink: Option<String>,
    /// Keys listed per kind of difference.
    pub max_keys: usize,
    pub repair: bool,
    /// More differences than this in one table: `--repair` re-snapshots it instead.
    pub repair_limit: usize,
    /// How long to wait for a sink to pass the source's version before a re-check.
    pub settle_timeout: Duration,
}

/// The result for one table of one sink.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub sink: String,
    pub table: String,
    pub target: String,
    /// Why the table was not compared (e.g. a snapshot in progress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub source_rows: u64,
    pub target_rows: u64,
    /// The sink's checkpoint and the source version compared.
    pub checkpoint_version: i64,
    pub source_version: i64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Keys that kept changing through every re-check.
    pub unsettled: u64,
    /// Up to `max_keys` keys of each kind, as their canonical text (`value|value`).
    pub missing_keys: Vec<String>,
    pub extra_keys: Vec<String>,
    pub different_keys: Vec<String>,
    pub unsettled_keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
    pub seconds: f64,
}

impl TableReport {
    pub fn differs(&self) -> bool {
        self.missing + self.extra + self.different > 0
    }
}

/// Keys found different, by kind, as canonical key texts.
#[derive(Debug, Default)]
struct Differences {
    missing: BTreeSet<String>,
    extra: BTreeSet<String>,
    different: BTreeSet<String>,
}

impl Differences {
    fn len(&self) -> usize {
        self.missing.len() + self.extra.len() + self.different.len()
    }
}

/// Per bucket: rows and the two hash sums.
type Buckets = HashMap<u32, (i64, i64, i64)>;

/// One side's rows of some buckets: key text → row hash (lower-case hexadecimal) and how many
/// rows have the key (more than one in a target that does not enforce keys, like Redshift).
type Rows = HashMap<String, (String, u32)>;

/// The sinks `verify` compares: every enabled one, or the one named.
fn sinks<'a>(
    config: &'a ConnectorConfig,
    only: Option<&str>,
) -> anyhow::Result<Vec<(Sink<'a>, &'a str)>> {
    let mut out = Vec::new();
    if let Some(s) = config.sinks.staging.as_ref().filter(|s| s.enabled) {
        out.push((Sink::Staging(s), s.url.expose()));
    }
    if let Some(r) = config.sinks.redshift.as_ref().filter(|r| r.enabled) {
        out.push((Sink::Redshift(r), r.url.expose()));
    }
    if let Some(name) = only {
        out.retain(|(s, _)| s.name() == name);
        if out.is_empty() {
            bail!(
                "connector {} has no enabled sink `{name}` (staging, redshift)",
                config.name
            );
        }
    }
    Ok(out)
}

/// Compare (and with `repair`, mend) every selected table of every selected sink.
pub async fn verify(config: &ConnectorConfig, opts: &Options) -> anyhow::Result<Vec<TableReport>> {
    let stop = tokio_util::sync::CancellationToken::new();
    let schemas = crate::source::discover(config, &stop)
        .await
        .context("reading the source's tables")?;
    let schemas = select_tables(config, schemas, &opts.tables)?;
    let mut conn = Source::connect(config).await?;
    let mut out = Vec::new();
    for (sink, url) in sinks(config, opts.sink.as_deref())? {
        let client = crate::sink::pg::connect(sink.name(), url)
            .await
            .with_context(|| format!("connecting to the {} target", sink.name()))?;
        checkpoint::install(&client).await?;
        for schema in &schemas {
            let (mut report, found) =
                compare(config, opts, &mut conn, &client, sink, schema).await?;
            if opts.repair && report.differs() {
                match repair(config, opts, &mut conn, &client, sink, schema, &found).await? {
                    Repair::Requested(what) => report.repair = Some(what),
                    Repair::Mended(what) => {
                        let before = report;
                        (report, _) =
                            compare(config, opts, &mut conn, &client, sink, schema).await?;
                        report.repair = Some(format!(
                            "{what}; before: {} missing, {} extra, {} different",
                            before.missing, before.extra, before.different
                        ));
                    }
                }
            }
            if report.skipped.is_none() {
                let result = checkpoint::VerifyResult {
                    sink: sink.name().into(),
                    table: schema.id.clone(),
                    differing: (report.missing + report.extra + report.different) as i64,
                    unsettled: report.unsettled as i64,
                    verified_at: chrono::Utc::now(),
                };
                checkpoint::store_verify_result(&client, &config.name, &result)
                    .await
                    .context("recording the result in the target")?;
            }
            out.push(report);
        }
    }
    Ok(out)
}

fn select_tables(
    config: &ConnectorConfig,
    schemas: Vec<Arc<TableSchema>>,
    wanted: &[String],
) -> anyhow::Result<Vec<Arc<TableSchema>>> {
    if wanted.is_empty() {
        return Ok(schemas);
    }
    let mut out = Vec::new();
    for w in wanted {
        let found = schemas.iter().find(|s| {
            s.id.to_string().eq_ignore_ascii_case(w) || s.id.name.eq_ignore_ascii_case(w)
        });
        match found {
            Some(s) => out.push(s.clone()),
            None => bail!(
                "{w} is not a table of connector {} ({})",
                config.name,
                config.file.display()
            ),
        }
    }
    Ok(out)
}

/// The sink's checkpoint of a table: the lowest version over its copies (lanes), if every copy
/// is streaming; else why the table cannot be compared now.
async fn checkpoint_version(
    client: &impl tokio_postgres::GenericClient,
    config: &ConnectorConfig,
    sink: Sink<'_>,
    schema: &TableSchema,
) -> anyhow::Result<Result<i64, String>> {
    Ok(checkpoint_lanes(client, config, sink, schema, false)
        .await?
        .map(|lanes| lanes.values().copied().min().expect("lanes")))
}

/// Each copy (lane) of the sink's checkpoint of a table, by sink name, if every copy is
/// streaming; else why the table cannot be compared now. With `lock`, the rows are locked
/// `FOR UPDATE`.
async fn checkpoint_lanes(
    client: &impl tokio_postgres::GenericClient,
    config: &ConnectorConfig,
    sink: Sink<'_>,
    schema: &TableSchema,
    lock: bool,
) -> anyhow::Result<Result<BTreeMap<String, i64>, String>> {
    let rows = client
        .query(
            &format!(
                "SELECT phase, version, sink FROM edfi_cdc.table_state WHERE connector = $1 \
                 AND (sink = $2 OR sink LIKE $3) AND source_schema = $4 AND source_table = $5{}",
                if lock { " FOR UPDATE" } else { "" }
            ),
            &[
                &config.name,
                &sink.name(),
                &format!("{}@%", sink.name()),
                &schema.id.schema,
                &schema.id.name,
            ],
        )
        .await
        .context("reading the sink's checkpoint")?;
    if rows.is_empty() {
        return Ok(Err("the sink has no checkpoint for it yet".into()));
    }
    if let Some(r) = rows.iter().find(|r| r.get::<_, &str>(0) != "streaming") {
        return Ok(Err(format!(
            "the sink is loading it (phase {}); verify it once the snapshot is published",
            r.get::<_, &str>(0)
        )));
    }
    Ok(Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(2), r.get::<_, i64>(1)))
        .collect()))
}

/// The target side of a table, and whether it keeps deleted rows.
async fn target_table(
    client: &Client,
    sink: Sink<'_>,
    schema: &TableSchema,
) -> anyhow::Result<TargetTable> {
    let plain = TargetTable::new(sink, schema, false);
    let soft = match sink {
        Sink::Redshift(r) => {
            r.deletes == Deletes::Soft
                || crate::models::has_column(
                    client,
                    &plain.name.to_string(),
                    crate::sink::redshift::sql::DELETED_AT,
                )
                .await
                .unwrap_or(false)
        }
        Sink::Staging(_) => false,
    };
    Ok(if soft {
        TargetTable::new(sink, schema, true)
    } else {
        plain
    })
}

fn bucket_count(rows: i64) -> u32 {
    ((rows / ROWS_PER_BUCKET).clamp(1, MAX_BUCKETS) as u32).next_power_of_two()
}

/// Compare one table of one sink: the report, and every key found different.
async fn compare(
    config: &ConnectorConfig,
    opts: &Options,
    conn: &mut Source,
    client: &Client,
    sink: Sink<'_>,
    schema: &TableSchema,
) -> anyhow::Result<(TableReport, Differences)> {
    let started = Instant::now();
    let table = target_table(client, sink, schema).await?;
    let source = conn.table(sink, schema);
    let mut report = TableReport {
        sink: sink.name().into(),
        table: schema.id.to_string(),
        target: table.name.to_string(),
        ..TableReport::default()
    };
    let rows = conn.count_rows(schema).await?;
    let buckets = bucket_count(rows);

    // Round 0: every bucket.
    let tx = Target::begin(client).await?;
    let cp = match checkpoint_version(tx.client(), config, sink, schema).await? {
        Ok(v) => v,
        Err(why) => {
            tx.end().await?;
            report.skipped = Some(why);
            return Ok((report, Differences::default()));
        }
    };
    let result = async {
        let version = conn.begin().await?;
        // Both sides hash at once.
        let (source_buckets, target_buckets) = tokio::join!(
            conn.buckets(&source, buckets),
            read_target_buckets(tx.client(), &table, buckets)
        );
        let (source_buckets, target_buckets) = (source_buckets?, target_buckets?);
        let differing: Vec<u32> = source_buckets
            .keys()
            .chain(target_buckets.keys())
            .copied()
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .filter(|b| source_buckets.get(b) != target_buckets.get(b))
            .collect();
        let (src_rows, tgt_rows) = tokio::join!(
            conn.rows(&source, buckets, &differing),
            read_target_rows(tx.client(), &table, buckets, &differing)
        );
        anyhow::Ok((
            version,
            source_buckets,
            target_buckets,
            src_rows?,
            tgt_rows?,
        ))
    }
    .await;
    conn.end().await?;
    let (version, source_buckets, target_buckets, mut src_rows, tgt_rows) = result?;
    tx.end().await?;
    report.checkpoint_version = cp;
    report.source_version = version;
    report.source_rows = source_buckets.values().map(|b| b.0 as u64).sum();
    report.target_rows = target_buckets.values().map(|b| b.0 as u64).sum();

    let mut found = Differences::default();
    let mut pending = diff(&src_rows.rows, &tgt_rows);
    let mut since = cp;
    let mut wait_for = version;
    // The source's rows at the read before the last (a PostgreSQL source).
    let mut earlier: Option<SourceRows> = None;
    for round in 0..=ROUNDS {
        if pending.len() == 0 {
            break;
        }
        let changed = match (&mut *conn, &source) {
            (Source::Mssql(conn), SourceTable::Mssql(q)) => {
                changed_keys(conn, q, schema, since).await?
            }
            _ => earlier.as_ref().map(|e| {
                let keys = pending
                    .missing
                    .iter()
                    .chain(&pending.extra)
                    .chain(&pending.different)
                    .cloned()
                    .collect();
                src_rows.changed_since(e, &keys)
            }),
        };
        let mut in_flight = Differences::default();
        for (kind, keys) in [
            (&mut found.missing, &mut pending.missing),
            (&mut found.extra, &mut pending.extra),
            (&mut found.different, &mut pending.different),
        ] {
            for k in std::mem::take(keys) {
                match &changed {
                    Some(c) if !c.contains(&k) => {
                        kind.insert(k);
                    }
                    _ => {
                        in_flight.missing.insert(k);
                    }
                }
            }
        }
        if in_flight.len() == 0 || round == ROUNDS {
            pending = in_flight;
            break;
        }
        info!(table = %schema.id, sink = sink.name(), keys = in_flight.len(), round = round + 1, "keys changed while compared; checking them again once the sink has passed version {wait_for}");
        // Again, for the keys in flight only, once the sink has applied what the source had.
        let keys: BTreeSet<String> = in_flight.missing.clone();
        if let Err(why) =
            wait_until_passed(client, config, sink, schema, wait_for, opts.settle_timeout).await?
        {
            warn!(table = %schema.id, sink = sink.name(), keys = keys.len(), "{why}; the keys in flight are reported unsettled");
            pending = in_flight;
            break;
        }
        let tx = Target::begin(client).await?;
        let cp = match checkpoint_version(tx.client(), config, sink, schema).await? {
            Ok(v) => v,
            Err(why) => {
                tx.end().await?;
                warn!(table = %schema.id, sink = sink.name(), "{why}; the keys in flight are reported unsettled");
                pending = in_flight;
                break;
            }
        };
        let list = buckets_of(buckets, &keys);
        let tgt = read_target_rows(tx.client(), &table, buckets, &list).await?;
        tx.end().await?;
        let result = async {
            let version = conn.begin().await?;
            let src = conn.rows(&source, buckets, &list).await?;
            anyhow::Ok((version, src))
        }
        .await;
        conn.end().await?;
        let (v, src) = result?;
        let mut again = diff(&src.rows, &tgt);
        for set in [&mut again.missing, &mut again.extra, &mut again.different] {
            set.retain(|k| keys.contains(k));
        }
        pending = again;
        since = cp;
        wait_for = v;
        earlier = Some(std::mem::replace(&mut src_rows, src));
    }
    report.missing = found.missing.len() as u64;
    report.extra = found.extra.len() as u64;
    report.different = found.different.len() as u64;
    report.unsettled = pending.len() as u64;
    let first = |s: &BTreeSet<String>| s.iter().take(opts.max_keys).cloned().collect();
    report.missing_keys = first(&found.missing);
    report.extra_keys = first(&found.extra);
    report.different_keys = first(&found.different);
    report.unsettled_keys = pending
        .missing
        .iter()
        .chain(&pending.extra)
        .chain(&pending.different)
        .take(opts.max_keys)
        .cloned()
        .collect();
    report.seconds = started.elapsed().as_secs_f64();
    if report.differs() {
        warn!(table = %schema.id, sink = sink.name(), missing = report.missing, extra = report.extra, different = report.different, "the target differs from the source");
    }
    Ok((report, found))
}

/// A read-only transaction on the target that sees one committed state.
struct Target<'a> {
    client: &'a Client,
}

impl<'a> Target<'a> {
    async fn begin(client: &'a Client) -> anyhow::Result<Target<'a>> {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .context("beginning a read on the target")?;
        Ok(Target { client })
    }

    fn client(&self) -> &'a Client {
        self.client
    }

    async fn end(self) -> anyhow::Result<()> {
        self.client.batch_execute("COMMIT").await?;
        Ok(())
    }
}

async fn read_target_buckets(
    client: &Client,
    table: &TargetTable,
    buckets: u32,
) -> anyhow::Result<Buckets> {
    let rows = client
        .query(&table.buckets(buckets), &[])
        .await
        .with_context(|| format!("hashing {}", table.name))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0) as u32,
                (r.get::<_, i64>(1), r.get::<_, i64>(2), r.get::<_, i64>(3)),
            )
        })
        .collect())
}

async fn read_target_rows(
    client: &Client,
    table: &TargetTable,
    buckets: u32,
    list: &[u32],
) -> anyhow::Result<Rows> {
    let mut out = Rows::new();
    for part in list.chunks(BUCKETS_PER_QUERY) {
        for r in client.query(&table.bucket_rows(buckets, part), &[]).await? {
            let row = out
                .entry(r.get::<_, String>(0))
                .or_insert((String::new(), 0));
            row.1 += 1;
            if row.1 == 1 {
                row.0 = r.get::<_, String>(1);
            }
        }
    }
    Ok(out)
}

/// The bucket of a key text: its MD5's first four bytes, big-endian, modulo `buckets`, as both
/// sides compute it in SQL.
fn bucket_of(buckets: u32, key: &str) -> u32 {
    use md5::Digest;
    let h = md5::Md5::digest(key.as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % buckets
}

/// The buckets holding these key texts.
fn buckets_of(buckets: u32, keys: &BTreeSet<String>) -> Vec<u32> {
    keys.iter()
        .map(|k| bucket_of(buckets, k))
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect()
}

/// The keys whose rows differ. A key the target holds more than once is extra (the copies
/// beyond the first), whatever their values.
fn diff(source: &Rows, target: &Rows) -> Differences {
    let mut d = Differences::default();
    for (k, (h, _)) in source {
        match target.get(k) {
            None => {
                d.missing.insert(k.clone());
            }
            Some((_, n)) if *n > 1 => {
                d.extra.insert(k.clone());
            }
            Some((t, _)) if t != h => {
                d.different.insert(k.clone());
            }
            Some(_) => {}
        }
    }
    for k in target.keys() {
        if !source.contains_key(k) {
            d.extra.insert(k.clone());
        }
    }
    d
}

/// The key texts Change Tracking has changed after `version`; `None` when it cannot tell
/// (`version` is older than the table's minimum valid version).
async fn changed_keys(
    conn: &mut Connection,
    source: &queries::VerifyQueries,
    schema: &TableSchema,
    version: i64,
) -> anyhow::Result<Option<BTreeSet<String>>> {
    // One SNAPSHOT transaction: cleanup between the two reads cannot hide a change.
    conn.batch(queries::BEGIN_SNAPSHOT).await?;
    let read = async {
        let min = conn
            .min_valid_versions()
            .await?
            .get(&schema.id.to_string().to_lowercase())
            .copied()
            .flatten();
        if min.is_none_or(|m| version < m) {
            return anyhow::Ok(None);
        }
        Ok(Some(
            conn.rows(&source.changed_keys(), &[Value::Int(version)])
                .await?
                .iter()
                .filter_map(|r| value::as_str(&r[0]).map(str::to_string))
                .collect(),
        ))
    }
    .await;
    conn.batch(queries::COMMIT).await?;
    read
}

/// Wait until the sink's checkpoint of the table reaches `version`; `Err` says why it did not.
async fn wait_until_passed(
    client: &Client,
    config: &ConnectorConfig,
    sink: Sink<'_>,
    schema: &TableSchema,
    version: i64,
    timeout: Duration,
) -> anyhow::Result<Result<(), String>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(v) = checkpoint_version(client, config, sink, schema).await? {
            if v >= version {
                return Ok(Ok(()));
            }
        }
        if Instant::now() > deadline {
            return Ok(Err(format!(
                "the {} sink did not reach version {version} within {timeout:?} (is the replicator running?)",
                sink.name()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What `--repair` did to a table.
pub enum Repair {
    /// Keys were written; compare again to show the result.
    Mended(String),
    /// The sink was asked to re-snapshot the table; it does so on its own time.
    Requested(String),
}

/// Mend the differences of `report`: key by key in staging when there are at most
/// `repair_limit`, else a re-snapshot request; always one for Redshift, whose models must
/// follow, and for a PostgreSQL source, which has no Change Tracking to tell which keys the
/// sink has yet to write.
async fn repair(
    config: &ConnectorConfig,
    opts: &Options,
    conn: &mut Source,
    client: &Client,
    sink: Sink<'_>,
    schema: &TableSchema,
    keys: &Differences,
) -> anyhow::Result<Repair> {
    let count = keys.len();
    match conn {
        Source::Mssql(conn) if matches!(sink, Sink::Staging(_)) && count <= opts.repair_limit => {
            repair_staging(config, conn, client, sink, schema, keys)
                .await
                .map(Repair::Mended)
        }
        _ => {
            checkpoint::request_resnapshot(client, &config.name, &schema.id).await?;
            let what = format!(
                "asked the {} sink to re-snapshot {} ({count} differing rows); run verify again \
                 once `status` shows it streaming",
                sink.name(),
                schema.id
            );
            info!(table = %schema.id, sink = sink.name(), "{what}");
            Ok(Repair::Requested(what))
        }
    }
}

/// Attempts of a staging repair before giving up (each fails only when the sink committed
/// meanwhile).
const REPAIR_ATTEMPTS: usize = 10;

/// Write the source's rows of the differing keys into staging, exactly once with respect to
/// the running sink. The source rows are read at a version `V`, and only keys Change Tracking
/// shows unchanged after the sink's checkpoint `C` are written: their rows at `V` are their
/// rows at `C`, which is what the target must hold at `C`. The writes commit only if the
/// checkpoint is still `C` when the transaction locks it last: a sink that committed meanwhile
/// makes the attempt roll back and start again, and one that commits afterwards applies its
/// later changes on top. Keys changed after `C` are left to the sink, which writes them anyway.
async fn repair_staging(
    config: &ConnectorConfig,
    conn: &mut Connection,
    client: &Client,
    sink: Sink<'_>,
    schema: &TableSchema,
    keys: &Differences,
) -> anyhow::Result<String> {
    let table = TargetTable::new(sink, schema, false);
    let scale = |c: &crate::event::ColumnSchema| sink.scale(c);
    let source = queries::VerifyQueries::new(schema, &scale);
    let wanted: BTreeSet<String> = keys
        .missing
        .iter()
        .chain(&keys.extra)
        .chain(&keys.different)
        .cloned()
        .collect();
    for attempt in 1..=REPAIR_ATTEMPTS {
        let lanes = match checkpoint_lanes(client, config, sink, schema, false).await? {
            Ok(l) => l,
            Err(why) => bail!("{}: cannot repair: {why}", schema.id),
        };
        let cp = lanes.values().copied().min().expect("lanes");
        let buckets = 1u32 << 10;
        let list = buckets_of(buckets, &wanted);
        conn.batch(queries::BEGIN_SNAPSHOT).await?;
        let read = async {
            let mut rows: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for part in list.chunks(BUCKETS_PER_QUERY) {
                for mut r in conn
                    .rows(
                        &source.bucket_full_rows(part.len()),
                        &bucket_params(buckets, part),
                    )
                    .await?
                {
                    let key = r.pop().and_then(|k| value::as_str(&k).map(str::to_string));
                    if let Some(key) = key.filter(|k| wanted.contains(k)) {
                        rows.insert(key, r);
                    }
                }
            }
            anyhow::Ok(rows)
        }
        .await;
        conn.batch(queries::COMMIT).await?;
        let rows = read?;
        let changed = changed_keys(conn, &source, schema, cp)
            .await?
            .with_context(|| format!("{}: Change Tracking no longer covers the sink's checkpoint {cp}; re-snapshot the table instead", schema.id))?;
        let settled: Vec<&String> = wanted.iter().filter(|k| !changed.contains(*k)).collect();
        let upserts: Vec<Vec<Option<String>>> = settled
            .iter()
            .filter_map(|k| rows.get(*k))
            .map(|r| r.iter().map(text).collect())
            .collect();
        let deletes: Vec<String> = settled
            .iter()
            .filter(|k| !rows.contains_key(**k))
            .map(|k| (*k).clone())
            .collect();
        client
            .batch_execute("BEGIN; SET LOCAL lock_timeout = '500ms'")
            .await?;
        let written = async {
            for part in upserts.chunks(500) {
                client.execute(&table.upsert(part), &[]).await?;
            }
            for part in deletes.chunks(500) {
                client.execute(&table.delete_keys(part), &[]).await?;
            }
            anyhow::Ok(checkpoint_lanes(client, config, sink, schema, true).await?)
        }
        .await;
        // Every copy of the checkpoint as it was: a lane that committed meanwhile may have
        // written one of these keys at a newer version.
        match written {
            Ok(Ok(now)) if now == lanes => {
                client.batch_execute("COMMIT").await?;
                return Ok(format!(
                    "wrote {} rows and deleted {} at checkpoint {cp}; {} keys changed meanwhile and were left to the sink",
                    upserts.len(),
                    deletes.len(),
                    wanted.len() - settled.len()
                ));
            }
            Ok(_) => {
                info!(table = %schema.id, attempt, "the sink committed while the repair was prepared; trying again")
            }
            Err(e) => {
                info!(table = %schema.id, attempt, error = %format!("{e:#}"), "repair attempt rolled back; trying again")
            }
        }
        client.batch_execute("ROLLBACK").await?;
    }
    bail!(
        "{}: the sink kept committing during {REPAIR_ATTEMPTS} repair attempts; try again, or re-snapshot the table",
        schema.id
    )
}

/// A value as the text PostgreSQL reads for its type (`None` for NULL).
fn text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Decimal(s) | Value::String(s) => s.clone(),
        Value::Bytes(b) => {
            let mut s = String::from("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Timestamp(_) | Value::TimestampTz(_) | Value::Time(_) => {
            time_text(v).expect("a time value")
        }
        Value::Uuid(u) => u.to_string(),
    })
}

/// How often a running replicator reads the stored `verify` results into its metrics.
const RESULTS_EVERY: Duration = Duration::from_secs(15);

/// Export the results `verify` stored in each enabled sink's target as metrics
/// (`edfi_cdc_verify_differing_rows`, the alert's input), until `stop`. A target that cannot be
/// read is tried again at the next turn; the gauges keep their last values meanwhile.
pub async fn export_results(
    config: Arc<ConnectorConfig>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut clients: HashMap<&'static str, Client> = HashMap::new();
    loop {
        for (sink, url) in sinks(&config, None).unwrap_or_default() {
            let name = sink.name();
            if clients.get(name).is_none_or(Client::is_closed) {
                match crate::sink::pg::connect(name, url).await {
                    Ok(c) => {
                        clients.insert(name, c);
                    }
                    Err(e) => {
                        tracing::debug!(sink = name, error = %e, "verify results: target not reachable");
                        continue;
                    }
                }
            }
            match checkpoint::verify_results(&clients[name], &config.name).await {
                Ok(results) => {
                    for r in results {
                        crate::metrics::verify_result(&config.name, &r);
                    }
                }
                // Absent until the sink or `verify` creates it.
                Err(e) => tracing::debug!(sink = name, error = %e, "verify results: not readable"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RESULTS_EVERY) => {}
        }
    }
}

/// The reports as a table (one line per table and sink, then the keys), or JSON.
pub fn render(reports: &[TableReport], as_json: bool) -> String {
    use std::fmt::Write as _;
    if as_json {
        return serde_json::to_string_pretty(reports).expect("reports are JSON");
    }
    let mut s = format!(
        "{:<8} {:<52} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9}  result\n",
        "sink", "table", "source", "target", "missing", "extra", "different", "unsettled"
    );
    for r in reports {
        let result = match (&r.skipped, r.differs()) {
            (Some(why), _) => format!("not compared: {why}"),
            (None, true) => "DIFFERS".to_string(),
            (None, false) if r.unsettled > 0 => "equal except keys still changing".to_string(),
            (None, false) => "equal".to_string(),
        };
        let _ = writeln!(
            s,
            "{:<8} {:<52} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9}  {result}",
            r.sink,
            r.table,
            r.source_rows,
            r.target_rows,
            r.missing,
            r.extra,
            r.different,
            r.unsettled
        );
        for (what, keys) in [
            ("missing", &r.missing_keys),
            ("extra", &r.extra_keys),
            ("different", &r.different_keys),
            ("unsettled", &r.unsettled_keys),
        ] {
            if !keys.is_empty() {
                let _ = writeln!(s, "    {what}: {}", keys.join("; "));
            }
        }
        if let Some(repair) = &r.repair {
            let _ = writeln!(s, "    repair: {repair}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_md5s_first_four_bytes() {
        // md5("abc") = 900150983cd24fb0…
        assert_eq!(bucket_of(1 << 16, "abc"), 0x5098);
        assert_eq!(bucket_of(1, "abc"), 0);
        assert_eq!(
            buckets_of(1 << 16, &["abc".to_string()].into()),
            vec![0x5098]
        );
    }

    #[test]
    fn a_key_held_twice_is_extra_whatever_its_values() {
        let rows = |pairs: &[(&str, &str, u32)]| -> Rows {
            pairs
                .iter()
                .map(|(k, h, n)| (k.to_string(), (h.to_string(), *n)))
                .collect()
        };
        let source = rows(&[("+1", "a", 1), ("+2", "b", 1), ("+3", "c", 1)]);
        let target = rows(&[("+1", "a", 2), ("+2", "x", 1), ("+4", "d", 1)]);
        let d = diff(&source, &target);
        assert_eq!(d.extra, ["+1", "+4"].map(String::from).into());
        assert_eq!(d.different, ["+2"].map(String::from).into());
        assert_eq!(d.missing, ["+3"].map(String::from).into());
    }
}
