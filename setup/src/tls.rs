//! TLS for the NATS `flotilla setup` boots: a CA made once per project on the operator's
//! machine (`.flotilla/nats-ca.pem` and `.flotilla/nats-ca.key`), and the server certificate
//! it issues for the control host. Every client (executors, the CLI through its SSH tunnel,
//! the scheduler service) trusts this CA and nothing else, so a listener with any other
//! certificate in front of NATS's port is refused.
//!
//! Key decisions:
//! - The CA's key never leaves the operator's machine; the server key is made here and
//!   written to the control host over SSH (mode 0600), as every other file setup writes.
//! - Whether the certificate on the host is still right is decided from the certificate
//!   itself (read back by the probe): issued by this CA, exactly the wanted names, more than
//!   [`RENEW_BEFORE`] left. Only then is a new one issued, so a second setup changes nothing.
//! - Crypto is aws-lc-rs only (rcgen and rustls with that provider): one provider in the tree.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use zeroize::Zeroizing;

/// The CA certificate's file in the project's `.flotilla/`.
pub const CA_CERT_FILE: &str = "nats-ca.pem";
/// The CA's private key, next to it (0600).
pub const CA_KEY_FILE: &str = "nats-ca.key";

/// The CA outlives any project's hosts: replacing it means every host gets a new CA file and
/// its executor restarts, so it is made for long.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// A server certificate lasts a year; setup renews it well before that.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A server certificate with less than this left is renewed by the next setup (a month gives
/// the operator many runs of setup to notice before clients refuse the server).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Clocks of the hosts may be a little behind the operator's: a fresh certificate is valid
/// from a while before it was made.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// The CA's name: fixed, so the issuer of every certificate is this name and the CA's key.
const CA_NAME: &str = "Flotilla NATS CA";

/// Why the CA or a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable CA key")]
    CaKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("making a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("{name:?} is not a host name or address a certificate can name")]
    Name {
        name: String,
        #[source]
        source: rcgen::Error,
    },
}

impl TlsError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
        move |source| TlsError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The project's CA: its certificate (what clients pin) and its key (what signs the NATS
/// server's certificate).
pub struct ProjectCa {
    /// PEM, what clients trust and setup writes to every host.
    pub cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for ProjectCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectCa").finish_non_exhaustive()
    }
}

/// A server certificate and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert").finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    // Signs server certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl ProjectCa {
    /// Reads the project's CA from `dir` (`.flotilla/`), making it on first use: the
    /// directory is 0700, both files 0600 from creation. A key without its certificate (a
    /// first run cut short) is replaced: nothing can have trusted it yet.
    pub fn load_or_create(dir: &Path) -> Result<ProjectCa, TlsError> {
        if let Some(ca) = ProjectCa::load(dir)? {
            return Ok(ca);
        }
        std::fs::create_dir_all(dir).map_err(TlsError::io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(TlsError::io(dir))?;
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let mut params = ca_params();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
        // The key first: a certificate on disk always has its key.
        write_private(&dir.join(CA_KEY_FILE), key.serialize_pem().as_bytes())?;
        write_private(&dir.join(CA_CERT_FILE), cert.pem().as_bytes())?;
        Ok(ProjectCa {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Reads the project's CA from `dir`; `None` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<ProjectCa>, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let cert_pem = match std::fs::read_to_string(&cert_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TlsError::io(&cert_path)(e)),
        };
        let key_path = dir.join(CA_KEY_FILE);
        let key_pem =
            Zeroizing::new(std::fs::read_to_string(&key_path).map_err(TlsError::io(&key_path))?);
        let key = KeyPair::from_pem(&key_pem).map_err(|source| TlsError::CaKey {
            path: key_path,
            source,
        })?;
        Ok(Some(ProjectCa { cert_pem, key }))
    }

    /// A server certificate for `names` (addresses become IP names, the rest DNS names),
    /// valid [`SERVER_VALIDITY`] from now, with a key of its own.
    pub fn issue(&self, names: &[String]) -> Result<ServerCert, TlsError> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| {
                CertificateParams::new(vec![n.clone()])
                    .map(|p| p.subject_alt_names)
                    .map_err(|source| TlsError::Name {
                        name: n.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("flotilla-nats", String::as_str),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Client auth too: with three control hosts, each NATS node presents this same
        // certificate when it routes to the others, which verify it.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + SERVER_VALIDITY;
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(TlsError::Generate)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// Whether `cert_pem` (the certificate on the control host) is one this CA issued, names
    /// exactly `names` and has more than [`RENEW_BEFORE`] left at `now`. Anything unreadable
    /// is not current (and is replaced).
    pub fn is_current(&self, cert_pem: &str, names: &[String], now: std::time::SystemTime) -> bool {
        let Some(der) = pem_der(cert_pem) else {
            return false;
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
            return false;
        };
        let renew_at = now + RENEW_BEFORE;
        let not_after = cert.validity().not_after.timestamp();
        let renew_secs = renew_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if not_after <= renew_secs {
            return false;
        }
        // One issued before routes needed it is replaced (a cluster's nodes refuse it).
        let client_auth =
            matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
        if !client_auth {
            return false;
        }
        let mut have: Vec<String> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect(),
            _ => return false,
        };
        let mut want: Vec<String> = names
            .iter()
            .map(|n| {
                n.parse::<std::net::IpAddr>()
                    .map_or_else(|_| n.clone(), |ip| ip.to_string())
            })
            .collect();
        have.sort();
        have.dedup();
        want.sort();
        want.dedup();
        if have != want {
            return false;
        }
        self.verifies(&der, names, now)
    }

    /// Whether rustls, trusting this CA alone, accepts `der` for the first of `names`: the
    /// same check every client makes, so "current" means "clients accept it".
    fn verifies(&self, der: &[u8], names: &[String], now: std::time::SystemTime) -> bool {
        use rustls::client::danger::ServerCertVerifier as _;
        let Some(ca_der) = pem_der(&self.cert_pem) else {
            return false;
        };
        let mut roots = rustls::RootCertStore::empty();
        if roots
            .add(rustls::pki_types::CertificateDer::from(ca_der))
            .is_err()
        {
            return false;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let Ok(verifier) =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
        else {
            return false;
        };
        let Some(name) = names
            .first()
            .and_then(|n| rustls::pki_types::ServerName::try_from(n.clone()).ok())
        else {
            return false;
        };
        let Ok(since) = now.duration_since(std::time::UNIX_EPOCH) else {
            return false;
        };
        verifier
            .verify_server_cert(
                &rustls::pki_types::CertificateDer::from(der.to_vec()),
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::since_unix_epoch(since),
            )
            .is_ok()
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        _ => None,
    }
}

/// The DER of the first PEM block in `pem`.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(parsed.contents)
}

/// Writes `bytes` to `path` through a temp name created 0600 (never readable by others,
/// not even for a moment), then renames it into place.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(TlsError::io(&tmp))?;
    file.write_all(bytes).map_err(TlsError::io(&tmp))?;
    file.sync_all().map_err(TlsError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(TlsError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn names() -> Vec<String> {
        ["10.0.0.5", "web-1", "127.0.0.1", "localhost"]
            .map(String::from)
            .to_vec()
    }

    /// The CA is made once: a second load reads the same one, and its files are 0600 in a
    /// 0700 directory.
    #[test]
    fn ca_is_made_once_with_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let flotilla = dir.path().join(".flotilla");
        let first = ProjectCa::load_or_create(&flotilla).unwrap();
        let again = ProjectCa::load_or_create(&flotilla).unwrap();
        assert_eq!(first.cert_pem, again.cert_pem);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&flotilla), 0o700);
        assert_eq!(mode(&flotilla.join(CA_CERT_FILE)), 0o600);
        assert_eq!(mode(&flotilla.join(CA_KEY_FILE)), 0o600);
        assert!(ProjectCa::load(&dir.path().join("none")).unwrap().is_none());
    }

    /// A certificate the CA issued for the wanted names is current; other names, another
    /// CA, garbage, or less than a month left make setup issue a new one.
    #[test]
    fn renewal_when_names_change_ca_changes_or_expiry_nears() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ProjectCa::load_or_create(dir.path()).unwrap();
        let cert = ca.issue(&names()).unwrap();
        let now = SystemTime::now();
        assert!(ca.is_current(&cert.cert_pem, &names(), now));
        let mut other_names = names();
        other_names[0] = "10.0.0.6".into();
        assert!(!ca.is_current(&cert.cert_pem, &other_names, now));
        let other_dir = tempfile::tempdir().unwrap();
        let other_ca = ProjectCa::load_or_create(other_dir.path()).unwrap();
        assert!(!other_ca.is_current(&cert.cert_pem, &names(), now));
        assert!(!ca.is_current("not a certificate", &names(), now));
        let near_expiry = now + SERVER_VALIDITY - RENEW_BEFORE + Duration::from_secs(3600);
        assert!(!ca.is_current(&cert.cert_pem, &names(), near_expiry));
        assert!(ca.is_current(
            &cert.cert_pem,
            &names(),
            now + SERVER_VALIDITY - RENEW_BEFORE - Duration::from_secs(7 * 24 * 3600)
        ));
    }

    /// A certificate issued before routes needed client auth (server auth only) is not
    /// current: the next setup replaces it, so three control hosts' nodes accept each other.
    #[test]
    fn certificate_without_client_auth_is_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ProjectCa::load_or_create(dir.path()).unwrap();
        let mut params = CertificateParams::new(names()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + SERVER_VALIDITY;
        let key = KeyPair::generate().unwrap();
        let old = params
            .signed_by(&key, &Issuer::new(ca_params(), &ca.key))
            .unwrap();
        assert!(!ca.is_current(&old.pem(), &names(), SystemTime::now()));
        let new = ca.issue(&names()).unwrap();
        assert!(ca.is_current(&new.cert_pem, &names(), SystemTime::now()));
    }

    /// A name a certificate cannot carry is an error naming it, not a certificate without it.
    #[test]
    fn bad_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ProjectCa::load_or_create(dir.path()).unwrap();
        let err = ca.issue(&["hôte".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("hôte"), "{err}");
    }
}
