//! On-disk cache of compiled provider components, keyed by the BLAKE3 hash of the
//! component bytes and the engine's compatibility hash, so start-up deserializes
//! (milliseconds) instead of compiling (about a second per MB).
//!
//! A cache file is `RSCC1` + the BLAKE3 hash of the serialized component + the
//! serialized component. Compiled code is loaded without validation
//! (`Component::deserialize` is unsafe), so the hash is checked before it: a file
//! damaged on disk (a flipped bit, a torn write) is never deserialized, it is
//! reported and recompiled. Files are written to a temporary name, fsynced,
//! renamed into place, and the directory fsynced.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The first bytes of a cache file (the version of this layout).
const MAGIC: &[u8; 5] = b"RSCC1";
const HEADER: usize = MAGIC.len() + blake3::OUT_LEN;

fn cache_file(engine: &Engine, wasm: &[u8], dir: &Path) -> PathBuf {
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let compat = h.finish();
    let content = blake3::hash(wasm);
    dir.join(format!(
        "{}-{compat:016x}.rscc1.cwasm",
        &content.to_hex().as_str()[..32]
    ))
}

/// The serialized component in a cache file, when its header and hash are right.
fn verified(file: &[u8]) -> Result<&[u8], &'static str> {
    if file.len() < HEADER || &file[..MAGIC.len()] != MAGIC {
        return Err("not a reposafe component cache file");
    }
    let (want, body) = file[MAGIC.len()..].split_at(blake3::OUT_LEN);
    if blake3::hash(body).as_bytes() != want {
        return Err("its content does not match its BLAKE3 hash (damaged on disk)");
    }
    Ok(body)
}

/// Loads the compiled form of `wasm` from `dir`, or compiles and stores it.
/// A damaged or stale cache file is reported, never deserialized, and replaced.
pub(crate) fn load_or_compile(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, wasm);
    };
    let path = cache_file(engine, wasm, dir);
    if let Some(c) = load(engine, &path) {
        return Ok(c);
    }
    let component = Component::new(engine, wasm)?;
    match component.serialize() {
        Ok(bytes) => {
            if let Err(e) = store(dir, &path, &bytes) {
                tracing::warn!("cannot cache compiled component in {}: {e}", dir.display());
            }
        }
        Err(e) => tracing::warn!("cannot serialize compiled component: {e}"),
    }
    Ok(component)
}

/// The component cached at `path`, if there is a sound one.
fn load(engine: &Engine, path: &Path) -> Option<Component> {
    let file = match fs::read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("cannot read component cache {}: {e}", path.display());
            return None;
        }
    };
    let body = match verified(&file) {
        Ok(b) => b,
        Err(why) => {
            tracing::warn!(
                "ignoring component cache {}: {why}; recompiling",
                path.display()
            );
            return None;
        }
    };
    // SAFETY: the bytes are exactly those `Component::serialize` of this same engine
    // configuration produced (the file name carries the engine's compatibility hash
    // and the BLAKE3 of the bytes, checked above, is the one stored with them), in the
    // data dir, which only reposafe writes. wasmtime checks its header too. They
    // are read into memory rather than mapped, so a cache file replaced by an outside
    // tool cannot fault the process.
    match unsafe { Component::deserialize(engine, body) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("ignoring unusable component cache {}: {e}", path.display());
            None
        }
    }
}

/// Writes a cache file atomically and durably: temporary file (0600), fsync,
/// rename, fsync of the directory.
fn store(dir: &Path, path: &Path, serialized: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".component-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    let f = tmp.as_file_mut();
    f.write_all(MAGIC)?;
    f.write_all(blake3::hash(serialized).as_bytes())?;
    f.write_all(serialized)?;
    f.sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache file with one flipped byte is never deserialized: it is reported,
    /// recompiled and replaced by a sound file.
    #[test]
    fn a_flipped_byte_is_caught_before_deserialize() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().expect("tmp");
        let wasm = component_bytes();
        load_or_compile(&engine, &wasm, Some(dir.path())).expect("compile");
        let path = cache_file(&engine, &wasm, dir.path());
        let sound = fs::read(&path).expect("cache file");

        // One bit flipped in the middle of the compiled code.
        let mut damaged = sound.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x01;
        fs::write(&path, &damaged).expect("damage");
        load_or_compile(&engine, &wasm, Some(dir.path())).expect("recompiled");
        let now = fs::read(&path).expect("cache file");
        assert_ne!(
            now, damaged,
            "the damaged file was deserialized, not recompiled"
        );
        assert!(
            verified(&now).is_ok(),
            "the damaged file was replaced by a sound one"
        );
        assert_eq!(
            verified(&damaged).unwrap_err(),
            "its content does not match its BLAKE3 hash (damaged on disk)"
        );
        // A file without the header (an older cache layout, or garbage) is refused.
        assert!(verified(b"RSCC").is_err() && verified(&sound[HEADER..]).is_err());
    }

    fn component_bytes() -> Vec<u8> {
        // A small real component: the example provider of the test fixtures.
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dist/example-provider.wasm");
        fs::read(&p).expect("example provider")
    }
}
