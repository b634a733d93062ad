//! Certificates by server name (SNI): static PEM files and ACME-issued ones share one store.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

/// Host name to certificate; what the HTTPS listener presents.
#[derive(Debug, Default)]
pub struct CertStore {
    by_host: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Presents `key` for every name in `hosts`.
    pub fn insert(&self, hosts: &[String], key: Arc<CertifiedKey>) {
        let mut map = match self.by_host.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for host in hosts {
            map.insert(host.to_ascii_lowercase(), Arc::clone(&key));
        }
    }

    pub fn remove(&self, hosts: &[String]) {
        let mut map = match self.by_host.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for host in hosts {
            map.remove(&host.to_ascii_lowercase());
        }
    }

    pub fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let map = match self.by_host.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.get(&host.to_ascii_lowercase()).cloned()
    }

    /// The rustls server configuration presenting this store's certificates, HTTP/2 preferred.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Invalid {
                    what: "tls configuration".into(),
                    message: e.to_string(),
                })?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless session tickets (nginx's default): a returning client resumes without a
        // key exchange and signature, however many clients came in between; rustls's own
        // default remembers 256 sessions per process. Keys rotate every 6 hours (rustls).
        config.ticketer = aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Invalid {
            what: "tls session tickets".into(),
            message: e.to_string(),
        })?;
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get(hello.server_name()?)
    }
}

/// Builds a signing certificate from PEM text: the chain, leaf first, and its private key.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        what: what.to_owned(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("bad certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("no certificate in PEM".into()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| invalid(format!("bad key PEM: {e}")))?
        .ok_or_else(|| invalid("no private key in PEM".into()))?;
    let key = CertifiedKey::from_der(chain, key, &aws_lc_rs::default_provider())
        .map_err(|e| invalid(format!("certificate and key do not form a pair: {e}")))?;
    Ok(Arc::new(key))
}

/// Reads a static certificate and key from PEM files.
pub fn load_files(cert_path: &str, key_path: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &str| {
        std::fs::read(Path::new(p)).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    certified_key(&read(cert_path)?, &read(key_path)?, cert_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated certificate loads and is found by any case of its host name; a key
    /// that does not match the certificate is refused.
    #[test]
    fn loads_pairs_and_refuses_mismatches() {
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let key = certified_key(
            a.cert.pem().as_bytes(),
            a.signing_key.serialize_pem().as_bytes(),
            "a",
        )
        .unwrap();
        let store = CertStore::new();
        store.insert(&["a.test".into()], key);
        assert!(store.get("A.TEST").is_some());
        let e = certified_key(
            a.cert.pem().as_bytes(),
            b.signing_key.serialize_pem().as_bytes(),
            "a.pem",
        )
        .unwrap_err();
        assert!(e.to_string().contains("do not form a pair"), "{e}");
    }
}
