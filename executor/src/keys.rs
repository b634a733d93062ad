//! The host's own sealing key, kept in the executor's state directory: made on first start
//! (mode 0600 from creation, never wider), read back on every later start.

use flotilla_protocol::sealing::{HostKey, SealError};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The key file could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("host key {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host key {path} is not a valid key")]
    Invalid {
        path: PathBuf,
        #[source]
        source: SealError,
    },
}

/// Reads the key at `path`, or makes one there (mode 0600) if there is none.
/// Returns the key and whether it was made now.
pub fn load_or_generate(path: &Path) -> Result<(HostKey, bool), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            let key =
                HostKey::from_secret_base64(&text).map_err(|source| KeyFileError::Invalid {
                    path: path.to_owned(),
                    source,
                })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let key = HostKey::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(key.secret_base64().as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((key, true))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key is made once with mode 0600 and read back the same on the next start.
    #[test]
    fn key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/host.key");
        let (a, made) = load_or_generate(&path).unwrap();
        assert!(made);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, made) = load_or_generate(&path).unwrap();
        assert!(!made);
        assert_eq!(a.public_key_base64(), b.public_key_base64());
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            load_or_generate(&path),
            Err(KeyFileError::Invalid { .. })
        ));
    }
}
