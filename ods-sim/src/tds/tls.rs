//! TLS inside TDS (MS-TDS 2.2.6.5 and 3.2.5.2): after PRELOGIN, while the TLS handshake runs,
//! its records travel as the payload of PRELOGIN packets in both directions; once it is done,
//! TLS runs directly on the connection and carries the TDS packets. [`PreloginFraming`] does
//! that framing under a rustls acceptor and passes bytes through after the handshake.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::packet::{DEFAULT_PACKET_SIZE, HEADER_LEN, PRELOGIN, STATUS_EOM};

/// The server's TLS settings from a PEM certificate chain and its PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("the TLS certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("the TLS key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    // Session tickets would follow the handshake, framed or not depending on when the client
    // switched to bare TLS: none are sent.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The TLS handshake over PRELOGIN packets; the stream then carries TDS inside TLS.
pub async fn accept<S>(
    stream: S,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<TlsStream<PreloginFraming<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut tls = TlsAcceptor::from(config)
        .accept(PreloginFraming::new(stream))
        .await?;
    tls.get_mut().0.handshaking = false;
    Ok(tls)
}

/// PRELOGIN packet framing of the handshake's records; bytes as they are afterwards.
pub struct PreloginFraming<S> {
    inner: S,
    handshaking: bool,
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the current incoming packet not read yet.
    payload_left: usize,
    /// Records written since the last flush, sent as PRELOGIN packets by the flush.
    outgoing: Vec<u8>,
    /// Framed bytes of the flush under way, from `sent` on.
    framed: Vec<u8>,
    sent: usize,
}

impl<S> PreloginFraming<S> {
    fn new(inner: S) -> Self {
        PreloginFraming {
            inner,
            handshaking: true,
            header: [0; HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            outgoing: Vec::new(),
            framed: Vec::new(),
            sent: 0,
        }
    }
}

/// `payload` as PRELOGIN packets of at most the default packet size, the last one marked EOM.
fn frame(payload: &[u8]) -> Vec<u8> {
    let max = DEFAULT_PACKET_SIZE as usize - HEADER_LEN;
    let chunks: Vec<&[u8]> = payload.chunks(max).collect();
    let mut out = Vec::with_capacity(payload.len() + chunks.len() * HEADER_LEN);
    for (i, chunk) in chunks.iter().enumerate() {
        let status = if i + 1 == chunks.len() { STATUS_EOM } else { 0 };
        out.extend_from_slice(&[PRELOGIN, status]);
        out.extend_from_slice(&((chunk.len() + HEADER_LEN) as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, (i + 1) as u8, 0]);
        out.extend_from_slice(chunk);
    }
    out
}

impl<S: AsyncRead + Unpin> AsyncRead for PreloginFraming<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.handshaking {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.payload_left == 0 {
            let mut header = ReadBuf::new(&mut this.header[this.header_len..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut header))?;
            let n = header.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            this.header_len += n;
            if this.header_len == HEADER_LEN {
                this.header_len = 0;
                if this.header[0] != PRELOGIN {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "expected a PRELOGIN packet carrying the TLS handshake, got type 0x{:02x}",
                            this.header[0]
                        ),
                    )));
                }
                let len = u16::from_be_bytes([this.header[2], this.header[3]]) as usize;
                this.payload_left = len.saturating_sub(HEADER_LEN);
            }
        }
        let mut part = vec![0; this.payload_left.min(buf.remaining())];
        let mut read = ReadBuf::new(&mut part);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        this.payload_left -= n;
        buf.put_slice(read.filled());
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreloginFraming<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.handshaking {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.outgoing.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.framed.is_empty() {
                if this.outgoing.is_empty() {
                    break;
                }
                this.framed = frame(&std::mem::take(&mut this.outgoing));
                this.sent = 0;
            }
            while this.sent < this.framed.len() {
                let n =
                    ready!(Pin::new(&mut this.inner).poll_write(cx, &this.framed[this.sent..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                this.sent += n;
            }
            this.framed.clear();
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_record_is_framed_as_packets_of_the_default_size() {
        let payload = vec![7u8; 5000];
        let framed = frame(&payload);
        let first = DEFAULT_PACKET_SIZE as usize;
        assert_eq!(framed.len(), 5000 + 2 * HEADER_LEN);
        assert_eq!(&framed[..2], &[PRELOGIN, 0]);
        assert_eq!(u16::from_be_bytes([framed[2], framed[3]]) as usize, first);
        assert_eq!(&framed[first..first + 2], &[PRELOGIN, STATUS_EOM]);
        assert_eq!(
            u16::from_be_bytes([framed[first + 2], framed[first + 3]]) as usize,
            5000 - (first - HEADER_LEN) + HEADER_LEN
        );
    }
}
