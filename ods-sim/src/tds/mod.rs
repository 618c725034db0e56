//! TDS 7.4 wire protocol, server side (MS-TDS).
//!
//! - [`packet`]: the 8-byte packet header, reading whole messages, writing a response message
//!   split into packets of the negotiated size.
//! - [`prelogin`]: the PRELOGIN exchange (encryption is never supported).
//! - [`login`]: LOGIN7 parsing (UCS-2 strings, password de-obfuscation).
//! - [`request`]: SQL batch, RPC and transaction-manager request parsing.
//! - [`token`]: the response tokens (LOGINACK, ENVCHANGE, INFO, ERROR, COLMETADATA, DONE…).
//! - [`types`]: TYPE_INFO and value encoding for result columns, decoding of RPC parameters.

pub mod login;
pub mod packet;
pub mod prelogin;
pub mod request;
pub mod tls;
pub mod token;
pub mod types;

/// TDS version 7.4 as sent in LOGINACK.
pub const TDS_7_4: u32 = 0x7400_0004;

/// A message from the client that does not follow MS-TDS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed TDS message: {0}")]
pub struct Malformed(pub String);

impl Malformed {
    pub fn new(what: impl Into<String>) -> Self {
        Malformed(what.into())
    }
}

/// Little-endian reader over a message payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.remaining() < n {
            return Err(Malformed::new(format!(
                "needed {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// `n` UTF-16LE code units.
    pub fn ucs2(&mut self, n: usize) -> Result<String, Malformed> {
        let raw = self.bytes(n * 2)?;
        ucs2_to_string(raw)
    }

    /// B_VARCHAR: one-byte length in characters, then UCS-2.
    pub fn b_varchar(&mut self) -> Result<String, Malformed> {
        let n = self.u8()? as usize;
        self.ucs2(n)
    }

    /// US_VARCHAR: two-byte length in characters, then UCS-2.
    pub fn us_varchar(&mut self) -> Result<String, Malformed> {
        let n = self.u16()? as usize;
        self.ucs2(n)
    }
}

/// Decode UTF-16LE bytes.
pub fn ucs2_to_string(raw: &[u8]) -> Result<String, Malformed> {
    if !raw.len().is_multiple_of(2) {
        return Err(Malformed::new("odd length of a UCS-2 string"));
    }
    let units = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| Malformed::new("invalid UTF-16 string"))
}

/// Append a string as UTF-16LE; returns the number of code units written.
pub fn put_ucs2(buf: &mut bytes::BytesMut, s: &str) -> usize {
    let mut n = 0;
    for unit in s.encode_utf16() {
        buf.extend_from_slice(&unit.to_le_bytes());
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ucs2_round_trip() {
        let mut buf = bytes::BytesMut::new();
        let n = put_ucs2(&mut buf, "Zoë 日本 ñ 😀");
        assert_eq!(n * 2, buf.len());
        assert_eq!(ucs2_to_string(&buf).unwrap(), "Zoë 日本 ñ 😀");
    }

    #[test]
    fn reader_reports_short_input() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16().unwrap(), 0x0201);
        assert!(r.u16().is_err());
    }
}
