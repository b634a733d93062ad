//! LastPass (`lpass`), Doppler (`doppler`) and Enpass (`enpass-cli`).

use std::collections::BTreeMap;

use super::{failed, json, ok_or, s, text};
use crate::config::vault::{Env, VaultError, call};

/// LastPass: `lpass status --color never` says who is logged in, `lpass login ACCOUNT` if not
/// that account, then one `lpass show ... --json`; keys are the items' full names.
pub(super) fn lastpass(
    env: Env<'_>,
    secrets: &[String],
    account: &str,
) -> Result<BTreeMap<String, String>, VaultError> {
    let status = call(env, "lpass", &[s("status"), s("--color"), s("never")], &[])?;
    if status.stdout.trim() != format!("Logged in as {account}.") {
        let out = call(env, "lpass", &[s("login"), s(account)], &[])?;
        ok_or(out, "Failed to login to LastPass")?;
    }
    let mut args = vec![s("show")];
    args.extend(secrets.iter().cloned());
    args.push(s("--json"));
    let out = ok_or(
        call(env, "lpass", &args, &[])?,
        format!("Could not read {} from LastPass", secrets.join(", ")),
    )?;
    let mut results = BTreeMap::new();
    for item in json("lpass show", &out)?
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        results.insert(
            item.get("fullname").map(text).unwrap_or_default(),
            item.get("password").map(text).unwrap_or_default(),
        );
    }
    let missing: Vec<&str> = secrets
        .iter()
        .filter(|s| !results.contains_key(*s))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(failed(format!(
            "Could not find {} in LastPass",
            missing.join(", ")
        )));
    }
    Ok(results)
}

/// Doppler: `doppler me --json` (or `doppler login -y`), then `doppler secrets get NAMES
/// --json -p PROJECT -c CONFIG` with project and config from `--from` (not needed with a
/// service token in `DOPPLER_TOKEN`); keys are the bare names.
pub(super) fn doppler(
    env: Env<'_>,
    secrets: &[String],
) -> Result<BTreeMap<String, String>, VaultError> {
    if !call(env, "doppler", &[s("me"), s("--json")], &[])?.ok {
        let out = call(env, "doppler", &[s("login"), s("-y")], &[])?;
        ok_or(out, "Failed to login to Doppler")?;
    }
    let mut args = vec![s("secrets"), s("get")];
    args.extend(secrets.iter().map(|x| s(x.rsplit('/').next().unwrap_or(x))));
    args.push(s("--json"));
    let service_token = env
        .vars
        .get("DOPPLER_TOKEN")
        .is_some_and(|t| t.starts_with("dp.st"));
    if !service_token {
        let first = secrets.first().map(String::as_str).unwrap_or_default();
        let mut parts = first.split('/');
        let (Some(project), Some(config)) = (parts.next(), parts.next()) else {
            return Err(failed(
                "Missing project or config from '--from=project/config' option",
            ));
        };
        args.extend([s("-p"), s(project), s("-c"), s(config)]);
    }
    let out = ok_or(
        call(env, "doppler", &args, &[])?,
        format!("Could not read {} from Doppler", secrets.join(", ")),
    )?;
    let v = json("doppler secrets get", &out)?;
    Ok(v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.get("computed").map(text).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default())
}

/// Enpass (offline, no account): `enpass-cli -json -vault FROM show TITLES...`; a secret is
/// `Title` (every password of the item) or `Title/Label`.
pub(super) fn enpass(
    env: Env<'_>,
    secrets: &[String],
    vault: &str,
) -> Result<BTreeMap<String, String>, VaultError> {
    let mut titles: Vec<String> = Vec::new();
    for secret in secrets {
        let title = match secret.rsplit_once('/') {
            Some((key, _)) if !key.is_empty() => key,
            Some((_, value)) => value,
            None => secret.as_str(),
        };
        if !titles.iter().any(|t| t == title) {
            titles.push(title.to_string());
        }
    }
    let mut args = vec![s("-json"), s("-vault"), s(vault), s("show")];
    args.extend(titles);
    let out = call(env, "enpass-cli", &args, &[])?;
    let mut results = BTreeMap::new();
    for item in json("enpass-cli show", &out.stdout)?
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let title = item.get("title").map(text).unwrap_or_default();
        let label = item.get("label").map(text).unwrap_or_default();
        let password = item.get("password").map(text).unwrap_or_default();
        if title.is_empty() || password.trim().is_empty() {
            continue;
        }
        let key = if label.is_empty() {
            title.clone()
        } else {
            format!("{title}/{label}")
        };
        if secrets.contains(&title) || secrets.contains(&key) {
            if results.contains_key(&key) {
                return Err(failed(format!("{key} is present more than once")));
            }
            results.insert(key, password);
        }
    }
    Ok(results)
}
