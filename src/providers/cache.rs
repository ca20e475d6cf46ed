//! On-disk cache of compiled provider components, keyed by the BLAKE3 hash of the
//! component bytes and the engine's compatibility hash, so start-up deserializes
//! (milliseconds) instead of compiling (about a second per MB).

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

fn cache_file(engine: &Engine, wasm: &[u8], dir: &Path) -> PathBuf {
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let compat = h.finish();
    let content = blake3::hash(wasm);
    dir.join(format!(
        "{}-{compat:016x}.cwasm",
        &content.to_hex().as_str()[..32]
    ))
}

/// Loads the compiled form of `wasm` from `dir`, or compiles and stores it.
/// A damaged or stale cache file is ignored and replaced.
pub(crate) fn load_or_compile(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, wasm);
    };
    let path = cache_file(engine, wasm, dir);
    if path.is_file() {
        // SAFETY: the bytes were written by `Component::serialize` of this same engine
        // configuration (its name carries the engine's compatibility hash) into the
        // data dir, which only reposafe writes. wasmtime checks the header too.
        // Read into memory rather than mapping the file, so a cache file replaced by an
        // outside tool cannot fault the process.
        let bytes = fs::read(&path).unwrap_or_default();
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!("ignoring unusable component cache {}: {e}", path.display()),
        }
    }
    let component = Component::new(engine, wasm)?;
    if let Ok(bytes) = component.serialize() {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = fs::create_dir_all(dir)
            .and_then(|_| fs::write(&tmp, &bytes))
            .and_then(|_| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            tracing::warn!("cannot cache compiled component in {}: {e}", dir.display());
        }
    }
    Ok(component)
}
