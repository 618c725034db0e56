//! Packets: an 8-byte header (type, status, big-endian length including the header, SPID, packet
//! id, window) followed by payload. A message is a run of packets of one type ending with the
//! EOM status bit.

use bytes::{BufMut, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const HEADER_LEN: usize = 8;
pub const MIN_PACKET_SIZE: u32 = 512;
pub const MAX_PACKET_SIZE: u32 = 32767;
pub const DEFAULT_PACKET_SIZE: u32 = 4096;
/// Largest request message accepted (a batch text or RPC with parameters).
pub const MAX_MESSAGE_LEN: usize = 256 << 20;

/// Message types.
pub const SQL_BATCH: u8 = 0x01;
pub const RPC: u8 = 0x03;
pub const TABULAR_RESULT: u8 = 0x04;
pub const ATTENTION: u8 = 0x06;
pub const TRANSACTION_MANAGER: u8 = 0x0E;
pub const LOGIN7: u8 = 0x10;
pub const PRELOGIN: u8 = 0x12;

/// Status bits.
pub const STATUS_EOM: u8 = 0x01;
pub const STATUS_IGNORE: u8 = 0x02;
pub const STATUS_RESET_CONNECTION: u8 = 0x08;
pub const STATUS_RESET_CONNECTION_SKIP_TRAN: u8 = 0x10;

/// One client message, reassembled from its packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub ty: u8,
    pub payload: Vec<u8>,
    /// The client asked for the session to be reset before this request.
    pub reset_connection: bool,
}

/// Read one message. `Ok(None)` on a clean end of stream before any byte of a message.
/// Messages the client marked IGNORE are skipped.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max_packet: u32,
) -> io::Result<Option<Message>> {
    loop {
        let mut payload = Vec::new();
        let mut ty = None;
        let mut reset_connection = false;
        loop {
            let mut header = [0u8; HEADER_LEN];
            if ty.is_none() {
                // A clean close is only acceptable between messages.
                match r.read(&mut header[..1]).await? {
                    0 => return Ok(None),
                    _ => r.read_exact(&mut header[1..]).await?,
                };
            } else {
                r.read_exact(&mut header).await?;
            }
            let len = u16::from_be_bytes([header[2], header[3]]) as usize;
            if len < HEADER_LEN || len > max_packet.max(MAX_PACKET_SIZE) as usize {
                return Err(invalid(format!("packet length {len}")));
            }
            match ty {
                None => ty = Some(header[0]),
                Some(t) if t != header[0] => {
                    return Err(invalid(format!(
                        "packet type 0x{:02x} inside a message of type 0x{t:02x}",
                        header[0]
                    )))
                }
                Some(_) => {}
            }
            let status = header[1];
            reset_connection |=
                status & (STATUS_RESET_CONNECTION | STATUS_RESET_CONNECTION_SKIP_TRAN) != 0;
            let start = payload.len();
            if start + len - HEADER_LEN > MAX_MESSAGE_LEN {
                return Err(invalid("message too large".to_string()));
            }
            payload.resize(start + len - HEADER_LEN, 0);
            r.read_exact(&mut payload[start..]).await?;
            if status & STATUS_EOM != 0 {
                if status & STATUS_IGNORE != 0 {
                    break;
                }
                return Ok(Some(Message {
                    ty: header[0],
                    payload,
                    reset_connection,
                }));
            }
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Writes response messages: tokens are appended to [`PacketWriter::buf`], full packets are
/// sent as they fill, and [`PacketWriter::end_message`] sends the last packet with EOM.
pub struct PacketWriter<W> {
    w: W,
    buf: BytesMut,
    out: BytesMut,
    packet_size: usize,
    packet_id: u8,
    spid: u16,
}

/// Bytes gathered before a socket write.
const WRITE_CHUNK: usize = 64 * 1024;

impl<W: AsyncWrite + Unpin> PacketWriter<W> {
    pub fn new(w: W, packet_size: u32, spid: u16) -> Self {
        PacketWriter {
            w,
            buf: BytesMut::with_capacity(packet_size as usize * 2),
            out: BytesMut::with_capacity(WRITE_CHUNK + packet_size as usize),
            packet_size: packet_size as usize,
            packet_id: 1,
            spid,
        }
    }

    pub fn set_packet_size(&mut self, packet_size: u32) {
        self.packet_size = packet_size as usize;
    }

    /// The payload of the message being written.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    fn payload_size(&self) -> usize {
        self.packet_size - HEADER_LEN
    }

    fn frame(&mut self, len: usize, eom: bool) {
        let header = [
            TABULAR_RESULT,
            if eom { STATUS_EOM } else { 0 },
            ((len + HEADER_LEN) >> 8) as u8,
            (len + HEADER_LEN) as u8,
            (self.spid >> 8) as u8,
            self.spid as u8,
            self.packet_id,
            0,
        ];
        self.packet_id = self.packet_id.wrapping_add(1);
        self.out.put_slice(&header);
        self.out.put_slice(&self.buf[..len]);
        let _ = self.buf.split_to(len);
    }

    /// Send every full packet of the message so far (keeping at least one byte for the last).
    pub async fn send_full_packets(&mut self) -> io::Result<()> {
        let size = self.payload_size();
        if self.buf.len() <= size {
            return Ok(());
        }
        while self.buf.len() > size {
            self.frame(size, false);
        }
        if self.out.len() >= WRITE_CHUNK {
            self.w.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Send the rest of the message, the last packet with EOM, and flush the socket.
    pub async fn end_message(&mut self) -> io::Result<()> {
        let size = self.payload_size();
        while self.buf.len() > size {
            self.frame(size, false);
        }
        let len = self.buf.len();
        self.frame(len, true);
        self.w.write_all(&self.out).await?;
        self.out.clear();
        self.w.flush().await
    }

    /// Drop what was written of the current message without sending it.
    pub fn discard(&mut self) {
        self.buf.clear();
    }

    /// Close the write side of the connection.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.w.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_and_reassembles() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut w = PacketWriter::new(server, 512, 51);
        let payload: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        w.buf().extend_from_slice(&payload);
        w.send_full_packets().await.unwrap();
        w.end_message().await.unwrap();
        drop(w);
        let mut client = client;
        let msg = read_message(&mut client, 512).await.unwrap().unwrap();
        assert_eq!(msg.ty, TABULAR_RESULT);
        assert_eq!(msg.payload, payload);
        assert!(read_message(&mut client, 512).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn ignored_messages_are_skipped() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut bytes = vec![
            SQL_BATCH,
            STATUS_EOM | STATUS_IGNORE,
            0,
            10,
            0,
            0,
            1,
            0,
            7,
            7,
        ];
        bytes.extend_from_slice(&[RPC, STATUS_EOM, 0, 9, 0, 0, 1, 0, 5]);
        client.write_all(&bytes).await.unwrap();
        let msg = read_message(&mut server, 4096).await.unwrap().unwrap();
        assert_eq!((msg.ty, msg.payload), (RPC, vec![5]));
    }
}
