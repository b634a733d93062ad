//! `prune`: old images and stopped containers of the service. Kamal's `commands/prune.rb`.

use super::filter_args;
use crate::config::types::Config;
use flotilla_protocol::names::LABEL_SERVICE;

/// Statuses of a container that is not serving and may go.
const STOPPED_STATUSES: [&str; 3] = ["created", "exited", "dead"];

fn service_filter(config: &Config) -> String {
    filter_args(&[format!("label={LABEL_SERVICE}={}", config.service)])
}

/// Removes the service's dangling (untagged, unused) images.
pub fn prune_dangling_images(config: &Config) -> String {
    format!("docker image prune --force {}", service_filter(config))
}

/// Removes the service's tagged images that no container (running or stopped) uses.
pub fn prune_tagged_images(config: &Config) -> String {
    let repo = config.repository();
    // The images any container of the service uses, as a grep alternation; `repo:<none>` keeps
    // dangling images in use, which `prune_dangling_images` handles on its own.
    let active = format!(
        "$(docker container ls -a --format '{{{{.Image}}}}\\|' {} | tr -d '\\n'){}:latest\\|{}:<none>",
        service_filter(config),
        repo,
        repo
    );
    format!(
        "docker image ls {} --format '{{{{.ID}}}} {{{{.Repository}}}}:{{{{.Tag}}}}' | grep -v -w \"{active}\" | while read image tag; do docker rmi $tag; done",
        service_filter(config)
    )
}

/// Removes the service's stopped containers beyond the newest `retain` (Kamal's
/// `retain_containers`): `docker ps` lists newest first, so the first `retain` stay.
pub fn prune_app_containers(config: &Config, retain: u32) -> String {
    let statuses: Vec<String> = STOPPED_STATUSES
        .iter()
        .map(|s| format!("status={s}"))
        .collect();
    format!(
        "docker ps -q -a {} {} | tail -n +{} | while read container_id; do docker rm $container_id; done",
        service_filter(config),
        filter_args(&statuses),
        u64::from(retain) + 1
    )
}
