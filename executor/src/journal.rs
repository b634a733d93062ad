//! The executor's memory of finished jobs (keyed by job id and issue time): for each, the
//! exact reports it published, kept until the job expires. A job delivered again (a duplicate, a redelivery after a lost ack,
//! a replay) is never run twice: its recorded reports are published again, byte for byte.
//! Stored as JSON in the state directory, replaced atomically.

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

/// Finished jobs by id.
#[derive(Debug, Default)]
pub struct Journal {
    path: Option<PathBuf>,
    entries: BTreeMap<String, Entry>,
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
        let entries = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Self {
            path: Some(path.to_owned()),
            entries,
        })
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
        let bytes = serde_json::to_vec(&self.entries).map_err(|e| JournalError {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }
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
}
