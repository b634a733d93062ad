//! A database-like accessory keeps its data across `accessory reboot`: what the container
//! wrote to its named Docker volume is read back by the new container. `accessory remove`
//! takes the container, its image and its directory off the host, as Kamal's does.

use crate::project::Project;
use crate::support::{fleet, ssh_ok};
use flotilla_e2e::testapp;

/// `accessory boot db` runs the accessory with its named volume; a row it writes there (through
/// `accessory exec --reuse`, in the running container) is read back through the new container
/// after `accessory reboot db`, which did make a new container; `accessory remove` leaves the
/// volume (Kamal does: data outlives the container).
#[test]
fn accessory_reboot_keeps_its_volumes_data() {
    let fleet = fleet(1);
    let host = &fleet.hosts[0];
    let extra = format!(
        "accessories:\n  db:\n    image: {registry}/testapp:v1\n    host: {addr}\n    \
         volumes:\n      - e2e-dbdata:/var/lib/db\n",
        registry = fleet.registry(),
        addr = host.addr,
    );
    let project = Project::new(&fleet, &extra);
    // The image the accessory runs is the app's, pushed by a deploy.
    project.flotilla_ok(&["deploy", "--version", "v1"], &[("APP_VERSION", "v1")]);
    project.flotilla_ok(&["accessory", "boot", "db"], &[]);
    let container = "testapp-db";
    let id = || {
        ssh_ok(
            &fleet,
            host,
            &format!("docker inspect {container} --format '{{{{.Id}}}}'"),
        )
    };
    let mounts = ssh_ok(
        &fleet,
        host,
        &format!(
            "docker inspect {container} --format '{{{{range .Mounts}}}}{{{{.Type}}}}:{{{{.Name}}}}:{{{{.Destination}}}} {{{{end}}}}'"
        ),
    );
    assert!(mounts.contains("volume:e2e-dbdata:/var/lib/db"), "{mounts}");

    let exec = |args: &[&str]| {
        let mut all = vec!["accessory", "exec", "db", "--reuse", "/app"];
        all.extend_from_slice(args);
        project.flotilla_ok(&all, &[])
    };
    exec(&["store", "/var/lib/db/rows", "row-42"]);
    let before = id();
    project.flotilla_ok(&["accessory", "reboot", "db"], &[]);
    assert_ne!(id(), before, "reboot made a new container");
    let read = exec(&["fetch", "/var/lib/db/rows"]);
    assert!(read.contains("row-42"), "{read}");

    project.flotilla_ok(&["accessory", "remove", "db", "-y"], &[]);
    assert_eq!(
        ssh_ok(&fleet, host, "docker volume ls -q --filter name=e2e-dbdata"),
        "e2e-dbdata"
    );
}

/// An accessory's `options:` (`restart`, `network`, `cpus`, `hostname`, `user`) are what
/// Docker shows of its container. `accessory remove` does what Kamal's does: the container
/// stopped and removed, the accessory's directory removed, and its image removed from the
/// host's Docker. While another
/// accessory still runs the same image, the image stays and the command says so as a warning,
/// without failing; removing that last user takes the image too.
#[test]
fn accessory_options_apply_and_remove_takes_its_image_unless_another_container_uses_it() {
    let fleet = fleet(1);
    let host = &fleet.hosts[0];
    // An image of the accessories' own, which no app container runs.
    let binary = testapp::build_static_binary().unwrap();
    let image = testapp::build_and_push(&fleet, &binary, "testdb", "v1", "").unwrap();
    let extra = format!(
        "accessories:\n  db:\n    image: {image}\n    host: {addr}\n    \
         directories:\n      - data:/var/lib/db\n    \
         options:\n      restart: always\n      network: e2e-backend\n      cpus: 0.5\n      \
         hostname: db-1\n      user: \"4242\"\n  \
         replica:\n    image: {image}\n    host: {addr}\n",
        addr = host.addr,
    );
    let project = Project::new(&fleet, &extra);
    project.flotilla_ok(&["accessory", "boot", "all"], &[]);
    let on_host = |what: &str| {
        ssh_ok(
            &fleet,
            host,
            &format!("if {what}; then echo yes; else echo no; fi"),
        )
    };
    let image_there = || on_host(&format!("docker image inspect {image} >/dev/null 2>&1"));
    assert_eq!(image_there(), "yes");
    assert_eq!(on_host("test -d ~/testapp-db/data"), "yes");
    // `options:` reached Docker: what `docker inspect` shows of the running container.
    let shown = |container: &str, format: &str| {
        ssh_ok(
            &fleet,
            host,
            &format!("docker inspect {container} --format '{format}'"),
        )
    };
    assert_eq!(
        shown(
            "testapp-db",
            "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.NetworkMode}} \
             {{.HostConfig.NanoCpus}} {{.Config.Hostname}} {{.Config.User}} {{.State.Running}}"
        ),
        "always e2e-backend 500000000 db-1 4242 true",
        "the executor made the missing network, as it makes `kamal`"
    );
    assert_eq!(
        shown(
            "testapp-replica",
            "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.NetworkMode}}"
        ),
        "unless-stopped kamal",
        "without options, Kamal's defaults"
    );

    let out = project.flotilla(&["accessory", "remove", "db", "-y"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("warning: image {image} kept on {}", host.addr)),
        "{stderr}"
    );
    assert_eq!(
        on_host("docker container inspect testapp-db >/dev/null 2>&1"),
        "no"
    );
    assert_eq!(
        on_host("test -e ~/testapp-db"),
        "no",
        "its directory is gone"
    );
    assert_eq!(image_there(), "yes", "the replica still runs it");

    project.flotilla_ok(&["accessory", "remove", "replica", "-y"], &[]);
    assert_eq!(image_there(), "no", "the image is gone from the host");
}
