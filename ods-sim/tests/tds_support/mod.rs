//! Shared helpers of the `tds_*` tests: a throw-away PostgreSQL database per test with the CT
//! emulation installed, an in-process ods-sim server on a free loopback port, tiberius clients.

#![allow(dead_code)]

// The backing database: the one of the `ct_*` tests.
#[path = "../ct_support/mod.rs"]
mod ct_support;

pub use ct_support::{TestDb, DATABASE};
use ods_sim::server::{serve, ServerConfig};
use ods_sim::types::{ColumnDef, SqlType, TableDef};
use std::net::SocketAddr;
use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub const PASSWORD: &str = "Sim-Pa55word!";

pub type TdsClient = Client<Compat<TcpStream>>;

/// An ods-sim server on 127.0.0.1 with a database of its own; stopped and dropped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_configured(|_| {}).await
    }

    /// [`TestServer::start`] with its configuration changed by `change`.
    pub async fn start_configured(change: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let db = TestDb::with_prefix("odssim_tds").await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut config = ServerConfig::new(db.pg_config(), DATABASE, PASSWORD);
        change(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, config, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            db,
            stop: Some(stop),
        }
    }

    /// A server whose database has `dbo.AllTypes` ([`all_types_table`]) with
    /// [`ALL_TYPES_ROWS`].
    pub async fn with_all_types() -> TestServer {
        let server = TestServer::start().await;
        server.db.create_table(&all_types_table()).await;
        server
            .db
            .client
            .batch_execute(ALL_TYPES_ROWS)
            .await
            .unwrap();
        server
    }

    pub fn tiberius_config(&self, user: &str, password: &str) -> Config {
        let mut config = Config::new();
        config.host("127.0.0.1");
        config.port(self.addr.port());
        config.authentication(AuthMethod::sql_server(user, password));
        config.encryption(EncryptionLevel::NotSupported);
        config.trust_cert();
        config.database(DATABASE);
        config.application_name("ods-sim tests");
        config
    }

    pub async fn connect_as(&self, user: &str, password: &str) -> tiberius::Result<TdsClient> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        Client::connect(self.tiberius_config(user, password), tcp.compat_write()).await
    }

    pub async fn connect(&self) -> TdsClient {
        self.connect_as("sa", PASSWORD)
            .await
            .expect("tiberius connects")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn col(name: &str, ty: SqlType, nullable: bool) -> ColumnDef {
    ColumnDef {
        name: name.to_string(),
        ty,
        nullable,
        identity: false,
        default: None,
    }
}

pub fn table(name: &str, columns: Vec<ColumnDef>) -> TableDef {
    let primary_key = vec![columns[0].name.clone()];
    TableDef {
        schema: "dbo".to_string(),
        name: name.to_string(),
        columns,
        primary_key,
    }
}

/// The server number of a tiberius error.
pub fn error_number(e: &tiberius::error::Error) -> Option<u32> {
    match e {
        tiberius::error::Error::Server(token) => Some(token.code()),
        _ => None,
    }
}

/// A table with a column of every supported type.
pub fn all_types_table() -> TableDef {
    table(
        "AllTypes",
        vec![
            col("Id", SqlType::Int, false),
            col("B", SqlType::Bit, true),
            col("Tiny", SqlType::TinyInt, true),
            col("Small", SqlType::SmallInt, true),
            col("Big", SqlType::BigInt, true),
            col(
                "Dec",
                SqlType::Decimal {
                    precision: 18,
                    scale: 4,
                },
                true,
            ),
            col(
                "Wide",
                SqlType::Decimal {
                    precision: 38,
                    scale: 6,
                },
                true,
            ),
            col("Flt", SqlType::Float, true),
            col("NV", SqlType::NVarChar(Some(50)), true),
            col("NVMax", SqlType::NVarChar(None), true),
            col("V", SqlType::VarChar(Some(50)), true),
            col("NC", SqlType::NChar(3), true),
            col("D", SqlType::Date, true),
            col("DT2", SqlType::DateTime2 { scale: 7 }, true),
            col("DT23", SqlType::DateTime2 { scale: 3 }, true),
            col("DTm", SqlType::DateTime, true),
            col("G", SqlType::UniqueIdentifier, true),
            col("VB", SqlType::VarBinary(Some(16)), true),
            col("VBMax", SqlType::VarBinary(None), true),
        ],
    )
}

/// Three rows: typical values, extremes, all NULLs.
pub const ALL_TYPES_ROWS: &str = r#"
INSERT INTO dbo."AllTypes" VALUES
 (1, true, 200, -12345, 9007199254740993, 12345678901234.5678,
  -12345678901234567890123456789012.123456, 3.141592653589793,
  'Zoë 日本 ñ', repeat('Ωmega ', 2000), 'Zoë ñ café', 'ab',
  '2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.123', '2024-02-29 13:14:15.123',
  '00112233-4455-6677-8899-aabbccddeeff', '\x00ff10', '\x'),
 (2, false, 0, -32768, -9223372036854775808, -0.0001,
  99999999999999999999999999999999.999999, -1e-300,
  '', '', '', 'xyz',
  '0001-01-01', '0001-01-01 00:00:00', '9999-12-31 23:59:59.999', '1753-01-01 00:00:00',
  'ffffffff-0000-0000-0000-000000000001', '\x', '\xdeadbeef'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL)"#;

/// A minimal TDS client for what tiberius cannot do (attention): raw messages over a socket.
pub mod raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub struct RawClient {
        pub stream: TcpStream,
    }

    fn ucs2(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    /// An empty ALL_HEADERS with a transaction descriptor header (as clients send it).
    fn all_headers() -> Vec<u8> {
        let mut h = Vec::new();
        h.extend(22u32.to_le_bytes());
        h.extend(18u32.to_le_bytes());
        h.extend(2u16.to_le_bytes());
        h.extend(0u64.to_le_bytes());
        h.extend(1u32.to_le_bytes());
        h
    }

    impl RawClient {
        pub async fn send(&mut self, ty: u8, payload: &[u8]) {
            let chunks: Vec<&[u8]> = if payload.is_empty() {
                vec![&[]]
            } else {
                payload.chunks(4000).collect()
            };
            let n = chunks.len();
            for (i, chunk) in chunks.into_iter().enumerate() {
                let len = (chunk.len() + 8) as u16;
                let status = u8::from(i + 1 == n);
                let mut packet = vec![ty, status, (len >> 8) as u8, len as u8, 0, 0, 1, 0];
                packet.extend_from_slice(chunk);
                self.stream.write_all(&packet).await.unwrap();
            }
        }

        /// Read one packet: (status, payload).
        pub async fn read_packet(&mut self) -> (u8, Vec<u8>) {
            let mut header = [0u8; 8];
            self.stream.read_exact(&mut header).await.unwrap();
            let len = u16::from_be_bytes([header[2], header[3]]) as usize;
            let mut payload = vec![0u8; len - 8];
            self.stream.read_exact(&mut payload).await.unwrap();
            (header[1], payload)
        }

        /// Read to the end of a message.
        pub async fn read_message(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            loop {
                let (status, payload) = self.read_packet().await;
                out.extend(payload);
                if status & 1 != 0 {
                    return out;
                }
            }
        }

        /// Read to the end of a message without keeping it: (bytes, the last 13 bytes).
        pub async fn drain_message(&mut self) -> (usize, Vec<u8>) {
            let mut total = 0;
            let mut tail = Vec::new();
            loop {
                let (status, payload) = self.read_packet().await;
                total += payload.len();
                tail.extend_from_slice(&payload);
                if tail.len() > 13 {
                    tail.drain(..tail.len() - 13);
                }
                if status & 1 != 0 {
                    return (total, tail);
                }
            }
        }

        pub async fn batch(&mut self, sql: &str) {
            let mut payload = all_headers();
            payload.extend(ucs2(sql));
            self.send(0x01, &payload).await;
        }

        pub async fn attention(&mut self) {
            self.send(0x06, &[]).await;
        }

        /// PRELOGIN (no encryption) and LOGIN7 with SQL authentication; panics unless a
        /// LOGINACK comes back.
        pub async fn connect(addr: std::net::SocketAddr, user: &str, password: &str) -> RawClient {
            let stream = TcpStream::connect(addr).await.unwrap();
            let mut c = RawClient { stream };
            // VERSION and ENCRYPTION (not supported).
            let prelogin = [
                0x00, 0, 11, 0, 6, 0x01, 0, 17, 0, 1, 0xFF, 1, 0, 0, 0, 0, 0, 2,
            ];
            c.send(0x12, &prelogin).await;
            c.read_message().await;
            let strings = [
                ("raw-host".to_string(), false),
                (user.to_string(), false),
                (password.to_string(), true),
                ("raw".to_string(), false),
                ("127.0.0.1".to_string(), false),
                (String::new(), false),
                ("raw".to_string(), false),
                (String::new(), false),
                (super::DATABASE.to_string(), false),
            ];
            let fixed_len = 36;
            let table_len = strings.len() * 4 + 6 + 4 + 4 + 4 + 4;
            let mut table = Vec::new();
            let mut data = Vec::new();
            for (i, (s, obfuscate)) in strings.iter().enumerate() {
                let mut bytes = ucs2(s);
                if *obfuscate {
                    bytes = bytes.into_iter().map(|b| b.rotate_left(4) ^ 0xA5).collect();
                }
                table.extend(((fixed_len + table_len + data.len()) as u16).to_le_bytes());
                table.extend((s.encode_utf16().count() as u16).to_le_bytes());
                data.extend(bytes);
                if i == 8 {
                    table.extend([0u8; 6]);
                }
            }
            let end = (fixed_len + table_len + data.len()) as u16;
            for _ in 0..3 {
                table.extend(end.to_le_bytes());
                table.extend(0u16.to_le_bytes());
            }
            table.extend(0u32.to_le_bytes());
            let total = fixed_len + table.len() + data.len();
            let mut login = Vec::new();
            login.extend((total as u32).to_le_bytes());
            login.extend(0x7400_0004u32.to_le_bytes());
            login.extend(4096u32.to_le_bytes());
            login.extend([0u8; 12]);
            login.extend([0xE0, 0x03, 0, 0]);
            login.extend([0u8; 8]);
            login.extend(table);
            login.extend(data);
            c.send(0x10, &login).await;
            let response = c.read_message().await;
            assert!(response.contains(&0xAD), "no LOGINACK in {response:?}");
            c
        }
    }

    /// The last token of a response is a DONE with these status bits (and this row count).
    pub fn final_done(message: &[u8]) -> (u16, u64) {
        let done = &message[message.len() - 13..];
        assert_eq!(done[0], 0xFD, "last token is not DONE: {done:?}");
        (
            u16::from_le_bytes([done[1], done[2]]),
            u64::from_le_bytes(done[5..13].try_into().unwrap()),
        )
    }
}
