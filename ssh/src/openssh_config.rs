//! The subset of OpenSSH's client config (`ssh_config(5)`) that decides where and how to
//! connect: `Host` blocks with `*`/`?` patterns and `!` negation, `HostName`, `User`, `Port`,
//! `IdentityFile`, `ProxyJump`, `ProxyCommand`, `UserKnownHostsFile`, `StrictHostKeyChecking`,
//! and `Include` of plain paths. Other keywords are ignored; a `Match` block is skipped (its
//! criteria need state this crate does not have), so its settings never apply.
//!
//! As in OpenSSH, the first value found for a keyword wins, except `IdentityFile`, which
//! accumulates; files are read in the order given.

use std::path::{Path, PathBuf};

use crate::Error;

/// How many `Include` levels are followed (OpenSSH's own limit is 16).
const MAX_INCLUDE_DEPTH: usize = 16;

/// What the config files say about one host. `None` means the files did not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub proxy_jump: Option<String>,
    pub proxy_command: Option<String>,
    pub user_known_hosts_files: Option<Vec<String>>,
    pub strict_host_key_checking: Option<String>,
}

/// One `Keyword value` line with where it came from.
#[derive(Clone, Debug)]
struct Line {
    keyword: String,
    args: Vec<String>,
    path: PathBuf,
    number: usize,
}

/// Reads `files` (missing ones are skipped, as OpenSSH does) and returns the settings for
/// `host` (the name as given in deploy.yml). `home` expands `~` in `Include` paths.
pub fn lookup(files: &[PathBuf], host: &str, home: &Path) -> Result<HostConfig, Error> {
    let mut out = HostConfig::default();
    for file in files {
        let mut lines = Vec::new();
        read_file(file, home, 0, &mut lines)?;
        apply(&lines, host, &mut out)?;
    }
    Ok(out)
}

fn read_file(path: &Path, home: &Path, depth: usize, out: &mut Vec<Line>) -> Result<(), Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let Some((keyword, args)) = split_line(raw) else {
            continue;
        };
        if keyword == "include" {
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(Error::Config {
                    path: path.to_owned(),
                    line: i + 1,
                    message: "Include nested too deeply".into(),
                });
            }
            for arg in &args {
                // Globs in Include are not expanded: such an Include is skipped.
                if arg.contains(['*', '?', '[']) {
                    tracing::debug!(path = %path.display(), include = %arg, "skipping Include with a glob");
                    continue;
                }
                let p = expand_tilde(arg, home);
                // Relative includes are relative to ~/.ssh for user files (ssh_config(5)).
                let p = if p.is_relative() {
                    home.join(".ssh").join(p)
                } else {
                    p
                };
                read_file(&p, home, depth + 1, out)?;
            }
            continue;
        }
        out.push(Line {
            keyword,
            args,
            path: path.to_owned(),
            number: i + 1,
        });
    }
    Ok(())
}

/// `Keyword value...` or `Keyword=value`, lowercased keyword, quoted arguments unquoted.
fn split_line(raw: &str) -> Option<(String, Vec<String>)> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let split = line.find(|c: char| c.is_whitespace() || c == '=')?;
    let keyword = line[..split].to_ascii_lowercase();
    let rest = line[split..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    Some((keyword, split_args(rest)))
}

fn split_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_arg = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_arg = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_arg = true;
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    args
}

fn apply(lines: &[Line], host: &str, out: &mut HostConfig) -> Result<(), Error> {
    // Lines before the first Host/Match apply to every host.
    let mut active = true;
    for line in lines {
        match line.keyword.as_str() {
            "host" => {
                active = host_matches(&line.args, host);
                continue;
            }
            "match" => {
                active = line.args.len() == 1 && line.args[0].eq_ignore_ascii_case("all");
                continue;
            }
            _ => {}
        }
        if !active {
            continue;
        }
        let first = line.args.first().cloned();
        match line.keyword.as_str() {
            "hostname" => set(&mut out.hostname, first),
            "user" => set(&mut out.user, first),
            "port" if out.port.is_none() => {
                match first.as_deref().and_then(|p| p.parse::<u16>().ok()) {
                    Some(p) => out.port = Some(p),
                    None => {
                        return Err(Error::Config {
                            path: line.path.clone(),
                            line: line.number,
                            message: format!("Port {:?} is not a port number", first),
                        });
                    }
                }
            }
            "identityfile" => out.identity_files.extend(first),
            "proxyjump" => set(&mut out.proxy_jump, first),
            // ProxyCommand takes the rest of the line, spaces included.
            "proxycommand" => set(&mut out.proxy_command, Some(line.args.join(" "))),
            "userknownhostsfile" if out.user_known_hosts_files.is_none() => {
                out.user_known_hosts_files = Some(line.args.clone());
            }
            "stricthostkeychecking" => set(&mut out.strict_host_key_checking, first),
            _ => {}
        }
    }
    Ok(())
}

fn set(slot: &mut Option<String>, value: Option<String>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// OpenSSH's `Host` rule: a host matches when some pattern matches and no negated one does.
fn host_matches(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg, host) {
                return false;
            }
        } else if glob(p, host) {
            matched = true;
        }
    }
    matched
}

/// `*` and `?` wildcards, case-insensitive (host names are).
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

pub(crate) fn expand_tilde(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if path == "~" => home.to_owned(),
        None => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str, host: &str) -> HostConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, text).unwrap();
        lookup(&[path], host, dir.path()).unwrap()
    }

    /// The first value for a host wins, `IdentityFile` accumulates, and negated patterns
    /// exclude, as OpenSSH reads its config.
    #[test]
    fn host_blocks_first_value_wins() {
        let text = "\
User everyone
Host web-* !web-skip
  HostName=10.0.0.%h
  Port 2222
  IdentityFile ~/.ssh/web
Host *
  Port 22
  User other
  IdentityFile ~/.ssh/id_all
  ProxyCommand ssh -W %h:%p bastion
  UserKnownHostsFile ~/.ssh/a \"/tmp/b c\"
  StrictHostKeyChecking accept-new
Match host web-1
  User matched
";
        let c = config(text, "WEB-1");
        assert_eq!(c.user.as_deref(), Some("everyone"));
        assert_eq!(c.hostname.as_deref(), Some("10.0.0.%h"));
        assert_eq!(c.port, Some(2222));
        assert_eq!(c.identity_files, ["~/.ssh/web", "~/.ssh/id_all"]);
        assert_eq!(c.proxy_command.as_deref(), Some("ssh -W %h:%p bastion"));
        assert_eq!(
            c.user_known_hosts_files,
            Some(vec!["~/.ssh/a".to_string(), "/tmp/b c".to_string()])
        );
        assert_eq!(c.strict_host_key_checking.as_deref(), Some("accept-new"));

        let skipped = config(text, "web-skip");
        assert_eq!(skipped.port, Some(22));
        assert_eq!(skipped.hostname, None);
    }

    /// A bad Port is reported with file and line instead of being ignored.
    #[test]
    fn bad_port_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "Host *\n  Port twenty\n").unwrap();
        let err = lookup(std::slice::from_ref(&path), "h", dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("config:2: Port Some(\"twenty\") is not a port number"),
            "{err}"
        );
    }

    /// `Include` pulls in another file at the place it appears.
    #[test]
    fn include_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".ssh")).unwrap();
        std::fs::write(dir.path().join(".ssh/extra"), "Host db\n  User postgres\n").unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "Include extra\nHost *\n  User root\n").unwrap();
        let c = lookup(std::slice::from_ref(&path), "db", dir.path()).unwrap();
        assert_eq!(c.user.as_deref(), Some("postgres"));
    }

    #[test]
    fn glob_matches_like_openssh() {
        assert!(glob("*.example.com", "a.example.com"));
        assert!(glob("10.0.0.?", "10.0.0.7"));
        assert!(!glob("10.0.0.?", "10.0.0.17"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "ac"));
    }
}
