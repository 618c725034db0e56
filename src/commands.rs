//! The operator commands besides `run`: `check`, `status`, `resnapshot`, `enable-ct`,
//! `models check`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::checkpoint::{self, Phase};
use crate::config::{ConnectorConfig, SourceKind, StreamKind};
use crate::event::{TableId, Value};
use crate::sink::names::staging_table;
use crate::source::mssql::{queries, schema, value, Connection};

/// One line of `check`.
pub struct CheckLine {
    pub pass: bool,
    pub what: String,
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            if self.pass { "PASS" } else { "FAIL" },
            self.what
        )
    }
}

fn line(pass: bool, what: impl Into<String>) -> CheckLine {
    CheckLine {
        pass,
        what: what.into(),
    }
}

const RETENTION_UNITS: [(i64, &str); 3] = [(60, "minutes"), (3600, "hours"), (86400, "days")];

/// Every check for one connector, each a pass/fail line. Connects, reads, changes nothing.
pub async fn check(config: &ConnectorConfig) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let src = &config.source;
    let addr = format!("{}:{} database {}", src.host, src.port, src.database);
    let retention_secs = match src.kind {
        SourceKind::Mssql => check_mssql(config, &addr, &mut out).await,
        SourceKind::Postgres => {
            check_postgres(config, &mut out).await;
            None
        }
    };
    if let Err(e) = crate::pipeline::aws_region(config).await {
        out.push(line(false, format!("aws: {e:#}")));
    }
    match config.stream.kind {
        StreamKind::Embedded => {}
        StreamKind::Kafka => out.extend(
            crate::stream::kafka::probe(config, retention_secs)
                .await
                .into_iter()
                .map(|(pass, what)| line(pass, what)),
        ),
        StreamKind::Kinesis => out.extend(
            crate::stream::kinesis::probe(config, retention_secs)
                .await
                .into_iter()
                .map(|(pass, what)| line(pass, what)),
        ),
    }
    if let Some(staging) = config.sinks.staging.as_ref().filter(|s| s.enabled) {
        match crate::sink::pg::connect("staging", staging.url.expose()).await {
            Err(e) => out.push(line(false, format!("staging: connect: {e}"))),
            Ok(client) => {
                out.push(line(true, "staging: connected"));
                let oldest: Result<Option<DateTime<Utc>>, _> = client
                    .query_opt("SELECT min(commit_time) FROM edfi_cdc.table_state WHERE connector = $1 AND phase <> 'snapshot'", &[&config.name])
                    .await
                    .map(|r| r.and_then(|r| r.get(0)));
                match (oldest, retention_secs) {
                    (Ok(Some(t)), Some(ret)) => {
                        let age = (Utc::now() - t).num_seconds();
                        let left = ret - age;
                        let pass = left > ret / 4;
                        out.push(line(pass, format!("retention headroom: oldest staging baseline committed {age} s ago; {left} s left before Change Tracking retention ({ret} s) invalidates it{}", if pass { "" } else { " — catch up or the tables will be re-snapshotted" })));
                    }
                    (Ok(None), _) | (Err(_), _) => out.push(line(true, "retention headroom: no staging checkpoint yet (the first run snapshots every table)")),
                    (Ok(Some(_)), None) => out.push(line(false, "retention headroom: unknown (source retention could not be read)")),
                }
            }
        }
    }
    if let Some(r) = config.sinks.redshift.as_ref().filter(|r| r.enabled) {
        match crate::sink::pg::connect("redshift", r.url.expose()).await {
            Err(e) => out.push(line(false, format!("redshift: connect: {e}"))),
            Ok(_client) => {
                out.push(line(
                    true,
                    format!("redshift: connected ({:?} load)", r.load),
                ));
            }
        }
        if !r.bucket.is_empty() {
            match crate::sink::redshift::files::Files::connect(&r.bucket, &r.prefix, &config.name)
                .await
            {
                Ok(_) => out.push(line(
                    true,
                    format!("redshift: S3 bucket `{}` reachable", r.bucket),
                )),
                Err(e) => out.push(line(false, format!("redshift: {e}"))),
            }
        }
    }
    out
}

/// The SQL Server source's checks; its Change Tracking retention in seconds when readable.
async fn check_mssql(
    config: &ConnectorConfig,
    addr: &str,
    out: &mut Vec<CheckLine>,
) -> Option<i64> {
    let src = &config.source;
    let mut retention_secs: Option<i64> = None;
    match Connection::connect(src).await {
        Err(e) => out.push(line(false, format!("source: connect to {addr}: {e}"))),
        Ok(mut conn) => {
            out.push(line(
                true,
                format!("source: connected to {addr} as {}", src.user),
            ));
            match conn.rows(queries::DATABASE_CT, &[]).await {
                Ok(rows) if !rows.is_empty() => {
                    let r = &rows[0];
                    let period = value::as_i64(&r[0]).unwrap_or(0);
                    let unit = value::as_i64(&r[1]).unwrap_or(3);
                    let (secs, name) = RETENTION_UNITS.get((unit - 1).clamp(0, 2) as usize).copied().unwrap_or((86400, "days"));
                    retention_secs = Some(period * secs);
                    let cleanup = value::as_i64(&r[2]) == Some(1);
                    out.push(line(true, format!("source: Change Tracking on for database {} (retention {period} {name}, auto cleanup {})", src.database, if cleanup { "on" } else { "off" })));
                }
                Ok(_) => out.push(line(false, format!("source: Change Tracking is off for database {}: run `edfi-cdc enable-ct --print`", src.database))),
                Err(e) => out.push(line(false, format!("source: read sys.change_tracking_databases: {e}"))),
            }
            match conn.scalar(queries::SNAPSHOT_ISOLATION, &[]).await.map(|v| value::as_i64(&v)) {
                Ok(Some(1)) => out.push(line(true, "source: snapshot isolation allowed")),
                Ok(_) => out.push(line(false, format!("source: snapshot isolation is not allowed: ALTER DATABASE [{}] SET ALLOW_SNAPSHOT_ISOLATION ON", src.database))),
                Err(e) => out.push(line(false, format!("source: read sys.databases: {e}"))),
            }
            match conn.scalar(queries::SERVER_STATE, &[]).await.map(|v| value::as_i64(&v)) {
                Ok(Some(1)) => out.push(line(true, "source: VIEW SERVER STATE granted (commit times for lag)")),
                Ok(_) => out.push(line(false, format!("source: {} lacks VIEW SERVER STATE: sys.dm_tran_commit_table shows it no commit times, so lag cannot be measured; in master: GRANT VIEW SERVER STATE TO [{}]", src.user, src.user))),
                Err(e) => out.push(line(false, format!("source: read the login's permissions: {e}"))),
            }
            match schema::discover(&mut conn, config).await {
                Err(e) => out.push(line(false, format!("source: {e}"))),
                Ok(catalog) => {
                    for t in &catalog.schemas {
                        let keys: Vec<&str> = t.key_columns().map(|c| c.name.as_str()).collect();
                        let tracked = !catalog.untracked.contains(&t.id);
                        let perms = conn
                            .rows(queries::PERMISSIONS, &[Value::String(t.id.to_string())])
                            .await;
                        let (sel, vct) = match &perms {
                            Ok(r) if !r.is_empty() => (
                                value::as_i64(&r[0][0]) == Some(1),
                                value::as_i64(&r[0][1]) == Some(1),
                            ),
                            _ => (false, false),
                        };
                        let mut what = format!(
                            "table {}: primary key ({}), {} columns",
                            t.id,
                            keys.join(", "),
                            t.columns.len()
                        );
                        let pass = tracked && sel && vct;
                        if !tracked {
                            what.push_str(
                                ", Change Tracking OFF: run `edfi-cdc enable-ct --print`",
                            );
                        } else {
                            what.push_str(", Change Tracking on");
                        }
                        if !sel || !vct {
                            let _ = write!(
                                what,
                                ", missing permission:{}{}",
                                if sel { "" } else { " SELECT" },
                                if vct { "" } else { " VIEW CHANGE TRACKING" }
                            );
                        }
                        out.push(line(pass, what));
                    }
                }
            }
            if let Some(hb) = src.heartbeat() {
                out.push(check_heartbeat(&mut conn, &hb).await);
            }
        }
    }
    retention_secs
}

/// The heartbeat table: change-tracked (so its writes move the version on) and writable.
async fn check_heartbeat(conn: &mut Connection, table: &TableId) -> CheckLine {
    let name = table.to_string();
    let tracked = match conn.min_valid_versions().await {
        Ok(m) => m.get(&name.to_lowercase()).copied().flatten().is_some(),
        Err(e) => {
            return line(
                false,
                format!("heartbeat table {name}: read sys.change_tracking_tables: {e}"),
            )
        }
    };
    if !tracked {
        return line(false, format!("heartbeat table {name}: absent or not change-tracked (source.heartbeat_interval is set): create it with `edfi-cdc enable-ct --print`"));
    }
    let granted = match conn
        .rows(
            queries::HEARTBEAT_PERMISSIONS,
            &[Value::String(name.clone())],
        )
        .await
    {
        Ok(r) if !r.is_empty() => r[0].iter().all(|v| value::as_i64(v) == Some(1)),
        _ => false,
    };
    if granted {
        line(
            true,
            format!(
                "heartbeat table {name}: Change Tracking on, SELECT, INSERT and UPDATE granted"
            ),
        )
    } else {
        line(false, format!("heartbeat table {name}: missing permission: GRANT SELECT, INSERT, UPDATE ON {name} TO <login>"))
    }
}

/// The PostgreSQL source's checks: logical decoding, the replication privilege, every table
/// keyed and published, the slot's health and the WAL it holds back.
async fn check_postgres(config: &ConnectorConfig, out: &mut Vec<CheckLine>) {
    use crate::source::postgres::{self, catalog, queries as pq};
    let src = &config.source;
    let client = match postgres::connect(src).await {
        Err(e) => {
            out.push(line(false, format!("source: {e}")));
            return;
        }
        Ok(c) => c,
    };
    out.push(line(
        true,
        format!(
            "source: connected to PostgreSQL {} database {}",
            src.host, src.database
        ),
    ));
    let schemas = match catalog::discover(&client, config).await {
        Err(e) => {
            out.push(line(false, format!("source: {e}")));
            return;
        }
        Ok(c) => c.schemas,
    };
    out.push(line(
        true,
        "source: wal_level = logical, the login may use replication slots",
    ));
    let published: Vec<(String, String)> = client
        .query(pq::PUBLICATION_TABLES, &[&src.publication])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default();
    for t in &schemas {
        let keys: Vec<&str> = t.key_columns().map(|c| c.name.as_str()).collect();
        let in_pub = published.contains(&(t.id.schema.clone(), t.id.name.clone()));
        out.push(line(
            true,
            format!(
                "table {}: primary key ({}), {} columns, {}",
                t.id,
                keys.join(", "),
                t.columns.len(),
                if in_pub {
                    format!("in publication `{}`", src.publication)
                } else {
                    format!("not yet in publication `{}` (added at the first run, or run `edfi-cdc enable-ct --print`)", src.publication)
                }
            ),
        ));
    }
    match client.query_opt(pq::SLOT, &[&src.slot]).await {
        Ok(None) => out.push(line(true, format!("source: slot `{}` does not exist yet (created at the first run)", src.slot))),
        Ok(Some(r)) if !r.get::<_, bool>(1) => out.push(line(false, format!("source: slot `{}` was invalidated (it held back more WAL than max_slot_wal_keep_size): the next run re-creates it and re-snapshots every table", src.slot))),
        Ok(Some(_)) => {
            let held: Option<i64> = client
                .query_opt(pq::SLOT_LAG, &[&src.slot])
                .await
                .ok()
                .flatten()
                .and_then(|r| r.get(0));
            out.push(line(true, format!("source: slot `{}` healthy, holding back {} MiB of WAL", src.slot, held.unwrap_or(0) >> 20)));
        }
        Err(e) => out.push(line(false, format!("source: read pg_replication_slots: {e}"))),
    }
}

#[derive(Debug, serde::Serialize)]
pub struct TableStatus {
    pub sink: String,
    pub table: String,
    pub target: String,
    pub phase: String,
    pub checkpoint_version: i64,
    pub source_version: Option<i64>,
    pub lag_versions: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub snapshot_rows: Option<u64>,
    pub snapshot_total_rows: Option<u64>,
    pub snapshot_rows_per_sec: Option<f64>,
    pub snapshot_eta_seconds: Option<f64>,
}

/// A sink lane of a Kafka or Kinesis stream: who applies it and how far.
#[derive(Debug, serde::Serialize)]
pub struct LaneStatus {
    pub sink: String,
    pub worker: String,
    /// The watermark version its last transaction reached.
    pub version: Option<i64>,
    /// Stream partitions (topic partitions, shards) it covers.
    pub partitions: usize,
    pub updated_at: DateTime<Utc>,
}

/// What `status` shows for a connector.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// Per sink and table; with a Kafka or Kinesis stream, the least advanced lane's.
    pub tables: Vec<TableStatus>,
    pub lanes: Vec<LaneStatus>,
    /// With lanes: the version every lane has reached (the group's consistent version).
    pub group_version: Option<i64>,
    /// What kept `status` from answering fully (an unreachable source, a target without
    /// checkpoints); `edfi-cdc status` exits 1 when there is any.
    pub problems: Vec<String>,
}

/// Checkpoint and lag of every table of every sink, and the lanes of a stream's sink workers.
pub async fn status(config: &ConnectorConfig) -> anyhow::Result<Status> {
    // SQL Server: CT versions with commit times; PostgreSQL: the flushed WAL position, less one
    // (a caught-up sink's watermark), without commit times.
    let mut problems = Vec::new();
    let src = &config.source;
    let (mut conn, current) = match src.kind {
        SourceKind::Mssql => match Connection::connect(src).await {
            Ok(mut c) => match c.current_version().await {
                Ok(v) => (Some(c), v),
                Err(e) => {
                    problems.push(format!("source: cannot read the current version: {e}"));
                    (Some(c), None)
                }
            },
            Err(e) => {
                problems.push(format!(
                    "source {}:{} unreachable: {e}; lag unknown",
                    src.host, src.port
                ));
                (None, None)
            }
        },
        SourceKind::Postgres => match postgres_position(config).await {
            Some(v) => (None, Some(v)),
            None => {
                problems.push(
                    "source: cannot read the PostgreSQL source's WAL position; lag unknown".into(),
                );
                (None, None)
            }
        },
    };
    let mut out = Vec::new();
    let mut lanes = Vec::new();
    for (sink, url, target) in sinks(config) {
        let client = crate::sink::pg::connect(sink, url).await?;
        // A sink's own rows, or its lanes' (`staging@…`) least advanced first.
        let rows = client
        .query(
            "SELECT source_schema, source_table, phase, version, snapshot_rows, snapshot_total_rows, \
             snapshot_started_at FROM edfi_cdc.table_state WHERE connector = $1 AND (sink = $2 OR sink LIKE $3) \
             ORDER BY 1, 2, CASE WHEN phase = 'streaming' THEN 1 ELSE 0 END, version",
            &[&config.name, &sink, &format!("{sink}@%")],
        )
        .await
        .unwrap_or_else(|e| {
            problems.push(format!("{sink}: cannot read checkpoints: {e}"));
            Vec::new()
        });
        if rows.is_empty() {
            problems.push(format!(
                "{sink}: no checkpoints of connector {} in this database: has `edfi-cdc run` reached it, and is the URL right?",
                config.name
            ));
        }
        let positions = crate::checkpoint::all_positions(&client, &config.name)
            .await
            .unwrap_or_default();
        for (lane, parts) in positions
            .iter()
            .filter(|p| p.0.starts_with(&format!("{sink}@")))
            .fold(
                std::collections::BTreeMap::<&str, Vec<_>>::new(),
                |mut m, p| {
                    m.entry(p.0.as_str()).or_default().push(p);
                    m
                },
            )
        {
            lanes.push(LaneStatus {
                sink: lane.to_string(),
                worker: parts[0].4.clone(),
                version: parts.iter().filter_map(|p| p.3).min(),
                partitions: parts.len(),
                updated_at: parts.iter().map(|p| p.5).max().expect("one part"),
            });
        }
        for t in config.tables() {
            let r = rows
                .iter()
                .find(|r| r.get::<_, &str>(0) == t.schema && r.get::<_, &str>(1) == t.name);
            let (phase, version) = r.map_or(("not started".to_string(), 0), |r| {
                (r.get::<_, String>(2), r.get(3))
            });
            let snapshotting = Phase::parse(&phase) == Some(Phase::Snapshot);
            let lag_versions = current.map(|c| (c - version).max(0));
            let lag_seconds = match (conn.as_mut(), current) {
                (Some(c), Some(cur)) if cur > version && !snapshotting => c
                    .rows(
                        queries::OLDEST_COMMIT_AFTER,
                        &[Value::Int(version), Value::Int(cur)],
                    )
                    .await
                    .ok()
                    .and_then(|rows| rows.into_iter().next())
                    .and_then(|row| match &row[1] {
                        Value::Timestamp(ts) => {
                            Some((Utc::now() - ts.and_utc()).num_milliseconds() as f64 / 1000.0)
                        }
                        _ => None,
                    }),
                (None, Some(cur)) if cur > version => None,
                (_, Some(_)) => Some(0.0),
                _ => None,
            };
            let (rows_done, total, elapsed) = r.map_or((None, None, None), |r| {
                (
                    Some(r.get::<_, i64>(4) as u64),
                    r.get::<_, Option<i64>>(5).map(|n| n as u64),
                    r.get::<_, Option<DateTime<Utc>>>(6)
                        .map(|at| (Utc::now() - at).num_milliseconds() as f64 / 1000.0),
                )
            });
            let rate = if snapshotting {
                rows_done.zip(elapsed).map(|(n, s)| n as f64 / s.max(0.001))
            } else {
                None
            };
            let eta = match (rate, rows_done, total) {
                (Some(rate), Some(done), Some(total)) if rate > 0.0 => {
                    Some(total.saturating_sub(done) as f64 / rate)
                }
                _ => None,
            };
            out.push(TableStatus {
                sink: sink.into(),
                table: t.to_string(),
                target: target(&t),
                phase,
                checkpoint_version: version,
                source_version: current,
                lag_versions,
                lag_seconds,
                snapshot_rows: rows_done.filter(|_| snapshotting),
                snapshot_total_rows: total.filter(|_| snapshotting),
                snapshot_rows_per_sec: rate,
                snapshot_eta_seconds: eta,
            });
        }
    }
    let group_version = if lanes.iter().any(|l| l.version.is_none()) {
        None
    } else {
        lanes.iter().filter_map(|l| l.version).min()
    };
    Ok(Status {
        tables: out,
        lanes,
        group_version,
        problems,
    })
}

/// The PostgreSQL source's flushed WAL position less one: the watermark of a caught-up sink.
async fn postgres_position(config: &ConnectorConfig) -> Option<i64> {
    use crate::source::postgres;
    let client = postgres::connect(&config.source).await.ok()?;
    let flush: String = client
        .query_one(postgres::queries::FLUSH_LSN, &[])
        .await
        .ok()?
        .get(0);
    Some(postgres::parse_lsn(&flush).ok()? as i64 - 1)
}

/// A function naming a sink's target table for a source table.
type TargetName<'a> = Box<dyn Fn(&TableId) -> String + 'a>;

/// Every enabled sink: its name, target URL and target table names.
fn sinks(config: &ConnectorConfig) -> Vec<(&'static str, &str, TargetName<'_>)> {
    let mut out: Vec<(&'static str, &str, TargetName<'_>)> = Vec::new();
    if let Some(s) = config.sinks.staging.as_ref().filter(|s| s.enabled) {
        out.push((
            "staging",
            s.url.expose(),
            Box::new(move |t| staging_table(s, t).to_string()),
        ));
    }
    if let Some(r) = config.sinks.redshift.as_ref().filter(|r| r.enabled) {
        out.push((
            "redshift",
            r.url.expose(),
            Box::new(move |t| crate::sink::names::redshift_table(r, t).to_string()),
        ));
    }
    out
}

pub fn render_status(status: &Status, as_json: bool) -> String {
    if as_json {
        return serde_json::to_string_pretty(status).expect("status is JSON");
    }
    let rows = &status.tables;
    let mut s = format!(
        "{:<8} {:<58} {:<12} {:>10} {:>10} {:>9} {:>9}  snapshot\n",
        "sink", "table", "phase", "version", "source", "lag(v)", "lag(s)"
    );
    for r in rows {
        let snap = match (r.snapshot_rows, r.snapshot_total_rows) {
            (Some(d), t) => format!(
                "{d}/{} rows, {:.0} rows/s, ETA {}",
                t.map_or("?".into(), |t| t.to_string()),
                r.snapshot_rows_per_sec.unwrap_or(0.0),
                r.snapshot_eta_seconds
                    .map_or("?".into(), |e| format!("{e:.0} s"))
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{:<8} {:<58} {:<12} {:>10} {:>10} {:>9} {:>9}  {snap}",
            r.sink,
            r.table,
            r.phase,
            r.checkpoint_version,
            r.source_version.map_or("?".into(), |v| v.to_string()),
            r.lag_versions.map_or("?".into(), |v| v.to_string()),
            r.lag_seconds.map_or("?".into(), |v| format!("{v:.1}")),
        );
    }
    for p in &status.problems {
        let _ = writeln!(s, "PROBLEM {p}");
    }
    if !status.lanes.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<24} {:<36} {:>10} {:>10}  updated",
            "lane", "worker", "version", "partitions"
        );
        for l in &status.lanes {
            let _ = writeln!(
                s,
                "{:<24} {:<36} {:>10} {:>10}  {}",
                l.sink,
                l.worker,
                l.version.map_or("-".into(), |v| v.to_string()),
                l.partitions,
                l.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        let _ = writeln!(
            s,
            "group's consistent version: {}",
            status
                .group_version
                .map_or("- (a lane has applied no watermark yet)".into(), |v| v
                    .to_string())
        );
    }
    s
}

/// Ask every enabled sink to re-snapshot `table` (`schema.Table` or `Table` in a group's schema).
pub async fn resnapshot(config: &ConnectorConfig, table: &str) -> anyhow::Result<TableId> {
    let id = config
        .tables()
        .into_iter()
        .find(|t| t.to_string().eq_ignore_ascii_case(table) || t.name.eq_ignore_ascii_case(table))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{table} is not a table of connector {} ({})",
                config.name,
                config.file.display()
            )
        })?;
    for (sink, url, _) in sinks(config) {
        let client = crate::sink::pg::connect(sink, url).await?;
        checkpoint::install(&client).await?;
        checkpoint::request_resnapshot(&client, &config.name, &id).await?;
    }
    Ok(id)
}

/// Where `models check` finds the model files: `--models-dir`, else the Redshift sink's
/// `models` directory, else `models/` next to the connector file.
pub fn models_dir(config: &ConnectorConfig, flag: Option<&std::path::Path>) -> std::path::PathBuf {
    let base = config.file.parent().unwrap_or(std::path::Path::new("."));
    match flag {
        Some(dir) => dir.to_path_buf(),
        None => match config.sinks.redshift.as_ref().map(|r| r.models.as_str()) {
            Some(dir) if !dir.is_empty() => base.join(dir),
            _ => base.join("models"),
        },
    }
}

/// `models check`: load the models of the enabled groups and compare each with the target
/// (`target_url`, else the Redshift sink's URL). One line per model, or per problem. Changes
/// nothing.
pub async fn models_check(
    config: &ConnectorConfig,
    dir: &std::path::Path,
    target_url: Option<&str>,
) -> Vec<CheckLine> {
    let models = match crate::models::Models::load_for_connector(dir, config) {
        Ok(m) => m,
        Err(e) => return e.0.iter().map(|p| line(false, p.to_string())).collect(),
    };
    let url = target_url.or_else(|| {
        config
            .sinks
            .redshift
            .as_ref()
            .map(|r| r.url.expose())
            .filter(|u| !u.is_empty())
    });
    let Some(url) = url else {
        return vec![line(
            false,
            "target: no URL: pass --target-url, set REDSHIFT_DATABASE_URL or configure [sinks.redshift] url",
        )];
    };
    let client = match crate::sink::pg::connect("models", url).await {
        Err(e) => return vec![line(false, format!("target: connect: {e}"))],
        Ok(client) => client,
    };
    let mut out = vec![line(
        true,
        format!(
            "models: {} loaded from {}",
            models.models().len(),
            dir.display()
        ),
    )];
    for m in models.models() {
        let problems = models.check_model(m, &client).await;
        if problems.is_empty() {
            out.push(line(
                true,
                format!(
                    "model {}: {} columns, key ({}), inputs {}",
                    m.name,
                    m.columns.len(),
                    m.key.join(", "),
                    m.inputs.join(", ")
                ),
            ));
        }
        out.extend(problems.into_iter().map(|p| line(false, p)));
        for c in &m.custom {
            out.push(match crate::models::table_exists(&client, &c.name).await {
                Ok(true) => line(true, format!("model {}: custom input {} present", m.name, c.name)),
                Ok(false) => line(
                    true,
                    format!(
                        "model {}: custom input {} is not in the target: the model uses its ODS values until it arrives (connectors/staging-custom.toml carries the staging database's custom datasets)",
                        m.name, c.name
                    ),
                ),
                Err(e) => line(false, format!("model {}: custom input {}: {e}", m.name, c.name)),
            });
        }
    }
    out
}
