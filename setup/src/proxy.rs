//! The `flotilla-proxy` container as Kamal's `proxy` commands see it: how it runs (Kamal 2's
//! `proxy.run`, as far as it applies to Flotilla's proxy) and the shell commands of `proxy
//! boot`, `reboot`, `start`, `stop`, `restart`, `details`, `logs` and `remove`. Pure: the
//! CLI runs these over SSH on each host.
//!
//! The settings a container was started with are kept in its label [`RUN_LABEL`], so both
//! `flotilla setup` and `proxy boot` see when `proxy.run` changed. Replacing a running proxy
//! hands its listening sockets over (`host.rs`'s hand-over, the one `setup` uses for a new
//! image), unless the ports changed: sockets on other ports cannot be handed over, so the
//! old proxy is stopped (it drains) and the new one binds.

use crate::plan::{self, PROXY, PROXY_NEXT, STOP_TIMEOUT_SECS};
pub use flotilla_protocol::proxy_run::{ProxyRun, ProxyRunError, RUN_LABEL};
use flotilla_ssh::shell_quote;

/// In a rendered command, this argv element stands for the image the host's agents run
/// (found at run time, see [`IMAGE_ON_HOST`]); it is written unquoted.
const IMAGE_VAR: &str = "\"$img\"";

/// Finds the agents' image on the host: the proxy's own, else the executor's (a proxy that
/// was removed). Neither means setup never ran there.
/// (`docker inspect` of a missing container still prints an empty line, so each inspect
/// sets the variable on its own.)
const IMAGE_ON_HOST: &str = "img=$(docker inspect -f '{{.Config.Image}}' flotilla-proxy 2>/dev/null) \
     || img=$(docker inspect -f '{{.Config.Image}}' flotilla-executor 2>/dev/null); \
     [ -n \"$img\" ] || { echo 'no flotilla agent image on this host: run flotilla setup first' >&2; exit 1; }";

/// Renders `docker ARGV`, the image placeholder left for the shell to fill in.
fn docker(argv: &[String]) -> String {
    std::iter::once("docker".to_owned())
        .chain(argv.iter().map(|a| match a.as_str() {
            IMAGE_VAR => a.clone(),
            _ => shell_quote(a),
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A new proxy (of the image the host runs) replacing the running one: handed over when the
/// ports are the same (nothing queued is reset), else stopped (it drains) and replaced; a
/// proxy that is not running is replaced at once.
fn replace(run: &ProxyRun) -> String {
    let fresh = docker(&plan::proxy_argv(PROXY, IMAGE_VAR, run));
    let handover =
        crate::host::handover_command(&docker(&plan::proxy_argv(PROXY_NEXT, IMAGE_VAR, run)));
    format!(
        "now=$(docker inspect -f '{{{{.State.Running}}}} {{{{index .Config.Labels \"{RUN_LABEL}\"}}}}' {PROXY} 2>/dev/null); \
         ports=${{now#* }}; ports=${{ports%%;*}}; [ -n \"$ports\" ] || ports='{default}'; \
         if [ \"${{now%% *}}\" = true ] && [ \"$ports\" = {want} ]; then {handover}; \
         else docker stop -t {STOP_TIMEOUT_SECS} {PROXY} >/dev/null 2>&1; docker rm -f {PROXY} {PROXY_NEXT} >/dev/null 2>&1; \
         {fresh} >/dev/null; fi",
        default = ProxyRun::default().ports(),
        want = shell_quote(&run.ports()),
    )
}

/// `proxy boot`: run the proxy where it is missing, start it where it is stopped, replace it
/// where it runs with other settings (handed over, see [`replace`]); a current one is left
/// alone. Prints what it did.
pub fn boot_command(run: &ProxyRun) -> String {
    let want = shell_quote(&run.label());
    format!(
        "{IMAGE_ON_HOST}; \
         now=$(docker inspect -f '{{{{.State.Running}}}} {{{{index .Config.Labels \"{RUN_LABEL}\"}}}}' {PROXY} 2>/dev/null); \
         if [ \"$now\" = \"true \"{want} ]; then echo '{PROXY} is already running'; \
         elif [ \"$now\" = \"false \"{want} ]; then docker start {PROXY} >/dev/null && echo 'started {PROXY}'; \
         else {{ {replace}; }} && echo 'booted {PROXY}'; fi",
        replace = replace(run),
    )
}

/// `proxy reboot`: a new proxy container with the current settings replaces the one running
/// (handed over: see [`replace`]).
pub fn reboot_command(run: &ProxyRun) -> String {
    format!(
        "{IMAGE_ON_HOST}; {{ {}; }} && echo 'rebooted {PROXY}'",
        replace(run)
    )
}

/// `proxy start`: the existing container, as it is.
pub fn start_command() -> String {
    format!("docker start {PROXY} >/dev/null && echo 'started {PROXY}'")
}

/// `proxy stop`: SIGTERM (the proxy stops accepting and drains), then Docker's stop timeout.
pub fn stop_command() -> String {
    format!("docker stop -t {STOP_TIMEOUT_SECS} {PROXY} >/dev/null && echo 'stopped {PROXY}'")
}

/// `proxy restart`: stop, then start the same container.
pub fn restart_command() -> String {
    format!(
        "docker stop -t {STOP_TIMEOUT_SECS} {PROXY} >/dev/null && docker start {PROXY} >/dev/null \
         && echo 'restarted {PROXY}'"
    )
}

/// `proxy details`: Kamal's `docker ps` of the proxy container.
pub fn details_command() -> String {
    format!("docker ps --filter name=^{PROXY}$")
}

/// What `proxy logs` reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Logs {
    pub since: Option<String>,
    pub lines: Option<u32>,
    pub grep: Option<String>,
    pub grep_options: Option<String>,
    pub timestamps: bool,
    pub follow: bool,
}

/// `proxy logs`: Kamal's `docker logs` of the proxy, stderr included, optionally grepped.
pub fn logs_command(l: &Logs) -> String {
    let mut cmd = format!("docker logs {PROXY}");
    if l.timestamps {
        cmd.push_str(" --timestamps");
    }
    if let Some(s) = &l.since {
        cmd.push_str(&format!(" --since {}", shell_quote(s)));
    }
    if let Some(n) = l.lines {
        cmd.push_str(&format!(" --tail {n}"));
    }
    if l.follow {
        cmd.push_str(" --follow");
    }
    cmd.push_str(" 2>&1");
    if let Some(g) = &l.grep {
        cmd.push_str(" | grep");
        if let Some(o) = &l.grep_options {
            cmd.push_str(&format!(" {o}"));
        }
        cmd.push_str(&format!(" {}", shell_quote(g)));
    }
    cmd
}

/// `proxy remove`: the proxy's containers. Its saved routes (`/var/lib/flotilla/proxy`) stay,
/// so a later `proxy boot` serves the deployed apps again; the agents' image stays (the
/// executor runs it). `flotilla remove` takes everything.
pub fn remove_command() -> String {
    format!("docker rm -f {PROXY} {PROXY_NEXT} >/dev/null 2>&1; echo 'removed {PROXY}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boot and reboot run the image the host's agents run, hand the sockets over when the
    /// ports stay, and start the new proxy with the settings.
    #[test]
    fn boot_and_reboot_commands() {
        let r = ProxyRun::default();
        let boot = boot_command(&r);
        assert!(boot.starts_with(IMAGE_ON_HOST), "{boot}");
        assert!(
            boot.contains("if [ \"$now\" = \"true \"'ports=80,443;metrics=;log=10m;debug=0' ]"),
            "{boot}"
        );
        let reboot = reboot_command(&r);
        assert!(reboot.contains("--listeners-socket"), "{reboot}");
        assert!(
            reboot.contains("docker 'run' '-d' '--name' 'flotilla-proxy-next'"),
            "{reboot}"
        );
        assert!(
            reboot.contains(" \"$img\" 'proxy' 'run' '--listeners-socket'"),
            "{reboot}"
        );
        assert!(
            reboot.contains("[ \"$ports\" = 'ports=80,443' ]"),
            "{reboot}"
        );
    }

    /// Logs read as Kamal's: timestamps, tail, since, grep.
    #[test]
    fn logs_command_reads_as_kamals() {
        let l = Logs {
            since: Some("5m".into()),
            lines: Some(20),
            grep: Some("switched".into()),
            grep_options: None,
            timestamps: true,
            follow: false,
        };
        assert_eq!(
            logs_command(&l),
            "docker logs flotilla-proxy --timestamps --since '5m' --tail 20 2>&1 | grep 'switched'"
        );
    }
}
