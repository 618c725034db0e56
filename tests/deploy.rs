//! The deployment files: docker-compose.yml against the Compose specification schema, the ECS
//! task definition and service against the ECS API's input shapes (tests/deploy/validate.py,
//! with the validators scripts/lib.sh installs), their agreement with the connector file, and
//! the compose SQL Server init script being what `ods-sim tsql` generates today.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The virtualenv python that `ensure_deploy_validators` (scripts/lib.sh) sets up.
fn python() -> PathBuf {
    let p = std::env::var_os("EDFI_CDC_DEPLOY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
            cache.join("edfi-cdc/deploy-venv/bin/python")
        });
    assert!(
        p.exists(),
        "{} is missing: run scripts/test (ensure_deploy_validators in scripts/lib.sh installs it)",
        p.display()
    );
    p
}

/// Run the validator: Ok(()) or the problems it printed.
fn validate(kind: &str, file: &Path) -> Result<(), String> {
    let out = Command::new(python())
        .arg(root().join("tests/deploy/validate.py"))
        .arg(kind)
        .arg(file)
        .output()
        .expect("run validate.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match (out.status.success(), text.trim()) {
        (true, "ok") => Ok(()),
        (false, problems) if !problems.is_empty() => Err(problems.to_string()),
        (status, text) => panic!("validate.py {kind}: unexpected result {status}: {text}"),
    }
}

/// A temp file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// A copy of `rel` with `from` replaced by `to` (asserted to occur), in a temp file.
fn broken_copy(rel: &str, from: &str, to: &str) -> (TempFile, PathBuf) {
    let text = read(rel);
    assert!(text.contains(from), "{rel} no longer contains {from:?}");
    let name = Path::new(rel).file_name().unwrap().to_string_lossy();
    let path = std::env::temp_dir().join(format!("{}-{name}", support::unique("deploy")));
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    (TempFile(path.clone()), path)
}

#[test]
fn compose_file_matches_the_compose_specification() {
    validate("compose", &root().join("docker-compose.yml")).unwrap();
    // The validator really rejects a bad file: a misspelt key and a wrong type.
    let (_dir, bad) = broken_copy(
        "docker-compose.yml",
        "    stop_grace_period: 35s",
        "    stop_grace_period: 35s\n    restart_policy: always",
    );
    let problems = validate("compose", &bad).unwrap_err();
    assert!(problems.contains("restart_policy"), "{problems}");
    let (_dir, bad) = broken_copy("docker-compose.yml", "retries: 20", "retries: twenty");
    let problems = validate("compose", &bad).unwrap_err();
    assert!(
        problems.contains("healthcheck/retries") && problems.contains("twenty"),
        "{problems}"
    );
}

/// The ECS task definitions: all-in-one, and the poller and sink workers of split mode.
const TASKS: [&str; 3] = [
    "deploy/ecs/task-definition.json",
    "deploy/ecs/task-definition-poller.json",
    "deploy/ecs/task-definition-sink.json",
];
const SERVICES: [&str; 3] = [
    "deploy/ecs/service.json",
    "deploy/ecs/service-poller.json",
    "deploy/ecs/service-sink.json",
];

#[test]
fn ecs_files_match_the_ecs_api() {
    for t in TASKS {
        validate("ecs-task", &root().join(t)).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    for s in SERVICES {
        validate("ecs-service", &root().join(s)).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let (_dir, bad) = broken_copy(
        "deploy/ecs/task-definition.json",
        "\"stopTimeout\": 35",
        "\"stopTimeout\": \"35\"",
    );
    let problems = validate("ecs-task", &bad).unwrap_err();
    assert!(problems.contains("stopTimeout"), "{problems}");
    let (_dir, bad) = broken_copy(
        "deploy/ecs/task-definition.json",
        "\"essential\": true",
        "\"essential\": true, \"restart\": \"always\"",
    );
    let problems = validate("ecs-task", &bad).unwrap_err();
    assert!(problems.contains("Unknown parameter"), "{problems}");
    let (_dir, bad) = broken_copy(
        "deploy/ecs/service.json",
        "\"desiredCount\": 1",
        "\"desiredCount\": \"one\"",
    );
    let problems = validate("ecs-service", &bad).unwrap_err();
    assert!(problems.contains("desiredCount"), "{problems}");
}

/// The `${VAR}` references of the connector file that have no default.
fn required_env(connector: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in connector.match_indices("${") {
        let inner: String = connector[i + 2..]
            .chars()
            .take_while(|c| *c != '}')
            .collect();
        if !inner.contains(":-") && !out.contains(&inner) {
            out.push(inner);
        }
    }
    out
}

/// One container's environment and secrets: name → value (or `valueFrom`).
fn variables(container: &serde_json::Value, key: &str) -> Vec<(String, String)> {
    container[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e["value"].as_str().or(e["valueFrom"].as_str()).unwrap();
            (e["name"].as_str().unwrap().to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn ecs_tasks_take_passwords_from_secrets_and_run_read_only() {
    let connector = read("connectors/edfi-ods.toml");
    for t in TASKS {
        let task: serde_json::Value = serde_json::from_str(&read(t)).unwrap();
        let container = &task["containerDefinitions"][0];
        let (env, secrets) = (
            variables(container, "environment"),
            variables(container, "secrets"),
        );
        let names: Vec<&str> = env
            .iter()
            .chain(&secrets)
            .map(|(n, _)| n.as_str())
            .collect();
        for var in required_env(&connector) {
            assert!(
                names.contains(&var.as_str()),
                "{t} does not set {var}, which connectors/edfi-ods.toml needs"
            );
        }
        // Passwords are one key of a JSON secret (an RDS-managed secret works as it is); the
        // URLs in plain environment carry none.
        for (name, value) in &secrets {
            assert!(name.ends_with("_PASSWORD"), "{t}: secret {name}");
            assert!(
                value.starts_with("arn:aws:secretsmanager:") && value.ends_with(":password::"),
                "{t}: {name} = {value}"
            );
        }
        for (name, value) in &env {
            assert!(
                !name.contains("PASSWORD"),
                "{t}: {name} in plain environment"
            );
            if name.ends_with("_DATABASE_URL") {
                let user = value
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.split_once('@'))
                    .map(|(u, _)| u);
                assert!(
                    user.is_some_and(|u| !u.contains(':')),
                    "{t}: {name} = {value}"
                );
                let pw = format!("{}_PASSWORD", name.trim_end_matches("_DATABASE_URL"));
                assert!(
                    secrets.iter().any(|(n, _)| *n == pw),
                    "{t}: {name} without {pw}"
                );
            }
        }
        assert!(secrets.iter().any(|(n, _)| n == "ODS_PASSWORD"), "{t}");
        assert_eq!(container["readonlyRootFilesystem"], true, "{t}");
        let command: Vec<&str> = container["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let role = command
            .iter()
            .position(|c| *c == "--role")
            .map(|i| command[i + 1]);
        let value = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        match role {
            None => assert_eq!(
                value("EDFI_CDC_STREAM"),
                None,
                "{t}: all-in-one runs the embedded stream"
            ),
            Some(role) => {
                assert!(t.ends_with(&format!("-{role}.json")), "{t}: --role {role}");
                // Split mode needs a durable stream; both roles feed staging and Redshift
                // (the poller reads the re-snapshot requests of each sink's database).
                assert_eq!(value("EDFI_CDC_STREAM"), Some("kafka"), "{t}");
                assert!(value("KAFKA_BOOTSTRAP_SERVERS").is_some(), "{t}");
                assert_eq!(value("REDSHIFT_ENABLED"), Some("true"), "{t}");
            }
        }
    }
}

#[test]
fn deployments_give_the_connector_what_it_needs() {
    let connector = read("connectors/edfi-ods.toml");
    let task: serde_json::Value =
        serde_json::from_str(&read("deploy/ecs/task-definition.json")).unwrap();
    let container = &task["containerDefinitions"][0];
    let names = |key: &str| -> Vec<String> {
        variables(container, key)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    let (env, secrets) = (names("environment"), names("secrets"));
    let compose = read("docker-compose.yml");
    let worker = compose
        .split("\n  edfi-cdc:\n")
        .nth(1)
        .expect("an edfi-cdc service")
        .split("\n\n")
        .next()
        .unwrap();
    // The compose worker also sets the optional ones it relies on: TLS against the container's
    // self-signed certificate, the metrics port, and the Redshift sink in stdin mode.
    for var in [
        "ODS_ENCRYPT",
        "ODS_TRUST_SERVER_CERTIFICATE",
        "STAGING_DATABASE_URL",
        "METRICS_ADDR",
        "REDSHIFT_ENABLED",
        "REDSHIFT_LOAD_MODE",
        "REDSHIFT_DATABASE_URL",
        "S3_BUCKET",
        "S3_PREFIX",
        "REDSHIFT_IAM_ROLE",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(
            worker.contains(&format!("      {var}:")),
            "compose worker lacks {var}"
        );
    }
    assert!(worker.contains("REDSHIFT_LOAD_MODE: stdin"), "{worker}");
    for var in required_env(&connector) {
        assert!(
            env.contains(&var) || secrets.contains(&var),
            "the ECS task does not set {var}, which connectors/edfi-ods.toml needs"
        );
        assert!(
            worker.contains(&format!("      {var}:")),
            "the compose worker does not set {var}, which connectors/edfi-ods.toml needs"
        );
    }
    // Stop timeouts give the replicator its shutdown grace (plus a few seconds to exit).
    let grace: u64 = connector
        .lines()
        .find_map(|l| {
            l.strip_prefix("shutdown_grace = \"")?
                .strip_suffix("s\"")?
                .parse()
                .ok()
        })
        .expect("shutdown_grace in seconds");
    let stop = container["stopTimeout"].as_u64().unwrap();
    assert!(
        (grace..=grace + 10).contains(&stop),
        "stopTimeout {stop}, grace {grace}"
    );
    assert!(
        worker.contains(&format!("stop_grace_period: {stop}s")),
        "{worker}"
    );
    // Container health checks call the subcommand the image has (no curl in it).
    let probe = container["healthCheck"]["command"].as_array().unwrap();
    assert_eq!(probe[1..3], ["edfi-cdc", "healthcheck"]);
    assert!(read("Dockerfile").contains("CMD [\"edfi-cdc\", \"healthcheck\""));
    // Neither the all-in-one service nor the poller's ever runs two of itself at once (sink
    // workers may: their lanes are fenced).
    for file in ["deploy/ecs/service.json", "deploy/ecs/service-poller.json"] {
        let service: serde_json::Value = serde_json::from_str(&read(file)).unwrap();
        assert_eq!(service["desiredCount"], 1, "{file}");
        assert_eq!(
            service["deploymentConfiguration"]["maximumPercent"], 100,
            "{file}"
        );
        assert_eq!(
            service["deploymentConfiguration"]["minimumHealthyPercent"], 0,
            "{file}"
        );
    }
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(support::bin("edfi-cdc"))
        .args(["healthcheck", "--addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn compose_init_script_is_generated_from_the_simulator() {
    let rel = "deploy/compose/mssql/edfi-ods-init.sql";
    let script = read(rel);
    let header = script.lines().next().unwrap();
    let arg = |name: &str| -> u64 {
        header
            .split(&format!("--{name} "))
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or_else(|| panic!("--{name} in the header of {rel}: {header}"))
    };
    let (students, seed) = (arg("students"), arg("seed"));
    let fresh = ods_sim::edfi::init_script("EdFi_Ods", students, seed, "edfi_cdc");
    assert!(
        fresh == script,
        "{rel} is out of date: regenerate it with\n  target/debug/ods-sim tsql --students {students} --seed {seed} > {rel}"
    );
}

/// An MSK IAM token (`sasl_mechanism = "AWS_MSK_IAM"`) carries the SigV4 presigned
/// `kafka-cluster:Connect` request that botocore, an independent signer, computes for the same
/// credentials, region and time: the same signature over the same signed query.
#[test]
fn msk_iam_tokens_carry_the_signature_botocore_computes() {
    use edfi_cdc::stream::msk_iam;
    let (key, secret, token) = (
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "FQoGZXIvYXdzE//session+token=",
    );
    let creds =
        aws_credential_types::Credentials::new(key, secret, Some(token.into()), None, "test");
    let epoch = 1_764_806_523u64;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let ours = msk_iam::presigned_url(&creds, "eu-west-1", at).unwrap();
    let out = Command::new(python())
        .arg(root().join("tests/deploy/presign.py"))
        .args(["eu-west-1", key, secret, token, &epoch.to_string()])
        .output()
        .expect("run presign.py");
    assert!(
        out.status.success(),
        "presign.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let params = |url: &str| -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = url
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .filter(|kv| !kv.starts_with("User-Agent="))
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        p.sort();
        p
    };
    assert_eq!(
        params(&ours),
        params(&theirs),
        "ours: {ours}\nbotocore: {theirs}"
    );
    assert!(ours.contains("X-Amz-Signature="), "{ours}");
}
