//! The admin API token: 32 random bytes (hex) in `<data>/api-token`, mode 0600,
//! created on the first daemon start and shown once.

use secrecy::SecretString;
use std::io::Write;
use std::path::Path;

pub const TOKEN_FILE: &str = "api-token";

/// Reads the token, creating it when absent. Returns it and whether it was created.
pub fn load_or_create_token(data_dir: &Path) -> std::io::Result<(SecretString, bool)> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => {
            return Ok((SecretString::from(s.trim().to_string()), false))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes[..]);
    let token = hex::encode(bytes);
    let tmp = data_dir.join(format!("{TOKEN_FILE}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok((SecretString::from(token), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn created_once_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = load_or_create_token(dir.path()).unwrap();
        assert!(created);
        assert_eq!(a.expose_secret().len(), 64);
        let (b, created) = load_or_create_token(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.expose_secret(), b.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
