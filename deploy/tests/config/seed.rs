//! Every example config of the seed guide loads, with the meaning Kamal gives it.

use flotilla_deploy::config::{OptionValue, Ssl};

use super::{load_ok, warnings};

/// The guide's minimal setup: one web host, registry password and env secrets from
/// `$VAR`-expanded secrets, and the Traefik rule label turned into the proxy host.
#[test]
fn seed_minimal() {
    let env = [
        ("DOCKERHUB_TOKEN", "hub-token"),
        ("RAILS_MASTER_KEY", "mk"),
        ("DATABASE_URL", "postgres://x"),
    ];
    let c = load_ok("seed_minimal", None, &env);
    assert_eq!(
        (c.service.as_str(), c.image.as_str()),
        ("myapp", "username/myapp")
    );
    let web = c.role("web").unwrap();
    assert_eq!(web.hosts, ["192.168.1.1"]);
    assert_eq!(web.proxy.as_ref().unwrap().hosts, ["myapp.com"]);
    assert_eq!(c.registry.password.as_ref().unwrap().expose(), "hub-token");
    assert_eq!(c.registry.username.as_ref().unwrap().expose(), "username");
    assert_eq!(c.env.clear["RAILS_LOG_TO_STDOUT"], "true");
    let secrets: Vec<_> = c.env.secret.iter().map(|s| s.var.as_str()).collect();
    assert_eq!(secrets, ["RAILS_MASTER_KEY", "DATABASE_URL"]);
    assert_eq!(
        c.secrets.get("DATABASE_URL").unwrap().expose(),
        "postgres://x"
    );
    assert!(warnings(&c).is_empty());
}

/// Multi-role: the worker runs its own command and, with Kamal 1's `traefik: false`, no proxy.
#[test]
fn seed_multi_role() {
    let c = load_ok("seed_multi_role", None, &[]);
    let names: Vec<_> = c.servers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["web", "worker"]);
    assert_eq!(c.role("web").unwrap().hosts, ["192.168.1.1", "192.168.1.2"]);
    let worker = c.role("worker").unwrap();
    assert_eq!(worker.cmd.as_deref(), Some("bundle exec sidekiq"));
    assert!(worker.proxy.is_none());
    assert_eq!(worker.env.secret.len(), 3, "roles inherit the root env");
    assert_eq!(c.all_hosts(), ["192.168.1.1", "192.168.1.2", "192.168.1.3"]);
}

/// Accessories: image, host, port, env with a secret, directories, options and cmd.
#[test]
fn seed_accessories() {
    let c = load_ok("seed_accessories", None, &[]);
    let names: Vec<_> = c.accessories.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["db", "redis"]);
    let db = &c.accessories[0];
    assert_eq!(
        (db.image.as_str(), db.port.as_deref()),
        ("postgres:16", Some("5432"))
    );
    assert_eq!(db.hosts, ["192.168.1.1"]);
    assert_eq!(db.env.clear["POSTGRES_DB"], "myapp_production");
    assert_eq!(db.env.secret[0].secret, "POSTGRES_PASSWORD");
    assert_eq!(db.directories, ["data:/var/lib/postgresql/data"]);
    assert_eq!(db.options["shm-size"], OptionValue::One("256m".into()));
    assert_eq!(
        c.accessories[1].cmd.as_deref(),
        Some("redis-server --appendonly yes")
    );
}

/// The 1Password secrets file runs `op read ...` through the shell for each value.
#[test]
fn seed_secrets_1password() {
    let c = load_ok("seed_secrets_1password", None, &[]);
    let s = |n: &str| c.secrets.get(n).unwrap().expose().to_string();
    assert_eq!(
        s("KAMAL_REGISTRY_PASSWORD"),
        "secret-for-Infrastructure/DockerHub/password"
    );
    assert_eq!(
        s("POSTGRES_PASSWORD"),
        "secret-for-MyApp/production-db/password"
    );
    assert_eq!(
        c.servers[0].name, "web",
        "a plain host list becomes role web"
    );
}

/// The multi-environment ERB picks the service by `KAMAL_DESTINATION`; staging secrets win.
#[test]
fn seed_multi_environment() {
    let prod = load_ok("seed_multi_environment", None, &[]);
    assert_eq!(prod.service, "myapp");
    assert_eq!(
        prod.secrets.get("RAILS_MASTER_KEY").unwrap().expose(),
        "production-key"
    );
    let staging = load_ok("seed_multi_environment", Some("staging"), &[]);
    assert_eq!(staging.service, "myapp-staging");
    assert_eq!(staging.destination.as_deref(), Some("staging"));
    assert_eq!(staging.servers[0].hosts, ["192.168.2.1"]);
    assert_eq!(
        staging.secrets.get("RAILS_MASTER_KEY").unwrap().expose(),
        "staging-key"
    );
}

/// Traefik with Let's Encrypt: the ACME email, the https redirect, the router host and TLS are
/// translated; each other Traefik setting is one warning line.
#[test]
fn seed_traefik_ssl() {
    let c = load_ok("seed_traefik_ssl", None, &[]);
    let root = c.proxy.as_ref().unwrap();
    assert_eq!(root.acme_email.as_deref(), Some("admin@myapp.com"));
    let web = c.role("web").unwrap().proxy.as_ref().unwrap();
    assert_eq!(web.hosts, ["myapp.com"]);
    assert!(matches!(web.ssl, Ssl::Auto));
    assert!(web.ssl_redirect);
    assert_eq!(web.app_port, 3000, "Kamal 1 reaches the app on port 3000");
    assert_eq!(c.builder.arch, ["amd64", "arm64"], "Kamal 1 builds both");
    assert_eq!(
        warnings(&c),
        [
            "config/deploy.yml:2:1: builder: Kamal 1 configuration without `builder.arch`: building amd64 and arm64 as Kamal 1 does; the Kamal 2 form is `builder: {arch: [amd64, arm64]}`",
            "config/deploy.yml:6:3: traefik/options: Kamal 1 Traefik setting ignored: Flotilla runs its own proxy",
            "config/deploy.yml:12:5: traefik/args/entryPoints.web.address: Kamal 1 Traefik setting ignored: Flotilla runs its own proxy",
            "config/deploy.yml:13:5: traefik/args/entryPoints.websecure.address: Kamal 1 Traefik setting ignored: Flotilla runs its own proxy",
            "config/deploy.yml:17:5: traefik/args/certificatesResolvers.letsencrypt.acme.storage: Kamal 1 Traefik setting ignored: Flotilla runs its own proxy",
            "config/deploy.yml:18:5: traefik/args/certificatesResolvers.letsencrypt.acme.httpchallenge.entrypoint: Kamal 1 Traefik setting ignored: Flotilla runs its own proxy",
            "config/deploy.yml:21:3: servers: Kamal 1 configuration (`traefik`): proxied roles are reached on port 3000 as Kamal 1 does; the Kamal 2 form is `proxy: {app_port: 3000}`",
        ]
    );
}

/// The Kamal 1 health check becomes the proxy's health check path, app port and interval.
#[test]
fn seed_healthcheck() {
    let c = load_ok("seed_healthcheck", None, &[]);
    let p = c.role("web").unwrap().proxy.as_ref().unwrap();
    assert_eq!(
        (
            p.healthcheck.path.as_str(),
            p.app_port,
            p.healthcheck.interval
        ),
        ("/up", 3000, 10)
    );
    assert_eq!(c.healthcheck.as_ref().unwrap().max_attempts, Some(30));
}

/// The builder examples: native arm64, Kamal 1 multiarch, and a Kamal 1 remote builder map.
#[test]
fn seed_builders() {
    assert_eq!(
        load_ok("seed_builder_arm64", None, &[]).builder.arch,
        ["arm64"]
    );
    assert_eq!(
        load_ok("seed_builder_multiarch", None, &[]).builder.arch,
        ["amd64", "arm64"]
    );
    let remote = load_ok("seed_builder_remote", None, &[]).builder;
    assert_eq!(remote.arch, ["amd64"]);
    assert_eq!(remote.remote.as_deref(), Some("ssh://builder@build-server"));
}

/// The guide's directory layout with hooks loads with the default hooks path.
#[test]
fn seed_hooks() {
    let c = load_ok("seed_hooks", None, &[]);
    assert_eq!(c.hooks_path, ".kamal/hooks");
    assert!(
        super::fixture("seed_hooks")
            .join(&c.hooks_path)
            .join("pre-deploy")
            .is_file()
    );
}
