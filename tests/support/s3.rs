//! An S3 API server (moto in server mode) per test, and a client for it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::Client;

pub const ACCESS_KEY: &str = "edfi-cdc-test";
pub const SECRET_KEY: &str = "edfi-cdc-test-secret";
/// See [`Moto`].
const REORDER_MS: u32 = 30;

/// A running moto server, stopped when dropped. Its Kinesis holds each PutRecords call a random
/// 0 to [`REORDER_MS`] milliseconds, so that calls in flight together are stored in any order,
/// as Kinesis may store them.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        Self::spawn(&[])
    }

    /// A server that checks credentials (only keys it issued are accepted).
    pub fn start_checking_credentials() -> Moto {
        Self::spawn(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0".into())])
    }

    /// A server whose Kinesis acknowledges, but does not store, every `every`-th change record,
    /// `most` times at most.
    pub fn start_losing_kinesis_records(every: u32, most: u32) -> Moto {
        Self::spawn(&[("MOTO_KINESIS_LOSE", format!("{every},{most}"))])
    }

    /// A server whose Kinesis refuses the snapshot markers of kind `kind` (`snapshot_chunk`,
    /// `snapshot_done`) of `table` (`schema.table`) written to shard `shard` (throttled, as a
    /// shard over its write limit), `times` times in all.
    pub fn start_throttling_markers(kind: &str, table: &str, shard: &str, times: u32) -> Moto {
        Self::spawn(&[(
            "MOTO_KINESIS_REFUSE_MARKERS",
            format!("{shard},{times},{table},{kind}"),
        )])
    }

    /// A server whose Kinesis, once the file `armed` exists (it is then removed), holds the next
    /// PutRecords call of 100 records or more and refuses the call after it as invalid. The
    /// held call is stored once later calls stored a record of each of its rows (before the
    /// last of those is answered), or after `hold_ms` milliseconds; `armed` + `.stored` is then
    /// written.
    pub fn start_holding_puts(armed: &Path, hold_ms: u32) -> Moto {
        Self::spawn(&[(
            "MOTO_KINESIS_HOLD",
            format!("{},{hold_ms}", armed.display()),
        )])
    }

    fn spawn(env: &[(&str, String)]) -> Moto {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env("MOTO_KINESIS_REORDER", REORDER_MS.to_string());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start moto (scripts/test installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read moto's first line");
        let addr = line
            .strip_prefix("moto ready on ")
            .map(str::trim)
            .unwrap_or_else(|| panic!("moto did not start: {line:?}"))
            .to_string();
        Moto {
            child,
            endpoint: format!("http://{addr}"),
        }
    }

    /// The environment that points edfi-cdc at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    pub fn client(&self) -> Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .force_path_style(true)
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        Client::from_conf(conf)
    }

    pub async fn create_bucket(&self, name: &str) {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    }

    /// Every object under `prefix`: key and bytes.
    pub async fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let client = self.client();
        let list = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        let mut out = Vec::new();
        for o in list.contents() {
            let key = o.key().unwrap().to_string();
            let body = client
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes()
                .to_vec();
            out.push((key, body));
        }
        out.sort();
        out
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
