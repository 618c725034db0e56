//! A real Prometheus (Debian's package, installed by scripts/lib.sh) against a running
//! replicator: the alert rules load, the lag metric is scraped and queryable, and the lag alert
//! fires while the staging sink is blocked and clears when it catches up.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn installed(path: &str) -> &str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run scripts/test (ensure_prometheus in scripts/lib.sh installs it)"
    );
    path
}

fn promtool_check_rules(file: &Path) {
    let out = Command::new(installed(PROMTOOL))
        .args(["check", "rules"])
        .arg(file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool() {
    promtool_check_rules(&root().join("dashboards/alerts.yml"));
}

/// The Fargate scrape configuration (`deploy/ecs/prometheus.yml`) is valid, loads the alert
/// rules, names the job EdfiCdcDown watches, and finds every shipped ECS service by the Cloud Map
/// name its `serviceRegistries` registers, on the metrics port its task exposes.
#[test]
fn the_fargate_scrape_configuration_finds_every_shipped_service() {
    let config = root().join("deploy/ecs/prometheus.yml");
    let out = Command::new(installed(PROMTOOL))
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("run promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check config:\n{said}");
    assert!(said.contains("SUCCESS: 1 rule files found"), "{said}");
    let text = std::fs::read_to_string(&config).unwrap();
    let alerts = std::fs::read_to_string(root().join("dashboards/alerts.yml")).unwrap();
    assert!(alerts.contains(r#"absent(up{job="edfi-cdc"})"#));
    assert!(text.contains("- job_name: edfi-cdc\n"), "{text}");
    for (service, task) in [
        ("service.json", "task-definition.json"),
        ("service-poller.json", "task-definition-poller.json"),
        ("service-sink.json", "task-definition-sink.json"),
    ] {
        let read = |f: &str| -> serde_json::Value {
            serde_json::from_str(
                &std::fs::read_to_string(root().join("deploy/ecs").join(f)).unwrap(),
            )
            .unwrap()
        };
        let (service, task) = (read(service), read(task));
        let name = service["serviceName"].as_str().unwrap();
        let dns = name.strip_prefix("edfi-cdc-").unwrap();
        assert!(
            text.contains(&format!("- {dns}.edfi-cdc.local\n")),
            "{name} is not scraped"
        );
        let registry = service["serviceRegistries"][0]["registryArn"]
            .as_str()
            .unwrap();
        assert!(
            registry.starts_with("arn:aws:servicediscovery:"),
            "{name}: {registry}"
        );
        let container = &task["containerDefinitions"][0];
        assert_eq!(
            container["portMappings"][0]["containerPort"], 9720,
            "{name}"
        );
        assert!(
            container["environment"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "METRICS_ADDR" && e["value"] == "0.0.0.0:9720"),
            "{name}: the metrics port must listen beyond loopback for the scrape"
        );
    }
    assert!(text.contains("port: 9720\n"), "{text}");
}

/// Every alert rule fires on the series it watches and stays quiet on a healthy neighbour
/// (`dashboards/alerts.test.yml`); one test per rule at least.
#[test]
fn every_alert_rule_passes_its_unit_tests() {
    let tests = root().join("dashboards/alerts.test.yml");
    let out = Command::new(installed(PROMTOOL))
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = std::fs::read_to_string(root().join("dashboards/alerts.yml")).unwrap();
    let tested = std::fs::read_to_string(&tests).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tested.contains(&format!(
                    "alertname: {name}\n        exp_alerts:\n          -"
                )),
                "no test of alerts.test.yml expects {name} to fire"
            );
        }
    }
}

/// A Prometheus server with its own port and data directory, killed and removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Prometheus {
    /// Scrape `target` every second and evaluate `rules` every second.
    fn start(target: &str, rules: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(unique("edfi-cdc-prometheus"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("alerts.yml"), rules).unwrap();
        promtool_check_rules(&dir.join("alerts.yml"));
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [alerts.yml]\n\
                 scrape_configs:\n  - job_name: edfi-cdc\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(installed(PROMETHEUS))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, dir, addr }
    }

    /// `GET path` as JSON; None until the server listens and answers 200. HTTP/1.0, so that
    /// large answers are not chunked.
    fn get(&self, path: &str) -> Option<serde_json::Value> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.addr).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200")
            .then(|| serde_json::from_str(body).ok())?
    }

    /// The samples of an instant query.
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        self.get(&format!("/api/v1/query?query={}", encode(expr)))
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The states of the alerts named `name` ("pending", "firing"); empty when inactive.
    fn alert_states(&self, name: &str) -> Vec<String> {
        self.get("/api/v1/alerts")
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .map(|a| a["state"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Percent-encoding for a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The first sample's value of an instant query result.
fn value(samples: &[serde_json::Value]) -> Option<f64> {
    samples.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_alert_fires_while_the_sink_is_blocked_and_clears_after() {
    // The production rule waits for 5 minutes of over 5 minutes of lag; this copy lowers both
    // (a test cannot wait that long) and is otherwise the shipped rule.
    let shipped = std::fs::read_to_string(root().join("dashboards/alerts.yml")).unwrap();
    let production = "max by (connector, sink) (edfi_cdc_sink_lag_seconds) > 300\n        for: 5m";
    assert!(shipped.contains(production), "the lag rule changed shape");
    let rules = shipped.replace(
        production,
        "max by (connector, sink) (edfi_cdc_sink_lag_seconds) > 2\n        for: 1s",
    );

    let rig = Rig::new(100, 31).await;
    let rep = rig.connector.run();
    let target = rep.metrics_addr().await;
    wait_caught_up(&rig.source, &rig.target, 37, Duration::from_secs(120)).await;
    let prom = Prometheus::start(&target, &rules);

    // Prometheus scrapes the replicator: the lag gauge and the retention gauges have values.
    let lag = wait_for("a scraped lag sample", Duration::from_secs(60), || async {
        value(&prom.query("max by (connector, sink) (edfi_cdc_sink_lag_seconds{sink=\"staging\"})"))
    })
    .await;
    assert!(lag < 2.0, "caught up, yet lag is {lag} s");
    let headroom = wait_for(
        "a retention headroom sample",
        Duration::from_secs(30),
        || async { value(&prom.query("edfi_cdc_retention_headroom_seconds")) },
    )
    .await;
    assert!(
        headroom > 2.0 * 86400.0 - 60.0 && headroom <= 2.0 * 86400.0,
        "caught up, the headroom is the whole 2-day retention, not {headroom}"
    );
    let versions = prom.query("edfi_cdc_retention_headroom_versions");
    assert!(versions.len() >= 37, "one headroom per table: {versions:?}");
    assert!(prom.alert_states("EdfiCdcReplicationLagHigh").is_empty());

    // Block the sink: hold an exclusive lock on a staging table in an open transaction, then
    // change that table at the source. The sink's transaction waits for the lock.
    let locker = connect(&rig.staging.url()).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE edfi.student IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    rig.source
        .batch_execute(
            "UPDATE edfi.\"Student\" SET \"FirstName\" = 'Blocked' \
             WHERE \"StudentUSI\" IN (SELECT \"StudentUSI\" FROM edfi.\"Student\" ORDER BY 1 LIMIT 2)",
        )
        .await
        .unwrap();
    wait_for(
        "EdfiCdcReplicationLagHigh to fire",
        Duration::from_secs(90),
        || async {
            prom.alert_states("EdfiCdcReplicationLagHigh")
                .contains(&"firing".to_string())
                .then_some(())
        },
    )
    .await;
    // The staging table still has the old rows (read by the lock holder, the only one who can).
    let applied: i64 = locker
        .query_one(
            "SELECT count(*) FROM edfi.student WHERE firstname = 'Blocked'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 0, "the sink applied past the lock");

    // Release the lock: the sink commits, the lag returns to zero and the alert clears.
    locker.batch_execute("ROLLBACK").await.unwrap();
    wait_caught_up(&rig.source, &rig.target, 37, Duration::from_secs(60)).await;
    wait_for(
        "EdfiCdcReplicationLagHigh to clear",
        Duration::from_secs(60),
        || async {
            prom.alert_states("EdfiCdcReplicationLagHigh")
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let renamed: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM edfi.student WHERE firstname = 'Blocked'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(renamed, 2);
    drop(prom);
    drop(rep);
}
