//! Kamal's secrets adapters: for each, the CLI calls its Ruby adapter makes (login check,
//! login, fetch) and the keys it returns. Learned from Kamal 2.12's
//! `lib/kamal/secrets/adapters/*.rb`; the arguments are passed as argv, not through a shell.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Env, FetchRequest, Output, VaultError, call};

mod bitwarden;
mod cloud;
mod one_password;
mod passbolt;
mod small;

use bitwarden::{bitwarden, bitwarden_sm};
use cloud::{aws, gcp};
use one_password::one_password;
use passbolt::passbolt;
use small::{doppler, enpass, lastpass};

/// Dispatch on the adapter name as Kamal's `Adapters.lookup` spells them.
pub(super) fn fetch(
    req: &FetchRequest,
    env: Env<'_>,
) -> Result<BTreeMap<String, String>, VaultError> {
    let name = req.adapter.to_lowercase();
    let (requires_account, tool, program): (bool, &'static str, &'static str) = match name.as_str()
    {
        "1password" | "one_password" => (true, "1Password CLI", "op"),
        "bitwarden" => (true, "Bitwarden CLI", "bw"),
        "bitwarden-sm" | "bitwarden_secrets_manager" => {
            (false, "Bitwarden Secrets Manager CLI", "bws")
        }
        "aws_secrets_manager" => (false, "AWS CLI", "aws"),
        "gcp" | "gcp_secret_manager" => (true, "gcloud CLI", "gcloud"),
        "lastpass" | "last_pass" => (true, "LastPass CLI", "lpass"),
        "doppler" => (false, "Doppler CLI", "doppler"),
        "enpass" => (false, "Enpass CLI", "enpass-cli"),
        "passbolt" => (false, "Passbolt CLI", "passbolt"),
        "test" => return Ok(test(req)),
        _ => return Err(VaultError::UnknownAdapter(req.adapter.clone())),
    };
    let account = req.account.as_deref().filter(|a| !a.trim().is_empty());
    if requires_account && account.is_none() {
        return Err(VaultError::AccountRequired);
    }
    let version_arg = if program == "enpass-cli" {
        "version"
    } else {
        "--version"
    };
    let installed = call(env, program, &[version_arg.to_string()], &[]).is_ok_and(|o| o.ok);
    if !installed {
        return Err(VaultError::NotInstalled { tool, program });
    }
    let secrets = prefixed(&req.secrets, req.from.as_deref());
    let a = account.unwrap_or_default();
    match program {
        "op" => one_password(env, &secrets, req.from.as_deref(), a),
        "bw" => bitwarden(env, &secrets, a),
        "bws" => bitwarden_sm(env, &secrets),
        "aws" => aws(env, &secrets, account),
        "gcloud" => gcp(env, &secrets, a),
        "lpass" => lastpass(env, &secrets, a),
        "doppler" => doppler(env, &secrets),
        "enpass-cli" => enpass(env, &req.secrets, req.from.as_deref().unwrap_or_default()),
        _ => passbolt(env, &secrets),
    }
}

/// `from/secret` for each secret, or the secret alone without `--from`.
fn prefixed(secrets: &[String], from: Option<&str>) -> Vec<String> {
    secrets
        .iter()
        .map(|s| match from {
            Some(f) => format!("{f}/{s}"),
            None => s.clone(),
        })
        .collect()
}

fn s(v: &str) -> String {
    v.to_string()
}

fn failed(message: impl Into<String>) -> VaultError {
    VaultError::Failed {
        message: message.into(),
    }
}

fn json(what: &str, text: &str) -> Result<Value, VaultError> {
    serde_json::from_str(text.trim()).map_err(|source| VaultError::Json {
        what: what.to_string(),
        source,
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn ok_or(out: Output, message: impl Into<String>) -> Result<String, VaultError> {
    if out.ok {
        Ok(out.stdout)
    } else {
        Err(failed(message))
    }
}

/// Kamal's test adapter: each secret's value is its name reversed (`LPAREN`/`RPAREN` become
/// parentheses first).
fn test(req: &FetchRequest) -> BTreeMap<String, String> {
    prefixed(&req.secrets, req.from.as_deref())
        .into_iter()
        .map(|k| {
            let v = k
                .replace("LPAREN", "(")
                .replace("RPAREN", ")")
                .chars()
                .rev()
                .collect();
            (k, v)
        })
        .collect()
}

/// Ruby's `Base64.decode64`: the standard alphabet, padding and unknown characters skipped.
fn base64_decode(s: &str) -> String {
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push(((bits >> n) & 0xff) as u8);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    /// Base64 payloads decode as Ruby's `decode64` does.
    #[test]
    fn base64() {
        assert_eq!(super::base64_decode("aHVudGVyMg=="), "hunter2");
        assert_eq!(super::base64_decode("c2Vj\ncmV0"), "secret");
    }
}
