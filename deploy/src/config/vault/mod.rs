//! `kamal secrets fetch|extract` done natively, so a secrets file that calls them works without
//! the kamal gem: the same password-manager CLIs Kamal's adapters call (1Password `op`,
//! Bitwarden `bw`, Bitwarden Secrets Manager `bws`, AWS `aws`, GCP `gcloud`, LastPass `lpass`,
//! Doppler `doppler`, Enpass `enpass-cli`, Passbolt `passbolt`), with the same arguments, the
//! same keys in the JSON result and Kamal's `--inline` shell escaping.
//!
//! In a secrets file, `$(kamal secrets ...)` is recognised the way Kamal recognises it (after
//! variable substitution, a command starting `kamal secrets `) and answered here; any other
//! `$(...)` still runs through the shell.

mod adapters;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::plan::split_command;

/// Why a `kamal secrets` command failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("unknown secrets adapter: {0}")]
    UnknownAdapter(String),
    #[error("no value provided for required option '--account'")]
    AccountRequired,
    #[error("{0}")]
    Usage(String),
    #[error("{tool} is not installed (`{program}` is not on the PATH)")]
    NotInstalled {
        tool: &'static str,
        program: &'static str,
    },
    #[error("cannot run `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{message}")]
    Failed { message: String },
    #[error("{what}: invalid JSON from the CLI")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Extract(#[from] super::secrets::ExtractError),
}

/// A parsed `kamal secrets ...` command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretsCommand {
    Fetch(FetchRequest),
    Extract {
        name: String,
        json: String,
        inline: bool,
    },
}

/// `kamal secrets fetch --adapter A [--account X] [--from Y] SECRETS...`
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchRequest {
    pub adapter: String,
    pub account: Option<String>,
    pub from: Option<String>,
    pub secrets: Vec<String>,
    pub inline: bool,
}

/// Where the CLIs run: the environment (PATH finds them) and the project directory.
#[derive(Clone, Copy, Debug)]
pub struct Env<'a> {
    pub vars: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
}

/// If `cmd` (a `$(...)` body after variable substitution) is a `kamal secrets` command, its
/// words after `kamal`; Kamal matches `\A\s*kamal\s*secrets\s+`.
pub fn kamal_secrets_words(cmd: &str) -> Option<Vec<String>> {
    let t = cmd.trim_start().strip_prefix("kamal")?;
    let t = t.trim_start().strip_prefix("secrets")?;
    if !t.starts_with(char::is_whitespace) {
        return None;
    }
    let words = split_command(cmd)?;
    Some(words.into_iter().skip(1).collect())
}

/// Parse the words after `kamal` (`secrets fetch ...` / `secrets extract NAME JSON`), the way
/// Kamal's Thor options read them: `--opt value`, `--opt=value`, `-a value`.
pub fn parse(words: &[String]) -> Result<SecretsCommand, VaultError> {
    let mut it = words.iter().map(String::as_str);
    if it.next() != Some("secrets") {
        return Err(VaultError::Usage("expected `secrets`".into()));
    }
    let verb = it.next().unwrap_or_default();
    let mut positional = Vec::new();
    let mut opts: BTreeMap<&str, String> = BTreeMap::new();
    let mut inline = false;
    let rest: Vec<&str> = it.collect();
    let mut i = 0;
    while i < rest.len() {
        let w = rest[i];
        i += 1;
        let (name, inline_value) = match w.split_once('=') {
            Some((n, v)) if n.starts_with('-') => (n, Some(v.to_string())),
            _ => (w, None),
        };
        let key = match name {
            "--adapter" | "-a" => "adapter",
            "--account" => "account",
            "--from" => "from",
            "--inline" => {
                inline = true;
                continue;
            }
            _ if name.starts_with('-') && name.len() > 1 => {
                return Err(VaultError::Usage(format!("unknown option {name}")));
            }
            _ => {
                positional.push(w.to_string());
                continue;
            }
        };
        let value = match inline_value {
            Some(v) => v,
            None => {
                let v = rest
                    .get(i)
                    .ok_or_else(|| VaultError::Usage(format!("{name} needs a value")))?;
                i += 1;
                (*v).to_string()
            }
        };
        opts.insert(key, value);
    }
    match verb {
        "fetch" => Ok(SecretsCommand::Fetch(FetchRequest {
            adapter: opts
                .remove("adapter")
                .ok_or_else(|| VaultError::Usage("fetch needs --adapter".into()))?,
            account: opts.remove("account"),
            from: opts.remove("from"),
            secrets: positional,
            inline,
        })),
        "extract" => {
            let [name, json] = <[String; 2]>::try_from(positional)
                .map_err(|_| VaultError::Usage("extract takes NAME and JSON".into()))?;
            Ok(SecretsCommand::Extract { name, json, inline })
        }
        other => Err(VaultError::Usage(format!(
            "unsupported `kamal secrets {other}` (fetch and extract are)"
        ))),
    }
}

/// Run a parsed command; the text is what Kamal prints (without the trailing newline).
pub fn run(cmd: &SecretsCommand, env: Env<'_>) -> Result<String, VaultError> {
    match cmd {
        SecretsCommand::Fetch(req) => {
            let results = fetch(req, env)?;
            let json = serde_json::to_string(&results).map_err(|source| VaultError::Json {
                what: "secrets".into(),
                source,
            })?;
            Ok(if req.inline { shellescape(&json) } else { json })
        }
        SecretsCommand::Extract { name, json, .. } => Ok(super::secrets::extract(name, json)?),
    }
}

/// Fetch `req.secrets` with the adapter it names; keys as Kamal's adapter returns them.
pub fn fetch(req: &FetchRequest, env: Env<'_>) -> Result<BTreeMap<String, String>, VaultError> {
    adapters::fetch(req, env)
}

/// Ruby's `Shellwords.escape`: every byte outside `[A-Za-z0-9_\-.,:+/@\n]` backslashed, a
/// newline quoted, the empty string `''`. Kamal's `--inline` output is this, so the value of
/// `SECRETS=$(kamal secrets fetch ...)` is this too.
pub fn shellescape(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c == '\n' {
            out.push_str("'\n'");
        } else if c.is_ascii_alphanumeric() || "_-.,:+/@".contains(c) {
            out.push(c);
        } else {
            out.push('\\');
            out.push(c);
        }
    }
    out
}

/// One CLI call's result.
pub(crate) struct Output {
    pub ok: bool,
    pub stdout: String,
}

/// Run `program args...` in the project directory with the template environment plus `extra`.
pub(crate) fn call(
    env: Env<'_>,
    program: &str,
    args: &[String],
    extra: &[(&str, &str)],
) -> Result<Output, VaultError> {
    let out = Command::new(program)
        .args(args)
        .current_dir(env.cwd)
        .env_clear()
        .envs(env.vars)
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| VaultError::Spawn {
            program: program.to_string(),
            source,
        })?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        kamal_secrets_words(s).unwrap()
    }

    /// Kamal's own command lines parse, with options in any of Thor's forms.
    #[test]
    fn parses_kamal_secrets_commands() {
        let c = parse(&words(
            "kamal secrets fetch --adapter 1password --account=acme --from Vault/Item A B/c",
        ))
        .unwrap();
        assert_eq!(
            c,
            SecretsCommand::Fetch(FetchRequest {
                adapter: "1password".into(),
                account: Some("acme".into()),
                from: Some("Vault/Item".into()),
                secrets: vec!["A".into(), "B/c".into()],
                inline: false,
            })
        );
        let c = parse(&words("  kamal  secrets extract DB '{\"DB\": \"x\"}'")).unwrap();
        assert!(matches!(c, SecretsCommand::Extract { name, .. } if name == "DB"));
        assert!(kamal_secrets_words("echo kamal secrets fetch").is_none());
        assert!(kamal_secrets_words("kamal secretsfetch").is_none());
    }

    /// `--inline` output is Ruby's `Shellwords.escape`, which a shell split undoes.
    #[test]
    fn shellescape_round_trips() {
        let json = r#"{"Vault/Item/A":"p@ss w$rd","B":"x'y"}"#;
        let escaped = shellescape(json);
        assert_eq!(
            escaped,
            r#"\{\"Vault/Item/A\":\"p@ss\ w\$rd\",\"B\":\"x\'y\"\}"#
        );
        assert_eq!(split_command(&escaped).unwrap(), [json]);
        assert_eq!(shellescape(""), "''");
    }
}
