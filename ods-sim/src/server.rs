//! TDS sessions backed by PostgreSQL.
//!
//! [`serve`] accepts connections until its shutdown future completes; each connection is a
//! session on a task of its own with its own PostgreSQL connection (`search_path` dbo, time zone
//! UTC). A session: PRELOGIN (encryption not supported), LOGIN7 with SQL authentication, then
//! requests: SQL batches, RPC `sp_executesql` and transaction manager requests. Each batch is
//! translated by [`crate::sql::translate`] and its statements run in order; result rows are
//! converted from PostgreSQL's binary format straight into TDS rows and sent as packets fill.
//!
//! Errors: a failing statement ends its batch with an ERROR token (PostgreSQL errors mapped to
//! SQL Server numbers by [`pg::map_error`]); the connection stays usable. Inside a transaction
//! each statement runs under a savepoint: a failing statement is undone and the transaction goes
//! on, as in SQL Server, except after a snapshot update conflict (3960) or deadlock (1205), which
//! roll the whole transaction back (ENVCHANGE rollback). Should undoing a statement fail, the
//! transaction becomes uncommittable (3930 until ROLLBACK; COMMIT rolls it back).
//!
//! Attention: the socket is read while a request runs; an attention cancels the PostgreSQL query,
//! stops the result and is acknowledged with DONE_ATTN.

mod pg;

use crate::sql::{self, Isolation, Statement};
use crate::tds::packet::{self, Message, PacketWriter};
use crate::tds::request::{self, tm_isolation, TmRequest};
use crate::tds::{login, prelogin, tls, token, Malformed, TDS_7_4};
use crate::types::{Param, SqlError};
use anyhow::Context;
use bytes::BufMut;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;
use tracing::{debug, info, warn};

/// What a server needs: the backing PostgreSQL database, the database name clients see, and
/// the one SQL login (`sa` by default).
#[derive(Clone)]
pub struct ServerConfig {
    /// Connection settings of the backing PostgreSQL database.
    pub postgres: tokio_postgres::Config,
    /// The database name over TDS.
    pub database: String,
    pub user: String,
    pub password: String,
    /// TLS for clients that require encryption (`--tls-cert`, `--tls-key`); without it they
    /// are told encryption is not supported.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether the login holds VIEW SERVER STATE (`--no-view-server-state`: it does not, and
    /// `sys.dm_tran_commit_table` shows it a commit only a minute later).
    pub view_server_state: bool,
}

impl ServerConfig {
    pub fn new(
        postgres: tokio_postgres::Config,
        database: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        ServerConfig {
            postgres,
            database: database.into(),
            user: "sa".to_string(),
            password: password.into(),
            tls: None,
            view_server_state: true,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("postgres_host", &self.postgres.get_hosts())
            .field("postgres_dbname", &self.postgres.get_dbname())
            .field("database", &self.database)
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Name in ERROR and INFO tokens.
const SERVER_NAME: &str = "ods-sim";
/// Reported as SQL Server 2019 (15.0.2000).
const SERVER_VERSION: [u8; 4] = [15, 0, 0x07, 0xD0];
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

struct Shared {
    config: ServerConfig,
    types: pg::TypeCache,
    next_spid: AtomicU16,
}

/// Accept TDS connections on `listener` until `shutdown` completes, then close them all.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        config,
        types: pg::TypeCache::default(),
        next_spid: AtomicU16::new(51),
    });
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    sessions.spawn(run_session(stream, peer, shared));
                }
                Err(e) => {
                    warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    sessions.shutdown().await;
    Ok(())
}

async fn run_session(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let spid = shared.next_spid.fetch_add(1, Ordering::Relaxed);
    info!(%peer, spid, "connection opened");
    match session(stream, spid, &shared).await {
        Ok(()) => info!(%peer, spid, "connection closed"),
        Err(e) => info!(%peer, spid, "connection closed: {e:#}"),
    }
}

/// A message or the end of the client's side of the connection, from the reader task.
enum Incoming {
    Message(Message),
    End(Option<std::io::Error>),
}

/// The halves of a session's connection: TCP, or TLS over TCP.
type ReadHalf = Box<dyn AsyncRead + Send + Sync + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Sync + Unpin>;

async fn session(stream: TcpStream, spid: u16, shared: &Arc<Shared>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let config = &shared.config;
    let Some((login, rd, wr)) =
        tokio::time::timeout(LOGIN_TIMEOUT, handshake(stream, spid, config))
            .await
            .context("login timed out")??
    else {
        return Ok(());
    };
    let mut out = Out::new(PacketWriter::new(wr, packet::DEFAULT_PACKET_SIZE, spid));

    let login_error = if login.integrated_security
        || !login.username.eq_ignore_ascii_case(&config.user)
        || login.password != config.password
    {
        Some(SqlError {
            number: 18456,
            state: 1,
            class: 14,
            message: format!("Login failed for user '{}'.", login.username),
            preceding: Vec::new(),
        })
    } else if !login.database.is_empty() && !login.database.eq_ignore_ascii_case(&config.database) {
        Some(SqlError::new(
            4060,
            11,
            format!(
                "Cannot open database \"{}\" requested by the login. The login failed.",
                login.database
            ),
        ))
    } else {
        None
    };
    if let Some(err) = login_error {
        info!(spid, user = %login.username, number = err.number, "login failed");
        return out.refuse(&err).await;
    }
    let Some(tds_version) = negotiated_version(login.tds_version) else {
        let err = SqlError::new(
            18456,
            14,
            "ods-sim speaks TDS 7.2 to 7.4 only; the client asked for an older version.",
        );
        return out.refuse(&err).await;
    };

    let client = match connect_postgres(config).await {
        Ok(client) => client,
        Err(e) => {
            warn!(spid, "cannot open the backing database: {e:#}");
            let err = SqlError::new(
                4060,
                11,
                format!(
                    "Cannot open database \"{}\" requested by the login. The login failed.",
                    config.database
                ),
            );
            return out.refuse(&err).await;
        }
    };

    let packet_size = match login.packet_size {
        0 => packet::DEFAULT_PACKET_SIZE,
        n => n.clamp(packet::MIN_PACKET_SIZE, packet::MAX_PACKET_SIZE),
    };
    {
        let db = &config.database;
        let buf = out.buf();
        token::env_change_str(buf, token::ENV_DATABASE, db, "master");
        token::info(
            buf,
            5701,
            &format!("Changed database context to '{db}'."),
            SERVER_NAME,
        );
        token::env_change_bytes(
            buf,
            token::ENV_COLLATION,
            &crate::tds::types::COLLATION,
            &[],
        );
        token::env_change_str(buf, token::ENV_LANGUAGE, "us_english", "");
        token::info(
            buf,
            5703,
            "Changed language setting to us_english.",
            SERVER_NAME,
        );
        token::login_ack(buf, tds_version, "Microsoft SQL Server", SERVER_VERSION);
        token::env_change_str(
            buf,
            token::ENV_PACKET_SIZE,
            &packet_size.to_string(),
            &packet::DEFAULT_PACKET_SIZE.to_string(),
        );
    }
    out.done(token::DONE, token::DONE_FINAL, 0, 0);
    out.end(false).await?;
    out.w.set_packet_size(packet_size);
    info!(spid, user = %login.username, app = %login.app_name, packet_size, "logged in");

    let attention = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel(8);
    let reader = tokio::spawn(read_requests(rd, packet_size, attention.clone(), tx));
    let cancel = client.cancel_token();
    let mut s = Session {
        shared: shared.clone(),
        spid,
        pg: client,
        out,
        trancount: 0,
        doomed: false,
        tx_descriptor: 0,
        isolation: Isolation::ReadCommitted,
        attention: attention.clone(),
        has_sim_columns: None,
        identity_insert: None,
        scope_identity_set: false,
        snapshot_generation: None,
        altered_schema: false,
    };
    let result = serve_requests(&mut s, &mut rx, &cancel).await;
    reader.abort();
    result
}

/// PRELOGIN (optional), the TLS handshake when the client requires encryption and the server
/// has a certificate, and LOGIN7; then the connection's halves. `None` when the client went
/// away.
async fn handshake(
    mut stream: TcpStream,
    spid: u16,
    config: &ServerConfig,
) -> anyhow::Result<Option<(login::Login7, ReadHalf, WriteHalf)>> {
    let Some(msg) = packet::read_message(&mut stream, packet::MAX_PACKET_SIZE).await? else {
        return Ok(None);
    };
    let (mut rd, wr): (ReadHalf, WriteHalf) = if msg.ty == packet::PRELOGIN {
        let pre = prelogin::parse(&msg.payload)?;
        let tls = config.tls.clone().filter(|_| pre.requires_encryption());
        let answer = match tls {
            Some(_) => prelogin::ENCRYPT_ON,
            None => prelogin::ENCRYPT_NOT_SUP,
        };
        let mut w = PacketWriter::new(&mut stream, packet::DEFAULT_PACKET_SIZE, spid);
        w.buf()
            .extend_from_slice(&prelogin::response(SERVER_VERSION, answer));
        w.end_message().await?;
        match tls {
            Some(tls) => {
                let stream = tls::accept(stream, tls).await.context("TLS handshake")?;
                debug!(spid, "TLS handshake done");
                let (rd, wr) = tokio::io::split(stream);
                (Box::new(rd), Box::new(wr))
            }
            None => {
                if pre.requires_encryption() {
                    info!(
                        spid,
                        "the client requires encryption, and ods-sim has no certificate (--tls-cert)"
                    );
                }
                let (rd, wr) = stream.into_split();
                (Box::new(rd), Box::new(wr))
            }
        }
    } else {
        let (rd, wr) = stream.into_split();
        (Box::new(rd), Box::new(wr))
    };
    let msg = if msg.ty == packet::PRELOGIN {
        match packet::read_message(&mut rd, packet::MAX_PACKET_SIZE).await? {
            Some(m) => m,
            None => return Ok(None),
        }
    } else {
        msg
    };
    if msg.ty != packet::LOGIN7 {
        anyhow::bail!(
            "expected LOGIN7, got message type 0x{:02x} (a TLS handshake without --tls-cert?)",
            msg.ty
        );
    }
    Ok(Some((login::parse(&msg.payload)?, rd, wr)))
}

/// The TDS version answered in LOGINACK for the one the client asked for.
fn negotiated_version(client: u32) -> Option<u32> {
    match client {
        v if v >= TDS_7_4 => Some(TDS_7_4),
        v if v >= 0x730B_0000 => Some(0x730B_0003),
        v if v >= 0x730A_0000 => Some(0x730A_0003),
        v if v >= 0x7209_0000 => Some(0x7209_0002),
        _ => None,
    }
}

async fn connect_postgres(config: &ServerConfig) -> anyhow::Result<tokio_postgres::Client> {
    let mut pg = config.postgres.clone();
    pg.application_name("ods-sim");
    let (client, connection) = pg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!("backing connection ended: {e}");
        }
    });
    client
        .batch_execute("SET search_path TO dbo; SET TimeZone TO 'UTC'")
        .await?;
    if !config.view_server_state {
        client
            .batch_execute("SET sim.view_server_state = 'off'")
            .await?;
    }
    Ok(client)
}

/// Reads client messages and hands them to the session; flags attention at once.
async fn read_requests(
    mut rd: ReadHalf,
    packet_size: u32,
    attention: Arc<AtomicBool>,
    tx: mpsc::Sender<Incoming>,
) {
    loop {
        let incoming = match packet::read_message(&mut rd, packet_size).await {
            Ok(Some(msg)) => {
                if msg.ty == packet::ATTENTION {
                    attention.store(true, Ordering::SeqCst);
                }
                Incoming::Message(msg)
            }
            Ok(None) => Incoming::End(None),
            Err(e) => Incoming::End(Some(e)),
        };
        let end = matches!(incoming, Incoming::End(_));
        if tx.send(incoming).await.is_err() || end {
            return;
        }
    }
}

/// The request loop: one request at a time, watching for attention while it runs.
async fn serve_requests(
    s: &mut Session,
    rx: &mut mpsc::Receiver<Incoming>,
    cancel: &tokio_postgres::CancelToken,
) -> anyhow::Result<()> {
    let mut queued: VecDeque<Message> = VecDeque::new();
    // Attentions acknowledged in a response before their message was taken from the channel.
    let mut acked_early = 0u32;
    loop {
        let msg = match queued.pop_front() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(Incoming::Message(m)) => m,
                Some(Incoming::End(None)) | None => return Ok(()),
                Some(Incoming::End(Some(e))) => return Err(e.into()),
            },
        };
        if msg.ty == packet::ATTENTION {
            if acked_early > 0 {
                acked_early -= 1;
            } else {
                s.attention.store(false, Ordering::SeqCst);
                s.out.end(true).await?;
            }
            continue;
        }
        let mut taken = 0u32;
        let acked = {
            let work = s.handle(msg);
            tokio::pin!(work);
            loop {
                tokio::select! {
                    r = &mut work => break r?,
                    incoming = rx.recv() => match incoming {
                        Some(Incoming::Message(m)) if m.ty == packet::ATTENTION => {
                            taken += 1;
                            if let Err(e) = cancel.cancel_query(NoTls).await {
                                debug!("cancelling the backing query failed: {e}");
                            }
                        }
                        Some(Incoming::Message(m)) => queued.push_back(m),
                        Some(Incoming::End(None)) | None => return Ok(()),
                        Some(Incoming::End(Some(e))) => return Err(e.into()),
                    },
                }
            }
        };
        match (acked, taken) {
            (true, 0) => acked_early += 1,
            (false, n) if n > 0 => {
                s.attention.store(false, Ordering::SeqCst);
                s.out.end(true).await?;
            }
            _ => {}
        }
    }
}

/// A response message being written: tokens go to the packet writer; the DONE of the last
/// statement is held back until it is known whether more tokens follow (DONE_MORE).
struct Out {
    w: PacketWriter<WriteHalf>,
    pending_done: Option<(u8, u16, u16, u64)>,
}

impl Out {
    fn new(w: PacketWriter<WriteHalf>) -> Self {
        Out {
            w,
            pending_done: None,
        }
    }

    fn buf(&mut self) -> &mut bytes::BytesMut {
        if let Some((tok, status, cmd, count)) = self.pending_done.take() {
            token::done(self.w.buf(), tok, status | token::DONE_MORE, cmd, count);
        }
        self.w.buf()
    }

    fn done(&mut self, tok: u8, status: u16, cmd: u16, count: u64) {
        self.buf();
        self.pending_done = Some((tok, status, cmd, count));
    }

    /// An error with the errors SQL Server sends before it.
    fn error(&mut self, err: &SqlError) {
        let buf = self.buf();
        for e in err.preceding.iter().chain([err]) {
            token::error(buf, e, SERVER_NAME);
        }
    }

    /// Finish the message; with `attention`, acknowledge an attention as its last token.
    async fn end(&mut self, attention: bool) -> std::io::Result<()> {
        if attention {
            let buf = self.buf();
            token::done(buf, token::DONE, token::DONE_ATTN, 0, 0);
        } else {
            match self.pending_done.take() {
                Some((tok, status, cmd, count)) => {
                    token::done(self.w.buf(), tok, status, cmd, count)
                }
                None => token::done(self.w.buf(), token::DONE, token::DONE_FINAL, 0, 0),
            }
        }
        self.w.end_message().await
    }

    /// Answer a login with an error, then close the connection.
    async fn refuse(&mut self, err: &SqlError) -> anyhow::Result<()> {
        self.error(err);
        self.done(token::DONE, token::DONE_ERROR, 0, 0);
        self.end(false).await?;
        self.w.shutdown().await?;
        Ok(())
    }
}

/// Why a statement failed.
enum Failure {
    /// Report to the client; the session goes on.
    Sql(SqlError),
    /// The session cannot go on (the client or the backing connection is gone).
    Fatal(anyhow::Error),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Fatal(e.into())
    }
}

impl From<SqlError> for Failure {
    fn from(e: SqlError) -> Self {
        Failure::Sql(e)
    }
}

struct Session {
    shared: Arc<Shared>,
    spid: u16,
    pg: tokio_postgres::Client,
    out: Out,
    /// `@@TRANCOUNT`.
    trancount: u32,
    /// An error happened in the open transaction: only ROLLBACK (or COMMIT, which rolls back).
    doomed: bool,
    tx_descriptor: u64,
    isolation: Isolation,
    attention: Arc<AtomicBool>,
    has_sim_columns: Option<bool>,
    /// The table `SET IDENTITY_INSERT … ON` applies to (PostgreSQL name, T-SQL name).
    identity_insert: Option<(String, String)>,
    /// An insert set `SCOPE_IDENTITY()` in the current batch; the next batch clears it.
    scope_identity_set: bool,
    /// The type cache's generation when the open transaction began, if its snapshot is the
    /// transaction's (REPEATABLE READ and stricter); otherwise each statement takes its own.
    snapshot_generation: Option<u64>,
    /// The open transaction changed a table's columns: declared types are read afresh, and the
    /// type cache is invalidated again when the transaction ends.
    altered_schema: bool,
}

impl Session {
    fn pg_failure(&self, e: tokio_postgres::Error) -> Failure {
        if self.pg.is_closed() {
            Failure::Fatal(anyhow::Error::new(e).context("backing database connection lost"))
        } else {
            Failure::Sql(pg::map_error(&e, &self.shared.config.database))
        }
    }

    /// Run one request and send its response. Returns whether the response acknowledged an
    /// attention.
    async fn handle(&mut self, msg: Message) -> anyhow::Result<bool> {
        if msg.reset_connection {
            self.reset().await?;
        }
        let result = match msg.ty {
            packet::SQL_BATCH => match request::parse_batch(&msg.payload) {
                Ok(text) => self.run_batch(&text, &[], token::DONE).await,
                Err(e) => Err(Failure::Sql(protocol_error(e))),
            },
            packet::RPC => self.run_rpc(&msg.payload).await,
            packet::TRANSACTION_MANAGER => match request::parse_tm(&msg.payload) {
                Ok(tm) => self.run_tm(tm).await,
                Err(e) => Err(Failure::Sql(protocol_error(e))),
            },
            other => Err(Failure::Sql(SqlError::unsupported(format!(
                "TDS message type 0x{other:02x}"
            )))),
        };
        match result {
            Ok(()) => {}
            Err(Failure::Sql(err)) => self.fail(&err, token::DONE).await?,
            Err(Failure::Fatal(e)) => return Err(e),
        }
        let attention = self.attention.swap(false, Ordering::SeqCst);
        self.out.end(attention).await?;
        Ok(attention)
    }

    /// Report an error that ended a batch; handle the transaction as SQL Server does.
    async fn fail(&mut self, err: &SqlError, done_token: u8) -> anyhow::Result<()> {
        let cancelled = self.attention.load(Ordering::SeqCst);
        if !cancelled {
            debug!(spid = self.spid, number = err.number, "{}", err.message);
            self.out.error(err);
        }
        if self.trancount > 0 && pg::rolls_back(err) {
            self.rollback_transaction().await?;
        }
        self.out.done(done_token, token::DONE_ERROR, 0, 0);
        Ok(())
    }

    async fn reset(&mut self) -> anyhow::Result<()> {
        if self.trancount > 0 {
            self.rollback_transaction().await?;
        }
        self.isolation = Isolation::ReadCommitted;
        self.identity_insert = None;
        self.pg
            .batch_execute(
                "SELECT set_config('sim.identity', '', false), set_config('sim.scope_identity', '', false)",
            )
            .await?;
        self.scope_identity_set = false;
        Ok(())
    }

    async fn run_rpc(&mut self, payload: &[u8]) -> Result<(), Failure> {
        let calls = request::parse_rpc(payload).map_err(protocol_error)?;
        for call in calls {
            if !call.proc.is_executesql() {
                return Err(Failure::Sql(SqlError::new(
                    2812,
                    16,
                    format!("Could not find stored procedure '{}'.", call.proc),
                )));
            }
            let exec = request::execute_sql(call).map_err(protocol_error)?;
            let ok = match self
                .run_batch(&exec.statement, &exec.params, token::DONEINPROC)
                .await
            {
                Ok(()) => true,
                Err(Failure::Sql(err)) => {
                    self.fail(&err, token::DONEINPROC)
                        .await
                        .map_err(Failure::Fatal)?;
                    false
                }
                Err(fatal) => return Err(fatal),
            };
            token::return_status(self.out.buf(), if ok { 0 } else { 1 });
            let status = if ok {
                token::DONE_FINAL
            } else {
                token::DONE_ERROR
            };
            self.out.done(token::DONEPROC, status, 0, 0);
            if self.attention.load(Ordering::SeqCst) {
                break;
            }
        }
        Ok(())
    }

    async fn run_batch(
        &mut self,
        text: &str,
        params: &[Param],
        done_token: u8,
    ) -> Result<(), Failure> {
        let statements = sql::translate(text)?;
        // Each batch and each sp_executesql call is a scope of its own: SCOPE_IDENTITY() starts
        // out NULL in it (@@IDENTITY keeps the session's last value).
        if self.scope_identity_set
            && self
                .pg
                .batch_execute("SELECT set_config('sim.scope_identity', '', false)")
                .await
                .is_ok()
        {
            self.scope_identity_set = false;
        }
        if statements.is_empty() {
            self.out.done(done_token, token::DONE_FINAL, 0, 0);
        }
        for st in &statements {
            if self.attention.load(Ordering::SeqCst) {
                break;
            }
            self.run_statement(st, params, done_token).await?;
        }
        Ok(())
    }

    async fn run_statement(
        &mut self,
        st: &Statement,
        params: &[Param],
        done_token: u8,
    ) -> Result<(), Failure> {
        match st {
            Statement::Query {
                sql,
                params: names,
                returns_rows,
            } => {
                self.savepoint().await?;
                let result = self
                    .run_query(sql, names, params, *returns_rows, done_token)
                    .await
                    .map(drop);
                self.end_savepoint(&result).await?;
                result
            }
            Statement::Insert {
                sql,
                params: names,
                table,
                name,
                columns,
            } => {
                self.savepoint().await?;
                let result = self
                    .insert(sql, names, params, table, name, columns, done_token)
                    .await;
                self.end_savepoint(&result).await?;
                result
            }
            Statement::SetIdentityInsert { table, name, on } => {
                self.set_identity_insert(table, name, *on).await?;
                self.out.done(done_token, token::DONE_FINAL, 0, 0);
                Ok(())
            }
            Statement::Begin => {
                self.begin().await?;
                self.out
                    .done(done_token, token::DONE_FINAL, token::CMD_BEGIN_TRAN, 0);
                Ok(())
            }
            Statement::Commit => {
                self.commit().await?;
                self.out
                    .done(done_token, token::DONE_FINAL, token::CMD_COMMIT_TRAN, 0);
                Ok(())
            }
            Statement::Rollback => {
                if self.trancount == 0 {
                    return Err(Failure::Sql(SqlError::new(
                        3903,
                        16,
                        "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                    )));
                }
                self.rollback_transaction().await.map_err(Failure::Fatal)?;
                self.out
                    .done(done_token, token::DONE_FINAL, token::CMD_ROLLBACK_TRAN, 0);
                Ok(())
            }
            Statement::SetIsolation(iso) => {
                self.isolation = *iso;
                self.out.done(done_token, token::DONE_FINAL, 0, 0);
                Ok(())
            }
            Statement::Use(db) => {
                let name = db.trim_matches(|c| c == '[' || c == ']');
                if !name.eq_ignore_ascii_case(&self.shared.config.database) {
                    return Err(Failure::Sql(SqlError::new(
                        911,
                        16,
                        format!("Database '{name}' does not exist. Make sure that the name is entered correctly."),
                    )));
                }
                let db = self.shared.config.database.clone();
                let buf = self.out.buf();
                token::env_change_str(buf, token::ENV_DATABASE, &db, &db);
                token::info(
                    buf,
                    5701,
                    &format!("Changed database context to '{db}'."),
                    SERVER_NAME,
                );
                self.out.done(done_token, token::DONE_FINAL, 0, 0);
                Ok(())
            }
            Statement::Nothing => {
                self.out.done(done_token, token::DONE_FINAL, 0, 0);
                Ok(())
            }
            Statement::CreateTable(def) => {
                self.savepoint().await?;
                let result = match crate::ct::create_table(&self.pg, def).await {
                    Ok(()) => {
                        self.out.done(done_token, token::DONE_FINAL, 0, 0);
                        Ok(())
                    }
                    Err(e) => Err(self.pg_failure(e)),
                };
                self.end_savepoint(&result).await?;
                result
            }
            Statement::AlterTable(alter) => {
                self.savepoint().await?;
                let result = match crate::ct::alter_table(&self.pg, alter).await {
                    Ok(()) => {
                        self.shared.types.invalidate();
                        self.altered_schema |= self.trancount > 0;
                        self.out.done(done_token, token::DONE_FINAL, 0, 0);
                        Ok(())
                    }
                    Err(crate::ct::AlterError::Refused(e)) => Err(Failure::Sql(e)),
                    Err(crate::ct::AlterError::Postgres(e)) => Err(self.pg_failure(e)),
                };
                self.end_savepoint(&result).await?;
                result
            }
        }
    }

    /// The `IDENTITY` column of `table` (as PostgreSQL names it); `None` for a table without
    /// one, an error for a table that does not exist.
    async fn identity_column(&self, table: &str, name: &str) -> Result<Option<String>, Failure> {
        let row = self
            .pg
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL, (SELECT attname::text FROM pg_attribute \
                 WHERE attrelid = to_regclass($1) AND attidentity <> '' AND NOT attisdropped)",
                &[&table],
            )
            .await
            .map_err(|e| self.pg_failure(e))?;
        if !row.get::<_, bool>(0) {
            return Err(Failure::Sql(SqlError::new(
                208,
                16,
                format!("Invalid object name '{name}'."),
            )));
        }
        Ok(row.get(1))
    }

    /// `SET IDENTITY_INSERT`: one table of the session at a time, as in SQL Server.
    async fn set_identity_insert(
        &mut self,
        table: &str,
        name: &str,
        on: bool,
    ) -> Result<(), Failure> {
        if self.identity_column(table, name).await?.is_none() {
            return Err(Failure::Sql(SqlError::new(
                8106,
                16,
                format!(
                    "Table '{name}' does not have the identity property. Cannot perform SET operation."
                ),
            )));
        }
        match (&self.identity_insert, on) {
            (Some((other, other_name)), true) if other != table => {
                Err(Failure::Sql(SqlError::new(
                    8107,
                    16,
                    format!(
                        "IDENTITY_INSERT is already ON for table '{other_name}'. Cannot perform SET operation for table '{name}'."
                    ),
                )))
            }
            (_, true) => {
                self.identity_insert = Some((table.to_string(), name.to_string()));
                Ok(())
            }
            (Some((t, _)), false) if t == table => {
                self.identity_insert = None;
                Ok(())
            }
            (_, false) => Ok(()),
        }
    }

    /// An `INSERT`. Into a table with an `IDENTITY` column, the column is named exactly when
    /// `IDENTITY_INSERT` is on for the table (errors 544 and 545 otherwise). Then the session's
    /// last identity value (`SCOPE_IDENTITY()`, `@@IDENTITY`) is the sequence's, or, with
    /// explicit values, the sequence moves past the largest value inserted, as SQL Server's
    /// identity seed does.
    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &mut self,
        sql: &str,
        names: &[String],
        params: &[Param],
        table: &str,
        name: &str,
        columns: &[String],
        done_token: u8,
    ) -> Result<(), Failure> {
        let identity = self.identity_column(table, name).await?;
        let explicit_on = self
            .identity_insert
            .as_ref()
            .is_some_and(|(t, _)| t == table);
        if let Some(col) = &identity {
            if columns.is_empty() {
                return Err(Failure::Sql(SqlError::unsupported(format!(
                    "INSERT without a column list into {name}, which has an IDENTITY column"
                ))));
            }
            let named = columns.iter().any(|c| c.eq_ignore_ascii_case(col));
            if named && !explicit_on {
                return Err(Failure::Sql(SqlError::new(
                    544,
                    16,
                    format!(
                        "Cannot insert explicit value for identity column in table '{name}' when IDENTITY_INSERT is set to OFF."
                    ),
                )));
            }
            if !named && explicit_on {
                return Err(Failure::Sql(SqlError::new(
                    545,
                    16,
                    format!(
                        "Explicit value must be specified for identity column in table '{name}' either when IDENTITY_INSERT is set to ON or when a replication user is inserting into a NOT FOR REPLICATION identity column."
                    ),
                )));
            }
        }
        let count = self
            .run_query(sql, names, params, false, done_token)
            .await?;
        let (Some(col), true) = (identity, count > 0) else {
            return Ok(());
        };
        let follow_up = if explicit_on {
            format!(
                "SELECT setval(s, m) FROM (SELECT pg_get_serial_sequence($1, $2) AS s, \
                 (SELECT max({c}) FROM {table}) AS m) x \
                 WHERE m > coalesce(pg_sequence_last_value(s::regclass), 0)",
                c = crate::ct::quote_ident(&col),
            )
        } else {
            "SELECT set_config('sim.identity', v, false), set_config('sim.scope_identity', v, false) \
             FROM (SELECT currval(pg_get_serial_sequence($1, $2))::text AS v) x"
                .to_string()
        };
        self.pg
            .execute(&follow_up, &[&table, &col])
            .await
            .map_err(|e| self.pg_failure(e))?;
        self.scope_identity_set |= !explicit_on;
        Ok(())
    }

    /// Inside a transaction, a statement runs under a savepoint so that its failure undoes only
    /// the statement and leaves the transaction usable, as in SQL Server.
    async fn savepoint(&mut self) -> Result<(), Failure> {
        if self.trancount == 0 || self.doomed {
            return Ok(());
        }
        match self.pg.batch_execute("SAVEPOINT ods_sim_statement").await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.pg_failure(e)),
        }
    }

    async fn end_savepoint(&mut self, result: &Result<(), Failure>) -> Result<(), Failure> {
        if self.trancount == 0 || self.doomed {
            return Ok(());
        }
        let sql = match result {
            Ok(()) => "RELEASE SAVEPOINT ods_sim_statement",
            Err(Failure::Sql(err)) if !pg::rolls_back(err) => {
                "ROLLBACK TO SAVEPOINT ods_sim_statement; RELEASE SAVEPOINT ods_sim_statement"
            }
            Err(_) => return Ok(()),
        };
        if let Err(e) = self.pg.batch_execute(sql).await {
            if self.pg.is_closed() {
                return Err(self.pg_failure(e));
            }
            debug!(
                spid = self.spid,
                "ending the statement savepoint failed: {e}"
            );
            self.doomed = true;
        }
        Ok(())
    }

    async fn run_query(
        &mut self,
        sql: &str,
        names: &[String],
        params: &[Param],
        returns_rows: bool,
        done_token: u8,
    ) -> Result<u64, Failure> {
        let mut bound = Vec::with_capacity(names.len());
        for name in names {
            let p = params
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    SqlError::new(
                        137,
                        15,
                        format!("Must declare the scalar variable \"{name}\"."),
                    )
                })?;
            bound.push(p);
        }
        let types: Vec<_> = bound.iter().map(|p| pg::param_type(&p.ty)).collect();
        let stmt = match self.pg.prepare_typed(sql, &types).await {
            Ok(stmt) => stmt,
            Err(e) => return Err(self.pg_failure(e)),
        };
        let values = bound.iter().map(|p| pg::PgValue(&p.value));
        if !returns_rows || stmt.columns().is_empty() {
            let count = match self.pg.execute_raw(&stmt, values).await {
                Ok(n) => n,
                Err(e) => return Err(self.pg_failure(e)),
            };
            let (status, cmd) = count_status(sql);
            self.out
                .done(done_token, status, cmd, if status == 0 { 0 } else { count });
            return Ok(count);
        }
        let columns = self.result_columns(&stmt).await?;
        let rows = match self.pg.query_raw(&stmt, values).await {
            Ok(rows) => rows,
            Err(e) => return Err(self.pg_failure(e)),
        };
        let meta: Vec<_> = columns.iter().map(|c| c.column.clone()).collect();
        token::col_metadata(self.out.buf(), &meta);
        tokio::pin!(rows);
        let mut count = 0u64;
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(row) => row,
                Err(e) => return Err(self.pg_failure(e)),
            };
            let buf = self.out.buf();
            let start = buf.len();
            buf.put_u8(token::ROW);
            for (i, col) in columns.iter().enumerate() {
                let raw = row
                    .try_get::<_, Option<pg::Raw>>(i)
                    .map_err(|e| SqlError::new(50000, 16, e.to_string()))?;
                if let Err(e) = col.encode(buf, raw.map(|r| r.0)) {
                    buf.truncate(start);
                    return Err(Failure::Sql(e));
                }
            }
            count += 1;
            self.out.w.send_full_packets().await?;
            if self.attention.load(Ordering::Relaxed) {
                return Ok(count);
            }
        }
        self.out
            .done(done_token, token::DONE_COUNT, token::CMD_SELECT, count);
        Ok(count)
    }

    async fn result_columns(
        &mut self,
        stmt: &tokio_postgres::Statement,
    ) -> Result<Vec<pg::OutColumn>, Failure> {
        let mut out = Vec::with_capacity(stmt.columns().len());
        for col in stmt.columns() {
            let declared = match (col.table_oid(), col.column_id()) {
                (Some(oid), Some(attnum)) if oid != 0 && self.sim_columns().await? => {
                    let seen = if self.altered_schema {
                        None
                    } else {
                        Some(
                            self.snapshot_generation
                                .unwrap_or_else(|| self.shared.types.generation()),
                        )
                    };
                    let table = match self.shared.types.table(&self.pg, oid, seen).await {
                        Ok(t) => t,
                        Err(e) => return Err(self.pg_failure(e)),
                    };
                    table.get(&attnum).cloned()
                }
                _ => None,
            };
            out.push(pg::OutColumn::new(col, declared)?);
        }
        Ok(out)
    }

    /// Whether the backing database has `sim.columns` (checked once per session).
    async fn sim_columns(&mut self) -> Result<bool, Failure> {
        if let Some(has) = self.has_sim_columns {
            return Ok(has);
        }
        let has = match self
            .pg
            .query_one("SELECT to_regclass('sim.columns') IS NOT NULL", &[])
            .await
        {
            Ok(row) => row.get::<_, bool>(0),
            Err(e) => return Err(self.pg_failure(e)),
        };
        self.has_sim_columns = Some(has);
        Ok(has)
    }

    async fn begin(&mut self) -> Result<(), Failure> {
        if self.trancount == 0 {
            let level = match self.isolation {
                Isolation::ReadUncommitted => "READ UNCOMMITTED",
                Isolation::ReadCommitted => "READ COMMITTED",
                Isolation::RepeatableRead | Isolation::Snapshot => "REPEATABLE READ",
                Isolation::Serializable => "SERIALIZABLE",
            };
            if let Err(e) = self
                .pg
                .batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
                .await
            {
                return Err(self.pg_failure(e));
            }
            self.tx_descriptor =
                (u64::from(self.spid) << 32) | (self.tx_descriptor.wrapping_add(1) & 0xFFFF_FFFF);
            self.doomed = false;
            self.snapshot_generation = (!matches!(
                self.isolation,
                Isolation::ReadUncommitted | Isolation::ReadCommitted
            ))
            .then(|| self.shared.types.generation());
            let desc = self.tx_descriptor.to_le_bytes();
            token::env_change_bytes(self.out.buf(), token::ENV_BEGIN_TRAN, &desc, &[]);
        }
        self.trancount += 1;
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), Failure> {
        match self.trancount {
            0 => Err(Failure::Sql(SqlError::new(
                3902,
                16,
                "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
            ))),
            1 if self.doomed => {
                self.rollback_transaction().await.map_err(Failure::Fatal)?;
                Err(Failure::Sql(SqlError::new(
                    3930,
                    16,
                    "The current transaction cannot be committed and cannot support operations that write to the log file. Roll back the transaction.",
                )))
            }
            1 => {
                let result = self.pg.batch_execute("COMMIT").await;
                self.trancount = 0;
                self.transaction_ended();
                let desc = self.tx_descriptor.to_le_bytes();
                match result {
                    Ok(()) => {
                        token::env_change_bytes(self.out.buf(), token::ENV_COMMIT_TRAN, &[], &desc);
                        Ok(())
                    }
                    Err(e) => {
                        token::env_change_bytes(
                            self.out.buf(),
                            token::ENV_ROLLBACK_TRAN,
                            &[],
                            &desc,
                        );
                        Err(self.pg_failure(e))
                    }
                }
            }
            _ => {
                self.trancount -= 1;
                Ok(())
            }
        }
    }

    /// Roll back the open transaction (all levels) and tell the client.
    async fn rollback_transaction(&mut self) -> anyhow::Result<()> {
        self.pg
            .batch_execute("ROLLBACK")
            .await
            .context("rolling back on the backing database")?;
        self.trancount = 0;
        self.doomed = false;
        self.transaction_ended();
        let desc = self.tx_descriptor.to_le_bytes();
        token::env_change_bytes(self.out.buf(), token::ENV_ROLLBACK_TRAN, &[], &desc);
        Ok(())
    }

    /// After COMMIT or ROLLBACK: a schema change of the transaction is now committed or undone.
    fn transaction_ended(&mut self) {
        self.snapshot_generation = None;
        if std::mem::take(&mut self.altered_schema) {
            self.shared.types.invalidate();
        }
    }

    async fn run_tm(&mut self, tm: TmRequest) -> Result<(), Failure> {
        let begin_after = match tm {
            TmRequest::Begin { isolation } => Some(isolation),
            TmRequest::Commit { begin_after } => {
                self.commit().await?;
                begin_after
            }
            TmRequest::Rollback { begin_after } => {
                if self.trancount > 0 {
                    self.rollback_transaction().await.map_err(Failure::Fatal)?;
                }
                begin_after
            }
            TmRequest::Unsupported(ty) => {
                return Err(Failure::Sql(SqlError::unsupported(format!(
                    "transaction manager request {ty}"
                ))))
            }
        };
        if let Some(level) = begin_after {
            self.isolation = match level {
                tm_isolation::READ_UNCOMMITTED => Isolation::ReadUncommitted,
                tm_isolation::READ_COMMITTED => Isolation::ReadCommitted,
                tm_isolation::REPEATABLE_READ => Isolation::RepeatableRead,
                tm_isolation::SERIALIZABLE => Isolation::Serializable,
                tm_isolation::SNAPSHOT => Isolation::Snapshot,
                _ => self.isolation,
            };
            self.begin().await?;
        }
        self.out.done(token::DONE, token::DONE_FINAL, 0, 0);
        Ok(())
    }
}

/// DONE status and CurCmd of a statement that returns no rows: DML reports its row count.
fn count_status(sql: &str) -> (u16, u16) {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match first.as_str() {
        "INSERT" => (token::DONE_COUNT, token::CMD_INSERT),
        "UPDATE" => (token::DONE_COUNT, token::CMD_UPDATE),
        "DELETE" => (token::DONE_COUNT, token::CMD_DELETE),
        "MERGE" | "WITH" | "SELECT" => (token::DONE_COUNT, token::CMD_SELECT),
        _ => (token::DONE_FINAL, 0),
    }
}

fn protocol_error(e: Malformed) -> SqlError {
    SqlError::new(
        8009,
        16,
        format!(
            "The incoming tabular data stream (TDS) protocol stream is incorrect: {}",
            e.0
        ),
    )
}
