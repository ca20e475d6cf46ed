//! A minimal ZIP writer for Bitbucket Cloud's issue import: entries are stored
//! (no compression) with their CRC-32, names flagged UTF-8, and a central
//! directory; no ZIP64 (an import is far below 4 GiB). Pure, so it is tested on
//! the host and read back there by a real unzip.

/// Builds a ZIP archive in memory.
#[derive(Default)]
pub struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    entries: u16,
}

/// The CRC-32 (IEEE 802.3, reflected, as ZIP uses) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// MS-DOS date and time of 1980-01-01 00:00 (entries carry no real time).
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1;
/// General purpose flag: the name is UTF-8.
const UTF8_NAME: u16 = 1 << 11;

impl ZipWriter {
    pub fn new() -> ZipWriter {
        ZipWriter::default()
    }

    /// Adds `data` stored under `name`; fails when the archive would need ZIP64.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<(), String> {
        let offset = u32::try_from(self.out.len()).map_err(|_| too_big())?;
        let size = u32::try_from(data.len()).map_err(|_| too_big())?;
        let name_len = u16::try_from(name.len()).map_err(|_| format!("name too long: {name}"))?;
        if self.entries == u16::MAX {
            return Err("too many entries for one archive".to_string());
        }
        let crc = crc32(data);
        // Local file header.
        put32(&mut self.out, 0x0403_4b50);
        put16(&mut self.out, 20);
        put16(&mut self.out, UTF8_NAME);
        put16(&mut self.out, 0);
        put16(&mut self.out, DOS_TIME);
        put16(&mut self.out, DOS_DATE);
        put32(&mut self.out, crc);
        put32(&mut self.out, size);
        put32(&mut self.out, size);
        put16(&mut self.out, name_len);
        put16(&mut self.out, 0);
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(data);
        u32::try_from(self.out.len()).map_err(|_| too_big())?;
        // Central directory entry.
        let c = &mut self.central;
        put32(c, 0x0201_4b50);
        put16(c, 20);
        put16(c, 20);
        put16(c, UTF8_NAME);
        put16(c, 0);
        put16(c, DOS_TIME);
        put16(c, DOS_DATE);
        put32(c, crc);
        put32(c, size);
        put32(c, size);
        put16(c, name_len);
        put16(c, 0);
        put16(c, 0);
        put16(c, 0);
        put16(c, 0);
        put32(c, 0);
        put32(c, offset);
        c.extend_from_slice(name.as_bytes());
        self.entries += 1;
        Ok(())
    }

    /// The archive's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        let start = u32::try_from(self.out.len()).map_err(|_| too_big())?;
        let central_len = u32::try_from(self.central.len()).map_err(|_| too_big())?;
        self.out.append(&mut self.central);
        put32(&mut self.out, 0x0605_4b50);
        put16(&mut self.out, 0);
        put16(&mut self.out, 0);
        put16(&mut self.out, self.entries);
        put16(&mut self.out, self.entries);
        put32(&mut self.out, central_len);
        put32(&mut self.out, start);
        put16(&mut self.out, 0);
        Ok(self.out)
    }
}

fn too_big() -> String {
    "the archive would exceed 4 GiB".to_string()
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_known_strings() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn a_real_unzip_reads_it_back() {
        let mut z = ZipWriter::new();
        z.add("db-2.0.json", b"{\"issues\": []}").expect("add");
        z.add("attachments/ünï.bin", &[0u8, 1, 2, 255])
            .expect("add");
        let bytes = z.finish().expect("finish");
        let dir = std::env::temp_dir().join(format!("zip-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("a.zip");
        std::fs::write(&path, &bytes).expect("write");
        // `python3 -m zipfile -t` checks every CRC; skip where python is missing.
        match std::process::Command::new("python3")
            .args(["-m", "zipfile", "-t"])
            .arg(&path)
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("python3 not available ({e}); CRCs checked above only"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
