//! Connections to the PostgreSQL-protocol targets (staging, Redshift), with TLS by rustls.
//!
//! The URL's `sslmode` decides, as in libpq: `disable` — plain; `prefer` (the default) — TLS
//! when the server offers it; `require` — TLS or no connection. Like libpq without a root
//! certificate, the server's certificate is not verified then (the traffic is encrypted, the
//! server not authenticated); with `PGSSLROOTCERT` pointing at a PEM bundle (e.g. the Amazon RDS
//! CA bundle) the certificate chain and host name are verified against it. Connections carry
//! `application_name=edfi-cdc` unless the URL sets one; a URL without a password takes
//! `PGPASSWORD` from the environment, as libpq does. Unless the URL says otherwise, a connection
//! gives up opening after 30 s and notices a peer gone silent within about a minute (TCP
//! keepalives after 30 s idle, every 10 s, 3 tries; unacknowledged data after 60 s).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::debug;

use super::SinkError;

/// Accepts any server certificate but still checks the handshake signatures with it: libpq's
/// `sslmode=require` without a root certificate.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls(sink: &str) -> Result<MakeRustlsConnect, SinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3");
    let config = match std::env::var_os("PGSSLROOTCERT") {
        Some(path) => {
            let fatal = |e: String| SinkError::Fatal {
                sink: sink.into(),
                message: format!(
                    "PGSSLROOTCERT ({}): {e}",
                    std::path::Path::new(&path).display()
                ),
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&path).map_err(|e| fatal(e.to_string()))? {
                roots
                    .add(cert.map_err(|e| fatal(e.to_string()))?)
                    .map_err(|e| fatal(e.to_string()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Run a connection on its own task until it closes.
fn drive<C>(connection: C)
where
    C: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "target connection closed");
        }
    });
}

/// Connect to `url` for `sink` (TLS per its `sslmode`); the connection runs on its own task.
pub async fn connect(sink: &str, url: &str) -> Result<Client, SinkError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| SinkError::Fatal {
        sink: sink.into(),
        message: format!("invalid connection URL: {e}"),
    })?;
    if config.get_application_name().is_none() {
        config.application_name("edfi-cdc");
    }
    // A target that vanished from the network (failover, a dropped NAT entry) is noticed in
    // about a minute rather than the operating system's hours; the URL's own settings win.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(30));
    }
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(30));
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(Duration::from_secs(10));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(60));
    }
    if config.get_password().is_none() {
        if let Some(pw) = std::env::var_os("PGPASSWORD") {
            config.password(pw.as_encoded_bytes());
        }
    }
    let from_pg = |e: tokio_postgres::Error| SinkError::from_pg(sink, &e);
    let client = if config.get_ssl_mode() == SslMode::Disable {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(from_pg)?;
        drive(connection);
        client
    } else {
        let (client, connection) = config.connect(tls(sink)?).await.map_err(from_pg)?;
        drive(connection);
        client
    };
    Ok(client)
}
