//! The Docker command lines of `app`, `accessory`, `prune` and `registry`, asserted exactly.
//! Where a line equals Kamal's own (test/commands/*_test.rb) the test says so; the deliberate
//! differences: no `label=destination=` filter without a destination (Flotilla's executor sets
//! the label only with one), values quoted only when the shell would read them (Kamal quotes
//! every env value), no `latest`-tag lookup for the current container (Flotilla tags no
//! `latest`), the registry password on stdin.

use flotilla_deploy::commands::{
    self, Accessory, App, Logs, NewContainer, prune_app_containers, prune_dangling_images,
    prune_tagged_images,
};
use flotilla_deploy::config::{Config, LoadOptions, load};
use std::collections::BTreeMap;

use super::fixture;

fn config(destination: Option<&str>) -> Config {
    let opts = LoadOptions {
        destination: destination.map(str::to_owned),
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        ..LoadOptions::new(fixture("commands_kamal"))
    };
    load(&opts).unwrap_or_else(|e| panic!("commands_kamal loads:\n{e}"))
}

const WEB_FILTERS: &str = "--filter label=service=app --filter label=role=web";
const ACTIVE: &str = "--filter status=running --filter status=restarting";

/// `app details`, `app containers`, `app images`, `app start` as a user's scripts see them.
#[test]
fn app_listing_and_start() {
    let c = config(None);
    let web = App::new(&c, c.role("web"));
    // Kamal: "docker ps --filter label=service=app --filter label=destination= --filter label=role=web"
    assert_eq!(web.info(), format!("docker ps {WEB_FILTERS}"));
    assert_eq!(
        App::new(&c, None).list_containers(),
        "docker container ls --all --filter label=service=app"
    );
    assert_eq!(App::new(&c, None).list_images(), "docker image ls dhh/app");
    assert_eq!(
        App::new(&c, None).pull_image("999"),
        "docker image pull dhh/app:999"
    );
    // Equal to Kamal's.
    assert_eq!(web.start("999"), "docker start app-web-999");
    assert_eq!(
        web.start_latest(),
        format!("docker ps --latest --all --quiet {WEB_FILTERS} | xargs -r docker start")
    );
    assert_eq!(
        web.container_id_for("123"),
        "docker container ls --all --filter 'name=^app-web-123$' --quiet"
    );
}

/// A destination is part of every container name and filter.
#[test]
fn app_with_destination() {
    let mut c = config(None);
    c.destination = Some("staging".into());
    let web = App::new(&c, c.role("web"));
    // Equal to Kamal's.
    assert_eq!(web.start("999"), "docker start app-web-staging-999");
    assert_eq!(
        web.info(),
        "docker ps --filter label=service=app --filter label=destination=staging --filter label=role=web"
    );
}

/// `app version` and `app stale_containers` read versions from the container names.
#[test]
fn app_versions() {
    let c = config(None);
    let web = App::new(&c, c.role("web"));
    assert_eq!(
        web.current_running_version(),
        format!(
            "docker ps --latest --format '{{{{.Names}}}}' {WEB_FILTERS} {ACTIVE} | while read line; do echo ${{line#app-web-}}; done"
        )
    );
    assert_eq!(
        web.latest_version(),
        format!(
            "docker ps --latest --all --format '{{{{.Names}}}}' {WEB_FILTERS} | while read line; do echo ${{line#app-web-}}; done"
        )
    );
    // Kamal: docker ps ... --format "{{.Names}}" | while read line; do echo ${line#app-web-}; done
    assert_eq!(
        web.list_versions(&[]),
        format!(
            "docker ps {WEB_FILTERS} --format '{{{{.Names}}}}' | while read line; do echo ${{line#app-web-}}; done"
        )
    );
}

/// `app logs` with each of Kamal's options, and `-f` following.
#[test]
fn app_logs() {
    let c = config(None);
    let web = App::new(&c, c.role("web"));
    let current = format!("docker ps --latest --quiet {WEB_FILTERS} {ACTIVE}");
    let base = Logs {
        timestamps: true,
        ..Logs::default()
    };
    assert_eq!(
        web.logs(&base),
        format!("{current} | xargs docker logs --timestamps 2>&1")
    );
    let all = Logs {
        since: Some("5m".into()),
        lines: Some(100),
        grep: Some("my-id".into()),
        grep_options: Some("-C 2".into()),
        ..base.clone()
    };
    // Kamal's tail after its container lookup: "... | xargs docker logs --timestamps --since 5m
    // --tail 100 2>&1 | grep 'my-id' -C 2".
    assert_eq!(
        web.logs(&all),
        format!(
            "{current} | xargs docker logs --timestamps --since 5m --tail 100 2>&1 | grep 'my-id' -C 2"
        )
    );
    let by_id = Logs {
        container_id: Some("C137".into()),
        follow: true,
        lines: Some(10),
        timestamps: false,
        ..Logs::default()
    };
    assert_eq!(
        web.logs(&by_id),
        "echo C137 | xargs docker logs --tail 10 --follow 2>&1"
    );
    let hostile = Logs {
        grep: Some("it's $(reboot)".into()),
        ..Logs::default()
    };
    assert!(web.logs(&hostile).ends_with(r"| grep 'it'\''s $(reboot)'"));
}

/// `app exec`: in the running container (Kamal's exact line), or a new one of the app's image
/// with the role's env, logging, volumes and options, and a unique name.
#[test]
fn app_exec() {
    let c = config(None);
    let web = App::new(&c, c.role("web"));
    // Equal to Kamal's.
    assert_eq!(
        web.exec_existing("999", "bin/rails db:setup", false, &[]),
        "docker exec app-web-999 bin/rails db:setup"
    );
    assert_eq!(
        web.exec_existing("999", "bash", true, &[("foo".into(), "bar baz".into())]),
        "docker exec -it --env 'foo=bar baz' app-web-999 bash"
    );
    let workers = App::new(&c, c.role("workers"));
    assert_eq!(
        workers.exec_new(&NewContainer {
            host: "1.1.1.3",
            version: "999",
            image: "dhh/app:999",
            suffix: "a1b2c3",
            command: "bin/rails console",
            interactive: true,
            env: &[],
            env_file: Some(".flotilla/env/app-workers.env"),
        }),
        "docker run -it --rm --name app-workers-exec-999-a1b2c3 --network kamal \
         --env RAILS_ENV=production --env-file .flotilla/env/app-workers.env \
         --log-opt max-size=10m --volume /local/path:/container/path dhh/app:999 bin/rails console"
    );
}

/// `app stop` of the current container honours the role's `stop_timeout`; of a version, by name.
#[test]
fn app_stop_and_remove() {
    let c = config(None);
    let workers = App::new(&c, c.role("workers"));
    assert_eq!(
        workers.stop(None),
        format!(
            "docker ps --latest --quiet --filter label=service=app --filter label=role=workers {ACTIVE} | xargs docker stop -t 20"
        )
    );
    // Equal to Kamal's.
    assert_eq!(
        App::new(&c, c.role("web")).stop(Some("123")),
        "docker container ls --all --filter 'name=^app-web-123$' --quiet | xargs docker stop"
    );
    assert_eq!(
        App::new(&c, c.role("web")).remove_containers(),
        format!("docker container prune --force {WEB_FILTERS}")
    );
    assert_eq!(
        App::new(&c, None).remove_images(),
        "docker image prune --all --force --filter label=service=app"
    );
}

/// `prune`: Kamal's three lines exactly; `retain_containers` decides the `tail` offset.
#[test]
fn prune_lines_equal_kamal() {
    let c = config(None);
    assert_eq!(
        prune_dangling_images(&c),
        "docker image prune --force --filter label=service=app"
    );
    assert_eq!(
        prune_tagged_images(&c),
        "docker image ls --filter label=service=app --format '{{.ID}} {{.Repository}}:{{.Tag}}' | grep -v -w \"$(docker container ls -a --format '{{.Image}}\\|' --filter label=service=app | tr -d '\\n')dhh/app:latest\\|dhh/app:<none>\" | while read image tag; do docker rmi $tag; done"
    );
    assert_eq!(
        prune_app_containers(&c, 5),
        "docker ps -q -a --filter label=service=app --filter status=created --filter status=exited --filter status=dead | tail -n +6 | while read container_id; do docker rm $container_id; done"
    );
}

/// An accessory's `docker run`: Kamal's order of flags (port published both sides, env,
/// env file, labels, options with `restart` taken out) and `KAMAL_HOST`.
#[test]
fn accessory_run() {
    let c = config(None);
    let acc = |name: &str| {
        c.accessories
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("accessory {name}"))
    };
    let mysql = Accessory::new(&c, acc("mysql"));
    assert_eq!(mysql.service_name(), "app-mysql");
    assert_eq!(
        mysql.run("1.1.1.5", Some(".flotilla/env/accessories/mysql.env")),
        "docker run --name app-mysql --detach --restart unless-stopped --network kamal \
         --log-opt max-size=10m --publish 3306:3306 --env KAMAL_HOST=1.1.1.5 \
         --env MYSQL_ROOT_HOST=% --env-file .flotilla/env/accessories/mysql.env \
         --label service=app-mysql --cpus 4 --memory 2g private.registry/mysql:8.0"
    );
    let redis = Accessory::new(&c, acc("redis"));
    assert_eq!(
        redis.run("1.1.1.6", None),
        "docker run --name app-redis --detach --restart unless-stopped --network kamal \
         --log-opt max-size=10m --publish 6379:6379 --env KAMAL_HOST=1.1.1.6 \
         --env SOMETHING=else --volume /var/lib/redis:/data --label service=app-redis \
         --label cache=true redis:latest"
    );
    // Equal to Kamal's.
    assert_eq!(mysql.start(), "docker container start app-mysql");
    assert_eq!(mysql.stop(), "docker container stop app-mysql");
    assert_eq!(
        mysql.info(false, false),
        "docker ps --filter label=service=app-mysql"
    );
    assert_eq!(
        mysql.exec_existing("mysql -u root", false),
        "docker exec app-mysql mysql -u root"
    );
    assert_eq!(
        mysql.remove_container(),
        "docker container prune --force --filter label=service=app-mysql"
    );
    assert_eq!(
        mysql.pull_image(),
        "docker image pull private.registry/mysql:8.0"
    );
    assert_eq!(
        mysql.remove_image(),
        "docker image rm --force private.registry/mysql:8.0"
    );
    assert_eq!(
        mysql.logs(&Logs {
            timestamps: true,
            ..Logs::default()
        }),
        "docker logs app-mysql --timestamps 2>&1"
    );
    assert_eq!(
        mysql.logs(&Logs {
            follow: true,
            ..Logs::default()
        }),
        "docker logs app-mysql --tail 10 --follow 2>&1"
    );
}

/// `files:` go under `SERVICE/` in the SSH user's home and `directories:` there too unless
/// absolute; both are mounted where the config says.
#[test]
fn accessory_files_and_directories() {
    let c = config(None);
    let db = c.accessories.iter().find(|a| a.name == "db").unwrap();
    let db = Accessory::new(&c, db);
    let files = db.files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].local, "config/init.sql.erb");
    assert_eq!(
        files[0].host_path,
        "app-db/docker-entrypoint-initdb.d/init.sql"
    );
    assert_eq!(files[0].mode, "755");
    let dirs = db.directories();
    assert_eq!(dirs[0].host_path, "\"$PWD\"/app-db/data");
    assert_eq!(dirs[1].host_path, "/srv/backups");
    assert_eq!(
        db.run("1.1.1.7", None),
        "docker run --name app-db --detach --restart unless-stopped --network kamal \
         --log-opt max-size=10m --env KAMAL_HOST=1.1.1.7 \
         --volume \"$PWD\"/app-db/docker-entrypoint-initdb.d/init.sql:/docker-entrypoint-initdb.d/init.sql \
         --volume \"$PWD\"/app-db/data:/var/lib/postgresql/data --volume /srv/backups:/backups:ro \
         --label service=app-db postgres:16"
    );
    assert_eq!(
        Accessory::make_directory(&dirs[0].host_path),
        "mkdir -p \"$PWD\"/app-db/data"
    );
}

/// `registry login` never puts the password on the command line.
#[test]
fn registry_login_reads_the_password_from_stdin() {
    let mut c = config(None);
    c.registry.server = Some("registry.example.com".into());
    c.registry.username = Some(flotilla_deploy::config::types::Credential::Clear(
        "deployer".into(),
    ));
    assert_eq!(
        commands::login(&c.registry).as_deref(),
        Some("docker login registry.example.com -u deployer --password-stdin")
    );
    assert_eq!(
        commands::logout(&c.registry),
        "docker logout registry.example.com"
    );
    c.registry.server = Some("localhost:5555".into());
    assert_eq!(commands::login(&c.registry), None);
}
