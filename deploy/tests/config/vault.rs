//! `kamal secrets fetch` done natively: one test per adapter Kamal ships, against a stand-in
//! CLI on the PATH (`fixtures/vault_stubs/bin/`) that records its arguments and answers as the
//! real one does. Each asserts the exact calls and the keys and values Kamal would return.

use std::collections::BTreeMap;

use flotilla_deploy::config::vault::{self, Env, FetchRequest};

use super::{fixture, load_ok};

/// Fetch with a stub CLI; returns the result and every recorded call.
fn fetch(
    adapter: &str,
    account: Option<&str>,
    from: Option<&str>,
    secrets: &[&str],
    extra: &[(&str, &str)],
) -> (Result<BTreeMap<String, String>, String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let mut vars = BTreeMap::from([
        (
            "PATH".to_string(),
            format!("{}:/usr/bin:/bin", fixture("vault_stubs/bin").display()),
        ),
        ("VAULT_LOG".to_string(), log.display().to_string()),
    ]);
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let req = FetchRequest {
        adapter: adapter.into(),
        account: account.map(str::to_string),
        from: from.map(str::to_string),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        inline: false,
    };
    let result = vault::fetch(
        &req,
        Env {
            vars: &vars,
            cwd: dir.path(),
        },
    )
    .map_err(|e| e.to_string());
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    (result, calls)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// 1Password: signs in when `op account get` fails, then one `op item get` per item with the
/// wanted fields (`password` by default); keys drop `op://` and a trailing `/password`.
#[test]
fn one_password() {
    let (r, calls) = fetch(
        "1password",
        Some("acme"),
        Some("Vault"),
        &["Item/DB_PASSWORD", "Item/API_KEY", "Other"],
        &[],
    );
    assert_eq!(
        r.unwrap(),
        map(&[
            ("Vault/Item/DB_PASSWORD", "db-secret"),
            ("Vault/Item/API_KEY", "api-secret"),
            ("Vault/Other", "other-secret"),
        ])
    );
    assert_eq!(
        calls,
        [
            "op --version",
            "op account get --account acme",
            "op signin --account acme --force --raw",
            "op item get Item --vault Vault --format json --account acme --session op-session --fields label=DB_PASSWORD,label=API_KEY",
            "op item get Other --vault Vault --format json --account acme --session op-session --fields label=password",
        ]
    );
}

/// 1Password needs `--account`, as in Kamal.
#[test]
fn one_password_requires_account() {
    let (r, calls) = fetch("1password", None, None, &["A"], &[]);
    assert_eq!(
        r.unwrap_err(),
        "no value provided for required option '--account'"
    );
    assert!(calls.is_empty());
}

/// Bitwarden: a locked vault is unlocked for a session passed as `BW_SESSION`; an item alone
/// gives its login password, `item/field` a custom field.
#[test]
fn bitwarden() {
    let (r, calls) = fetch(
        "bitwarden",
        Some("ops@acme.test"),
        None,
        &["DB", "Api/KEY"],
        &[],
    );
    assert_eq!(r.unwrap(), map(&[("DB", "db-login-pw"), ("Api/KEY", "k1")]));
    assert_eq!(
        calls,
        [
            "bw --version [BW_SESSION=]",
            "bw status [BW_SESSION=]",
            "bw unlock --raw [BW_SESSION=]",
            "bw status [BW_SESSION=bw-session]",
            "bw sync [BW_SESSION=bw-session]",
            "bw get item DB [BW_SESSION=bw-session]",
            "bw get item Api [BW_SESSION=bw-session]",
        ]
    );
}

/// Bitwarden Secrets Manager: `PROJECT/all` lists a project's secrets by key.
#[test]
fn bitwarden_secrets_manager() {
    let (r, calls) = fetch("bitwarden-sm", None, None, &["proj-1/all"], &[]);
    assert_eq!(r.unwrap(), map(&[("A", "1"), ("B", "2")]));
    assert_eq!(
        calls,
        [
            "bws --version",
            "bws project list",
            "bws secret list proj-1"
        ]
    );
}

/// AWS: one batch call with the profile; a JSON secret gives `NAME/KEY` (non-strings as JSON).
#[test]
fn aws_secrets_manager() {
    let (r, calls) = fetch(
        "aws_secrets_manager",
        Some("prod"),
        Some("app"),
        &["db", "token"],
        &[],
    );
    assert_eq!(
        r.unwrap(),
        map(&[
            ("app/db/user", "u"),
            ("app/db/port", "5432"),
            ("app/token", "plain-token")
        ])
    );
    assert_eq!(
        calls,
        [
            "aws --version",
            "aws secretsmanager batch-get-secret-value --secret-id-list app/db app/token --profile prod --output json",
        ]
    );
}

/// GCP: `project/name/version` with a `user|service-account` account; the payload is base64.
#[test]
fn gcp_secret_manager() {
    let (r, calls) = fetch(
        "gcp",
        Some("ops@acme.test|deployer@proj.iam"),
        None,
        &["proj/db/3"],
        &[],
    );
    assert_eq!(r.unwrap(), map(&[("proj/db", "hunter2")]));
    assert_eq!(
        calls,
        [
            "gcloud --version",
            "gcloud auth list --format=json",
            "gcloud secrets versions access 3 --secret=db --project=proj --account=ops@acme.test --impersonate-service-account=deployer@proj.iam --format=json",
        ]
    );
}

/// LastPass: already logged in as the account, so one `lpass show --json`; keys are full names.
#[test]
fn last_pass() {
    let (r, calls) = fetch(
        "lastpass",
        Some("ops@acme.test"),
        Some("Shared"),
        &["DB", "API"],
        &[],
    );
    assert_eq!(
        r.unwrap(),
        map(&[("Shared/DB", "lp-db"), ("Shared/API", "lp-api")])
    );
    assert_eq!(
        calls,
        [
            "lpass --version",
            "lpass status --color never",
            "lpass show Shared/DB Shared/API --json",
        ]
    );
}

/// Doppler: project and config from `--from`, bare names as keys, the computed values.
#[test]
fn doppler() {
    let (r, calls) = fetch("doppler", None, Some("shop/prd"), &["DB", "API"], &[]);
    assert_eq!(r.unwrap(), map(&[("DB", "dop-db"), ("API", "dop-api")]));
    assert_eq!(
        calls,
        [
            "doppler --version",
            "doppler me --json",
            "doppler secrets get DB API --json -p shop -c prd",
        ]
    );
}

/// Enpass: the vault path from `--from`, titles shown once, `Title/Label` keys for the wanted.
#[test]
fn enpass() {
    let (r, calls) = fetch(
        "enpass",
        None,
        Some("/vaults/primary"),
        &["FooBar/DB", "FooBar/API"],
        &[],
    );
    assert_eq!(
        r.unwrap(),
        map(&[("FooBar/DB", "en-db"), ("FooBar/API", "en-api")])
    );
    assert_eq!(
        calls,
        [
            "enpass-cli version",
            "enpass-cli -json -vault /vaults/primary show FooBar",
        ]
    );
}

/// Passbolt: verify, then one filtered listing of the named resources.
#[test]
fn passbolt() {
    let (r, calls) = fetch("passbolt", None, None, &["DB", "API"], &[]);
    assert_eq!(r.unwrap(), map(&[("DB", "pb-db"), ("API", "pb-api")]));
    assert_eq!(
        calls,
        [
            "passbolt --version",
            "passbolt verify",
            "passbolt list resources --filter Name == \"DB\" || Name == \"API\" --column name --column password --json",
        ]
    );
}

/// An adapter whose CLI is missing says which CLI, as Kamal does.
#[test]
fn missing_cli_is_named() {
    let (r, _) = fetch(
        "1password",
        Some("acme"),
        None,
        &["A"],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(
        r.unwrap_err(),
        "1Password CLI is not installed (`op` is not on the PATH)"
    );
    let (r, _) = fetch("vaultwarden", None, None, &["A"], &[]);
    assert_eq!(r.unwrap_err(), "unknown secrets adapter: vaultwarden");
}

/// A secrets file using Kamal's documented pattern, `SECRETS=$(kamal secrets fetch ...)` then
/// `$(kamal secrets extract NAME $SECRETS)`, resolves without the kamal gem: the fetch is
/// answered natively (inline, shell-escaped JSON) and the extract reads it back.
#[test]
fn secrets_file_with_kamal_secrets_commands() {
    let c = load_ok("secrets_kamal_adapter", None, &[]);
    let s = |n: &str| c.secrets.get(n).unwrap().expose().to_string();
    assert_eq!(s("DB_PASSWORD"), "db-secret");
    assert_eq!(s("API_KEY"), "api-secret");
    assert!(
        s("SECRETS").starts_with("\\{\\\"Vault/Item/"),
        "{}",
        s("SECRETS")
    );
}

/// Kamal's `test` adapter (no CLI): each value is its name reversed, parentheses spelled out.
#[test]
fn test_adapter() {
    let (r, calls) = fetch("test", Some("x"), Some("f"), &["ALPAREN1RPAREN"], &[]);
    assert_eq!(r.unwrap(), map(&[("f/ALPAREN1RPAREN", ")1(A/f")]));
    assert!(calls.is_empty());
}

/// Passbolt with a secret in nested folders: the folders are found level by level, and the
/// resource is filtered by its parent folder, as Kamal's adapter does.
#[test]
fn passbolt_in_folders() {
    let (r, calls) = fetch("passbolt", None, None, &["ops/prod/DB", "API"], &[]);
    assert_eq!(r.unwrap(), map(&[("DB", "pb-db-prod"), ("API", "pb-api")]));
    assert_eq!(
        calls,
        [
            "passbolt --version",
            "passbolt verify",
            "passbolt list folders --filter Name == \"ops\" --json",
            "passbolt list folders --filter Name == \"prod\" && FolderParentID == \"f1\" --json",
            "passbolt list resources --filter (Name == \"DB\" && FolderParentID == \"f2\") || Name == \"API\" --folder f1 --folder f2 --column name --column password --json",
        ]
    );
}
