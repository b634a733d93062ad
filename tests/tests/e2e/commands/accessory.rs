//! A database-like accessory keeps its data across `accessory reboot`: what the container
//! wrote to its named Docker volume is read back by the new container.

use crate::project::Project;
use crate::support::{fleet, ssh_ok};

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
