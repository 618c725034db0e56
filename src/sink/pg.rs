//! Connections to the PostgreSQL-protocol targets (staging, Redshift), with TLS by rustls.
//!
//! The URL's `sslmode` decides, as in libpq (default `PGSSLMODE`, else `require`): `disable` —
//! plain; `prefer` — TLS when the server offers it; `require` — TLS or no connection;
//! `verify-ca` — TLS, the certificate chain verified against the CA file; `verify-full` — the
//! host name too. The CA file (a PEM bundle, e.g. the Amazon RDS CA bundle) is the URL's
//! `sslrootcert`, else `PGSSLROOTCERT`; `prefer` and `require` verify the chain when there is
//! one and, without one, encrypt without authenticating the server, as libpq does. Connections carry
//! `application_name=edfi-cdc` unless the URL sets one; a URL without a password takes
//! `PGPASSWORD` from the environment, as libpq does. Unless the URL says otherwise, a connection
//! gives up opening after 30 s and notices a peer gone silent within about a minute (TCP
//! keepalives after 30 s idle, every 10 s, 3 tries; unacknowledged data after 60 s).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::debug;

use super::SinkError;

/// libpq's `sslmode=require` and `verify-ca`: without a CA file any server certificate is
/// accepted (the traffic is encrypted, the server not authenticated); with one (`chain`) its
/// chain is verified but not its host name. The handshake signatures are checked either way.
#[derive(Debug)]
struct WithoutName {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for WithoutName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The chain is checked before the name: a name error means the chain was good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text.
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// TLS or no connection; the chain verified when there is a CA file.
    Require,
    /// TLS, the chain verified against the CA file, not the host name.
    VerifyCa,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

/// A target's connection settings: what tokio-postgres parses, and TLS as libpq's `sslmode` and
/// `sslrootcert` say (tokio-postgres parses neither the verifying modes nor the CA file).
#[derive(Debug)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub ssl: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Parse a connection URL (or key-value string). `sslmode` defaults to `PGSSLMODE`, else
/// `require`; `sslrootcert` to `PGSSLROOTCERT`. The verifying modes need a CA file.
pub fn parse(url: &str) -> Result<Target, String> {
    let url_form = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (head, params, sep) = match (url_form, url.split_once('?')) {
        (true, Some((head, query))) => (head, query.split('&').collect::<Vec<_>>(), "&"),
        (true, None) => (url, Vec::new(), "&"),
        (false, _) => ("", key_value_pairs(url), " "),
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for param in params {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let value = || {
            if url_form {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            } else {
                unquote(value.trim())
            }
        };
        match key.trim() {
            "sslmode" => mode = Some(value()),
            "sslrootcert" => root = Some(PathBuf::from(value())),
            _ => kept.push(param),
        }
    }
    let rest = match (url_form, kept.is_empty()) {
        (true, true) => head.to_string(),
        (true, false) => format!("{head}?{}", kept.join(sep)),
        (false, _) => kept.join(sep),
    };
    let config: tokio_postgres::Config = rest.parse().map_err(|e| format!("{e}"))?;
    let mode = mode.or_else(|| std::env::var("PGSSLMODE").ok().filter(|m| !m.is_empty()));
    let ssl = match mode.as_deref().unwrap_or("require") {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => {
            return Err(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            ))
        }
    };
    // An empty setting (`${VAR:-}`) is no CA file, as in libpq.
    let root_cert = root
        .or_else(|| std::env::var_os("PGSSLROOTCERT").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty());
    if matches!(ssl, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        return Err(format!(
            "sslmode={} needs the CA file that signed the server's certificate: sslrootcert=<path> \
             in the URL or PGSSLROOTCERT (for RDS and Aurora, the Amazon RDS CA bundle)",
            mode.unwrap_or_default()
        ));
    }
    Ok(Target {
        config,
        ssl,
        root_cert,
    })
}

/// The `key = value` pairs of a libpq key-value string as written (spaces around `=` allowed; a
/// value may be single-quoted, with `\\` escapes, and hold spaces).
fn key_value_pairs(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let skip_spaces = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut pairs = Vec::new();
    let mut i = skip_spaces(0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i = skip_spaces(i);
        if i < bytes.len() && bytes[i] == b'=' {
            i = skip_spaces(i + 1);
            let mut quoted = false;
            while i < bytes.len() && (quoted || !bytes[i].is_ascii_whitespace()) {
                match bytes[i] {
                    b'\\' => i += 1,
                    b'\'' => quoted = !quoted,
                    _ => {}
                }
                i += 1;
            }
        }
        pairs.push(text[start..i.min(bytes.len())].trim_end());
        i = skip_spaces(i);
    }
    pairs
}

/// A key-value string's value as it means: unquoted, `\\'` and `\\\\` unescaped.
fn unquote(value: &str) -> String {
    let inner = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn tls(sink: &str, ssl: SslMode, root_cert: Option<&Path>) -> Result<MakeRustlsConnect, SinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3");
    let Some(path) = root_cert else {
        return Ok(MakeRustlsConnect::new(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(WithoutName {
                    provider,
                    chain: None,
                }))
                .with_no_client_auth(),
        ));
    };
    let fatal = |e: String| SinkError::Fatal {
        sink: sink.into(),
        message: format!(
            "CA file {} (sslrootcert, PGSSLROOTCERT): {e}",
            path.display()
        ),
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| fatal(e.to_string()))? {
        roots
            .add(cert.map_err(|e| fatal(e.to_string()))?)
            .map_err(|e| fatal(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fatal("holds no certificate".into()));
    }
    let config = if ssl == SslMode::VerifyFull {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| fatal(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(WithoutName {
                provider,
                chain: Some(chain),
            }))
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

/// A TLS failure no retry mends (a server without TLS, a certificate that does not verify):
/// fatal, with what to change.
fn tls_misfit(sink: &str, e: &tokio_postgres::Error) -> Option<SinkError> {
    // tokio-postgres's message may already hold its cause: each part once.
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = s.source();
    }
    let hint = if text.contains("server does not support TLS") {
        "the server does not offer TLS and sslmode requires it (the default is require): enable \
         TLS on the server, or write sslmode=disable in the URL on a trusted network"
    } else if text.contains("invalid peer certificate") {
        "the server's certificate does not verify against the CA file (sslrootcert, \
         PGSSLROOTCERT): give the bundle that signed it, and with sslmode=verify-full connect by \
         a host name the certificate names"
    } else {
        return None;
    };
    Some(SinkError::Fatal {
        sink: sink.into(),
        message: format!("{text}; {hint}"),
    })
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
    let Target {
        mut config,
        ssl,
        root_cert,
    } = parse(url).map_err(|e| SinkError::Fatal {
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
    let from_pg = |e: tokio_postgres::Error| {
        tls_misfit(sink, &e).unwrap_or_else(|| SinkError::from_pg(sink, &e))
    };
    let client = if ssl == SslMode::Disable {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(from_pg)?;
        drive(connection);
        client
    } else {
        config.ssl_mode(if ssl == SslMode::Prefer {
            tokio_postgres::config::SslMode::Prefer
        } else {
            tokio_postgres::config::SslMode::Require
        });
        let (client, connection) = config
            .connect(tls(sink, ssl, root_cert.as_deref())?)
            .await
            .map_err(from_pg)?;
        drive(connection);
        client
    };
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let t = parse(
            "postgres://u@h:5439/db?sslmode=verify-full&sslrootcert=/ca%20b.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(t.ssl, SslMode::VerifyFull);
        assert_eq!(t.root_cert.as_deref(), Some(Path::new("/ca b.pem")));
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(t.config.get_ports(), [5439]);
        let t = parse(
            "host=h user=u password='a b\\' c' sslmode = verify-ca sslrootcert='/it\\'s.pem' dbname=d",
        )
        .unwrap();
        assert_eq!(t.ssl, SslMode::VerifyCa);
        assert_eq!(t.root_cert.as_deref(), Some(Path::new("/it's.pem")));
        assert_eq!(t.config.get_password(), Some(&b"a b' c"[..]));
        assert_eq!(t.config.get_dbname(), Some("d"));
        if std::env::var_os("PGSSLMODE").is_none() {
            assert_eq!(parse("postgres://u@h/db").unwrap().ssl, SslMode::Require);
        }
        for (url, mode) in [
            ("postgres://u@h/db?sslmode=disable", SslMode::Disable),
            ("postgres://u@h/db?sslmode=prefer", SslMode::Prefer),
            ("postgres://u@h/db?sslmode=require", SslMode::Require),
        ] {
            assert_eq!(parse(url).unwrap().ssl, mode, "{url}");
        }
    }

    #[test]
    fn a_verifying_mode_needs_a_ca_file_and_unknown_modes_are_refused() {
        if std::env::var_os("PGSSLROOTCERT").is_none() {
            let e = parse("postgres://u@h/db?sslmode=verify-full").unwrap_err();
            assert!(
                e.contains("sslrootcert") && e.contains("PGSSLROOTCERT"),
                "{e}"
            );
        }
        let e = parse("postgres://u@h/db?sslmode=allow").unwrap_err();
        assert!(e.contains("`allow`"), "{e}");
    }
}
