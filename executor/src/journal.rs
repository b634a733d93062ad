//! The executor's memory of finished jobs (keyed by job id and issue time): for each, the
//! exact reports it published, kept until the job expires. A job delivered again (a duplicate, a redelivery after a lost ack,
//! a replay) is never run twice: its recorded reports are published again, byte for byte.
//! It also keeps the newest job generation this host applied in each scope (a service and
//! destination), written before the job runs: a job of a lower generation in its scope is
//! refused, across restarts, and when that cannot be written the job does not run (fail
//! closed).
//! Stored as JSON in the state directory (mode 0600), replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use flotilla_events::Timestamp;
use serde::{Deserialize, Serialize};

/// The journal file cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("job journal {path}: {message}")]
pub struct JournalError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    expires_at_ms: i64,
    /// Each report as published (base64 of its wire bytes).
    reports: Vec<String>,
}

/// The file's shape.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// The newest job generation applied here, per scope.
    generations: BTreeMap<String, u64>,
    jobs: BTreeMap<String, Entry>,
}

/// What a journal file may hold: this shape, or the finished jobs alone (written before
/// generations existed: every scope starts at zero).
#[derive(Deserialize)]
#[serde(untagged)]
enum OnDisk {
    Current(Stored),
    JobsOnly(BTreeMap<String, Entry>),
}

/// Finished jobs by id, and the newest generation applied.
#[derive(Debug, Default)]
pub struct Journal {
    path: Option<PathBuf>,
    entries: BTreeMap<String, Entry>,
    generations: BTreeMap<String, u64>,
}

/// A job older than the newest this host applied in its scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job generation {job} is older than {applied}, the newest this host applied for {scope}")]
pub struct Stale {
    pub scope: String,
    pub job: u64,
    pub applied: u64,
}

impl Journal {
    /// A journal kept in memory only (tests, benchmarks).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Loads the journal at `path` (empty if there is none yet).
    pub fn load(path: &Path) -> Result<Self, JournalError> {
        let err = |message: String| JournalError {
            path: path.to_owned(),
            message,
        };
        let stored = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))? {
                OnDisk::Current(s) => s,
                OnDisk::JobsOnly(jobs) => Stored {
                    jobs,
                    ..Stored::default()
                },
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Self {
            path: Some(path.to_owned()),
            entries: stored.jobs,
            generations: stored.generations,
        })
    }

    /// The newest generation applied here in `scope` (0: none yet).
    pub fn generation(&self, scope: &str) -> u64 {
        self.generations.get(scope).copied().unwrap_or(0)
    }

    /// Admits a job of `generation` in `scope` before it runs: refuses it if older than the
    /// newest applied there, else makes it the newest, durably. An error means the job must
    /// not run.
    pub fn begin(
        &mut self,
        scope: &str,
        generation: u64,
    ) -> Result<Result<(), Stale>, JournalError> {
        let applied = self.generation(scope);
        if generation < applied {
            return Ok(Err(Stale {
                scope: scope.to_owned(),
                job: generation,
                applied,
            }));
        }
        if generation > applied {
            self.generations.insert(scope.to_owned(), generation);
            if let Err(e) = self.save() {
                if applied == 0 {
                    self.generations.remove(scope);
                } else {
                    self.generations.insert(scope.to_owned(), applied);
                }
                return Err(e);
            }
        }
        Ok(Ok(()))
    }

    /// The reports of finished job `id`, as published.
    pub fn finished(&self, id: &str) -> Option<Vec<Vec<u8>>> {
        self.entries.get(id).map(|e| {
            e.reports
                .iter()
                .filter_map(|r| B64.decode(r).ok())
                .collect()
        })
    }

    /// Records a finished job and forgets expired ones; durable when this returns.
    pub fn record(
        &mut self,
        id: &str,
        expires_at: Timestamp,
        reports: &[Vec<u8>],
    ) -> Result<(), JournalError> {
        let now = Timestamp::now().unix_ms();
        self.entries.retain(|_, e| e.expires_at_ms >= now);
        self.entries.insert(
            id.to_owned(),
            Entry {
                expires_at_ms: expires_at.unix_ms(),
                reports: reports.iter().map(|r| B64.encode(r)).collect(),
            },
        );
        self.save()
    }

    fn save(&self) -> Result<(), JournalError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |e: std::io::Error| JournalError {
            path: path.clone(),
            message: e.to_string(),
        };
        let stored = StoredRef {
            generations: &self.generations,
            jobs: &self.entries,
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| JournalError {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(&bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// [`Stored`] borrowed, for writing.
#[derive(Serialize)]
struct StoredRef<'a> {
    generations: &'a BTreeMap<String, u64>,
    jobs: &'a BTreeMap<String, Entry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished job survives a restart (reload from disk) with its exact report bytes;
    /// expired jobs are forgotten.
    #[test]
    fn survives_restart_and_forgets_expired() {
        let dir = std::env::temp_dir().join(format!("flotilla-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jobs.json");
        let _ = std::fs::remove_file(&path);
        let mut j = Journal::load(&path).unwrap();
        let later = Timestamp::from_unix_ms(Timestamp::now().unix_ms() + 60_000);
        let past = Timestamp::from_unix_ms(1);
        j.record("old", past, &[vec![1]]).unwrap();
        j.record("a", later, &[vec![1, 2, 3], vec![4]]).unwrap();
        let j = Journal::load(&path).unwrap();
        assert_eq!(j.finished("a"), Some(vec![vec![1, 2, 3], vec![4]]));
        assert_eq!(j.finished("old"), None);
        assert_eq!(j.finished("b"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A job older than the newest applied in its scope is refused, also after a restart;
    /// a job of the same generation (a redelivery or resume of it) is admitted, and another
    /// service's older job too; when the generation cannot be written the job is not admitted
    /// and the journal is unchanged. A journal written before generations existed loads.
    #[test]
    fn generations_only_grow_and_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.json");
        let mut j = Journal::load(&path).unwrap();
        assert_eq!(j.begin("app", 10).unwrap(), Ok(()));
        assert_eq!(j.begin("app", 10).unwrap(), Ok(()));
        assert_eq!(j.begin("other", 5).unwrap(), Ok(()));
        let mut j = Journal::load(&path).unwrap();
        assert_eq!(j.generation("app"), 10);
        assert_eq!(
            j.begin("app", 9).unwrap(),
            Err(Stale {
                scope: "app".into(),
                job: 9,
                applied: 10
            })
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A journal whose directory is gone cannot be written: fail closed.
        let mut broken = Journal::load(&dir.path().join("gone/jobs.json")).unwrap();
        assert!(broken.begin("app", 11).is_err());
        assert_eq!(broken.generation("app"), 0);
        // A journal from before generations loads with its finished jobs.
        let old = dir.path().join("old.json");
        std::fs::write(&old, r#"{"k@1":{"expires_at_ms":1,"reports":["AQ=="]}}"#).unwrap();
        let old = Journal::load(&old).unwrap();
        assert_eq!(old.generation("app"), 0);
        assert_eq!(old.finished("k@1"), Some(vec![vec![1]]));
    }
}
