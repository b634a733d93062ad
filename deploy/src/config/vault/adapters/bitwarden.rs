//! Bitwarden's `bw` and Bitwarden Secrets Manager's `bws`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{failed, json, ok_or, s, text};
use crate::config::vault::{Env, VaultError, call};

/// Bitwarden: `bw status`; `bw login ACCOUNT` when unauthenticated; `bw unlock --raw` for a
/// session when locked; `bw sync`; then `bw get item ITEM` per item. An item alone gives its
/// login password (or all its custom fields); `item/field` gives that custom field.
pub(super) fn bitwarden(
    env: Env<'_>,
    secrets: &[String],
    account: &str,
) -> Result<BTreeMap<String, String>, VaultError> {
    let bw = |args: &[&str], session: Option<&str>| {
        let extra: Vec<(&str, &str)> = session.map(|t| ("BW_SESSION", t)).into_iter().collect();
        let args: Vec<String> = args.iter().map(|a| s(a)).collect();
        call(env, "bw", &args, &extra)
    };
    let status = |session: Option<&str>| -> Result<String, VaultError> {
        let out = bw(&["status"], session)?;
        let v = json("bw status", &out.stdout)?;
        Ok(v.get("status").map(text).unwrap_or_default())
    };
    let mut st = status(None)?;
    if st == "unauthenticated" {
        bw(&["login", account], None)?;
        st = status(None)?;
    }
    let mut session: Option<String> = None;
    if st == "locked" {
        session = Some(bw(&["unlock", "--raw"], None)?.stdout.trim().to_string())
            .filter(|t| !t.is_empty());
        st = status(session.as_deref())?;
    }
    if st != "unlocked" {
        return Err(failed("Failed to login to and unlock Bitwarden"));
    }
    if !bw(&["sync"], session.as_deref())?.ok {
        return Err(failed("Failed to sync Bitwarden"));
    }
    let mut items: Vec<(String, Vec<String>)> = Vec::new();
    for secret in secrets {
        let mut parts = secret.split('/');
        let item = parts.next().unwrap_or_default().to_string();
        let field = parts.next().map(str::to_string);
        match items.iter_mut().find(|(i, _)| *i == item) {
            Some((_, f)) => f.extend(field),
            None => items.push((item, field.into_iter().collect())),
        }
    }
    let mut results = BTreeMap::new();
    for (item, fields) in items {
        let out = bw(&["get", "item", &item], session.as_deref())?;
        let v = json(
            "bw get item",
            &ok_or(out, format!("Could not read {item} from Bitwarden"))?,
        )?;
        let custom = v
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let from_fields = |names: &[String], results: &mut BTreeMap<String, String>| {
            for name in names {
                let f = custom
                    .iter()
                    .find(|f| f.get("name").map(text).as_deref() == Some(name))
                    .ok_or_else(|| {
                        failed(format!(
                            "Could not find field {name} in item {item} in Bitwarden"
                        ))
                    })?;
                results.insert(
                    format!("{item}/{name}"),
                    f.get("value").map(text).unwrap_or_default(),
                );
            }
            Ok::<(), VaultError>(())
        };
        if !fields.is_empty() {
            from_fields(&fields, &mut results)?;
        } else if let Some(p) = v.pointer("/login/password").filter(|p| !p.is_null()) {
            results.insert(item.clone(), text(p));
        } else if !custom.is_empty() {
            let names: Vec<String> = custom
                .iter()
                .map(|f| f.get("name").map(text).unwrap_or_default())
                .collect();
            from_fields(&names, &mut results)?;
        } else {
            return Err(failed(format!(
                "Item {item} is not a login type item and no fields were specified"
            )));
        }
    }
    Ok(results)
}

/// Bitwarden Secrets Manager: `bws project list` checks the access token; `all` lists every
/// secret, `PROJECT/all` a project's, otherwise `bws secret get UUID` per secret. Keys are the
/// secrets' own keys.
pub(super) fn bitwarden_sm(
    env: Env<'_>,
    secrets: &[String],
) -> Result<BTreeMap<String, String>, VaultError> {
    if secrets.is_empty() {
        return Err(failed(
            "You must specify what to retrieve from Bitwarden Secrets Manager",
        ));
    }
    let bws = |args: Vec<String>| call(env, "bws", &args, &[]);
    if !bws(vec![s("project"), s("list")])?.ok {
        return Err(failed(
            "Could not authenticate to Bitwarden Secrets Manager. Did you set a valid access token?",
        ));
    }
    let mut results = BTreeMap::new();
    let mut add = |v: &Value| {
        results.insert(
            v.get("key").map(text).unwrap_or_default(),
            v.get("value").map(text).unwrap_or_default(),
        );
    };
    let list = match secrets {
        [one] if one == "all" => Some(vec![s("secret"), s("list")]),
        [one] if one.ends_with("/all") => {
            let project = one.split("/all").next().unwrap_or_default();
            Some(vec![s("secret"), s("list"), s(project)])
        }
        _ => None,
    };
    match list {
        Some(args) => {
            let out = ok_or(
                bws(args)?,
                "Could not read secrets from Bitwarden Secrets Manager",
            )?;
            for v in json("bws secret list", &out)?
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                add(&v);
            }
        }
        None => {
            for uuid in secrets {
                let out = ok_or(
                    bws(vec![s("secret"), s("get"), uuid.clone()])?,
                    format!("Could not read {uuid} from Bitwarden Secrets Manager"),
                )?;
                add(&json("bws secret get", &out)?);
            }
        }
    }
    Ok(results)
}
