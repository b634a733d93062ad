//! Configs Kamal accepts that an earlier Flotilla refused, each resolved as Kamal resolves it.
//! (The configs Kamal refuses are error fixtures in `errors.rs`.)

use flotilla_deploy::config::Credential;

use super::{load_ok, warnings};

/// A config of accessories only, with no `servers`, loads: there are no app roles.
#[test]
fn accessories_only() {
    let c = load_ok("k2_accessories_only", None, &[]);
    assert!(c.servers.is_empty());
    assert_eq!(c.accessories[0].hosts, ["10.4.0.1"]);
    assert!(warnings(&c).is_empty());
}

/// `service: MyApp` is valid, as Kamal's `/^[a-z0-9_-]+$/i` allows capitals.
#[test]
fn service_name_with_capitals() {
    let c = load_ok("k2_service_mixed_case", None, &[]);
    assert_eq!(c.service, "MyApp");
}

/// With a local registry and no `image`, the image is the service name, pushed to that registry.
#[test]
fn local_registry_without_image() {
    let c = load_ok("k2_local_registry_no_image", None, &[]);
    assert_eq!(c.image, "localapp");
    assert_eq!(c.repository(), "localhost:5000/localapp");
    assert!(c.registry.is_local());
}

/// An accessory's own `registry:` is kept: the image is pulled from that server, with that
/// server's credentials; accessories without one use the image as written.
#[test]
fn accessory_with_its_own_registry() {
    let c = load_ok("k2_accessory_registry", None, &[]);
    let tools = &c.accessories[0];
    assert_eq!(tools.image, "other.registry/busybox:latest");
    let r = tools.registry.as_ref().expect("registry kept");
    assert_eq!(r.server.as_deref(), Some("other.registry"));
    assert!(matches!(&r.username, Some(Credential::Clear(u)) if u == "robot"));
    assert_eq!(r.password.as_ref().unwrap().expose(), "other-pw");
    let json = flotilla_deploy::config::output::to_json(&c).unwrap();
    assert!(
        !json.contains("other-pw") && json.contains("other.registry"),
        "the accessory's registry prints with its password redacted"
    );
    let db = &c.accessories[1];
    assert_eq!(db.image, "postgres:16");
    assert!(db.registry.is_none());
}

/// A Kamal 2 `builder` without `arch` (which Kamal refuses with "Builder arch not set") builds
/// for the local architecture, with a warning quoting Kamal's message, so Flotilla's own
/// projects keep working.
#[test]
fn builder_without_arch_warns() {
    let c = load_ok("k2_builder_without_arch", None, &[]);
    assert!(c.builder.arch.is_empty());
    assert_eq!(
        warnings(&c),
        [
            "config/deploy.yml:5:3: builder/arch: Builder arch not set: Kamal 2 refuses this config; Flotilla builds for the local Docker's architecture (set e.g. `arch: amd64`)"
        ]
    );
}
