//! Automatic certificates by ACME HTTP-01 (instant-acme), cached on disk and renewed before expiry.
//!
//! Challenge answers live in [`Challenges`], which the plain-HTTP listener serves
//! under `/.well-known/acme-challenge/`. Certificates are issued one host name at
//! a time and cached as `HOST.crt` / `HOST.key` (mode 0600) in the cache
//! directory, next to the account credentials `account.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::tls::{CertStore, certified_key};

/// Certificates closer than this to expiry are renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Pending HTTP-01 challenge tokens and their key authorizations.
#[derive(Debug, Default)]
pub struct Challenges(RwLock<HashMap<String, String>>);

impl Challenges {
    pub fn get(&self, token: &str) -> Option<String> {
        match self.0.read() {
            Ok(m) => m.get(token).cloned(),
            Err(p) => p.into_inner().get(token).cloned(),
        }
    }

    fn set(&self, token: String, key_auth: Option<String>) {
        let mut map = match self.0.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        match key_auth {
            Some(k) => map.insert(token, k),
            None => map.remove(&token),
        };
    }
}

/// Where certificates come from and where they are kept.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The ACME directory URL, e.g. Let's Encrypt's.
    pub directory_url: String,
    /// Account credentials and issued certificates live here.
    pub cache_dir: PathBuf,
    /// Contact address given to the ACME server, as `mailto:...`.
    pub contact: Option<String>,
    /// A PEM file with the CA of the ACME server's own HTTPS certificate, for private
    /// or test ACME servers; the system roots are used when absent.
    pub server_ca: Option<PathBuf>,
}

/// An ACME operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("acme server {url}: {source}")]
    Acme {
        url: String,
        #[source]
        source: instant_acme::Error,
    },
    #[error("acme order for {host} ended {status}: {detail}")]
    Order {
        host: String,
        status: String,
        detail: String,
    },
    #[error("acme cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Issues, caches and renews certificates, putting them in the shared [`CertStore`].
pub struct Acme {
    config: AcmeConfig,
    challenges: Arc<Challenges>,
    certs: Arc<CertStore>,
    account: tokio::sync::Mutex<Option<Account>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Acme {
    pub fn new(config: AcmeConfig, challenges: Arc<Challenges>, certs: Arc<CertStore>) -> Self {
        Self {
            config,
            challenges,
            certs,
            account: tokio::sync::Mutex::new(None),
        }
    }

    /// Makes sure each host has a certificate valid for longer than [`RENEW_BEFORE`]:
    /// from the cache when it has one, otherwise issued now.
    pub async fn ensure(&self, hosts: &[String]) -> Result<(), AcmeError> {
        for host in hosts {
            let (crt, key) = self.paths(host);
            let cached = std::fs::read(&crt).ok().zip(std::fs::read(&key).ok());
            let fresh = cached
                .as_ref()
                .is_some_and(|(c, _)| !needs_renewal(c, SystemTime::now()));
            let (cert_pem, key_pem) = match cached {
                Some(pair) if fresh => pair,
                _ => {
                    let (c, k) = self.issue(host).await?;
                    self.write_cache(&crt, c.as_bytes())?;
                    self.write_cache(&key, k.as_bytes())?;
                    tracing::info!(%host, "acme certificate issued");
                    (c.into_bytes(), k.into_bytes())
                }
            };
            let certified = certified_key(&cert_pem, &key_pem, &crt.display().to_string())?;
            self.certs.insert(std::slice::from_ref(host), certified);
        }
        Ok(())
    }

    fn paths(&self, host: &str) -> (PathBuf, PathBuf) {
        let host = host.to_ascii_lowercase();
        (
            self.config.cache_dir.join(format!("{host}.crt")),
            self.config.cache_dir.join(format!("{host}.key")),
        )
    }

    fn write_cache(&self, path: &Path, data: &[u8]) -> Result<(), AcmeError> {
        write_private(&self.config.cache_dir, path, data).map_err(|source| AcmeError::Cache {
            path: path.to_owned(),
            source,
        })
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let url = self.config.directory_url.clone();
        let acme = |source| AcmeError::Acme {
            url: url.clone(),
            source,
        };
        let builder = || match &self.config.server_ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        let saved = self.config.cache_dir.join("account.json");
        let credentials: Option<AccountCredentials> = std::fs::read(&saved)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let account = match credentials {
            Some(c) => builder()
                .map_err(acme)?
                .from_credentials(c)
                .await
                .map_err(acme)?,
            None => {
                let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = builder()
                    .map_err(acme)?
                    .create(&new, url.clone(), None)
                    .await
                    .map_err(acme)?;
                let json = serde_json::to_vec(&credentials).map_err(|e| acme(e.into()))?;
                self.write_cache(&saved, &json)?;
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// One HTTP-01 order for `host`: returns the certificate chain and key, both PEM.
    async fn issue(&self, host: &str) -> Result<(String, String), AcmeError> {
        let account = self.account().await?;
        let url = self.config.directory_url.clone();
        let acme = |source| AcmeError::Acme {
            url: url.clone(),
            source,
        };
        let identifiers = [Identifier::Dns(host.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(acme)?;
        let mut tokens = Vec::new();
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(acme)?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(AcmeError::Order {
                            host: host.to_owned(),
                            status: format!("{other:?}"),
                            detail: "authorization not pending".into(),
                        });
                    }
                }
                let mut challenge =
                    authz
                        .challenge(ChallengeType::Http01)
                        .ok_or_else(|| AcmeError::Order {
                            host: host.to_owned(),
                            status: "without http-01".into(),
                            detail: "the acme server offered no http-01 challenge".into(),
                        })?;
                self.challenges.set(
                    challenge.token.clone(),
                    Some(challenge.key_authorization().as_str().to_owned()),
                );
                tokens.push(challenge.token.clone());
                challenge.set_ready().await.map_err(acme)?;
            }
            let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
            let status = order.poll_ready(&retry).await.map_err(acme)?;
            if status != OrderStatus::Ready {
                let detail = order
                    .state()
                    .error
                    .as_ref()
                    .map_or_else(|| "no detail".to_owned(), |p| p.to_string());
                return Err(AcmeError::Order {
                    host: host.to_owned(),
                    status: format!("{status:?}"),
                    detail,
                });
            }
            let key_pem = order.finalize().await.map_err(acme)?;
            let cert_pem = order.poll_certificate(&retry).await.map_err(acme)?;
            Ok((cert_pem, key_pem))
        }
        .await;
        for token in tokens {
            self.challenges.set(token, None);
        }
        result
    }
}

/// Writes `data` to `path` in `dir` (created 0700) atomically: through a temp name of its
/// own (`NAME.tmp`, so a certificate and its key never share one), created afresh with
/// mode 0600 so the bytes are never readable by others, not even for a moment, whatever
/// an earlier crash left behind; then fsync, rename, fsync of the directory.
fn write_private(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A stale temp file may carry other permissions: never write into it.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// True when the first certificate in `cert_pem` expires within [`RENEW_BEFORE`] of `now`,
/// or cannot be read at all.
pub fn needs_renewal(cert_pem: &[u8], now: SystemTime) -> bool {
    let Some(Ok(der)) = rustls_pemfile::certs(&mut &cert_pem[..]).next() else {
        return true;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return true;
    };
    let not_after = cert.validity().not_after.timestamp();
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    not_after - now < RENEW_BEFORE.as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Certificate, key and account are written through distinct temp names, mode 0600 from
    /// creation: a stale world-readable temp file from an earlier crash is not reused.
    #[test]
    fn cache_files_are_private_from_creation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("certs");
        let crt = cache.join("a.test.crt");
        let key = cache.join("a.test.key");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("a.test.key.tmp"), "stale").unwrap();
        std::fs::set_permissions(
            cache.join("a.test.key.tmp"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        write_private(&cache, &crt, b"cert").unwrap();
        write_private(&cache, &key, b"key").unwrap();
        assert_eq!(std::fs::read(&crt).unwrap(), b"cert");
        assert_eq!(std::fs::read(&key).unwrap(), b"key");
        for path in [&crt, &key] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        assert!(!cache.join("a.test.key.tmp").exists());
    }

    /// A certificate is renewed once it is within 30 days of expiry, not before.
    #[test]
    fn renews_thirty_days_before_expiry() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let at = |y: i32, m: u8, d: u8| -> SystemTime {
            let date =
                time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap();
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(date.midnight().assume_utc().unix_timestamp() as u64)
        };
        assert!(!needs_renewal(pem.as_bytes(), at(2029, 12, 1)));
        assert!(needs_renewal(pem.as_bytes(), at(2030, 1, 15)));
        assert!(needs_renewal(b"not a pem", at(2029, 1, 1)));
    }
}
