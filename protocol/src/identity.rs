//! A host executor's identity: its x25519 sealing key (secrets for the host are sealed to it)
//! and its ed25519 signing key (every report it publishes is signed with it). The executor
//! makes both on first start, keeps the secret halves in its state directory (mode 0600) and
//! writes the public halves to [`PUBLIC_FILE`] there, which setup reads back over SSH and
//! records in the event log (`HostEnrolled`). The scheduler trusts only enrolled keys: a
//! heartbeat never carries key material.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::sealing::{HostKey, SealError};
use crate::signing::KeyError;

/// The public identity file in the executor's state directory (mode 0644: public keys).
pub const PUBLIC_FILE: &str = "identity.pub";
/// The sealing secret key file in the executor's state directory (mode 0600).
pub const SEALING_FILE: &str = "host.key";
/// The signing secret key file in the executor's state directory (mode 0600).
pub const SIGNING_FILE: &str = "signing.key";

/// Domain separation: a report signature can never be taken for a job's or anything else's.
pub const REPORT_SIGNING_CONTEXT: &[u8] = b"flotilla report v1\0";

/// The public halves of an executor's keys, as enrolled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIdentity {
    /// Base64 x25519 public key: what secrets for this host are sealed to.
    pub sealing_key: String,
    /// Base64 ed25519 public key: what this host's reports verify against.
    pub signing_key: String,
}

/// `identity.pub` that is not a public identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity file is not valid JSON of sealing_key and signing_key")]
    Json(#[source] serde_json::Error),
    #[error("signing key")]
    SigningKey(#[source] KeyError),
    #[error("sealing key")]
    SealingKey(#[source] SealError),
}

impl PublicIdentity {
    /// Parses `identity.pub` and checks both keys are well-formed.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        let id: PublicIdentity = serde_json::from_str(text).map_err(IdentityError::Json)?;
        ReportVerifier::new(&id.signing_key).map_err(IdentityError::SigningKey)?;
        crate::sealing::check_public_key(&id.sealing_key).map_err(IdentityError::SealingKey)?;
        Ok(id)
    }

    /// The file's text (one line of JSON).
    pub fn to_json(&self) -> String {
        // Two strings always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The executor's report-signing key.
pub struct ReportSigner {
    key: SigningKey,
}

impl std::fmt::Debug for ReportSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReportSigner(public {})", self.public_key_base64())
    }
}

impl ReportSigner {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The key from its stored form ([`ReportSigner::secret_base64`]).
    pub fn from_secret_base64(text: &str) -> Result<Self, KeyError> {
        let raw = Zeroizing::new(B64.decode(text.trim())?);
        let bytes =
            <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| KeyError::Length(raw.len()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// The secret key as base64, for the key file only.
    pub fn secret_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.key.to_bytes()))
    }

    /// The public key as base64: what is enrolled.
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.key.verifying_key().to_bytes())
    }

    /// The signature over `report` (the encoded report bytes).
    pub fn sign(&self, report: &[u8]) -> Vec<u8> {
        self.key.sign(&signed_bytes(report)).to_bytes().to_vec()
    }
}

/// The public identity of a host whose keys are `sealing` and `signing`.
pub fn public_identity(sealing: &HostKey, signing: &ReportSigner) -> PublicIdentity {
    PublicIdentity {
        sealing_key: sealing.public_key_base64(),
        signing_key: signing.public_key_base64(),
    }
}

/// Checks report signatures against one host's enrolled signing key.
#[derive(Clone, Debug)]
pub struct ReportVerifier {
    key: VerifyingKey,
}

impl ReportVerifier {
    /// A verifier for the base64 ed25519 public key `signing_key`.
    pub fn new(signing_key: &str) -> Result<Self, KeyError> {
        let raw = B64.decode(signing_key.trim())?;
        let bytes =
            <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| KeyError::Length(raw.len()))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Invalid)?;
        Ok(Self { key })
    }

    /// Whether `signature` is this key's signature over `report`.
    pub fn verify(&self, report: &[u8], signature: &[u8]) -> bool {
        Signature::from_slice(signature)
            .ok()
            .is_some_and(|sig| self.key.verify(&signed_bytes(report), &sig).is_ok())
    }
}

fn signed_bytes(report: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(REPORT_SIGNING_CONTEXT.len() + report.len());
    msg.extend_from_slice(REPORT_SIGNING_CONTEXT);
    msg.extend_from_slice(report);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report verifies only with the signing host's key and only over the exact bytes.
    #[test]
    fn reports_verify_with_the_signers_key_only() {
        let signer = ReportSigner::generate();
        let verifier = ReportVerifier::new(&signer.public_key_base64()).unwrap();
        let sig = signer.sign(b"report");
        assert!(verifier.verify(b"report", &sig));
        assert!(!verifier.verify(b"reporT", &sig));
        assert!(!verifier.verify(b"report", &[]));
        let other = ReportSigner::generate().sign(b"report");
        assert!(!verifier.verify(b"report", &other));
        // A job signature over the same bytes is not a report signature (domain separation).
        let again = ReportSigner::from_secret_base64(&signer.secret_base64()).unwrap();
        assert_eq!(again.public_key_base64(), signer.public_key_base64());
    }

    /// The identity file round-trips; a file with a bad key is refused, not enrolled.
    #[test]
    fn identity_file_round_trips_and_checks_keys() {
        let id = public_identity(&HostKey::generate(), &ReportSigner::generate());
        assert_eq!(PublicIdentity::parse(&id.to_json()).unwrap(), id);
        let bad = PublicIdentity {
            signing_key: "AAAA".into(),
            ..id.clone()
        };
        assert!(matches!(
            PublicIdentity::parse(&bad.to_json()),
            Err(IdentityError::SigningKey(_))
        ));
        let bad = PublicIdentity {
            sealing_key: "not base64!".into(),
            ..id
        };
        assert!(matches!(
            PublicIdentity::parse(&bad.to_json()),
            Err(IdentityError::SealingKey(_))
        ));
        assert!(PublicIdentity::parse("{}").is_err());
    }
}
