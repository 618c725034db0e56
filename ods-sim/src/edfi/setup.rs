//! Database setup: create the backing database, install Change Tracking, create the tables, load
//! the sample data with COPY (before tracking is enabled), then enable tracking.

use super::generate::{self, RowWriter};
use super::plan::Plan;
use super::tables::{self, SCHEMA};
use crate::ct;
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// Number of students (about 500 per school).
    pub students: u64,
    /// Seed of the deterministic generator.
    pub seed: u64,
    /// Tables loaded at once (one connection each).
    pub parallelism: usize,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            students: 5_000,
            seed: 42,
            parallelism: 3,
        }
    }
}

/// What `setup` did.
#[derive(Debug, Clone)]
pub struct SetupOutcome {
    /// True when the database was created (and loaded) now, false when an existing complete
    /// database was reused as it was.
    pub created: bool,
    /// Rows per table (`edfi` table name → count).
    pub row_counts: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl SetupOutcome {
    pub fn total_rows(&self) -> u64 {
        self.row_counts.values().sum()
    }
}

/// The URL of database `database` on the server of `server_url` (a `postgres://` URL or a
/// `key=value` connection string; the database part is replaced).
pub fn database_url(server_url: &str, database: &str) -> String {
    let trimmed = server_url.trim();
    if let Some(scheme_end) = trimmed.find("://") {
        let (head, query) = match trimmed.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (trimmed, None),
        };
        let after = &head[scheme_end + 3..];
        let base = match after.find('/') {
            Some(slash) => &head[..scheme_end + 3 + slash],
            None => head,
        };
        let mut url = format!("{base}/{}", percent_encode(database));
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        url
    } else {
        let kept: Vec<&str> = trimmed
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect();
        let quoted = database.replace('\\', "\\\\").replace('\'', "\\'");
        format!("{} dbname='{quoted}'", kept.join(" "))
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Connects and drives the connection on a task of its own.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Whether the database's `sim.meta` says setup completed, by a version that declares the
/// identity columns.
async fn setup_complete(client: &Client) -> anyhow::Result<bool> {
    let has_meta: bool = client
        .query_one("SELECT to_regclass('sim.meta') IS NOT NULL", &[])
        .await?
        .get(0);
    if !has_meta {
        return Ok(false);
    }
    let row = client
        .query_opt(
            "SELECT value FROM sim.meta WHERE key = 'setup_complete'",
            &[],
        )
        .await?;
    let identity: bool = client
        .query_one(
            r#"SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('"edfi"."Student"')
                 AND attname = 'StudentUSI' AND attidentity <> '')"#,
            &[],
        )
        .await?
        .get(0);
    Ok(identity && row.is_some_and(|r| r.get::<_, String>(0) == "true"))
}

/// Move each identity column's sequence past the largest value loaded, as SQL Server's identity
/// seed follows explicit inserts.
async fn reseed_identities(client: &Client) -> anyhow::Result<()> {
    for def in tables::tables() {
        let Some(col) = def.columns.iter().find(|c| c.identity) else {
            continue;
        };
        let table = format!("{}.{}", ident(&def.schema), ident(&def.name));
        client
            .execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence($1, $2), coalesce(max({c}), 0) + 1, false) FROM {table}",
                    c = ident(&col.name)
                ),
                &[&table, &col.name],
            )
            .await
            .with_context(|| format!("reseeding {table}.{}", col.name))?;
    }
    Ok(())
}

/// Creates (or reuses) database `database` on the PostgreSQL server of `server_url` with the
/// Ed-Fi tables, the sample data and Change Tracking enabled (retention 2 days, auto cleanup).
///
/// A database whose `sim.meta` says `setup_complete` is reused as it is, data and change history
/// included; one that exists without it (an interrupted setup) is dropped and created anew.
pub async fn setup(
    server_url: &str,
    database: &str,
    opts: &SetupOptions,
) -> anyhow::Result<SetupOutcome> {
    let started = Instant::now();
    let url = database_url(server_url, database);
    let admin = connect(server_url).await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    if exists {
        let client = connect(&url).await?;
        if setup_complete(&client).await? {
            let row_counts = count_rows(&client).await?;
            tracing::info!(database, "reusing the existing ODS database");
            return Ok(SetupOutcome {
                created: false,
                row_counts,
                elapsed: started.elapsed(),
            });
        }
        drop(client);
        tracing::info!(
            database,
            "dropping an ODS database whose setup did not complete or that an earlier simulator \
             version made (no identity columns)"
        );
        admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", ident(database)))
            .await?;
    }
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'",
            ident(database)
        ))
        .await
        .with_context(|| format!("creating database {database}"))?;

    let client = connect(&url).await?;
    let phase = Instant::now();
    ct::install(&client, database).await?;
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(SCHEMA)))
        .await?;
    for def in tables::tables() {
        ct::create_table(&client, &def).await?;
    }
    tracing::info!(
        database,
        secs = phase.elapsed().as_secs_f64(),
        "tables created"
    );
    let row_counts = load(&url, opts).await?;
    reseed_identities(&client).await?;
    let phase = Instant::now();
    index(&client).await?;
    tracing::info!(
        database,
        secs = phase.elapsed().as_secs_f64(),
        "indexed and analyzed"
    );
    let phase = Instant::now();
    ct::enable_database(&client, 2, 3, true).await?;
    for def in tables::tables() {
        ct::enable_table(&client, &def.schema, &def.name, true).await?;
    }
    tracing::info!(
        database,
        secs = phase.elapsed().as_secs_f64(),
        "change tracking enabled"
    );
    client
        .execute(
            "INSERT INTO sim.meta (key, value) VALUES
                 ('edfi_seed', $1), ('edfi_students', $2), ('setup_complete', 'true')
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&opts.seed.to_string(), &opts.students.to_string()],
        )
        .await?;
    tracing::info!(
        database,
        rows = row_counts.values().sum::<u64>(),
        secs = started.elapsed().as_secs_f64(),
        "ODS database ready"
    );
    Ok(SetupOutcome {
        created: true,
        row_counts,
        elapsed: started.elapsed(),
    })
}

/// Creates database `database` on the PostgreSQL server of `server_url` as the Ed-Fi ODS/API
/// lays out its PostgreSQL edition — the 37 tables with lower-case table and column names, no
/// Change Tracking, no simulator bookkeeping — and loads the same sample data as [`setup`].
/// An existing database of that name is an error.
pub async fn load_postgres(
    server_url: &str,
    database: &str,
    opts: &SetupOptions,
) -> anyhow::Result<SetupOutcome> {
    let started = Instant::now();
    let url = database_url(server_url, database);
    connect(server_url)
        .await?
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'",
            ident(database)
        ))
        .await
        .with_context(|| format!("creating database {database} (drop it first to load anew)"))?;
    let client = connect(&url).await?;
    client
        .batch_execute(&format!("CREATE SCHEMA {}", ident(SCHEMA)))
        .await?;
    for def in tables::tables() {
        let mut items: Vec<String> = def
            .columns
            .iter()
            .map(|c| {
                let null = if c.nullable { "" } else { " NOT NULL" };
                format!("{} {}{null}", ident(&c.name), c.ty.pg_type())
            })
            .collect();
        let keys: Vec<String> = def.primary_key.iter().map(|k| ident(k)).collect();
        items.push(format!("PRIMARY KEY ({})", keys.join(", ")));
        client
            .batch_execute(&format!(
                "CREATE TABLE {}.{} ({})",
                ident(SCHEMA),
                ident(&def.name),
                items.join(", ")
            ))
            .await?;
    }
    let row_counts = load(&url, opts).await?;
    index(&client).await?;
    // The loader and the indexes use the SQL Server spelling; the PostgreSQL ODS folds it.
    for def in tables::tables() {
        let mut renames: Vec<String> = def
            .columns
            .iter()
            .filter(|c| c.name != c.name.to_lowercase())
            .map(|c| {
                format!(
                    "ALTER TABLE {}.{} RENAME COLUMN {} TO {}",
                    ident(SCHEMA),
                    ident(&def.name),
                    ident(&c.name),
                    ident(&c.name.to_lowercase())
                )
            })
            .collect();
        renames.push(format!(
            "ALTER TABLE {}.{} RENAME TO {}",
            ident(SCHEMA),
            ident(&def.name),
            ident(&def.name.to_lowercase())
        ));
        client.batch_execute(&renames.join(";\n")).await?;
    }
    tracing::info!(
        database,
        rows = row_counts.values().sum::<u64>(),
        secs = started.elapsed().as_secs_f64(),
        "PostgreSQL ODS database ready"
    );
    Ok(SetupOutcome {
        created: true,
        row_counts,
        elapsed: started.elapsed(),
    })
}

/// Indexes that the workload's per-student look-ups need (the Ed-Fi ODS has the same ones on
/// its foreign keys), the ODS's unique index on `StudentUniqueId`, then fresh planner
/// statistics.
async fn index(client: &Client) -> anyhow::Result<()> {
    for t in [
        "StudentSchoolAssociation",
        "StudentSectionAssociation",
        "StudentEducationOrganizationAssociationElectronicMail",
        "StudentEducationOrganizationAssociationRace",
        "StudentAssessment",
        "StudentAssessmentItem",
        "StudentAssessmentPerformanceLevel",
        "StudentAssessmentScoreResult",
    ] {
        client
            .batch_execute(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {}.{} (\"StudentUSI\")",
                ident(&format!("IX_{t}_USI")),
                ident(SCHEMA),
                ident(t)
            ))
            .await?;
    }
    // The ODS keeps StudentUniqueId unique (index Student_UI_StudentUniqueId): a workload that
    // reused one fails here as it would there, instead of handing two students one number.
    client
        .batch_execute(&format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {}.{} (\"StudentUniqueId\")",
            ident("Student_UI_StudentUniqueId"),
            ident(SCHEMA),
            ident("Student")
        ))
        .await?;
    client.batch_execute("ANALYZE").await?;
    Ok(())
}

/// Row counts of the 37 tables.
pub async fn count_rows(client: &Client) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for def in tables::tables() {
        let n: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.{}",
                    ident(SCHEMA),
                    ident(&def.name)
                ),
                &[],
            )
            .await?
            .get(0);
        out.insert(def.name, n as u64);
    }
    Ok(out)
}

/// Generates the sample data and loads it with COPY into the (existing, empty) tables of the
/// database at `database_url`. Returns the rows loaded per table.
pub async fn load(
    database_url: &str,
    opts: &SetupOptions,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let started = Instant::now();
    let plan = Arc::new(Plan::new(opts.seed, opts.students));
    let progress = Arc::new(AtomicU64::new(0));
    let mut names: Vec<String> = tables::tables().into_iter().map(|t| t.name).collect();
    // Biggest first, so the long COPYs overlap.
    names.sort_by_key(|n| (!generate::per_student(n), n.clone()));
    let ticker = {
        let progress = progress.clone();
        let students = opts.students;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!(
                    students,
                    rows = progress.load(Ordering::Relaxed),
                    secs = started.elapsed().as_secs(),
                    "loading sample data"
                );
            }
        })
    };
    let results: Vec<anyhow::Result<(String, u64)>> = futures_util::stream::iter(names)
        .map(|name| {
            let plan = plan.clone();
            let progress = progress.clone();
            async move {
                let rows = load_table(database_url, &name, plan, progress)
                    .await
                    .with_context(|| format!("loading edfi.{name}"))?;
                Ok((name, rows))
            }
        })
        .buffer_unordered(opts.parallelism.max(1))
        .collect()
        .await;
    ticker.abort();
    let counts = results
        .into_iter()
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    tracing::info!(
        rows = counts.values().sum::<u64>(),
        secs = started.elapsed().as_secs_f64(),
        "sample data loaded"
    );
    Ok(counts)
}

async fn load_table(
    url: &str,
    table: &str,
    plan: Arc<Plan>,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<u64> {
    let client = connect(url).await?;
    let columns = generate::columns(table);
    let list: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    let sink = client
        .copy_in(&format!(
            "COPY {}.{} ({}) FROM STDIN",
            ident(SCHEMA),
            ident(table),
            list.join(", ")
        ))
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let name = table.to_string();
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut flush = |chunk: Vec<u8>| -> anyhow::Result<()> {
            let rows = chunk.iter().filter(|b| **b == b'\n').count() as u64;
            progress.fetch_add(rows, Ordering::Relaxed);
            tx.blocking_send(chunk)
                .map_err(|_| anyhow::anyhow!("COPY into {name} stopped"))
        };
        let mut writer = RowWriter::new(columns.len(), &mut flush);
        generate::generate(&name, &plan, &mut writer)?;
        writer.finish()
    });
    futures_util::pin_mut!(sink);
    let mut sent = Ok(());
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = sink.send(bytes::Bytes::from(chunk)).await {
            sent = Err(e);
            break;
        }
    }
    drop(rx);
    let generated = producer.await??;
    sent?;
    let copied = sink.finish().await?;
    anyhow::ensure!(
        copied == generated,
        "COPY stored {copied} rows of {generated}"
    );
    Ok(copied)
}
