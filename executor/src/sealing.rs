//! Secrets sealed to a host: the executor owns an x25519 key pair (made on first start, kept
//! in its state directory with mode 0600); the scheduler seals each secret env value to the
//! host's public key (libsodium-compatible sealed box: X25519 + XSalsa20-Poly1305), so NATS,
//! JetStream and the event log only ever see ciphertext. Opened values live in [`Secret`],
//! which never prints and is wiped on drop.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::{PublicKey, SecretKey};
use zeroize::Zeroizing;

use crate::wire::SealedValue;

/// Sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("host key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host key {0} is not a 32-byte key")]
    BadKeyFile(PathBuf),
    #[error("sealing key is not 32 bytes of base64")]
    BadPublicKey,
    #[error("sealed value does not open with this host's key (sealed for another host?)")]
    Open,
    #[error("sealed value is not UTF-8 text")]
    NotText,
    #[error("cannot seal value")]
    Seal,
}

/// A secret opened in memory: never printed, wiped when dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// The value, for handing to Docker.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The host's own sealing key pair.
pub struct HostKey {
    secret: SecretKey,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKey(public {})", self.public_key_base64())
    }
}

impl HostKey {
    /// A fresh key pair (tests and benchmarks; hosts use [`HostKey::load_or_generate`]).
    pub fn generate() -> Self {
        Self {
            secret: SecretKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Reads the key at `path`, or makes one there (mode 0600) if there is none.
    /// Returns the key and whether it was made now.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), SealError> {
        let io = |source| SealError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = Zeroizing::new(bytes);
                let raw = Zeroizing::new(
                    B64.decode(text.trim_ascii())
                        .map_err(|_| SealError::BadKeyFile(path.to_owned()))?,
                );
                let key = <[u8; 32]>::try_from(raw.as_slice())
                    .map_err(|_| SealError::BadKeyFile(path.to_owned()))?;
                Ok((
                    Self {
                        secret: SecretKey::from_bytes(key),
                    },
                    false,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let key = Self::generate();
                let text = Zeroizing::new(B64.encode(key.secret.to_bytes()));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(text.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The public key as base64: what secrets for this host are sealed to.
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.secret.public_key().as_bytes())
    }

    /// Opens a value sealed to this host.
    pub fn open(&self, sealed: &SealedValue) -> Result<Secret, SealError> {
        let bytes = Zeroizing::new(self.secret.unseal(&sealed.0).map_err(|_| SealError::Open)?);
        let text = std::str::from_utf8(&bytes).map_err(|_| SealError::NotText)?;
        Ok(Secret(Zeroizing::new(text.to_owned())))
    }
}

/// Seals `value` to the host whose base64 public key is `host_key`.
pub fn seal(host_key: &str, value: &str) -> Result<SealedValue, SealError> {
    let raw = B64
        .decode(host_key.trim())
        .map_err(|_| SealError::BadPublicKey)?;
    let key = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| SealError::BadPublicKey)?;
    PublicKey::from_bytes(key)
        .seal(&mut rand::rngs::OsRng, value.as_bytes())
        .map(SealedValue)
        .map_err(|_| SealError::Seal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value sealed to a host opens with that host's key only, and the ciphertext does not
    /// contain the value.
    #[test]
    fn sealed_for_one_host_only() {
        let host = HostKey::generate();
        let sealed = seal(&host.public_key_base64(), "s3cr3t-value").unwrap();
        assert!(!sealed.0.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(host.open(&sealed).unwrap().expose(), "s3cr3t-value");
        assert!(matches!(
            HostKey::generate().open(&sealed),
            Err(SealError::Open)
        ));
        assert_eq!(format!("{:?}", host.open(&sealed).unwrap()), "Secret(..)");
    }

    /// The key is made once with mode 0600 and read back the same on the next start.
    #[test]
    fn key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("flotilla-key-{}", std::process::id()));
        let path = dir.join("host.key");
        let _ = std::fs::remove_dir_all(&dir);
        let (a, made) = HostKey::load_or_generate(&path).unwrap();
        assert!(made);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, made) = HostKey::load_or_generate(&path).unwrap();
        assert!(!made);
        assert_eq!(a.public_key_base64(), b.public_key_base64());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
