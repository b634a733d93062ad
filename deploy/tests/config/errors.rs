//! Every kind of configuration error, with its exact located message.

use super::{fixture, load_err};

/// Load `errors/NAME` and compare all its diagnostics, in order, with `expected.txt`.
fn check(name: &str, destination: Option<&str>, env: &[(&str, &str)]) {
    let got = load_err(&format!("errors/{name}"), destination, env).join("\n") + "\n";
    let path = fixture(&format!("errors/{name}/expected.txt"));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        got, want,
        "diagnostics of errors/{name} differ from expected.txt"
    );
}

macro_rules! cases {
    ($($(#[$doc:meta])* $name:ident $(, dest = $dest:expr)? $(, env = $env:expr)?;)*) => {$(
        $(#[$doc])*
        #[test]
        fn $name() {
            #[allow(unused_mut, unused_assignments)]
            let mut dest: Option<&str> = None;
            $(dest = $dest;)?
            #[allow(unused_mut, unused_assignments)]
            let mut env: &[(&str, &str)] = &[];
            $(env = $env;)?
            check(stringify!($name), dest, env);
        }
    )*};
}

cases! {
    /// Broken YAML is reported at its line and column, not as a generic failure.
    malformed_yaml;
    /// Unknown keys are errors with a "did you mean" from the known keys; `x-` keys are ignored.
    unknown_keys_did_you_mean;
    /// Values of the wrong type name their key path and what was expected.
    wrong_types;
    /// `service` and `image` are required.
    missing_service_and_image;
    /// A service name outside `[a-z0-9_-]+` is rejected.
    invalid_service_name;
    /// A role without hosts is an error unless `allow_empty_roles` is set.
    empty_role;
    /// An accessory needs a host or role, and its role must exist.
    accessory_without_host;
    /// Without Ruby, Ruby the ERB subset does not support is an error naming the construct
    /// and what would render it, never dropped.
    unsupported_erb, env = &[("IMAGE", "acme/shop"), ("FLOTILLA_RUBY", "")];
    /// `ENV.fetch` of an unset variable fails at the tag.
    erb_fetch_unset;
    /// `options:` values Docker would refuse are located errors at load time, not failures
    /// halfway through a deploy.
    bad_docker_options;
    /// An accessory's `options:` the executor applies (`restart`, `cpus`, `hostname`,
    /// `network`) are checked too: each bad value a located error naming its key.
    bad_accessory_options;
    /// A secret named in env or registry that no secrets file defines names the files searched.
    secret_not_defined;
    /// `require_destination: true` refuses to load without `-d`.
    require_destination;
    /// A YAML error in ERB output points at the template line the user wrote.
    yaml_error_after_erb;
    /// Bad lines in a secrets file are located in that file.
    bad_secrets_file;
    /// A failing `$(command)` reports its exit status and first line of stderr, and nothing
    /// else: the secrets it would have defined are not then also "not defined".
    failing_secret_command;
    /// A secret with no secrets file at all says which files were looked for.
    no_secrets_file;
    /// All problems are reported in one run, not only the first.
    many_errors_at_once;
    /// `primary_role` must name a role of `servers`.
    primary_role_missing;
    /// `servers` is required.
    missing_servers;
    /// An accessory needs an image.
    accessory_missing_image;
    /// An empty file is not a config.
    empty_file;
    /// A config must be a map of settings.
    top_level_list;
    /// Automatic SSL needs a host, as Kamal says.
    proxy_ssl_without_host;
    /// `host` and `hosts` together are refused, as Kamal refuses them.
    proxy_host_and_hosts;
    /// Automatic SSL for a role on two hosts needs custom certificates.
    ssl_role_on_two_hosts;
    /// Two roles cannot both terminate SSL for one host name.
    ssl_host_on_two_roles;
    /// Roles sharing a host must agree on `proxy.run`: one proxy runs per host.
    conflicting_proxy_run;
    /// At least one container is retained.
    retain_containers_zero;
    /// `restart` takes a Docker restart policy, not a boolean.
    restart_option_boolean;
    /// A `minimum_version` above the Kamal version Flotilla reads is refused, not ignored.
    minimum_version_above_kamal;
    /// A registry other than a local one needs `username` and `password`.
    registry_without_credentials;
    /// An `image` whose ERB renders nothing is located at its key, not at 1:1.
    image_renders_empty;
    /// Alias names Kamal refuses: one of its commands, or not lowercase.
    alias_names;
    /// Builder settings Kamal refuses: an unknown cache type, the docker driver with several
    /// arches or a cache, local builds disabled with no remote.
    builder_invalid;
    /// Problems in the destination file are reported in that file, at its own lines.
    destination_file_errors, dest = Some("staging");
}
