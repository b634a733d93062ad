//! Passbolt's `passbolt`, with its folders.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{failed, json, ok_or, s, text};
use crate::config::vault::{Env, Output, VaultError, call};

/// Passbolt: `passbolt verify`; for secrets in folders (`folder/sub/NAME`), the folders are
/// looked up level by level (`passbolt list folders --filter ...`); then one `passbolt list
/// resources` filtered by name (and parent folder), within those folders. Keys are the
/// resources' names.
pub(super) fn passbolt(
    env: Env<'_>,
    secrets: &[String],
) -> Result<BTreeMap<String, String>, VaultError> {
    if secrets.is_empty() {
        return Err(VaultError::Usage("No secrets given to fetch".into()));
    }
    ok_or(
        call(env, "passbolt", &[s("verify")], &[])?,
        "Failed to login to Passbolt",
    )?;
    let folders = passbolt_folders(env, secrets)?;
    let mut conditions = Vec::new();
    for secret in secrets {
        let parts: Vec<&str> = secret.split('/').collect();
        let Some((name, folder_path)) = parts.split_last() else {
            continue;
        };
        if folder_path.is_empty() {
            conditions.push(format!("Name == {name:?}"));
            continue;
        }
        // The most nested folder of the path that was found.
        let mut current = None;
        for depth in 1..=folder_path.len() {
            let want = folder_path[..depth].join("/");
            if let Some(f) = folders.iter().find(|f| folder_path_of(f, &folders) == want) {
                current = Some(f);
            }
        }
        if let Some(f) = current {
            conditions.push(format!(
                "(Name == {name:?} && FolderParentID == {:?})",
                text(&f["id"])
            ));
        }
    }
    let mut args = vec![s("list"), s("resources")];
    if !conditions.is_empty() {
        args.extend([s("--filter"), conditions.join(" || ")]);
    }
    for f in &folders {
        args.extend([s("--folder"), text(&f["id"])]);
    }
    args.extend([
        s("--column"),
        s("name"),
        s("--column"),
        s("password"),
        s("--json"),
    ]);
    let out = ok_or(
        call(env, "passbolt", &args, &[])?,
        format!("Could not read {} from Passbolt", secrets.join(", ")),
    )?;
    let mut results = BTreeMap::new();
    for item in json("passbolt list resources", &out)?
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        results.insert(
            item.get("name").map(text).unwrap_or_default(),
            item.get("password").map(text).unwrap_or_default(),
        );
    }
    let missing: Vec<&str> = secrets
        .iter()
        .map(|x| x.rsplit('/').next().unwrap_or(x))
        .filter(|n| !results.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        return Err(failed(format!(
            "Could not find the following secrets in Passbolt: {}",
            missing.join(", ")
        )));
    }
    Ok(results)
}

/// Every folder the secrets' paths name: the top-level ones by name, then each nested level
/// under its parent; a path not found is an error naming it.
fn passbolt_folders(env: Env<'_>, secrets: &[String]) -> Result<Vec<Value>, VaultError> {
    let mut paths: Vec<Vec<&str>> = Vec::new();
    for secret in secrets.iter().filter(|x| x.contains('/')) {
        let parts: Vec<&str> = secret.split('/').collect();
        let path = parts[..parts.len() - 1].to_vec();
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let list = |filter: String| -> Result<Output, VaultError> {
        call(
            env,
            "passbolt",
            &[s("list"), s("folders"), s("--filter"), filter, s("--json")],
            &[],
        )
    };
    let mut parents: Vec<&str> = Vec::new();
    for p in &paths {
        if !parents.contains(&p[0]) {
            parents.push(p[0]);
        }
    }
    let filter: Vec<String> = parents.iter().map(|n| format!("Name == {n:?}")).collect();
    let out = ok_or(
        list(filter.join(" || "))?,
        "Could not read folders from Passbolt",
    )?;
    let parent_items = json("passbolt list folders", &out)?
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut all = parent_items.clone();
    for path in paths.iter().filter(|p| p.len() > 1) {
        let Some(mut current) = parent_items
            .iter()
            .find(|f| text(&f["name"]) == path[0])
            .cloned()
        else {
            continue;
        };
        for name in &path[1..] {
            let filter = format!(
                "Name == {name:?} && FolderParentID == {:?}",
                text(&current["id"])
            );
            let out = list(filter)?;
            if !out.ok {
                continue;
            }
            let nested = json("passbolt list folders", &out.stdout)?
                .as_array()
                .cloned()
                .unwrap_or_default();
            let Some(first) = nested.first().cloned() else {
                break;
            };
            all.extend(nested);
            current = first;
        }
    }
    let found: Vec<String> = all.iter().map(|f| folder_path_of(f, &all)).collect();
    let missing: Vec<String> = paths
        .iter()
        .map(|p| p.join("/"))
        .filter(|p| !found.contains(p))
        .collect();
    if !missing.is_empty() {
        return Err(failed(format!(
            "Could not find the following folders in Passbolt: {}",
            missing.join(", ")
        )));
    }
    Ok(all)
}

/// A folder's path from the top, through its `folder_parent_id`s among `all`.
fn folder_path_of(folder: &Value, all: &[Value]) -> String {
    let mut names = vec![text(&folder["name"])];
    let mut parent = text(&folder["folder_parent_id"]);
    // A parent chain longer than the folders known would be a cycle.
    for _ in 0..all.len() {
        if parent.is_empty() {
            break;
        }
        let Some(p) = all.iter().find(|f| text(&f["id"]) == parent) else {
            break;
        };
        names.insert(0, text(&p["name"]));
        parent = text(&p["folder_parent_id"]);
    }
    names.join("/")
}
