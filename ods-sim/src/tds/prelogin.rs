//! PRELOGIN: a table of (token, offset, length) options ending with 0xFF, then the option data.
//! The server answers with its version and ENCRYPT_ON when the client requires encryption and
//! the server has a certificate (the TLS handshake follows, see `tls`), else ENCRYPT_NOT_SUP: a
//! client that requires encryption then ends the connection itself (MS-TDS 2.2.6.5).

use super::{Malformed, Reader};
use bytes::{BufMut, BytesMut};

const VERSION: u8 = 0x00;
const ENCRYPTION: u8 = 0x01;
const INSTOPT: u8 = 0x02;
const MARS: u8 = 0x04;
const TERMINATOR: u8 = 0xFF;

pub const ENCRYPT_OFF: u8 = 0x00;
pub const ENCRYPT_ON: u8 = 0x01;
pub const ENCRYPT_NOT_SUP: u8 = 0x02;
pub const ENCRYPT_REQ: u8 = 0x03;

/// What the client asked for in its PRELOGIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPrelogin {
    pub encryption: u8,
    pub mars: bool,
}

impl ClientPrelogin {
    /// The client cannot go on without TLS.
    pub fn requires_encryption(&self) -> bool {
        matches!(self.encryption, ENCRYPT_ON | ENCRYPT_REQ)
    }
}

pub fn parse(payload: &[u8]) -> Result<ClientPrelogin, Malformed> {
    let mut r = Reader::new(payload);
    let mut out = ClientPrelogin {
        encryption: ENCRYPT_NOT_SUP,
        mars: false,
    };
    loop {
        let token = r.u8()?;
        if token == TERMINATOR {
            break;
        }
        let hdr = r.array::<4>()?;
        let offset = u16::from_be_bytes([hdr[0], hdr[1]]) as usize;
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let data = payload
            .get(offset..offset + len)
            .ok_or_else(|| Malformed::new("PRELOGIN option outside the message"))?;
        match token {
            ENCRYPTION if len >= 1 => out.encryption = data[0],
            MARS if len >= 1 => out.mars = data[0] != 0,
            _ => {}
        }
    }
    Ok(out)
}

/// The server's PRELOGIN response payload: version, `encryption` (ENCRYPT_ON or
/// ENCRYPT_NOT_SUP), no instance, no MARS.
pub fn response(version: [u8; 4], encryption: u8) -> BytesMut {
    let options: [(u8, &[u8]); 4] = [
        (
            VERSION,
            &[version[0], version[1], version[2], version[3], 0, 0],
        ),
        (ENCRYPTION, &[encryption]),
        (INSTOPT, &[0]),
        (MARS, &[0]),
    ];
    let mut buf = BytesMut::new();
    let mut offset = options.len() * 5 + 1;
    for (token, data) in options {
        buf.put_u8(token);
        buf.put_u16(offset as u16);
        buf.put_u16(data.len() as u16);
        offset += data.len();
    }
    buf.put_u8(TERMINATOR);
    for (_, data) in options {
        buf.put_slice(data);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_parses_back() {
        let resp = response([15, 0, 0x07, 0xD0], ENCRYPT_NOT_SUP);
        let parsed = parse(&resp).unwrap();
        assert_eq!(parsed.encryption, ENCRYPT_NOT_SUP);
        assert!(!parsed.mars);
        assert!(!parsed.requires_encryption());
    }
}
