//! The host's own keys, kept in the executor's state directory: a sealing key and a report
//! signing key, made on first start (mode 0600 from creation, never wider), read back on every
//! later start; their public halves in `identity.pub` for enrolment.

use flotilla_protocol::identity::{
    PUBLIC_FILE, PublicIdentity, ReportSigner, SEALING_FILE, SIGNING_FILE, public_identity,
};
use flotilla_protocol::sealing::{HostKey, SealError};
use flotilla_protocol::signing::KeyError;
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
        source: KeyProblem,
    },
}

/// What is wrong with a key file's contents.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error("sealing key")]
    Sealing(#[source] SealError),
    #[error("signing key")]
    Signing(#[source] KeyError),
}

/// Reads the sealing key at `path`, or makes one there (mode 0600) if there is none.
/// Returns the key and whether it was made now.
pub fn load_or_generate(path: &Path) -> Result<(HostKey, bool), KeyFileError> {
    load_or_make(
        path,
        |text| {
            HostKey::from_secret_base64(text).map_err(|source| KeyFileError::Invalid {
                path: path.to_owned(),
                source: KeyProblem::Sealing(source),
            })
        },
        || {
            let key = HostKey::generate();
            let text = key.secret_base64();
            (key, text)
        },
    )
}

/// Reads the signing key at `path`, or makes one there (mode 0600) if there is none.
pub fn load_or_generate_signer(path: &Path) -> Result<(ReportSigner, bool), KeyFileError> {
    load_or_make(
        path,
        |text| {
            ReportSigner::from_secret_base64(text).map_err(|source| KeyFileError::Invalid {
                path: path.to_owned(),
                source: KeyProblem::Signing(source),
            })
        },
        || {
            let key = ReportSigner::generate();
            let text = key.secret_base64();
            (key, text)
        },
    )
}

fn load_or_make<K>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<K, KeyFileError>,
    make: impl FnOnce() -> (K, zeroize::Zeroizing<String>),
) -> Result<(K, bool), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            Ok((parse(&text)?, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let (key, text) = make();
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

/// The executor's keys: sealing (secrets are sealed to it) and signing (its reports).
pub struct Identity {
    pub sealing: HostKey,
    pub signing: ReportSigner,
    /// Whether either key was made on this start (a new identity to enrol).
    pub made: bool,
}

impl Identity {
    /// Reads or makes both keys in `state_dir`, and (re)writes the public identity file
    /// (`identity.pub`, mode 0644) that enrolment reads over SSH.
    pub fn load(state_dir: &Path) -> Result<Identity, KeyFileError> {
        let (sealing, made_sealing) = load_or_generate(&state_dir.join(SEALING_FILE))?;
        let (signing, made_signing) = load_or_generate_signer(&state_dir.join(SIGNING_FILE))?;
        let public = public_identity(&sealing, &signing);
        write_public(&state_dir.join(PUBLIC_FILE), &public.to_json())?;
        Ok(Identity {
            sealing,
            signing,
            made: made_sealing || made_signing,
        })
    }

    /// The public halves, as enrolled.
    pub fn public(&self) -> PublicIdentity {
        public_identity(&self.sealing, &self.signing)
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader never sees a
/// half-written identity.
fn write_public(path: &Path, text: &str) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    if std::fs::read_to_string(path).is_ok_and(|old| old.trim() == text) {
        return Ok(());
    }
    let tmp = path.with_extension("pub.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
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

    /// The identity is made once; `identity.pub` names both public keys, is rewritten only
    /// when missing, and the secret key files are 0600.
    #[test]
    fn identity_is_stable_and_published() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load(dir.path()).unwrap();
        assert!(a.made);
        let text = std::fs::read_to_string(dir.path().join(PUBLIC_FILE)).unwrap();
        assert_eq!(PublicIdentity::parse(&text).unwrap(), a.public());
        for f in [SEALING_FILE, SIGNING_FILE] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        std::fs::remove_file(dir.path().join(PUBLIC_FILE)).unwrap();
        let b = Identity::load(dir.path()).unwrap();
        assert!(!b.made);
        assert_eq!(b.public(), a.public());
        assert!(dir.path().join(PUBLIC_FILE).exists());
    }
}
