//! Every supported type reads back with exact values through tiberius, as a batch and as RPC
//! with typed parameters; NULLs of every type; non-ASCII text.

mod tds_support;

use chrono::{NaiveDate, NaiveDateTime};
use tds_support::*;
use tiberius::numeric::Numeric;
use tiberius::Row;
use uuid::Uuid;

fn dt(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
}

fn numeric(value: i128, scale: u8) -> Numeric {
    Numeric::new_with_scale(value, scale)
}

fn check_row(row: &Row) {
    let id: i32 = row.get("Id").unwrap();
    match id {
        1 => {
            assert_eq!(row.get::<bool, _>("B"), Some(true));
            assert_eq!(row.get::<u8, _>("Tiny"), Some(200));
            assert_eq!(row.get::<i16, _>("Small"), Some(-12345));
            assert_eq!(row.get::<i64, _>("Big"), Some(9007199254740993));
            assert_eq!(
                row.get::<Numeric, _>("Dec"),
                Some(numeric(123456789012345678, 4))
            );
            assert_eq!(
                row.get::<Numeric, _>("Wide"),
                Some(numeric(-12345678901234567890123456789012123456, 6))
            );
            assert_eq!(row.get::<f64, _>("Flt"), Some(std::f64::consts::PI));
            assert_eq!(row.get::<&str, _>("NV"), Some("Zoë 日本 ñ"));
            assert_eq!(
                row.get::<&str, _>("NVMax").map(str::to_string),
                Some("Ωmega ".repeat(2000))
            );
            assert_eq!(row.get::<&str, _>("V"), Some("Zoë ñ café"));
            assert_eq!(row.get::<&str, _>("NC"), Some("ab "));
            assert_eq!(
                row.get::<NaiveDate, _>("D"),
                NaiveDate::from_ymd_opt(2024, 2, 29)
            );
            assert_eq!(
                row.get::<NaiveDateTime, _>("DT2"),
                Some(dt("2024-02-29 13:14:15.123456"))
            );
            assert_eq!(
                row.get::<NaiveDateTime, _>("DT23"),
                Some(dt("2024-02-29 13:14:15.123"))
            );
            // datetime has a resolution of 1/300 s: .123 is stored as .1233333.
            let dtm = row.get::<NaiveDateTime, _>("DTm").unwrap();
            assert_eq!(
                dtm.and_utc().timestamp_millis(),
                dt("2024-02-29 13:14:15.123").and_utc().timestamp_millis()
            );
            assert_eq!(
                row.get::<Uuid, _>("G"),
                Some(Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap())
            );
            assert_eq!(row.get::<&[u8], _>("VB"), Some(&[0x00, 0xff, 0x10][..]));
            assert_eq!(row.get::<&[u8], _>("VBMax"), Some(&[][..]));
        }
        2 => {
            assert_eq!(row.get::<bool, _>("B"), Some(false));
            assert_eq!(row.get::<u8, _>("Tiny"), Some(0));
            assert_eq!(row.get::<i16, _>("Small"), Some(i16::MIN));
            assert_eq!(row.get::<i64, _>("Big"), Some(i64::MIN));
            assert_eq!(row.get::<Numeric, _>("Dec"), Some(numeric(-1, 4)));
            assert_eq!(
                row.get::<Numeric, _>("Wide"),
                Some(numeric(99999999999999999999999999999999999999, 6))
            );
            assert_eq!(row.get::<f64, _>("Flt"), Some(-1e-300));
            assert_eq!(row.get::<&str, _>("NV"), Some(""));
            assert_eq!(row.get::<&str, _>("NVMax"), Some(""));
            assert_eq!(row.get::<&str, _>("V"), Some(""));
            assert_eq!(row.get::<&str, _>("NC"), Some("xyz"));
            assert_eq!(
                row.get::<NaiveDate, _>("D"),
                NaiveDate::from_ymd_opt(1, 1, 1)
            );
            assert_eq!(
                row.get::<NaiveDateTime, _>("DT2"),
                Some(dt("0001-01-01 00:00:00"))
            );
            assert_eq!(
                row.get::<NaiveDateTime, _>("DT23"),
                Some(dt("9999-12-31 23:59:59.999"))
            );
            assert_eq!(
                row.get::<NaiveDateTime, _>("DTm"),
                Some(dt("1753-01-01 00:00:00"))
            );
            assert_eq!(
                row.get::<Uuid, _>("G"),
                Some(Uuid::parse_str("ffffffff-0000-0000-0000-000000000001").unwrap())
            );
            assert_eq!(row.get::<&[u8], _>("VB"), Some(&[][..]));
            assert_eq!(
                row.get::<&[u8], _>("VBMax"),
                Some(&[0xde, 0xad, 0xbe, 0xef][..])
            );
        }
        3 => {
            for i in 1..row.columns().len() {
                let c = &row.columns()[i];
                let null = match c.name() {
                    "B" => row.get::<bool, _>(i).is_none(),
                    "Tiny" => row.get::<u8, _>(i).is_none(),
                    "Small" => row.get::<i16, _>(i).is_none(),
                    "Big" => row.get::<i64, _>(i).is_none(),
                    "Dec" | "Wide" => row.get::<Numeric, _>(i).is_none(),
                    "Flt" => row.get::<f64, _>(i).is_none(),
                    "NV" | "NVMax" | "V" | "NC" => row.get::<&str, _>(i).is_none(),
                    "D" => row.get::<NaiveDate, _>(i).is_none(),
                    "DT2" | "DT23" | "DTm" => row.get::<NaiveDateTime, _>(i).is_none(),
                    "G" => row.get::<Uuid, _>(i).is_none(),
                    "VB" | "VBMax" => row.get::<&[u8], _>(i).is_none(),
                    other => panic!("unexpected column {other}"),
                };
                assert!(null, "column {} of row 3 is not NULL", c.name());
            }
        }
        other => panic!("unexpected row {other}"),
    }
}

#[tokio::test]
async fn tds_all_types_batch() {
    let server = TestServer::with_all_types().await;
    let mut client = server.connect().await;
    let rows = client
        .simple_query("SELECT * FROM dbo.AllTypes ORDER BY Id")
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let types: Vec<String> = rows[0]
        .columns()
        .iter()
        .map(|c| format!("{}:{:?}", c.name(), c.column_type()))
        .collect();
    assert_eq!(
        types.join(" "),
        "Id:Int4 B:Bitn Tiny:Int1 Small:Int2 Big:Int8 Dec:Decimaln Wide:Decimaln Flt:Float8 \
         NV:NVarchar NVMax:NVarchar V:BigVarChar NC:NChar D:Daten DT2:Datetime2 DT23:Datetime2 \
         DTm:Datetimen G:Guid VB:BigVarBin VBMax:BigVarBin"
    );
    for row in &rows {
        check_row(row);
    }
}

#[tokio::test]
async fn tds_all_types_rpc_with_typed_parameters() {
    let server = TestServer::with_all_types().await;
    let mut client = server.connect().await;
    let g = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
    let sql = "SELECT * FROM dbo.AllTypes WHERE B = @P1 AND Tiny = @P2 AND Small = @P3 \
               AND Big = @P4 AND Dec = @P5 AND Flt = @P6 AND NV = @P7 AND V = @P8 AND D = @P9 \
               AND DT2 = @P10 AND G = @P11 AND VB = @P12 AND Id = @P13";
    let rows = client
        .query(
            sql,
            &[
                &true,
                &200u8,
                &-12345i16,
                &9007199254740993i64,
                &numeric(123456789012345678, 4),
                &std::f64::consts::PI,
                &"Zoë 日本 ñ",
                &"Zoë ñ café",
                &NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
                &dt("2024-02-29 13:14:15.123456"),
                &g,
                &[0x00u8, 0xff, 0x10].as_slice(),
                &1i32,
            ],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    check_row(&rows[0]);

    // Parameters echoed back: every type, and NULLs of every type.
    let none_i32: Option<i32> = None;
    let none_str: Option<&str> = None;
    let none_date: Option<NaiveDate> = None;
    let none_uuid: Option<Uuid> = None;
    let none_f64: Option<f64> = None;
    let none_bool: Option<bool> = None;
    let row = client
        .query(
            "SELECT @P1 AS i, @P2 AS s, @P3 AS d, @P4 AS g, @P5 AS n, @P6 AS t, @P7 AS f, \
             @P8 AS b, @P9 AS ni, @P10 AS ns, @P11 AS nd, @P12 AS ng, @P13 AS nf, @P14 AS nb, \
             @P15 AS long",
            &[
                &-7i32,
                &"Zoë 日本 ñ",
                &NaiveDate::from_ymd_opt(1999, 12, 31).unwrap(),
                &g,
                &numeric(-12345, 2),
                &dt("2001-02-03 04:05:06.7"),
                &0.5f64,
                &false,
                &none_i32,
                &none_str,
                &none_date,
                &none_uuid,
                &none_f64,
                &none_bool,
                &"x".repeat(5000).as_str(),
            ],
        )
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>("i"), Some(-7));
    assert_eq!(row.get::<&str, _>("s"), Some("Zoë 日本 ñ"));
    assert_eq!(
        row.get::<NaiveDate, _>("d"),
        NaiveDate::from_ymd_opt(1999, 12, 31)
    );
    assert_eq!(row.get::<Uuid, _>("g"), Some(g));
    assert_eq!(
        row.get::<Numeric, _>("n")
            .map(|n| n.value() * 10i128.pow(10 - n.scale() as u32)),
        Some(-12345 * 10i128.pow(8))
    );
    assert_eq!(
        row.get::<NaiveDateTime, _>("t"),
        Some(dt("2001-02-03 04:05:06.7"))
    );
    assert_eq!(row.get::<f64, _>("f"), Some(0.5));
    assert_eq!(row.get::<bool, _>("b"), Some(false));
    assert_eq!(row.get::<i32, _>("ni"), None);
    assert_eq!(row.get::<&str, _>("ns"), None);
    assert_eq!(row.get::<NaiveDate, _>("nd"), None);
    assert_eq!(row.get::<Uuid, _>("ng"), None);
    assert_eq!(row.get::<f64, _>("nf"), None);
    assert_eq!(row.get::<bool, _>("nb"), None);
    assert_eq!(row.get::<&str, _>("long").map(str::len), Some(5000));
}

#[tokio::test]
async fn tds_insert_with_parameters_round_trips() {
    let server = TestServer::start().await;
    server.db.create_table(&all_types_table()).await;
    let mut client = server.connect().await;
    let g = Uuid::new_v4();
    client
        .execute(
            "INSERT INTO dbo.AllTypes (Id, B, Tiny, Small, Big, Dec, Wide, Flt, NV, NVMax, V, NC, \
             D, DT2, DT23, DTm, G, VB, VBMax) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, \
             @P10, @P11, @P12, @P13, @P14, @P15, @P16, @P17, @P18, @P19)",
            &[
                &1i32,
                &true,
                &200u8,
                &-12345i16,
                &9007199254740993i64,
                &numeric(123456789012345678, 4),
                &numeric(-12345678901234567890123456789012123456, 6),
                &std::f64::consts::PI,
                &"Zoë 日本 ñ",
                &"Ωmega ".repeat(2000).as_str(),
                &"Zoë ñ café",
                &"ab",
                &NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
                &dt("2024-02-29 13:14:15.123456"),
                &dt("2024-02-29 13:14:15.123"),
                &dt("2024-02-29 13:14:15.123"),
                &Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap(),
                &[0x00u8, 0xff, 0x10].as_slice(),
                &[].as_slice(),
            ],
        )
        .await
        .unwrap();
    let _ = g;
    let rows = client
        .query("SELECT * FROM dbo.AllTypes", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    check_row(&rows[0]);
}
