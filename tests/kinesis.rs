//! Replication through Kinesis against real servers: the ODS simulator over TDS, the local
//! PostgreSQL as staging, moto in server mode as Kinesis (with the resharding behaviour of the
//! real service, `tests/support/moto_server.py`), and `edfi-cdc run --role …` processes.

mod support;

use std::time::Duration;

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::types::ScalingType;
use support::s3::{Moto, ACCESS_KEY, SECRET_KEY};
use support::*;
use tokio::sync::watch;

const TABLES: usize = 37;
const CATCH_UP: Duration = Duration::from_secs(240);

fn client(moto: &Moto) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&moto.endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// Point `rig`'s connector at a Kinesis stream on `moto`; returns the stream's name.
fn use_kinesis(rig: &mut Rig, moto: &Moto) -> String {
    let name = unique("edfi-cdc");
    let env = &mut rig.connector.env;
    env.extend(moto.env());
    env.push(("EDFI_CDC_STREAM".into(), "kinesis".into()));
    env.push(("KINESIS_STREAM_NAME".into(), name.clone()));
    env.push(("KINESIS_SHARDS".into(), "2".into()));
    name
}

/// Wait until the Kinesis lane (`staging@shards`) streams every table at the source's current
/// version.
async fn wait_lane_caught_up(rig: &Rig) -> i64 {
    let target = source_version(&rig.source).await;
    wait_for(&format!("the lane to reach version {target}"), CATCH_UP, || async {
        let row = rig
            .target
            .query_opt(
                "SELECT count(*) FILTER (WHERE phase = 'streaming' AND version >= $1), count(*) \
                 FROM edfi_cdc.table_state WHERE connector = 'edfi-ods' AND sink = 'staging@shards'",
                &[&target],
            )
            .await
            .ok()
            .flatten()?;
        (row.get::<_, i64>(0) == TABLES as i64 && row.get::<_, i64>(1) == TABLES as i64)
            .then_some(target)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_through_kinesis_equals_the_source() {
    let moto = Moto::start();
    let mut rig = Rig::new(300, 51).await;
    let stream = use_kinesis(&mut rig, &moto);
    // `check` probes the stream: absent (the poller creates it), then active.
    let check = |rig: &Rig| {
        let out = rig.connector.command(&["check"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}");
        text
    };
    let text = check(&rig);
    assert!(
        text.contains(&format!(
            "PASS stream: Kinesis stream {stream} absent: the poller creates it (2 shards, records kept 48 h)"
        )),
        "{text}"
    );
    let rep = start_role(&rig, "all");
    let (_stop_tx, stop) = watch::channel(false);
    let stats =
        ods_sim::edfi::run_workload(&rig.sim.backing_url(), workload(400.0, 52, 4, 3000), stop)
            .await
            .unwrap();
    assert!(stats.total_changes() >= 3000);
    wait_lane_caught_up(&rig).await;
    assert_rig_equal(&rig).await;
    let text = check(&rig);
    assert!(
        text.contains(&format!(
            "PASS stream: Kinesis stream {stream} active, 2 open shards"
        )),
        "{text}"
    );
    // The poller gave the stream it created Change Tracking's retention (2 days here).
    assert!(
        text.contains(&format!(
            "PASS stream: Kinesis stream {stream} keeps records 48 h, as long as the source keeps its changes (48 h) or longer"
        )),
        "{text}"
    );
    // Kinesis's default retention, shorter than the source's: `check` fails and says the fix.
    client(&moto)
        .decrease_stream_retention_period()
        .stream_name(&stream)
        .retention_period_hours(24)
        .send()
        .await
        .unwrap();
    let out = rig.connector.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "FAIL stream: Kinesis stream {stream} keeps records 24 h, less than the source keeps its changes (48 h)"
        )) && text.contains("--retention-period-hours 48"),
        "{text}"
    );
    assert!(
        rep.log().contains("snapshot published"),
        "log:\n{}",
        rep.log()
    );
}

async fn open_shards(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> i32 {
    kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .open_shard_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_during_a_run_loses_and_reorders_nothing() {
    let moto = Moto::start();
    let kinesis = client(&moto);
    let mut rig = Rig::new(300, 53).await;
    let stream = use_kinesis(&mut rig, &moto);
    let poller = start_role(&rig, "poller");
    let worker = start_role(&rig, "sink");
    wait_lane_caught_up(&rig).await;
    log_student_writes(&rig.target).await;

    // One writer: LastModifiedDate then grows with every change of a row.
    let (_stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&rig.sim, workload(150.0, 54, 1, 3000), stop);
    let v0 = source_version(&rig.source).await;
    source_advanced(&rig.source, v0, 100).await;
    // Split both shards (2 → 4), later merge back (4 → 2), while changes flow.
    kinesis
        .update_shard_count()
        .stream_name(&stream)
        .target_shard_count(4)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    source_advanced(&rig.source, v0, 300).await;
    assert_eq!(open_shards(&kinesis, &stream).await, 4);
    kinesis
        .update_shard_count()
        .stream_name(&stream)
        .target_shard_count(2)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    let stats = load.await.unwrap().unwrap();
    assert!(stats.total_changes() >= 3000);
    wait_lane_caught_up(&rig).await;
    assert_rig_equal(&rig).await;
    // Barriers written again to child shards count no loss.
    assert!(
        !worker.log().contains("the stream lost records"),
        "{}",
        worker.log()
    );
    let (bad, writes) = reordered_students(&rig.target).await;
    assert!(
        bad.is_empty(),
        "changes applied out of order:\n{}",
        bad.join("\n")
    );
    assert!(writes > 100, "only {writes} student writes were logged");
    // Every shard, closed ones included, was read to its end or is being read.
    let positions: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM edfi_cdc.stream_positions WHERE sink = 'staging@shards' AND position = 'end'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(positions >= 4, "{positions} shards read to their end");
    drop((poller, worker));
}

/// The test server's Kinesis reshards as the real service does (what the tests above rely on):
/// `tests/support/kinesis_reshard_check.py`, with boto3, against a fresh server.
#[test]
fn the_test_server_reshards_as_kinesis_does() {
    let moto = Moto::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/kinesis_reshard_check.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(["--endpoint", &moto.endpoint])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK:"));
}

/// The one of `workers` that holds the lane's lease, once one does.
async fn lease_holder(workers: &mut [Replicator]) -> usize {
    wait_for("a worker to take the lane", CATCH_UP, || {
        let held = workers
            .iter()
            .position(|w| w.log().contains("lane lease taken"));
        async move { held }
    })
    .await
}

/// Two workers started together: one applies the lane, the other stands by. The active one is
/// killed in the middle of the initial snapshots while a workload runs; the standby takes the
/// lane over, a third worker stands by, and staging ends equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_worker_takes_over_a_lane_killed_mid_snapshot_and_nothing_is_lost() {
    let moto = Moto::start();
    let mut rig = Rig::new(1500, 61).await;
    use_kinesis(&mut rig, &moto);
    let poller = start_role(&rig, "poller");
    let (_stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&rig.sim, workload(150.0, 62, 2, 4000), stop);
    let mut workers = vec![start_role(&rig, "sink"), start_role(&rig, "sink")];
    let active = lease_holder(&mut workers).await;
    // The standby commits nothing, yet is ready while its lease's database answers: it is
    // doing its job.
    let standby_addr = workers[1 - active].metrics_addr().await;
    wait_for("the standby worker to be ready", CATCH_UP, || async {
        (http_get(&standby_addr, "/readyz").0 == 200).then_some(())
    })
    .await;
    wait_mid_snapshot(&rig.target, "staging@shards", CATCH_UP).await;
    let mut standby = workers.remove(1 - active);
    workers.remove(0).kill();
    assert!(
        standby.log().contains("standing by"),
        "the second worker did not stand by:\n{}",
        standby.log()
    );
    let mut later = start_role(&rig, "sink");
    let stats = load.await.unwrap().unwrap();
    assert!(stats.total_changes() >= 4000);
    wait_lane_caught_up(&rig).await;
    assert_rig_equal(&rig).await;
    // One of the two took the lane over; the other stands by.
    let took = [&standby, &later]
        .iter()
        .filter(|w| w.log().contains("lane lease taken"))
        .count();
    assert_eq!(
        took,
        1,
        "standby:\n{}\nlater:\n{}",
        standby.log(),
        later.log()
    );
    assert!(standby.is_running(), "{}", standby.log());
    assert!(later.is_running(), "{}", later.log());
    drop((poller, later));
}

/// The holder of the lane whose transactions keep failing with a transient fault is not ready
/// while it retries, although its lease renews; it is ready again once one commits, and
/// nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_holder_retrying_a_failed_transaction_is_not_ready_until_one_commits() {
    let moto = Moto::start();
    let mut rig = Rig::new(300, 63).await;
    use_kinesis(&mut rig, &moto);
    // A retry budget the test cannot exhaust while it watches: the worker must stay up.
    rig.connector
        .edit("max_attempts = 8", "max_attempts = 1000");
    let poller = start_role(&rig, "poller");
    let mut worker = start_role(&rig, "sink");
    wait_lane_caught_up(&rig).await;
    let addr = worker.metrics_addr().await;
    wait_for("the worker to be ready", CATCH_UP, || async {
        (http_get(&addr, "/readyz").0 == 200).then_some(())
    })
    .await;
    // Every write to staging's Student fails as a serialization failure would: transient.
    rig.target
        .batch_execute(
            "CREATE FUNCTION refuse_for_the_test() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused for the test' USING ERRCODE = '40001'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE OR DELETE ON edfi.student \
             FOR EACH ROW EXECUTE FUNCTION refuse_for_the_test();",
        )
        .await
        .unwrap();
    let backing = connect(&rig.sim.backing_url()).await;
    backing
        .execute(
            r#"UPDATE edfi."Student" SET "LastSurname" = 'Refused', "LastModifiedDate" = now()
               WHERE "StudentUSI" = (SELECT min("StudentUSI") FROM edfi."Student")"#,
            &[],
        )
        .await
        .unwrap();
    wait_for("the retrying worker to be unready", CATCH_UP, || async {
        (http_get(&addr, "/readyz").0 == 503).then_some(())
    })
    .await;
    assert!(
        worker.log().contains("transient fault; retrying"),
        "{}",
        worker.log()
    );
    rig.target
        .batch_execute("DROP TRIGGER refuse ON edfi.student")
        .await
        .unwrap();
    wait_for("the worker to be ready again", CATCH_UP, || async {
        (http_get(&addr, "/readyz").0 == 200).then_some(())
    })
    .await;
    wait_lane_caught_up(&rig).await;
    assert_rig_equal(&rig).await;
    assert!(worker.is_running(), "{}", worker.log());
    drop((poller, worker));
}

/// Run `tests/support/tds_workload.py` against the simulator: `transactions` transactions of
/// an independent TDS client (python-tds) on `writers` connections. Returns its totals.
async fn tds_workload(rig: &Rig, seed: u64, transactions: u32, writers: u32) -> String {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tds_workload.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &rig.sim.port().to_string(), &rig.sim.database])
        .args([SIM_PASSWORD, &seed.to_string()])
        .args([&transactions.to_string(), &writers.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the TDS workload failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reported loss, as reported: an independent TDS client writes while two workers start
/// together; the one applying the lane is killed in the middle of the initial snapshots and a
/// third worker is started. Staging ends equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_snapshot_under_a_tds_client_workload_loses_nothing() {
    let moto = Moto::start();
    let mut rig = Rig::new(2000, 71).await;
    use_kinesis(&mut rig, &moto);
    let poller = start_role(&rig, "poller");
    let load = tds_workload(&rig, 72, 1500, 3);
    let kill = async {
        let mut workers = vec![start_role(&rig, "sink"), start_role(&rig, "sink")];
        let active = lease_holder(&mut workers).await;
        wait_mid_snapshot(&rig.target, "staging@shards", CATCH_UP).await;
        workers.remove(active).kill();
        let later = start_role(&rig, "sink");
        (workers, later)
    };
    let (totals, (workers, later)) = tokio::join!(load, kill);
    assert!(totals.contains("\"inserted\""), "{totals}");
    wait_lane_caught_up(&rig).await;
    assert_rig_equal(&rig).await;
    drop((poller, workers, later));
}

/// A stream that loses records it acknowledged (the test server drops every 997th change
/// record, twice, while the source is busy, as a stock moto server does when PutRecords calls
/// overlap): the worker finds the gaps from the counts the poller writes with each barrier and
/// re-snapshots the lane's tables. It is killed as soon as it found the first gap (the tables
/// await or are in their re-snapshots), and the worker that takes over brings staging to equal
/// the source instead of claiming rows it never received. The Redshift sink's lane reads the
/// same shards into its own target, which ends equal to the source too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_stream_lost_are_found_and_re_snapshotted_across_a_kill() {
    let moto = Moto::start_losing_kinesis_records(997, 2);
    let mut rig = Rig::new(300, 81).await;
    use_kinesis(&mut rig, &moto);
    let redshift_db = redshift_beside_staging(&mut rig).await;
    let redshift = connect(&redshift_db.url()).await;
    let poller = start_role(&rig, "poller");
    let worker = start_role(&rig, "sink");
    let (_stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&rig.sim, workload(300.0, 82, 2, 3000), stop);
    wait_for("the worker to find the lost records", CATCH_UP, || async {
        worker
            .log()
            .contains("the stream lost records")
            .then_some(())
    })
    .await;
    worker.kill();
    let mut later = start_role(&rig, "sink");
    let stats = load.await.unwrap().unwrap();
    assert!(stats.total_changes() >= 3000);
    wait_lane_caught_up(&rig).await;
    assert_rig_equal(&rig).await;
    wait_connector_caught_up(&rig.source, &redshift, "edfi-ods", 37, CATCH_UP).await;
    assert_redshift_equal(&rig.source, &redshift).await;
    for db in [&rig.target, &redshift] {
        let lost: i64 = db
            .query_one(
                "SELECT count(*) FROM edfi_cdc.resnapshot_requests WHERE connector = 'edfi-ods'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(lost, 0, "every re-snapshot asked for was taken");
    }
    assert!(later.is_running(), "{}", later.log());
    drop((poller, later, redshift_db));
}

/// The Redshift sink as a stream worker (`--role sink`): every worker runs the staging lane
/// and the Redshift lane, each applied by the worker holding its lease in its own target. The
/// one applying the Redshift lane is killed in the middle of the initial snapshots while a
/// workload runs, and again inside a flush (blocked on a lock between COPY and the merge); the
/// standby takes over each time. Both targets end equal to the source, and no checkpoint in
/// the Redshift target ever claimed rows it did not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redshift_sink_as_a_stream_worker_loses_nothing_killed_mid_snapshot_and_mid_flush() {
    const LANE: &str = "redshift@shards";
    let moto = Moto::start();
    let mut rig = Rig::new(1500, 91).await;
    use_kinesis(&mut rig, &moto);
    one_chunk_per_cycle(&rig, 2000);
    let redshift_db = redshift_beside_staging(&mut rig).await;
    let redshift = connect(&redshift_db.url()).await;
    let poller = start_role(&rig, "poller");
    let (_stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&rig.sim, workload(150.0, 92, 2, 3000), stop);
    let mut workers = vec![start_role(&rig, "sink"), start_role(&rig, "sink")];
    let active = lease_taker(&mut workers, LANE, CATCH_UP).await;
    wait_mid_snapshot(&redshift, "redshift", CATCH_UP).await;
    workers.remove(active).kill();
    workers.push(start_role(&rig, "sink"));
    let stats = load.await.unwrap().unwrap();
    assert!(stats.total_changes() >= 3000);
    wait_connector_caught_up(&rig.source, &redshift, "edfi-ods", TABLES, CATCH_UP).await;
    wait_lane_caught_up(&rig).await;
    assert_redshift_equal(&rig.source, &redshift).await;
    assert_rig_equal(&rig).await;

    // Inside a flush: the merge waits for a lock on the students' target; kill its worker.
    let active = lease_taker(&mut workers, LANE, CATCH_UP).await;
    let locker = connect(&redshift_db.url()).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE edfi.student IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    rig.source
        .batch_execute("UPDATE edfi.\"Student\" SET \"FirstName\" = \"FirstName\" || 'k' WHERE \"StudentUSI\" % 5 = 0")
        .await
        .unwrap();
    wait_blocked(
        &redshift,
        &redshift_db.name,
        "DELETE FROM \"edfi\".\"student\"",
    )
    .await;
    let claimed: i64 = redshift
        .query_one(
            "SELECT max(version) FROM edfi_cdc.table_state WHERE connector = 'edfi-ods' \
             AND sink = 'redshift' AND source_table = 'Student'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    workers.remove(active).kill();
    locker.batch_execute("ROLLBACK").await.unwrap();
    let version = source_version(&rig.source).await;
    assert!(claimed < version, "the blocked flush had not committed");
    wait_connector_caught_up(&rig.source, &redshift, "edfi-ods", TABLES, CATCH_UP).await;
    assert_redshift_equal(&rig.source, &redshift).await;
    let took = lease_taker(&mut workers, LANE, CATCH_UP).await;
    assert!(workers[took].is_running(), "{}", workers[took].log());
    drop((poller, workers, redshift_db));
}

/// Stored positions are a fencing token: once a second worker's lane stored them — even
/// unmoved, as the first transaction after it took the lane over does — the first worker's
/// next transaction is fenced, whether it would leave them where they are or move them.
#[tokio::test]
async fn a_worker_whose_lane_was_taken_over_is_fenced_before_the_positions_move() {
    use edfi_cdc::checkpoint::{install, load_positions, Positions};
    use edfi_cdc::sink::{Lane, SinkError};
    let db = TestDb::create("fence").await;
    let mut client = connect(&db.url()).await;
    install(&client).await.unwrap();
    let at = |p: &str| -> Positions { [("s/0".to_string(), p.to_string())].into() };
    let mut a = Lane::new("shards", "worker-a", None);
    a.loaded(
        load_positions(&client, "edfi-ods", "staging@shards")
            .await
            .unwrap(),
    );
    a.reach(at("5"));
    let tx = client.transaction().await.unwrap();
    a.store(&tx, "staging", "edfi-ods", None).await.unwrap();
    tx.commit().await.unwrap();
    a.stored_now();

    let mut b = Lane::new("shards", "worker-b", None);
    b.loaded(
        load_positions(&client, "edfi-ods", "staging@shards")
            .await
            .unwrap(),
    );
    let tx = client.transaction().await.unwrap();
    b.store(&tx, "staging", "edfi-ods", None).await.unwrap();
    tx.commit().await.unwrap();
    b.stored_now();

    for next in ["5", "9"] {
        a.reach(at(next));
        let tx = client.transaction().await.unwrap();
        let stored = a.store(&tx, "staging", "edfi-ods", None).await;
        assert!(
            matches!(stored, Err(SinkError::Fenced { .. })),
            "worker a stored {next} over worker b: {stored:?}"
        );
    }
    // The new holder goes on.
    b.reach(at("7"));
    let tx = client.transaction().await.unwrap();
    b.store(&tx, "staging", "edfi-ods", None).await.unwrap();
    tx.commit().await.unwrap();
}

/// A cycle the poller gave up while one of its PutRecords calls was still on its way: that
/// call reaches Kinesis and is stored whatever became of the poller, so the poller waits for it
/// before the cycle is sent again. The test server holds one call of a 1,500-row update and
/// refuses the next (the poller exits); the rows change again and a new poller sends the cycle
/// again. The server would store a held call as soon as the newer copies of all its rows are
/// stored, before their watermark: 499 rows kept their older value when the poller did not
/// wait (2 of 2 runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_given_up_is_sent_again_only_after_its_calls_in_flight_were_stored() {
    held_call(false).await;
}

/// As above, but the poller is killed while it waits for the held call, so the server stores
/// that call after the new poller's newer copies of its rows, before their watermark. The sinks
/// keep a row's change of the highest version, not the last to arrive: with the last to
/// arrive, 499 of the 1,500 rows kept their older value in staging. The Redshift sink's lane
/// reads the same shards with `spill_rows = 100`, so most of the copies of a row meet in its
/// spill tables or between them and the flush's staging table: with the last to arrive there,
/// 499 rows kept their older value in Redshift too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_a_killed_poller_stored_after_its_rows_newer_copies_changes_nothing() {
    held_call(true).await;
}

async fn held_call(kill_while_waiting: bool) {
    const WAITING: &str = "waiting for the PutRecords calls still in flight";
    let armed = std::env::temp_dir().join(unique("edfi-cdc-held-put"));
    let stored = armed.with_extension("stored");
    let _files = RemovedAtEnd(vec![armed.clone(), stored.clone()]);
    // Killed, the poller cannot wait: the call is held until newer copies cover it.
    let hold_ms = if kill_while_waiting { 600_000 } else { 10_000 };
    let moto = Moto::start_holding_puts(&armed, hold_ms);
    let mut rig = Rig::new(1500, 81).await;
    use_kinesis(&mut rig, &moto);
    let redshift = if kill_while_waiting {
        let db = redshift_beside_staging(&mut rig).await;
        rig.connector
            .edit("[sinks.redshift]\n", "[sinks.redshift]\nspill_rows = 100\n");
        let client = connect(&db.url()).await;
        Some((db, client))
    } else {
        None
    };
    let mut logs = KeptLogs::default();
    let mut poller = start_role(&rig, "poller");
    let worker = start_role(&rig, "sink");
    wait_lane_caught_up(&rig).await;
    let rename = |name: &'static str| {
        let source = &rig.source;
        async move {
            source
                .execute(
                    r#"UPDATE edfi."Student" SET "MiddleName" = $1, "LastModifiedDate" = now()"#,
                    &[&name],
                )
                .await
                .unwrap()
        }
    };
    std::fs::write(&armed, "").unwrap();
    assert_eq!(rename("Sent-Once").await, 1500);
    if kill_while_waiting {
        wait_for("the poller to wait for its held call", CATCH_UP, || async {
            poller.log().contains(WAITING).then_some(())
        })
        .await;
        assert!(!stored.exists(), "the held call was stored early");
        logs.keep("poller killed while waiting", poller.kill());
    } else {
        let status = poller.wait(Duration::from_secs(120));
        let log = poller.log();
        assert!(
            !status.success() && log.contains("refused by the test server"),
            "{log}"
        );
        assert!(
            stored.exists() && log.contains(WAITING),
            "the poller exited before its held call was stored:\n{log}"
        );
        logs.keep("poller given up", log);
    }
    rename("Sent-Again").await;
    let poller = start_role(&rig, "poller");
    wait_for("the held call to be stored", CATCH_UP, || async {
        stored.exists().then_some(())
    })
    .await;
    // One more change after the held call, so that a watermark follows everything stored.
    rig.source
        .execute(
            r#"UPDATE edfi."Student" SET "LastSurname" = 'Last' WHERE "StudentUSI" = (SELECT min("StudentUSI") FROM edfi."Student")"#,
            &[],
        )
        .await
        .unwrap();
    wait_lane_caught_up(&rig).await;
    assert_rig_equal(&rig).await;
    if let Some((_db, redshift)) = &redshift {
        wait_connector_caught_up(&rig.source, redshift, "edfi-ods", TABLES, CATCH_UP).await;
        assert_redshift_equal(&rig.source, redshift).await;
        let log = worker.log();
        assert!(
            log.contains("a large batch: its changes are written to the target"),
            "the Redshift sink spilled nothing:\n{log}"
        );
    }
    drop((poller, worker, redshift));
}

/// Files removed when the test ends, passed or not.
struct RemovedAtEnd(Vec<std::path::PathBuf>);

impl Drop for RemovedAtEnd {
    fn drop(&mut self) {
        for f in &self.0 {
            std::fs::remove_file(f).ok();
        }
    }
}
