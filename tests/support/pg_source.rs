//! A private PostgreSQL cluster with `wal_level = logical`, one per test: created with initdb in
//! a temporary directory, on its own free port, trusting loopback, removed when the guard goes.
//! The shared server on 5432 is left as it is.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::unique;

/// The newest installed server's binaries.
fn bindir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/test installs them)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Run a server binary as the `postgres` user when we are root (initdb refuses root).
fn as_owner(program: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub struct SourcePg {
    pub port: u16,
    dir: PathBuf,
}

impl SourcePg {
    /// A new cluster, started. `logical`: with `wal_level = logical` (else `replica`, for the
    /// test of that mistake).
    pub fn start(logical: bool) -> SourcePg {
        Self::start_with(logical, None)
    }

    /// A new cluster serving TLS with this certificate chain and key (PEM), started.
    pub fn start_tls(cert: &str, key: &str) -> SourcePg {
        Self::start_with(false, Some((cert, key)))
    }

    fn start_with(logical: bool, tls: Option<(&str, &str)>) -> SourcePg {
        let dir = std::env::temp_dir().join(unique("edfi-cdc-pgsrc"));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown {}", dir.display());
        }
        let out = as_owner(bindir().join("initdb"))
            .args(["-D"])
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wal = if logical { "logical" } else { "replica" };
        let mut conf = format!(
            "wal_level = {wal}\nmax_replication_slots = 10\nmax_wal_senders = 10\n\
             listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             shared_buffers = 32MB\nmax_connections = 60\n",
            dir.display()
        );
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = dir.join("data").join(name);
                std::fs::write(&path, pem).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                if is_root() {
                    assert!(Command::new("chown")
                        .arg("postgres")
                        .arg(&path)
                        .status()
                        .unwrap()
                        .success());
                }
            }
            conf.push_str("ssl = on\n");
        }
        std::fs::write(dir.join("data/postgresql.auto.conf"), conf).unwrap();
        let mut pg = SourcePg { port: 0, dir };
        for attempt in 1..=5 {
            pg.port = super::free_port();
            if pg.pg_ctl("start", attempt == 5) {
                return pg;
            }
        }
        unreachable!()
    }

    fn pg_ctl(&self, action: &str, must: bool) -> bool {
        let mut cmd = as_owner(bindir().join("pg_ctl"));
        cmd.arg(action)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "60", "-m", "fast", "-l"])
            .arg(self.dir.join("server.log"));
        if action != "stop" {
            cmd.args(["-o", &format!("-p {}", self.port)]);
        }
        let ok = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            ok || !must,
            "pg_ctl {action}: {}",
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
        ok
    }

    /// Restart the server (a fast shutdown: connections are cut).
    pub fn restart(&self) {
        self.pg_ctl("restart", true);
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// A new database in this cluster.
    pub async fn create_database(&self, name: &str) -> String {
        super::connect(&self.url("postgres"))
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        self.url(name)
    }

    /// Wait until the server accepts connections (after a restart).
    pub async fn wait_ready(&self, deadline: Duration) {
        let end = Instant::now() + deadline;
        while tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .is_err()
        {
            assert!(
                Instant::now() < end,
                "source PostgreSQL not back within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SourcePg {
    fn drop(&mut self) {
        let mut cmd = as_owner(bindir().join("pg_ctl"));
        cmd.arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
