//! Streaming a large result, and cancelling one with an attention.

mod tds_support;

use futures_util::TryStreamExt;
use ods_sim::types::SqlType;
use std::time::Instant;
use tds_support::raw::{final_done, RawClient};
use tds_support::*;

const ROWS: i64 = 1_000_000;

/// A million rows reach tiberius and a raw TDS reader complete and exact. Rates are printed,
/// not asserted: tests run in parallel, so the timed comparison is the benchmark below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tds_streams_a_million_rows_exactly() {
    let server = big_table().await;
    for columns in [
        &["Id", "Val", "Name", "Amount", "Ts"][..],
        &["Id", "Val", "Amount", "Ts"],
    ] {
        Measure::new(&server, columns, 1).await.print();
    }
}

/// Benchmark (run alone by `scripts/bench`): the server streams at no less than half the rate
/// at which psql COPYs the same rows out of the backing database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: timed, run alone by scripts/bench"]
async fn tds_stream_benchmark() {
    let server = big_table().await;
    let all = Measure::new(&server, &["Id", "Val", "Name", "Amount", "Ts"], 3).await;
    let no_text = Measure::new(&server, &["Id", "Val", "Amount", "Ts"], 3).await;
    all.print();
    no_text.print();
    assert!(
        all.psql / all.raw >= 0.5,
        "the server streams at {:.2} of psql COPY",
        all.psql / all.raw
    );
    assert!(
        no_text.psql / no_text.tiberius >= 0.5,
        "tiberius reads at {:.2} of psql COPY",
        no_text.psql / no_text.tiberius
    );
}

async fn big_table() -> TestServer {
    let server = TestServer::start().await;
    server
        .db
        .create_table(&table(
            "Big",
            vec![
                col("Id", SqlType::BigInt, false),
                col("Val", SqlType::Int, false),
                col("Name", SqlType::NVarChar(Some(50)), true),
                col(
                    "Amount",
                    SqlType::Decimal {
                        precision: 12,
                        scale: 2,
                    },
                    true,
                ),
                col("Ts", SqlType::DateTime2 { scale: 7 }, true),
            ],
        ))
        .await;
    server
        .db
        .client
        .batch_execute(&format!(
            r#"INSERT INTO dbo."Big"
               SELECT g, g % 1000, 'name ' || g, g / 100.0,
                      timestamp '2024-01-01' + g * interval '1 second'
               FROM generate_series(1, {ROWS}) g;
               ANALYZE dbo."Big""#
        ))
        .await
        .unwrap();

    server
}

/// Best-of-`rounds` seconds to read all rows of some columns of dbo.Big: psql COPY, a raw TDS
/// reader (the server's own pace), and tiberius (which decodes strings a byte at a time, so it
/// is the bottleneck for text-heavy results).
struct Measure {
    columns: String,
    psql: f64,
    raw: f64,
    tiberius: f64,
}

impl Measure {
    fn print(&self) {
        println!(
            "{}: psql COPY {:.2} s ({:.0} rows/s); raw TDS reader {:.2} s (ratio {:.2}); \
             tiberius {:.2} s (ratio {:.2})",
            self.columns,
            self.psql,
            ROWS as f64 / self.psql,
            self.raw,
            self.psql / self.raw,
            self.tiberius,
            self.psql / self.tiberius
        );
    }

    async fn new(server: &TestServer, columns: &[&str], rounds: usize) -> Measure {
        let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
        let copy_sql = format!(
            r#"COPY (SELECT {} FROM dbo."Big") TO STDOUT"#,
            quoted.join(", ")
        );
        let tsql = format!("SELECT {} FROM dbo.Big", columns.join(", "));
        let mut m = Measure {
            columns: columns.join(","),
            psql: f64::MAX,
            raw: f64::MAX,
            tiberius: f64::MAX,
        };
        let mut raw = RawClient::connect(server.addr, "sa", PASSWORD).await;
        let mut client = server.connect().await;
        for _ in 0..rounds {
            let started = Instant::now();
            let status = tokio::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &server.db.pg_config().get_ports()[0].to_string(),
                ])
                .args(["-U", "postgres", "-d", &server.db.name])
                .args(["-c", &copy_sql])
                .stdout(std::process::Stdio::null())
                .status()
                .await
                .expect("run psql");
            assert!(status.success());
            m.psql = m.psql.min(started.elapsed().as_secs_f64());

            let started = Instant::now();
            raw.batch(&tsql).await;
            let (_, tail) = raw.drain_message().await;
            assert_eq!(final_done(&tail), (0x10, ROWS as u64));
            m.raw = m.raw.min(started.elapsed().as_secs_f64());

            let started = Instant::now();
            let mut stream = client
                .query(tsql.as_str(), &[])
                .await
                .unwrap()
                .into_row_stream();
            let mut n = 0i64;
            let mut sum = 0i64;
            while let Some(row) = stream.try_next().await.unwrap() {
                sum += row.get::<i64, _>(0).unwrap();
                n += 1;
            }
            assert_eq!(n, ROWS);
            assert_eq!(sum, ROWS * (ROWS + 1) / 2);
            m.tiberius = m.tiberius.min(started.elapsed().as_secs_f64());
        }
        m
    }
}

#[tokio::test]
async fn tds_attention_cancels_a_long_result_and_the_connection_goes_on() {
    let server = TestServer::start().await;
    server
        .db
        .create_table(&table("N", vec![col("Id", SqlType::Int, false)]))
        .await;
    server
        .db
        .client
        .batch_execute(r#"INSERT INTO dbo."N" SELECT generate_series(1, 3000)"#)
        .await
        .unwrap();
    let mut c = RawClient::connect(server.addr, "sa", PASSWORD).await;
    // 9 million rows: far more than is read before the attention.
    c.batch("SELECT a.Id, b.Id FROM dbo.N a CROSS JOIN dbo.N b")
        .await;
    let (status, _) = c.read_packet().await;
    assert_eq!(status & 1, 0, "the result should span many packets");
    let started = Instant::now();
    c.attention().await;
    let rest = c.read_message().await;
    let (status, _) = final_done(&rest);
    assert_eq!(
        status & 0x20,
        0x20,
        "DONE_ATTN expected, status {status:#x}"
    );
    assert!(started.elapsed().as_secs() < 10);

    // The same connection runs the next batch.
    c.batch("SELECT 1").await;
    let msg = c.read_message().await;
    assert!(msg.contains(&0xD1), "a ROW is expected");
    assert_eq!(final_done(&msg), (0x10, 1));

    // An attention while idle is acknowledged too.
    c.attention().await;
    let msg = c.read_message().await;
    assert_eq!(final_done(&msg).0 & 0x20, 0x20);
    c.batch("SELECT 2").await;
    assert_eq!(final_done(&c.read_message().await), (0x10, 1));
}
