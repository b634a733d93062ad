//! Carrying a host's plan out over SSH: probe, plan, run each step, report each as it
//! finishes. The only I/O in this crate, and all of it through `flotilla-ssh`.

use crate::image::{AgentImage, ImageError};
use crate::plan::{self, Facts, Step};
use flotilla_ssh::{Session, shell_quote};
use std::time::Duration;

/// Why a host could not be bootstrapped or removed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{host}: ssh")]
    Ssh {
        host: String,
        #[source]
        source: Box<flotilla_ssh::Error>,
    },
    #[error(
        "{host}: Docker is not installed and the ssh user is neither root nor has sudo, so it \
         cannot be installed"
    )]
    NoRoot { host: String },
    #[error("{host}: installing Docker failed: {output}")]
    DockerInstall { host: String, output: String },
    #[error("{host}: {step} failed: {output}")]
    Step {
        host: String,
        step: String,
        output: String,
    },
    #[error("{host}: the agent image")]
    Image {
        host: String,
        #[source]
        source: ImageError,
    },
    #[error("{host}: NATS's TLS certificate")]
    Certificate {
        host: String,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("{host}: remove failed: {output}")]
    Remove { host: String, output: String },
    #[error("{host}: the executor wrote no {path} within {after:?}")]
    NoIdentity {
        host: String,
        path: String,
        after: Duration,
    },
}

impl HostError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            HostError::NoRoot { host } | HostError::DockerInstall { host, .. } => format!(
                "install Docker on {host} yourself (https://docs.docker.com/engine/install/), \
                 or give the ssh user root or sudo, then run `flotilla setup` again"
            ),
            HostError::Ssh { host, source } => match source.as_ref() {
                flotilla_ssh::Error::HostKey(k) => k
                    .accept_command()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("check the ssh settings for {host}")),
                _ => format!("check that {host} is up and the ssh: settings reach it"),
            },
            HostError::Image { source, .. } => source.hint().to_owned(),
            HostError::Certificate { .. } => {
                "check .flotilla/nats-ca.pem and .flotilla/nats-ca.key (remove both to make a \
                 new CA: every host then gets it on the next setup)"
                    .to_owned()
            }
            HostError::Remove { host, .. } => format!(
                "remove is safe to run again; see what is left with `flotilla server exec -h \
                 {host} 'docker ps -a; ls -A /etc/flotilla /var/lib/flotilla'`"
            ),
            HostError::Step { host, .. } | HostError::NoIdentity { host, .. } => format!(
                "see `flotilla server exec -h {host} 'docker ps -a; docker logs flotilla-executor'`"
            ),
        }
    }
}

/// Kamal's Docker install: get.docker.com through curl, else wget, run as root (sudo when
/// the ssh user is not root).
const INSTALL_DOCKER: &str = "S=; [ \"$(id -u)\" -eq 0 ] || S=sudo; \
    { curl -fsSL https://get.docker.com || wget -O - https://get.docker.com || echo 'exit 1'; } \
    | $S sh";

/// How long the new proxy may take to bind its listeners and take the admin socket, in
/// tenths of a second: a start restores saved routes and loads certificates.
const HANDOVER_TENTHS: u32 = 300;

/// How long the executor may take to write its identity after its container started.
pub const IDENTITY_WAIT: Duration = Duration::from_secs(30);
/// How often `identity.pub` is looked for: a file on a remote host cannot be awaited.
const IDENTITY_POLL: Duration = Duration::from_millis(200);

/// Reads what the host runs now.
pub async fn probe(s: &Session, image: &str) -> Result<Facts, HostError> {
    let out = s
        .exec(&plan::probe_command(image))
        .await
        .map_err(ssh_err(s))?;
    Ok(plan::parse_facts(&String::from_utf8_lossy(&out.stdout)))
}

/// Runs one step.
pub async fn run_step(
    s: &Session,
    image: &AgentImage,
    facts: &Facts,
    step: &Step,
) -> Result<(), HostError> {
    let host = s.host().to_owned();
    let command = match step {
        Step::InstallDocker => {
            if !facts.can_install {
                return Err(HostError::NoRoot { host });
            }
            let out = s.exec(INSTALL_DOCKER).await.map_err(ssh_err(s))?;
            if !out.success() || !s.exec("docker -v").await.map_err(ssh_err(s))?.success() {
                return Err(HostError::DockerInstall {
                    host,
                    output: last_line(&out.stderr, &out.stdout),
                });
            }
            return Ok(());
        }
        Step::MakeDirs => format!(
            "mkdir -p {etc} {nats_etc} {exe} {proxy} {run} {nats} {sched} && \
             chmod 0700 {etc} {nats_etc} {exe} {sched}",
            etc = plan::ETC_DIR,
            nats_etc = plan::NATS_ETC,
            exe = plan::EXECUTOR_STATE,
            proxy = plan::PROXY_STATE,
            run = plan::RUN_DIR,
            nats = plan::NATS_STATE,
            sched = plan::SCHEDULER_STATE,
        ),
        Step::LoadImage => {
            let reader = image.reader().await.map_err(|source| HostError::Image {
                host: host.clone(),
                source,
            })?;
            let out = s
                .exec_with_stdin("docker load", reader)
                .await
                .map_err(ssh_err(s))?;
            return check(&host, step, out);
        }
        Step::WriteFile { path, content } => {
            s.upload(
                std::io::Cursor::new(content.clone().into_bytes()),
                path,
                0o600,
            )
            .await
            .map_err(ssh_err(s))?;
            return Ok(());
        }
        Step::InstallCertificate { cert } => {
            // The key first: a certificate on the host always has its key beside it.
            for (path, text) in [
                (plan::NATS_KEY, cert.key_pem.as_str()),
                (plan::NATS_CERT, cert.cert_pem.as_str()),
            ] {
                let bytes = zeroize::Zeroizing::new(text.as_bytes().to_vec());
                s.upload(std::io::Cursor::new(bytes), path, 0o600)
                    .await
                    .map_err(ssh_err(s))?;
            }
            return Ok(());
        }
        Step::Run { argv, .. } => docker(argv),
        Step::Start { name } => format!("docker start {}", shell_quote(name)),
        Step::Remove { name } => format!(
            "docker stop -t {t} {n} >/dev/null 2>&1; docker rm -f {n}",
            t = plan::STOP_TIMEOUT_SECS,
            n = shell_quote(name)
        ),
        Step::Reload { name } => format!("docker kill -s HUP {}", shell_quote(name)),
        Step::HandOverProxy { argv } => handover_command(&docker(argv)),
    };
    let out = s.exec(&command).await.map_err(ssh_err(s))?;
    check(&host, step, out)
}

/// Start the new proxy beside the old (`run`: its rendered `docker run`), wait until it has
/// taken the admin socket (its listeners are bound before that), then stop the old one (it
/// stops accepting and drains in-flight requests) and give the new one the usual name.
pub(crate) fn handover_command(run: &str) -> String {
    let sock = format!("{}/proxy.sock", plan::RUN_DIR);
    format!(
        "old=$(stat -c %i {sock} 2>/dev/null); docker rm -f {next} >/dev/null 2>&1; \
         {run} >/dev/null || exit 1; i=0; \
         while [ \"$(stat -c %i {sock} 2>/dev/null)\" = \"$old\" ]; do i=$((i+1)); \
         if [ $i -gt {HANDOVER_TENTHS} ]; then echo 'the new proxy did not start serving' >&2; \
         docker logs --tail 20 {next} >&2; docker rm -f {next} >/dev/null; exit 1; fi; \
         sleep 0.1; done; \
         docker stop -t {t} {proxy} >/dev/null && docker rm {proxy} >/dev/null && \
         docker rename {next} {proxy}",
        next = plan::PROXY_NEXT,
        proxy = plan::PROXY,
        t = plan::STOP_TIMEOUT_SECS,
    )
}

fn docker(argv: &[String]) -> String {
    std::iter::once("docker".to_owned())
        .chain(argv.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn check(host: &str, step: &Step, out: flotilla_ssh::Output) -> Result<(), HostError> {
    if out.success() {
        return Ok(());
    }
    Err(HostError::Step {
        host: host.to_owned(),
        step: step.describe(),
        output: last_line(&out.stderr, &out.stdout),
    })
}

fn last_line(stderr: &[u8], stdout: &[u8]) -> String {
    let text = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        stderr
    } else {
        stdout
    };
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

fn ssh_err(s: &Session) -> impl Fn(flotilla_ssh::Error) -> HostError + '_ {
    |source| HostError::Ssh {
        host: s.host().to_owned(),
        source: Box::new(source),
    }
}

/// Waits for the executor's `identity.pub` and returns its text.
pub async fn read_identity(s: &Session) -> Result<String, HostError> {
    let path = format!("{}/identity.pub", plan::EXECUTOR_STATE);
    let command = format!("cat {} 2>/dev/null", shell_quote(&path));
    let deadline = tokio::time::Instant::now() + IDENTITY_WAIT;
    loop {
        let out = s.exec(&command).await.map_err(ssh_err(s))?;
        if out.success() && !out.stdout.is_empty() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HostError::NoIdentity {
                host: s.host().to_owned(),
                path,
                after: IDENTITY_WAIT,
            });
        }
        tokio::time::sleep(IDENTITY_POLL).await;
    }
}

/// How long the scheduler service may take to write `service.pub` after its container
/// started (it writes it before it reaches NATS).
pub const SERVICE_KEY_WAIT: Duration = Duration::from_secs(30);

/// Waits for the scheduler service's `service.pub` and returns the key (base64).
pub async fn read_service_key(s: &Session) -> Result<String, HostError> {
    let command = format!("cat {} 2>/dev/null", shell_quote(plan::SERVICE_PUB));
    let deadline = tokio::time::Instant::now() + SERVICE_KEY_WAIT;
    loop {
        let out = s.exec(&command).await.map_err(ssh_err(s))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.success() && !text.is_empty() {
            return Ok(text);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HostError::NoIdentity {
                host: s.host().to_owned(),
                path: plan::SERVICE_PUB.to_owned(),
                after: SERVICE_KEY_WAIT,
            });
        }
        tokio::time::sleep(IDENTITY_POLL).await;
    }
}

/// Removes everything Flotilla and the app put on the host.
pub async fn remove(s: &Session, spec: &plan::RemoveSpec) -> Result<(), HostError> {
    let command = plan::remove_command(spec);
    let out = s.exec(&command).await.map_err(ssh_err(s))?;
    if out.success() {
        return Ok(());
    }
    Err(HostError::Remove {
        host: s.host().to_owned(),
        output: last_line(&out.stderr, &out.stdout),
    })
}
