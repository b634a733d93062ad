//! The CLI as a client of the scheduler service (`x-flotilla.scheduler: {mode: service}`):
//! what the CLI decided on this machine (config as ERB rendered here, the release it built
//! and pushed, narrowing, who asks) goes to `flotilla scheduler run` over NATS, the secrets
//! sealed to the service's key; the deploy's events come back on `FLOTILLA_LOG` and render
//! exactly as an embedded run renders them. The deploy runs in the service: Ctrl-C (or a
//! killed CLI) stops only the watching, and `flotilla replay ID --follow` watches again.
//!
//! The service's sealing key is pinned on first use in `.flotilla/service.pub` (as SSH pins a
//! host key): a later answer with another key is refused, so a NATS user impersonating the
//! service cannot collect the secrets. Setup will write that file from the control host over
//! SSH instead, which removes the first-use window.

use crate::exit::{FAILED, UserError};
use crate::progress::{Mode, Progress};
use crate::session::{NatsEndpoint, nats_endpoint};
use anyhow::Context as _;
use flotilla_deploy::Config;
use flotilla_deploy::config::{LoadOptions, SchedulerMode};
use flotilla_deploy::plan::AccessoryFiles;
use flotilla_events::projection::{DeployStatus, HostStatus};
use flotilla_events::{DeployId, Envelope, Event, EventLog, MemoryLog, NewEvent};
use flotilla_protocol::control::{
    self, ConfigFile, REQUEST_TIMEOUT, Request, Response, Rollout, RolloutKind, SealedAccessoryFile,
};
use flotilla_protocol::sealing::{seal, seal_bytes};
use flotilla_protocol::wire;
use flotilla_scheduler::service::ask;
use futures::StreamExt;
use std::path::Path;
use std::time::Duration;

/// How long the follower waits for the next event before asking whether the deploy still
/// runs (a deploy can end with no further event on its subject, e.g. the service restarted).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// How long a watcher keeps asking a scheduler service that does not answer before it gives
/// up. Beyond [`FAILOVER_WAIT`] (no responders), a request can also time out: one asked of
/// a leader whose host was cut off just then. Either way a standby leads within about 7 s
/// and resumes the rollout, so the watcher rides it out instead of failing a deploy that
/// goes on.
const WATCH_FAILOVER_WAIT: Duration = Duration::from_secs(60);

/// Whether this project's deploys run in the scheduler service.
pub fn service_mode(config: &Config) -> bool {
    config.flotilla.scheduler_mode() == SchedulerMode::Service
}

/// Connects to the fleet's NATS (through the SSH tunnel when setup booted it); keep the
/// endpoint as long as the client: it may hold the tunnel.
pub async fn connect(config: &Config) -> anyhow::Result<(async_nats::Client, NatsEndpoint)> {
    let endpoint = nats_endpoint(config).await?;
    let auth = endpoint.auth();
    let options = match &auth.creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .with_context(|| format!("reading NATS credentials {}", path.display()))?,
        None => async_nats::ConnectOptions::new(),
    };
    let client = auth
        .apply(options.ping_interval(flotilla_protocol::nats::PING_INTERVAL))
        .connect(flotilla_protocol::nats::server_urls(&endpoint.url))
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(UserError {
                message: format!("cannot reach NATS at {}", endpoint.url),
                hint: Some("is the NATS server running and x-flotilla.nats.url right?".into()),
                code: FAILED,
            })
        })?;
    Ok((client, endpoint))
}

/// How long a request is asked again while no scheduler answers: with HA a standby takes the
/// lease within the lease's ttl plus a poll (about 7 s), then waits for JetStream to re-elect
/// the streams a lost NATS node led and resumes the lost leader's rollouts before it answers
/// (seconds to tens of seconds on a loaded machine), so a failover costs a client a wait, not
/// an error. As long as a watching CLI rides one out ([`WATCH_FAILOVER_WAIT`]).
const FAILOVER_WAIT: Duration = WATCH_FAILOVER_WAIT;
/// How often it is asked again meanwhile.
const FAILOVER_POLL: Duration = Duration::from_millis(250);
/// How long one ask of a read (a page of the log, the service's key) waits for its answer,
/// which is ready at once: a read sent just after the leader's host was cut off still goes to
/// it (the cluster routes to the lost node until its route pings fail, about 6 s) and is never
/// answered; asked again, it reaches the next leader.
const READ_ATTEMPT: Duration = Duration::from_secs(5);

/// [`ask`], asked again while nobody answers, for up to [`FAILOVER_WAIT`]; a read (which is
/// safe to ask twice) is also asked again when its answer does not come.
async fn ask_through_failover(
    client: &async_nats::Client,
    req: &Request,
    timeout: Duration,
) -> Result<Response, flotilla_scheduler::service::AskError> {
    let read = matches!(req, Request::Events { .. } | Request::Key);
    let attempt = if read {
        timeout.min(READ_ATTEMPT)
    } else {
        timeout
    };
    let deadline = tokio::time::Instant::now() + FAILOVER_WAIT;
    loop {
        match ask(client, req, attempt).await {
            Err(flotilla_scheduler::service::AskError::Request(e))
                if tokio::time::Instant::now() < deadline
                    && (e.kind() == async_nats::RequestErrorKind::NoResponders
                        || (read && e.kind() == async_nats::RequestErrorKind::TimedOut)) =>
            {
                tokio::time::sleep(FAILOVER_POLL).await;
            }
            other => return other,
        }
    }
}

/// Asks the service, turning a refusal into the user's error.
async fn request(
    client: &async_nats::Client,
    req: &Request,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let answer = ask_through_failover(client, req, timeout)
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(UserError {
            message: "the scheduler service did not answer".into(),
            hint: Some(
                "is `flotilla scheduler run` up on the control host? (x-flotilla.scheduler.mode: \
                 embedded runs deploys in the CLI)"
                    .into(),
            ),
            code: FAILED,
        })
        })?;
    match answer {
        Response::Refused { reason, hint } => Err(UserError {
            message: reason,
            hint,
            code: FAILED,
        }
        .into()),
        other => Ok(other),
    }
}

/// Has the service record a host's enrolment (the CLI read the identity over SSH).
pub async fn enroll(
    client: &async_nats::Client,
    enrolment: control::Enrolment,
) -> anyhow::Result<crate::enrol::Outcome> {
    let host = enrolment.host.clone();
    let req = Request::Enroll(Box::new(enrolment));
    match request(client, &req, REQUEST_TIMEOUT)
        .await
        .with_context(|| format!("enrolling {host} in the scheduler service"))?
    {
        Response::Enrolled {
            signing_key: Some(signing_key),
        } => Ok(crate::enrol::Outcome::Enrolled { signing_key }),
        Response::Enrolled { signing_key: None } => Ok(crate::enrol::Outcome::Unchanged),
        _ => anyhow::bail!("the scheduler service answered Enroll with something else"),
    }
}

/// How long setup waits for the scheduler service it just started (or upgraded) to answer:
/// the container reaches NATS (retrying while NATS starts) and subscribes.
pub const SERVICE_START_WAIT: Duration = Duration::from_secs(60);
/// How often the starting service is asked again: "no responders" comes back at once.
const SERVICE_START_POLL: Duration = Duration::from_millis(250);

/// Waits until the service answers `Key`, and checks that it answers with `pinned` (the key
/// setup read over SSH from its state directory).
pub async fn await_service(client: &async_nats::Client, pinned: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SERVICE_START_WAIT;
    loop {
        match ask(
            client,
            &Request::Key,
            SERVICE_START_POLL.max(Duration::from_secs(2)),
        )
        .await
        {
            Ok(Response::Key { public }) if public == pinned => return Ok(()),
            Ok(Response::Key { public }) => {
                return Err(UserError {
                    message: format!(
                        "the scheduler service on NATS answers with key {public}, not the \
                         {pinned} its host holds"
                    ),
                    hint: Some("another process answers as the scheduler service: find it".into()),
                    code: FAILED,
                }
                .into());
            }
            Ok(_) => anyhow::bail!("the scheduler service answered Key with something else"),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(UserError {
                    message: format!(
                        "the scheduler service did not answer within {SERVICE_START_WAIT:?}"
                    ),
                    hint: Some(
                        "see `flotilla server exec -p 'docker logs flotilla-scheduler'`".into(),
                    ),
                    code: FAILED,
                }));
            }
            Err(_) => tokio::time::sleep(SERVICE_START_POLL).await,
        }
    }
}

/// Pins `public` (read from the control host over SSH by setup) in `.flotilla/service.pub`;
/// a different key already pinned is refused, as SSH refuses a changed host key.
pub fn pin_service_key(root: &Path, public: &str) -> anyhow::Result<()> {
    let path = root.join(".flotilla").join("service.pub");
    match std::fs::read_to_string(&path) {
        Ok(pinned) if pinned.trim() == public => Ok(()),
        Ok(pinned) => Err(UserError {
            message: format!(
                "the scheduler service's key changed: {} pins {}, the control host now holds {public}",
                path.display(),
                pinned.trim()
            ),
            hint: Some(format!(
                "if the service's state was reset on purpose, delete {} and run setup again",
                path.display()
            )),
            code: FAILED,
        }
        .into()),
        Err(_) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, format!("{public}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
    }
}

/// The service's sealing key, pinned in `.flotilla/service.pub` on first use.
async fn service_key(root: &Path, client: &async_nats::Client) -> anyhow::Result<String> {
    let Response::Key { public } = request(client, &Request::Key, REQUEST_TIMEOUT).await? else {
        anyhow::bail!("the scheduler service answered Key with something else");
    };
    let path = root.join(".flotilla").join("service.pub");
    match std::fs::read_to_string(&path) {
        Ok(pinned) if pinned.trim() == public => Ok(public),
        Ok(pinned) => Err(UserError {
            message: format!(
                "the scheduler service's key changed: {} pins {}, the service now says {public}",
                path.display(),
                pinned.trim()
            ),
            hint: Some(format!(
                "if the service was re-installed on purpose, delete {} and run again; otherwise \
                 something else answers as the service",
                path.display()
            )),
            code: FAILED,
        }
        .into()),
        Err(_) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, format!("{public}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "flotilla: pinned the scheduler service's key in {}",
                path.display()
            );
            Ok(public)
        }
    }
}

/// What the CLI hands the service for one rollout.
pub struct Ask<'a> {
    pub config: &'a Config,
    pub root: &'a Path,
    pub config_file: &'a Path,
    pub kind: RolloutKind,
    pub deploy_id: DeployId,
    pub narrow: flotilla_scheduler::procedure::plans::Narrow,
    pub preamble: Vec<Event>,
    pub actor: String,
    pub lock_wait: Option<Duration>,
    pub json: bool,
    pub quiet: bool,
    pub command: &'static str,
    /// `-H`: Kamal's hooks are not run.
    pub skip_hooks: bool,
    /// An accessory operation's rendered `files:`, sealed here to the service's key.
    pub files: AccessoryFiles,
}

/// Sends the rollout to the service and renders it until it ends: the exit result.
pub async fn rollout(a: Ask<'_>) -> anyhow::Result<()> {
    let (client, _endpoint) = connect(a.config).await?;
    let public = service_key(a.root, &client).await?;
    let files = flotilla_deploy::config::render(&LoadOptions {
        config_file: a.config_file.to_owned(),
        destination: a.config.destination.clone(),
        ..LoadOptions::new(a.root)
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut secrets = Vec::new();
    for (name, value) in a.config.secrets.iter() {
        let sealed = seal(&public, value.expose())
            .with_context(|| format!("sealing {name} to the scheduler service"))?;
        secrets.push((name.to_owned(), sealed));
    }
    let kind = match a.kind {
        RolloutKind::Accessory { operation, .. } => RolloutKind::Accessory {
            operation,
            files: seal_files(&public, &a.files)?,
        },
        other => other,
    };
    let rollout_actor = a.actor.clone();
    let rollout = Rollout {
        kind,
        deploy_id: a.deploy_id.clone(),
        config: files
            .into_iter()
            .map(|f| ConfigFile {
                path: f.path.display().to_string(),
                text: f.text,
            })
            .collect(),
        destination: a.config.destination.clone(),
        secrets,
        hosts: a.narrow.hosts,
        roles: a.narrow.roles,
        primary: a.narrow.primary,
        preamble: a.preamble,
        actor: a.actor,
        machine: crate::rollout::hostname(),
        lock_wait_ms: a
            .lock_wait
            .map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
    };
    // Subscribed before asking, so no event of the deploy is missed.
    let live = client
        .subscribe(control::log_subject(a.deploy_id.as_str()))
        .await
        .context("following the deploy's events")?;
    let timeout = REQUEST_TIMEOUT + a.lock_wait.unwrap_or_default();
    request(&client, &Request::Rollout(Box::new(rollout)), timeout).await?;
    let mut progress = Progress::new(Mode::choose(a.json, a.quiet), a.deploy_id.clone());
    let mut hooks = LocalHooks {
        config: a.config,
        root: a.root,
        skip: a.skip_hooks,
        command: a.command,
        actor: rollout_actor,
        context: None,
        started: tokio::time::Instant::now(),
        failed: None,
    };
    watch(&client, live, &mut progress, Some(&mut hooks)).await?;
    let summary = summarize(a.command, &a.deploy_id, &progress);
    match hooks.failed.take() {
        // The hook's failure is why the deploy stopped (or why the command fails).
        Some(e) => Err(e),
        None => {
            summary?;
            hooks.finish(&progress).await
        }
    }
}

/// Kamal's hooks after `pre-build`, run on this machine (where the project and its hooks
/// are) as the service streams the deploy's events, as Kamal runs them around its own
/// steps: `pre-deploy` once the deploy is recorded under the lock (`DeployRequested`),
/// `pre-app-boot` when the rollout starts (`DeployStarted`), `post-app-boot` when it ends,
/// `post-deploy` after a successful deploy. The service does not wait for them: a failing
/// `pre-deploy` or `pre-app-boot` cancels the deploy (no host starts; hosts already
/// started finish), and any failing hook fails the command. Their runs are not in the log
/// (only the service writes it).
struct LocalHooks<'a> {
    config: &'a Config,
    root: &'a Path,
    skip: bool,
    command: &'static str,
    actor: String,
    /// Kamal's variables, from the recorded `DeployRequested` (version and hosts as the
    /// service planned them).
    context: Option<flotilla_scheduler::hooks::HookContext>,
    started: tokio::time::Instant,
    failed: Option<anyhow::Error>,
}

impl LocalHooks<'_> {
    /// Runs the hooks `event` reaches; a failure before the boot asks the service to cancel.
    async fn on_event(&mut self, client: &async_nats::Client, event: &Envelope) {
        if self.failed.is_some() {
            return;
        }
        let (name, cancels) = match &event.event {
            Event::DeployRequested(r) => {
                self.context = Some(flotilla_scheduler::hooks::HookContext {
                    service: r.service.clone(),
                    version: r.version.clone(),
                    destination: r.destination.clone(),
                    hosts: r.hosts.iter().map(|h| h.host.clone()).collect(),
                    roles: self.config.servers.iter().map(|r| r.name.clone()).collect(),
                    command: self.command.to_owned(),
                    subcommand: None,
                    performer: self.actor.clone(),
                    recorded_at: event.at.to_string(),
                    runtime: None,
                });
                ("pre-deploy", true)
            }
            Event::DeployStarted(_) => ("pre-app-boot", true),
            Event::DeployCompleted(_) | Event::DeployFailed(_) | Event::DeployCancelled(_) => {
                ("post-app-boot", false)
            }
            _ => return,
        };
        if let Err(e) = self.run(name).await {
            if cancels {
                let deploy_id = event.deploy_id.clone();
                if let Err(c) =
                    request(client, &Request::Cancel { deploy_id }, REQUEST_TIMEOUT).await
                {
                    eprintln!("flotilla: cancelling after the {name} hook failed: {c:#}");
                }
            }
            self.failed = Some(e);
        }
    }

    async fn run(&self, name: &str) -> anyhow::Result<()> {
        let Some(context) = &self.context else {
            return Ok(());
        };
        let hooks = flotilla_scheduler::procedure::Hooks {
            config: self.config,
            root: self.root,
            skip: self.skip,
        };
        let (_, result) = hooks.run(name, context).await;
        result.map_err(|e| {
            crate::rollout::user_error(flotilla_scheduler::procedure::ProcedureError::Hook(e))
        })
    }

    /// After a successful deploy: `post-deploy` with Kamal's `KAMAL_RUNTIME`.
    async fn finish(mut self, progress: &Progress) -> anyhow::Result<()> {
        if progress.state().status != DeployStatus::Completed {
            return Ok(());
        }
        let runtime = self.started.elapsed().as_secs();
        if let Some(c) = self.context.as_mut() {
            c.runtime = Some(runtime);
        }
        self.run("post-deploy").await
    }
}

/// `flotilla replay ID --follow`: the deploy's events so far, then live until it ends.
pub async fn follow(config: &Config, id: &str, json: bool) -> anyhow::Result<()> {
    let (client, _endpoint) = connect(config).await?;
    let id = DeployId::from(id);
    let live = client
        .subscribe(control::log_subject(id.as_str()))
        .await
        .context("following the deploy's events")?;
    let mut progress = Progress::new(Mode::choose(json, false), id.clone());
    // Hooks belong to the command that asked for the deploy, not to a watcher.
    watch(&client, live, &mut progress, None).await?;
    summarize("deploy", &id, &progress)
}

/// `flotilla replay ID --cancel`: the service cancels the deploy (no host starts, running
/// steps finish, `DeployCancelled`, the lock released).
pub async fn cancel(config: &Config, id: &str) -> anyhow::Result<()> {
    let (client, _endpoint) = connect(config).await?;
    let deploy_id = DeployId::from(id);
    request(&client, &Request::Cancel { deploy_id }, REQUEST_TIMEOUT).await?;
    eprintln!(
        "flotilla: cancelling deploy {id}: no host starts now, running steps finish; \
         `flotilla replay {id} --follow` shows how it ends, `--resume` continues it"
    );
    Ok(())
}

/// Renders the deploy's events (what the log has, then what arrives) until the service no
/// longer runs it and every event is shown. Ctrl-C stops the watching, not the deploy.
async fn watch(
    client: &async_nats::Client,
    mut live: async_nats::Subscriber,
    progress: &mut Progress,
    mut hooks: Option<&mut LocalHooks<'_>>,
) -> anyhow::Result<()> {
    let id = progress.state().deploy_id.clone();
    let mut last = 0;
    let show = |events: Vec<Envelope>, last: &mut u64, progress: &mut Progress| {
        let mut shown = Vec::new();
        for e in events {
            if e.seq > *last && e.deploy_id == id {
                *last = e.seq;
                progress.on_event(&e);
                shown.push(e);
            }
        }
        shown
    };
    let shown = events(client, Some(&id), 1).await?;
    for e in show(shown, &mut last, progress) {
        if let Some(h) = hooks.as_deref_mut() {
            h.on_event(client, &e).await;
        }
    }
    let detach = crate::lifecycle::shutdown_signal();
    tokio::pin!(detach);
    // Since when the service has not answered (a failover under way).
    let mut unanswered: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = &mut detach => {
                eprintln!(
                    "flotilla: stopped watching; deploy {id} goes on in the scheduler service: \
                     `flotilla replay {id} --follow` watches it again, `--cancel` cancels it"
                );
                std::process::exit(130);
            }
            next = tokio::time::timeout(FOLLOW_POLL, live.next()) => match next {
                Ok(Some(message)) => {
                    let event: Envelope = wire::decode(&message.payload)
                        .context("an event on FLOTILLA_LOG")?;
                    for e in show(vec![event], &mut last, progress) {
                        if let Some(h) = hooks.as_deref_mut() {
                            h.on_event(client, &e).await;
                        }
                    }
                }
                Ok(None) => anyhow::bail!("the NATS subscription ended"),
                Err(_) => {
                    let running = match running(client, &id).await {
                        Ok(r) => {
                            unanswered = None;
                            r
                        }
                        Err(e) => {
                            let since = *unanswered.get_or_insert_with(tokio::time::Instant::now);
                            if since.elapsed() >= WATCH_FAILOVER_WAIT {
                                return Err(e.context(format!(
                                    "the scheduler service has not answered for \
                                     {WATCH_FAILOVER_WAIT:?}"
                                )));
                            }
                            continue;
                        }
                    };
                    if !running {
                        let rest = events(client, Some(&id), last + 1).await?;
                        for e in show(rest, &mut last, progress) {
                            if let Some(h) = hooks.as_deref_mut() {
                                h.on_event(client, &e).await;
                            }
                        }
                        return Ok(());
                    }
                }
            },
        }
    }
}

/// How long a watcher waits for the answer to one `Status`: a quick question, and while it
/// waits the deploy's events queue unshown. A leader lost just as it was asked never
/// answers; asking the next leader soon shows the resumed rollout soon.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

async fn running(client: &async_nats::Client, id: &DeployId) -> anyhow::Result<bool> {
    match request(client, &Request::Status, STATUS_TIMEOUT).await? {
        Response::Status { running } => Ok(running.iter().any(|r| &r.deploy_id == id)),
        _ => anyhow::bail!("the scheduler service answered Status with something else"),
    }
}

/// Every event from `from` on (one deploy's, or all), page by page.
async fn events(
    client: &async_nats::Client,
    deploy_id: Option<&DeployId>,
    mut from: u64,
) -> anyhow::Result<Vec<Envelope>> {
    let mut out = Vec::new();
    loop {
        let req = Request::Events {
            deploy_id: deploy_id.cloned(),
            from,
        };
        match request(client, &req, REQUEST_TIMEOUT).await? {
            Response::Events { events, next } => {
                out.extend(events);
                match next {
                    Some(n) => from = n,
                    None => return Ok(out),
                }
            }
            _ => anyhow::bail!("the scheduler service answered Events with something else"),
        }
    }
}

/// The service's whole log, in memory: history, events and replay read it as they read the
/// local log, so every machine shows the same answer.
pub async fn mirror(config: &Config) -> anyhow::Result<MemoryLog> {
    let (client, _endpoint) = connect(config).await?;
    mirror_with(&client).await
}

/// [`mirror`] over a client already connected.
pub async fn mirror_with(client: &async_nats::Client) -> anyhow::Result<MemoryLog> {
    let log = MemoryLog::new();
    for e in events(client, None, 1).await? {
        log.append(NewEvent {
            id: e.id,
            deploy_id: e.deploy_id,
            at: e.at,
            host: e.host,
            schema_version: e.schema_version,
            actor: e.actor,
            event: e.event,
        })?;
    }
    Ok(log)
}

/// [`mirror`] for the commands that are not async.
pub fn mirror_blocking(config: &Config) -> anyhow::Result<MemoryLog> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(mirror(config))
}

/// How it ended, as the embedded run says it, and the exit code.
fn summarize(command: &str, id: &DeployId, progress: &Progress) -> anyhow::Result<()> {
    let state = progress.state();
    let failed: Vec<(&String, String)> = state
        .hosts
        .iter()
        .filter_map(|(host, h)| match &h.status {
            HostStatus::Failed { step, error } => Some((host, format!("{step:?}: {error}"))),
            _ => None,
        })
        .collect();
    let succeeded = state
        .hosts
        .values()
        .filter(|h| h.status == HostStatus::Succeeded)
        .count();
    eprintln!(
        "{command}: {succeeded} host(s) succeeded, {} failed (deploy {id})",
        failed.len()
    );
    let why = match &state.status {
        DeployStatus::Completed if failed.is_empty() => return Ok(()),
        DeployStatus::Completed => "some hosts failed within max_failures".to_owned(),
        DeployStatus::Failed { reason } | DeployStatus::Cancelled { reason } => reason.clone(),
        other => format!("the deploy stopped while {other:?}"),
    };
    for (host, what) in &failed {
        eprintln!("  {host}: failed at {what}");
    }
    Err(UserError {
        message: format!("{command} failed: {why}"),
        hint: Some(format!(
            "see `flotilla replay {id}`; continue it with `flotilla replay {id} --resume`, or go back with `flotilla rollback`"
        )),
        code: FAILED,
    }
    .into())
}

/// A hook that runs on this machine before anything is asked of the service (`pre-connect`,
/// `pre-build`); a failure stops.
pub async fn early_hook(
    config: &Config,
    root: &Path,
    args: &crate::rollout::FleetArgs,
    plan: &flotilla_deploy::plan::Plan,
    command: &str,
    name: &str,
) -> anyhow::Result<()> {
    let hook_ctx = flotilla_scheduler::procedure::hook_context_for(
        config,
        &crate::session::performer(),
        plan,
        command,
    );
    let hooks = flotilla_scheduler::procedure::Hooks {
        config,
        root,
        skip: args.skip_hooks,
    };
    let (_, result) = hooks.run(name, &hook_ctx).await;
    result.map_err(|e| {
        crate::rollout::user_error(flotilla_scheduler::procedure::ProcedureError::Hook(e))
    })
}

/// An accessory operation's files sealed to the service's key `public` (an `.erb` one holds
/// what its secrets rendered to).
fn seal_files(public: &str, files: &AccessoryFiles) -> anyhow::Result<Vec<SealedAccessoryFile>> {
    let mut out = Vec::new();
    for (accessory, by_path) in files {
        for (local, contents) in by_path {
            let sealed = seal_bytes(public, contents.expose()).with_context(|| {
                format!("sealing accessory {accessory}'s {local} to the scheduler service")
            })?;
            out.push(SealedAccessoryFile {
                accessory: accessory.clone(),
                local: local.clone(),
                contents: sealed,
            });
        }
    }
    Ok(out)
}

/// A rollout of `kind` for the fleet flags `args`, asked of the service; `files` are an
/// accessory operation's rendered `files:` (empty for anything else).
pub async fn ask_rollout(
    config: &Config,
    args: &crate::rollout::FleetArgs,
    kind: RolloutKind,
    deploy_id: DeployId,
    preamble: Vec<Event>,
    command: &'static str,
    files: AccessoryFiles,
) -> anyhow::Result<()> {
    let root = std::env::current_dir().context("reading the current directory")?;
    rollout(Ask {
        config,
        root: &root,
        config_file: &args.config.config_file,
        kind,
        deploy_id,
        narrow: crate::commands::deploy::narrow(args),
        preamble,
        actor: crate::session::performer(),
        lock_wait: args.lock_wait.map(Duration::from_secs),
        json: args.json,
        quiet: args.quiet,
        command,
        skip_hooks: args.skip_hooks,
        files,
    })
    .await
}
