//! Test harness: real servers, one set per test. Each test gets its own PostgreSQL databases
//! (simulated ODS and staging), its own simulator port, its own replicator process, and guards
//! that stop every process and drop every database when the test ends, passed or failed.

#![allow(dead_code)]

pub mod kafka;
pub mod pg_source;
pub mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

pub const SIM_PASSWORD: &str = "Sim-Passw0rd!";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A loopback port free now (another process may still take it before it is bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// The port of the tests' PostgreSQL server on 127.0.0.1: `PGPORT` as `scripts/test` exports it
/// (a cluster of its own when the system's server asks for a password), else 5432.
pub fn pg_port() -> u16 {
    std::env::var("PGPORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432)
}

pub fn db_url(name: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{name}", pg_port())
}

/// The tests' PostgreSQL server, as a URL of its `postgres` database.
pub fn pg_server() -> String {
    db_url("postgres")
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

fn drop_database(name: &str) {
    let status = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pg_port().to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-qc"])
        .arg(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("warning: could not drop test database {name}");
    }
}

/// A PostgreSQL database dropped when the guard goes.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn create(prefix: &str) -> TestDb {
        let name = unique(prefix);
        connect(&pg_server())
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        TestDb { name }
    }

    pub fn url(&self) -> String {
        db_url(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

/// Directory of the binaries this test run built (`target/<profile>`).
/// The shipped reporting models.
pub fn shipped_models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/models")
}

pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo nextest run --workspace builds it)",
        p.display()
    );
    p
}

/// A running `ods-sim` with its own backing database.
pub struct Simulator {
    child: Child,
    pub addr: String,
    pub database: String,
}

impl Simulator {
    pub fn start(students: u64, seed: u64) -> Simulator {
        let database = unique("odssim");
        Self::start_on(&database, students, seed)
    }

    /// Start (or restart) on an existing or new database `database`.
    pub fn start_on(database: &str, students: u64, seed: u64) -> Simulator {
        Self::start_at(database, 0, students, seed)
    }

    /// Start on `database`, listening on `port` (0: any free port).
    pub fn start_at(database: &str, port: u16, students: u64, seed: u64) -> Simulator {
        Self::start_with(database, port, students, seed, &[])
    }

    /// [`Simulator::start_at`] with more arguments (`--tls-cert`, …).
    pub fn start_with(
        database: &str,
        port: u16,
        students: u64,
        seed: u64,
        extra: &[&str],
    ) -> Simulator {
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(bin("ods-sim"))
            .args([
                "--listen",
                &listen,
                "--postgres",
                &pg_server(),
                "--database",
                database,
            ])
            .args([
                "--students",
                &students.to_string(),
                "--seed",
                &seed.to_string(),
                "--log",
                "warn",
            ])
            .args(extra)
            .env("ODS_SIM_PASSWORD", SIM_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ods-sim");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ods-sim stdout");
        let addr = line
            .strip_prefix("ods-sim ready on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("ods-sim did not start: {line:?}"))
            .to_string();
        Simulator {
            child,
            addr,
            database: database.to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Freeze the process (`SIGSTOP`): its connections stay open and answer nothing, as a
    /// source that has gone silent does. [`Simulator::resume`] thaws it.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaw a [`Simulator::freeze`]d process (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} ods-sim: {status}");
    }

    /// The backing PostgreSQL database (the source's truth, for comparisons and workloads).
    pub fn backing_url(&self) -> String {
        db_url(&self.database)
    }

    /// Stop the process but keep the database (for restarts).
    pub fn stop(mut self) -> String {
        self.child.kill().ok();
        self.child.wait().ok();
        let db = std::mem::take(&mut self.database);
        std::mem::forget(self);
        db
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        if !self.database.is_empty() {
            drop_database(&self.database);
        }
    }
}

/// A connector file for a test: simulator source, staging target, fast polling.
pub struct Connector {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Connector {
    /// Let the connector file's `models = "models"` name the shipped reporting models
    /// (`connectors/models`), as a link beside the file.
    pub fn use_shipped_models(&self) {
        std::os::unix::fs::symlink(shipped_models_dir(), self.dir.join("models")).unwrap();
    }

    pub fn new(sim: &Simulator, staging: &TestDb, extra: &str) -> Connector {
        Self::with_text(sim, staging, &default_connector(extra))
    }

    pub fn with_text(sim: &Simulator, staging: &TestDb, text: &str) -> Connector {
        let env = vec![
            ("ODS_HOST".into(), "127.0.0.1".into()),
            ("ODS_PORT".into(), sim.port().to_string()),
            ("ODS_DATABASE".into(), sim.database.clone()),
            ("ODS_USER".into(), "sa".into()),
            ("ODS_PASSWORD".into(), SIM_PASSWORD.into()),
            ("STAGING_DATABASE_URL".into(), staging.url()),
            ("METRICS_ADDR".into(), "127.0.0.1:0".into()),
        ];
        Self::with_env(text, env)
    }

    /// A connector file with `text`, run with the environment `env`.
    pub fn with_env(text: &str, env: Vec<(String, String)>) -> Connector {
        let dir = std::env::temp_dir().join(unique("edfi-cdc-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edfi-ods.toml");
        std::fs::write(&path, text).unwrap();
        Connector { dir, path, env }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("edfi-cdc"));
        cmd.args(args)
            .arg("--config")
            .arg(&self.path)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Replace `from` (which the connector file must hold) with `to` in the connector file.
    pub fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.path).unwrap();
        assert!(text.contains(from), "the connector file has no `{from}`");
        std::fs::write(&self.path, text.replace(from, to)).unwrap();
    }

    /// `edfi-cdc resnapshot TABLE`, which must succeed (its stderr in the failure).
    pub fn resnapshot(&self, table: &str) {
        let out = self.command(&["resnapshot", table]).output().unwrap();
        assert!(
            out.status.success(),
            "resnapshot {table}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start `edfi-cdc run`.
    pub fn run(&self) -> Replicator {
        self.run_logging("edfi_cdc=info")
    }

    /// [`Connector::run`] with the log filter `filter` (`--log`).
    pub fn run_logging(&self, filter: &str) -> Replicator {
        let child = self
            .command(&["run", "--log", filter])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edfi-cdc");
        Replicator::new(child)
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// The shipped connector's shape, with test settings: both groups, TLS off (the simulator has
/// none), fast polling, small snapshot chunks, and a short retry budget.
pub fn default_connector(extra: &str) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/edfi-ods.toml"),
    )
    .unwrap();
    let shipped = shipped
        .replace("encrypt = ${ODS_ENCRYPT:-true}", "encrypt = false")
        .replace(
            "interval = \"${POLL_INTERVAL:-1s}\"",
            "interval = \"200ms\"\nsnapshot_chunk_rows = 2000",
        )
        .replace("shutdown_grace = \"30s\"", "shutdown_grace = \"10s\"");
    format!("{shipped}\n[retry]\ninitial_delay = \"100ms\"\nmax_delay = \"1s\"\nmax_attempts = 8\n{extra}")
}

/// A running `edfi-cdc run`; its stderr is collected in the background.
pub struct Replicator {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Replicator {
    /// Start `cmd` (an `edfi-cdc run` command), collecting its stderr.
    pub fn spawn(mut cmd: Command) -> Replicator {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edfi-cdc");
        Replicator::new(child)
    }

    fn new(mut child: Child) -> Replicator {
        let stderr = child.stderr.take().expect("piped stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Replicator { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `kill -9`; returns what it logged.
    pub fn kill(mut self) -> String {
        self.child.kill().ok();
        self.child.wait().ok();
        std::thread::sleep(Duration::from_millis(50)); // let the log reader finish
        self.log()
    }

    /// SIGTERM, then wait for the exit status (with a deadline).
    pub fn terminate(mut self, deadline: Duration) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        self.wait(deadline)
    }

    pub fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50)); // let the log reader finish
                return s;
            }
            assert!(
                Instant::now() < end,
                "edfi-cdc did not exit within {deadline:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        if std::thread::panicking() {
            eprintln!("--- edfi-cdc log ---\n{}", self.log());
        }
    }
}

/// The logs of replicators a test already stopped, printed if the test fails later (a running
/// [`Replicator`] prints its own).
#[derive(Default)]
pub struct KeptLogs(Vec<(String, String)>);

impl KeptLogs {
    pub fn keep(&mut self, who: &str, log: String) {
        self.0.push((who.to_string(), log));
    }
}

impl Drop for KeptLogs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (who, log) in &self.0 {
                eprintln!("--- edfi-cdc log: {who} ---\n{log}");
            }
        }
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The simulated database's current CT version (read from its backing database).
pub async fn source_version(source: &Client) -> i64 {
    source
        .query_one("SELECT ct.current_version()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Wait until every table of the staging sink is streaming at (or past) the source's current
/// version.
pub async fn wait_caught_up(
    source: &Client,
    staging: &Client,
    tables: usize,
    deadline: Duration,
) -> i64 {
    wait_connector_caught_up(source, staging, "edfi-ods", tables, deadline).await
}

/// [`wait_caught_up`] for the tables of one connector.
pub async fn wait_connector_caught_up(
    source: &Client,
    staging: &Client,
    connector: &str,
    tables: usize,
    deadline: Duration,
) -> i64 {
    let target = source_version(source).await;
    wait_for(
        &format!("{connector} to reach version {target} on {tables} tables"),
        deadline,
        || async {
            let row = staging
            .query_opt(
                "SELECT count(*) FILTER (WHERE phase = 'streaming' AND version >= $1), count(*) \
                 FROM edfi_cdc.table_state WHERE connector = $2",
                &[&target, &connector],
            )
            .await
            .ok()
            .flatten()?;
            let (done, all): (i64, i64) = (row.get(0), row.get(1));
            (done as usize == tables && all as usize == tables).then_some(target)
        },
    )
    .await
}

/// Every row of a table, each column cast to text, in key order.
async fn table_rows(
    client: &Client,
    schema: &str,
    table: &str,
    columns: &[String],
    keys: &[String],
) -> Vec<Vec<Option<String>>> {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let cols: Vec<String> = columns.iter().map(|c| format!("{}::text", q(c))).collect();
    let order: Vec<String> = keys.iter().map(|k| q(k)).collect();
    let sql = format!(
        "SELECT {} FROM {}.{} ORDER BY {}",
        cols.join(", "),
        q(schema),
        q(table),
        order.join(", ")
    );
    client
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..columns.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

/// Compare every replicated table of the simulator's backing database with staging, row by row.
/// `lower`: staging identifiers are lower-cased. Returns a description of every difference.
pub async fn compare_all(source: &Client, staging: &Client, lower: bool) -> Vec<String> {
    compare_all_in(source, staging, lower, None).await
}

/// [`compare_all`] with the staging tables in `schema` (a `schema_map` target) instead of the
/// source's schema.
pub async fn compare_all_in(
    source: &Client,
    staging: &Client,
    lower: bool,
    schema: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for def in ods_sim::edfi::tables() {
        // The columns the source still has (a test may have dropped one; the target keeps it).
        let present: Vec<String> = source
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2",
                &[&def.schema, &def.name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let columns: Vec<String> = def
            .columns
            .iter()
            .map(|c| c.name.clone())
            .filter(|c| present.contains(c))
            .collect();
        let keys = def.primary_key.clone();
        let src = table_rows(source, &def.schema, &def.name, &columns, &keys).await;
        let name = |s: &str| {
            if lower {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        let dst = table_rows(
            staging,
            &schema.map_or_else(|| name(&def.schema), str::to_string),
            &name(&def.name),
            &columns.iter().map(|c| name(c)).collect::<Vec<_>>(),
            &keys.iter().map(|c| name(c)).collect::<Vec<_>>(),
        )
        .await;
        if src != dst {
            let missing = src.iter().filter(|r| !dst.contains(r)).count();
            let extra = dst.iter().filter(|r| !src.contains(r)).count();
            let first = src
                .iter()
                .find(|r| !dst.contains(r))
                .or_else(|| dst.iter().find(|r| !src.contains(r)));
            problems.push(format!(
                "{}.{}: source {} rows, staging {} rows; {missing} source rows missing or different, {extra} staging rows extra; e.g. {first:?}",
                def.schema, def.name, src.len(), dst.len()
            ));
        }
    }
    problems
}

/// What most tests start with: a simulator with sample data, an empty staging database, a
/// connector file for both, and a connection to each database.
pub struct Rig {
    pub sim: Simulator,
    pub staging: TestDb,
    pub connector: Connector,
    /// The simulator's backing database: the source's truth.
    pub source: Client,
    pub target: Client,
}

impl Rig {
    pub async fn new(students: u64, seed: u64) -> Rig {
        let sim = Simulator::start(students, seed);
        let staging = TestDb::create("staging").await;
        let connector = Connector::new(&sim, &staging, "");
        let source = connect(&sim.backing_url()).await;
        let target = connect(&staging.url()).await;
        Rig {
            sim,
            staging,
            connector,
            source,
            target,
        }
    }
}

/// `GET path` on a local HTTP server: status code and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

impl Replicator {
    /// Wait until the log holds `text` `times` times; past `deadline`, panic with the log (and
    /// whether the process still runs).
    pub async fn wait_log(&mut self, text: &str, times: usize, deadline: Duration) {
        let end = Instant::now() + deadline;
        while self.log().matches(text).count() < times {
            if Instant::now() >= end {
                let running = self.is_running();
                panic!(
                    "timed out after {deadline:?} waiting for {times} × {text:?} in the log \
                     (edfi-cdc running: {running}):\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The address of the replicator's HTTP port, from its log.
    pub async fn metrics_addr(&self) -> String {
        wait_for(
            "the metrics address in the log",
            Duration::from_secs(60),
            || async {
                let log = self.log();
                let line = log.lines().find(|l| l.contains("serving /metrics"))?;
                Some(
                    line.split("addr=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .to_string(),
                )
            },
        )
        .await
    }
}

/// Grade number of an Ed-Fi grade-level code value: kindergarten = 0 … twelfth grade = 12.
pub fn grade_number(code: &str) -> Option<i64> {
    const WORDS: [&str; 13] = [
        "kindergarten",
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
        "eleventh",
        "twelfth",
    ];
    let first = code.to_lowercase();
    let first = first.split(' ').next().unwrap_or("");
    WORDS.iter().position(|w| *w == first).map(|g| g as i64)
}

/// Log every row a sink writes to staging's `edfi.student` (insert or update) with its
/// LastModifiedDate, in the order the sink's transactions write them.
pub async fn log_student_writes(staging: &Client) {
    staging
        .batch_execute(
            "CREATE TABLE public.student_writes (id bigserial PRIMARY KEY, usi int, modified timestamp);
             CREATE FUNCTION public.log_student() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.student_writes (usi, modified) VALUES (NEW.studentusi, NEW.lastmodifieddate); RETURN NEW; END $$;
             CREATE TRIGGER log_student AFTER INSERT OR UPDATE ON edfi.student
             FOR EACH ROW EXECUTE FUNCTION public.log_student();",
        )
        .await
        .unwrap();
}

/// Students whose logged writes went back in time (a later write with an older
/// LastModifiedDate), and the number of writes logged.
pub async fn reordered_students(staging: &Client) -> (Vec<String>, usize) {
    let rows = staging
        .query(
            "SELECT usi, modified FROM public.student_writes ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let mut last: std::collections::HashMap<i32, chrono::NaiveDateTime> = Default::default();
    let mut bad = Vec::new();
    for r in &rows {
        let (usi, at): (i32, chrono::NaiveDateTime) = (r.get(0), r.get(1));
        if let Some(prev) = last.insert(usi, at) {
            if at < prev {
                bad.push(format!("StudentUSI {usi}: {prev} then {at}"));
            }
        }
    }
    (bad, rows.len())
}

/// Wait until the source is `versions` past version `from`.
pub async fn source_advanced(source: &Client, from: i64, versions: i64) {
    wait_for(
        "the workload to make progress",
        Duration::from_secs(120),
        || async { (source_version(source).await >= from + versions).then_some(()) },
    )
    .await;
}

/// The ODS workload `config` writing in the background to `sim`'s backing database, until
/// `stop` says so or its change budget is spent; its stats when joined.
pub fn spawn_workload(
    sim: &Simulator,
    config: ods_sim::edfi::WorkloadConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<ods_sim::edfi::WorkloadStats>> {
    let url = sim.backing_url();
    tokio::spawn(async move { ods_sim::edfi::run_workload(&url, config, stop).await })
}

/// The simulator's random workload: `rate` changes/s from `writers` writers, stopping after
/// `max_changes` (or 120 s), with bursts.
pub fn workload(
    rate: f64,
    seed: u64,
    writers: usize,
    max_changes: u64,
) -> ods_sim::edfi::WorkloadConfig {
    ods_sim::edfi::WorkloadConfig {
        rate,
        seed,
        writers,
        max_changes: Some(max_changes),
        duration: Some(Duration::from_secs(120)),
        bursts: true,
    }
}

/// Start `edfi-cdc run --role ROLE` on `rig`'s connector.
pub fn start_role(rig: &Rig, role: &str) -> Replicator {
    Replicator::spawn(
        rig.connector
            .command(&["run", "--log", "edfi_cdc=info", "--role", role]),
    )
}

/// Assert that staging (lower-cased names) equals the source, table by table.
pub async fn assert_rig_equal(rig: &Rig) {
    let problems = compare_all(&rig.source, &rig.target, true).await;
    assert!(
        problems.is_empty(),
        "staging differs from the source:\n{}",
        problems.join("\n")
    );
}

/// The S3 bucket of the Redshift sink's batch files in tests.
pub const REDSHIFT_BUCKET: &str = "edfi-cdc-batches";

/// Point the rig's connector at its target database as a Redshift sink in `stdin` mode (no
/// staging sink), flushing every second, with batch files in `moto` when given.
pub fn redshift_rig(rig: &mut Rig, moto: Option<&s3::Moto>, extra: &[(&str, &str)]) {
    let url = rig.staging.url();
    let env = &mut rig.connector.env;
    env.retain(|(k, _)| k != "STAGING_DATABASE_URL");
    for (k, v) in [
        ("STAGING_ENABLED", "false"),
        ("REDSHIFT_ENABLED", "true"),
        ("REDSHIFT_LOAD_MODE", "stdin"),
        ("REDSHIFT_DATABASE_URL", url.as_str()),
        ("REDSHIFT_MAX_AGE", "1s"),
    ] {
        env.push((k.into(), v.into()));
    }
    if let Some(m) = moto {
        env.extend(m.env());
        env.push(("S3_BUCKET".into(), REDSHIFT_BUCKET.into()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
}

/// Add a Redshift sink in `stdin` mode, flushing every second, into a database of its own
/// beside the rig's staging sink (the poller's position stays in staging). Returns the
/// database, to be kept for as long as the rig runs.
pub async fn redshift_beside_staging(rig: &mut Rig) -> TestDb {
    let db = TestDb::create("redshift").await;
    for (k, v) in [
        ("REDSHIFT_ENABLED", "true"),
        ("REDSHIFT_LOAD_MODE", "stdin"),
        ("REDSHIFT_DATABASE_URL", db.url().as_str()),
        ("REDSHIFT_MAX_AGE", "1s"),
    ] {
        rig.connector.env.push((k.into(), v.into()));
    }
    db
}

/// The one of `workers` that took the lease of lane `lane` (e.g. `redshift@shards`), once one
/// did.
pub async fn lease_taker(workers: &mut [Replicator], lane: &str, deadline: Duration) -> usize {
    let said = format!("lane={lane} ");
    wait_for(&format!("a worker to take lane {lane}"), deadline, || {
        let held = workers.iter().position(|w| {
            w.log()
                .lines()
                .any(|l| l.contains("lane lease taken") && l.contains(&said))
        });
        async move { held }
    })
    .await
}

/// Wait until sink `sink` (e.g. `staging@shards`, `redshift`) of `target` is in the middle of
/// the initial snapshots: some table's rows are stored, and some tables already stream.
pub async fn wait_mid_snapshot(target: &Client, sink: &str, deadline: Duration) {
    wait_for(&format!("{sink} to be mid-snapshot"), deadline, || async {
        let row = target
            .query_opt(
                "SELECT count(*) FILTER (WHERE phase = 'snapshot' AND snapshot_rows > 0), \
                 count(*) FILTER (WHERE phase = 'streaming') \
                 FROM edfi_cdc.table_state WHERE connector = 'edfi-ods' AND sink = $1",
                &[&sink],
            )
            .await
            .ok()
            .flatten()?;
        (row.get::<_, i64>(0) > 0 && row.get::<_, i64>(1) > 2).then_some(())
    })
    .await
}

/// Let the rig's poller read one snapshot chunk of `rows` rows per poll cycle, so that
/// snapshots last long enough to be killed in (and watermarks arrive while they are read).
pub fn one_chunk_per_cycle(rig: &Rig, rows: u32) {
    rig.connector.edit(
        "snapshot_chunk_rows = 2000",
        &format!("snapshot_chunk_rows = {rows}\nsnapshot_slice = \"1ms\""),
    );
}

/// Assert that the Redshift target (lower-cased names) equals the source, table by table.
pub async fn assert_redshift_equal(source: &Client, redshift: &Client) {
    let problems = compare_all(source, redshift, true).await;
    assert!(
        problems.is_empty(),
        "the Redshift target differs from the source:\n{}",
        problems.join("\n")
    );
}

/// Wait until a session of the target database waits for a lock in a statement `LIKE`
/// `statement%`; on timeout, name the statements that were waiting for locks instead.
pub async fn wait_blocked(observer: &Client, database: &str, statement: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: Vec<(String, bool)> = observer
            .query(
                "SELECT query, query LIKE $2 || '%' FROM pg_stat_activity WHERE datname = $1 \
                 AND wait_event_type = 'Lock'",
                &[&database, &statement],
            )
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
        if waiting.iter().any(|(_, like)| *like) {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after 60 s waiting for a session to block in `{statement}…`; waiting for locks: {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session of the database at `url` holding `table` locked in `mode` until it rolls back.
pub async fn lock_table(url: &str, table: &str, mode: &str) -> Client {
    let holder = connect(url).await;
    holder
        .batch_execute(&format!("BEGIN; LOCK TABLE {table} IN {mode} MODE"))
        .await
        .unwrap();
    holder
}

/// The primary key columns of `table` (`schema.name`) in a PostgreSQL target, in key order.
pub async fn primary_key_columns(client: &Client, table: &str) -> Vec<String> {
    client
        .query_one(
            "SELECT array(SELECT a.attname::text FROM pg_constraint con, \
             unnest(con.conkey) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = $1::text::regclass AND a.attnum = k.attnum \
             WHERE con.conrelid = $1::text::regclass AND con.contype = 'p' ORDER BY k.n)",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

/// Run a T-SQL batch on the simulator over TDS, as an ODS's DBA or API would: the server's
/// error message when it fails.
pub async fn tsql(sim: &Simulator, batch: &str) -> Result<(), String> {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let mut config = tiberius::Config::new();
    config.host("127.0.0.1");
    config.port(sim.port());
    config.database(&sim.database);
    config.authentication(tiberius::AuthMethod::sql_server("sa", SIM_PASSWORD));
    config.encryption(tiberius::EncryptionLevel::NotSupported);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", sim.port()))
        .await
        .map_err(|e| e.to_string())?;
    let mut client = tiberius::Client::connect(config, tcp.compat_write())
        .await
        .map_err(|e| e.to_string())?;
    client
        .simple_query(batch)
        .await
        .map_err(|e| e.to_string())?
        .into_results()
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Compare one table's `columns` between the source's backing database and staging (names
/// lower-cased there), row by row in key order: a description of the difference, if any.
pub async fn compare_table(
    source: &Client,
    staging: &Client,
    schema: &str,
    table: &str,
    columns: &[&str],
    keys: &[&str],
) -> Option<String> {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let lower = |v: &[&str]| v.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
    let src = table_rows(source, schema, table, &owned(columns), &owned(keys)).await;
    let dst = table_rows(
        staging,
        &schema.to_lowercase(),
        &table.to_lowercase(),
        &lower(columns),
        &lower(keys),
    )
    .await;
    (src != dst).then(|| {
        let first = src
            .iter()
            .find(|r| !dst.contains(r))
            .or_else(|| dst.iter().find(|r| !src.contains(r)));
        format!(
            "{schema}.{table}: source {} rows, staging {} rows; e.g. {first:?}",
            src.len(),
            dst.len()
        )
    })
}

/// One source transaction changing many times `spill_rows` rows: every student and every
/// assessment item marked with `marker`, some items deleted.
pub async fn big_transaction(source: &tokio_postgres::Client, marker: &str) {
    source
        .batch_execute(&format!(
            "BEGIN; \
             UPDATE edfi.\"StudentAssessmentItem\" SET \"AssessmentResponse\" = '{marker}'; \
             UPDATE edfi.\"Student\" SET \"MiddleName\" = '{marker}'; \
             DELETE FROM edfi.\"StudentAssessmentItem\" WHERE \"StudentUSI\" % 10 = 0 \
               AND \"IdentificationCode\" LIKE '%1'; \
             COMMIT"
        ))
        .await
        .unwrap();
}

/// The spill tables in staging, with `column` if given.
pub async fn spill_tables(staging: &tokio_postgres::Client, column: Option<&str>) -> Vec<String> {
    staging
        .query(
            "SELECT format('%I.%I', t.schemaname, t.tablename) FROM pg_tables t \
             WHERE t.schemaname = 'edfi_cdc_spill' AND ($1::text IS NULL OR EXISTS ( \
               SELECT 1 FROM information_schema.columns c WHERE c.table_schema = t.schemaname \
               AND c.table_name = t.tablename AND c.column_name = $1)) ORDER BY 1",
            &[&column],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Kill `victim` while it is blocked in a statement `LIKE` `statement%` of `rig`'s target:
/// `lock` (SQL run in a transaction on `locker`) is held while `marker`'s [`big_transaction`]
/// commits at the source, until a session blocks; the lock is released after the kill.
pub async fn kill_blocked(
    rig: &Rig,
    locker: &Client,
    lock: &str,
    statement: &str,
    marker: &str,
    victim: Replicator,
) {
    let observer = connect(&rig.staging.url()).await;
    locker
        .batch_execute(&format!("BEGIN; {lock}"))
        .await
        .unwrap();
    big_transaction(&rig.source, marker).await;
    wait_blocked(&observer, &rig.staging.name, statement).await;
    victim.kill();
    locker.batch_execute("ROLLBACK").await.unwrap();
}

/// A CA, and a server certificate it signed for `names` (subjectAltName entries), by the
/// `openssl` command (PostgreSQL's Debian package brings it): (CA PEM, certificate PEM, key PEM).
pub fn certificates(dir: &std::path::Path, tag: &str, names: &str) -> (String, String, String) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca, ca_key) = (format!("{tag}-ca.pem"), format!("{tag}-ca.key"));
    let subject = format!("/CN=edfi-cdc test CA {tag}");
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", &subject,
        ],
    ]
    .concat());
    let (csr, key, cert) = (
        format!("{tag}.csr"),
        format!("{tag}.key"),
        format!("{tag}.pem"),
    );
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=edfi-cdc test server",
        ],
    ]
    .concat());
    let ext = format!("{tag}.ext");
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={names}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read(&ca), read(&cert), read(&key))
}

/// `edfi-cdc verify --json` with `args`: the exit code and the reports.
pub fn verify(connector: &Connector, args: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let mut all = vec!["verify", "--json", "--log", "edfi_cdc=warn"];
    all.extend_from_slice(args);
    let out = connector.command(&all).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reports: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}); exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), reports)
}

/// The report of `table` (`schema.Table`) among `verify`'s.
pub fn report<'a>(reports: &'a [serde_json::Value], table: &str) -> &'a serde_json::Value {
    reports
        .iter()
        .find(|r| r["table"] == table)
        .unwrap_or_else(|| panic!("no report for {table}: {reports:#?}"))
}

/// The keys a report lists under `kind` (`missing_keys`, `extra_keys`, …).
pub fn keys(r: &serde_json::Value, kind: &str) -> Vec<String> {
    r[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}
