//! The operator commands besides `run`: `check`, `status`, `resnapshot`, `enable-ct`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_postgres::NoTls;

use crate::checkpoint::{self, Phase};
use crate::config::ConnectorConfig;
use crate::event::{TableId, Value};
use crate::sink::staging::target_table;
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
        }
    }
    if let Some(staging) = config.sinks.staging.as_ref().filter(|s| s.enabled) {
        match tokio_postgres::connect(staging.url.expose(), NoTls).await {
            Err(e) => out.push(line(
                false,
                format!(
                    "staging: connect: {}",
                    crate::sink::SinkError::from_pg("staging", &e)
                ),
            )),
            Ok((client, conn)) => {
                tokio::spawn(conn);
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
    out
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

/// Checkpoint and lag of every table of every sink.
pub async fn status(config: &ConnectorConfig) -> anyhow::Result<Vec<TableStatus>> {
    let mut conn = Connection::connect(&config.source).await.ok();
    let current = match conn.as_mut() {
        Some(c) => c.current_version().await.ok().flatten(),
        None => None,
    };
    let mut out = Vec::new();
    let Some(staging) = config.sinks.staging.as_ref().filter(|s| s.enabled) else {
        return Ok(out);
    };
    let (client, c) = tokio_postgres::connect(staging.url.expose(), NoTls).await?;
    tokio::spawn(c);
    let rows = client
        .query(
            "SELECT source_schema, source_table, phase, version, snapshot_rows, snapshot_total_rows, \
             extract(epoch FROM now() - snapshot_started_at)::float8 \
             FROM edfi_cdc.table_state WHERE connector = $1 AND sink = 'staging' ORDER BY 1, 2",
            &[&config.name],
        )
        .await
        .unwrap_or_default();
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
            (_, Some(_)) => Some(0.0),
            _ => None,
        };
        let (rows_done, total, elapsed) = r.map_or((None, None, None), |r| {
            (
                Some(r.get::<_, i64>(4) as u64),
                r.get::<_, Option<i64>>(5).map(|n| n as u64),
                r.get::<_, Option<f64>>(6),
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
            sink: "staging".into(),
            table: t.to_string(),
            target: target_table(staging, &t).to_string(),
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
    Ok(out)
}

pub fn render_status(rows: &[TableStatus], as_json: bool) -> String {
    if as_json {
        return serde_json::to_string_pretty(&json!({ "tables": rows })).expect("status is JSON");
    }
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
    let staging = config
        .sinks
        .staging
        .as_ref()
        .filter(|s| s.enabled)
        .ok_or_else(|| anyhow::anyhow!("no enabled sink"))?;
    let (client, c) = tokio_postgres::connect(staging.url.expose(), NoTls).await?;
    tokio::spawn(c);
    checkpoint::install(&client).await?;
    client
        .execute(
            "INSERT INTO edfi_cdc.resnapshot_requests (connector, source_schema, source_table) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&config.name, &id.schema, &id.name],
        )
        .await?;
    Ok(id)
}
