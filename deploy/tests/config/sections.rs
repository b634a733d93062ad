//! Each Kamal 2 section, and x-flotilla, is read into the typed config.

use flotilla_deploy::config::{HostCount, OptionValue, SshConfig, Ssl};

use super::{load_ok, warnings};

/// Roles as maps and lists, tagged hosts, role settings, a proxied non-primary role, an empty
/// role allowed by `allow_empty_roles`, and a custom primary role.
#[test]
fn k2_servers_roles_tags() {
    let c = load_ok("k2_servers_roles_tags", None, &[]);
    assert_eq!(c.primary_role, "api");
    let api = c.role("api").unwrap();
    assert_eq!(api.hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert_eq!(api.tags["10.0.0.2"], ["gpu", "big"]);
    assert_eq!(api.tags["10.0.0.3"], ["edge"]);
    assert!(!api.tags.contains_key("10.0.0.1"));
    assert_eq!(api.options["cpus"], OptionValue::One("2".into()));
    assert_eq!(
        api.options["add-host"],
        OptionValue::Many(vec!["a:10.1.1.1".into(), "b:10.1.1.2".into()])
    );
    assert_eq!(api.options["init"], OptionValue::Flag(true));
    assert_eq!(
        (api.stop_timeout, api.asset_path.as_deref()),
        (Some(20), Some("/rails/public/assets"))
    );
    assert!(
        api.proxy.is_some(),
        "the primary role is proxied by default"
    );
    let jobs = c.role("jobs").unwrap();
    assert_eq!(jobs.hosts, ["10.0.0.4", "10.0.0.5"]);
    assert!(
        jobs.proxy.is_none(),
        "other roles are not proxied by default"
    );
    let admin = c.role("admin").unwrap();
    assert_eq!(admin.proxy.as_ref().unwrap().hosts, ["admin.example.com"]);
    assert_eq!(admin.env.clear["ADMIN"], "1");
    assert_eq!(admin.logging.as_ref().unwrap().options["max-size"], "10m");
    assert!(c.role("spare").unwrap().hosts.is_empty());
}

/// env: clear values (numbers as text), secrets with `NAME:SECRET` aliasing, tag env, and a
/// role's flat env merged over the root env.
#[test]
fn k2_env_tags_aliasing() {
    let c = load_ok("k2_env_tags_aliasing", None, &[]);
    assert_eq!(c.env.clear["WEB_CONCURRENCY"], "3");
    let db = &c.env.secret[1];
    assert_eq!(
        (db.var.as_str(), db.secret.as_str()),
        ("DB_PASSWORD", "MAIN_DB_PASSWORD")
    );
    assert_eq!(c.secrets.get(&db.secret).unwrap().expose(), "db-pw");
    assert_eq!(c.env.tags["eu"].clear["REGION"], "eu-west");
    assert_eq!(c.env.tags["gpu"].secret[0].var, "GPU_TOKEN");
    let worker = c.role("worker").unwrap();
    assert_eq!(worker.env.clear["QUEUE"], "default");
    assert_eq!(worker.env.clear["RAILS_ENV"], "production");
    assert_eq!(c.role("web").unwrap().tags["10.0.0.1"], ["eu"]);
}

/// registry: server prefixing the image, username and password from secrets.
#[test]
fn k2_registry() {
    let c = load_ok("k2_registry", None, &[]);
    assert_eq!(c.registry.server.as_deref(), Some("ghcr.io"));
    assert_eq!(c.repository(), "ghcr.io/acme/shop");
    assert_eq!(c.registry.username.as_ref().unwrap().expose(), "acme-bot");
    assert_eq!(
        c.registry.password.as_ref().unwrap().expose(),
        "ghp_very_secret"
    );
}

/// proxy: hosts, port, custom certificate by secret names, timeouts, health check, run settings.
#[test]
fn k2_proxy() {
    let c = load_ok("k2_proxy", None, &[]);
    let p = c.role("web").unwrap().proxy.clone().unwrap();
    assert_eq!(p.hosts, ["shop.example.com", "www.shop.example.com"]);
    assert_eq!(p.app_port, 3000);
    assert!(
        matches!(&p.ssl, Ssl::Custom { certificate_pem, .. } if certificate_pem == "CERTIFICATE_PEM")
    );
    assert!(
        c.secrets
            .get("CERTIFICATE_PEM")
            .unwrap()
            .expose()
            .contains("\nMIIB\n")
    );
    assert!(!p.ssl_redirect && !p.strip_path_prefix);
    assert_eq!(
        (
            p.forward_headers,
            p.response_timeout,
            p.path_prefix.as_deref()
        ),
        (Some(true), 60, Some("/shop"))
    );
    assert_eq!(
        (
            p.healthcheck.interval,
            p.healthcheck.path.as_str(),
            p.healthcheck.timeout
        ),
        (2, "/healthz", 3)
    );
    assert_eq!(p.buffering["max_request_body"], "40000000");
    assert_eq!(p.logging["request_headers"], "Cache-Control");
    assert_eq!(p.run["https_port"], "8443");
}

/// builder: every Kamal 2 key.
#[test]
fn k2_builder() {
    let b = load_ok("k2_builder", None, &[]).builder;
    assert_eq!(b.arch, ["amd64", "arm64"]);
    assert_eq!(
        (b.remote.as_deref(), b.local),
        (Some("ssh://docker@builder.internal"), Some(false))
    );
    assert_eq!(b.cache["type"], "registry");
    assert_eq!(
        (b.dockerfile.as_deref(), b.target.as_deref()),
        (Some("Dockerfile.production"), Some("app"))
    );
    assert_eq!(b.args["RUBY_VERSION"], "3.3.0");
    assert_eq!(b.secrets, ["GITHUB_TOKEN"]);
    assert_eq!(
        (b.ssh.as_deref(), b.driver.as_deref()),
        (Some("default"), Some("docker-container"))
    );
}

/// ssh, sshkit, boot with a percentage limit, logging and the root timeouts.
#[test]
fn k2_ssh_sshkit_boot_logging() {
    let c = load_ok("k2_ssh_sshkit_boot_logging", None, &[]);
    assert_eq!((c.ssh.user.as_str(), c.ssh.port), ("deploy", 2222));
    assert_eq!(c.ssh.proxy.as_deref(), Some("bastion@10.0.0.254"));
    assert_eq!(c.ssh.keys, ["~/.ssh/deploy_ed25519"]);
    let files = vec![
        "~/.ssh/config".to_string(),
        "~/.ssh/fleet_config".to_string(),
    ];
    assert_eq!(c.ssh.config, Some(SshConfig::Files(files)));
    assert_eq!(
        (c.sshkit.max_concurrent_starts, c.sshkit.pool_idle_timeout),
        (10, 300)
    );
    assert_eq!(c.boot.limit, Some(HostCount::Percent(25)));
    assert_eq!(c.boot.limit.unwrap().of(4), 1);
    assert_eq!(c.boot.wait, Some(2));
    assert_eq!(c.logging.driver.as_deref(), Some("json-file"));
    assert_eq!(
        (
            c.readiness_delay,
            c.deploy_timeout,
            c.drain_timeout,
            c.stop_timeout
        ),
        (5, 60, 10, Some(15))
    );
    assert_eq!(c.retain_containers, 3);
}

/// Defaults apply when sections are absent.
#[test]
fn defaults_when_absent() {
    let c = load_ok("seed_hooks", None, &[]);
    assert_eq!(
        (c.ssh.user.as_str(), c.ssh.port, c.retain_containers),
        ("root", 22, 5)
    );
    assert_eq!(
        (c.readiness_delay, c.deploy_timeout, c.drain_timeout),
        (7, 30, 30)
    );
    let p = c.role("web").unwrap().proxy.as_ref().unwrap();
    assert_eq!((p.app_port, p.healthcheck.path.as_str()), (80, "/up"));
    assert_eq!(c.flotilla.rollout.step_timeout, 300);
}

/// Accessories by `role`, `roles` and `hosts`, resolved to hosts, with files and a proxy.
#[test]
fn k2_accessories_roles() {
    let c = load_ok("k2_accessories_roles", None, &[]);
    let a = |n: &str| c.accessories.iter().find(|a| a.name == n).unwrap();
    assert_eq!(a("cache").hosts, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(a("cache").port.as_deref(), Some("6379:6379"));
    assert_eq!(a("agent").hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert_eq!(a("agent").roles, ["web", "jobs"]);
    assert_eq!(a("agent").network.as_deref(), Some("host"));
    assert_eq!(a("search").hosts, ["10.0.0.9", "10.0.0.10"]);
    assert_eq!(a("search").proxy.as_ref().unwrap().app_port, 9200);
    assert_eq!(a("search").files.len(), 1);
}

/// Root keys: labels, volumes, paths (a custom secrets_path is where secrets are read), aliases,
/// and an `x-` anchor merged with `<<:`.
#[test]
fn k2_root_misc() {
    let c = load_ok("k2_root_misc", None, &[]);
    assert_eq!(c.labels["com.example.owner"], "platform");
    assert_eq!(c.volumes, ["/storage:/rails/storage"]);
    assert_eq!(
        (c.hooks_path.as_str(), c.secrets_path.as_str()),
        ("bin/hooks", "config/secrets")
    );
    assert_eq!(c.secrets.get("UNUSED").unwrap().expose(), "1");
    assert_eq!(c.error_pages_path.as_deref(), Some("public/errors"));
    assert_eq!(c.minimum_version.as_deref(), Some("2.4.0"));
    assert_eq!(
        c.aliases["console"],
        "app exec -i --reuse \"bin/rails console\""
    );
    assert_eq!(c.env.clear["LANG"], "C.UTF-8");
    assert_eq!(c.env.clear["RAILS_ENV"], "production");
}

/// x-flotilla: rollout policy, NATS cluster (with the CA its TLS is pinned to) and metrics
/// listener.
#[test]
fn x_flotilla() {
    let f = load_ok("x_flotilla", None, &[]).flotilla;
    assert_eq!(f.rollout.canary, Some(HostCount::Count(1)));
    assert_eq!(f.rollout.max_parallel, Some(HostCount::Percent(50)));
    assert_eq!(
        (
            f.rollout.max_failures,
            f.rollout.auto_rollback,
            f.rollout.step_timeout
        ),
        (HostCount::Count(2), true, 120)
    );
    let nats = f.nats.unwrap();
    assert_eq!(
        (
            nats.url.as_deref().unwrap_or_default(),
            nats.creds.as_deref()
        ),
        (
            "nats://nats.internal:4222",
            Some("/etc/flotilla/deploy.creds")
        )
    );
    // The CA a NATS of the user's own is signed by: every client pins it.
    assert_eq!(nats.ca.as_deref(), Some("config/nats-ca.pem"));
    assert_eq!(f.metrics.unwrap().listen, "127.0.0.1:9394");
}

/// A key written twice loads as Kamal loads it (the last value wins), with a warning.
#[test]
fn k2_duplicate_keys_last_wins() {
    let c = load_ok("k2_duplicate_keys_last_wins", None, &[]);
    assert_eq!(c.image, "acme/second");
    assert_eq!(
        super::warnings(&c),
        ["config/deploy.yml:4:1: image: duplicate key: the last one is used, as Kamal does"]
    );
}

/// No secret value appears in `Debug` of the config, nor in its YAML or JSON output: env
/// secrets, a certificate, a registry password written in clear and SSH key data.
#[test]
fn redaction_everywhere() {
    use flotilla_deploy::config::output;
    let c = load_ok(
        "redaction_everywhere",
        None,
        &[("SSH_PRIVATE_KEY", "ssh-key-material")],
    );
    assert_eq!(c.ssh.key_data[0].expose(), "ssh-key-material");
    assert_eq!(
        c.registry.password.as_ref().unwrap().expose(),
        "clear-registry-password"
    );
    let shown = [
        format!("{c:?}"),
        format!("{c:#?}"),
        output::to_yaml(&c).unwrap(),
        output::to_json(&c).unwrap(),
    ];
    for text in &shown {
        for value in [
            "api-token-value",
            "cert-material",
            "key-material",
            "clear-registry-password",
            "ssh-key-material",
        ] {
            assert!(!text.contains(value), "{value} leaked into:\n{text}");
        }
        assert!(text.contains("[REDACTED]"));
    }
}

/// x-flotilla.rollout.max_failures takes a percentage of the hosts as well as a count.
#[test]
fn x_flotilla_failure_budget_percent() {
    let f = load_ok("x_flotilla_failure_budget_percent", None, &[]).flotilla;
    assert_eq!(f.rollout.max_failures, HostCount::Percent(25));
    let default = load_ok("x_flotilla", None, &[]).flotilla;
    assert_eq!(default.rollout.max_failures, HostCount::Count(2));
}

/// `options:` the executor applies load without a word; one it does not apply yet is a
/// located warning naming it, never dropped in silence. `shm-size` is applied to accessories
/// (the seed guide's database sets it), not yet to the app's containers.
#[test]
fn docker_options_applied_or_warned() {
    let c = load_ok("k2_docker_options", None, &[]);
    let w = warnings(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("servers/web/options/shm-size") && w[0].contains("not applied"),
        "{w:?}"
    );
}

/// x-flotilla without a NATS url: setup boots NATS from `nats.image` on the `control` host
/// (one host or a list).
#[test]
fn x_flotilla_setup_boots_nats() {
    let f = load_ok("x_flotilla_setup", None, &[]).flotilla;
    let nats = f.nats.unwrap();
    assert_eq!(
        (nats.url, nats.image.as_deref()),
        (None, Some("registry.internal/nats:2.15"))
    );
    assert_eq!(f.control, ["10.0.0.2"]);
}
