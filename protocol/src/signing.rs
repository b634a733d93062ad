//! Job signatures: the scheduler signs every job with its ed25519 key; an executor
//! admits a job only if it verifies against the key it was installed with, is for this
//! host, and has not expired. Anything else is refused with a [`Refusal`] saying why, or,
//! for bytes that are not a job at all, reported as garbage for the transport to terminate.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use flotilla_events::Timestamp;

use crate::subjects::token;
use crate::wire::{self, Job, Refusal, RefusalReason, SignedJob, WireError};

/// Domain separation: a signature over a job can never be mistaken for one over anything else.
pub const JOB_SIGNING_CONTEXT: &[u8] = b"flotilla job v1\0";

/// How long a job the scheduler issues stays valid, and the longest validity an executor
/// accepts (one number, so the window an attacker could replay in is no wider than what the
/// scheduler needs): an hour covers a host's whole rollout, waiting for its batch included.
/// The executor remembers completed jobs at least this long, so a job can never run twice:
/// within its validity it is remembered, after it is expired.
pub const MAX_JOB_VALIDITY: Duration = Duration::from_secs(3600);

/// A key that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("key must be 32 bytes, found {0}")]
    Length(usize),
    #[error("not a valid ed25519 public key")]
    Invalid,
}

fn key_bytes(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = B64.decode(text.trim())?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// The scheduler's signing key.
pub struct JobSigner {
    key: SigningKey,
}

impl std::fmt::Debug for JobSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobSigner(public {})", self.public_key_base64())
    }
}

impl JobSigner {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The key from its base64 secret (as [`JobSigner::secret_base64`] wrote it).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self {
            key: SigningKey::from_bytes(&key_bytes(text)?),
        })
    }

    /// The secret key as base64, for the scheduler's key file (mode 0600).
    pub fn secret_base64(&self) -> String {
        B64.encode(self.key.to_bytes())
    }

    /// The public key as base64: what `flotilla executor run --scheduler-key` takes.
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.key.verifying_key().to_bytes())
    }

    /// The NATS payload of `job`: `encode(SignedJob)` with the signature filled in.
    pub fn sign(&self, job: &Job) -> Result<Vec<u8>, WireError> {
        let job = wire::encode(job)?;
        let signature = self.key.sign(&signed_bytes(&job)).to_bytes().to_vec();
        wire::encode(&SignedJob { job, signature })
    }
}

fn signed_bytes(job: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(JOB_SIGNING_CONTEXT.len() + job.len());
    msg.extend_from_slice(JOB_SIGNING_CONTEXT);
    msg.extend_from_slice(job);
    msg
}

/// What the executor does with a message from its job subject.
#[derive(Debug)]
pub enum Admission {
    /// Verified: run it.
    Accept(Job),
    /// A job, but not one to run: report why.
    Refuse(Refusal),
    /// Not a job at all: terminate the message with a log line.
    Garbage(WireError),
}

/// Checks jobs against the scheduler's public key and this host's id.
#[derive(Debug, Clone)]
pub struct JobVerifier {
    key: VerifyingKey,
    host: String,
}

impl JobVerifier {
    /// A verifier for `host` trusting the base64 ed25519 public key `scheduler_key`.
    pub fn new(scheduler_key: &str, host: &str) -> Result<Self, KeyError> {
        let key =
            VerifyingKey::from_bytes(&key_bytes(scheduler_key)?).map_err(|_| KeyError::Invalid)?;
        Ok(Self {
            key,
            host: host.to_owned(),
        })
    }

    /// Decides what to do with `payload` at time `now`.
    pub fn admit(&self, payload: &[u8], now: Timestamp) -> Admission {
        let signed: SignedJob = match wire::decode(payload) {
            Ok(s) => s,
            Err(e) => return Admission::Garbage(e),
        };
        let job: Job = match wire::decode(&signed.job) {
            Ok(j) => j,
            Err(e) => return Admission::Garbage(e),
        };
        let refuse = |reason, detail: String| {
            Admission::Refuse(Refusal {
                job_id: job.id.clone(),
                deploy_id: job.deploy_id.to_string(),
                host: self.host.clone(),
                reason,
                detail,
                at: now,
            })
        };
        if signed.signature.is_empty() {
            return refuse(RefusalReason::Unsigned, "job is not signed".into());
        }
        let verified = Signature::from_slice(&signed.signature)
            .ok()
            .is_some_and(|sig| self.key.verify(&signed_bytes(&signed.job), &sig).is_ok());
        if !verified {
            return refuse(
                RefusalReason::BadSignature,
                "signature does not verify with the scheduler key this executor trusts".into(),
            );
        }
        if token(&job.host) != token(&self.host) {
            return refuse(
                RefusalReason::WrongHost,
                format!("job is for host {:?}, this is {:?}", job.host, self.host),
            );
        }
        if now > job.expires_at {
            return refuse(
                RefusalReason::Expired,
                format!("job expired at {}", job.expires_at),
            );
        }
        let max_ms = MAX_JOB_VALIDITY.as_millis() as i64;
        if job.expires_at.millis_since(now) > max_ms {
            return refuse(
                RefusalReason::ExpiryTooFar,
                format!(
                    "job expires at {}, more than {}s from now",
                    job.expires_at,
                    MAX_JOB_VALIDITY.as_secs()
                ),
            );
        }
        Admission::Accept(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_events::DeployId;

    fn job(host: &str, expires_in_ms: i64) -> Job {
        let now = Timestamp::now();
        Job {
            id: "01JOB".into(),
            deploy_id: DeployId::from("01DEPLOY"),
            host: host.into(),
            issued_at: now,
            expires_at: Timestamp::from_unix_ms(now.unix_ms() + expires_in_ms),
            generation: 1,
            scope: "app".into(),
            steps: vec![],
        }
    }

    fn reason(a: Admission) -> Option<RefusalReason> {
        match a {
            Admission::Refuse(r) => Some(r.reason),
            _ => None,
        }
    }

    /// A job signed by the trusted key, for this host, unexpired, is accepted; unsigned,
    /// forged, wrong-host, expired and too-long-lived jobs are refused with the reason;
    /// garbage is not mistaken for a job.
    #[test]
    fn admits_only_verified_jobs_for_this_host() {
        let signer = JobSigner::generate();
        let verifier = JobVerifier::new(&signer.public_key_base64(), "10.0.0.5").unwrap();
        let now = Timestamp::now();
        let ok = signer.sign(&job("10-0-0-5", 60_000)).unwrap();
        assert!(matches!(verifier.admit(&ok, now), Admission::Accept(_)));

        let unsigned = wire::encode(&SignedJob {
            job: wire::encode(&job("10.0.0.5", 60_000)).unwrap(),
            signature: vec![],
        })
        .unwrap();
        assert_eq!(
            reason(verifier.admit(&unsigned, now)),
            Some(RefusalReason::Unsigned)
        );

        let forged = JobSigner::generate()
            .sign(&job("10.0.0.5", 60_000))
            .unwrap();
        assert_eq!(
            reason(verifier.admit(&forged, now)),
            Some(RefusalReason::BadSignature)
        );

        // A valid signature over a job whose bytes were altered afterwards does not verify.
        let mut signed: SignedJob = wire::decode(&ok).unwrap();
        let mut tampered: Job = wire::decode(&signed.job).unwrap();
        tampered.host = "10.0.0.6".into();
        signed.job = wire::encode(&tampered).unwrap();
        let tampered = wire::encode(&signed).unwrap();
        assert_eq!(
            reason(verifier.admit(&tampered, now)),
            Some(RefusalReason::BadSignature)
        );

        let other = signer.sign(&job("10.0.0.6", 60_000)).unwrap();
        assert_eq!(
            reason(verifier.admit(&other, now)),
            Some(RefusalReason::WrongHost)
        );

        let expired = signer.sign(&job("10.0.0.5", -10_000)).unwrap();
        assert_eq!(
            reason(verifier.admit(&expired, now)),
            Some(RefusalReason::Expired)
        );

        let forever = signer.sign(&job("10.0.0.5", 2 * 3600 * 1000)).unwrap();
        assert_eq!(
            reason(verifier.admit(&forever, now)),
            Some(RefusalReason::ExpiryTooFar)
        );

        assert!(matches!(
            verifier.admit(b"garbage", now),
            Admission::Garbage(_)
        ));
        assert!(matches!(
            verifier.admit(&[7, 1, 2], now),
            Admission::Garbage(WireError::UnknownVersion(7))
        ));
    }

    /// Keys round-trip through their base64 text forms; a bad key is a clear error.
    #[test]
    fn keys_round_trip() {
        let signer = JobSigner::generate();
        let again = JobSigner::from_base64(&signer.secret_base64()).unwrap();
        assert_eq!(again.public_key_base64(), signer.public_key_base64());
        assert!(JobVerifier::new("not base64!", "h").is_err());
        assert!(matches!(
            JobVerifier::new("AAAA", "h"),
            Err(KeyError::Length(3))
        ));
    }
}
