//! Kamal's secrets adapters: for each, the CLI calls its Ruby adapter makes (login check,
//! login, fetch) and the keys it returns. Learned from Kamal 2.12's
//! `lib/kamal/secrets/adapters/*.rb`; the arguments are passed as argv, not through a shell.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Env, FetchRequest, Output, VaultError, call};

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

/// An item and the fields wanted from it.
type ItemFields = (String, Vec<String>);

/// 1Password: `op account get` to see whether signed in, `op signin --raw` for a session if
/// not, then one `op item get` per vault item with the wanted fields (`password` when none).
/// Keys are `vault/item/field` (a trailing `/password` dropped), from each field's reference.
fn one_password(
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

/// Bitwarden: `bw status`; `bw login ACCOUNT` when unauthenticated; `bw unlock --raw` for a
/// session when locked; `bw sync`; then `bw get item ITEM` per item. An item alone gives its
/// login password (or all its custom fields); `item/field` gives that custom field.
fn bitwarden(
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
fn bitwarden_sm(env: Env<'_>, secrets: &[String]) -> Result<BTreeMap<String, String>, VaultError> {
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

/// AWS Secrets Manager: one `aws secretsmanager batch-get-secret-value`. A JSON object secret
/// gives `NAME/KEY` per key, anything else `NAME`.
fn aws(
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
fn gcp(
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

/// LastPass: `lpass status --color never` says who is logged in, `lpass login ACCOUNT` if not
/// that account, then one `lpass show ... --json`; keys are the items' full names.
fn lastpass(
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
fn doppler(env: Env<'_>, secrets: &[String]) -> Result<BTreeMap<String, String>, VaultError> {
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
fn enpass(
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

/// Passbolt: `passbolt verify`; for secrets in folders (`folder/sub/NAME`), the folders are
/// looked up level by level (`passbolt list folders --filter ...`); then one `passbolt list
/// resources` filtered by name (and parent folder), within those folders. Keys are the
/// resources' names.
fn passbolt(env: Env<'_>, secrets: &[String]) -> Result<BTreeMap<String, String>, VaultError> {
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
