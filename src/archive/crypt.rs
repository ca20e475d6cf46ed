//! Encryption at rest: the archive key ([`ArchiveKey`]) and everything it keys.
//!
//! An encrypted archive has one **identity**, an age X25519 key made when the archive
//! is created. Its secret is stored only sealed, in `keys/<name>` files (to the data
//! dir's vault, or to a passphrase: the engine decides, this module only stores the
//! bytes); `FORMAT` names its public recipient so a key can be checked before use.
//! From the identity come:
//! - the **blob id key**: blob ids are BLAKE3 keyed with it, so an id reveals nothing
//!   about content (equal files in two archives get different ids);
//! - the **name key**: accelerator index names (`index/packs/<pack hash>`,
//!   `index/lfs/<sha256>`) are keyed hashes of the pack hash or oid;
//! - the **recipient** every blob and manifest is encrypted to, in age's STREAM format
//!   (ChaCha20-Poly1305 in 64 KiB chunks, a fresh file key per file): authenticated,
//!   streamed in constant memory.

use age::secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use super::backend::FileKind;

const BLOB_ID_CONTEXT: &str = "reposafe 2026-12 archive blob id";
const INDEX_NAME_CONTEXT: &str = "reposafe 2026-12 archive index name";

/// The key of an encrypted archive. Never printed: `Debug` shows only the recipient.
pub struct ArchiveKey {
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
    id_key: [u8; 32],
    name_key: [u8; 32],
}

impl fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveKey")
            .field("recipient", &self.recipient.to_string())
            .finish_non_exhaustive()
    }
}

/// A text that should hold an archive key but does not.
#[derive(Debug, thiserror::Error)]
#[error("no archive key (a line `AGE-SECRET-KEY-1…`) found")]
pub struct NotAKey;

impl ArchiveKey {
    /// A new random key, for a new archive.
    pub fn generate() -> ArchiveKey {
        Self::from_identity(age::x25519::Identity::generate())
    }

    fn from_identity(identity: age::x25519::Identity) -> ArchiveKey {
        let secret = identity.to_string();
        let secret = secret.expose_secret().as_bytes();
        ArchiveKey {
            recipient: identity.to_public(),
            id_key: blake3::derive_key(BLOB_ID_CONTEXT, secret),
            name_key: blake3::derive_key(INDEX_NAME_CONTEXT, secret),
            identity,
        }
    }

    /// Reads a key from text: the first line starting `AGE-SECRET-KEY-` (what
    /// [`ArchiveKey::secret_text`] writes, with comments around it).
    pub fn parse(text: &str) -> Result<ArchiveKey, NotAKey> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or(NotAKey)?;
        let identity = age::x25519::Identity::from_str(line).map_err(|_| NotAKey)?;
        Ok(Self::from_identity(identity))
    }

    /// The public recipient (`age1…`), recorded in `FORMAT`. Not secret.
    pub fn recipient(&self) -> String {
        self.recipient.to_string()
    }

    /// The secret as a key file: two comment lines and the `AGE-SECRET-KEY-1…` line.
    /// Only to be sealed or written to a private file.
    pub fn secret_text(&self) -> SecretString {
        SecretString::from(format!(
            "# reposafe archive key: decrypts every backup in the archive whose FORMAT names\n\
             # {}. Whoever holds this file can read them; without it they are lost.\n{}\n",
            self.recipient,
            self.identity.to_string().expose_secret()
        ))
    }

    /// The hasher of blob ids: BLAKE3 keyed with the blob id key.
    pub(crate) fn hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.id_key)
    }

    /// The stored name of an accelerator index entry for `key` (a pack hash, an oid):
    /// 64 hex digits, a keyed hash of the kind and the key.
    pub(crate) fn index_name(&self, kind: FileKind, key: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.name_key);
        h.update(format!("{kind:?}").as_bytes());
        h.update(&[0]);
        h.update(key.as_bytes());
        h.finalize().to_hex().to_string()
    }

    /// Wraps `out` so that what is written to it is encrypted to the archive (the age
    /// header first). [`age::stream::StreamWriter::finish`] must be called.
    pub(crate) fn encrypt_to<W: Write>(&self, out: W) -> io::Result<age::stream::StreamWriter<W>> {
        let recipient: &dyn age::Recipient = &self.recipient;
        age::Encryptor::with_recipients(std::iter::once(recipient))
            .map_err(io::Error::other)?
            .wrap_output(out)
    }

    /// Opens an age stream written by [`ArchiveKey::encrypt_to`]; every chunk is
    /// authenticated as it is read (a changed byte fails the read).
    pub(crate) fn decrypt_from<R: Read>(
        &self,
        input: R,
    ) -> Result<age::stream::StreamReader<R>, String> {
        let identity: &dyn age::Identity = &self.identity;
        age::Decryptor::new(input)
            .map_err(|e| format!("not an age file: {e}"))?
            .decrypt(std::iter::once(identity))
            .map_err(|e| format!("cannot decrypt with the archive key: {e}"))
    }

    /// Encrypts a small file held in memory (a manifest).
    pub(crate) fn encrypt(&self, plain: &[u8]) -> io::Result<Vec<u8>> {
        let mut w = self.encrypt_to(Vec::with_capacity(plain.len() + 256))?;
        w.write_all(plain)?;
        w.finish()
    }

    /// Decrypts a small file written by [`ArchiveKey::encrypt`].
    pub(crate) fn decrypt(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let mut plain = Vec::new();
        self.decrypt_from(sealed)?
            .read_to_end(&mut plain)
            .map_err(|e| format!("cannot decrypt with the archive key: {e}"))?;
        Ok(plain)
    }
}

/// Where encrypted output goes: straight to the file, or through age.
pub(crate) enum Sink<W: Write> {
    Plain(W),
    Sealed(age::stream::StreamWriter<W>),
}

impl<W: Write> Sink<W> {
    /// Ends the stream (the last, authenticated age chunk) and returns the writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Sealed(s) => s.finish(),
        }
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Sealed(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Sealed(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_its_text_and_never_prints_its_secret() {
        let key = ArchiveKey::generate();
        let text = key.secret_text();
        let back = ArchiveKey::parse(text.expose_secret()).expect("parse");
        assert_eq!(back.recipient(), key.recipient());
        assert_eq!(back.id_key, key.id_key);
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.recipient()), "{debug}");
        assert!(!debug.contains("AGE-SECRET-KEY"), "{debug}");
        assert!(ArchiveKey::parse("# nothing here\n").is_err());
        assert!(ArchiveKey::parse("AGE-SECRET-KEY-1NOTBECH32").is_err());
    }

    #[test]
    fn ids_and_index_names_depend_on_the_key() {
        let (a, b) = (ArchiveKey::generate(), ArchiveKey::generate());
        let id = |k: &ArchiveKey| k.hasher().update(b"same content").finalize();
        assert_ne!(id(&a), id(&b));
        assert_ne!(id(&a), blake3::hash(b"same content"));
        let name = a.index_name(FileKind::PackIndex, "abc");
        assert_eq!(name.len(), 64);
        assert_ne!(name, a.index_name(FileKind::LfsIndex, "abc"));
        assert_ne!(name, b.index_name(FileKind::PackIndex, "abc"));
    }

    #[test]
    fn small_files_round_trip_and_another_key_or_a_flipped_byte_fails() {
        let (a, b) = (ArchiveKey::generate(), ArchiveKey::generate());
        let sealed = a.encrypt(b"manifest text").expect("encrypt");
        assert!(!sealed.windows(8).any(|w| w == b"manifest"));
        assert_eq!(a.decrypt(&sealed).expect("decrypt"), b"manifest text");
        assert!(b.decrypt(&sealed).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        assert!(a.decrypt(&flipped).is_err());
    }
}
