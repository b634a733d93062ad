//! Host keys checked against OpenSSH's known_hosts files, read the way `ssh` reads them:
//! plain and hashed (`|1|salt|hash`) host fields, comma-separated patterns with `*`/`?` and
//! `!` negation, `[host]:port` for ports other than 22, and the `@revoked` and
//! `@cert-authority` markers (a CA line vouches for certificates only, never for a plain key).
//!
//! The checker never writes a file: a key it does not know is an error that says how to
//! accept it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};

use crate::error::HostKeyError;
use crate::{Error, openssh_config::glob};

/// The name known_hosts stores for a host: `host` on port 22, `[host]:port` otherwise.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// A key's fingerprint as OpenSSH prints it: `SHA256:` and unpadded base64.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Clone, Debug)]
enum Hosts {
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    Patterns(Vec<String>),
}

#[derive(Clone, Debug)]
struct Entry {
    marker: Marker,
    hosts: Hosts,
    key: PublicKey,
    path: PathBuf,
    line: usize,
}

/// The entries of the known_hosts files that name one host, read before connecting so the
/// handshake does no file I/O and the client can prefer the key algorithms already known.
#[derive(Clone, Debug)]
pub struct KnownHosts {
    /// The name looked up (`host` or `[host]:port`).
    name: String,
    entries: Vec<Entry>,
    /// The file an accepted key should be appended to (the first user file).
    user_file: PathBuf,
    /// How to fetch the key again: `ssh-keyscan -p PORT HOST` for hosts reached directly;
    /// `None` for hosts behind a proxy, where the accept command is the exact line instead.
    keyscan: Option<String>,
}

impl KnownHosts {
    /// Reads `files` (missing files are empty, as for OpenSSH) for the entries naming `host`
    /// on `port`. `user_file` is where an accept command appends; `direct` says whether this
    /// machine reaches the host itself (so `ssh-keyscan` can fetch its key).
    pub fn load(
        files: &[PathBuf],
        host: &str,
        port: u16,
        user_file: &Path,
        direct: bool,
    ) -> Result<KnownHosts, Error> {
        let name = host_name(host, port);
        let mut entries = Vec::new();
        for path in files {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Read {
                        path: path.clone(),
                        source,
                    });
                }
            };
            for (i, raw) in text.lines().enumerate() {
                // A line that does not parse is skipped, as ssh does (it may be a key type
                // this client does not know).
                if let Some(entry) = parse_line(raw, path, i + 1)
                    && entry.hosts.matches(&name)
                {
                    entries.push(entry);
                }
            }
        }
        let keyscan = direct.then(|| {
            if port == 22 {
                format!("ssh-keyscan {host}")
            } else {
                format!("ssh-keyscan -p {port} {host}")
            }
        });
        Ok(KnownHosts {
            name,
            entries,
            user_file: user_file.to_owned(),
            keyscan,
        })
    }

    /// The algorithms of the plain keys known for this host, to offer them first in the key
    /// exchange (as OpenSSH does), so a host known by its ECDSA key is not refused for
    /// presenting an Ed25519 one.
    pub fn known_algorithms(&self) -> Vec<russh::keys::Algorithm> {
        let mut out = Vec::new();
        for e in &self.entries {
            if e.marker == Marker::None && !out.contains(&e.key.algorithm()) {
                out.push(e.key.algorithm());
            }
        }
        out
    }

    /// Accepts `key` only if a plain entry for this host holds it and no `@revoked` line
    /// names it; otherwise the error says why and what to run.
    pub fn check(&self, key: &PublicKey) -> Result<(), HostKeyError> {
        let fp = fingerprint(key);
        if let Some(r) = self
            .entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key.key_data() == key.key_data())
        {
            return Err(HostKeyError::Revoked {
                host: self.name.clone(),
                fingerprint: fp,
                revoked_at: format!("{}:{}", r.path.display(), r.line),
            });
        }
        let plain = || self.entries.iter().filter(|e| e.marker == Marker::None);
        if plain().any(|e| e.key.key_data() == key.key_data()) {
            return Ok(());
        }
        let algorithm = key.algorithm().as_str().to_owned();
        let same_kind: Vec<&Entry> = plain()
            .filter(|e| e.key.algorithm() == key.algorithm())
            .collect();
        let append = self.append_command(key);
        if same_kind.is_empty() {
            return Err(HostKeyError::Unknown {
                host: self.name.clone(),
                algorithm,
                fingerprint: fp,
                accept: append,
            });
        }
        let known_at = same_kind
            .iter()
            .map(|e| format!("{}:{}", e.path.display(), e.line))
            .collect::<Vec<_>>()
            .join(", ");
        let mut files: Vec<&Path> = same_kind.iter().map(|e| e.path.as_path()).collect();
        files.dedup();
        let remove = files
            .iter()
            .map(|f| format!("ssh-keygen -R '{}' -f {}", self.name, f.display()))
            .collect::<Vec<_>>()
            .join(" && ");
        Err(HostKeyError::Changed {
            host: self.name.clone(),
            algorithm,
            fingerprint: fp,
            known_at,
            accept: format!("{remove} && {append}"),
        })
    }

    fn append_command(&self, key: &PublicKey) -> String {
        let file = self.user_file.display();
        match &self.keyscan {
            Some(scan) => format!("{scan} >> {file}"),
            None => {
                let line = key.to_openssh().unwrap_or_default();
                format!("echo '{} {line}' >> {file}", self.name)
            }
        }
    }
}

fn parse_line(raw: &str, path: &Path, line: usize) -> Option<Entry> {
    let mut fields = raw.split_whitespace();
    let mut first = fields.next()?;
    if first.starts_with('#') {
        return None;
    }
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let hosts = Hosts::parse(first)?;
    let kind = fields.next()?;
    let data = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{kind} {data}")).ok()?;
    Some(Entry {
        marker,
        hosts,
        key,
        path: path.to_owned(),
        line,
    })
}

impl Hosts {
    fn parse(field: &str) -> Option<Hosts> {
        if let Some(rest) = field.strip_prefix("|1|") {
            let (salt, hash) = rest.split_once('|')?;
            let b64 = base64::engine::general_purpose::STANDARD;
            return Some(Hosts::Hashed {
                salt: b64.decode(salt).ok()?,
                hash: b64.decode(hash).ok()?,
            });
        }
        Some(Hosts::Patterns(
            field.split(',').map(str::to_owned).collect(),
        ))
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let mut matched = false;
                for p in patterns {
                    if let Some(neg) = p.strip_prefix('!') {
                        if glob(neg, name) {
                            return false;
                        }
                    } else if glob(p, name) {
                        matched = true;
                    }
                }
                matched
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Public keys only: test data, no secret.
    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO/JyHtiCrjnViQ+B7dQ+BePIkveiZ6yLMlJyw2gq1Ug";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHEBOQYEtY/UTp57C0fZ+kd0dRQob0KdPODOlW1ZsTID";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn load(text: &str, host: &str, port: u16) -> KnownHosts {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, text).unwrap();
        KnownHosts::load(std::slice::from_ref(&path), host, port, &path, true).unwrap()
    }

    /// A hashed entry made by `ssh-keygen -H` (HMAC-SHA1 of `[host]:port`) is recognised.
    #[test]
    fn hashed_entry_with_port_matches() {
        // |1|salt|HMAC-SHA1(salt, "[10.0.0.5]:2222"), computed here the way ssh-keygen does.
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[10.0.0.5]:2222");
        let b64 = base64::engine::general_purpose::STANDARD;
        let line = format!(
            "|1|{}|{} {ED_A}\n",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        assert!(load(&line, "10.0.0.5", 2222).check(&key(ED_A)).is_ok());
        assert!(matches!(
            load(&line, "10.0.0.5", 22).check(&key(ED_A)),
            Err(HostKeyError::Unknown { .. })
        ));
    }

    /// An unknown host is refused with the fingerprint and the keyscan command to accept it.
    #[test]
    fn unknown_host_says_how_to_accept() {
        let kh = load(&format!("other {ED_A}\n"), "web1", 2222);
        let err = kh.check(&key(ED_A)).unwrap_err();
        let HostKeyError::Unknown {
            host,
            fingerprint: fp,
            accept,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(host, "[web1]:2222");
        assert_eq!(fp, &fingerprint(&key(ED_A)));
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='));
        assert!(
            accept.starts_with("ssh-keyscan -p 2222 web1 >> "),
            "{accept}"
        );
    }

    /// A different key of the same algorithm is a changed key, with `ssh-keygen -R` to fix it.
    #[test]
    fn changed_key_is_refused_with_location() {
        let kh = load(&format!("# c\nweb1,web2 {ED_A}\n"), "web2", 22);
        let err = kh.check(&key(ED_B)).unwrap_err();
        let HostKeyError::Changed {
            known_at, accept, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert!(known_at.ends_with("known_hosts:2"), "{known_at}");
        assert!(accept.starts_with("ssh-keygen -R 'web2' -f "), "{accept}");
        assert!(accept.contains("&& ssh-keyscan web2 >> "), "{accept}");
    }

    /// `@revoked` wins over a plain entry; `@cert-authority` never vouches for a plain key;
    /// negated patterns exclude.
    #[test]
    fn markers_and_negation() {
        let text = format!("web* {ED_A}\n@revoked * {ED_A}\n");
        assert!(matches!(
            load(&text, "web1", 22).check(&key(ED_A)),
            Err(HostKeyError::Revoked { .. })
        ));
        let ca = format!("@cert-authority * {ED_A}\n");
        assert!(load(&ca, "web1", 22).check(&key(ED_A)).is_err());
        let neg = format!("web*,!web3 {ED_A}\n");
        assert!(load(&neg, "web1", 22).check(&key(ED_A)).is_ok());
        assert!(load(&neg, "web3", 22).check(&key(ED_A)).is_err());
    }
}
