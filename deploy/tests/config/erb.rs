//! ERB as Kamal renders it: the stock templates, the Ruby real configs use, and Ruby's own ERB
//! for templates beyond the built-in subset.

use super::{load_ok, warnings};

/// Without Ruby: `FLOTILLA_RUBY` set empty, whatever is on this machine's PATH.
const NO_RUBY: (&str, &str) = ("FLOTILLA_RUBY", "");

/// The file `kamal init` writes loads: the ERB in its commented-out `RUBY_VERSION` (a Ruby
/// constant only Ruby knows) cannot change the config, so without Ruby it is set aside with a
/// warning naming the line, and everything else resolves as Kamal resolves it.
#[test]
fn kamal_init_template_loads() {
    let c = load_ok(
        "erb_kamal_init",
        None,
        &[NO_RUBY, ("KAMAL_REGISTRY_PASSWORD", "reg-pw")],
    );
    assert_eq!(
        (c.service.as_str(), c.image.as_str()),
        ("blog", "acme/blog")
    );
    assert_eq!(c.role("web").unwrap().hosts, ["192.168.0.1"]);
    assert_eq!(c.builder.arch, ["amd64"]);
    assert!(c.builder.args.is_empty());
    assert_eq!(c.registry.password.as_ref().unwrap().expose(), "reg-pw");
    let w = warnings(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("config/deploy.yml:27:") && w[0].contains("constant `RUBY_ENGINE`"),
        "{w:?}"
    );
}

/// With `RBENV_VERSION` set the comment's expression never reaches the Ruby constant, as in
/// Ruby: no warning at all.
#[test]
fn kamal_init_template_with_rbenv_has_no_warning() {
    let c = load_ok(
        "erb_kamal_init",
        None,
        &[NO_RUBY, ("RBENV_VERSION", "3.3.0")],
    );
    assert!(warnings(&c).is_empty(), "{:?}", warnings(&c));
}

/// The Rails 8 generator's `config/deploy.yml` loads: `File.read('.ruby-version').strip` in a
/// comment is evaluated (from the project directory) and the secrets' `$(cat ...)` resolves.
#[test]
fn rails8_generator_config_loads() {
    let c = load_ok(
        "erb_rails8_generator",
        None,
        &[NO_RUBY, ("KAMAL_REGISTRY_PASSWORD", "pw")],
    );
    assert_eq!(c.service, "notes");
    assert_eq!(c.role("web").unwrap().hosts, ["10.1.0.5"]);
    assert_eq!(c.env.clear["SOLID_QUEUE_IN_PUMA"], "true");
    assert_eq!(c.aliases["logs"], "app logs -f");
    assert_eq!(c.asset_path.as_deref(), Some("/rails/public/assets"));
    assert_eq!(
        c.secrets.get("RAILS_MASTER_KEY").unwrap().expose(),
        "notes-master-key"
    );
    assert!(warnings(&c).is_empty(), "{:?}", warnings(&c));
}

/// The ERB forms found in real configs resolve to Kamal's values: `require "dotenv";
/// Dotenv.load`, backticks, `ENV.fetch(...).split(",").each do`, `.strip`, `.to_i`,
/// `ENV.fetch("X") { ... }`, the `Kamal::Utils.docker_arch == "arm64" ? ... : ...` ternary of
/// remote-builder configs, and `"#{...}"` interpolation. `git` and `docker` are stand-ins.
#[test]
fn ruby_forms_real_configs_use() {
    let c = load_ok("erb_ruby_forms", None, &[NO_RUBY]);
    assert_eq!(c.image, "acme/forms:abc1234");
    assert_eq!(c.role("web").unwrap().hosts, ["10.2.0.1", "10.2.0.2"]);
    assert_eq!(
        c.role("workers").unwrap().cmd.as_deref(),
        Some("bin/jobs --threads 8")
    );
    assert_eq!(c.registry.server.as_deref(), Some("registry.example.com"));
    assert_eq!(c.builder.arch, ["arm64"]);
    assert_eq!(c.builder.remote.as_deref(), Some("ssh://builder@amd64-box"));
    assert_eq!(c.env.clear["BUILT_FOR"], "from-dotenv-4");
}

/// A variable already in the environment wins over `.env`, as `Dotenv.load` keeps it.
#[test]
fn dotenv_load_keeps_the_process_environment() {
    let c = load_ok("erb_ruby_forms", None, &[NO_RUBY, ("STAGE", "from-shell")]);
    assert_eq!(c.env.clear["BUILT_FOR"], "from-shell-4");
}

/// A template beyond the built-in subset (`case`/`when`, `Time`) is rendered by Ruby's own ERB
/// when Ruby is there, so the result is Kamal's. This test needs `ruby` on the PATH.
#[test]
fn beyond_the_subset_ruby_renders_it() {
    let c = load_ok("erb_beyond_subset", None, &[("TIER", "large")]);
    assert_eq!(c.servers[0].hosts, ["10.3.0.2"]);
    assert_eq!(c.builder.args["YEAR"], "1970");
}

/// Without Ruby, the same template is a located error naming the construct and what is needed.
#[test]
fn beyond_the_subset_without_ruby_says_what_is_needed() {
    let e = super::load_err("erb_beyond_subset", None, &[NO_RUBY]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("config/deploy.yml:4:4: unsupported ERB: `case`")
            && e[0].ends_with(
                "with `ruby` on the PATH, Flotilla renders this file with Ruby's ERB as Kamal does)"
            ),
        "{e:?}"
    );
}

/// Beyond the subset with `Dotenv.load` too: Ruby renders it, with `Dotenv` stood in for when
/// the gem is absent, so `.env` values still reach the template. Needs `ruby` on the PATH.
#[test]
fn beyond_the_subset_with_dotenv_ruby_renders_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join(".env.deploy"),
        "TIER=large\nexport HOST_B=\"10.3.0.9\" # b\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config/deploy.yml"),
        "<% require \"dotenv\"; Dotenv.load(\".env.deploy\") -%>\nservice: beyond\nimage: acme/beyond\nservers:\n<% case ENV[\"TIER\"] -%>\n<% when \"large\" -%>\n  - <%= ENV[\"HOST_B\"] %>\n<% else -%>\n  - 10.3.0.1\n<% end -%>\n",
    )
    .unwrap();
    let opts = flotilla_deploy::config::LoadOptions {
        env: std::collections::BTreeMap::from([(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        )]),
        ..flotilla_deploy::config::LoadOptions::new(dir.path())
    };
    let c = flotilla_deploy::config::load(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.servers[0].hosts, ["10.3.0.9"]);
}
