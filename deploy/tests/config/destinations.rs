//! Destinations: `deploy.DEST.yml` deep-merged over the base file, both rendered as ERB, and
//! secrets read from `secrets-common` then `secrets.DEST`.

use super::load_ok;

/// Without a destination: the base file alone, ERB defaults, `.kamal/secrets` after the common file.
#[test]
fn base_only() {
    let c = load_ok("dest_erb_merge", None, &[]);
    assert_eq!(c.role("web").unwrap().hosts, ["10.0.0.1"]);
    assert_eq!(c.env.clear["REGION"], "eu");
    assert!(
        c.proxy.is_none(),
        "the proxy block is inside an ERB if on the destination"
    );
    assert_eq!(
        c.secrets.get("RAILS_MASTER_KEY").unwrap().expose(),
        "production-key"
    );
}

/// With `-d staging`: maps merge key by key, lists are replaced, ERB sees `KAMAL_DESTINATION`,
/// and `secrets.staging` wins over `secrets-common`.
#[test]
fn staging_merges_over_base() {
    let c = load_ok("dest_erb_merge", Some("staging"), &[("REGION", "us")]);
    let web = c.role("web").unwrap();
    assert_eq!(
        web.hosts,
        ["10.1.0.1", "10.1.0.2"],
        "lists are replaced, not appended"
    );
    assert_eq!(
        web.labels["tier"], "base",
        "maps merge: keys only in the base stay"
    );
    assert_eq!(c.env.clear["RAILS_ENV"], "staging");
    assert_eq!(c.env.clear["REGION"], "us");
    let secrets: Vec<_> = c.env.secret.iter().map(|s| s.var.as_str()).collect();
    assert_eq!(secrets, ["RAILS_MASTER_KEY", "STAGING_ONLY"]);
    assert_eq!(
        c.proxy.as_ref().unwrap().hosts,
        ["staging.shop.example.com"]
    );
    assert_eq!(
        c.secrets.get("STAGING_ONLY").unwrap().expose(),
        "from-staging"
    );
    assert_eq!(
        c.secrets.get("RAILS_MASTER_KEY").unwrap().expose(),
        "common-key"
    );
    assert_eq!(
        c.secrets.searched_list(),
        ".kamal/secrets-common, .kamal/secrets.staging"
    );
}

/// ERB in the destination file is rendered too (`ENV.fetch` with a default, comments, trim).
#[test]
fn erb_in_destination_file() {
    let c = load_ok("dest_erb_merge", Some("staging"), &[("WITH_WORKER", "no")]);
    let secrets: Vec<_> = c.env.secret.iter().map(|s| s.var.as_str()).collect();
    assert_eq!(
        secrets,
        ["RAILS_MASTER_KEY"],
        "the base list stays when the ERB branch is off"
    );
}

/// A destination whose file does not exist is an error naming that file.
#[test]
fn missing_destination_file() {
    let errs = super::load_err("dest_erb_merge", Some("prod"), &[]);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("config/deploy.prod.yml: cannot read config file:"),
        "{errs:?}"
    );
}

/// `-c` picks another base file; its destination file sits beside it.
#[test]
fn other_config_file() {
    let mut o = super::opts("dest_erb_merge", Some("staging"), &[]);
    o.config_file = "config/deploy.yml".into();
    assert_eq!(
        o.destination_file().unwrap(),
        std::path::Path::new("config/deploy.staging.yml")
    );
    o.config_file = "ops/app.yaml".into();
    assert_eq!(
        o.destination_file().unwrap(),
        std::path::Path::new("ops/app.staging.yaml")
    );
}

/// The scheduler service's way: the files rendered on the operator's machine (ERB with its
/// environment and destination) and the secrets resolved there decode elsewhere, with no
/// project directory, into the same config `flotilla config --json` prints.
#[test]
fn rendered_elsewhere_is_the_same_config() {
    use flotilla_deploy::config::{Secrets, load_rendered, output, render};
    let opts = super::opts("dest_erb_merge", Some("staging"), &[("REGION", "us")]);
    let here = load_ok("dest_erb_merge", Some("staging"), &[("REGION", "us")]);
    let files = render(&opts).unwrap();
    assert_eq!(files.len(), 2, "the base file and the destination's");
    assert!(
        !files.iter().any(|f| f.text.contains("<%")),
        "ERB is rendered"
    );
    let secrets = Secrets::from_values(
        here.secrets
            .iter()
            .map(|(name, value)| (name.to_owned(), value.clone())),
    );
    let there = load_rendered(&files, Some("staging"), secrets).unwrap();
    assert_eq!(
        output::to_json(&there).unwrap(),
        output::to_json(&here).unwrap()
    );
    assert_eq!(
        there.secrets.get("RAILS_MASTER_KEY").unwrap().expose(),
        here.secrets.get("RAILS_MASTER_KEY").unwrap().expose()
    );
}
