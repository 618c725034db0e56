//! The Redshift sink against real servers: the ODS simulator over TDS, the local PostgreSQL as
//! the Redshift stand-in (`load = "stdin"`: the same merge, COPY FROM STDIN in place of COPY
//! FROM S3), moto as the S3 API server for the batch files, `edfi-cdc run` as a process.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::s3::Moto;
use support::*;
use tokio::sync::watch;
use tokio_postgres::Client;

const TABLES: usize = 37;
const CATCH_UP: Duration = Duration::from_secs(180);
const BUCKET: &str = REDSHIFT_BUCKET;

fn workload(rate: f64, seed: u64, max_changes: u64) -> ods_sim::edfi::WorkloadConfig {
    ods_sim::edfi::WorkloadConfig {
        rate,
        seed,
        writers: 3,
        max_changes: Some(max_changes),
        duration: Some(Duration::from_secs(120)),
        bursts: true,
    }
}

async fn assert_equal(source: &Client, target: &Client) {
    let problems = compare_all(source, target, true).await;
    assert!(
        problems.is_empty(),
        "the Redshift target differs from the source:\n{}",
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_mode_replicates_the_random_workload_exactly() {
    let mut rig = Rig::new(300, 7).await;
    redshift_rig(&mut rig, None, &[]);
    let rep = rig.connector.run();
    let (_stop_tx, stop) = watch::channel(false);
    let stats =
        ods_sim::edfi::run_workload(&rig.sim.backing_url(), workload(400.0, 21, 4000), stop)
            .await
            .unwrap();
    assert!(stats.total_changes() >= 4000);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    let log = rep.log();
    assert!(log.contains("snapshot published"), "log:\n{log}");
    assert!(
        log.contains("reason=\"age\"") || log.contains("reason=age"),
        "flushes are logged with their reason:\n{log}"
    );
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    assert!(
        metrics.contains(
            "edfi_cdc_sink_flushes_total{connector=\"edfi-ods\",reason=\"age\",sink=\"redshift\"}"
        ),
        "flush reasons are counted:\n{metrics}"
    );
}

/// Table directory (`edfi.student`) → column count and key column indexes, from the
/// simulator's definitions (the CSV has the source's column order).
fn table_specs() -> HashMap<String, serde_json::Value> {
    ods_sim::edfi::tables()
        .iter()
        .map(|d| {
            let key: Vec<usize> = d
                .primary_key
                .iter()
                .map(|k| d.columns.iter().position(|c| &c.name == k).unwrap())
                .collect();
            (
                format!("edfi.{}", d.name.to_lowercase()),
                serde_json::json!({"columns": d.columns.len(), "key": key}),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_files_hold_exactly_the_batches_and_replay_to_the_target() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let mut rig = Rig::new(150, 8).await;
    redshift_rig(&mut rig, Some(&moto), &[("S3_FILE_RETENTION", "1h")]);
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    // Values CSV must carry intact: quotes, commas, newlines, non-ASCII, the text \N, and the
    // empty string beside NULL.
    rig.source
        .batch_execute(
            "UPDATE edfi.\"Student\" SET \"LastSurname\" = E'O''Neil, \"Zoë\"\\n日本 \\\\N', \"MiddleName\" = '' \
             WHERE \"StudentUSI\" = (SELECT min(\"StudentUSI\") FROM edfi.\"Student\"); \
             UPDATE edfi.\"Student\" SET \"MiddleName\" = NULL \
             WHERE \"StudentUSI\" = (SELECT max(\"StudentUSI\") FROM edfi.\"Student\");",
        )
        .await
        .unwrap();
    let (_stop_tx, stop) = watch::channel(false);
    ods_sim::edfi::run_workload(&rig.sim.backing_url(), workload(300.0, 22, 1500), stop)
        .await
        .unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    drop(rep);

    // Every object is under prefix/connector/batch/table/; download them as laid out.
    let objects = moto.objects(BUCKET, "edfi-cdc/edfi-ods/").await;
    assert!(
        objects.len() > 37,
        "batch files are kept for the retention: {}",
        objects.len()
    );
    let dir = std::env::temp_dir().join(unique("batches"));
    for (key, body) in &objects {
        let rel = key.strip_prefix("edfi-cdc/edfi-ods/").unwrap();
        assert_eq!(rel.split('/').count(), 3, "unexpected key {key}");
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let out = std::process::Command::new("python3")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/support/replay_batches.py"),
        )
        .arg(&dir)
        .arg(serde_json::to_string(&table_specs()).unwrap())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        replay["problems"],
        serde_json::json!([]),
        "manifests and parts disagree"
    );

    // The rows Python read from the files, typed by the target's columns, equal the target.
    for def in ods_sim::edfi::tables() {
        let table = format!("edfi.{}", def.name.to_lowercase());
        let cols: Vec<String> = def.columns.iter().map(|c| c.name.to_lowercase()).collect();
        let rows: Vec<serde_json::Value> = replay["tables"][&table]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let obj: serde_json::Map<String, serde_json::Value> = cols
                    .iter()
                    .cloned()
                    .zip(r.as_array().unwrap().iter().cloned())
                    .collect();
                serde_json::Value::Object(obj)
            })
            .collect();
        rig.target
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS replay; CREATE TEMP TABLE replay AS SELECT * FROM {table} WITH NO DATA"
            ))
            .await
            .unwrap();
        rig.target
            .execute(
                "INSERT INTO replay SELECT * FROM json_populate_recordset(NULL::replay, $1::text::json)",
                &[&serde_json::Value::Array(rows).to_string()],
            )
            .await
            .unwrap();
        let differ: i64 = rig
            .target
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM (SELECT * FROM replay EXCEPT ALL SELECT * FROM {table}) a) \
                     + (SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL SELECT * FROM replay) b)"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            differ, 0,
            "{table}: the batch files replay to a different table"
        );
    }
    let tricky: String = rig
        .target
        .query_one(
            "SELECT lastsurname FROM edfi.student ORDER BY studentusi LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tricky, "O'Neil, \"Zoë\"\n日本 \\N");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_flushes_loses_and_duplicates_nothing() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let mut rig = Rig::new(150, 9).await;
    redshift_rig(&mut rig, Some(&moto), &[]);
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let locker = connect(&rig.staging.url()).await;
    let observer = connect(&rig.staging.url()).await;

    // 1. Files uploaded and COPYed, the merge waiting: kill.
    // 2. Merge done, the checkpoint update waiting: kill.
    let points = [
        (
            "LOCK TABLE edfi.student IN ACCESS EXCLUSIVE MODE",
            "DELETE FROM \"edfi\".\"student\"",
        ),
        (
            "LOCK TABLE edfi_cdc.sink_state IN EXCLUSIVE MODE",
            "UPDATE edfi_cdc.sink_state",
        ),
    ];
    let mut rep = Some(rep);
    for (i, (lock, statement)) in points.iter().enumerate() {
        locker
            .batch_execute(&format!("BEGIN; {lock}"))
            .await
            .unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        ods_sim::edfi::run_workload(
            &rig.sim.backing_url(),
            workload(300.0, 30 + i as u64, 600),
            stop,
        )
        .await
        .unwrap();
        rig.source
            .batch_execute("UPDATE edfi.\"Student\" SET \"FirstName\" = \"FirstName\" || 'x' WHERE \"StudentUSI\" % 7 = 0")
            .await
            .unwrap();
        wait_blocked(&observer, &rig.staging.name, statement).await;
        if i == 0 {
            let uploaded = moto.objects(BUCKET, "edfi-cdc/edfi-ods/").await;
            assert!(
                !uploaded.is_empty(),
                "the flush uploads before its transaction"
            );
        }
        rep.take().unwrap().kill();
        locker.batch_execute("ROLLBACK").await.unwrap();
        // What a process killed inside a large part's multipart upload leaves: parts S3 keeps,
        // unseen by a listing of objects, until the upload is aborted.
        let s3 = moto.client();
        let upload = s3
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(format!(
                "edfi-cdc/edfi-ods/v-killed-{i}/edfi.student/part-00000.csv.gz"
            ))
            .send()
            .await
            .unwrap();
        s3.upload_part()
            .bucket(BUCKET)
            .key(upload.key().unwrap())
            .upload_id(upload.upload_id().unwrap())
            .part_number(1)
            .body(vec![0u8; 1024].into())
            .send()
            .await
            .unwrap();
        rep = Some(rig.connector.run());
        wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
        assert_equal(&rig.source, &rig.target).await;
        let unfinished = s3
            .list_multipart_uploads()
            .bucket(BUCKET)
            .prefix("edfi-cdc/edfi-ods/")
            .send()
            .await
            .unwrap();
        assert!(
            unfinished.uploads().is_empty(),
            "unfinished uploads left: {:?}",
            unfinished.uploads()
        );
    }
    // Orphans of the killed flushes were removed at start; committed batches remove theirs.
    let left = moto.objects(BUCKET, "edfi-cdc/edfi-ods/").await;
    assert!(
        left.is_empty(),
        "batch files left behind: {:?}",
        left.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    drop(rep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_long_for_its_column_stops_the_sink_naming_table_and_key() {
    let mut rig = Rig::new(50, 10).await;
    redshift_rig(&mut rig, None, &[]);
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert!(rep.terminate(Duration::from_secs(30)).success());
    rig.target
        .batch_execute("ALTER TABLE edfi.student ALTER COLUMN lastsurname TYPE varchar(20)")
        .await
        .unwrap();
    let usi: i32 = rig
        .source
        .query_one(
            "UPDATE edfi.\"Student\" SET \"LastSurname\" = repeat('x', 40) WHERE \"StudentUSI\" = \
             (SELECT min(\"StudentUSI\") FROM edfi.\"Student\") RETURNING \"StudentUSI\"",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut rep = rig.connector.run();
    let status = rep.wait(Duration::from_secs(60));
    assert!(!status.success());
    let log = rep.log();
    assert!(
        log.contains("rejected a row of edfi.Student")
            && log.contains(&format!("StudentUSI={usi}"))
            && log.contains("lastsurname")
            && log.contains("too long"),
        "the error names the table, key and column:\n{log}"
    );
    assert!(
        log.contains("connector edfi-ods: redshift sink rejected a row"),
        "the sink is named once:\n{log}"
    );
    let too_long: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM edfi.student WHERE length(lastsurname) > 20",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(too_long, 0, "nothing of the rejected batch was applied");
}

/// A reporting value too long for its column is cut, logged and counted, and the sink goes on:
/// the flush that first meets it is retried with that model's values checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporting_value_too_long_is_cut_counted_and_the_sink_goes_on() {
    let mut rig = Rig::new(50, 12).await;
    rig.connector.use_shipped_models();
    redshift_rig(&mut rig, None, &[]);
    let rep = rig.connector.run();
    let addr = rep.metrics_addr().await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    // roster.course.coursenumber is varchar(15), the LEA course code it shows nvarchar(60).
    let code = "LEA-COURSE-NUMBER-0001";
    rig.source
        .execute(
            "UPDATE edfi.\"CourseIdentificationCode\" SET \"IdentificationCode\" = $1 \
             WHERE (\"CourseCode\", \"EducationOrganizationId\", \"CourseIdentificationSystemDescriptorId\") = \
             (SELECT i.\"CourseCode\", i.\"EducationOrganizationId\", i.\"CourseIdentificationSystemDescriptorId\" \
              FROM edfi.\"CourseIdentificationCode\" i JOIN edfi.\"Descriptor\" d \
              ON d.\"DescriptorId\" = i.\"CourseIdentificationSystemDescriptorId\" \
              WHERE d.\"CodeValue\" = 'LEA course code' ORDER BY 1, 2 LIMIT 1)",
            &[&code],
        )
        .await
        .unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let shown: Vec<String> = rig
        .target
        .query(
            "SELECT coursenumber FROM roster.course WHERE coursenumber LIKE 'LEA-COURSE%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(shown, [&code[..15]]);
    let log = rep.log();
    assert!(
        log.contains("refreshing it again with every value checked")
            && log.contains("a value too long for its reporting column, cut to it")
            && log.contains("model=roster.course column=coursenumber"),
        "{log}"
    );
    let (_, body) = http_get(&addr, "/metrics");
    let cut: u64 = body
        .lines()
        .find(|l| {
            l.starts_with("edfi_cdc_model_values_truncated_total{")
                && l.contains("model=\"roster.course\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no truncation counter:\n{body}"));
    assert!(cut >= 1, "{cut}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_or_refused_credentials_stop_before_anything_is_written() {
    let moto = Moto::start();
    let mut rig = Rig::new(20, 11).await;
    redshift_rig(&mut rig, Some(&moto), &[("S3_BUCKET", "no-such-bucket")]);
    let mut rep = rig.connector.run();
    assert!(!rep.wait(Duration::from_secs(60)).success());
    let log = rep.log();
    assert!(
        log.contains("S3 bucket `no-such-bucket` does not exist") && log.contains("S3_BUCKET"),
        "{log}"
    );

    let strict = Moto::start_checking_credentials();
    let mut rig = Rig::new(20, 12).await;
    redshift_rig(&mut rig, Some(&strict), &[]);
    let mut rep = rig.connector.run();
    assert!(!rep.wait(Duration::from_secs(60)).success());
    let log = rep.log();
    assert!(
        log.contains("S3 refused the credentials") && log.contains("AWS_ACCESS_KEY_ID"),
        "{log}"
    );
    let tables: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'edfi'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing is created before the bucket is checked");
}

/// A rig replicating into the Redshift stand-in (`stdin`) with the shipped models, started and
/// caught up with the source.
async fn with_shipped_models_caught_up(students: u64, seed: u64) -> (Rig, Replicator) {
    with_shipped_models_caught_up_logging(students, seed, "edfi_cdc=info").await
}

/// [`with_shipped_models_caught_up`], the replicator logging with `filter`.
async fn with_shipped_models_caught_up_logging(
    students: u64,
    seed: u64,
    filter: &str,
) -> (Rig, Replicator) {
    let mut rig = Rig::new(students, seed).await;
    rig.connector.use_shipped_models();
    redshift_rig(&mut rig, None, &[]);
    let rep = rig.connector.run_logging(filter);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    (rig, rep)
}

/// The shipped models of both groups, as the connector replicating every table loads them.
fn shipped_models() -> edfi_cdc::models::Models {
    let configured = ods_sim::edfi::tables()
        .iter()
        .map(|d| format!("edfi.{}", d.name.to_lowercase()))
        .collect();
    edfi_cdc::models::Models::load(&shipped_models_dir(), &["ic", "illuminate"], &configured)
        .unwrap()
}

/// The shipped model `name`.
fn shipped_model(name: &str) -> edfi_cdc::models::Model {
    shipped_models()
        .models()
        .iter()
        .find(|m| m.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no shipped model {name}"))
}

/// Rows of `m`'s table that its SELECT, run now on the same snapshot, does not produce, and
/// the other way round.
async fn model_differences(
    tx: &tokio_postgres::Transaction<'_>,
    m: &edfi_cdc::models::Model,
) -> i64 {
    model_differences_where(tx, m, "true").await
}

/// [`model_differences`] among the rows that pass `filter` (a condition on the model's columns).
async fn model_differences_where(
    tx: &tokio_postgres::Transaction<'_>,
    m: &edfi_cdc::models::Model,
    filter: &str,
) -> i64 {
    let cols: Vec<String> = m
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    let cols = cols.join(", ");
    let select = m.select_on(tx).await.unwrap();
    let sql = format!(
        "WITH rebuilt AS ({select}) \
         SELECT (SELECT count(*) FROM (SELECT {cols} FROM {t} WHERE {filter} \
                                       EXCEPT ALL SELECT {cols} FROM rebuilt WHERE {filter}) a) \
              + (SELECT count(*) FROM (SELECT {cols} FROM rebuilt WHERE {filter} \
                                       EXCEPT ALL SELECT {cols} FROM {t} WHERE {filter}) b)",
        t = m.target(),
    );
    tx.query_one(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", m.name))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporting_models_follow_the_workload_and_always_agree_with_their_inputs() {
    let (rig, rep) = with_shipped_models_caught_up(300, 13).await;
    let models = shipped_models();
    assert!(
        models.models().len() >= 20,
        "every reporting table has a model"
    );

    let full_before = refreshes(&http_get(&rep.metrics_addr().await, "/metrics").1, "full");
    let (_stop_tx, stop) = watch::channel(false);
    let writer = spawn_workload(&rig.sim, workload(300.0, 40, 3000), stop);
    // Sample while changes flow: in one snapshot of the target, every model equals its SELECT
    // over the replicated tables — models and inputs are at one source version.
    let mut reader = connect(&rig.staging.url()).await;
    let mut samples = 0;
    let mut versions = std::collections::BTreeSet::new();
    while !writer.is_finished() || samples < 3 {
        let tx = reader
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .unwrap();
        let version: i64 = tx
            .query_one("SELECT version FROM edfi_cdc.sink_state", &[])
            .await
            .unwrap()
            .get(0);
        for m in models.models() {
            assert_eq!(
                model_differences(&tx, m).await,
                0,
                "{} disagrees with its inputs at version {version}",
                m.name
            );
        }
        let fresh: i64 = tx
            .query_one(
                "SELECT count(*) FROM edfi_cdc.freshness WHERE kind = 'model' AND source_version > $1",
                &[&version],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(fresh, 0, "a model is marked fresher than the checkpoint");
        tx.commit().await.unwrap();
        versions.insert(version);
        samples += 1;
    }
    let stats = writer.await.unwrap().unwrap();
    assert!(stats.total_changes() >= 3000);
    assert!(
        stats.kinds.get("staff").is_some_and(|n| *n > 0)
            && stats.kinds.get("calendar").is_some_and(|n| *n > 0),
        "the workload changed staff and calendars: {:?}",
        stats.kinds
    );
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    let tx = reader.transaction().await.unwrap();
    for m in models.models() {
        assert_eq!(
            model_differences(&tx, m).await,
            0,
            "{} after catching up",
            m.name
        );
    }
    assert!(
        versions.len() > 1,
        "samples spanned several flushes: {versions:?}"
    );
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    assert!(
        metrics.contains("mode=\"incremental\""),
        "student models were refreshed incrementally under the workload:\n{metrics}"
    );
    // Staff and calendar changes map to the students they affect (`-- students_of:`), calendar
    // date changes to their schools (`-- refresh_by:`): the models reading them were never
    // rebuilt whole under the workload, nor the performance levels, which follow the students
    // of their upstream model.
    let full_after = refreshes(&metrics, "full");
    let incremental = refreshes(&metrics, "incremental");
    for model in [
        "enrollment.studentenrollment",
        "roster.teacherstudentlinks",
        "schedule.calendar",
        "schedule.calendaraggregate",
        "illuminate.performancelevel",
    ] {
        assert_eq!(
            full_after.get(model),
            full_before.get(model),
            "{model} was rebuilt whole under the workload"
        );
        assert!(
            incremental.get(model).is_some_and(|n| *n > 0),
            "{model} was refreshed incrementally under the workload: {incremental:?}"
        );
    }
    drop(rep);
}

/// A process killed inside a flush's model refresh — the changes merged and earlier models
/// refreshed in the transaction, `illuminate.studentitemscore` held by a lock — leaves neither
/// checkpoint nor model ahead: the flush rolls back whole, and started again the tables equal
/// the source and every model equals its SELECT over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_killed_inside_a_model_refresh_leaves_every_model_equal_to_its_inputs() {
    let (rig, mut rep) = with_shipped_models_caught_up(300, 29).await;
    let locker = connect(&rig.staging.url()).await;
    let observer = connect(&rig.staging.url()).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE illuminate.studentitemscore IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (_stop_tx, stop) = watch::channel(false);
    let writer = spawn_workload(&rig.sim, workload(300.0, 31, 600), stop);
    // The incremental refresh of the locked model waits at its first statement: every earlier
    // step of the flush (merges, models refreshed before it) is done in its transaction.
    let refresh = "CREATE TEMP TABLE edfi_cdc_fresh (LIKE \"illuminate\".\"studentitemscore\")";
    wait_blocked(&observer, &rig.staging.name, refresh).await;
    // What the last committed flush stored, while the blocked one is open.
    let checkpoint = "SELECT version FROM edfi_cdc.sink_state";
    let before: i64 = rig.target.query_one(checkpoint, &[]).await.unwrap().get(0);
    rep.kill();
    locker.batch_execute("ROLLBACK").await.unwrap();
    let after_kill: i64 = rig.target.query_one(checkpoint, &[]).await.unwrap().get(0);
    assert_eq!(after_kill, before, "the killed flush moved the checkpoint");
    let ahead: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM edfi_cdc.freshness WHERE source_version > $1",
            &[&before],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        ahead, 0,
        "a model or table is marked fresher than the checkpoint"
    );

    rep = rig.connector.run();
    let stats = writer.await.unwrap().unwrap();
    assert!(stats.total_changes() >= 600);
    assert!(
        stats.kinds.get("assessment").is_some_and(|n| *n > 0),
        "the workload changed assessments: {:?}",
        stats.kinds
    );
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    let mut reader = connect(&rig.staging.url()).await;
    let tx = reader.transaction().await.unwrap();
    for m in shipped_models().models() {
        assert_eq!(
            model_differences(&tx, m).await,
            0,
            "{} after the kill",
            m.name
        );
    }
    assert!(rep.terminate(Duration::from_secs(30)).success());
}

/// Columns of `edfi.Student` that `studentdemographics.student` reads, changed at the source
/// under a workload — one added beside them, `FirstName` widened (longer names written), and
/// `MiddleName` dropped — keep every model equal to its SELECT over the replicated tables, and
/// `models check` passing: the target keeps the dropped column (NULL after the re-snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_the_models_read_changed_at_the_source_keep_every_model_equal_to_its_inputs() {
    let (rig, rep) = with_shipped_models_caught_up(200, 41).await;
    let (stop_tx, stop) = watch::channel(false);
    let writer = spawn_workload(&rig.sim, workload(150.0, 43, 1_000_000), stop);
    let published = |rep: &Replicator| {
        rep.log()
            .lines()
            .filter(|l| l.contains("snapshot published") && l.contains("table=edfi.Student "))
            .count()
    };
    let long_name = "Ω".repeat(120);
    let changes = [
        "ALTER TABLE edfi.Student ADD NickName nvarchar(30) NULL;\n\
         UPDATE edfi.Student SET NickName = N'Nick' WHERE StudentUSI % 3 = 0;"
            .to_string(),
        format!(
            "ALTER TABLE edfi.Student ALTER COLUMN FirstName nvarchar(150) NOT NULL;\n\
             UPDATE edfi.Student SET FirstName = N'{long_name}' WHERE StudentUSI % 5 = 0;"
        ),
        "ALTER TABLE edfi.Student DROP COLUMN MiddleName".to_string(),
    ];
    for (n, change) in changes.iter().enumerate() {
        let before = published(&rep);
        tsql(&rig.sim, change).await.unwrap();
        wait_for(
            &format!("the re-snapshot of change {n}"),
            CATCH_UP,
            || async { (published(&rep) > before).then_some(()) },
        )
        .await;
    }
    stop_tx.send(true).unwrap();
    assert!(writer.await.unwrap().unwrap().total_changes() > 0);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    let middle: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM studentdemographics.student WHERE middlename IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(middle, 0, "the dropped column reads NULL in the report");
    let mut reader = connect(&rig.staging.url()).await;
    let tx = reader.transaction().await.unwrap();
    for m in shipped_models().models() {
        assert_eq!(model_differences(&tx, m).await, 0, "{}", m.name);
    }
    let out = rig
        .connector
        .command(&["models", "check", "--target-url", &rig.staging.url()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("PASS model studentdemographics.student") && !text.contains("FAIL"),
        "{text}"
    );
}

/// A source value that a model's `SELECT` casts to a type too small for it (an assessment
/// result of 99999 into `decimal(5,2)`) stops the sink naming the model, not as a bare database
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_large_for_a_models_number_stops_the_sink_naming_the_model() {
    let (rig, mut rep) = with_shipped_models_caught_up(200, 29).await;
    let backing = connect(&rig.sim.backing_url()).await;
    let changed = backing
        .execute(
            r#"UPDATE edfi."StudentAssessmentScoreResult" SET "Result" = '99999'
               WHERE "StudentUSI" = (SELECT max("StudentUSI") FROM edfi."StudentAssessmentScoreResult")"#,
            &[],
        )
        .await
        .unwrap();
    assert!(changed > 0);
    let status = rep.wait(CATCH_UP);
    let log = rep.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("reporting model illuminate.studentaggregatescore: numeric field overflow")
            && log.contains("(22003)")
            && log.contains("Widen the column in the model or correct the source row"),
        "{log}"
    );
}

/// A flush refreshes a student model for the students whose rows changed in its own inputs (and
/// in those of the student models it reads), not for every student of the flush: one source
/// transaction moves one student's section end date and another student's assessment result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_model_is_refreshed_for_the_students_its_own_inputs_changed() {
    let (mut rig, rep) = with_shipped_models_caught_up_logging(
        300,
        23,
        "edfi_cdc=info,edfi_cdc::sink::redshift=debug",
    )
    .await;
    let backing = connect(&rig.sim.backing_url()).await;
    let pick = |sql: &'static str| {
        let backing = &backing;
        async move { backing.query_one(sql, &[]).await.unwrap().get::<_, i32>(0) }
    };
    let rostered = pick(
        r#"SELECT min(a."StudentUSI") FROM edfi."StudentSectionAssociation" a
           WHERE a."SchoolYear" = (SELECT max("SchoolYear") FROM edfi."StudentSectionAssociation")"#,
    )
    .await;
    let tested = pick(r#"SELECT max("StudentUSI") FROM edfi."StudentAssessmentScoreResult""#).await;
    assert_ne!(rostered, tested);
    let logged = rep.log().lines().count();
    backing
        .batch_execute(&format!(
            r#"BEGIN;
               UPDATE edfi."StudentSectionAssociation" SET "EndDate" = "BeginDate" + 1,
                   "LastModifiedDate" = now()
               WHERE "StudentUSI" = {rostered}
                 AND "SchoolYear" = (SELECT max("SchoolYear") FROM edfi."StudentSectionAssociation");
               UPDATE edfi."StudentAssessmentScoreResult"
                   SET "Result" = CASE WHEN "Result" = '1' THEN '2' ELSE '1' END
               WHERE "StudentUSI" = {tested};
               COMMIT;"#
        ))
        .await
        .unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let log = rep.log();
    let refreshed = |model: &str| -> Vec<String> {
        log.lines()
            .skip(logged)
            .filter(|l| l.contains("model refreshed") && l.contains(&format!("model={model} ")))
            .map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("students="))
                    .unwrap_or("none")
                    .to_string()
            })
            .collect()
    };
    // The roster reads the section associations, the aggregate scores the results: one student
    // each. The item scores and performance levels follow the aggregate scores' student.
    for model in [
        "roster.studentroster",
        "roster.teacherstudentlinks",
        "illuminate.studentaggregatescore",
        "illuminate.studentitemscore",
        "illuminate.performancelevel",
    ] {
        assert_eq!(refreshed(model), ["1"], "{model}:\n{log}");
    }
    let tx = rig.target.transaction().await.unwrap();
    for m in shipped_models().models() {
        assert_eq!(model_differences(&tx, m).await, 0, "{}", m.name);
    }
    tx.commit().await.unwrap();
    drop(rep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_change_refreshes_only_the_teacher_links_it_changes() {
    let (rig, rep) = with_shipped_models_caught_up(300, 19).await;
    let links = &shipped_model("roster.teacherstudentlinks");
    // The stand-in indexes what the refreshes look up: the student column of the replicated
    // tables, the model's student column and its `-- index:` column.
    for (schema, table, column) in [
        ("edfi", "studentsectionassociation", "studentusi"),
        ("roster", "teacherstudentlinks", "studentnumber"),
        ("roster", "teacherstudentlinks", "staffnumber"),
    ] {
        let indexes: i64 = rig
            .target
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 \
                 AND indexname = $2 || '__' || $3",
                &[&schema, &table, &column],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(indexes, 1, "an index on {schema}.{table} ({column})");
    }
    let full_before = refreshes(&http_get(&rep.metrics_addr().await, "/metrics").1, "full");
    let staffnumber: String = rig
        .target
        .query_one(
            "SELECT staffnumber FROM roster.teacherstudentlinks GROUP BY staffnumber \
             ORDER BY count(*) DESC, staffnumber LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let before = link_versions(&rig.target).await;
    let backing = connect(&rig.sim.backing_url()).await;
    // A new last name: no link names it, so no link is rewritten.
    backing
        .execute(
            r#"UPDATE edfi."Staff" SET "LastSurname" = 'Renamed', "LastModifiedDate" = now()
               WHERE "StaffUniqueId" = $1"#,
            &[&staffnumber],
        )
        .await
        .unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_eq!(
        rig.target
            .query_one(
                "SELECT lastname FROM staff.staffidentity WHERE staffnumber = $1",
                &[&staffnumber]
            )
            .await
            .unwrap()
            .get::<_, String>(0),
        "Renamed",
        "the staff model followed"
    );
    let after = link_versions(&rig.target).await;
    let rewritten = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(
        before == after,
        "a last-name change rewrote {rewritten} of {} teacher-student links",
        before.len()
    );
    // A new StaffUniqueId: that staff member's links of the current year move to it.
    let renumbered = format!("{staffnumber}-2");
    backing
        .execute(
            r#"UPDATE edfi."Staff" SET "StaffUniqueId" = $2 WHERE "StaffUniqueId" = $1"#,
            &[&staffnumber, &renumbered],
        )
        .await
        .unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_eq!(
        links_of(&rig.target, &staffnumber).await,
        0,
        "links of the old number"
    );
    assert!(
        links_of(&rig.target, &renumbered).await > 0,
        "links of the new number"
    );
    let mut reader = connect(&rig.staging.url()).await;
    let tx = reader.transaction().await.unwrap();
    // Rows of closed years stay under the old number; the current year equals the SELECT.
    let current =
        "endyear = (SELECT max(schoolyear) FROM edfi.schoolyeartype WHERE currentschoolyear)";
    assert_eq!(model_differences_where(&tx, links, current).await, 0);
    tx.commit().await.unwrap();
    assert_never_rebuilt_whole(&rep, links, &full_before).await;
    drop(rep);
}

/// An incremental refresh writes the rows that changed, not every row of the students it
/// covers: one changed section association of a student with several sections rewrites that
/// student's roster row and teacher links of it alone, and the models still equal their SELECTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_refresh_writes_only_the_rows_that_changed() {
    let (rig, rep) = with_shipped_models_caught_up(300, 23).await;
    let full_before = refreshes(&http_get(&rep.metrics_addr().await, "/metrics").1, "full");
    // The student with the most roster rows, and one of its section associations that has one.
    let r = rig
        .target
        .query_one(
            "WITH s AS (SELECT r.studentnumber, count(*) AS n FROM roster.studentroster r \
                        GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1) \
             SELECT st.studentusi, s.studentnumber, s.n, a.schoolid, a.schoolyear, a.sessionname, \
                    a.localcoursecode, a.sectionidentifier, a.begindate \
             FROM s JOIN edfi.student st ON st.studentuniqueid = s.studentnumber \
             JOIN edfi.studentsectionassociation a ON a.studentusi = st.studentusi \
             JOIN roster.studentroster r ON r.studentnumber = s.studentnumber \
               AND r.rosterstartdate = a.begindate AND r.endyear = a.schoolyear \
             ORDER BY a.sectionidentifier LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (usi, studentnumber, rows): (i32, String, i64) = (r.get(0), r.get(1), r.get(2));
    assert!(rows >= 3, "a student with several roster rows ({rows})");
    // Per key: the row's version (xmin: a row deleted and inserted again gets a new one) and
    // its values.
    let rows_of = |table: &'static str, key: &'static str| {
        let target = &rig.target;
        async move {
            target
                .query(
                    &format!(
                        "SELECT CAST(({key}) AS text), CAST(xmin AS text), CAST(t.* AS text) FROM {table} t"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, String>(0), (r.get::<_, String>(1), r.get::<_, String>(2))))
                .collect::<HashMap<String, (String, String)>>()
        }
    };
    // Keys whose row was rewritten, and keys whose values changed (or that came or went).
    let compare = |before: &HashMap<String, (String, String)>,
                   after: &HashMap<String, (String, String)>| {
        let mut rewritten: Vec<String> = after
            .iter()
            .filter(|(k, (xmin, _))| before.get(*k).map(|(x, _)| x) != Some(xmin))
            .map(|(k, _)| k.clone())
            .collect();
        let mut changed: Vec<String> = after
            .iter()
            .filter(|(k, (_, row))| before.get(*k).map(|(_, r)| r) != Some(row))
            .map(|(k, _)| k.clone())
            .collect();
        rewritten.sort();
        changed.sort();
        (rewritten, changed)
    };
    let roster_key = "sectionid, studentnumber, rosterstartdate";
    let links_key = "sectionid, studentnumber, rosterstartdate, staffnumber";
    let roster_before = rows_of("roster.studentroster", roster_key).await;
    let links_before = rows_of("roster.teacherstudentlinks", links_key).await;
    let backing = connect(&rig.sim.backing_url()).await;
    let updated = backing
        .execute(
            r#"UPDATE edfi."StudentSectionAssociation"
               SET "EndDate" = "BeginDate" + 1, "LastModifiedDate" = now()
               WHERE "StudentUSI" = $1 AND "SchoolId" = $2 AND "SchoolYear" = $3
                 AND "SessionName" = $4 AND "LocalCourseCode" = $5 AND "SectionIdentifier" = $6
                 AND "BeginDate" = $7"#,
            &[
                &usi,
                &r.get::<_, i32>(3),
                &r.get::<_, i16>(4),
                &r.get::<_, String>(5),
                &r.get::<_, String>(6),
                &r.get::<_, String>(7),
                &r.get::<_, chrono::NaiveDate>(8),
            ],
        )
        .await
        .unwrap();
    assert_eq!(updated, 1);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let roster_after = rows_of("roster.studentroster", roster_key).await;
    assert_eq!(
        roster_after.len(),
        roster_before.len(),
        "no roster row came or went"
    );
    let (rewritten, changed) = compare(&roster_before, &roster_after);
    assert_eq!(changed.len(), 1, "one roster row changed: {changed:?}");
    assert!(changed[0].contains(&studentnumber), "{changed:?}");
    assert_eq!(
        rewritten, changed,
        "rewritten roster rows (the student has {rows})"
    );
    let (rewritten, changed) = compare(
        &links_before,
        &rows_of("roster.teacherstudentlinks", links_key).await,
    );
    assert_eq!(rewritten, changed, "rewritten teacher links");
    assert_roster_followed(&rig, &rep, &[], &full_before).await;
    drop(rep);
}

/// A section added at one school renumbers that school's sections of the year and no other's:
/// the roster models are refreshed for that school's students of that year, not rebuilt whole,
/// and equal their SELECTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_section_refreshes_the_roster_of_its_school_only() {
    // Two schools (the simulator puts 500 students in each).
    let (rig, rep) = with_shipped_models_caught_up(1000, 31).await;
    let full_before = refreshes(&http_get(&rep.metrics_addr().await, "/metrics").1, "full");
    let first = rig
        .target
        .query_one(
            "SELECT schoolid, schoolyear, sessionname, localcoursecode, sectionidentifier \
             FROM edfi.section WHERE schoolyear = \
               (SELECT max(schoolyear) FROM edfi.schoolyeartype WHERE currentschoolyear) \
             ORDER BY 1, 3, 4, 5 LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (school, year): (i32, i16) = (first.get(0), first.get(1));
    let (session, course, section): (String, String, String) =
        (first.get(2), first.get(3), first.get(4));
    // Who may be rewritten: the school's students of that year.
    let of_school = section_students(
        &rig.target,
        "a.schoolid = $1 AND a.schoolyear = $2",
        &[&school, &year],
    )
    .await;
    let before = roster_versions(&rig.target).await;
    // A section ranked first at its school (same session and course as the first one, an
    // identifier that sorts before the others), with one student of the first section in it.
    let backing = connect(&rig.sim.backing_url()).await;
    backing
        .execute(
            r#"CREATE TEMP TABLE new_section AS SELECT * FROM edfi."Section"
               WHERE "SchoolId" = $1 AND "SchoolYear" = $2 AND "SessionName" = $3
                 AND "LocalCourseCode" = $4 AND "SectionIdentifier" = $5"#,
            &[&school, &year, &session, &course, &section],
        )
        .await
        .unwrap();
    backing
        .execute(
            r#"CREATE TEMP TABLE new_enrollment AS SELECT * FROM edfi."StudentSectionAssociation"
               WHERE "SchoolId" = $1 AND "SchoolYear" = $2 AND "SessionName" = $3
                 AND "LocalCourseCode" = $4 AND "SectionIdentifier" = $5 LIMIT 1"#,
            &[&school, &year, &session, &course, &section],
        )
        .await
        .unwrap();
    backing
        .batch_execute(
            r#"UPDATE new_section SET "SectionIdentifier" = '0-new', "Id" = gen_random_uuid(),
                   "LastModifiedDate" = now();
               UPDATE new_enrollment SET "SectionIdentifier" = '0-new', "Id" = gen_random_uuid(),
                   "LastModifiedDate" = now();
               BEGIN;
               INSERT INTO edfi."Section" SELECT * FROM new_section;
               INSERT INTO edfi."StudentSectionAssociation" SELECT * FROM new_enrollment;
               COMMIT;"#,
        )
        .await
        .unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let after = roster_versions(&rig.target).await;
    assert_eq!(
        after.len(),
        before.len() + 1,
        "the new enrollment's roster row"
    );
    let rewritten = rewritten_students(&before, &after);
    assert!(
        rewritten.len() > 1,
        "the school's renumbered sections' rows are rewritten too ({})",
        rewritten.len()
    );
    assert!(
        after.values().any(|(s, _)| !of_school.contains(s)),
        "the data has roster rows of other schools' students"
    );
    let outside: Vec<&&String> = rewritten
        .iter()
        .filter(|s| !of_school.contains(**s))
        .collect();
    assert!(
        outside.is_empty(),
        "rows of students of other schools rewritten: {outside:?}"
    );
    assert_roster_followed(&rig, &rep, &["roster.section"], &full_before).await;
    drop(rep);
}

/// The `studentuniqueid`s of the students with a section association where `filter` (on
/// `edfi.studentsectionassociation a`) holds.
async fn section_students(
    target: &Client,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::collections::HashSet<String> {
    target
        .query(
            &format!(
                "SELECT DISTINCT st.studentuniqueid FROM edfi.studentsectionassociation a \
                 JOIN edfi.student st ON st.studentusi = a.studentusi WHERE {filter}"
            ),
            params,
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `roster.studentroster`'s rows by key: (student, row version). A row deleted and inserted
/// again by a refresh gets a new version (`xmin`).
async fn roster_versions(target: &Client) -> HashMap<String, (String, String)> {
    target
        .query(
            "SELECT CAST((sectionid, studentnumber, rosterstartdate) AS text), \
             studentnumber, CAST(xmin AS text) FROM roster.studentroster",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                (r.get::<_, String>(1), r.get::<_, String>(2)),
            )
        })
        .collect()
}

/// The students of the roster rows in `after` that are new or written again since `before`.
fn rewritten_students<'a>(
    before: &HashMap<String, (String, String)>,
    after: &'a HashMap<String, (String, String)>,
) -> Vec<&'a String> {
    after
        .iter()
        .filter(|(k, (_, xmin))| before.get(*k).map(|(_, x)| x) != Some(xmin))
        .map(|(_, (student, _))| student)
        .collect()
}

/// A course found for a section by a new identification code (the seed's rule wins over the
/// course code) moves the sections with that LocalCourseCode at that school to the new course:
/// `ids.section` is rebuilt, and the roster models are refreshed for those sections' students
/// alone — not rebuilt whole, as before a Course change did — and equal their SELECTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_course_change_refreshes_the_roster_of_the_sections_it_moves_only() {
    // 1,100 students: three schools, one of each level; the high school's sections carry the
    // course code, which no identification code of the school equals.
    let (rig, rep) = with_shipped_models_caught_up(1100, 37).await;
    let full_before = refreshes(&http_get(&rep.metrics_addr().await, "/metrics").1, "full");
    let found = rig
        .target
        .query_one(
            "SELECT s.schoolid, s.localcoursecode, c.coursecode FROM edfi.section s \
             JOIN edfi.course c ON c.educationorganizationid = s.schoolid \
               AND c.coursecode <> s.localcoursecode \
             WHERE NOT EXISTS (SELECT 1 FROM edfi.courseidentificationcode i \
               WHERE i.educationorganizationid = s.schoolid AND i.identificationcode = s.localcoursecode) \
             ORDER BY 1, 2, 3 LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (school, code, other): (i32, String, String) = (found.get(0), found.get(1), found.get(2));
    // Who may be rewritten: the students of the school's sections with that LocalCourseCode.
    let moved = section_students(
        &rig.target,
        "a.schoolid = $1 AND a.localcoursecode = $2",
        &[&school, &code],
    )
    .await;
    assert!(!moved.is_empty(), "the sections have students");
    let before = roster_versions(&rig.target).await;
    // An "LEA course code" of another course at the school, equal to the sections' code.
    let backing = connect(&rig.sim.backing_url()).await;
    let n = backing
        .execute(
            r#"INSERT INTO edfi."CourseIdentificationCode"
                   ("CourseCode", "CourseIdentificationSystemDescriptorId", "EducationOrganizationId",
                    "IdentificationCode")
               SELECT $1, d."DescriptorId", $2, $3 FROM edfi."Descriptor" d
               WHERE d."CodeValue" = 'LEA course code'
                 AND d."Namespace" = 'uri://ed-fi.org/CourseIdentificationSystemDescriptor'"#,
            &[&other, &school, &code],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let after = roster_versions(&rig.target).await;
    assert_eq!(after.len(), before.len(), "no roster row comes or goes");
    let rewritten = rewritten_students(&before, &after);
    assert!(
        !rewritten.is_empty(),
        "the moved sections' rows carry the new course"
    );
    let outside: Vec<&&String> = rewritten.iter().filter(|s| !moved.contains(**s)).collect();
    assert!(
        outside.is_empty(),
        "rows of students of other sections rewritten: {outside:?}"
    );
    assert_roster_followed(&rig, &rep, &["ids.section", "roster.section"], &full_before).await;
    drop(rep);
}

/// The roster models (and `more`) equal their SELECTs, and the roster models were not rebuilt
/// whole since the metrics gave `full_before`.
async fn assert_roster_followed(
    rig: &Rig,
    rep: &Replicator,
    more: &[&str],
    full_before: &HashMap<String, u64>,
) {
    let roster = ["roster.studentroster", "roster.teacherstudentlinks"];
    let mut reader = connect(&rig.staging.url()).await;
    let tx = reader.transaction().await.unwrap();
    for name in roster.iter().chain(more) {
        let differences = model_differences(&tx, &shipped_model(name)).await;
        assert_eq!(differences, 0, "{name}");
    }
    tx.commit().await.unwrap();
    for name in roster {
        assert_never_rebuilt_whole(rep, &shipped_model(name), full_before).await;
    }
}

/// `m` was not rebuilt whole since the metrics gave `full_before` (refreshes per model).
async fn assert_never_rebuilt_whole(
    rep: &Replicator,
    m: &edfi_cdc::models::Model,
    full_before: &HashMap<String, u64>,
) {
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    assert_eq!(
        refreshes(&metrics, "full").get(&m.name),
        full_before.get(&m.name),
        "{} was rebuilt whole",
        m.name
    );
}

/// Each teacher-student link's row version (`xmin`): a row deleted and inserted again by a
/// refresh gets a new one.
async fn link_versions(client: &Client) -> Vec<String> {
    row_versions(client, "roster.teacherstudentlinks").await
}

/// Each row's version (`xmin`) in `table`, sorted.
async fn row_versions(client: &Client, table: &str) -> Vec<String> {
    client
        .query(
            &format!("SELECT CAST(xmin AS text) FROM {table} ORDER BY 1"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// An enrollment without a withdraw date exits on its calendar's last instructional day: a
/// calendar event refreshes the enrollments only when it can move that day, and then the model
/// follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_event_refreshes_the_enrollments_only_when_it_moves_their_last_day() {
    let (rig, rep) = with_shipped_models_caught_up(300, 29).await;
    let enrollment = &shipped_model("enrollment.studentenrollment");
    let full_before = refreshes(&http_get(&rep.metrics_addr().await, "/metrics").1, "full");
    let backing = connect(&rig.sim.backing_url()).await;
    let descriptor = |code: &'static str| {
        let backing = &backing;
        async move {
            backing
                .query_one(
                    r#"SELECT d."DescriptorId" FROM edfi."Descriptor" d
                       JOIN edfi."CalendarEventDescriptor" c ON c."CalendarEventDescriptorId" = d."DescriptorId"
                       WHERE d."CodeValue" = $1"#,
                    &[&code],
                )
                .await
                .unwrap()
                .get::<_, i32>(0)
        }
    };
    let (instructional, weather) = (
        descriptor("Instructional day").await,
        descriptor("Weather day").await,
    );
    // The current year's calendar of the first school: its first and last instructional days.
    let cal = backing
        .query_one(
            r#"SELECT "CalendarCode", "SchoolId", "SchoolYear", min("Date"), max("Date")
               FROM edfi."CalendarDateCalendarEvent" WHERE "CalendarEventDescriptorId" = $1
               AND "SchoolYear" = (SELECT max("SchoolYear") FROM edfi."SchoolYearType" WHERE "CurrentSchoolYear")
               GROUP BY 1, 2, 3 ORDER BY 2, 1 LIMIT 1"#,
            &[&instructional],
        )
        .await
        .unwrap();
    let (code, school, year): (String, i32, i16) = (cal.get(0), cal.get(1), cal.get(2));
    let (first, last): (chrono::NaiveDate, chrono::NaiveDate) = (cal.get(3), cal.get(4));
    let to_weather = |day: chrono::NaiveDate| {
        let (backing, code) = (&backing, &code);
        async move {
            backing.batch_execute("BEGIN").await.unwrap();
            let key =
                r#""CalendarCode" = $1 AND "SchoolId" = $2 AND "SchoolYear" = $3 AND "Date" = $4"#;
            let gone = backing
                .execute(
                    &format!(
                        r#"DELETE FROM edfi."CalendarDateCalendarEvent" WHERE {key} AND "CalendarEventDescriptorId" = $5"#
                    ),
                    &[code, &school, &year, &day, &instructional],
                )
                .await
                .unwrap();
            assert_eq!(gone, 1);
            backing
                .execute(
                    r#"INSERT INTO edfi."CalendarDateCalendarEvent"
                       ("CalendarCode", "SchoolId", "SchoolYear", "Date", "CalendarEventDescriptorId", "CreateDate")
                       VALUES ($1, $2, $3, $4, $5, now())"#,
                    &[code, &school, &year, &day, &weather],
                )
                .await
                .unwrap();
            backing.batch_execute("COMMIT").await.unwrap();
        }
    };
    let exits_on = |day: chrono::NaiveDate| {
        let target = &rig.target;
        async move {
            target
                .query_one(
                    "SELECT count(*) FROM enrollment.studentenrollment \
                     WHERE schoolnumber = $1 AND endyear = $2 AND enrollmentexitdate = $3",
                    &[&school, &year, &day],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let leaving = exits_on(last).await;
    assert!(
        leaving > 0,
        "enrollments exit on {last}, the last instructional day"
    );
    let before = row_versions(&rig.target, "enrollment.studentenrollment").await;
    // The first instructional day becomes a weather day: the last one stays, no row is rewritten.
    to_weather(first).await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let after = row_versions(&rig.target, "enrollment.studentenrollment").await;
    let rewritten = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(
        before == after,
        "a change before the last instructional day rewrote {rewritten} of {} enrollments",
        before.len()
    );
    // The last one becomes a weather day: those enrollments exit on an earlier day now.
    to_weather(last).await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_eq!(
        exits_on(last).await,
        0,
        "no enrollment exits on {last} any more"
    );
    let mut reader = connect(&rig.staging.url()).await;
    let tx = reader.transaction().await.unwrap();
    assert_eq!(model_differences(&tx, enrollment).await, 0);
    tx.commit().await.unwrap();
    assert_never_rebuilt_whole(&rep, enrollment, &full_before).await;
    drop(rep);
}

/// Teacher-student links of the staff member `staffnumber` in the current school year (those of
/// closed years stay as they were, `-- history:`).
async fn links_of(client: &Client, staffnumber: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM roster.teacherstudentlinks WHERE staffnumber = $1 AND endyear = \
             (SELECT max(schoolyear) FROM edfi.schoolyeartype WHERE currentschoolyear)",
            &[&staffnumber],
        )
        .await
        .unwrap()
        .get(0)
}

/// The initial load: no model is refreshed while one of its inputs, or of the models it reads,
/// is still being snapshotted; the flush that publishes the last of them builds it, once, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_wait_for_their_inputs_initial_snapshots_and_are_built_once() {
    let mut rig = Rig::new(300, 23).await;
    rig.connector.use_shipped_models();
    redshift_rig(&mut rig, None, &[]);
    one_chunk_per_cycle(&rig, 100);
    let mut rep = rig.connector.run();
    let models = shipped_models();
    // Each model's replicated inputs, also those it reads through other models.
    let mut inputs: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in models.models() {
        let mut all: Vec<&str> = m.inputs.iter().map(String::as_str).collect();
        for u in &m.upstream {
            all.extend(inputs[u.as_str()].iter().copied());
        }
        inputs.insert(m.name.as_str(), all);
    }
    let mut reader = connect(&rig.staging.url()).await;
    let mut samples = 0;
    let mut published_apart = false;
    loop {
        let tx = reader
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .unwrap();
        let streaming: Vec<String> = match tx
            .query(
                "SELECT lower(target_schema || '.' || target_table) FROM edfi_cdc.table_state \
                 WHERE sink = 'redshift' AND phase = 'streaming'",
                &[],
            )
            .await
        {
            // Models are installed before the first flush publishes a table.
            Ok(rows) if !rows.is_empty() => rows.iter().map(|r| r.get(0)).collect(),
            _ => {
                // The sink has not published (or created) its tables yet.
                drop(tx);
                assert!(rep.is_running(), "the replicator exited:\n{}", rep.log());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for m in models.models() {
            let loading = inputs[m.name.as_str()]
                .iter()
                .any(|i| !streaming.iter().any(|s| s == i));
            if !loading {
                continue;
            }
            published_apart |= inputs[m.name.as_str()]
                .iter()
                .any(|i| streaming.iter().any(|s| s == i));
            let (rows, fresh): (i64, i64) = {
                let r = tx
                    .query_one(
                        &format!(
                            "SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM \
                             edfi_cdc.freshness WHERE kind = 'model' AND name = $1)",
                            m.target()
                        ),
                        &[&m.name],
                    )
                    .await
                    .unwrap();
                (r.get(0), r.get(1))
            };
            assert_eq!(
                (rows, fresh),
                (0, 0),
                "{} was refreshed while an input was still loading (published: {streaming:?})",
                m.name
            );
        }
        tx.commit().await.unwrap();
        samples += 1;
        if streaming.len() == TABLES {
            break;
        }
        assert!(rep.is_running(), "the replicator exited:\n{}", rep.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        published_apart && samples > 3,
        "a model's inputs were published at different flushes ({samples} samples)"
    );
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    let full = refreshes(&metrics, "full");
    let incremental = refreshes(&metrics, "incremental");
    for m in models.models() {
        assert_eq!(
            (full.get(&m.name), incremental.get(&m.name)),
            (Some(&1), None),
            "{} is built once, whole, when its inputs are loaded",
            m.name
        );
    }
    let tx = reader.transaction().await.unwrap();
    for m in models.models() {
        assert_eq!(model_differences(&tx, m).await, 0, "{}", m.name);
    }
    // Published and built in student order (but for a few rows): a refresh reads its
    // students' rows from few pages.
    let mut ordered: Vec<(String, String)> = tx
        .query(
            "SELECT quote_ident(c.table_schema) || '.' || quote_ident(c.table_name) FROM \
             information_schema.columns c JOIN information_schema.tables t USING \
             (table_schema, table_name) WHERE c.table_schema = 'edfi' AND t.table_type = \
             'BASE TABLE' AND c.column_name = 'studentusi'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), "studentusi".to_string()))
        .collect();
    assert_eq!(ordered.len(), 9, "the student tables: {ordered:?}");
    ordered.extend(models.models().iter().filter_map(|m| {
        let c = m.incremental.as_ref()?;
        Some((m.target(), format!("\"{c}\"")))
    }));
    for (table, column) in &ordered {
        let (rows, back): (i64, i64) = {
            let r = tx
                .query_one(
                    &format!(
                        "SELECT count(*), count(*) FILTER (WHERE c < p) FROM (SELECT {column} \
                         AS c, lag({column}) OVER (ORDER BY ctid) AS p FROM {table}) o"
                    ),
                    &[],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert!(rows > 0, "{table} is empty");
        // PostgreSQL puts a row into the room a full page left when it fits there: a few rows
        // land a page early. Rows in key order (or none) step back about every other row.
        assert!(
            back * 20 <= rows,
            "{table}: {back} of {rows} rows out of {column} order"
        );
    }
    drop(rep);
}

/// Refreshes per model so far in `mode` (`full` or `incremental`), from the metrics text.
fn refreshes(metrics: &str, mode: &str) -> HashMap<String, u64> {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("edfi_cdc_model_refresh_duration_seconds_count")
                && l.contains(&format!("mode=\"{mode}\""))
        })
        .filter_map(|l| {
            let model = l.split("model=\"").nth(1)?.split('"').next()?;
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((model.to_string(), n))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_parts_go_up_in_pieces_and_come_back_whole() {
    use std::io::Read;
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let files = edfi_cdc::sink::redshift::files::Files::new(moto.client(), BUCKET, "pfx", "conn")
        .await
        .unwrap();
    // ~24 MB of CSV that gzip cannot shrink below the 8 MiB piece size: random hex, quoted.
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
    let mut big = String::with_capacity(24 << 20);
    while big.len() < 24 << 20 {
        let n: u128 = rand::Rng::gen(&mut rng);
        big.push_str(&format!("{n:032x},\"{n:x}\"\n"));
    }
    let small = "1,\"a\"\n".to_string();
    let up = files
        .put_table(
            "v00000000000000000042",
            "edfi.student",
            &[big.clone(), small.clone()],
        )
        .await
        .unwrap();
    assert!(
        up.compressed_bytes > 8 << 20,
        "the first part needs a multipart upload"
    );
    let objects = moto
        .objects(BUCKET, "pfx/conn/v00000000000000000042/edfi.student/")
        .await;
    let names: Vec<&str> = objects
        .iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["manifest", "part-00000.csv.gz", "part-00001.csv.gz"]
    );
    for ((_, body), want) in objects[1..].iter().zip([&big, &small]) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert!(
            &text == want,
            "a part reads back different ({} bytes)",
            text.len()
        );
    }
    let manifest: serde_json::Value = serde_json::from_slice(&objects[0].1).unwrap();
    assert_eq!(
        manifest["entries"][0]["meta"]["content_length"],
        objects[1].1.len()
    );
    files.remove(&up.keys).await.unwrap();
    assert!(moto.objects(BUCKET, "pfx/").await.is_empty());
}

/// A history model's rows, each as text, in order: those of closed school years (before the
/// current one), or the others.
async fn year_rows(
    client: &impl tokio_postgres::GenericClient,
    m: &edfi_cdc::models::Model,
    from: &str,
    closed: bool,
) -> Vec<String> {
    let col = m.history.as_deref().expect("a history model");
    let closed_sql = format!(
        "\"{col}\" < (SELECT MAX(schoolyear) FROM edfi.schoolyeartype WHERE currentschoolyear)"
    );
    let filter = if closed {
        closed_sql
    } else {
        format!("NOT COALESCE({closed_sql}, false)")
    };
    let sql = format!("SELECT CAST(r AS text) FROM ({from}) r WHERE {filter} ORDER BY 1");
    client
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", m.name))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prior_school_year_deleted_at_the_source_stays_in_the_reports() {
    let (mut rig, rep) = with_shipped_models_caught_up(300, 17).await;
    let models = shipped_models();
    let history: Vec<&edfi_cdc::models::Model> = models
        .models()
        .iter()
        .filter(|m| m.history.is_some())
        .collect();
    let cols = |m: &edfi_cdc::models::Model| {
        m.columns
            .iter()
            .map(|c| format!("\"{}\"", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let table_of = |m: &edfi_cdc::models::Model| format!("SELECT {} FROM {}", cols(m), m.target());
    let mut before = HashMap::new();
    for m in &history {
        before.insert(
            m.name.clone(),
            year_rows(&rig.target, m, &table_of(m), true).await,
        );
    }
    let years: Vec<i16> = rig
        .target
        .query(
            "SELECT DISTINCT endyear FROM enrollment.studentenrollment ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        years,
        [2023, 2024, 2025],
        "the sample data spans three school years"
    );
    for name in [
        "roster.studentroster",
        "roster.teacherstudentlinks",
        "schedule.calendar",
    ] {
        assert!(!before[name].is_empty(), "{name} has rows of earlier years");
    }

    // First one student's 2023 enrollment alone (a change of student rows: an incremental
    // refresh), then the whole of 2024 in one transaction, with a change of the current year.
    let backing = connect(&rig.sim.backing_url()).await;
    let usi: i32 = backing
        .query_one(
            r#"SELECT min("StudentUSI") FROM edfi."StudentSchoolAssociation" WHERE "SchoolYear" = 2023"#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    backing
        .batch_execute(&format!(
            r#"BEGIN;
               DELETE FROM edfi."StudentSectionAssociation" WHERE "SchoolYear" = 2023 AND "StudentUSI" = {usi};
               DELETE FROM edfi."StudentSchoolAssociation" WHERE "SchoolYear" = 2023 AND "StudentUSI" = {usi};
               COMMIT;"#
        ))
        .await
        .unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    backing
        .batch_execute(
            r#"BEGIN;
               DELETE FROM edfi."StudentSectionAssociation" WHERE "SchoolYear" = 2024;
               DELETE FROM edfi."StudentSchoolAssociation" WHERE "SchoolYear" = 2024;
               DELETE FROM edfi."StaffSectionAssociation" WHERE "SchoolYear" = 2024;
               DELETE FROM edfi."Section" WHERE "SchoolYear" = 2024;
               DELETE FROM edfi."Session" WHERE "SchoolYear" = 2024;
               DELETE FROM edfi."CalendarDateCalendarEvent" WHERE "SchoolYear" = 2024;
               DELETE FROM edfi."CalendarDate" WHERE "SchoolYear" = 2024;
               DELETE FROM edfi."Calendar" WHERE "SchoolYear" = 2024;
               UPDATE edfi."Student" SET "FirstName" = 'Renamed' WHERE "StudentUSI" % 7 = 0;
               COMMIT;"#,
        )
        .await
        .unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    let left: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM edfi.studentschoolassociation WHERE schoolyear = 2024",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the replicated table follows the source");

    let tx = rig.target.transaction().await.unwrap();
    for m in &history {
        let kept = year_rows(&tx, m, &table_of(m), true).await;
        assert!(
            kept == before[&m.name],
            "{}: rows of closed school years not kept as they were ({} rows, {} before)",
            m.name,
            kept.len(),
            before[&m.name].len()
        );
        // The SELECT's rows in the table's types (a decimal's scale shows in its text).
        let select = m.select_on(&tx).await.unwrap();
        let typed: Vec<String> = m
            .columns
            .iter()
            .map(|c| format!("CAST(\"{0}\" AS {1}) AS \"{0}\"", c.name, c.ty))
            .collect();
        let produced = format!("SELECT {} FROM ({select}) s", typed.join(", "));
        let (have, want) = (
            year_rows(&tx, m, &table_of(m), false).await,
            year_rows(&tx, m, &produced, false).await,
        );
        let differ: Vec<&String> = have
            .iter()
            .filter(|r| !want.contains(r))
            .chain(want.iter().filter(|r| !have.contains(r)))
            .take(3)
            .collect();
        assert!(
            differ.is_empty(),
            "{}: rows of the current school year differ from its SELECT's ({} vs {} rows), e.g. {differ:?}",
            m.name,
            have.len(),
            want.len()
        );
    }
    tx.commit().await.unwrap();
    let renamed: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM studentdemographics.student WHERE firstname = 'Renamed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(renamed > 0, "the current-year change reached the reports");
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    assert!(
        metrics.contains("mode=\"incremental\""),
        "the single student's deletion was refreshed incrementally:\n{metrics}"
    );
    drop(rep);
}

/// Rows of `table` in the Redshift stand-in kept as deleted (`deletes = "soft"`).
async fn soft_deleted(target: &Client, table: &str) -> i64 {
    target
        .query_one(
            &format!("SELECT count(*) FROM edfi.{table} WHERE edfi_cdc_deleted_at IS NOT NULL"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_keep_deleted_rows_through_kills_and_a_resnapshot_and_the_models_ignore_them()
{
    let mut rig = Rig::new(300, 19).await;
    rig.connector.use_shipped_models();
    redshift_rig(&mut rig, None, &[("REDSHIFT_DELETES", "soft")]);
    let started = chrono::Utc::now().naive_utc();
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let (_stop_tx, stop) = watch::channel(false);
    let stats =
        ods_sim::edfi::run_workload(&rig.sim.backing_url(), workload(400.0, 23, 1500), stop)
            .await
            .unwrap();
    assert!(stats.total_changes() >= 1500);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;

    // The live rows equal the source; the deleted ones are kept, stamped with their time.
    let live = compare_all_in(&rig.source, &rig.target, true, Some("edfi_live")).await;
    assert!(
        live.is_empty(),
        "live views differ from the source:\n{}",
        live.join("\n")
    );
    let deleted = soft_deleted(&rig.target, "studentsectionassociation").await;
    assert!(
        deleted > 0,
        "the workload deleted section associations: {stats:?}"
    );
    let (earliest, latest): (chrono::NaiveDateTime, chrono::NaiveDateTime) = {
        let r = rig
            .target
            .query_one(
                "SELECT min(edfi_cdc_deleted_at), max(edfi_cdc_deleted_at) FROM edfi.studentsectionassociation",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let now = chrono::Utc::now().naive_utc();
    assert!(
        earliest >= started - chrono::Duration::seconds(5) && latest <= now,
        "deletion times {earliest}..{latest} outside the run {started}..{now}"
    );

    // The models read the live rows only.
    let models = shipped_models().reading_live();
    let tx = rig.target.transaction().await.unwrap();
    for m in models.models() {
        assert_eq!(
            model_differences(&tx, m).await,
            0,
            "{} with soft deletes",
            m.name
        );
    }
    tx.commit().await.unwrap();

    // Killed in the flush that marks rows deleted: after the restart each is marked once.
    let locker = connect(&rig.staging.url()).await;
    let observer = connect(&rig.staging.url()).await;
    let lock = "BEGIN; LOCK TABLE edfi.studentsectionassociation IN ACCESS EXCLUSIVE MODE";
    locker.batch_execute(lock).await.unwrap();
    let gone = rig
        .source
        .execute(
            r#"DELETE FROM edfi."StudentSectionAssociation" WHERE "SchoolYear" = 2023 AND "StudentUSI" % 11 = 0"#,
            &[],
        )
        .await
        .unwrap() as i64;
    assert!(gone > 0);
    let merge = "DELETE FROM \"edfi\".\"studentsectionassociation\" USING";
    wait_blocked(&observer, &rig.staging.name, merge).await;
    rep.kill();
    locker.batch_execute("ROLLBACK").await.unwrap();
    // A live view whose columns no longer match its table is created again at start.
    rig.target
        .batch_execute(
            "DROP VIEW edfi_live.student; CREATE VIEW edfi_live.student AS SELECT 1 AS stale",
        )
        .await
        .unwrap();
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let deleted = deleted + gone;
    assert_eq!(
        soft_deleted(&rig.target, "studentsectionassociation").await,
        deleted
    );
    let live = compare_all_in(&rig.source, &rig.target, true, Some("edfi_live")).await;
    assert!(live.is_empty(), "after the kill:\n{}", live.join("\n"));

    // A re-snapshot keeps the rows kept as deleted, also when killed while publishing. (SHARE
    // lets the shadow table be created and filled, and holds the publish at its DELETE.)
    locker
        .batch_execute("BEGIN; LOCK TABLE edfi.studentsectionassociation IN SHARE MODE")
        .await
        .unwrap();
    rig.connector.resnapshot("edfi.StudentSectionAssociation");
    wait_blocked(
        &observer,
        &rig.staging.name,
        "INSERT INTO \"edfi_cdc_shadow\"",
    )
    .await;
    rep.kill();
    locker.batch_execute("ROLLBACK").await.unwrap();
    let rep = rig.connector.run();
    let published = "snapshot published sink=\"redshift\" table=edfi.StudentSectionAssociation";
    wait_for("the re-snapshot to be published", CATCH_UP, || async {
        rep.log().contains(published).then_some(())
    })
    .await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_eq!(
        soft_deleted(&rig.target, "studentsectionassociation").await,
        deleted
    );
    let live = compare_all_in(&rig.source, &rig.target, true, Some("edfi_live")).await;
    assert!(
        live.is_empty(),
        "after the re-snapshot:\n{}",
        live.join("\n")
    );
    assert!(rep.terminate(Duration::from_secs(30)).success());

    // Back to hard deletes: the rows kept as deleted go, the tables equal the source.
    rig.connector.env.retain(|(k, _)| k != "REDSHIFT_DELETES");
    let rep = rig.connector.run();
    // The sink is ready once every table is set up, the kept rows removed.
    wait_for("the sink to be ready", CATCH_UP, || async {
        rep.log().contains("redshift sink ready").then_some(())
    })
    .await;
    assert_eq!(
        soft_deleted(&rig.target, "studentsectionassociation").await,
        0
    );
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    assert!(rep
        .log()
        .contains("rows kept as deleted by an earlier run removed"));

    // Killed while publishing a re-snapshot in hard mode, started again soft: the shadow table
    // left behind gets the column too, and the publish completes soft.
    locker
        .batch_execute("BEGIN; LOCK TABLE edfi.studentsectionassociation IN SHARE MODE")
        .await
        .unwrap();
    rig.connector.resnapshot("edfi.StudentSectionAssociation");
    let hard_publish = "DELETE FROM \"edfi\".\"studentsectionassociation\";";
    wait_blocked(&observer, &rig.staging.name, hard_publish).await;
    rep.kill();
    locker.batch_execute("ROLLBACK").await.unwrap();
    rig.connector
        .env
        .push(("REDSHIFT_DELETES".into(), "soft".into()));
    let rep = rig.connector.run();
    wait_for("the re-snapshot to be published", CATCH_UP, || async {
        rep.log().contains(published).then_some(())
    })
    .await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let live = compare_all_in(&rig.source, &rig.target, true, Some("edfi_live")).await;
    assert!(
        live.is_empty(),
        "soft after a hard publish was cut:\n{}",
        live.join("\n")
    );
    assert!(rep.terminate(Duration::from_secs(30)).success());
}

/// Redshift may report a serialization conflict (ERROR 1023) as an internal error, the class
/// COPY data errors also use: the sink takes it as transient, to be retried, not as a row the
/// target rejected. The error is raised by the local PostgreSQL as Redshift words it.
#[tokio::test]
async fn a_redshift_serialization_conflict_is_retried_not_taken_for_a_rejected_row() {
    let client = connect(&db_url("postgres")).await;
    let e = client
        .batch_execute(
            "DO $$ BEGIN RAISE EXCEPTION '1023' USING ERRCODE = 'XX000', \
             DETAIL = 'Serializable isolation violation on table - 100245, transactions forming the cycle are: 5011, 5012 (pid:1234)'; END $$",
        )
        .await
        .unwrap_err();
    assert!(edfi_cdc::sink::copy_failure(&e).is_none());
    assert!(edfi_cdc::sink::SinkError::from_pg("redshift", &e).is_retriable());
    // An internal error that is no conflict stays fatal.
    let e = client
        .batch_execute(
            "DO $$ BEGIN RAISE EXCEPTION 'Invalid digit' USING ERRCODE = 'XX000'; END $$",
        )
        .await
        .unwrap_err();
    assert!(!edfi_cdc::sink::SinkError::from_pg("redshift", &e).is_retriable());
    assert!(edfi_cdc::sink::copy_failure(&e).is_some());
}

/// Rows of the target's `studentassessmentitem` and `student` marked `marker`.
async fn marked_rows(target: &Client, marker: &str) -> (i64, i64) {
    let r = target
        .query_one(
            "SELECT (SELECT count(*) FROM edfi.studentassessmentitem WHERE assessmentresponse = $1), \
                    (SELECT count(*) FROM edfi.student WHERE middlename = $1)",
            &[&marker],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// A source transaction many times `spill_rows`: the Redshift sink writes the held changes to
/// its spill tables as they arrive and applies them whole at the flush; killed blocked in a
/// spill write (after an earlier one committed) and again in the flush's merge, it drops what
/// the killed process spilled, reads the cycle again and the target ends equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_memory_is_spilled_and_applied_whole_through_kills() {
    let mut rig = Rig::new(300, 27).await;
    // Batches of 15 s: two large cycles in a row land in one.
    redshift_rig(&mut rig, None, &[("REDSHIFT_MAX_AGE", "15s")]);
    rig.connector
        .edit("[sinks.redshift]\n", "[sinks.redshift]\nspill_rows = 250\n");
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;

    // 1. Two large cycles changing the same rows, spilled into one batch and merged: the later
    // change of each key wins. Rows of the first in a spill table mean its cycle's bound is
    // fixed, so the second transaction is in a later cycle.
    big_transaction(&rig.source, "spill-0").await;
    let items = wait_for("rows of the first cycle spilled", CATCH_UP, || async {
        let items = spill_tables(&rig.target, Some("assessmentresponse")).await;
        let table = items.first()?;
        let n: i64 = rig
            .target
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE assessmentresponse = 'spill-0'"),
                &[],
            )
            .await
            .ok()?
            .get(0);
        (n > 0).then_some(items)
    })
    .await;
    big_transaction(&rig.source, "spill-1").await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    let log = rep.log();
    assert!(log.contains("a large batch"), "no spill logged:\n{log}");
    // The spilled rows count as applied (each key of the batch once), and their latency is
    // observed.
    let items_at_source: i64 = rig
        .source
        .query_one("SELECT count(*) FROM edfi.\"StudentAssessmentItem\"", &[])
        .await
        .unwrap()
        .get(0);
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"))
    };
    let applied = sample("edfi_cdc_sink_events_applied_total{connector=\"edfi-ods\",sink=\"redshift\",table=\"edfi.StudentAssessmentItem\"}");
    let observed = sample(
        "edfi_cdc_end_to_end_latency_seconds_count{connector=\"edfi-ods\",sink=\"redshift\"}",
    );
    // One batch applies each key once; a latency is observed per change.
    assert!(
        applied >= items_at_source as f64 && observed >= 2.0 * items_at_source as f64,
        "two transactions over {items_at_source} items: {applied} applied, {observed} latencies observed"
    );
    let first = spill_tables(&rig.target, None).await;
    let students = spill_tables(&rig.target, Some("middlename")).await;
    assert_eq!(
        (items.len(), students.len()),
        (1, 1),
        "spill tables: {first:?}"
    );
    let held: i64 = rig
        .target
        .query_one(&format!("SELECT count(*) FROM {}", items[0]), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "the flush left spilled rows behind");

    // 2. Killed in a spill write, after a first one (students only) committed.
    let locker = connect(&rig.staging.url()).await;
    let lock = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", items[0]);
    kill_blocked(&rig, &locker, &lock, "COPY edfi_cdc_spill.", "spill-2", rep).await;
    let spilled: i64 = rig
        .target
        .query_one(&format!("SELECT count(*) FROM {}", students[0]), &[])
        .await
        .unwrap()
        .get(0);
    assert!(spilled > 0, "no spill write had committed before the kill");
    assert_eq!(
        marked_rows(&rig.target, "spill-2").await,
        (0, 0),
        "spilled rows were applied before their flush"
    );

    // 3. Restarted: the killed process's spill dropped, the cycle read again and applied whole;
    // then killed in the merge of the next large batch.
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    assert!(
        rep.log()
            .contains("dropped the spill tables of an earlier process of this sink"),
        "left-over spill tables not dropped:\n{}",
        rep.log()
    );
    kill_blocked(
        &rig,
        &locker,
        "LOCK TABLE edfi.studentassessmentitem IN ACCESS EXCLUSIVE MODE",
        "DELETE FROM \"edfi\".\"studentassessmentitem\"",
        "spill-3",
        rep,
    )
    .await;
    assert_eq!(
        marked_rows(&rig.target, "spill-3").await,
        (0, 0),
        "a killed flush applied part of its batch"
    );

    // 4. Restarted again: applied whole, nothing spilled left over.
    let mut rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    for t in spill_tables(&rig.target, None).await {
        let left: i64 = rig
            .target
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{t} holds rows after the flush");
    }
    assert!(rep.is_running(), "edfi-cdc stopped:\n{}", rep.log());
}

/// A snapshot's end marker comes before the table's changes since the snapshot's version (the
/// next cycle reads them): a flush at a watermark received before the marker — the `max_age`
/// timer while that cycle is held up — must not publish the table without them. Rows the
/// re-snapshot already read are deleted at the source (a chunk per cycle, so watermarks arrive
/// while it is read), and the poller's first cycle after the snapshot waits on a lock of the table's change log for three times `max_age` after the
/// sink loaded it. The target ends without the deleted rows. (Before the fix the timer
/// published the table in that window, and the deletes, older than the checkpoint it wrote,
/// were skipped.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_published_with_the_changes_that_follow_its_end_marker() {
    const LOADED: &str =
        "snapshot loaded; published at the next flush sink=\"redshift\" table=edfi.StudentSectionAssociation ";
    let mut rig = Rig::new(300, 97).await;
    redshift_rig(&mut rig, None, &[]);
    one_chunk_per_cycle(&rig, 100);
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let loaded = |rep: &Replicator| rep.log().matches(LOADED).count();
    assert_eq!(loaded(&rep), 1, "{}", rep.log());
    const READ: &str = "snapshot progress table=edfi.StudentSectionAssociation ";
    let read = |rep: &Replicator| rep.log().matches(READ).count();
    let before = read(&rep);
    rig.connector.resnapshot("edfi.StudentSectionAssociation");
    wait_for("a chunk of the re-snapshot to be read", CATCH_UP, || {
        let n = read(&rep);
        async move { (n > before).then_some(()) }
    })
    .await;
    // The lowest keys: read in the snapshot's first chunk.
    let deleted = rig
        .source
        .execute(
            r#"DELETE FROM edfi."StudentSectionAssociation" WHERE ctid IN (
                 SELECT ctid FROM edfi."StudentSectionAssociation"
                 ORDER BY "BeginDate", "LocalCourseCode", "SchoolId", "SchoolYear",
                          "SectionIdentifier", "SessionName", "StudentUSI" LIMIT 20)"#,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 20);
    let locker = connect(&rig.sim.backing_url()).await;
    locker
        .batch_execute(
            "BEGIN; LOCK TABLE ct.\"log:edfi.StudentSectionAssociation\" IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .unwrap();
    wait_for("the re-snapshot to be loaded", CATCH_UP, || {
        let n = loaded(&rep);
        async move { (n == 2).then_some(()) }
    })
    .await;
    let observer = connect(&rig.sim.backing_url()).await;
    wait_blocked(&observer, &rig.sim.database, "").await;
    // What a timer flush needs to fire while the cycle with the table's changes is held.
    tokio::time::sleep(Duration::from_secs(3)).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target).await;
    drop(rep);
}
