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
