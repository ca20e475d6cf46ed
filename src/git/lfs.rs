//! Git LFS pointers: which blobs of a pack are LFS pointer files, and the objects they name.
//!
//! A pointer file (git-lfs specification v1) is a blob under 1024 bytes of `key value` lines:
//! `version https://git-lfs.github.com/spec/v1` first, then the other keys sorted, among them
//! `oid sha256:<64 lowercase hex>` and `size <bytes>`, each line ending in `\n`. Parsing is
//! strict, like git-lfs's own: anything else is an ordinary blob, never a pointer, so a file
//! that merely mentions LFS is not mistaken for one.
//!
//! Only the blobs of the given packs are looked at (a backup scans the pack a fetch added),
//! and only those small enough to be pointers are read.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::{error::chain, GitError};

/// The first line of every pointer file.
const VERSION_LINE: &str = "version https://git-lfs.github.com/spec/v1";

/// Pointer files are smaller than this (git-lfs reads no more to decide).
pub const MAX_POINTER_SIZE: u64 = 1024;

/// One LFS object named by a pointer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LfsPointer {
    /// The object's SHA-256, 64 lowercase hex digits.
    pub oid: String,
    /// The object's size in bytes.
    pub size: u64,
}

/// The pointer `bytes` hold, if they are a valid pointer file.
pub fn parse_pointer(bytes: &[u8]) -> Option<LfsPointer> {
    if bytes.len() as u64 >= MAX_POINTER_SIZE || !bytes.ends_with(b"\n") {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text[..text.len() - 1].split('\n');
    if lines.next()? != VERSION_LINE {
        return None;
    }
    let (mut oid, mut size, mut previous_key) = (None, None, "");
    for line in lines {
        let (key, value) = line.split_once(' ')?;
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        // Keys after `version` are sorted and unique.
        if !key_ok || key <= previous_key {
            return None;
        }
        previous_key = key;
        match key {
            "oid" => oid = Some(parse_oid(value)?),
            "size" => size = Some(parse_size(value)?),
            _ => {}
        }
    }
    Some(LfsPointer {
        oid: oid?,
        size: size?,
    })
}

fn parse_oid(value: &str) -> Option<String> {
    let hex = value.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| hex.to_owned())
}

fn parse_size(value: &str) -> Option<u64> {
    // Decimal digits only: no sign, no spaces, no leading `+`.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// The LFS objects named by pointer files among the blobs of `packs` (paths of `.pack`
/// files, each with its `.idx` beside it) in the repository at `repo_dir` (a mirror or a
/// restored repository), sorted and without repeats.
///
/// Each pack is walked in offset order from its own entry headers: commits, trees, tags
/// and large blobs are passed over without being decoded, an offset delta is a blob when
/// its base (earlier in the pack) is one, and its result size is read from the first
/// bytes of its delta data. Only blobs under [`MAX_POINTER_SIZE`] are read.
pub fn pointers_in_packs(
    repo_dir: &Path,
    packs: &[PathBuf],
) -> Result<BTreeSet<LfsPointer>, GitError> {
    let repo = super::fetch::open_mirror(repo_dir)?;
    let mut found = BTreeSet::new();
    for pack in packs {
        let index_path = pack.with_extension("idx");
        let unreadable = |path: &Path, what: &str, err: String| {
            GitError::repo(path, format!("could not read the {what}: {err}"))
        };
        let index = gix::odb::pack::index::File::at(&index_path, repo.object_hash())
            .map_err(|err| unreadable(&index_path, "pack index", chain(&err)))?;
        let data = gix::odb::pack::data::File::at(pack, repo.object_hash())
            .map_err(|err| unreadable(pack, "pack", chain(&err)))?;
        let mut entries: Vec<(u64, gix::ObjectId)> =
            index.iter().map(|e| (e.pack_offset, e.oid)).collect();
        entries.sort_unstable();
        let mut scan = PackScan {
            repo: &repo,
            pack,
            data: &data,
            blobs: Vec::new(),
            inflate: gix::zlib::Inflate::default(),
            buf: Vec::new(),
        };
        for (offset, id) in entries {
            if scan.small_blob(offset)? {
                if let Some(pointer) = pointer_blob(&repo, repo_dir, id)? {
                    found.insert(pointer);
                }
            }
        }
    }
    Ok(found)
}

/// A delta's data is at most this long when its result may be a pointer: every byte of
/// the result costs at most 8 bytes of copy instructions, plus the two size headers.
const MAX_POINTER_DELTA: u64 = 8 * MAX_POINTER_SIZE + 20;

/// The walk over one pack's entries, in offset order.
struct PackScan<'a> {
    repo: &'a gix::Repository,
    pack: &'a Path,
    data: &'a gix::odb::pack::data::File,
    /// Offsets of the entries seen so far that are blobs (ascending).
    blobs: Vec<u64>,
    inflate: gix::zlib::Inflate,
    buf: Vec<u8>,
}

impl PackScan<'_> {
    /// Whether the entry at `offset` is a blob smaller than [`MAX_POINTER_SIZE`]. Entries
    /// must be asked for in ascending offset order.
    fn small_blob(&mut self, offset: u64) -> Result<bool, GitError> {
        use gix::odb::pack::data::entry::Header;
        let corrupt = |what: String| GitError::repo(self.pack, what);
        let entry = self.data.entry(offset).map_err(|err| {
            corrupt(format!(
                "could not read the entry at {offset}: {}",
                chain(&err)
            ))
        })?;
        let blob = match entry.header {
            Header::Blob => true,
            Header::Commit | Header::Tree | Header::Tag => false,
            Header::OfsDelta { base_distance } => entry
                .checked_base_pack_offset(base_distance)
                .is_some_and(|base| self.blobs.binary_search(&base).is_ok()),
            Header::RefDelta { base_id } => {
                let header = self.repo.find_header(base_id).map_err(|err| {
                    corrupt(format!("could not read delta base {base_id}: {err}"))
                })?;
                header.kind() == gix::object::Kind::Blob
            }
        };
        if !blob {
            return Ok(false);
        }
        self.blobs.push(offset);
        if !entry.header.is_delta() {
            return Ok(entry.decompressed_size < MAX_POINTER_SIZE);
        }
        if entry.decompressed_size > MAX_POINTER_DELTA {
            return Ok(false);
        }
        self.buf.resize(entry.decompressed_size as usize, 0);
        self.data
            .decompress_entry(&entry, &mut self.inflate, &mut self.buf)
            .map_err(|err| {
                corrupt(format!(
                    "could not inflate the entry at {offset}: {}",
                    chain(&err)
                ))
            })?;
        // The delta data starts with the base's size, then the result's (varints).
        let mut sizes = self.buf.iter().copied();
        let _base = varint(&mut sizes);
        Ok(varint(&mut sizes).is_some_and(|size| size < MAX_POINTER_SIZE))
    }
}

/// A git delta header size: 7 bits a byte, least significant first.
fn varint(bytes: &mut impl Iterator<Item = u8>) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes.next()?;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The pointer the object `id` holds, if it is a blob that is a pointer file.
fn pointer_blob(
    repo: &gix::Repository,
    repo_dir: &Path,
    id: gix::ObjectId,
) -> Result<Option<LfsPointer>, GitError> {
    let unreadable = |err: &dyn std::error::Error| {
        GitError::repo(repo_dir, format!("could not read object {id}: {err}"))
    };
    let header = repo.find_header(id).map_err(|err| unreadable(&err))?;
    if header.kind() != gix::object::Kind::Blob || header.size() >= MAX_POINTER_SIZE {
        return Ok(None);
    }
    let object = repo.find_object(id).map_err(|err| unreadable(&err))?;
    Ok(parse_pointer(&object.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

    fn pointer(body: &str) -> Option<LfsPointer> {
        parse_pointer(body.as_bytes())
    }

    #[test]
    fn valid_pointers_are_read() {
        let text = format!("{VERSION_LINE}\noid sha256:{OID}\nsize 12345\n");
        assert_eq!(
            pointer(&text),
            Some(LfsPointer {
                oid: OID.into(),
                size: 12345
            })
        );
        // Extension keys sort before `oid`, others after `size`: allowed.
        let text = format!(
            "{VERSION_LINE}\next-0-foo sha256:{OID}\noid sha256:{OID}\nsize 0\nx-extra y\n"
        );
        assert_eq!(pointer(&text).map(|p| p.size), Some(0));
    }

    #[test]
    fn anything_else_is_not_a_pointer() {
        let good = format!("{VERSION_LINE}\noid sha256:{OID}\nsize 12\n");
        assert!(pointer(&good).is_some());
        for bad in [
            // No final newline; CRLF; version not first; unsorted; repeated key.
            good.trim_end().to_string(),
            good.replace('\n', "\r\n"),
            format!("oid sha256:{OID}\n{VERSION_LINE}\nsize 12\n"),
            format!("{VERSION_LINE}\nsize 12\noid sha256:{OID}\n"),
            format!("{VERSION_LINE}\noid sha256:{OID}\noid sha256:{OID}\nsize 12\n"),
            // Bad oid: other hash, upper case, short; bad size: sign, empty, not a number.
            good.replace("sha256:", "sha1:"),
            good.replace(OID, &OID.to_uppercase()),
            good.replace(OID, &OID[..63]),
            good.replace("size 12", "size +12"),
            good.replace("size 12", "size "),
            good.replace("size 12", "size twelve"),
            // Missing keys; other version; a text that only mentions LFS.
            format!("{VERSION_LINE}\nsize 12\n"),
            format!("{VERSION_LINE}\noid sha256:{OID}\n"),
            good.replace("spec/v1", "spec/v2"),
            format!("see {VERSION_LINE}\n"),
            // Too big to be a pointer.
            format!("{good}{}", "x-pad y\n".repeat(200)),
        ] {
            assert_eq!(pointer(&bad), None, "{bad:?}");
        }
    }
}
