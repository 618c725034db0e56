//! The translator's output runs on a real PostgreSQL (127.0.0.1:$PGPORT, default 5432, user postgres): every
//! query of the unit cases is prepared (or run) in a database created for the test, with
//! minimal stand-ins for the `ct`, `sys`, `INFORMATION_SCHEMA` and `sim` objects it calls.

use tokio_postgres::Client;

use super::tests::CASES;
use super::{translate, Statement};

/// The throw-away test databases shared with the integration tests.
#[path = "../../tests/common/mod.rs"]
mod common;

use common::TestDatabase;

/// User tables the cases read and write.
const USER_TABLES: &str = r#"
CREATE SCHEMA IF NOT EXISTS dbo; CREATE SCHEMA edfi; CREATE SCHEMA edfi_cdc;
CREATE TABLE edfi."Student" ("StudentUSI" integer PRIMARY KEY, "FirstName" varchar(75) NOT NULL,
    "LastSurname" varchar(75) NOT NULL, "BirthDate" date);
INSERT INTO edfi."Student" VALUES (1, 'Ann', 'Smith', '2010-01-01'), (2, 'Bob', 'Jones', NULL);
CREATE TABLE edfi."T" (a integer, b integer, PRIMARY KEY (a, b));
INSERT INTO edfi."T" SELECT i / 3, i % 3 FROM generate_series(0, 29) AS i;
CREATE TABLE dbo."T" (a integer, b integer);
CREATE TABLE dbo.t (a integer);
CREATE TABLE dbo.a (x integer); CREATE TABLE dbo.b (x integer); CREATE TABLE dbo.c (x integer);
CREATE TABLE dbo.d (x integer);
CREATE TABLE edfi_cdc.heartbeat (id integer PRIMARY KEY, beat_at timestamp(6), seq bigint NOT NULL);
INSERT INTO edfi_cdc.heartbeat VALUES (1, NULL, 7);
CREATE TABLE edfi."Verify" ("StudentUSI" integer PRIMARY KEY, "BirthDate" date,
    "LastModifiedDate" timestamp(6), "Id" uuid, "Flag" boolean, "Blob" bytea, "FirstName" varchar(75));
INSERT INTO edfi."Verify" VALUES
    (1, '2010-01-01', '2024-01-02 03:04:05', '00112233-4455-6677-8899-aabbccddeeff', true, '\x00ff', 'Zoë'),
    (2, NULL, '2024-01-02 03:04:05.000123', NULL, false, NULL, NULL),
    (3, '0001-12-31', NULL, NULL, NULL, '\x', '');
"#;

/// Stand-ins with the names and columns of `docs/ods-simulator.md`.
const STAND_INS: &str = r#"
CREATE SCHEMA ct; CREATE SCHEMA sys; CREATE SCHEMA "INFORMATION_SCHEMA"; CREATE SCHEMA sim;
CREATE TABLE ct.tables (object_id int PRIMARY KEY, schema_name text, table_name text,
    is_track_columns_updated_on boolean, begin_version bigint, cleanup_version bigint,
    min_valid_version bigint);
INSERT INTO ct.tables VALUES (1001, 'edfi', 'Student', false, 1, 0, 1);
CREATE FUNCTION ct.current_version() RETURNS bigint LANGUAGE sql AS 'SELECT 15::bigint';
CREATE FUNCTION ct.min_valid_version(int) RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint';
CREATE FUNCTION ct.object_id(text) RETURNS int LANGUAGE sql AS 'SELECT 1001';
CREATE FUNCTION ct.object_name(int) RETURNS text LANGUAGE sql AS $$SELECT 'Student'$$;
CREATE FUNCTION ct.object_schema_name(int) RETURNS text LANGUAGE sql AS $$SELECT 'edfi'$$;
CREATE FUNCTION sim.db_id() RETURNS integer LANGUAGE sql AS 'SELECT 5';
CREATE FUNCTION sim.db_name() RETURNS text LANGUAGE sql AS $$SELECT 'EdFi_Ods'$$;
CREATE FUNCTION sim.schema_name(integer) RETURNS text LANGUAGE sql AS $$SELECT 'dbo'$$;
CREATE FUNCTION sim.has_perms_by_name(text, text, text, text DEFAULT NULL, text DEFAULT NULL)
    RETURNS integer LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION ct.enable_database(int, int, boolean) RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION ct.disable_database() RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION ct.enable_table(text, text, boolean) RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION ct.disable_table(text, text) RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION ct."changes:edfi.Student"(last bigint) RETURNS TABLE ("SYS_CHANGE_VERSION" bigint,
    "SYS_CHANGE_CREATION_VERSION" bigint, "SYS_CHANGE_OPERATION" char(1),
    "SYS_CHANGE_COLUMNS" bytea, "SYS_CHANGE_CONTEXT" bytea, "StudentUSI" integer)
    LANGUAGE sql AS $$
    SELECT v, v, op, NULL::bytea, NULL::bytea, k
    FROM (VALUES (10::bigint, 'I', 1), (12, 'U', 2), (15, 'D', 3), (17, 'U', 1)) AS c(v, op, k)
    WHERE last IS NULL OR v > last $$;
CREATE FUNCTION sim.cleanup_change_tracking(retention_seconds bigint DEFAULT NULL)
    RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
CREATE VIEW sys.change_tracking_tables AS SELECT object_id, begin_version, cleanup_version,
    min_valid_version, is_track_columns_updated_on FROM ct.tables;
CREATE TABLE sys.change_tracking_databases (database_id int, is_auto_cleanup_on boolean,
    retention_period int, retention_period_units int);
CREATE TABLE sys.dm_tran_commit_table (commit_ts bigint, xdes_id bigint, commit_lbn bigint,
    commit_csn bigint, commit_time timestamp);
INSERT INTO sys.dm_tran_commit_table VALUES (12, 1, 1, 1, '2024-01-01 00:00:12');
CREATE TABLE sys.databases (name text, database_id int, snapshot_isolation_state smallint);
CREATE TABLE sys.schemas (name text, schema_id int, principal_id int);
CREATE TABLE sys.tables (name text, object_id int, schema_id int);
CREATE TABLE sys.objects (name text, object_id int, schema_id int, type char(2));
CREATE TABLE "INFORMATION_SCHEMA"."COLUMNS" ("TABLE_SCHEMA" text, "TABLE_NAME" text,
    "COLUMN_NAME" text, "ORDINAL_POSITION" int, "IS_NULLABLE" text, "DATA_TYPE" text,
    "CHARACTER_MAXIMUM_LENGTH" int, "NUMERIC_PRECISION" smallint, "NUMERIC_SCALE" int,
    "DATETIME_PRECISION" smallint);
CREATE TABLE "INFORMATION_SCHEMA"."TABLES" ("TABLE_SCHEMA" text, "TABLE_NAME" text, "TABLE_TYPE" text);
CREATE TABLE "INFORMATION_SCHEMA"."TABLE_CONSTRAINTS" ("CONSTRAINT_NAME" text, "TABLE_SCHEMA" text,
    "TABLE_NAME" text, "CONSTRAINT_TYPE" text);
CREATE TABLE "INFORMATION_SCHEMA"."KEY_COLUMN_USAGE" ("CONSTRAINT_NAME" text, "TABLE_SCHEMA" text,
    "TABLE_NAME" text, "COLUMN_NAME" text, "ORDINAL_POSITION" int);
CREATE TABLE sim.columns (table_schema text, table_name text, column_name text, ordinal int,
    data_type text, max_length int, numeric_precision int, numeric_scale int,
    datetime_precision int, is_nullable boolean);
"#;

/// Batches beyond `CASES` whose translation must run too (procedural calls and DDL).
const MORE_CASES: &[&str] = &[
    "ALTER DATABASE EdFi_Ods SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)",
    "ALTER TABLE edfi.Student DISABLE CHANGE_TRACKING; ALTER DATABASE EdFi_Ods SET CHANGE_TRACKING = OFF",
    "ALTER TABLE [edfi].[Student] ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = ON)",
    "ALTER TABLE edfi.Student DISABLE CHANGE_TRACKING",
    "DROP TABLE [edfi].[T]; CREATE SCHEMA [x]; DROP SCHEMA x",
    "DELETE TOP (@n) t; SELECT 1",
    "SELECT @P2, @p1, @P2",
    "SELECT SERVERPROPERTY(N'Edition'), SERVERPROPERTY('NoSuchProperty'), DB_NAME(5), SCHEMA_NAME(1)",
    "SELECT * FROM a LEFT JOIN b ON a.x = b.x RIGHT OUTER JOIN c ON 1 = 1 CROSS JOIN d",
    "SELECT TOP (@P1 + 1) a FROM t UNION ALL SELECT TOP 1 a FROM t",
    "SELECT COUNT(*), COUNT(DISTINCT a), count_big(a) FROM t",
    "SELECT * FROM t WHERE a NOT IN (1) AND a NOT BETWEEN 1 AND 2 AND CAST(a AS varchar(9)) NOT LIKE 'x!%' ESCAPE '!' AND a IS NOT NULL",
    "SELECT CAST(a AS int), CAST(a AS bigint), CAST(a AS nvarchar(max)), CAST('ab' AS varbinary(16)), CAST(a AS char(2)), CAST(a AS float) FROM t",
    "SELECT a + a - 1, -a, -(a + 1), LEN(N'ab '), UPPER('x') + LOWER('Y'), CONCAT(1, 'a') FROM t",
    "INSERT t VALUES (-1)",
    "SELECT ct.SYS_CHANGE_VERSION, CHANGE_TRACKING_CURRENT_VERSION() AS v FROM CHANGETABLE(CHANGES edfi.Student, NULL) AS ct WHERE ct.SYS_CHANGE_VERSION <= CHANGE_TRACKING_CURRENT_VERSION()",
    "EXEC sim.cleanup_change_tracking",
];

/// An empty database of its own (`odssim_sql_<pid>_<n>`), dropped when the guard goes out of
/// scope.
async fn empty_db() -> (TestDatabase, Client) {
    let db = TestDatabase::create("odssim_sql", "").await;
    let client = db.connect().await;
    (db, client)
}

/// A database with the stand-ins and the user tables.
async fn stand_in_db() -> (TestDatabase, Client) {
    let (db, client) = empty_db().await;
    client.batch_execute(STAND_INS).await.expect("stand-ins");
    client
        .batch_execute(USER_TABLES)
        .await
        .expect("user tables");
    (db, client)
}

fn queries(batch: &str) -> Vec<(String, Vec<String>)> {
    translate(batch)
        .unwrap_or_else(|e| panic!("{batch}: {e}"))
        .into_iter()
        .filter_map(|s| match s {
            Statement::Query { sql, params, .. } => Some((sql, params)),
            _ => None,
        })
        .collect()
}

/// The single query of a batch.
fn one(batch: &str) -> String {
    let mut qs = queries(batch);
    assert_eq!(qs.len(), 1, "{batch}");
    qs.remove(0).0
}

/// Runs every query of each batch in a transaction of its own (rolled back): queries with
/// parameters are prepared (parsed, resolved and typed), the others run. Returns the failures.
async fn run_all<'a>(client: &Client, batches: impl Iterator<Item = &'a &'a str>) -> Vec<String> {
    let mut failures = Vec::new();
    for batch in batches {
        client.batch_execute("BEGIN").await.expect("begin");
        for (sql, params) in queries(batch) {
            let result = if params.is_empty() {
                client.query(sql.as_str(), &[]).await.map(|_| ())
            } else {
                client.prepare(&sql).await.map(|s| {
                    assert_eq!(s.params().len(), params.len(), "{sql}");
                })
            };
            if let Err(e) = result {
                failures.push(format!("{batch}\n  → {sql}\n  ✗ {e:?}"));
                break;
            }
        }
        client.batch_execute("ROLLBACK").await.expect("rollback");
    }
    failures
}

#[tokio::test]
async fn translated_queries_run_on_postgresql() {
    let (_db, client) = stand_in_db().await;
    let failures = run_all(&client, CASES.iter().chain(MORE_CASES)).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same queries against the real catalog and Change Tracking objects of `ct::install`,
/// with change tracking turned on by translated T-SQL.
#[tokio::test]
async fn translated_queries_run_on_the_ct_install() {
    let (_db, client) = empty_db().await;
    crate::ct::install(&client, "EdFi_Ods")
        .await
        .expect("ct::install");
    client
        .batch_execute(USER_TABLES)
        .await
        .expect("user tables");
    let setup = [
        "ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)",
        "ALTER TABLE [edfi].[Student] ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = ON)",
    ];
    for batch in setup {
        for (sql, _) in queries(batch) {
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
    }
    // Enabling tracking on edfi.Student again is an error; setup did it with that very batch.
    let failures = run_all(
        &client,
        CASES
            .iter()
            .chain(MORE_CASES)
            .filter(|b| !b.contains("ENABLE CHANGE_TRACKING")),
    )
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn changetable_poll_joins_rows_and_alias_ct_does_not_clash_with_schema_ct() {
    let (_db, client) = stand_in_db().await;
    let rows = client
        .query(one(CASES[2]).as_str(), &[&10i64, &15i64])
        .await
        .expect("poll query");
    type PollRow = (i64, String, i32, Option<String>, Option<String>);
    let got: Vec<PollRow> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(4),
                r.get::<_, Option<chrono::NaiveDateTime>>(5)
                    .map(|t| t.to_string()),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                12,
                "U".into(),
                2,
                Some("Bob".into()),
                Some("2024-01-01 00:00:12".into())
            ),
            (15, "D".into(), 3, None, None),
        ]
    );
    let rows = client
        .query(one(MORE_CASES[15]).as_str(), &[])
        .await
        .expect("alias ct with ct.current_version()");
    let got: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(10, 15), (12, 15), (15, 15)]);
}

#[tokio::test]
async fn keyset_chunk_reads_the_next_keys_in_order() {
    let (_db, client) = stand_in_db().await;
    let rows = client
        .query(one(CASES[3]).as_str(), &[&4i64, &2i32, &1i32])
        .await
        .expect("keyset chunk");
    let keys: Vec<(i32, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(keys, vec![(2, 2), (3, 0), (3, 1), (3, 2)]);
}

#[tokio::test]
async fn delete_top_deletes_at_most_n_matching_rows() {
    let (_db, client) = stand_in_db().await;
    let deleted = client
        .execute(
            one("DELETE TOP (@P1) FROM [edfi].[T] WHERE [a] < @P2").as_str(),
            &[&4i64, &5i32],
        )
        .await
        .expect("delete top");
    assert_eq!(deleted, 4);
    let left: i64 = client
        .query_one(
            one("SELECT COUNT_BIG(*) FROM edfi.T WHERE a < 5").as_str(),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 11);
}

#[tokio::test]
async fn heartbeat_update_advances_the_row() {
    let (_db, client) = stand_in_db().await;
    let updated = client
        .execute(one(CASES[9]).as_str(), &[])
        .await
        .expect("heartbeat");
    assert_eq!(updated, 1);
    let row = client
        .query_one(
            one("SELECT [seq], [beat_at] FROM [edfi_cdc].[heartbeat] WHERE [id] = 1").as_str(),
            &[],
        )
        .await
        .expect("read heartbeat");
    assert_eq!(row.get::<_, i64>(0), 8);
    assert!(row.get::<_, Option<chrono::NaiveDateTime>>(1).is_some());
}

/// The single value of a one-row, one-column query.
async fn value<T: for<'a> tokio_postgres::types::FromSql<'a>>(client: &Client, batch: &str) -> T {
    let sql = one(batch);
    client
        .query_one(sql.as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{batch}\n  → {sql}\n  ✗ {e:?}"))
        .get(0)
}

#[tokio::test]
async fn binary_values_convert_to_integers_as_on_sql_server() {
    let (_db, client) = empty_db().await;
    // md5('é') (UTF-8 c3 a9) = 66ddcd97 cfdeabb2 f6fb8a99 9b4bc76f; md5('b') = 92eb5ffe e6ae2fec …
    let md5_e =
        "HASHBYTES('MD5', CONVERT(varchar(max), N'é' COLLATE Latin1_General_100_BIN2_UTF8))";
    let md5_b = "HASHBYTES('MD5', 'b')";
    let cases: [(String, i64); 7] = [
        (
            format!("SELECT CAST(SUBSTRING({md5_e}, 1, 4) AS BIGINT)"),
            0x66dd_cd97,
        ),
        (
            format!("SELECT CAST(SUBSTRING({md5_e}, 5, 4) AS BIGINT)"),
            0xcfde_abb2,
        ),
        // 4 bytes are never negative as a bigint, 8 bytes are two's complement.
        (
            format!("SELECT CAST(SUBSTRING({md5_b}, 1, 4) AS BIGINT)"),
            0x92eb_5ffe,
        ),
        (
            format!("SELECT CAST(SUBSTRING({md5_b}, 1, 8) AS BIGINT)"),
            0x92eb_5ffe_e6ae_2fec_u64 as i64,
        ),
        // A longer value keeps its rightmost bytes, a shorter one is zero-padded on the left.
        (
            format!("SELECT CAST({md5_b} AS BIGINT)"),
            0x3ad7_1c77_7531_578f,
        ),
        ("SELECT CONVERT(bigint, 0x0102)".to_string(), 258),
        ("SELECT CAST(0x AS bigint)".to_string(), 0),
    ];
    for (batch, expected) in cases {
        assert_eq!(value::<i64>(&client, &batch).await, expected, "{batch}");
    }
    let ints: [(String, i32); 2] = [
        (
            format!("SELECT CAST(SUBSTRING({md5_b}, 1, 4) AS int)"),
            0x92eb_5ffe_u32 as i32,
        ),
        (
            "SELECT CONVERT(int, 0x01020304050607)".to_string(),
            0x0405_0607,
        ),
    ];
    for (batch, expected) in ints {
        assert_eq!(value::<i32>(&client, &batch).await, expected, "{batch}");
    }
    let sha: Vec<u8> = value(&client, "SELECT HASHBYTES('SHA2_256', 'abc')").await;
    assert_eq!(
        sha.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[tokio::test]
async fn convert_styles_print_as_on_sql_server() {
    let (_db, client) = empty_db().await;
    let t = |literal: &str, ty: &str, len: u32, style: u32| {
        format!(
            "SELECT CONVERT(varchar({len}), CAST(CAST('{literal}' AS datetime2) AS {ty}), {style})"
        )
    };
    let cases = [
        (
            t("2024-01-02 03:04:05", "datetime2(6)", 26, 121),
            "2024-01-02 03:04:05.000000",
        ),
        (
            t("2024-01-02 03:04:05.000123", "datetime2(6)", 26, 121),
            "2024-01-02 03:04:05.000123",
        ),
        (
            t("2024-01-02 03:04:05.5", "datetime2(6)", 26, 21),
            "2024-01-02 03:04:05.500000",
        ),
        (
            t("2024-01-02 03:04:05.123456", "datetime2(3)", 23, 121),
            "2024-01-02 03:04:05.123",
        ),
        // Rounded to the type's digits, as SQL Server rounds.
        (
            t("2024-01-02 03:04:05.9996", "datetime2(3)", 23, 121),
            "2024-01-02 03:04:06.000",
        ),
        (
            t("2024-01-02 03:04:05.5", "datetime2(0)", 19, 121),
            "2024-01-02 03:04:06",
        ),
        (
            "SELECT CONVERT(varchar(26), CAST(CAST(CAST('2024-01-02 03:04:05.123456' \
             AS datetime2) AS datetime2(3)) AS datetime2(6)), 121)"
                .to_string(),
            "2024-01-02 03:04:05.123000",
        ),
        (
            t("2024-01-02 03:04:05.123456", "datetime2", 27, 25),
            "2024-01-02 03:04:05.1234560",
        ),
        (t("0001-01-02 03:04:05", "date", 10, 121), "0001-01-02"),
        (
            t("2024-01-02 03:04:05", "datetime2(6)", 10, 23),
            "2024-01-02",
        ),
        (
            "SELECT CONVERT(char(8), 0x4E616d65, 2)".to_string(),
            "4E616D65",
        ),
        (
            "SELECT CONVERT(varchar(max), 0x00ff10, 2)".to_string(),
            "00FF10",
        ),
    ];
    for (batch, expected) in cases {
        assert_eq!(value::<String>(&client, &batch).await, expected, "{batch}");
    }
}

/// The range and row hashes of `edfi-cdc verify` (`CASES[35]`, `CASES[36]`) over `edfi.Verify`:
/// each row's hash is the MD5 of the text SQL Server builds for it.
#[tokio::test]
async fn verify_hashes_are_md5_of_the_canonical_row_text() {
    let (_db, client) = stand_in_db().await;
    let texts = [
        (1, "+1|+2010-01-01|+2024-01-02 03:04:05.000000|+00112233-4455-6677-8899-aabbccddeeff|+1|+00FF|+Zoë"),
        (2, "+2|-|+2024-01-02 03:04:05.000123|-|+0|-|-"),
        (3, "+3|+0001-12-31|-|-|-|+|+"),
    ];
    let mut expected = Vec::new();
    for (key, text) in texts {
        let md5: String = client
            .query_one("SELECT upper(md5($1::text))", &[&text])
            .await
            .expect("md5")
            .get(0);
        expected.push((key, md5));
    }
    let rows = client
        .query(one(CASES[36]).as_str(), &[])
        .await
        .expect("row hashes");
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, expected);

    let word = |hex: &str, i: usize| i64::from_str_radix(&hex[8 * i..8 * i + 8], 16).unwrap();
    let row = client
        .query_one(one(CASES[35]).as_str(), &[&1i32, &3i32])
        .await
        .expect("range hash");
    let (count, sum1, sum2): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(count, 2);
    assert_eq!(
        sum1,
        expected[..2].iter().map(|(_, h)| word(h, 0)).sum::<i64>()
    );
    assert_eq!(
        sum2,
        expected[..2].iter().map(|(_, h)| word(h, 1)).sum::<i64>()
    );

    let flags = client
        .query(
            one("SELECT CONVERT(varchar(1), CAST([Flag] AS int)) FROM edfi.Verify ORDER BY StudentUSI")
                .as_str(),
            &[],
        )
        .await
        .expect("bit as int");
    let flags: Vec<Option<String>> = flags.iter().map(|r| r.get(0)).collect();
    assert_eq!(flags, vec![Some("1".into()), Some("0".into()), None]);
}
