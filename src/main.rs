//! The `edfi-cdc` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use edfi_cdc::config::{self, ConnectorConfig, SourceKind};
use edfi_cdc::{commands, pipeline, verify};

/// Change data capture from SQL Server Change Tracking on an Ed-Fi ODS into PostgreSQL staging.
///
/// Secrets (passwords) come from the environment through `${VAR}` references in the connector
/// files, never from the command line. Exit codes: 0 success, 1 runtime failure, 2 invalid
/// configuration (nothing was touched), 3 a check failed or `verify` found a difference.
#[derive(Parser)]
#[command(name = "edfi-cdc", version)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "EDFI_CDC_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `edfi_cdc=debug`.
    #[arg(
        long,
        global = true,
        default_value = "info,tiberius=warn",
        env = "EDFI_CDC_LOG"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Replicate until SIGTERM/SIGINT.
    Run {
        /// Connector file(s) or directories of them.
        #[arg(long, short, required = true, num_args = 1..)]
        config: Vec<PathBuf>,
        /// Serve /metrics, /healthz and /readyz here instead of the first connector's
        /// `metrics_addr`.
        #[arg(long, env = "EDFI_CDC_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// What this process runs: `all` (the poller and the sinks), `poller` (read the source
        /// into a Kafka or Kinesis stream) or `sink` (a sink worker reading that stream). One
        /// image, one ECS service per role.
        #[arg(long, value_enum, default_value_t = pipeline::Role::All, env = "EDFI_CDC_ROLE")]
        role: pipeline::Role,
    },
    /// Check connectivity, Change Tracking, keys, permissions, retention headroom, the stream
    /// (Kafka brokers and topics, the Kinesis stream) and targets.
    Check {
        #[arg(long, short, required = true, num_args = 1..)]
        config: Vec<PathBuf>,
    },
    /// Checkpoints, lag and snapshot progress per sink and table. Exit 1 when the source or a
    /// target cannot be read, or a target holds no checkpoint of the connector.
    Status {
        #[arg(long, short, required = true, num_args = 1..)]
        config: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the sinks to re-snapshot a table (a running replicator takes it within seconds).
    Resnapshot {
        #[arg(long, short, required = true)]
        config: PathBuf,
        /// `schema.Table` or `Table`.
        table: String,
    },
    /// Compare every table of every sink's target with the source, row by row in effect (hashes
    /// per bucket of keys, then the keys of the buckets that differ), while the replicator
    /// runs. Exit 0 when equal, 3 when a table differs, 1 when it could not compare one (a table
    /// still being loaded included).
    Verify {
        #[arg(long, short, required = true)]
        config: PathBuf,
        /// Only these tables (`schema.Table` or `Table`; repeatable).
        #[arg(long = "table", short = 't')]
        tables: Vec<String>,
        /// Only this sink.
        #[arg(long, value_parser = ["staging", "redshift"])]
        sink: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Keys listed per kind of difference.
        #[arg(long, default_value_t = 10)]
        max_keys: usize,
        /// Mend what differs: staging key by key (exactly once beside a running sink); Redshift,
        /// tables with more than --repair-limit differences and tables of a PostgreSQL source
        /// by a re-snapshot request.
        #[arg(long)]
        repair: bool,
        #[arg(long, default_value_t = 10_000)]
        repair_limit: usize,
        /// Seconds to wait for a sink to pass the source's version before re-checking keys that
        /// changed while they were compared.
        #[arg(long, default_value_t = 120)]
        settle_timeout: u64,
        /// How long one SQL Server query may wait for the server's answer (the hashing scans
        /// of a large table answer only when done), instead of `[source] query_timeout`.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        query_timeout: std::time::Duration,
    },
    /// Exit 0 if the replicator's /healthz on ADDR answers 200 within 3 s, else 1 (a container
    /// health check that needs no HTTP client in the image).
    Healthcheck {
        /// The replicator's HTTP port.
        #[arg(
            long,
            env = "EDFI_CDC_HEALTHCHECK_ADDR",
            default_value = "127.0.0.1:9720"
        )]
        addr: std::net::SocketAddr,
    },
    /// Reporting models (`connectors/models/<group>/*.sql`).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Print the SQL a DBA runs to set the source up: on SQL Server the T-SQL that turns Change
    /// Tracking on for the database and tables; on PostgreSQL the publication and grants for
    /// logical decoding.
    EnableCt {
        #[arg(long, short, required = true)]
        config: PathBuf,
        /// Print the statements (this command never runs them).
        #[arg(long, required = true)]
        print: bool,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Compare every model with the target (columns, types, keys, the SELECT's result) without
    /// changing anything. Exit 3 on a problem.
    Check {
        #[arg(long, short, required = true)]
        config: PathBuf,
        /// Model directory (`<dir>/<group>/*.sql`); default: the Redshift sink's `models`, else
        /// `models/` next to the connector file.
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// PostgreSQL-protocol URL of the target; default: the Redshift sink's `url`.
        #[arg(long, env = "REDSHIFT_DATABASE_URL", hide_env_values = true)]
        target_url: Option<String>,
    },
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: log collectors (awslogs) get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(paths: &[PathBuf]) -> Result<Vec<ConnectorConfig>, ExitCode> {
    config::load(paths, &|k| std::env::var(k).ok()).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // ring is the one TLS provider (targets, S3, SQL Server); tiberius would otherwise pick
    // aws-lc-rs, which it is built with.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("a TLS provider was installed before start");
        return ExitCode::FAILURE;
    }
    init_logging(cli.log_format, &cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run {
            config,
            metrics_addr,
            role,
        } => {
            let configs = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // Bad model files are configuration errors too: report them before connecting.
            for c in &configs {
                if let Err(e) = edfi_cdc::pipeline::reporting_models(c) {
                    eprintln!("{e:#}");
                    return ExitCode::from(2);
                }
                if let Err(e) = edfi_cdc::pipeline::aws_region(c).await {
                    eprintln!("edfi-cdc: {e:#}");
                    return ExitCode::from(2);
                }
            }
            let grace = configs
                .iter()
                .map(|c| c.shutdown_grace)
                .max()
                .unwrap_or_default();
            let stop = CancellationToken::new();
            let mut run = tokio::spawn(pipeline::run(configs, metrics_addr, role, stop.clone()));
            let result = tokio::select! {
                r = &mut run => r,
                _ = shutdown_signal() => {
                    info!(grace_seconds = grace.as_secs(), "stop requested; finishing the current transaction");
                    stop.cancel();
                    match tokio::time::timeout(grace, &mut run).await {
                        Ok(r) => r,
                        Err(_) => {
                            warn!("grace period over; abandoning open transactions (they roll back, checkpoints keep it safe)");
                            return ExitCode::SUCCESS;
                        }
                    }
                }
            };
            match result {
                Ok(Ok(())) => {
                    info!("stopped");
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) => {
                    error!(error = format!("{e:#}"), "edfi-cdc failed");
                    eprintln!("edfi-cdc: {e:#}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("edfi-cdc: internal error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => {
            let configs = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut ok = true;
            for c in &configs {
                println!("connector {} ({})", c.name, c.file.display());
                for l in commands::check(c).await {
                    ok &= l.pass;
                    println!("  {l}");
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Command::Status { config, json } => {
            let configs = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut code = ExitCode::SUCCESS;
            for c in &configs {
                match commands::status(c).await {
                    Ok(status) => {
                        print!("{}", commands::render_status(&status, json));
                        for p in &status.problems {
                            eprintln!("edfi-cdc status: connector {}: {p}", c.name);
                            code = ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("edfi-cdc status: connector {}: {e:#}", c.name);
                        return ExitCode::FAILURE;
                    }
                }
            }
            code
        }
        Command::Resnapshot { config, table } => {
            let configs = match load(std::slice::from_ref(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match commands::resnapshot(&configs[0], &table).await {
                Ok(id) => {
                    println!("re-snapshot of {id} requested; a running replicator takes it within a few seconds (or at its next start)");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("edfi-cdc resnapshot: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Verify {
            config,
            tables,
            sink,
            json,
            max_keys,
            repair,
            repair_limit,
            settle_timeout,
            query_timeout,
        } => {
            let mut configs = match load(std::slice::from_ref(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            configs[0].source.query_timeout = query_timeout;
            let opts = verify::Options {
                tables,
                sink,
                max_keys,
                repair,
                repair_limit,
                settle_timeout: std::time::Duration::from_secs(settle_timeout),
            };
            match verify::verify(&configs[0], &opts).await {
                Ok(reports) => {
                    print!("{}", verify::render(&reports, json));
                    let skipped: Vec<String> = reports
                        .iter()
                        .filter_map(|r| {
                            r.skipped.as_ref().map(|why| format!("{} ({why})", r.table))
                        })
                        .collect();
                    if reports.iter().any(verify::TableReport::differs) {
                        ExitCode::from(3)
                    } else if !skipped.is_empty() {
                        // Not known to be equal: a table not compared is no pass.
                        eprintln!("edfi-cdc verify: not compared: {}", skipped.join("; "));
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("edfi-cdc verify: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Healthcheck { addr } => match healthcheck(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edfi-cdc healthcheck: {addr}: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Models {
            command:
                ModelsCommand::Check {
                    config,
                    models_dir,
                    target_url,
                },
        } => {
            let configs = match load(std::slice::from_ref(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let c = &configs[0];
            let dir = commands::models_dir(c, models_dir.as_deref());
            let lines = commands::models_check(c, &dir, target_url.as_deref()).await;
            println!("connector {} ({})", c.name, c.file.display());
            for l in &lines {
                println!("  {l}");
            }
            if lines.iter().all(|l| l.pass) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Command::EnableCt { config, print: _ } => {
            let configs = match load(std::slice::from_ref(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let c = &configs[0];
            match c.source.kind {
                SourceKind::Mssql => print!(
                    "{}",
                    edfi_cdc::source::mssql::queries::enable_ct(
                        &c.source.database,
                        &c.tables(),
                        c.source.heartbeat().as_ref()
                    )
                ),
                SourceKind::Postgres => {
                    let user = edfi_cdc::sink::pg::parse(c.source.url.expose())
                        .ok()
                        .and_then(|u| u.config.get_user().map(str::to_string))
                        .unwrap_or_else(|| "edfi_cdc".into());
                    print!(
                        "{}",
                        edfi_cdc::source::postgres::queries::setup(
                            &c.source.publication,
                            &user,
                            &c.tables()
                        )
                    )
                }
            }
            ExitCode::SUCCESS
        }
    }
}

/// `GET /healthz` over a plain TCP connection; Ok when the status is 200.
fn healthcheck(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use std::io::{Error, Read, Write};
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    match &head[..] {
        [b'H', b'T', b'T', b'P', b'/', _, _, _, b' ', b'2', b'0', b'0'] => Ok(()),
        _ => Err(Error::other(format!(
            "unexpected answer {:?}",
            String::from_utf8_lossy(&head)
        ))),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
