//! LOGIN7 (MS-TDS 2.2.6.4): a fixed part, then (offset, length in characters) pairs pointing at
//! UCS-2 strings in the variable part. The password is obfuscated: every byte had its nibbles
//! swapped and was then XORed with 0xA5.

use super::{ucs2_to_string, Malformed, Reader};

/// OptionFlags2 bit: integrated (Windows) authentication.
const F_INT_SECURITY: u8 = 0x80;

/// A parsed LOGIN7 record. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login7 {
    pub tds_version: u32,
    pub packet_size: u32,
    pub client_pid: u32,
    pub integrated_security: bool,
    pub hostname: String,
    pub username: String,
    pub password: String,
    pub app_name: String,
    pub server_name: String,
    pub library_name: String,
    pub language: String,
    pub database: String,
}

impl std::fmt::Debug for Login7 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login7")
            .field("tds_version", &format_args!("0x{:08x}", self.tds_version))
            .field("packet_size", &self.packet_size)
            .field("client_pid", &self.client_pid)
            .field("integrated_security", &self.integrated_security)
            .field("hostname", &self.hostname)
            .field("username", &self.username)
            .field("app_name", &self.app_name)
            .field("server_name", &self.server_name)
            .field("library_name", &self.library_name)
            .field("language", &self.language)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Undo the password obfuscation of one byte.
fn deobfuscate(b: u8) -> u8 {
    (b ^ 0xA5).rotate_left(4)
}

pub fn parse(payload: &[u8]) -> Result<Login7, Malformed> {
    let mut r = Reader::new(payload);
    let _length = r.u32()?;
    let tds_version = r.u32()?;
    let packet_size = r.u32()?;
    let _client_prog_ver = r.u32()?;
    let client_pid = r.u32()?;
    let _connection_id = r.u32()?;
    let _option_flags1 = r.u8()?;
    let option_flags2 = r.u8()?;
    let _type_flags = r.u8()?;
    let _option_flags3 = r.u8()?;
    let _time_zone = r.u32()?;
    let _lcid = r.u32()?;

    let mut field = |decode: fn(u8) -> u8| -> Result<String, Malformed> {
        let offset = r.u16()? as usize;
        let chars = r.u16()? as usize;
        let raw = payload
            .get(offset..offset + chars * 2)
            .ok_or_else(|| Malformed::new("LOGIN7 string outside the record"))?;
        let bytes: Vec<u8> = raw.iter().map(|&b| decode(b)).collect();
        ucs2_to_string(&bytes)
    };
    let plain = |b| b;
    let hostname = field(plain)?;
    let username = field(plain)?;
    let password = field(deobfuscate)?;
    let app_name = field(plain)?;
    let server_name = field(plain)?;
    let _extension = field(plain);
    let library_name = field(plain)?;
    let language = field(plain)?;
    let database = field(plain)?;
    Ok(Login7 {
        tds_version,
        packet_size,
        client_pid,
        integrated_security: option_flags2 & F_INT_SECURITY != 0,
        hostname,
        username,
        password,
        app_name,
        server_name,
        library_name,
        language,
        database,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obfuscate(b: u8) -> u8 {
        b.rotate_left(4) ^ 0xA5
    }

    fn ucs2(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn parses_strings_and_password() {
        let strings = ["host", "sa", "pässword", "app", "srv", "", "lib", "", "ods"];
        let mut fixed = Vec::new();
        fixed.extend_from_slice(&0u32.to_le_bytes());
        fixed.extend_from_slice(&0x7400_0004u32.to_le_bytes());
        fixed.extend_from_slice(&8192u32.to_le_bytes());
        fixed.extend_from_slice(&[0; 12]);
        fixed.extend_from_slice(&[0, 0, 0, 0]);
        fixed.extend_from_slice(&[0; 8]);
        let mut data = Vec::new();
        let base = fixed.len() + strings.len() * 4;
        let mut table = Vec::new();
        for (i, s) in strings.iter().enumerate() {
            let mut bytes = ucs2(s);
            if i == 2 {
                bytes = bytes.into_iter().map(obfuscate).collect();
            }
            table.extend_from_slice(&((base + data.len()) as u16).to_le_bytes());
            table.extend_from_slice(&(s.encode_utf16().count() as u16).to_le_bytes());
            data.extend_from_slice(&bytes);
        }
        let payload = [fixed, table, data].concat();
        let login = parse(&payload).unwrap();
        assert_eq!(login.username, "sa");
        assert_eq!(login.password, "pässword");
        assert_eq!(login.database, "ods");
        assert_eq!(login.packet_size, 8192);
        assert!(!format!("{login:?}").contains("pässword"));
    }
}
