//! The clouds' secret managers: AWS (`aws`) and Google (`gcloud`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{base64_decode, failed, json, ok_or, s, text};
use crate::config::vault::{Env, Output, VaultError, call};

/// AWS Secrets Manager: one `aws secretsmanager batch-get-secret-value`. A JSON object secret
/// gives `NAME/KEY` per key, anything else `NAME`.
pub(super) fn aws(
    env: Env<'_>,
    secrets: &[String],
    profile: Option<&str>,
) -> Result<BTreeMap<String, String>, VaultError> {
    let mut args = vec![
        s("secretsmanager"),
        s("batch-get-secret-value"),
        s("--secret-id-list"),
    ];
    args.extend(secrets.iter().cloned());
    if let Some(p) = profile {
        args.extend([s("--profile"), s(p)]);
    }
    args.extend([s("--output"), s("json")]);
    let out = ok_or(
        call(env, "aws", &args, &[])?,
        format!(
            "Could not read {} from AWS Secrets Manager",
            secrets.join(", ")
        ),
    )?;
    let v = json("aws secretsmanager", &out)?;
    if let Some(errors) = v
        .get("Errors")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    {
        let msg: Vec<String> = errors
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.get("SecretId").map(text).unwrap_or_default(),
                    e.get("Message").map(text).unwrap_or_default()
                )
            })
            .collect();
        return Err(failed(msg.join(" ")));
    }
    let mut results = BTreeMap::new();
    for sv in v
        .get("SecretValues")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name = sv.get("Name").map(text).unwrap_or_default();
        let raw = sv.get("SecretString").map(text).unwrap_or_default();
        match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Object(map)) => {
                for (k, val) in map {
                    results.insert(format!("{name}/{k}"), text(&val));
                }
            }
            Ok(other) => {
                results.insert(name, text(&other));
            }
            Err(_) => {
                results.insert(name, raw);
            }
        }
    }
    Ok(results)
}

/// Google Secret Manager: `gcloud auth list` (and `gcloud auth login` when empty), then
/// `gcloud secrets versions access VERSION --secret=NAME` per secret, the payload base64.
/// A secret is `[project/]name[/version]`; the account is `user[|service-account]`.
pub(super) fn gcp(
    env: Env<'_>,
    secrets: &[String],
    account: &str,
) -> Result<BTreeMap<String, String>, VaultError> {
    let gcloud = |args: Vec<String>| call(env, "gcloud", &args, &[]);
    let logged_in = |out: Output| {
        json("gcloud auth list", &out.stdout)
            .ok()
            .and_then(|v| v.as_array().map(|a| !a.is_empty()))
            .unwrap_or(false)
    };
    if !logged_in(gcloud(vec![s("auth"), s("list"), s("--format=json")])?) {
        gcloud(vec![s("auth"), s("login")])?;
        if !logged_in(gcloud(vec![s("auth"), s("list"), s("--format=json")])?) {
            return Err(failed("could not login to gcloud"));
        }
    }
    let (user, service_account) = match account.split_once('|') {
        Some((u, sa)) => (u, Some(sa)),
        None => (account, None),
    };
    let mut results = BTreeMap::new();
    for secret in secrets {
        let mut parts: Vec<&str> = secret.split('/').collect();
        if parts.len() == 1 {
            parts.insert(0, "default");
        }
        let project = parts[0];
        let name = parts.get(1).copied().unwrap_or_default();
        let version = parts.get(2).copied().unwrap_or("latest");
        let mut args = vec![
            s("secrets"),
            s("versions"),
            s("access"),
            s(version),
            format!("--secret={name}"),
        ];
        if project != "default" {
            args.push(format!("--project={project}"));
        }
        if user != "default" {
            args.push(format!("--account={user}"));
        }
        if let Some(sa) = service_account {
            args.push(format!("--impersonate-service-account={sa}"));
        }
        args.push(s("--format=json"));
        let item = format!("{project}/{name}");
        let out = ok_or(
            gcloud(args)?,
            format!("Could not read {item} from Google Secret Manager"),
        )?;
        let v = json("gcloud secrets versions access", &out)?;
        let data = v.pointer("/payload/data").map(text).unwrap_or_default();
        results.insert(item, base64_decode(&data));
    }
    Ok(results)
}
