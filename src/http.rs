//! The one HTTP port of the process: Prometheus text on `/metrics`, liveness on `/healthz`,
//! readiness on `/readyz` (every connector has finished a poll cycle successfully within
//! `readiness_multiple` poll intervals; a failed cycle makes it unready at once). In a sink
//! worker a cycle is a lane's commit, or an answer about a whole-stream lane's lease: taken,
//! renewed, or held by another worker while this one stands by; a lane retrying a transaction
//! that failed with a transient fault is a failed one until a transaction of it commits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// When each connector last completed a poll cycle, and how recent that must be.
pub struct Health {
    connectors: Mutex<HashMap<String, (Duration, Option<Instant>)>>,
}

impl Health {
    /// `connectors`: name and the longest time since the last good cycle that still counts as
    /// ready.
    pub fn new(connectors: impl IntoIterator<Item = (String, Duration)>) -> Health {
        Health {
            connectors: Mutex::new(
                connectors
                    .into_iter()
                    .map(|(n, d)| (n, (d, None)))
                    .collect(),
            ),
        }
    }

    pub fn cycle_ok(&self, connector: &str) {
        if let Some(c) = self
            .connectors
            .lock()
            .expect("health lock")
            .get_mut(connector)
        {
            c.1 = Some(Instant::now());
        }
    }

    pub fn cycle_failed(&self, connector: &str) {
        if let Some(c) = self
            .connectors
            .lock()
            .expect("health lock")
            .get_mut(connector)
        {
            c.1 = None;
        }
    }

    /// Connectors that are not ready, empty when all are.
    pub fn not_ready(&self) -> Vec<String> {
        let now = Instant::now();
        let mut out: Vec<String> = self
            .connectors
            .lock()
            .expect("health lock")
            .iter()
            .filter(|(_, (within, last))| last.is_none_or(|t| now - t > *within))
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

fn route(req: &Request<hyper::body::Incoming>, health: &Health) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::metrics::render(),
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match health.not_ready() {
            waiting if waiting.is_empty() => {
                respond(StatusCode::OK, "text/plain", "ready\n".into())
            }
            waiting => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!(
                    "not ready: no recent successful poll cycle for {}\n",
                    waiting.join(", ")
                ),
            ),
        },
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Bind `addr` and serve until `stop`. Returns the bound address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        debug!(error = %e, "metrics accept failed");
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let health = health.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = route(&req, &health);
                    async move { Ok::<_, Infallible>(response) }
                });
                // A client that opens a connection and sends no request (or half of one)
                // is dropped instead of holding a task and a socket for ever.
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %e, "metrics connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
}
