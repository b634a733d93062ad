//! Secrets sealed to a host: the executor owns an x25519 key pair (made on first start, kept
//! in its state directory with mode 0600); the scheduler seals each secret env value to the
//! host's public key (libsodium-compatible sealed box: X25519 + XSalsa20-Poly1305), so NATS,
//! JetStream and the event log only ever see ciphertext. Opened values live in [`Secret`],
//! which never prints and is wiped on drop.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::{PublicKey, SecretKey};
use zeroize::Zeroizing;

use crate::wire::SealedValue;

/// Sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("host key is not 32 bytes of base64")]
    BadSecretKey,
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

    /// The key from its stored form ([`HostKey::secret_base64`]); the executor keeps it in
    /// its state directory, mode 0600.
    pub fn from_secret_base64(text: &str) -> Result<Self, SealError> {
        let raw = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|_| SealError::BadSecretKey)?,
        );
        let key = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| SealError::BadSecretKey)?;
        Ok(Self {
            secret: SecretKey::from_bytes(key),
        })
    }

    /// The secret key as base64, for the host's key file only.
    pub fn secret_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.secret.to_bytes()))
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

    /// Opens a value sealed to this host that need not be text (an accessory's file).
    pub fn open_bytes(&self, sealed: &SealedValue) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.secret
            .unseal(&sealed.0)
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }
}

fn public_key(host_key: &str) -> Result<PublicKey, SealError> {
    let raw = B64
        .decode(host_key.trim())
        .map_err(|_| SealError::BadPublicKey)?;
    let key = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| SealError::BadPublicKey)?;
    Ok(PublicKey::from_bytes(key))
}

/// Whether `host_key` is a well-formed sealing key (32 bytes of base64).
pub fn check_public_key(host_key: &str) -> Result<(), SealError> {
    public_key(host_key).map(|_| ())
}

/// Seals `value` to the host whose base64 public key is `host_key`.
pub fn seal(host_key: &str, value: &str) -> Result<SealedValue, SealError> {
    public_key(host_key)?
        .seal(&mut rand::rngs::OsRng, value.as_bytes())
        .map(SealedValue)
        .map_err(|_| SealError::Seal)
}

/// Seals bytes that need not be text (an accessory's file) to the host `host_key` names.
pub fn seal_bytes(host_key: &str, value: &[u8]) -> Result<SealedValue, SealError> {
    public_key(host_key)?
        .seal(&mut rand::rngs::OsRng, value)
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
        let bytes = seal_bytes(&host.public_key_base64(), &[0xff, 0, 1]).unwrap();
        assert_eq!(host.open_bytes(&bytes).unwrap().as_slice(), &[0xff, 0, 1]);
        assert!(matches!(host.open(&bytes), Err(SealError::NotText)));
    }

    /// The stored form reads back as the same key; anything else is refused.
    #[test]
    fn secret_round_trip() {
        let a = HostKey::generate();
        let b = HostKey::from_secret_base64(&a.secret_base64()).unwrap();
        assert_eq!(a.public_key_base64(), b.public_key_base64());
        assert!(matches!(
            HostKey::from_secret_base64("c2hvcnQ="),
            Err(SealError::BadSecretKey)
        ));
    }
}
