//! `flotilla config`, `init`, `secrets` and `docs` as a user runs them: the real binary, in a
//! project directory, with a controlled environment. Golden JSON lives beside each fixture in
//! `deploy/tests/fixtures/<case>/expected.json` (set `UPDATE_EXPECT=1` to rewrite, then review).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/tests/fixtures")
        .join(name)
}

/// Run `flotilla ARGS` in `dir` with only PATH (plus `env`) in its environment.
fn flotilla(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Compare `flotilla config --json` of a fixture with its golden file, and check that no
/// secret value of the fixture appears anywhere in the output.
fn golden(name: &str, dest: Option<&str>, env: &[(&str, &str)], secret_values: &[&str]) {
    let dir = fixture(name);
    let mut args = vec!["config", "--json"];
    if let Some(d) = dest {
        args.extend(["-d", d]);
    }
    let o = flotilla(&dir, &args, env);
    assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
    let got = stdout(&o);
    let file = dir.join(match dest {
        Some(d) => format!("expected.{d}.json"),
        None => "expected.json".into(),
    });
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&file, &got).unwrap();
    } else {
        let want =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            got,
            want,
            "flotilla config --json of {name} differs from {}",
            file.display()
        );
    }
    for v in secret_values {
        assert!(
            !got.contains(v),
            "{name}: secret value {v:?} leaked into --json output"
        );
    }
    let yaml = stdout(&flotilla(
        &dir,
        &args[..1]
            .iter()
            .chain(&args[2..])
            .copied()
            .collect::<Vec<_>>(),
        env,
    ));
    for v in secret_values {
        assert!(
            !yaml.contains(v),
            "{name}: secret value {v:?} leaked into YAML output"
        );
    }
    assert!(got.contains("[REDACTED]") || secret_values.is_empty());
}

/// The seed's minimal config prints normalised and redacted: the registry password and every
/// secret as `[REDACTED]`, `servers` as a map of role to hosts.
#[test]
fn config_json_seed_minimal() {
    let env = [
        ("DOCKERHUB_TOKEN", "hub-token-123"),
        ("RAILS_MASTER_KEY", "mk-456"),
        ("DATABASE_URL", "postgres://u:pw-789@db"),
    ];
    golden(
        "seed_minimal",
        None,
        &env,
        &["hub-token-123", "mk-456", "pw-789"],
    );
}

/// Every other seed example prints as its golden JSON, secrets redacted.
#[test]
fn config_json_seed_examples() {
    golden(
        "seed_multi_role",
        None,
        &[],
        &[
            "registry-pw",
            "master-key",
            "postgres://db/myapp",
            "redis://cache",
        ],
    );
    golden("seed_accessories", None, &[], &["pg-secret"]);
    golden("seed_secrets_1password", None, &[], &["secret-for-"]);
    golden("seed_multi_environment", None, &[], &["production-key"]);
    golden(
        "seed_multi_environment",
        Some("staging"),
        &[],
        &["staging-key"],
    );
    golden("seed_traefik_ssl", None, &[], &[]);
    golden("seed_healthcheck", None, &[], &[]);
    golden("seed_builder_remote", None, &[], &[]);
}

/// Each Kamal 2 section fixture prints as its golden JSON, secrets redacted.
#[test]
fn config_json_kamal2_sections() {
    golden("k2_servers_roles_tags", None, &[], &[]);
    golden("k2_env_tags_aliasing", None, &[], &["db-pw", "gpu-token"]);
    golden("k2_registry", None, &[], &["ghp_very_secret", "acme-bot"]);
    golden("k2_proxy", None, &[], &["MIIB", "BEGIN PRIVATE KEY"]);
    golden("k2_accessories_roles", None, &[], &[]);
    golden("x_flotilla", None, &[], &[]);
    golden("kamal1_keys", None, &[], &[]);
    golden(
        "dest_erb_merge",
        Some("staging"),
        &[],
        &["from-staging", "common-key"],
    );
}

/// `-d` and `KAMAL_DESTINATION` select the same destination.
#[test]
fn config_destination_flag_and_env_agree() {
    let dir = fixture("seed_multi_environment");
    let by_flag = flotilla(&dir, &["config", "--json", "-d", "staging"], &[]);
    let by_env = flotilla(
        &dir,
        &["config", "--json"],
        &[("KAMAL_DESTINATION", "staging")],
    );
    assert_eq!(by_flag.status.code(), Some(0));
    assert_eq!(stdout(&by_flag), stdout(&by_env));
    assert!(stdout(&by_flag).contains("\"service\": \"myapp-staging\""));
}

/// A broken config exits 64 with every located message on stderr and nothing on stdout.
#[test]
fn config_errors_exit_64_with_located_messages() {
    let o = flotilla(&fixture("errors/wrong_types"), &["config"], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(
        err.starts_with("flotilla: error: invalid configuration (5 errors)\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "  config/deploy.yml:7:9: servers/web/hosts/1: should be a string, found an integer\n"
        ),
        "{err}"
    );
    assert!(err.contains("  next: fix the lines above"), "{err}");
}

/// A missing config file is a config error (64) naming the file.
#[test]
fn config_missing_file_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let o = flotilla(dir.path(), &["config"], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("config/deploy.yml: cannot read config file"),
        "{}",
        stderr(&o)
    );
}

/// `-c` reads another base file.
#[test]
fn config_other_file_with_c() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ops")).unwrap();
    std::fs::write(
        dir.path().join("ops/app.yml"),
        "service: other\nimage: a/b\nservers: [10.9.9.9]\n",
    )
    .unwrap();
    let o = flotilla(dir.path(), &["config", "--json", "-c", "ops/app.yml"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"10.9.9.9\""));
}

/// Kamal 1 keys that are ignored print one warning line each on stderr; the config still loads.
#[test]
fn config_kamal1_warnings_on_stderr() {
    let o = flotilla(&fixture("kamal1_keys"), &["config"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let warnings: Vec<_> = stderr(&o)
        .lines()
        .filter(|l| l.starts_with("flotilla: warning: config/deploy.yml:"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 7, "{warnings:?}");
    assert!(stdout(&o).starts_with("service: legacy\n"));
}

/// `init` writes Kamal's layout, the result loads with `flotilla config`, and a second run
/// keeps every existing file untouched.
#[test]
fn config_init_writes_layout_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let o = flotilla(dir.path(), &["init"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("created config/deploy.yml\n"));
    for f in [
        "config/deploy.yml",
        ".kamal/secrets",
        ".kamal/hooks/pre-deploy.sample",
        ".kamal/hooks/post-deploy.sample",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(".kamal/hooks/pre-build.sample"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "hook samples are executable");
    }
    let env = [
        ("KAMAL_REGISTRY_PASSWORD", "pw-from-env"),
        ("RAILS_MASTER_KEY", "mk-from-env"),
    ];
    let c = flotilla(dir.path(), &["config", "--json"], &env);
    assert_eq!(
        c.status.code(),
        Some(0),
        "generated config must load: {}",
        stderr(&c)
    );
    assert!(!stdout(&c).contains("pw-from-env"));

    std::fs::write(dir.path().join("config/deploy.yml"), "service: mine\n").unwrap();
    let again = flotilla(dir.path(), &["init"], &[]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stdout(&again).contains("kept    config/deploy.yml (already exists)"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config/deploy.yml")).unwrap(),
        "service: mine\n"
    );
}

/// `secrets print` prints resolved KEY=VALUE lines, as Kamal's does.
#[test]
fn config_secrets_print() {
    let o = flotilla(
        &fixture("dest_erb_merge"),
        &["secrets", "print", "-d", "staging"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "RAILS_MASTER_KEY=common-key\nSTAGING_ONLY=from-staging\n"
    );
}

/// `secrets extract` finds a name directly or under an adapter's `path/NAME`; a missing name is 64.
#[test]
fn config_secrets_extract() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"Vault/Item/DB_PASSWORD": "s3cret", "TOKEN": "t0k"}"#;
    let o = flotilla(
        dir.path(),
        &["secrets", "extract", "DB_PASSWORD", json],
        &[],
    );
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "s3cret\n")
    );
    let o = flotilla(
        dir.path(),
        &["secrets", "extract", "--inline", "TOKEN", json],
        &[],
    );
    assert_eq!(stdout(&o), "t0k");
    let o = flotilla(dir.path(), &["secrets", "extract", "NOPE", json], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("could not find secret NOPE"));
}

/// `docs` prints every key the validator knows, from the same table; an unknown section is 64
/// with a suggestion.
#[test]
fn config_docs_cover_every_known_key() {
    let dir = tempfile::tempdir().unwrap();
    let all = stdout(&flotilla(dir.path(), &["docs"], &[]));
    for section in flotilla_deploy::config::schema::SECTIONS {
        let one = flotilla(dir.path(), &["docs", section.name], &[]);
        assert_eq!(one.status.code(), Some(0), "docs {}", section.name);
        for key in section.keys {
            assert!(
                stdout(&one).contains(&format!("  {} ", key.name)),
                "docs {} lacks {}",
                section.name,
                key.name
            );
            assert!(all.contains(key.doc));
        }
    }
    let o = flotilla(dir.path(), &["docs", "proxi"], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("did you mean `flotilla docs proxy`?"),
        "{}",
        stderr(&o)
    );
}

/// Each command's `--help` shows examples.
#[test]
fn config_help_shows_examples() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["config", "init", "docs", "secrets"] {
        let o = flotilla(dir.path(), &[cmd, "--help"], &[]);
        assert_eq!(o.status.code(), Some(0));
        assert!(
            stdout(&o).contains("Examples:"),
            "{cmd} --help has no examples"
        );
    }
}

/// `flotilla ALIAS ARGS...` runs the alias's command with ARGS appended, as `kamal ALIAS` does;
/// the alias's quotes group words.
#[test]
fn aliases_run_as_commands() {
    let dir = fixture("k2_aliases_run");
    let by_alias = flotilla(&dir, &["conf"], &[]);
    assert_eq!(by_alias.status.code(), Some(0), "{}", stderr(&by_alias));
    let direct = flotilla(&dir, &["config", "--json"], &[]);
    assert_eq!(stdout(&by_alias), stdout(&direct));
    let o = flotilla(&dir, &["quoted", r#"{"DB PASS": "s3cret"}"#], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "s3cret\n");
    let o = flotilla(&dir, &["conf2"], &[]);
    assert_eq!(
        stdout(&o),
        stdout(&direct),
        "an alias of an alias expands too"
    );
    let o = flotilla(&dir, &["loop-a"], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("expand into each other without end"),
        "{}",
        stderr(&o)
    );
    let o = flotilla(&dir, &["nosuchalias"], &[]);
    assert_eq!(
        o.status.code(),
        Some(64),
        "an unknown name is still a usage error"
    );
}

/// `flotilla secrets fetch` calls the adapter's CLI (a stand-in here) and prints Kamal's JSON;
/// `--inline` prints it shell-escaped for a secrets file.
#[test]
fn secrets_fetch_with_an_adapter() {
    let dir = fixture("secrets_kamal_adapter");
    let args = [
        "secrets", "fetch", "-a", "doppler", "--from", "shop/prd", "DB", "API",
    ];
    let o = flotilla(&dir, &args, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"API\":\"dop-api\",\"DB\":\"dop-db\"}\n");
    let mut inline = args.to_vec();
    inline.push("--inline");
    let o = flotilla(&dir, &inline, &[]);
    assert_eq!(stdout(&o), r#"\{\"API\":\"dop-api\",\"DB\":\"dop-db\"\}"#);
}
