//! A Kafka-protocol broker per test: tansu 0.6.0 (`EDFI_CDC_TANSU`; scripts/test installs it)
//! on a free loopback port, in memory, or ([`Broker::start_durable`]) storing into an S3
//! bucket on its own moto server, so a restart on the same port loses nothing (topics,
//! records, committed offsets). This tansu build has no PostgreSQL or SQLite storage.
//!
//! Known gaps of tansu 0.6.0: no CreatePartitions; the new consumer-group protocol (KIP-848)
//! does not work, the classic one does; ListOffsets(LATEST) gives wrong offsets; a classic
//! JoinGroup is answered only after about half the session timeout (23 s with a 45 s
//! session.timeout.ms); a Metadata request that allows it creates a missing topic.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::s3::{Moto, ACCESS_KEY, SECRET_KEY};
use super::unique;

const BUCKET: &str = "tansu";
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Runs the broker (`"$@"`) and stops it — SIGTERM, SIGKILL after 10 s — then waits for it, when
/// its standard input closes:
/// on `stop`, and when the test process dies without running `Drop`.
const WATCHDOG: &str = r#""$@" </dev/null & pid=$!; cat >/dev/null; kill -TERM "$pid" 2>/dev/null; (sleep 10; kill -9 "$pid" 2>/dev/null) & wait "$pid""#;

/// The tansu binary (`EDFI_CDC_TANSU`).
pub fn tansu() -> PathBuf {
    std::env::var_os("EDFI_CDC_TANSU")
        .map(PathBuf::from)
        .expect("EDFI_CDC_TANSU is not set: run the tests with scripts/test, which installs tansu")
}

/// The Python with kafka-python (`EDFI_CDC_KAFKA_PYTHON`).
pub fn python() -> String {
    std::env::var("EDFI_CDC_KAFKA_PYTHON").expect(
        "EDFI_CDC_KAFKA_PYTHON is not set: run the tests with scripts/test, which installs kafka-python",
    )
}

/// `PUT /{bucket}` on moto (no credentials needed unless the server checks them).
fn create_bucket(endpoint: &str, bucket: &str) {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
        "create bucket {bucket} on {endpoint}: {reply}"
    );
}

/// A running tansu broker with its storage; both go when dropped.
pub struct Broker {
    /// What clients connect to: the advertised listener (`127.0.0.1:PORT`, or the TLS front's
    /// `localhost:PORT`).
    pub bootstrap: String,
    /// `127.0.0.1:PORT` the broker itself listens on.
    pub listen: String,
    pub port: u16,
    /// The broker's stdout and stderr, appended across restarts.
    pub log: PathBuf,
    dir: PathBuf,
    tansu: PathBuf,
    child: Option<Child>,
    /// The S3 server holding a durable broker's data; `None`: in memory.
    moto: Option<Moto>,
}

impl Broker {
    /// A broker keeping everything in memory (fast; a restart loses it all).
    pub fn start() -> Broker {
        Self::start_with(None, None)
    }

    /// A broker (in memory) that advertises `localhost:front` — a [`TlsFront`] — instead of its
    /// own plaintext listener, so that clients reach it over TLS only.
    pub fn start_behind(front: u16) -> Broker {
        Self::start_with(None, Some(front))
    }

    /// A broker storing into its own S3 server, so a restart loses nothing (slower: every
    /// produce and fetch goes to S3).
    pub fn start_durable() -> Broker {
        let moto = Moto::start();
        create_bucket(&moto.endpoint, BUCKET);
        Self::start_with(Some(moto), None)
    }

    fn start_with(moto: Option<Moto>, front: Option<u16>) -> Broker {
        let tansu = tansu();
        let dir = std::env::temp_dir().join(unique("edfi-cdc-kafka"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Broker {
            bootstrap: String::new(),
            listen: String::new(),
            port: 0,
            log: dir.join("tansu.log"),
            dir,
            tansu,
            child: None,
            moto,
        };
        // A free port can be taken by another test before the broker binds it: try another.
        for attempt in 1..=5 {
            broker.port = super::free_port();
            broker.listen = format!("127.0.0.1:{}", broker.port);
            broker.bootstrap = match front {
                Some(p) => format!("localhost:{p}"),
                None => broker.listen.clone(),
            };
            broker.spawn();
            if broker.wait_ready(attempt == 5) {
                return broker;
            }
            broker.stop();
        }
        unreachable!()
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        let url = format!("tcp://{}", self.listen);
        let advertised = format!("tcp://{}", self.bootstrap);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("tansu-watchdog")
            .arg(&self.tansu)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &advertised]);
        // The S3 client reads every AWS_* variable: only this server's.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        match &self.moto {
            Some(moto) => {
                cmd.args(["--storage-engine", &format!("s3://{BUCKET}/")])
                    .env("AWS_ENDPOINT", &moto.endpoint)
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                    .env("AWS_DEFAULT_REGION", "us-east-1");
            }
            None => {
                cmd.args(["--storage-engine", "memory://tansu/"]);
            }
        }
        let child = cmd
            .env(
                "RUST_LOG",
                std::env::var("EDFI_CDC_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
    }

    /// Wait until the port accepts connections. `false` if the broker exited first (unless
    /// `must`: then panic with its log).
    fn wait_ready(&mut self, must: bool) -> bool {
        let addr: SocketAddr = self.listen.parse().unwrap();
        let end = Instant::now() + READY_DEADLINE;
        loop {
            let child = self.child.as_mut().expect("started");
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    !must,
                    "tansu exited ({status}) before accepting connections on {}; log:\n{}",
                    self.bootstrap,
                    self.log_text()
                );
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            assert!(
                Instant::now() < end,
                "tansu did not accept connections on {} within {READY_DEADLINE:?}; log:\n{}",
                self.bootstrap,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the broker (SIGTERM; SIGKILL after 10 s) and wait for it; the storage stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take()); // the watchdog kills and waits for tansu
            child.wait().ok();
        }
    }

    /// Start again on the same port and storage; returns when the port accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready(true);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Create `topic` with `partitions` partitions and the topic configuration `configs`
    /// (kafka-python's admin client).
    pub fn create_topic(&self, topic: &str, partitions: u32, configs: &[(&str, &str)]) {
        let script = "import sys\n\
            from kafka.admin import KafkaAdminClient, NewTopic\n\
            a = KafkaAdminClient(bootstrap_servers=sys.argv[1])\n\
            c = dict(kv.split('=', 1) for kv in sys.argv[4:])\n\
            a.create_topics([NewTopic(sys.argv[2], int(sys.argv[3]), 1, topic_configs=c)])\n\
            a.close()\n";
        let configs: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let out = Command::new(python())
            .args([
                "-c",
                script,
                &self.bootstrap,
                topic,
                &partitions.to_string(),
            ])
            .args(&configs)
            .output()
            .expect("run kafka-python");
        assert!(
            out.status.success(),
            "create topic {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Table `topic` as tests/support/kafka_rebuild.py rebuilds it from every record up to the
    /// current end offsets (control records skipped by their header): its rows as
    /// `(key, after)` and its counts (`control`, `tombstones`, one per `op`).
    pub fn rebuild(&self, topic: &str, timeout: Duration) -> (Vec<(Json, Json)>, Json) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kafka_rebuild.py");
        let out = Command::new(python())
            .arg(script)
            .args(["--bootstrap", &self.bootstrap, "--topic", topic])
            .args(["--timeout-s", &timeout.as_secs_f64().to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run kafka_rebuild.py");
        assert!(
            out.status.success(),
            "kafka_rebuild.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut rows = Vec::new();
        let mut stats = Json::Null;
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let mut v: Json = serde_json::from_str(line).unwrap();
            if v.get("stats").is_some() {
                stats = v["stats"].take();
            } else {
                rows.push((v["key"].take(), v["after"].take()));
            }
        }
        (rows, stats)
    }

    /// Every message of `topics` from the beginning, read by tests/support/kafka_read.py until
    /// `max` messages (0: no limit) or `timeout`: one JSON object per line, as the script
    /// prints them.
    pub fn read(&self, topics: &[&str], max: usize, timeout: Duration) -> Vec<String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kafka_read.py");
        let out = Command::new(python())
            .arg(script)
            .args(["--bootstrap", &self.bootstrap])
            .args(["--topic", &topics.join(",")])
            .args(["--max-messages", &max.to_string()])
            .args(["--timeout-s", &timeout.as_secs_f64().to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run kafka_read.py");
        assert!(
            out.status.success(),
            "kafka_read.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- tansu log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        } else {
            std::fs::remove_dir_all(&self.dir).ok();
        }
        // moto (the storage) stops when its field drops, after this.
    }
}

/// A TLS endpoint on `localhost:port` (127.0.0.1 and ::1) with `cert` and `key` (PEM) that
/// forwards each connection's bytes to `target`: a broker's TLS listener, in front of a broker
/// that has none. Counts the handshakes it completed; stops when dropped.
pub struct TlsFront {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub handshakes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TlsFront {
    pub async fn start(port: u16, target: &str, cert: &str, key: &str) -> TlsFront {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let listeners = [
            tokio::net::TcpListener::bind(("127.0.0.1", port)).await,
            tokio::net::TcpListener::bind(("::1", port)).await,
        ];
        for listener in listeners.into_iter().flatten() {
            let (acceptor, target, handshakes) =
                (acceptor.clone(), target.to_string(), handshakes.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, target, handshakes) =
                        (acceptor.clone(), target.clone(), handshakes.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        handshakes.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut up) = tokio::net::TcpStream::connect(&target).await {
                            tokio::io::copy_bidirectional(&mut tls, &mut up).await.ok();
                        }
                    });
                }
            }));
        }
        assert!(!tasks.is_empty(), "bind the TLS front on port {port}");
        TlsFront { tasks, handshakes }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
