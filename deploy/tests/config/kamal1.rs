//! Kamal 1 keys: translated where Flotilla has a meaning, one warning line per ignored key.

use flotilla_deploy::config::Ssl;

use super::{load_ok, warnings};

/// Every Kamal 1 key at once loads; translated keys change the config, ignored ones warn.
#[test]
fn kamal1_keys() {
    let c = load_ok("kamal1_keys", None, &[]);
    assert_eq!(c.stop_timeout, Some(25), "stop_wait_time is stop_timeout");
    let web = c.role("web").unwrap().proxy.clone().unwrap();
    assert_eq!(
        web.hosts,
        ["legacy.example", "www.legacy.example"],
        "Host(...) rules become proxy hosts"
    );
    assert_eq!(
        (
            web.healthcheck.path.as_str(),
            web.app_port,
            web.healthcheck.interval
        ),
        ("/health", 4000, 5)
    );
    assert_eq!(web.acme_email.as_deref(), Some("ops@legacy.example"));
    assert!(matches!(web.ssl, Ssl::Auto) && web.ssl_redirect);
    let api = c
        .role("api")
        .unwrap()
        .proxy
        .clone()
        .expect("role traefik: true proxies the role");
    assert_eq!(
        api.healthcheck.path, "/api/up",
        "a role health check applies to that role"
    );
    assert!(c.role("worker").unwrap().proxy.is_none());
    assert_eq!(c.healthcheck.as_ref().unwrap().max_attempts, Some(7));
    assert_eq!(c.builder.arch, ["amd64"], "builder.local.arch is the arch");
    assert_eq!(
        warnings(&c),
        [
            "config/deploy.yml:11:3: healthcheck/cmd: Kamal 1 health check setting ignored: the proxy checks over HTTP",
            "config/deploy.yml:12:3: healthcheck/log_lines: Kamal 1 health check setting ignored: the proxy checks over HTTP",
            "config/deploy.yml:14:3: traefik/image: Kamal 1 Traefik setting ignored: Flotilla runs its own proxy",
            "config/deploy.yml:15:3: traefik/host_port: Kamal 1 Traefik setting ignored: Flotilla runs its own proxy",
            "config/deploy.yml:19:5: traefik/args/accesslog: Kamal 1 Traefik setting ignored: Flotilla runs its own proxy",
            "config/deploy.yml:34:3: builder/multiarch: Kamal 1 key ignored: set `arch` to choose architectures",
            "config/deploy.yml:37:5: builder/local/host: Kamal 1 local builder host ignored: the local Docker builds",
        ]
    );
}

/// A Kamal 1 project (recognised by its Kamal 1 keys) with no `.kamal/secrets`: secrets come
/// from `.env`, `.env.DEST` over it, then the process environment, as Kamal 1.9 loads them; a
/// warning names the Kamal 2 form. Proxied roles get Kamal 1's port 3000, and without
/// `builder.arch` both architectures are built.
#[test]
fn kamal1_dotenv_secrets_and_defaults() {
    let c = load_ok(
        "kamal1_dotenv",
        Some("staging"),
        &[("FROM_SHELL", "shell-value"), ("DATABASE_URL", "from-env")],
    );
    let s = |n: &str| c.secrets.get(n).unwrap().expose().to_string();
    assert_eq!(
        s("DATABASE_URL"),
        "postgres://base",
        ".env overrides the environment"
    );
    assert_eq!(s("STAGED"), "staging-value", ".env.DEST overrides .env");
    assert_eq!(
        s("FROM_SHELL"),
        "shell-value",
        "the environment fills the rest"
    );
    assert_eq!(
        c.registry.password.as_ref().unwrap().expose(),
        "dotenv-registry-pw"
    );
    let names: Vec<&str> = c.secrets.iter().map(|(k, _)| k).collect();
    assert!(
        !names.contains(&"FROM_SHELL"),
        "the environment is not listed"
    );
    assert_eq!(
        c.role("web").unwrap().proxy.as_ref().unwrap().app_port,
        3000
    );
    assert!(c.role("jobs").unwrap().proxy.is_none());
    assert_eq!(c.builder.arch, ["amd64", "arm64"]);
    let w = warnings(&c);
    assert!(
        w.iter()
            .any(|w| w.starts_with(".env: Kamal 1 configuration (`")
                && w.contains(
                    "secrets are read from .env, .env.staging and the environment as Kamal 1 does"
                )
                && w.ends_with(
                    "the Kamal 2 form is `.kamal/secrets` (e.g. `DB_PASSWORD=$DB_PASSWORD`)"
                )),
        "{w:#?}"
    );
}

/// The same project once it has `.kamal/secrets` reads only that, as Kamal 2 does.
#[test]
fn kamal1_keys_with_kamal_secrets_read_kamal_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let src = super::fixture("kamal1_dotenv");
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join(".kamal")).unwrap();
    std::fs::copy(
        src.join("config/deploy.yml"),
        dir.path().join("config/deploy.yml"),
    )
    .unwrap();
    std::fs::copy(src.join(".env"), dir.path().join(".env")).unwrap();
    std::fs::write(
        dir.path().join(".kamal/secrets"),
        "KAMAL_REGISTRY_PASSWORD=k2\nDATABASE_URL=k2-db\nFROM_SHELL=x\nSTAGED=y\n",
    )
    .unwrap();
    let opts = flotilla_deploy::config::LoadOptions {
        env: std::collections::BTreeMap::new(),
        ..flotilla_deploy::config::LoadOptions::new(dir.path())
    };
    let c = flotilla_deploy::config::load(&opts).unwrap();
    assert_eq!(c.secrets.get("DATABASE_URL").unwrap().expose(), "k2-db");
}
