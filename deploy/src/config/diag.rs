//! Located diagnostics: what went wrong, where (file, line, column) and under which key.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a source file, 1-based. `line == 0` means "the file as a whole".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    /// The start of a file, used for errors about something that is missing.
    pub const START: Pos = Pos { line: 1, column: 1 };
}

/// One problem found while loading a configuration.
///
/// Rendered as `FILE:LINE:COLUMN: KEY/PATH: MESSAGE` so editors and terminals can jump to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in, as the user named it (relative to the project root).
    pub file: PathBuf,
    pub pos: Pos,
    /// The path-qualified key, e.g. `servers/web/hosts/1`; empty for file-level problems.
    pub key: String,
    /// What is wrong and what was expected, lowercase, no trailing period.
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &Path, pos: Pos, key: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            pos,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.column)?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a configuration, in file and position order.
///
/// Loading does not stop at the first problem: the user fixes them all in one pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigErrors {
    pub(crate) fn one(d: Diagnostic) -> Self {
        ConfigErrors {
            diagnostics: vec![d],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        write!(
            f,
            "invalid configuration ({n} error{})",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// A collector that sorts and deduplicates diagnostics before they are handed out.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    pub list: Vec<Diagnostic>,
}

impl Diags {
    pub fn push(&mut self, d: Diagnostic) {
        self.list.push(d);
    }

    pub fn into_result<T>(mut self, value: T) -> Result<T, ConfigErrors> {
        if self.list.is_empty() {
            return Ok(value);
        }
        self.list
            .sort_by(|a, b| (&a.file, a.pos, &a.key).cmp(&(&b.file, b.pos, &b.key)));
        self.list.dedup();
        Err(ConfigErrors {
            diagnostics: self.list,
        })
    }
}

/// The known name closest to `unknown`, if it is close enough to be a plausible typo, or the
/// known name `unknown` spells out (`command` for `cmd`).
pub fn did_you_mean<'a>(
    unknown: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let known: Vec<&str> = known.into_iter().collect();
    let mut best: Option<(usize, &str)> = None;
    for &k in &known {
        let d = levenshtein(unknown, k);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    let (d, k) = best?;
    // One edit per three characters, at least one, reads as a typo rather than another word.
    let limit = (unknown.chars().count() / 3).max(1);
    if d <= limit || k.contains(unknown) && unknown.len() >= 3 {
        return Some(k);
    }
    known
        .into_iter()
        .find(|k| k.len() >= 3 && is_abbreviation(k, unknown))
}

/// Whether `short` keeps the first letter of `long` and the rest of its letters in order.
fn is_abbreviation(short: &str, long: &str) -> bool {
    if short.chars().next() != long.chars().next() {
        return false;
    }
    let mut rest = long.chars();
    short.chars().all(|c| rest.any(|l| l == c))
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-letter typo gets a suggestion; an unrelated word does not.
    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("hots", ["host", "hosts", "ssl"]),
            Some("hosts")
        );
        assert_eq!(
            did_you_mean("servrs", ["service", "servers"]),
            Some("servers")
        );
        assert_eq!(did_you_mean("banana", ["host", "ssl"]), None);
        assert_eq!(did_you_mean("command", ["cmd", "options"]), Some("cmd"));
        assert_eq!(did_you_mean("environment", ["env", "labels"]), Some("env"));
    }
}
