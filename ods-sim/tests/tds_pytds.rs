//! An independent client, python-tds (pytds), reads the same typed result sets as tiberius with
//! identical values, and writes Ed-Fi rows as the Ed-Fi API does (identity and defaults).
//! `tests/tds_pytds/install.sh` installs pytds into a cache outside the repository when missing.

mod tds_support;

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use serde_json::{json, Map, Value};
use tds_support::*;
use tiberius::numeric::Numeric;
use tiberius::Row;
use uuid::Uuid;

fn decimal_string(n: Numeric) -> String {
    let scale = n.scale() as u32;
    let abs = n.value().unsigned_abs();
    let sign = if n.value() < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{abs}");
    }
    let p = 10u128.pow(scale);
    format!(
        "{sign}{}.{:0width$}",
        abs / p,
        abs % p,
        width = scale as usize
    )
}

/// A tiberius row of dbo.AllTypes as the JSON the python script prints.
fn row_json(row: &Row) -> Value {
    let mut out = Map::new();
    for (i, c) in row.columns().iter().enumerate() {
        let v = match c.name() {
            "Id" => json!(row.get::<i32, _>(i)),
            "B" => json!(row.get::<bool, _>(i)),
            "Tiny" => json!(row.get::<u8, _>(i)),
            "Small" => json!(row.get::<i16, _>(i)),
            "Big" => json!(row.get::<i64, _>(i)),
            "Dec" | "Wide" => json!(row.get::<Numeric, _>(i).map(decimal_string)),
            "Flt" => json!(row.get::<f64, _>(i)),
            "NV" | "NVMax" | "V" | "NC" => json!(row.get::<&str, _>(i)),
            "D" => json!(row.get::<NaiveDate, _>(i).map(|d| d.to_string())),
            "DT2" | "DT23" | "DTm" => json!(row.get::<NaiveDateTime, _>(i).map(|d| format!(
                "{:04}-{}",
                d.year(),
                d.format("%m-%dT%H:%M:%S%.6f")
            ))),
            "G" => json!(row.get::<Uuid, _>(i).map(|g| g.to_string())),
            "VB" | "VBMax" => json!(row
                .get::<&[u8], _>(i)
                .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>())),
            other => panic!("unexpected column {other}"),
        };
        out.insert(c.name().to_string(), v);
    }
    Value::Object(out)
}

/// `datetime` counts 1/300 s: tiberius shows 13:14:15.123 where pytds shows 13:14:15.123333
/// for the same 37 ticks. Compare such values to the millisecond.
fn millis(v: &mut Value) {
    if let Value::String(s) = v {
        s.truncate(23);
    }
}

/// Run `tests/tds_pytds/{script}` against `server` with python-tds (installed into a cache
/// outside the repository when missing); the JSON it prints.
async fn python(script: &str, server: &TestServer) -> Value {
    let dir = env!("CARGO_MANIFEST_DIR");
    let install = tokio::process::Command::new("bash")
        .arg(format!("{dir}/tests/tds_pytds/install.sh"))
        .output()
        .await
        .expect("run install.sh");
    assert!(
        install.status.success(),
        "installing python-tds failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let pythonpath = String::from_utf8(install.stdout)
        .unwrap()
        .trim()
        .to_string();
    let output = tokio::process::Command::new("python3")
        .arg(format!("{dir}/tests/tds_pytds/{script}"))
        .args([
            "127.0.0.1",
            &server.addr.port().to_string(),
            DATABASE,
            PASSWORD,
        ])
        .env("PYTHONPATH", &pythonpath)
        .output()
        .await
        .expect("run python3");
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from python")
}

#[tokio::test]
async fn tds_pytds_reads_the_same_values_as_tiberius() {
    let server = TestServer::with_all_types().await;

    let mut client = server.connect().await;
    let rows = client
        .simple_query("SELECT * FROM dbo.AllTypes ORDER BY Id")
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let tiberius_rows: Vec<Value> = rows.iter().map(row_json).collect();

    let mut py = python("read_all_types.py", &server).await;
    let mut tiberius_rows = Value::Array(tiberius_rows);
    for key in ["batch", "rpc"] {
        for row in py[key].as_array_mut().expect("rows") {
            millis(&mut row["DTm"]);
        }
    }
    for row in tiberius_rows.as_array_mut().expect("rows") {
        millis(&mut row["DTm"]);
    }
    let tiberius_rows = tiberius_rows.as_array().unwrap().clone();

    let differences: Vec<String> = tiberius_rows
        .iter()
        .enumerate()
        .flat_map(|(i, row)| {
            let py_row = &py["batch"][i];
            row.as_object()
                .unwrap()
                .iter()
                .filter(|(k, v)| py_row[k.as_str()] != **v)
                .map(|(k, v)| format!("row {i} {k}: tiberius {v}, pytds {}", py_row[k.as_str()]))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(differences.is_empty(), "{differences:#?}");
    assert_eq!(py["batch"], Value::Array(tiberius_rows.clone()));
    assert!(
        py["rpc"] == Value::Array(vec![tiberius_rows[0].clone()]),
        "{}",
        py["rpc"]
    );
    assert_eq!(py["params"], json!([{"n": null, "s": "ñ"}]));
    // `edfi-cdc verify`'s row hash, computed by the simulator and by python's hashlib.
    assert_eq!(py["row_hash"], py["row_hash_expected"]);
    assert_eq!(py["row_hash"].as_array().map(Vec::len), Some(3));
    assert_eq!(py["error"], json!(208));
    // Spot checks that the shared format is what it claims to be.
    assert_eq!(tiberius_rows[0]["NV"], json!("Zoë 日本 ñ"));
    assert_eq!(tiberius_rows[0]["Dec"], json!("12345678901234.5678"));
    assert_eq!(tiberius_rows[1]["Dec"], json!("-0.0001"));
    assert_eq!(
        tiberius_rows[0]["G"],
        json!("00112233-4455-6677-8899-aabbccddeeff")
    );
}

/// The Ed-Fi `Student` table created from its T-SQL DDL (identity key, `getdate()` and `newid()`
/// defaults), written by python-tds as the Ed-Fi API writes it.
#[tokio::test]
async fn identity_columns_and_defaults_take_what_the_ed_fi_api_writes() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let student = ods_sim::edfi::table("Student").expect("the Student table");
    let ddl = format!(
        "CREATE SCHEMA edfi; {} CREATE TABLE dbo.Numbered (N int IDENTITY(1,1) NOT NULL PRIMARY KEY, \
         V int NULL); CREATE TABLE dbo.Plain (A int NOT NULL PRIMARY KEY)",
        ods_sim::edfi::create_table_tsql(&student)
    );
    client
        .simple_query(ddl)
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();

    let py = python("identity.py", &server).await;
    assert_eq!(py["first"], json!([null, 1]), "{py}");
    assert_eq!(py["second"], json!(2), "{py}");
    assert_eq!(py["explicit_while_off"], json!(544), "{py}");
    assert_eq!(py["omitted_while_on"], json!(545), "{py}");
    assert_eq!(py["second_table_on"], json!(8107), "{py}");
    // An explicit value above the seed moves it, as SQL Server's identity does.
    assert_eq!(py["after_explicit"], json!(101), "{py}");
    assert_eq!(py["no_identity"], json!(8106), "{py}");
    assert_eq!(
        py["rows"],
        json!([
            [1, "S-1", 1, 1],
            [2, "S-2", 1, 1],
            [100, "S-100", 1, 1],
            [101, "S-4", 1, 1]
        ]),
        "{py}"
    );
    assert_eq!(py["distinct_ids"], json!(4), "{py}");
    assert_eq!(py["new_session"], json!([null, null]), "{py}");
}
