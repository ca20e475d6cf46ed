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
pub fn pointers_in_packs(
    repo_dir: &Path,
    packs: &[PathBuf],
) -> Result<BTreeSet<LfsPointer>, GitError> {
    let repo = super::fetch::open_mirror(repo_dir)?;
    let mut found = BTreeSet::new();
    for pack in packs {
        let index_path = pack.with_extension("idx");
        let index =
            gix::odb::pack::index::File::at(&index_path, repo.object_hash()).map_err(|err| {
                GitError::repo(
                    &index_path,
                    format!("could not read the pack index: {}", chain(&err)),
                )
            })?;
        for entry in index.iter() {
            if let Some(pointer) = pointer_blob(&repo, repo_dir, entry.oid)? {
                found.insert(pointer);
            }
        }
    }
    Ok(found)
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
