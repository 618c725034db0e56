//! The PostgreSQL source (logical decoding through `pgoutput`) against a private cluster with
//! `wal_level = logical`, into a staging database on the shared server: snapshots, streaming,
//! kill -9 in both, a source restart, unchanged TOASTed values, TRUNCATE, a dropped slot, and the
//! setups it refuses.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::kafka::Broker;
use support::pg_source::SourcePg;
use support::s3::Moto;
use support::*;
use tokio_postgres::Client;

const TABLES: [(&str, &str); 2] = [
    ("custom.schoolmanualattributes", "schoolid"),
    ("custom.assessmentscore", "studentid, assessmentid, attempt"),
];

const SCHEMA: &str = "
CREATE SCHEMA custom;
CREATE TABLE custom.schoolmanualattributes (
    schoolid int PRIMARY KEY, schoolname varchar(100) NOT NULL, charter boolean,
    opened date, budget numeric(12,2), notes text);
CREATE TABLE custom.assessmentscore (
    studentid bigint, assessmentid varchar(40), attempt int, score numeric(6,2),
    takenat timestamptz, payload text, PRIMARY KEY (studentid, assessmentid, attempt));
ALTER TABLE custom.assessmentscore ALTER COLUMN payload SET STORAGE EXTERNAL;
INSERT INTO custom.schoolmanualattributes
    SELECT s, 'School ' || s, s % 3 = 0, date '2001-08-01' + s, s * 1000.25, NULL
    FROM generate_series(1, 200) s;
INSERT INTO custom.assessmentscore
    SELECT st, 'MATH-' || a, 1, (st * a) % 100, timestamptz '2025-01-01' + (st || ' minutes')::interval,
           CASE WHEN st % 50 = 0 AND a = 1
                THEN (SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 200) g)
           END
    FROM generate_series(1, 10000) st, generate_series(1, 12) a;
";

/// A source database with the custom tables loaded, in a cluster of its own.
async fn source() -> (SourcePg, String, Client) {
    let pg = SourcePg::start(true);
    let url = pg.create_database("custom").await;
    let client = connect(&url).await;
    client.batch_execute(SCHEMA).await.unwrap();
    (pg, url, client)
}

/// A source with the custom tables (in a cluster of its own), a staging database, and the
/// connector between them (`extra` appended to its file).
struct Setup {
    pg: SourcePg,
    url: String,
    source: Client,
    staging_db: TestDb,
    staging: Client,
    c: Connector,
}

async fn setup(staging_prefix: &str, extra: &str) -> Setup {
    let (pg, url, source) = source().await;
    let staging_db = TestDb::create(staging_prefix).await;
    let staging = connect(&staging_db.url()).await;
    let c = connector(&url, &staging_db, extra);
    Setup {
        pg,
        url,
        source,
        staging_db,
        staging,
        c,
    }
}

fn connector(source_url: &str, staging: &TestDb, extra: &str) -> Connector {
    connector_with(source_url, staging, extra, Vec::new())
}

/// [`connector`] with more environment (a stream's credentials).
fn connector_with(
    source_url: &str,
    staging: &TestDb,
    extra: &str,
    env: Vec<(String, String)>,
) -> Connector {
    let text = format!(
        r#"name = "staging-custom"
shutdown_grace = "10s"
metrics_addr = "${{METRICS_ADDR}}"

[source]
kind = "postgres"
url = "${{SOURCE_DATABASE_URL}}"

[poll]
interval = "200ms"
snapshot_chunk_rows = 1000

[retry]
initial_delay = "100ms"
max_delay = "1s"
max_attempts = 30

[groups.custom]
schema = "custom"
tables = ["schoolmanualattributes", "assessmentscore"]

[sinks.staging]
url = "${{STAGING_DATABASE_URL}}"
identifiers = "lower"
{extra}"#
    );
    let mut all = vec![
        ("SOURCE_DATABASE_URL".into(), source_url.into()),
        ("STAGING_DATABASE_URL".into(), staging.url()),
        ("METRICS_ADDR".into(), "127.0.0.1:0".into()),
    ];
    all.extend(env);
    Connector::with_env(&text, all)
}

/// Writes to the source until stopped: inserts, updates (some only of rows with a TOASTed
/// value, leaving it unchanged), deletes, in small transactions; reconnects when the server
/// goes away.
fn workload(
    url: String,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    paced_workload(url, stop, ops, Duration::ZERO)
}

/// [`workload`] with `pause` after each transaction.
fn paced_workload(
    url: String,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            tokio::spawn(conn);
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let st = (n * 7919) % 10000 + 1;
                let sql = format!(
                    "BEGIN;
                     INSERT INTO custom.assessmentscore VALUES ({new}, 'ELA-{n}', 1, {score}, now(), NULL);
                     UPDATE custom.assessmentscore SET score = score + 1 WHERE studentid = {st} AND attempt = 1;
                     UPDATE custom.assessmentscore SET attempt = attempt + 100 WHERE studentid = {st} AND assessmentid = 'MATH-2' AND attempt < 1000;
                     DELETE FROM custom.assessmentscore WHERE studentid = {del} AND assessmentid = 'MATH-3';
                     UPDATE custom.schoolmanualattributes SET schoolname = 'School {n}', notes = 'n{n}' WHERE schoolid = {school};
                     COMMIT;",
                    new = 100_000 + n,
                    score = n % 100,
                    del = (n * 104_729) % 10000 + 1,
                    school = n % 200 + 1,
                );
                if client.batch_execute(&sql).await.is_err() {
                    break;
                }
                ops.fetch_add(1, Ordering::SeqCst);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    })
}

async fn flush_position(source: &Client) -> i64 {
    let lsn: String = source
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let (hi, lo) = lsn.split_once('/').unwrap();
    ((u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()) as i64
}

/// Wait until every table streams at (or past) what the source has flushed now.
async fn wait_caught_up(source: &Client, staging: &Client, deadline: Duration) {
    wait_tables_caught_up(source, staging, TABLES.len() as i64, deadline).await
}

/// [`wait_caught_up`] for a connector of `tables` tables.
async fn wait_tables_caught_up(source: &Client, staging: &Client, tables: i64, deadline: Duration) {
    let target = flush_position(source).await - 1;
    wait_for(
        &format!("staging at WAL position {target}"),
        deadline,
        || async {
            let row = staging
            .query_opt(
                "SELECT count(*) FILTER (WHERE phase = 'streaming' AND version >= $1), count(*) \
                 FROM edfi_cdc.table_state WHERE connector = 'staging-custom'",
                &[&target],
            )
            .await
            .ok()
            .flatten()?;
            let (done, all): (i64, i64) = (row.get(0), row.get(1));
            (done == tables && all == tables).then_some(())
        },
    )
    .await
}

/// The columns of `table` at the source, in order.
async fn columns(source: &Client, table: &str) -> Vec<String> {
    source
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema || '.' || table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The rows of `table` as text, in `key` order: the source's columns (staging keeps columns
/// the source dropped).
async fn rows(
    client: &Client,
    table: &str,
    key: &str,
    columns: &[String],
) -> Vec<Vec<Option<String>>> {
    let cols: Vec<String> = columns.iter().map(|c| format!("{c}::text")).collect();
    client
        .query(
            &format!("SELECT {} FROM {table} ORDER BY {key}", cols.join(", ")),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (0..cols.len()).map(|i| r.get(i)).collect())
        .collect()
}

/// Every table equal at the source and in staging.
async fn assert_equal(source: &Client, staging: &Client) {
    source.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    staging.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    for (table, key) in TABLES {
        let cols = columns(source, table).await;
        let (a, b) = (
            rows(source, table, key, &cols).await,
            rows(staging, table, key, &cols).await,
        );
        if a != b {
            let missing = a
                .iter()
                .filter(|r| !b.contains(r))
                .take(3)
                .collect::<Vec<_>>();
            let extra = b
                .iter()
                .filter(|r| !a.contains(r))
                .take(3)
                .collect::<Vec<_>>();
            panic!(
                "{table}: source {} rows, staging {} rows; e.g. only at the source {missing:?}, only in staging {extra:?}",
                a.len(),
                b.len()
            );
        }
    }
}

/// The slot never confirmed past what the staging sink committed.
async fn assert_slot_behind_sink(source: &Client, staging: &Client) {
    assert_slot_behind(source, staging, "staging").await
}

/// The slot never confirmed past what checkpoint `sink` holds (`poller`: with a stream, what
/// the stream acknowledged).
async fn assert_slot_behind(source: &Client, staging: &Client, sink: &str) {
    let confirmed: String = source
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'edfi_cdc_staging_custom'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (hi, lo) = confirmed.split_once('/').unwrap();
    let confirmed = ((u64::from_str_radix(hi, 16).unwrap() << 32)
        | u64::from_str_radix(lo, 16).unwrap()) as i64;
    let committed: i64 = staging
        .query_one(
            "SELECT min(version) FROM edfi_cdc.table_state WHERE connector = 'staging-custom' AND sink = $1",
            &[&sink],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        confirmed <= committed + 1,
        "slot confirmed {confirmed}, past the {sink} checkpoint {committed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_source_loses_nothing_when_killed_in_snapshot_and_streaming_or_restarted() {
    let Setup {
        pg,
        url,
        source,
        staging_db: _staging_db,
        staging,
        c,
    } = setup("pgsrc_staging", "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let load = workload(url.clone(), stop.clone(), ops.clone());

    // Killed while the first snapshots are read.
    let rep = c.run();
    kill_mid_snapshot(rep, &staging).await;

    // Killed while streaming, after a few committed cycles.
    let rep = c.run();
    wait_for("both tables streaming", Duration::from_secs(120), || async {
        let n: i64 = staging
            .query_one("SELECT count(*) FROM edfi_cdc.table_state WHERE connector = 'staging-custom' AND phase = 'streaming'", &[])
            .await
            .ok()?
            .get(0);
        (n == 2).then_some(())
    })
    .await;
    let before = ops.load(Ordering::SeqCst);
    wait_for(
        "more source transactions",
        Duration::from_secs(60),
        || async { (ops.load(Ordering::SeqCst) > before + 50).then_some(()) },
    )
    .await;
    assert_slot_behind_sink(&source, &staging).await;
    rep.kill();

    // The source restarts under the running replicator and the workload.
    let rep = c.run();
    wait_for(
        "the replicator connected",
        Duration::from_secs(60),
        || async { rep.log().contains("connected to source").then_some(()) },
    )
    .await;
    let before = ops.load(Ordering::SeqCst);
    wait_for(
        "more source transactions",
        Duration::from_secs(60),
        || async { (ops.load(Ordering::SeqCst) > before + 50).then_some(()) },
    )
    .await;
    pg.restart();
    pg.wait_ready(Duration::from_secs(60)).await;
    let source = connect(&url).await;
    let before = ops.load(Ordering::SeqCst);
    wait_for(
        "the workload back after the restart",
        Duration::from_secs(60),
        || async { (ops.load(Ordering::SeqCst) > before + 50).then_some(()) },
    )
    .await;
    wait_for(
        "the replicator back after the restart",
        Duration::from_secs(60),
        || async { (rep.log().matches("connected to source").count() >= 2).then_some(()) },
    )
    .await;
    rep.kill();

    // Killed during a re-snapshot an operator asked for.
    c.resnapshot("custom.assessmentscore");
    let rep = c.run();
    kill_mid_snapshot(rep, &staging).await;
    let rep = c.run();
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();

    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    assert_equal(&source, &staging).await;
    assert_slot_behind_sink(&source, &staging).await;
    rep.kill();
}

/// The publishes of `table`'s snapshots the log reports.
fn publishes(rep: &Replicator, table: &str) -> usize {
    rep.log()
        .lines()
        .filter(|l| l.contains("snapshot published") && l.contains(&format!("table={table} ")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_at_a_postgres_source_reaches_staging_under_a_workload_without_a_restart() {
    let Setup {
        pg: _pg,
        url,
        source,
        staging_db: _staging_db,
        staging,
        c,
    } = setup("pgsrc_ddl", "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let load = workload(url.clone(), stop.clone(), ops.clone());
    let rep = c.run();
    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    const SCHOOLS: &str = "custom.schoolmanualattributes";
    const SCORES: &str = "custom.assessmentscore";
    let (schools, scores) = (publishes(&rep, SCHOOLS), publishes(&rep, SCORES));

    // Each change, with rows written in its new shape, reaches staging without a restart.
    let steps = [
        (SCHOOLS, "ALTER TABLE custom.schoolmanualattributes ADD COLUMN district varchar(30); \
                   UPDATE custom.schoolmanualattributes SET district = 'D' || schoolid % 5"),
        (SCHOOLS, "ALTER TABLE custom.schoolmanualattributes ALTER COLUMN schoolname TYPE varchar(200); \
                   UPDATE custom.schoolmanualattributes SET schoolname = repeat('n', 150) WHERE schoolid % 7 = 0"),
        (SCHOOLS, "ALTER TABLE custom.schoolmanualattributes DROP COLUMN district"),
        (SCORES, "ALTER TABLE custom.assessmentscore DROP CONSTRAINT assessmentscore_pkey, \
                  ADD PRIMARY KEY (studentid, assessmentid)"),
    ];
    let mut published = [(SCHOOLS, schools), (SCORES, scores)];
    for (table, ddl) in steps {
        source.batch_execute(ddl).await.unwrap();
        let p = published.iter_mut().find(|(t, _)| *t == table).unwrap();
        p.1 += 1;
        let n = p.1;
        wait_for(
            &format!("publish {n} of {table}"),
            Duration::from_secs(120),
            || async { (publishes(&rep, table) >= n).then_some(()) },
        )
        .await;
        let before = ops.load(Ordering::SeqCst);
        wait_for(
            "more source transactions",
            Duration::from_secs(60),
            || async { (ops.load(Ordering::SeqCst) > before + 20).then_some(()) },
        )
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    assert_equal(&source, &staging).await;
    assert_eq!(
        primary_key_columns(&staging, SCORES).await,
        ["studentid", "assessmentid"]
    );
    let width: i32 = staging
        .query_one(
            "SELECT character_maximum_length FROM information_schema.columns \
             WHERE table_schema = 'custom' AND table_name = 'schoolmanualattributes' \
             AND column_name = 'schoolname'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(width, 200);
    let log = rep.log();
    for said in [
        "added district nvarchar(30)",
        "schoolname nvarchar(100) not null → nvarchar(200) not null",
        "dropped district",
        "key (studentid, assessmentid, attempt) → (studentid, assessmentid)",
        "the target takes the source's new primary key with the re-snapshot",
    ] {
        assert!(log.contains(said), "`{said}` not logged:\n{log}");
    }
    assert_eq!(
        log.matches("the table changed at the source: re-snapshotting it in its new shape")
            .count(),
        4,
        "one re-snapshot per change:\n{log}"
    );
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    for (table, n) in [(SCHOOLS, 3), (SCORES, 1)] {
        assert!(
            metrics.contains(&format!(
                "edfi_cdc_schema_changes_total{{connector=\"staging-custom\",noticed_by=\"poller\",table=\"{table}\"}} {n}"
            )),
            "{metrics}"
        );
    }
    assert_slot_behind_sink(&source, &staging).await;
    rep.kill();
}

/// DDL at the source, then kill -9 while the re-snapshots it causes run: started again, the
/// tables arrive in their new shapes with every row, under a workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicator_killed_after_ddl_at_a_postgres_source_takes_the_new_shape_when_started() {
    let Setup {
        pg: _pg,
        url,
        source,
        staging_db: _staging_db,
        staging,
        c,
    } = setup("pgsrc_ddlkill", "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let load = workload(url.clone(), stop.clone(), ops.clone());
    let rep = c.run();
    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    for (n, ddl) in [
        "ALTER TABLE custom.schoolmanualattributes ADD COLUMN district varchar(30); \
         UPDATE custom.schoolmanualattributes SET district = 'D' || schoolid % 5",
        "ALTER TABLE custom.assessmentscore DROP CONSTRAINT assessmentscore_pkey, \
         ADD PRIMARY KEY (studentid, assessmentid)",
    ]
    .into_iter()
    .enumerate()
    {
        source.batch_execute(ddl).await.unwrap();
        let before = ops.load(Ordering::SeqCst);
        wait_for(
            "source transactions after the DDL",
            Duration::from_secs(60),
            || async { (ops.load(Ordering::SeqCst) > before + 20).then_some(()) },
        )
        .await;
        // Killed once the key change is noticed and its re-snapshot requested (the column's
        // re-snapshot, requested just before, may be done or not).
        if n == 1 {
            wait_for(
                "the re-snapshot started",
                Duration::from_secs(60),
                || async {
                    rep.log()
                        .contains(
                            "key (studentid, assessmentid, attempt) → (studentid, assessmentid)",
                        )
                        .then_some(())
                },
            )
            .await;
        }
    }
    rep.kill();
    let rep = c.run();
    let before = ops.load(Ordering::SeqCst);
    wait_for(
        "more source transactions",
        Duration::from_secs(60),
        || async { (ops.load(Ordering::SeqCst) > before + 50).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    wait_for(
        "the new key in staging",
        Duration::from_secs(120),
        || async {
            (primary_key_columns(&staging, "custom.assessmentscore").await
                == ["studentid", "assessmentid"])
            .then_some(())
        },
    )
    .await;
    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    assert_equal(&source, &staging).await;
    assert_slot_behind_sink(&source, &staging).await;
    rep.kill();
}

/// A table replicated with a `columns` list: a column added outside the list leaves it
/// streaming (no re-snapshot, its changes keep coming); a listed column widened re-snapshots it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_on_a_column_outside_a_tables_list_leaves_the_table_streaming() {
    let Setup {
        pg: _pg,
        source,
        staging_db: _staging_db,
        staging,
        c,
        ..
    } = setup(
        "pgsrc_listed",
        "[tables.\"custom.schoolmanualattributes\"]\ncolumns = [\"schoolid\", \"schoolname\"]\n",
    )
    .await;
    let rep = c.run();
    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    const SCHOOLS: &str = "custom.schoolmanualattributes";
    let before = publishes(&rep, SCHOOLS);
    let renamed = |name: &'static str, n: i64| {
        let staging = &staging;
        async move {
            wait_for(&format!("{n} schools named {name}"), Duration::from_secs(60), || async {
                let found: i64 = staging
                    .query_one(
                        "SELECT count(*) FROM custom.schoolmanualattributes WHERE schoolname LIKE $1",
                        &[&format!("{name}%")],
                    )
                    .await
                    .ok()?
                    .get(0);
                (found == n).then_some(())
            })
            .await
        }
    };

    // A change first: the poller has seen the table described before the DDL.
    source
        .batch_execute(
            "UPDATE custom.schoolmanualattributes SET schoolname = 'Before ' || schoolid \
             WHERE schoolid <= 10",
        )
        .await
        .unwrap();
    renamed("Before", 10).await;
    source
        .batch_execute(
            "ALTER TABLE custom.schoolmanualattributes ADD COLUMN district varchar(30);
             UPDATE custom.schoolmanualattributes SET district = 'East', schoolname = 'After ' || schoolid
             WHERE schoolid <= 10;",
        )
        .await
        .unwrap();
    renamed("After", 10).await;
    assert_eq!(
        publishes(&rep, SCHOOLS),
        before,
        "a column outside the list re-snapshotted the table:\n{}",
        rep.log()
    );

    source
        .batch_execute(
            "ALTER TABLE custom.schoolmanualattributes ALTER COLUMN schoolname TYPE varchar(200);
             UPDATE custom.schoolmanualattributes SET schoolname = 'Wide' || repeat('w', 150)
             WHERE schoolid <= 3;",
        )
        .await
        .unwrap();
    renamed("Wide", 3).await;
    assert_eq!(publishes(&rep, SCHOOLS), before + 1);
    let log = rep.log();
    assert!(
        log.contains("schoolname nvarchar(100) not null → nvarchar(200) not null"),
        "{log}"
    );
    assert!(!log.contains("district"), "{log}");
    rep.kill();
}

/// `edfi-cdc status` of a PostgreSQL-source connector: every table and its phase, exit 0; with
/// the source unreachable it says so and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_a_postgres_source_and_says_when_it_cannot() {
    let Setup {
        pg: _pg,
        url: _,
        source,
        staging_db,
        staging,
        c,
    } = setup("pgsrc_status", "").await;
    let rep = c.run();
    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    rep.kill();
    let out = c.command(&["status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables = status["tables"].as_array().unwrap();
    assert_eq!(tables.len(), TABLES.len(), "{status}");
    for t in tables {
        assert_eq!(t["phase"], "streaming", "{t}");
    }

    let gone = connector(
        &format!("postgres://postgres@127.0.0.1:{}/custom", free_port()),
        &staging_db,
        "",
    );
    let out = gone.command(&["status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot read the PostgreSQL source's WAL position"),
        "{stderr}"
    );
}

/// A custom table of the types without a staging column of their own, or whose text forms
/// differ between the engines' defaults: `char(n)`, `jsonb`, `bytea`, `uuid`, `time`,
/// `timestamp`, an array, `float8` (not compared by verify).
const TYPED: &str = "
CREATE TABLE custom.typed (
    id int PRIMARY KEY, code char(6), doc jsonb, blob bytea, guid uuid, at time(3),
    stamp timestamp, tags text[], ratio float8);
INSERT INTO custom.typed
    SELECT i, CASE WHEN i % 7 <> 0 THEN 'c' || (i % 100) END,
           CASE WHEN i % 5 <> 0 THEN jsonb_build_object('i', i, 'pipe', 'a|b\\c') END,
           CASE WHEN i % 3 <> 0 THEN decode(md5(i::text), 'hex') END,
           md5(i::text)::uuid, time '08:00' + i * interval '1.5 s',
           timestamp '2025-08-01 07:30:00.123456' + i * interval '1 day',
           ARRAY['t' || i, 'x y'], i / 7.0
    FROM generate_series(1, 600) i;
";

/// `edfi-cdc verify` of a PostgreSQL-source connector: equal after the load, every type
/// included; rows broken by hand in staging (deleted, a value changed, an extra row) found
/// exactly while a workload writes to the source; `--repair` re-snapshots the tables that
/// differ, and they are equal again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_compares_a_postgres_source_and_repair_resnapshots_what_differs() {
    let Setup {
        pg: _pg,
        url,
        source,
        staging_db: _staging_db,
        staging,
        c,
    } = setup("pgsrc_verify", "").await;
    source.batch_execute(TYPED).await.unwrap();
    // A score of a student the workload never writes (it writes students up to 10,000 and
    // inserts from 100,000 on).
    source
        .batch_execute(
            "INSERT INTO custom.assessmentscore VALUES (50000, 'VERIFY', 1, 10, now(), NULL)",
        )
        .await
        .unwrap();
    c.edit(
        r#"tables = ["schoolmanualattributes", "assessmentscore"]"#,
        r#"tables = ["schoolmanualattributes", "assessmentscore", "typed"]"#,
    );
    let rep = c.run();
    wait_tables_caught_up(&source, &staging, 3, Duration::from_secs(120)).await;
    let (code, reports) = verify(&c, &[]);
    assert_eq!(code, 0, "{reports:#?}");
    assert_eq!(reports.len(), 3, "{reports:#?}");
    for r in &reports {
        assert!(r["skipped"].is_null(), "{r:#}");
        assert_eq!(r["source_rows"], r["target_rows"], "{r:#}");
        assert!(r["source_rows"].as_u64().unwrap() >= 200, "{r:#}");
    }

    // Rows the workload never writes, broken by hand in staging.
    staging
        .batch_execute(
            "DELETE FROM custom.assessmentscore WHERE studentid = 50000;
             UPDATE custom.typed SET doc = '{\"i\": 0}' WHERE id = 42;
             UPDATE custom.typed SET stamp = stamp + interval '1 microsecond' WHERE id = 43;
             INSERT INTO custom.typed (id, code) VALUES (100000, 'extra');",
        )
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let load = paced_workload(
        url.clone(),
        stop.clone(),
        ops.clone(),
        Duration::from_millis(20),
    );
    wait_for("the workload to write", Duration::from_secs(30), || async {
        (ops.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    let (code, reports) = verify(&c, &[]);
    assert_eq!(code, 3, "{reports:#?}");
    let scores = report(&reports, "custom.assessmentscore");
    assert_eq!(
        keys(scores, "missing_keys"),
        ["+50000|+VERIFY|+1"],
        "{scores:#}"
    );
    assert_eq!(
        (scores["extra"].as_u64(), scores["different"].as_u64()),
        (Some(0), Some(0)),
        "{scores:#}"
    );
    let typed = report(&reports, "custom.typed");
    assert_eq!(keys(typed, "different_keys"), ["+42", "+43"], "{typed:#}");
    assert_eq!(keys(typed, "extra_keys"), ["+100000"], "{typed:#}");
    assert_eq!(typed["missing"].as_u64(), Some(0), "{typed:#}");
    let schools = report(&reports, "custom.schoolmanualattributes");
    assert_eq!(
        (
            schools["missing"].as_u64(),
            schools["extra"].as_u64(),
            schools["different"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{schools:#}"
    );

    // Repaired by re-snapshots requested while the workload writes; equal once they are done.
    let (code, reports) = verify(&c, &["--repair"]);
    assert_eq!(code, 3, "the re-snapshots are still to come: {reports:#?}");
    for table in ["custom.assessmentscore", "custom.typed"] {
        let r = report(&reports, table);
        assert!(
            r["repair"].as_str().unwrap().contains("re-snapshot"),
            "{r:#}"
        );
    }
    wait_for(
        "verify to find staging equal again",
        Duration::from_secs(180),
        || async { (verify(&c, &[]).0 == 0).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    wait_tables_caught_up(&source, &staging, 3, Duration::from_secs(120)).await;
    assert_equal(&source, &staging).await;
    let cols = columns(&source, "custom.typed").await;
    assert_eq!(
        rows(&source, "custom.typed", "id", &cols).await,
        rows(&staging, "custom.typed", "id", &cols).await
    );
    rep.kill();
}

/// A value edfi-cdc cannot carry (a date of `infinity`) stops the replicator with the table,
/// the column, the value and what to do, and nothing of the table is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_it_cannot_carry_stops_the_replicator_naming_table_column_value_and_fix() {
    let Setup {
        pg: _pg,
        source,
        staging_db: _staging_db,
        staging,
        c,
        ..
    } = setup("pgsrc_infinity", "").await;
    source
        .batch_execute(
            "UPDATE custom.schoolmanualattributes SET opened = 'infinity' WHERE schoolid = 7",
        )
        .await
        .unwrap();
    let mut rep = c.run();
    let status = rep.wait(Duration::from_secs(120));
    assert!(!status.success(), "{}", rep.log());
    assert!(
        rep.log().contains(
            "table custom.schoolmanualattributes column opened: cannot read the date value \"infinity\" \
             (edfi-cdc carries no infinity and no date before year 1); change it at the source, or leave \
             the column out of `[tables.\"custom.schoolmanualattributes\"] columns`"
        ),
        "{}",
        rep.log()
    );
    let published: i64 = staging
        .query_one(
            "SELECT count(*) FROM edfi_cdc.table_state WHERE source_table = 'schoolmanualattributes' \
             AND phase = 'streaming'",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(published, 0);
}

/// Kill `rep` once the staging sink holds part of a snapshot of custom.assessmentscore.
async fn kill_mid_snapshot(rep: Replicator, staging: &Client) {
    wait_for(
        "a snapshot partly loaded",
        Duration::from_secs(60),
        || async {
            let rows: i64 = staging
            .query_opt(
                "SELECT snapshot_rows FROM edfi_cdc.table_state WHERE connector = 'staging-custom' \
                 AND source_table = 'assessmentscore' AND phase = 'snapshot'",
                &[],
            )
            .await
            .ok()
            .flatten()?
            .get(0);
            (rows > 0).then_some(())
        },
    )
    .await;
    rep.kill();
    let phase: String = staging
        .query_one(
            "SELECT phase FROM edfi_cdc.table_state WHERE connector = 'staging-custom' AND source_table = 'assessmentscore'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(phase, "snapshot", "killed mid-snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toasted_values_truncate_and_a_dropped_slot_keep_staging_exact() {
    let Setup {
        pg: _pg,
        url: _,
        source,
        staging_db: _staging_db,
        staging,
        c,
    } = setup("pgsrc_staging", "").await;
    let rep = c.run();
    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    assert_equal(&source, &staging).await;

    // Updates that leave the TOASTed payload out of the decoded row.
    source
        .batch_execute(
            "UPDATE custom.assessmentscore SET score = score + 1 WHERE payload IS NOT NULL",
        )
        .await
        .unwrap();
    wait_caught_up(&source, &staging, Duration::from_secs(60)).await;
    let kept: i64 = staging
        .query_one(
            "SELECT count(*) FROM custom.assessmentscore WHERE length(payload) = 6400",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept, 200,
        "payloads kept in staging after updates that did not send them"
    );
    assert_equal(&source, &staging).await;

    // TRUNCATE, then new rows in the same transaction.
    source
        .batch_execute(
            "BEGIN; TRUNCATE custom.schoolmanualattributes;
             INSERT INTO custom.schoolmanualattributes VALUES (9001, 'New A', true, NULL, NULL, NULL),
               (9002, 'New B', false, NULL, NULL, NULL); COMMIT;",
        )
        .await
        .unwrap();
    wait_for(
        "the truncated table re-snapshotted",
        Duration::from_secs(60),
        || async {
            let n: i64 = staging
                .query_one("SELECT count(*) FROM custom.schoolmanualattributes", &[])
                .await
                .ok()?
                .get(0);
            (n == 2).then_some(())
        },
    )
    .await;
    wait_caught_up(&source, &staging, Duration::from_secs(60)).await;
    assert_equal(&source, &staging).await;
    assert!(
        rep.log().contains("table truncated at the source"),
        "{}",
        rep.log()
    );
    assert!(rep.terminate(Duration::from_secs(30)).success());

    // The slot is dropped while the replicator is stopped, and the source moves on.
    source
        .batch_execute(
            "SELECT pg_drop_replication_slot('edfi_cdc_staging_custom');
             DELETE FROM custom.assessmentscore WHERE attempt = 1 AND studentid <= 100;
             UPDATE custom.schoolmanualattributes SET schoolname = 'Renamed' WHERE schoolid = 9001;",
        )
        .await
        .unwrap();
    let rep = c.run();
    wait_for("the lost slot noticed", Duration::from_secs(60), || async {
        rep.log()
            .contains("no longer holds changes the sinks need")
            .then_some(())
    })
    .await;
    wait_for(
        "both tables re-snapshotted",
        Duration::from_secs(120),
        || async {
            rep.log()
                .matches("snapshot done")
                .count()
                .ge(&2)
                .then_some(())
        },
    )
    .await;
    wait_caught_up(&source, &staging, Duration::from_secs(60)).await;
    assert_equal(&source, &staging).await;
    let (_, metrics) = http_get(&rep.metrics_addr().await, "/metrics");
    assert!(
        metrics.contains("edfi_cdc_source_slot_resets_total{connector=\"staging-custom\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edfi_cdc_source_slot_retained_bytes{connector=\"staging-custom\"}"),
        "{metrics}"
    );
    assert!(rep.terminate(Duration::from_secs(30)).success());

    // A table taken out of the publication while the replicator is stopped, and changed: its
    // changes were never published, so it is re-snapshotted when it is added back.
    source
        .batch_execute(
            "ALTER PUBLICATION edfi_cdc_staging_custom DROP TABLE custom.schoolmanualattributes;
             UPDATE custom.schoolmanualattributes SET schoolname = 'Unpublished';",
        )
        .await
        .unwrap();
    let rep = c.run();
    wait_for(
        "the table back in the publication",
        Duration::from_secs(60),
        || async {
            rep.log()
                .contains("tables added to the publication")
                .then_some(())
        },
    )
    .await;
    wait_for(
        "the table re-snapshotted",
        Duration::from_secs(60),
        || async { rep.log().contains("snapshot done").then_some(()) },
    )
    .await;
    wait_caught_up(&source, &staging, Duration::from_secs(60)).await;
    assert_equal(&source, &staging).await;

    // A column added while running reaches staging without a restart, values and all.
    source
        .batch_execute(
            "ALTER TABLE custom.schoolmanualattributes ADD COLUMN district varchar(20);
             UPDATE custom.schoolmanualattributes SET district = 'North';",
        )
        .await
        .unwrap();
    let north = "SELECT count(*) FROM custom.schoolmanualattributes WHERE district = 'North'";
    let schools: i64 = source.query_one(north, &[]).await.unwrap().get(0);
    assert!(schools > 0);
    wait_for(
        "the added column in staging",
        Duration::from_secs(60),
        || async {
            let n: i64 = staging.query_one(north, &[]).await.ok()?.get(0);
            (n == schools).then_some(())
        },
    )
    .await;
    assert!(rep.log().contains("added district nvarchar(20)"));
    rep.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sources_it_cannot_decode_are_refused_with_the_fix_and_nothing_set_up() {
    let staging_db = TestDb::create("pgsrc_staging").await;

    // wal_level = replica.
    let plain = SourcePg::start(false);
    let url = plain.create_database("custom").await;
    connect(&url).await.batch_execute(SCHEMA).await.unwrap();
    let c = connector(&url, &staging_db, "");
    let out = c.command(&["check"]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("wal_level is `replica`"), "{text}");
    let mut rep = c.run();
    assert!(!rep.wait(Duration::from_secs(60)).success());
    assert!(
        rep.log().contains("wal_level is `replica`"),
        "{}",
        rep.log()
    );

    // A replica identity other than the primary key.
    let (pg, url, source) = source().await;
    source
        .batch_execute(
            "ALTER TABLE custom.assessmentscore REPLICA IDENTITY USING INDEX assessmentscore_pkey",
        )
        .await
        .unwrap();
    let by_index = connector(&url, &staging_db, "");
    let mut rep = by_index.run();
    assert!(!rep.wait(Duration::from_secs(60)).success());
    assert!(
        rep.log()
            .contains("table custom.assessmentscore has REPLICA IDENTITY USING INDEX")
            && rep.log().contains("REPLICA IDENTITY DEFAULT"),
        "{}",
        rep.log()
    );
    source
        .batch_execute("ALTER TABLE custom.assessmentscore REPLICA IDENTITY DEFAULT")
        .await
        .unwrap();

    // A table without a primary key, and a login without the replication privilege.
    source
        .batch_execute(
            "ALTER TABLE custom.schoolmanualattributes DROP CONSTRAINT schoolmanualattributes_pkey;
             CREATE ROLE reader LOGIN; GRANT USAGE ON SCHEMA custom TO reader;
             GRANT SELECT ON ALL TABLES IN SCHEMA custom TO reader;",
        )
        .await
        .unwrap();
    let keyless = connector(&url, &staging_db, "");
    let mut rep = keyless.run();
    assert!(!rep.wait(Duration::from_secs(60)).success());
    assert!(
        rep.log()
            .contains("table custom.schoolmanualattributes has no primary key"),
        "{}",
        rep.log()
    );
    let reader = url.replace("postgres://postgres@", "postgres://reader@");
    let unprivileged = connector(&reader, &staging_db, "");
    let mut rep = unprivileged.run();
    assert!(!rep.wait(Duration::from_secs(60)).success());
    assert!(
        rep.log().contains(
            "role `reader` may not read replication slots: ALTER ROLE \"reader\" REPLICATION"
        ),
        "{}",
        rep.log()
    );
    let slots: i64 = source
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .get(0);
    let publications: i64 = source
        .query_one("SELECT count(*) FROM pg_publication", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((slots, publications), (0, 0), "nothing half set up");

    // The connector's slot name taken by another database of the same server.
    source
        .batch_execute(
            "SELECT pg_create_logical_replication_slot('edfi_cdc_staging_custom', 'pgoutput')",
        )
        .await
        .unwrap();
    let other = pg.create_database("other").await;
    connect(&other).await.batch_execute(SCHEMA).await.unwrap();
    let elsewhere = connector(&other, &staging_db, "");
    let mut rep = elsewhere.run();
    assert!(!rep.wait(Duration::from_secs(60)).success());
    assert!(
        rep.log().contains(
            "replication slot `edfi_cdc_staging_custom` belongs to database custom, not other"
        ),
        "{}",
        rep.log()
    );
    let publications: i64 = connect(&other)
        .await
        .query_one("SELECT count(*) FROM pg_publication", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(publications, 0, "nothing set up in the other database");

    // The SQL a DBA runs.
    let out = unprivileged
        .command(&["enable-ct", "--print"])
        .output()
        .unwrap();
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        sql.contains("CREATE PUBLICATION \"edfi_cdc_staging_custom\" FOR TABLE")
            && sql.contains("\"custom\".\"assessmentscore\"")
            && sql.contains("ALTER ROLE \"reader\" REPLICATION")
            && sql.contains("GRANT SELECT ON \"custom\".\"schoolmanualattributes\" TO \"reader\""),
        "{sql}"
    );
    drop(pg);
}

/// Every reporting table of a Redshift stand-in, rows as text in a fixed order.
async fn reporting_tables(target: &Client) -> Vec<(String, Vec<Vec<Option<String>>>)> {
    let tables: Vec<String> = target
        .query(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables \
             WHERE table_schema NOT IN ('edfi', 'edfi_cdc', 'pg_catalog', 'information_schema') \
             AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let mut rows: Vec<Vec<Option<String>>> = target
            .query(&format!("SELECT t::text FROM {t} AS t"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| vec![r.get(0)])
            .collect();
        rows.sort();
        out.push((t, rows));
    }
    out
}

/// Every table of `connector` streams at or past `version` in the target's checkpoints.
async fn wait_streaming_at(target: &Client, connector: &str, tables: i64, version: i64) {
    wait_for(
        &format!("{connector}: {tables} tables at version {version}"),
        Duration::from_secs(180),
        || async {
            let row = target
                .query_opt(
                    "SELECT count(*) FILTER (WHERE phase = 'streaming' AND version >= $1) \
                     FROM edfi_cdc.table_state WHERE connector = $2",
                    &[&version, &connector],
                )
                .await
                .ok()
                .flatten()?;
            (row.get::<_, i64>(0) == tables).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ods_on_postgres_gives_the_same_reporting_tables_as_the_sql_server_ods() {
    const TABLES: i64 = 37;
    // The ODS on PostgreSQL, loaded by the simulator's generator.
    let pg = SourcePg::start(true);
    let status = std::process::Command::new(bin("ods-sim"))
        .args([
            "load-postgres",
            "--postgres",
            &pg.url("postgres"),
            "--database",
            "edfi_ods",
        ])
        .args(["--students", "20", "--seed", "42"])
        .status()
        .unwrap();
    assert!(status.success(), "ods-sim load-postgres");
    let pg_source = connect(&pg.url("edfi_ods")).await;
    let (pg_staging, pg_target) = (
        TestDb::create("pgods_staging").await,
        TestDb::create("pgods_rs").await,
    );
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/edfi-ods-postgres.toml"),
    )
    .unwrap()
    .replace(
        "interval = \"${POLL_INTERVAL:-1s}\"",
        "interval = \"200ms\"",
    );
    let redshift = |target: &TestDb| {
        vec![
            ("REDSHIFT_ENABLED".to_string(), "true".to_string()),
            ("REDSHIFT_LOAD_MODE".into(), "stdin".into()),
            ("REDSHIFT_DATABASE_URL".into(), target.url()),
            ("REDSHIFT_MAX_AGE".into(), "1s".into()),
        ]
    };
    let mut env = vec![
        ("SOURCE_DATABASE_URL".to_string(), pg.url("edfi_ods")),
        ("STAGING_DATABASE_URL".into(), pg_staging.url()),
        ("METRICS_ADDR".into(), "127.0.0.1:0".into()),
    ];
    env.extend(redshift(&pg_target));
    let pg_connector = Connector::with_env(&shipped, env);
    pg_connector.use_shipped_models();

    // The same data in the simulated SQL Server ODS, through Change Tracking.
    let sim = Simulator::start(20, 42);
    let (ct_staging, ct_target) = (
        TestDb::create("ctods_staging").await,
        TestDb::create("ctods_rs").await,
    );
    let mut ct_connector = Connector::new(&sim, &ct_staging, "");
    ct_connector.env.extend(redshift(&ct_target));
    ct_connector.use_shipped_models();

    let pg_rep = pg_connector.run();
    let ct_rep = ct_connector.run();
    let pg_target = connect(&pg_target.url()).await;
    let ct_target = connect(&ct_target.url()).await;
    let ct_version = source_version(&connect(&sim.backing_url()).await).await;
    wait_streaming_at(&ct_target, "edfi-ods", TABLES, ct_version).await;
    wait_streaming_at(
        &pg_target,
        "edfi-ods",
        TABLES,
        flush_position(&pg_source).await - 1,
    )
    .await;

    let (a, b) = (
        reporting_tables(&pg_target).await,
        reporting_tables(&ct_target).await,
    );
    assert_eq!(
        a.iter().map(|t| &t.0).collect::<Vec<_>>(),
        b.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "the same reporting tables"
    );
    assert!(a.len() >= 20, "{} reporting tables", a.len());
    for ((name, pg_rows), (_, ct_rows)) in a.iter().zip(&b) {
        assert!(
            !ct_rows.is_empty() || name.contains("stateassessments"),
            "{name} is empty"
        );
        assert_eq!(
            pg_rows, ct_rows,
            "{name} differs between the PostgreSQL and SQL Server ODS"
        );
    }
    pg_rep.kill();
    ct_rep.kill();
}

/// The custom datasets' tables in a staging database of `pg` (empty), with the columns the
/// seed's SQL reads of them: its URL and a client.
async fn custom_staging(pg: &SourcePg) -> (String, Client) {
    let url = pg.create_database("staging").await;
    let staging = connect(&url).await;
    staging
        .batch_execute(
            "CREATE SCHEMA schedule; CREATE SCHEMA studentdemographics; CREATE SCHEMA illuminate;
             CREATE SCHEMA stateassessments;
             CREATE TABLE schedule.SchoolManualAttributes (SchoolNumber varchar(20) PRIMARY KEY,
                 SchoolAbbreviation varchar(10), Level varchar(10), Region varchar(40), Active boolean);
             CREATE TABLE schedule.Calendar (CalendarID varchar(60) PRIMARY KEY, SchoolNumber varchar(20),
                 FirstDay date, LastDay date);
             CREATE TABLE studentdemographics.Student (StudentNumber varchar(32) PRIMARY KEY,
                 StateID varchar(32), Charter varchar(10), OriginalCharter varchar(10));
             CREATE TABLE illuminate.subjectmapping (Subject varchar(100) PRIMARY KEY, SubjectGroup varchar(100));
             CREATE TABLE stateassessments.assessment (AssessmentID int PRIMARY KEY, Title text);
             CREATE TABLE stateassessments.studentassessmentscore (StudentNumber varchar(32),
                 AssessmentID int, SchoolYear int, ScaleScore numeric(8,2),
                 PRIMARY KEY (StudentNumber, AssessmentID, SchoolYear));",
        )
        .await
        .unwrap();
    (url, staging)
}

/// The shipped `connectors/staging-custom.toml` from `source_url` into the Redshift stand-in
/// `target` (stdin load, 1-s flushes, fast polling).
fn custom_connector(source_url: &str, target: &TestDb) -> Connector {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/staging-custom.toml"),
    )
    .unwrap()
    .replace(
        "interval = \"${POLL_INTERVAL:-1s}\"",
        "interval = \"200ms\"",
    );
    Connector::with_env(
        &text,
        vec![
            ("SOURCE_DATABASE_URL".into(), source_url.into()),
            ("REDSHIFT_LOAD_MODE".into(), "stdin".into()),
            ("REDSHIFT_DATABASE_URL".into(), target.url()),
            ("REDSHIFT_MAX_AGE".into(), "1s".into()),
            ("METRICS_ADDR".into(), "127.0.0.1:0".into()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_custom_datasets_connector_carries_staging_tables_into_redshift() {
    let pg = SourcePg::start(true);
    let (url, staging) = custom_staging(&pg).await;
    staging
        .batch_execute(
            "INSERT INTO schedule.SchoolManualAttributes VALUES ('255901001', 'AFES', 'ES', 'CT', true);
             INSERT INTO schedule.Calendar VALUES ('255901001-2025', '255901001', '2024-08-26', '2025-06-17');
             INSERT INTO studentdemographics.Student
                 SELECT 'S' || n, 'ST' || n, CASE WHEN n % 2 = 0 THEN 'Charter A' END, NULL
                 FROM generate_series(1, 500) n;
             INSERT INTO illuminate.subjectmapping VALUES ('Math', 'STEM'), ('ELA', 'Humanities');
             INSERT INTO stateassessments.assessment VALUES (1, 'State Math 5'), (2, 'State ELA 5');
             INSERT INTO stateassessments.studentassessmentscore
                 SELECT 'S' || n, 1 + n % 2, 2023 + n % 3, 300 + n FROM generate_series(1, 500) n;",
        )
        .await
        .unwrap();
    let target_db = TestDb::create("custom_rs").await;
    let target = connect(&target_db.url()).await;
    let c = custom_connector(&url, &target_db);
    let rep = c.run();
    wait_streaming_at(
        &target,
        "staging-custom",
        6,
        flush_position(&staging).await - 1,
    )
    .await;
    // A change to a custom table reaches Redshift at the next flush.
    staging
        .batch_execute(
            "UPDATE schedule.SchoolManualAttributes SET Active = false;
             DELETE FROM studentdemographics.Student WHERE StudentNumber = 'S7';",
        )
        .await
        .unwrap();
    wait_streaming_at(
        &target,
        "staging-custom",
        6,
        flush_position(&staging).await - 1,
    )
    .await;
    for (source, target_table, key) in [
        (
            "schedule.schoolmanualattributes",
            "custom.schoolmanualattributes",
            "schoolnumber",
        ),
        ("schedule.calendar", "custom.calendar", "calendarid"),
        (
            "studentdemographics.student",
            "custom.student",
            "studentnumber",
        ),
        (
            "illuminate.subjectmapping",
            "custom.subjectmapping",
            "subject",
        ),
        (
            "stateassessments.assessment",
            "custom.assessment",
            "assessmentid",
        ),
        (
            "stateassessments.studentassessmentscore",
            "custom.studentassessmentscore",
            "studentnumber, assessmentid, schoolyear",
        ),
    ] {
        let cols = columns(&staging, source).await;
        let (a, b) = (
            rows(&staging, source, key, &cols).await,
            rows(&target, target_table, key, &cols).await,
        );
        assert!(!a.is_empty(), "{source} is empty");
        assert_eq!(a, b, "{source} → {target_table}");
    }
    rep.kill();
}

/// `models check` of `c`'s connector against `target`: its output.
fn models_check(c: &Connector, target: &TestDb) -> String {
    let out = c
        .command(&["models", "check", "--target-url", &target.url()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_datasets_from_staging_reach_the_reporting_tables_at_the_next_flush() {
    // The ODS (simulated SQL Server) into a Redshift stand-in with the shipped models.
    let sim = Simulator::start(20, 42);
    let ods = connect(&sim.backing_url()).await;
    let (unused_staging, target_db) = (
        TestDb::create("cust_staging").await,
        TestDb::create("cust_rs").await,
    );
    let mut ods_connector = Connector::new(&sim, &unused_staging, "");
    ods_connector.env.extend([
        ("STAGING_ENABLED".to_string(), "false".to_string()),
        ("REDSHIFT_ENABLED".into(), "true".into()),
        ("REDSHIFT_LOAD_MODE".into(), "stdin".into()),
        ("REDSHIFT_DATABASE_URL".into(), target_db.url()),
        ("REDSHIFT_MAX_AGE".into(), "1s".into()),
    ]);
    ods_connector.use_shipped_models();
    let target = connect(&target_db.url()).await;
    let ods_rep = ods_connector.run();
    wait_streaming_at(&target, "edfi-ods", 37, source_version(&ods).await).await;
    let check = models_check(&ods_connector, &target_db);
    assert!(
        check.contains("custom input custom.schoolmanualattributes is not in the target: the model uses its ODS values"),
        "{check}"
    );
    let school: i32 = ods
        .query_one("SELECT min(\"SchoolId\") FROM edfi.\"School\"", &[])
        .await
        .unwrap()
        .get(0);
    let ods_abbreviation: String = target
        .query_one(
            "SELECT schoolabbreviation FROM schedule.school WHERE schoolnumber = $1",
            &[&school],
        )
        .await
        .unwrap()
        .get(0);

    // The custom datasets in the staging database, carried by connectors/staging-custom.toml.
    let pg = SourcePg::start(true);
    let (url, staging) = custom_staging(&pg).await;
    staging
        .batch_execute(&format!(
            "INSERT INTO schedule.SchoolManualAttributes VALUES ('{school}', 'CUSTOM', 'ES', 'CT', false);"
        ))
        .await
        .unwrap();
    let students: Vec<String> = ods
        .query(
            "SELECT \"StudentUniqueId\" FROM edfi.\"Student\" ORDER BY 1 LIMIT 10",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for s in &students {
        staging
            .execute(
                "INSERT INTO studentdemographics.Student VALUES ($1::text, 'ST-' || $1::text, 'Charter A', 'Charter B')",
                &[s],
            )
            .await
            .unwrap();
    }
    let custom_connector = custom_connector(&url, &target_db);
    let custom_rep = custom_connector.run();
    wait_streaming_at(
        &target,
        "staging-custom",
        6,
        flush_position(&staging).await - 1,
    )
    .await;

    // The next flush of the ODS connector rebuilds the models that read them.
    let touch = |n: i32| {
        let ods = &ods;
        async move {
            ods.batch_execute(&format!(
                "UPDATE edfi.\"Student\" SET \"MiddleName\" = 'Touch{n}' \
                 WHERE \"StudentUSI\" = (SELECT min(\"StudentUSI\") FROM edfi.\"Student\")"
            ))
            .await
            .unwrap();
        }
    };
    touch(1).await;
    let abbreviation = |want: &'static str| {
        let target = &target;
        async move {
            wait_for(&format!("schedule.school to read {want}"), Duration::from_secs(60), || async {
                let row = target
                    .query_one("SELECT schoolabbreviation, active FROM schedule.school WHERE schoolnumber = $1", &[&school])
                    .await
                    .ok()?;
                (row.get::<_, String>(0) == want).then(|| row.get::<_, bool>(1))
            })
            .await
        }
    };
    assert!(
        !abbreviation("CUSTOM").await,
        "active comes from the custom row too"
    );
    let with_state_id: i64 = target
        .query_one(
            "SELECT count(*) FROM studentdemographics.student \
             WHERE stateid = 'ST-' || studentnumber AND charter = 'Charter A' AND originalcharter = 'Charter B'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let without: i64 = target
        .query_one(
            "SELECT count(*) FROM studentdemographics.student WHERE stateid IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (with_state_id, without),
        (10, 10),
        "custom rows where present, NULL elsewhere"
    );
    assert_ne!(ods_abbreviation, "CUSTOM");

    // A change to the custom dataset alone reaches the model with the ODS quiet: the models'
    // sink looks at their custom inputs every max_age when no flush is due.
    staging
        .batch_execute("UPDATE schedule.SchoolManualAttributes SET SchoolAbbreviation = 'RENAMED'")
        .await
        .unwrap();
    wait_streaming_at(
        &target,
        "staging-custom",
        6,
        flush_position(&staging).await - 1,
    )
    .await;
    abbreviation("RENAMED").await;

    // The custom row gone: the ODS value again, still without an ODS change.
    staging
        .batch_execute("DELETE FROM schedule.SchoolManualAttributes")
        .await
        .unwrap();
    wait_streaming_at(
        &target,
        "staging-custom",
        6,
        flush_position(&staging).await - 1,
    )
    .await;
    let fallback: &'static str = Box::leak(ods_abbreviation.into_boxed_str());
    abbreviation(fallback).await;
    assert!(
        ods_rep
            .log()
            .contains("model rebuilt: its definition or custom inputs changed"),
        "the quiet ODS connector rebuilt the models itself:\n{}",
        ods_rep.log()
    );
    let check = models_check(&ods_connector, &target_db);
    assert!(
        check.contains("custom input custom.schoolmanualattributes present"),
        "{check}"
    );
    assert!(!check.contains("FAIL"), "{check}");
    ods_rep.kill();
    custom_rep.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kafka_a_killed_poller_or_sink_worker_loses_nothing_and_the_slot_waits_for_the_stream(
) {
    let broker = Broker::start();
    let stream = kafka_stream(&broker, "session_timeout = \"4s\"\n");
    // Two lanes (one per partition), each with both tables; the workload as fast as it goes.
    kill_poller_and_sink(&stream, Vec::new(), 4, Duration::ZERO).await;
}

/// A `[stream]` section for a Kinesis stream of its own, with two shards.
fn kinesis_stream() -> String {
    format!(
        "\n[stream]\nkind = \"kinesis\"\n\n[stream.kinesis]\nstream_name = \"{}\"\nshards = 2\n",
        unique("pgsrc")
    )
}

/// A `[stream]` section for topics of their own on `broker`, two partitions each, with the
/// `[stream.kafka]` lines `extra`.
fn kafka_stream(broker: &Broker, extra: &str) -> String {
    format!(
        "\n[stream]\nkind = \"kafka\"\n\n[stream.kafka]\nbootstrap_servers = \"{}\"\n\
         topic_prefix = \"{}\"\npartitions = 2\n{extra}",
        broker.bootstrap,
        unique("pgsrc")
    )
}

/// Through a stream: wait until the sink's lanes stream their `lane_tables` (lane, table)
/// checkpoints at (or past) what the source has flushed now.
async fn wait_lanes_caught_up(
    source: &Client,
    staging: &Client,
    lane_tables: i64,
    deadline: Duration,
) {
    let target = flush_position(source).await - 1;
    wait_for(&format!("the lanes at {target}"), deadline, || async {
        let n: i64 = staging
            .query_one(
                "SELECT count(*) FROM edfi_cdc.table_state WHERE connector = 'staging-custom' \
                 AND sink LIKE 'staging@%' AND phase = 'streaming' AND version >= $1",
                &[&target],
            )
            .await
            .ok()?
            .get(0);
        (n == lane_tables).then_some(())
    })
    .await
}

/// Rows changed twice in one transaction, through Kinesis: the poller writes a cycle in
/// PutRecords calls of 500 records, several in flight at once. A row's two changes a few hundred
/// records apart fall in two calls; had both been in flight together, the stand-in (holding
/// each call a random while, as Kinesis keeps no order between calls) could store the later one
/// first, and the row's first change would win in staging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kinesis_rows_changed_twice_in_one_transaction_arrive_in_order() {
    let moto = Moto::start();
    let stream = kinesis_stream();
    rows_changed_twice(&stream, moto.env(), 2).await;
}

/// The same through Kafka, whose idempotent producer keeps a partition's records in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kafka_rows_changed_twice_in_one_transaction_arrive_in_order() {
    let broker = Broker::start();
    let stream = kafka_stream(&broker, "");
    rows_changed_twice(&stream, Vec::new(), 4).await;
}

/// Through the stream `stream` (TOML, with environment `env`): 20 transactions that update rows
/// and then delete or re-key them, 1,600 changes each, reach staging as the source has them.
async fn rows_changed_twice(stream: &str, env: Vec<(String, String)>, lane_tables: i64) {
    let (_pg, url, source) = source().await;
    let staging_db = TestDb::create("pgsrc_twice").await;
    let staging = connect(&staging_db.url()).await;
    let c = connector_with(&url, &staging_db, stream, env);
    let rep = c.run();
    wait_lanes_caught_up(&source, &staging, lane_tables, Duration::from_secs(180)).await;
    // Each transaction: 1,200 updates, then the delete of 200 of those rows and the key change
    // of 100 more (a delete and an insert each), 1,600 changes.
    for t in 0..20 {
        let (lo, hi) = (t * 100 + 1, t * 100 + 100);
        source
            .batch_execute(&format!(
                "BEGIN;
                 UPDATE custom.assessmentscore SET score = score + 1 WHERE studentid BETWEEN {lo} AND {hi};
                 DELETE FROM custom.assessmentscore
                     WHERE studentid BETWEEN {lo} AND {hi} AND assessmentid IN ('MATH-1', 'MATH-2');
                 UPDATE custom.assessmentscore SET attempt = attempt + 100
                     WHERE studentid BETWEEN {lo} AND {hi} AND assessmentid = 'MATH-3';
                 COMMIT;"
            ))
            .await
            .unwrap();
    }
    wait_lanes_caught_up(&source, &staging, lane_tables, Duration::from_secs(180)).await;
    assert_equal(&source, &staging).await;
    drop(rep);
}

/// The poller killed while Kinesis throttles a snapshot chunk marker on the first shard: the
/// marker stays on the second shard alone (Kinesis stores a call's records one by one). The
/// restarted poller's first cycle (changes, the snapshot's new start, a watermark) reaches both
/// shards; on the second it waits behind the lone marker, and no barrier written after that
/// marker may be handed out before it (the watermark would claim the changes behind it, which
/// the sink would then skip as applied: 60 new rows lost in 2 of 2 runs before barriers named
/// the poller run that wrote them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kinesis_a_poller_killed_with_a_chunk_marker_on_one_shard_only_loses_nothing() {
    lone_marker("snapshot_chunk", 8, true).await;
}

/// The same without a kill: the throttling outlasts the poller's attempts at the marker, and it
/// reads the chunk again (other rows now, so another marker) while the first marker is on the
/// second shard alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kinesis_a_chunk_marker_throttled_past_the_pollers_attempts_loses_nothing() {
    lone_marker("snapshot_chunk", 20, false).await;
}

/// The same with the snapshot's done marker: the step the poller retries after giving it up
/// does not read and mark the last chunk again (the inserts sort first: it sends the done
/// marker alone). Had it, that chunk's marker would follow the done marker on the second
/// shard and stop that shard there for good (the lane had handed out the table's done
/// marker, so nothing could release it): 1,636 rows lost before the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kinesis_a_done_marker_throttled_past_the_pollers_attempts_loses_nothing() {
    lone_marker("snapshot_done", 20, false).await;
}

/// Kinesis throttles the first `refusals` snapshot markers of kind `kind` of the big table on
/// the first shard, while new rows arrive in both tables (each stays: a lost insert shows); the
/// poller is killed at the first refusal (`kill`), or gives the marker up. Staging ends equal
/// to the source.
async fn lone_marker(kind: &str, refusals: u32, kill: bool) {
    let moto = Moto::start_throttling_markers(
        kind,
        "custom.assessmentscore",
        "shardId-000000000000",
        refusals,
    );
    let stream = kinesis_stream();
    let (_pg, url, source) = source().await;
    let staging_db = TestDb::create("pgsrc_lone").await;
    let staging = connect(&staging_db.url()).await;
    let c = connector_with(&url, &staging_db, &stream, moto.env());
    let role =
        |r: &str| Replicator::spawn(c.command(&["run", "--log", "edfi_cdc=info", "--role", r]));
    let mut logs = KeptLogs::default();
    let sink = role("sink");
    let mut poller = role("poller");
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let load = {
        let (url, stop, ops) = (url.clone(), stop.clone(), ops.clone());
        tokio::spawn(async move {
            let client = connect(&url).await;
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                // The second row sorts first in the big table: its first chunk changes.
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         INSERT INTO custom.schoolmanualattributes
                             VALUES ({}, 'New {n}', false, NULL, NULL, NULL);
                         INSERT INTO custom.assessmentscore VALUES (0, 'NEW-{n}', 1, 1, now(), NULL);
                         COMMIT;",
                        1000 + n
                    ))
                    .await
                    .unwrap();
                ops.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let poller = if kill {
        poller
            .wait_log(
                "kinesis: transient fault; retrying",
                1,
                Duration::from_secs(120),
            )
            .await;
        logs.keep(
            "the poller killed while a chunk marker was throttled",
            poller.kill(),
        );
        role("poller")
    } else {
        poller
            .wait_log(
                "a barrier may be in some shards only",
                1,
                Duration::from_secs(180),
            )
            .await;
        poller
    };
    let before = ops.load(Ordering::SeqCst);
    wait_for(
        "more source transactions",
        Duration::from_secs(120),
        || async { (ops.load(Ordering::SeqCst) > before + 100).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    wait_lanes_caught_up(&source, &staging, 2, Duration::from_secs(180)).await;
    assert_equal(&source, &staging).await;
    drop((poller, sink));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kinesis_a_killed_poller_or_sink_worker_loses_nothing_and_the_slot_waits_for_the_stream(
) {
    let moto = Moto::start();
    let stream = kinesis_stream();
    // One lane over the stream's shards, with both tables. The workload pauses 20 ms between
    // transactions: as fast as it goes it adds rows to the big table faster than its snapshot
    // crosses the Kinesis stand-in.
    kill_poller_and_sink(&stream, moto.env(), 2, Duration::from_millis(20)).await;
}

/// Through the stream `stream` (TOML, with environment `env`): the poller killed mid-snapshot
/// and mid-stream, the sink worker killed mid-stream, under a workload pausing `pause` between
/// transactions; staging ends equal to the source with `lane_tables` (lane, table) checkpoints
/// streaming, and the slot never passed the poller's recorded position.
async fn kill_poller_and_sink(
    stream: &str,
    env: Vec<(String, String)>,
    lane_tables: i64,
    pause: Duration,
) {
    let (_pg, url, source) = source().await;
    let staging_db = TestDb::create("pgsrc_stream").await;
    let staging = connect(&staging_db.url()).await;
    let c = connector_with(&url, &staging_db, stream, env);
    let role =
        |r: &str| Replicator::spawn(c.command(&["run", "--log", "edfi_cdc=info", "--role", r]));
    let mut logs = KeptLogs::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let load = paced_workload(url.clone(), stop.clone(), ops.clone(), pause);

    // The poller killed while it reads the first snapshot of the big table.
    let poller = role("poller");
    let sink = role("sink");
    wait_for(
        "the poller partway through a snapshot",
        Duration::from_secs(60),
        || async {
            let rows: i64 = staging
            .query_opt(
                "SELECT snapshot_rows FROM edfi_cdc.table_state WHERE connector = 'staging-custom' \
                 AND sink = 'poller' AND source_table = 'assessmentscore' AND phase = 'snapshot'",
                &[],
            )
            .await
            .ok()
            .flatten()?
            .get(0);
            (rows > 0).then_some(())
        },
    )
    .await;
    logs.keep("the poller killed mid-snapshot", poller.kill());
    let poller = role("poller");
    // The sink worker killed while it streams.
    wait_for(
        "both lanes streaming both tables",
        Duration::from_secs(120),
        || async {
            let n: i64 = staging
                .query_one(
                    "SELECT count(*) FROM edfi_cdc.table_state WHERE connector = 'staging-custom' \
                 AND sink LIKE 'staging@%' AND phase = 'streaming'",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (n == lane_tables).then_some(())
        },
    )
    .await;
    let before = ops.load(Ordering::SeqCst);
    wait_for(
        "more source transactions",
        Duration::from_secs(60),
        || async { (ops.load(Ordering::SeqCst) > before + 50).then_some(()) },
    )
    .await;
    logs.keep("the sink worker killed mid-stream", sink.kill());
    let sink = role("sink");
    // And the poller again, while streaming.
    let before = ops.load(Ordering::SeqCst);
    wait_for(
        "more source transactions",
        Duration::from_secs(60),
        || async { (ops.load(Ordering::SeqCst) > before + 50).then_some(()) },
    )
    .await;
    assert_slot_behind(&source, &staging, "poller").await;
    logs.keep("the poller killed mid-stream", poller.kill());
    let poller = role("poller");
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();

    wait_lanes_caught_up(&source, &staging, lane_tables, Duration::from_secs(120)).await;
    assert_equal(&source, &staging).await;
    assert_slot_behind(&source, &staging, "poller").await;
    poller.kill();
    sink.kill();
}

/// One source transaction that changes the same rows several times, inserts and deletes rows
/// and changes keys, each change arriving on its own: far over `spill_rows`, so the changes of
/// one key land in several spills and only the last may reach staging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_spill_rows_changing_rows_again_and_again_applies_its_last_changes() {
    let Setup {
        pg: _pg,
        source,
        staging_db: _staging_db,
        staging,
        c,
        ..
    } = setup("pgsrc_staging", "spill_rows = 1000\n").await;
    let rep = c.run();
    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    source
        .batch_execute(
            "BEGIN;
             UPDATE custom.assessmentscore SET score = score + 1 WHERE studentid <= 400;
             INSERT INTO custom.assessmentscore
                 SELECT st, 'SPILL', 1, 1, now(), NULL FROM generate_series(1, 3000) st;
             UPDATE custom.assessmentscore SET score = score + 2 WHERE studentid <= 400;
             DELETE FROM custom.assessmentscore WHERE assessmentid = 'SPILL' AND studentid % 2 = 0;
             UPDATE custom.assessmentscore SET attempt = attempt + 1000
                 WHERE studentid <= 100 AND assessmentid = 'MATH-1';
             UPDATE custom.assessmentscore SET score = score + 3 WHERE studentid <= 400;
             DELETE FROM custom.assessmentscore WHERE studentid BETWEEN 390 AND 400;
             COMMIT;",
        )
        .await
        .unwrap();
    wait_caught_up(&source, &staging, Duration::from_secs(120)).await;
    assert_equal(&source, &staging).await;
    assert_slot_behind_sink(&source, &staging).await;
    let log = rep.log();
    assert!(log.contains("a large cycle"), "nothing spilled:\n{log}");
    rep.terminate(Duration::from_secs(20));
}
