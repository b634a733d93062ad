//! 1Password's `op`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{json, ok_or, s, text};
use crate::config::vault::{Env, VaultError, call};

/// An item and the fields wanted from it.
type ItemFields = (String, Vec<String>);

/// 1Password: `op account get` to see whether signed in, `op signin --raw` for a session if
/// not, then one `op item get` per vault item with the wanted fields (`password` when none).
/// Keys are `vault/item/field` (a trailing `/password` dropped), from each field's reference.
pub(super) fn one_password(
    env: Env<'_>,
    secrets: &[String],
    from: Option<&str>,
    account: &str,
) -> Result<BTreeMap<String, String>, VaultError> {
    let signed_in = call(
        env,
        "op",
        &[s("account"), s("get"), s("--account"), s(account)],
        &[],
    )?
    .ok;
    let session = if signed_in {
        None
    } else {
        let out = call(
            env,
            "op",
            &[
                s("signin"),
                s("--account"),
                s(account),
                s("--force"),
                s("--raw"),
            ],
            &[],
        )?;
        Some(
            ok_or(out, "Failed to login to 1Password")?
                .trim()
                .to_string(),
        )
        .filter(|t| !t.is_empty())
    };
    let item_get = |vault: &str, item: &str, fields: Option<&[String]>| {
        let mut args = vec![
            s("item"),
            s("get"),
            s(item),
            s("--vault"),
            s(vault),
            s("--format"),
            s("json"),
            s("--account"),
            s(account),
        ];
        if let Some(t) = &session {
            args.extend([s("--session"), t.clone()]);
        }
        if let Some(f) = fields {
            let labels: Vec<String> = f.iter().map(|f| format!("label={f}")).collect();
            args.extend([s("--fields"), labels.join(",")]);
        }
        let out = call(env, "op", &args, &[])?;
        let what = match fields {
            Some(f) => format!("{} ", f.join(", ")),
            None => String::new(),
        };
        ok_or(
            out,
            format!("Could not read {what}from {item} in the {vault} 1Password vault"),
        )
    };
    let mut results = BTreeMap::new();
    let mut add_fields = |fields: &[Value]| {
        for f in fields {
            let reference = f.get("reference").map(text).unwrap_or_default();
            let key = reference.strip_prefix("op://").unwrap_or(&reference);
            let key = key.strip_suffix("/password").unwrap_or(key);
            results.insert(
                key.to_string(),
                f.get("value").map(text).unwrap_or_default(),
            );
        }
    };
    if secrets.is_empty() {
        // Every field of the `--from` item.
        let from = from.unwrap_or_default();
        let from = from.strip_prefix("op://").unwrap_or(from);
        let (vault, item) = from.split_once('/').unwrap_or((from, ""));
        let v = json("1Password item", &item_get(vault, item, None)?)?;
        let fields = v.get("fields").and_then(Value::as_array).cloned();
        add_fields(&fields.unwrap_or_default());
        return Ok(results);
    }
    // vault -> item -> fields, in first-seen order as Kamal's hashes keep it.
    let mut groups: Vec<(String, Vec<ItemFields>)> = Vec::new();
    for secret in secrets {
        let secret = secret.strip_prefix("op://").unwrap_or(secret);
        let mut parts = secret.split('/');
        let vault = parts.next().unwrap_or_default().to_string();
        let item = parts.next().unwrap_or_default().to_string();
        let rest: Vec<&str> = parts.collect();
        let field = if rest.is_empty() {
            "password".to_string()
        } else {
            rest.join(".")
        };
        let gi = match groups.iter().position(|(v, _)| *v == vault) {
            Some(i) => i,
            None => {
                groups.push((vault, Vec::new()));
                groups.len() - 1
            }
        };
        let items = &mut groups[gi].1;
        match items.iter_mut().find(|(i, _)| *i == item) {
            Some((_, fields)) => fields.push(field),
            None => items.push((item, vec![field])),
        }
    }
    for (vault, items) in &groups {
        for (item, fields) in items {
            let v = json("1Password item", &item_get(vault, item, Some(fields))?)?;
            let list = match v {
                Value::Array(a) => a,
                one => vec![one],
            };
            add_fields(&list);
        }
    }
    Ok(results)
}
