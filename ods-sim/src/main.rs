//! `ods-sim`: a stand-in for SQL Server with Change Tracking on an Ed-Fi ODS.
//!
//! Creates (or reuses) the backing database on the PostgreSQL server given by `--postgres`,
//! listens for TDS connections, prints `ods-sim ready on ADDR database NAME` on stdout once it
//! accepts them, then logs to stderr. Stops on SIGTERM or SIGINT. `ods-sim tsql` prints the same
//! database as a T-SQL script for a real SQL Server instead; `ods-sim load-postgres` loads it
//! into a plain PostgreSQL database laid out as the ODS/API's PostgreSQL edition.

use anyhow::Context;
use clap::Parser;
use ods_sim::edfi;
use ods_sim::server::{self, ServerConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "ods-sim",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to accept TDS connections on (port 0: any free port; the line on stdout tells).
    #[arg(long, default_value = "127.0.0.1:1433")]
    listen: SocketAddr,
    /// PostgreSQL server URL, e.g. postgres://postgres@127.0.0.1:5432/postgres; the database
    /// named by --database is created on that server when missing.
    #[arg(long, env = "ODS_SIM_POSTGRES", required = true)]
    postgres: Option<String>,
    /// Database name, over TDS and on the PostgreSQL server.
    #[arg(long, default_value = "EdFi_Ods")]
    database: String,
    /// Password of the SQL login.
    #[arg(
        long,
        env = "ODS_SIM_PASSWORD",
        hide_env_values = true,
        required = true
    )]
    password: Option<String>,
    /// Name of the SQL login.
    #[arg(long, default_value = "sa")]
    user: String,
    /// Students in the generated sample data (used when the database is created).
    #[arg(long, default_value_t = 5_000)]
    students: u64,
    /// Seed of the sample data generator and of the workload.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Changed rows per second written by the change workload (0: no workload).
    #[arg(long, default_value_t = 0.0)]
    workload_rate: f64,
    /// Concurrent writers of the workload.
    #[arg(long, default_value_t = 2)]
    workload_writers: usize,
    /// PEM certificate chain for TLS: clients that require encryption get it (with
    /// --tls-key); without it they are told encryption is not supported.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The login lacks VIEW SERVER STATE: HAS_PERMS_BY_NAME says so, and
    /// sys.dm_tran_commit_table shows it a commit only after the next checkpoint (a minute).
    #[arg(long)]
    no_view_server_state: bool,
    /// Log filter (tracing-subscriber syntax), also RUST_LOG.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the database (the 37 tables, the sample data, Change Tracking on, a login for the
    /// replicator) as a T-SQL script for a real SQL Server, to run with sqlcmd.
    Tsql {
        /// Students in the sample data.
        #[arg(long, default_value_t = 200)]
        students: u64,
        /// Seed of the sample data generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Database to create.
        #[arg(long, default_value = "EdFi_Ods")]
        database: String,
        /// Login to create for the replicator (password: sqlcmd variable EDFI_CDC_PASSWORD).
        #[arg(long, default_value = "edfi_cdc")]
        login: String,
    },
    /// Load the same sample data into a new database on a plain PostgreSQL server, laid out as
    /// the Ed-Fi ODS/API's PostgreSQL edition (lower-case names, no Change Tracking), as a
    /// source for `[source] kind = "postgres"`. Serves nothing.
    LoadPostgres {
        /// PostgreSQL server URL; the database is created there.
        #[arg(long)]
        postgres: String,
        /// Database to create (an existing one is an error).
        #[arg(long, default_value = "edfi_ods")]
        database: String,
        /// Students in the sample data.
        #[arg(long, default_value_t = 5_000)]
        students: u64,
        /// Seed of the sample data generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Tsql {
        students,
        seed,
        database,
        login,
    }) = &args.command
    {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(edfi::init_script(database, *students, *seed, login).as_bytes())?;
        stdout.flush()?;
        return Ok(());
    }
    if let Some(Command::LoadPostgres {
        postgres,
        database,
        students,
        seed,
    }) = &args.command
    {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
            .with_writer(std::io::stderr)
            .init();
        let opts = edfi::SetupOptions {
            students: *students,
            seed: *seed,
            ..edfi::SetupOptions::default()
        };
        edfi::load_postgres(postgres, database, &opts).await?;
        return Ok(());
    }
    // Required by clap unless a subcommand is given.
    let (Some(postgres), Some(password)) = (args.postgres.clone(), args.password.clone()) else {
        anyhow::bail!("--postgres and --password are required");
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;

    let database_url = prepare_database(&args, &postgres).await?;
    let postgres: tokio_postgres::Config = database_url
        .parse()
        .context("the URL of the backing database")?;
    let mut config = ServerConfig::new(postgres, &args.database, &password);
    config.user = args.user.clone();
    config.view_server_state = !args.no_view_server_state;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(ods_sim::tds::tls::server_config(cert, key)?);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let workload = (args.workload_rate > 0.0).then(|| {
        let cfg = edfi::WorkloadConfig {
            rate: args.workload_rate,
            seed: args.seed,
            writers: args.workload_writers,
            ..edfi::WorkloadConfig::default()
        };
        let url = database_url.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move { edfi::run_workload(&url, cfg, stop).await })
    });

    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ods-sim ready on {addr} database {}", args.database)?;
        stdout.flush()?;
    }
    tracing::info!(%addr, database = %args.database, "accepting TDS connections");

    let mut stopped = stop_rx.clone();
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(server::serve(listener, config, shutdown));
    wait_for_signal().await?;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    if let Some(workload) = workload {
        match tokio::time::timeout(Duration::from_secs(10), workload).await {
            Ok(Ok(Ok(stats))) => tracing::info!(
                transactions = stats.transactions,
                retries = stats.retries,
                "workload stopped"
            ),
            Ok(Ok(Err(e))) => tracing::warn!("workload failed: {e:#}"),
            Ok(Err(e)) => tracing::warn!("workload task failed: {e}"),
            Err(_) => tracing::warn!("workload did not stop within 10 s"),
        }
    }
    server.await??;
    Ok(())
}

/// Create the backing database when missing (Ed-Fi tables, sample data, Change Tracking) and
/// return its URL.
async fn prepare_database(args: &Args, server: &str) -> anyhow::Result<String> {
    let opts = edfi::SetupOptions {
        students: args.students,
        seed: args.seed,
        ..edfi::SetupOptions::default()
    };
    let outcome = edfi::setup(server, &args.database, &opts).await?;
    tracing::info!(
        created = outcome.created,
        rows = outcome.total_rows(),
        secs = outcome.elapsed.as_secs_f64(),
        "backing database ready"
    );
    Ok(edfi::database_url(server, &args.database))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
