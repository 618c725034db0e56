//! Bad input gets a clear error, a non-zero exit and nothing lost or leaked.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;

fn output(cmd: &mut std::process::Command) -> (i32, String) {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run edfi-cdc");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn malformed_config_and_missing_variable_exit_2_naming_file_and_key() {
    let dir = std::env::temp_dir().join(unique("edfi-cdc-bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.toml");
    std::fs::write(
        &path,
        default_connector("").replace("[poll]", "[poll]\nintervall = \"1s\""),
    )
    .unwrap();
    let (code, text) = output(
        std::process::Command::new(bin("edfi-cdc"))
            .args(["run", "--config"])
            .arg(&path)
            .env("ODS_HOST", "127.0.0.1")
            .env("ODS_DATABASE", "x")
            .env("ODS_USER", "sa")
            .env("ODS_PASSWORD", "p")
            .env("STAGING_DATABASE_URL", "postgres://postgres@127.0.0.1/x"),
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("broken.toml")
            && text.contains("poll.intervall")
            && text.contains("unknown field"),
        "{text}"
    );

    std::fs::write(&path, default_connector("")).unwrap();
    let (code, text) = output(
        std::process::Command::new(bin("edfi-cdc"))
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("ODS_PASSWORD")
            .env("ODS_HOST", "127.0.0.1")
            .env("ODS_DATABASE", "x")
            .env("ODS_USER", "sa")
            .env("STAGING_DATABASE_URL", "postgres://postgres@127.0.0.1/x"),
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("source.password") && text.contains("ODS_PASSWORD is not set"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Batch files in S3 without an AWS region: exit 2 at once naming the variable, not retries.
#[tokio::test]
async fn a_redshift_sink_with_a_bucket_and_no_aws_region_exits_2_naming_aws_region() {
    let dir = std::env::temp_dir().join(unique("edfi-cdc-bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("edfi-ods.toml");
    std::fs::write(&path, default_connector("")).unwrap();
    let edfi_cdc = |command: &str| {
        let mut c = std::process::Command::new(bin("edfi-cdc"));
        c.args([command, "--config"])
            .arg(&path)
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("ODS_HOST", "127.0.0.1")
            .env("ODS_DATABASE", "x")
            .env("ODS_USER", "sa")
            .env("ODS_PASSWORD", "p")
            .env("STAGING_ENABLED", "false")
            .env("REDSHIFT_ENABLED", "true")
            .env("REDSHIFT_LOAD_MODE", "stdin")
            .env("REDSHIFT_DATABASE_URL", "postgres://postgres@127.0.0.1/x")
            .env("S3_BUCKET", "edfi-cdc-batches");
        c
    };
    let started = std::time::Instant::now();
    let (code, text) = output(&mut edfi_cdc("run"));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("edfi-ods.toml") && text.contains("AWS_REGION") && text.contains("S3"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // `check` says so too, among its other lines (exit 3: a check failed).
    let (code, text) = output(&mut edfi_cdc("check"));
    assert_eq!(code, 3, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("FAIL aws:") && l.contains("AWS_REGION")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn wrong_password_fails_without_printing_it() {
    let Rig {
        sim: _sim,
        staging: _staging,
        mut connector,
        ..
    } = Rig::new(50, 1).await;
    let secret = "Wr0ng-Secret-Value";
    connector.env.retain(|(k, _)| k != "ODS_PASSWORD");
    connector.env.push(("ODS_PASSWORD".into(), secret.into()));
    let (code, text) = output(&mut connector.command(&["run"]));
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("18456") && text.contains("ODS_PASSWORD"),
        "{text}"
    );
    assert!(!text.contains(secret), "the password leaked:\n{text}");
}

#[tokio::test]
async fn unreachable_source_is_retried_with_backoff_then_exits_non_zero() {
    let Rig {
        sim: _sim,
        staging: _staging,
        mut connector,
        ..
    } = Rig::new(20, 1).await;
    // A port nothing listens on: bind one, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    connector.env.retain(|(k, _)| k != "ODS_PORT");
    connector.env.push(("ODS_PORT".into(), port.to_string()));
    let text = std::fs::read_to_string(&connector.path)
        .unwrap()
        .replace("max_attempts = 8", "max_attempts = 3");
    std::fs::write(&connector.path, text).unwrap();
    let (code, text) = output(&mut connector.command(&["run"]));
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        text.matches("transient fault; retrying").count(),
        3,
        "{text}"
    );
    assert!(text.contains("cannot reach SQL Server"), "{text}");

    // `status` and `verify` say so and exit non-zero; the target has no checkpoints either.
    let (code, text) = output(&mut connector.command(&["status"]));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("source 127.0.0.1:{port} unreachable")),
        "{text}"
    );
    assert!(
        text.contains("staging: no checkpoints of connector edfi-ods"),
        "{text}"
    );
    let (code, text) = output(&mut connector.command(&["verify"]));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("edfi-cdc verify: reading the source's tables"),
        "{text}"
    );
}

#[tokio::test]
async fn tables_without_change_tracking_or_primary_key_are_named() {
    let Rig {
        sim: _sim,
        staging: _staging,
        connector,
        source,
        ..
    } = Rig::new(20, 1).await;
    source
        .query("SELECT ct.disable_table('edfi', 'Session')", &[])
        .await
        .unwrap();
    let (code, text) = output(&mut connector.command(&["run"]));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("Change Tracking is not enabled on edfi.Session")
            && text.contains("enable-ct --print"),
        "{text}"
    );
    let (code, text) = output(&mut connector.command(&["check"]));
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("FAIL table edfi.Session") && text.contains("PASS table edfi.Student"),
        "{text}"
    );
    assert!(
        text.contains("PASS source: VIEW SERVER STATE granted"),
        "{text}"
    );

    source.batch_execute("SELECT ct.enable_table('edfi', 'Session', true); ALTER TABLE edfi.\"Course\" DROP CONSTRAINT \"Course_PK\"").await.unwrap();
    let (code, text) = output(&mut connector.command(&["run"]));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("table edfi.Course has no primary key"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_target_rejects_stops_the_sink_naming_table_key_and_reason() {
    let Rig {
        sim: _sim,
        staging: _staging,
        mut connector,
        source,
        target,
    } = Rig::new(50, 2).await;
    let mut rep = connector.run();
    wait_caught_up(&source, &target, 37, Duration::from_secs(120)).await;
    target
        .batch_execute(
            "ALTER TABLE edfi.student ADD CONSTRAINT no_rejects CHECK (lastsurname <> 'REJECT-ME')",
        )
        .await
        .unwrap();
    let usi: i32 = source
        .query_one("SELECT min(\"StudentUSI\") FROM edfi.\"Student\"", &[])
        .await
        .unwrap()
        .get(0);
    source
        .execute(
            "UPDATE edfi.\"Student\" SET \"LastSurname\" = 'REJECT-ME' WHERE \"StudentUSI\" = $1",
            &[&usi],
        )
        .await
        .unwrap();
    let status = rep.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    let log = rep.log();
    assert!(
        log.contains("edfi.Student")
            && log.contains(&format!("StudentUSI={usi}"))
            && log.contains("no_rejects"),
        "{log}"
    );
    // The row's values are student data: out of the log unless asked for.
    assert!(
        !log.contains("REJECT-ME") && log.contains("EDFI_CDC_LOG_ROW_VALUES=1 shows them"),
        "{log}"
    );
    connector
        .env
        .push(("EDFI_CDC_LOG_ROW_VALUES".into(), "1".into()));
    let mut asked = connector.run();
    assert_eq!(asked.wait(Duration::from_secs(60)).code(), Some(1));
    let log = asked.log();
    assert!(
        log.contains("Failing row contains") && log.contains("REJECT-ME"),
        "{log}"
    );
    let stored: String = target
        .query_one(
            "SELECT lastsurname FROM edfi.student WHERE studentusi = $1",
            &[&usi],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(stored, "REJECT-ME");
}

#[tokio::test]
async fn an_existing_staging_table_that_cannot_hold_the_source_is_reported_by_column() {
    let Rig {
        sim: _sim,
        staging: _staging,
        connector,
        target,
        ..
    } = Rig::new(20, 3).await;
    target
        .batch_execute("CREATE SCHEMA edfi; CREATE TABLE edfi.student (studentusi integer PRIMARY KEY, firstname varchar(5))")
        .await
        .unwrap();
    let (code, text) = output(&mut connector.command(&["run"]));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("target table edfi.student cannot hold source table edfi.Student"),
        "{text}"
    );
    assert!(
        text.contains("column firstname is character varying(5)"),
        "{text}"
    );
    assert!(text.contains("column lastsurname is missing"), "{text}");
}

#[tokio::test]
async fn enable_ct_prints_the_t_sql_for_every_configured_table() {
    let Rig {
        sim: _sim,
        staging: _staging,
        connector,
        ..
    } = Rig::new(20, 4).await;
    let (code, text) = output(&mut connector.command(&["enable-ct", "--print"]));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("SET ALLOW_SNAPSHOT_ISOLATION ON")
            && text.contains(
                "SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)"
            ),
        "{text}"
    );
    assert_eq!(
        text.matches("ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = ON)")
            .count(),
        37,
        "{text}"
    );
    assert!(
        text.contains("ALTER TABLE [edfi].[StudentSchoolAssociation] ENABLE CHANGE_TRACKING"),
        "{text}"
    );
    assert!(
        text.contains("in master: GRANT VIEW SERVER STATE TO <login>;"),
        "{text}"
    );
}

#[test]
fn a_broken_reporting_model_exits_2_naming_the_file_before_connecting() {
    let dir = std::env::temp_dir().join(unique("edfi-cdc-badmodel"));
    std::fs::create_dir_all(dir.join("models/ic")).unwrap();
    let path = dir.join("edfi-ods.toml");
    std::fs::write(&path, default_connector("")).unwrap();
    // Declares an input the SELECT does not read.
    std::fs::write(
        dir.join("models/ic/schedule.school.sql"),
        "-- model: schedule.school\n-- inputs: edfi.school, edfi.calendar\n\
         CREATE TABLE schedule.school (schoolid integer NOT NULL, PRIMARY KEY (schoolid));\n\
         SELECT s.schoolid FROM edfi.school s;\n",
    )
    .unwrap();
    let (code, text) = output(
        std::process::Command::new(bin("edfi-cdc"))
            .args(["run", "--config"])
            .arg(&path)
            // Nothing listens here: the models are checked before anything connects.
            .env("ODS_HOST", "127.0.0.1")
            .env("ODS_PORT", "1")
            .env("ODS_DATABASE", "x")
            .env("ODS_USER", "sa")
            .env("ODS_PASSWORD", "p")
            .env("STAGING_ENABLED", "false")
            .env("REDSHIFT_ENABLED", "true")
            .env("REDSHIFT_LOAD_MODE", "stdin")
            .env("REDSHIFT_DATABASE_URL", "postgres://postgres@127.0.0.1:1/x"),
    );
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("schedule.school.sql") && text.contains("inputs"),
        "{text}"
    );
}

/// Batch files in S3 with a region but no credentials anywhere (environment, profile, task
/// role, instance metadata on a closed loopback port): one line naming what to set, at once,
/// not the SDK's credential-chain dump per retry.
#[tokio::test]
async fn no_aws_credentials_fail_at_once_in_one_line() {
    let mut rig = Rig::new(20, 13).await;
    let dir = rig.connector.path.parent().unwrap().to_path_buf();
    let imds = format!("http://127.0.0.1:{}", free_port());
    let (config, credentials) = (
        dir.join("no-aws-config").display().to_string(),
        dir.join("no-aws-credentials").display().to_string(),
    );
    redshift_rig(
        &mut rig,
        None,
        &[
            ("S3_BUCKET", "edfi-cdc-batches"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_CONFIG_FILE", &config),
            ("AWS_SHARED_CREDENTIALS_FILE", &credentials),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds),
        ],
    );
    let (code, text) = output(&mut rig.connector.command(&["check"]));
    assert_eq!(code, 3, "{text}");
    let line = text
        .lines()
        .find(|l| {
            l.contains("FAIL") && l.contains("no AWS credentials for bucket `edfi-cdc-batches`")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("AWS_ACCESS_KEY_ID"), "{line}");
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("Environment:")),
        "the credential chain is printed over several lines:\n{text}"
    );
    let started = std::time::Instant::now();
    let mut rep = rig.connector.run();
    assert!(!rep.wait(Duration::from_secs(60)).success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}: a missing credential was retried",
        started.elapsed()
    );
    let log = rep.log();
    assert!(log.contains("no AWS credentials for bucket"), "{log}");
    assert!(!log.contains("transient fault"), "retried:\n{log}");
}
