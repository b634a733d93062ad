//! `flotilla server bootstrap`: every host made ready over SSH (Docker, Flotilla's
//! directories, the agent image, NATS on the control host, the proxy and executor
//! containers), then each executor's identity read back for enrolment. The steps are planned
//! by `flotilla_setup`; this file chooses the hosts, renders progress and reports.

use crate::enrol::Records;
use crate::exit::{FAILED, UserError};
use crate::session::{FleetArgs, Session, control_hosts, scheduler_key};
use anyhow::Context as _;
use clap::Args;
use flotilla_deploy::Config;
use flotilla_deploy::plan::matches;
use flotilla_events::SledLog;
use flotilla_protocol::signing::JobSigner;
use flotilla_setup::plan::{self, HostSpec, NatsSettings, NatsSpec, SchedulerSpec};
use flotilla_setup::{AgentImage, Bootstrapped, Progress};
use flotilla_ssh::Pool;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const EXAMPLES: &str = "Examples:
  flotilla server bootstrap                 # every host in config/deploy.yml
  flotilla server bootstrap -h 10.0.0.7     # one host (e.g. just added)
  flotilla server bootstrap --json          # one JSON line per host and step

The agents run from an image built from this flotilla binary (it must be static; set
FLOTILLA_AGENT_BINARY to ship another one). Re-running changes nothing on a current host.";

/// Install Docker where missing, the agents and NATS, over SSH
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES, disable_help_flag = true)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
}

pub async fn run(args: &BootstrapArgs) -> anyhow::Result<()> {
    let p = Project::open(&args.fleet)?;
    bootstrap_fleet(&p).await.map(|_| ())
}

/// What bootstrap and enrolment need of the project. In service mode
/// (`x-flotilla.scheduler.mode: service`) no local event log is opened: enrolments are
/// recorded in the scheduler service's log.
pub struct Project {
    pub root: PathBuf,
    pub config: Config,
    pub args: FleetArgs,
    pub actor: String,
    /// The project's own log (embedded mode); `None` in service mode.
    pub log: Option<SledLog>,
}

impl Project {
    pub fn open(args: &FleetArgs) -> anyhow::Result<Project> {
        let config = crate::session::load_config(args)?;
        if crate::client::service_mode(&config) {
            return Ok(Project {
                root: std::env::current_dir().context("reading the current directory")?,
                config,
                args: args.clone(),
                actor: crate::session::performer(),
                log: None,
            });
        }
        let s = Session::open_with(args, config)?;
        Ok(Project {
            root: s.root,
            config: s.config,
            args: s.args,
            actor: s.actor,
            log: Some(s.log),
        })
    }

    /// Whether setup boots NATS (no `x-flotilla.nats.url` names a NATS of the user's own).
    fn boots_nats(&self) -> bool {
        self.config
            .flotilla
            .nats
            .as_ref()
            .and_then(|n| n.url.as_ref())
            .is_none()
    }
}

/// How long a re-run of setup in service mode tries the running service for the enrolled
/// hosts before it takes none (on a first setup nothing answers yet); they are admitted
/// again once enrolled, so a miss costs a NATS reload, never a host.
const SERVICE_PROBE: Duration = Duration::from_secs(10);

/// A NATS client to the scheduler service, with the endpoint (the SSH tunnel) it needs.
type ServiceConn = (async_nats::Client, crate::session::NatsEndpoint);

/// Bootstraps the hosts the project's filters pick (plus the control host when setup boots
/// NATS, and there the scheduler service in service mode), printing progress; then enrols
/// each executor (in the service's log in service mode); fails naming every host that
/// failed.
pub async fn bootstrap_fleet(p: &Project) -> anyhow::Result<Vec<Bootstrapped>> {
    let image = agent_image()?;
    let signer = scheduler_key(&p.root)?;
    let key = signer.public_key_base64();
    let mut conn: Option<ServiceConn> = None;
    let users = match &p.log {
        Some(log) => nats_users(&p.root, Records::Local(log)).await?,
        None => {
            // A re-run: the service that runs already knows the enrolled hosts.
            if let Ok(Ok(c)) =
                tokio::time::timeout(SERVICE_PROBE, crate::client::connect(&p.config)).await
            {
                conn = Some(c);
            }
            match &conn {
                Some((client, _)) => match nats_users(&p.root, Records::Service(client)).await {
                    Ok(users) => users,
                    Err(_) => operator_users(&p.root)?,
                },
                None => operator_users(&p.root)?,
            }
        }
    };
    let pool = crate::commands::fanout::pool(&p.config);
    let scheduler = scheduler_spec(p, &signer, &pool).await?;
    let specs = host_specs(p, &image.tag, &key, &users, scheduler)?;
    let json = p.args.json;
    let quiet = p.args.quiet;
    let report = move |pr: Progress| print_progress(json, quiet, &pr);
    let results = flotilla_setup::bootstrap(&pool, &specs, &image, &report).await;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(b) => done.push(b),
            Err(e) => {
                eprintln!("flotilla: {e}\n  next: {}", e.hint());
                if let Some(src) = std::error::Error::source(&e) {
                    eprintln!("  cause: {src}");
                }
                failed.push(host_of(&e));
            }
        }
    }
    let service: Option<ServiceConn> = match &p.log {
        Some(_) => None,
        None => {
            // The service's key as its host holds it, read over the pinned SSH connection:
            // pinned here, so a CLI never learns it from NATS.
            let public = done.iter().find_map(|b| b.service_key.clone());
            if let Some(public) = &public {
                crate::client::pin_service_key(&p.root, public)?;
            }
            // A tunnel made before NATS was restarted may be gone: connect again.
            drop(conn.take());
            let c = crate::client::connect(&p.config).await?;
            if let Some(public) = &public {
                crate::client::await_service(&c.0, public).await?;
            }
            Some(c)
        }
    };
    let records = match (&p.log, &service) {
        (Some(log), _) => Records::Local(log),
        (None, Some((client, _))) => Records::Service(client),
        (None, None) => anyhow::bail!("no event log and no scheduler service"),
    };
    // Enrolment over the same pooled connections: the identity each executor wrote, with
    // the host key of the connection it was read over. Changed keys are refused here;
    // `flotilla server enroll HOST --replace` accepts them.
    let mut enrolled_now = false;
    let hosts: Vec<String> = done.iter().map(|b| b.host.clone()).collect();
    for (host, result) in crate::enrol::enroll_hosts(&pool, records, &p.actor, &hosts, false).await
    {
        match result {
            Ok(outcome) => {
                enrolled_now |= matches!(outcome, crate::enrol::Outcome::Enrolled { .. });
                print_enrolment(json, quiet, &host, &outcome);
            }
            Err(e) => {
                eprintln!("flotilla: {}", crate::exit::render(&e));
                failed.push(host);
            }
        }
    }
    // The NATS setup boots admits a host only by its enrolled key: a host enrolled just now
    // is added to its users (the running NATS rereads its configuration, no restart); its
    // executor, retrying, gets in. In service mode the users may have been written before
    // the service could name the enrolled hosts, so they are checked every time (a current
    // NATS gets no step).
    if p.boots_nats() && (enrolled_now || p.log.is_none()) {
        failed.extend(admit_enrolled(p, records, &pool, &image, &signer, &report).await?);
    }
    pool.close().await;
    if failed.is_empty() {
        return Ok(done);
    }
    Err(UserError {
        message: format!("bootstrap failed on {}", failed.join(", ")),
        hint: Some("fix what each host reports above, then run the command again".into()),
        code: FAILED,
    }
    .into())
}

/// Rewrites the users of the NATS setup booted (if it booted one) from the enrolments, and
/// has NATS reread them; returns the hosts where that failed.
pub async fn admit_enrolled(
    p: &Project,
    records: Records<'_>,
    pool: &Pool,
    image: &AgentImage,
    signer: &JobSigner,
    report: &(dyn Fn(Progress) + Sync),
) -> anyhow::Result<Vec<String>> {
    let users = nats_users(&p.root, records).await?;
    let control: Vec<HostSpec> = host_specs(
        p,
        &image.tag,
        &signer.public_key_base64(),
        &users,
        scheduler_spec(p, signer, pool).await?,
    )?
    .into_iter()
    .filter(|h| h.nats.is_some())
    .collect();
    let mut failed = Vec::new();
    for r in flotilla_setup::bootstrap(pool, &control, image, report).await {
        if let Err(e) = r {
            eprintln!("flotilla: {e}\n  next: {}", e.hint());
            failed.push(host_of(&e));
        }
    }
    Ok(failed)
}

/// The scheduler service setup boots beside NATS in service mode: it signs jobs with the
/// project's scheduler key (the one the executors trust) and reaches NATS with the
/// operators' key.
async fn scheduler_spec(
    p: &Project,
    signer: &JobSigner,
    pool: &Pool,
) -> anyhow::Result<Option<SchedulerSpec>> {
    if p.log.is_some() || !p.boots_nats() {
        return Ok(None);
    }
    let operator = crate::session::operator_nkey(&p.root)?;
    let seed = operator
        .seed()
        .context("the operators' NATS key has no seed")?;
    Ok(Some(SchedulerSpec {
        signing_key: signer.secret_base64(),
        nkey_seed: seed,
        peers: Vec::new(),
        service_key: shared_service_key(pool, &control_hosts(&p.config)).await,
    }))
}

/// The sealing key every instance of an HA scheduler service holds (secret, public), with
/// several control hosts: the CLI pins one key, whichever instance leads. The key a control
/// host already has is kept (read over its pinned SSH connection; a host that ran the
/// service alone before keeps its key), else a new one is made. `None` with one control
/// host: its service makes its own key, as it always has.
async fn shared_service_key(pool: &Pool, controls: &[String]) -> Option<(String, String)> {
    use flotilla_protocol::sealing::HostKey;
    if controls.len() < 2 {
        return None;
    }
    let read = format!("cat {} 2>/dev/null", plan::SERVICE_KEY);
    for host in controls {
        let Ok(out) = pool.exec(host, &read).await else {
            // Unreachable now: the bootstrap of that host reports it.
            continue;
        };
        let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        if let Ok(key) = HostKey::from_secret_base64(&text) {
            return Some((text.to_string(), key.public_key_base64()));
        }
    }
    let key = HostKey::generate();
    Some((key.secret_base64().to_string(), key.public_key_base64()))
}

/// The agent image of this flotilla binary, or what to do when it cannot be made.
pub fn agent_image() -> anyhow::Result<AgentImage> {
    AgentImage::prepare(&AgentImage::default_binary(), env!("CARGO_PKG_VERSION")).map_err(|e| {
        let hint = e.hint().to_owned();
        anyhow::Error::new(e).context(UserError {
            message: "cannot build the agent image".into(),
            hint: Some(hint),
            code: FAILED,
        })
    })
}

fn host_of(e: &flotilla_setup::HostError) -> String {
    use flotilla_setup::HostError as E;
    match e {
        E::Ssh { host, .. }
        | E::NoRoot { host }
        | E::DockerInstall { host, .. }
        | E::Step { host, .. }
        | E::Image { host, .. }
        | E::Remove { host, .. }
        | E::NoIdentity { host, .. }
        | E::Certificate { host, .. } => host.clone(),
    }
}

/// Who the NATS setup boots admits: the operators (this project's `.flotilla/nats-operator.nk`)
/// with every permission, and each enrolled host with its own key and only its own subjects.
async fn nats_users(root: &Path, records: Records<'_>) -> anyhow::Result<Vec<plan::User>> {
    use flotilla_protocol::access;
    let mut users = operator_users(root)?;
    let enrolled = records
        .enrolled()
        .await
        .context("read the enrolled hosts")?;
    users.extend(enrolled.hosts().map(|(host, e)| plan::User {
        nkey: e.keys.nats_key.clone(),
        permissions: access::host_permissions(host),
    }));
    Ok(users)
}

/// The operators alone (before any host is known).
fn operator_users(root: &Path) -> anyhow::Result<Vec<plan::User>> {
    let operator = crate::session::operator_nkey(root)?;
    Ok(vec![plan::User {
        nkey: operator.public_key(),
        permissions: flotilla_protocol::access::operator_permissions(),
    }])
}

/// What each host should run: the agents everywhere; NATS on the control host when no
/// `x-flotilla.nats.url` names a NATS of the user's own, admitting `users` only, speaking
/// TLS with a certificate from the project's CA (made once in `.flotilla/`). Every host gets
/// the CA its executor pins: that one, or the user's `x-flotilla.nats.ca`.
pub fn host_specs(
    p: &Project,
    image: &str,
    scheduler_key: &str,
    users: &[plan::User],
    scheduler: Option<SchedulerSpec>,
) -> anyhow::Result<Vec<HostSpec>> {
    let (config, args) = (&p.config, &p.args);
    let own_nats = config.flotilla.nats.as_ref().and_then(|n| n.url.clone());
    let controls = control_hosts(config);
    if own_nats.is_none() && controls.len() == 2 {
        return Err(UserError {
            message: "x-flotilla.control names two hosts: a NATS cluster needs three to survive                       the loss of one (two cannot elect a leader without each other)"
                .into(),
            hint: Some("name one control host, or three".into()),
            code: crate::exit::USAGE,
        }
        .into());
    }
    let control = controls.first().cloned();
    let nats_url = match (&own_nats, &control) {
        (Some(url), _) => url.clone(),
        (None, Some(_)) => plan::nats_urls(&controls),
        (None, None) => {
            return Err(UserError {
                message: "no hosts in config/deploy.yml".into(),
                hint: Some("add hosts under servers:".into()),
                code: crate::exit::USAGE,
            }
            .into());
        }
    };
    let nats_image = config
        .flotilla
        .nats
        .as_ref()
        .and_then(|n| n.image.clone())
        .unwrap_or_else(|| plan::DEFAULT_NATS_IMAGE.to_owned());
    let (nats_ca, tls) = match (&own_nats, &control) {
        (Some(_), _) => (own_nats_ca(p)?, None),
        (None, control) => {
            let dir = p.root.join(".flotilla");
            let ca = flotilla_setup::ProjectCa::load_or_create(&dir).map_err(|e| {
                anyhow::Error::new(e).context(UserError {
                    message: format!(
                        "cannot make or read the project's NATS CA in {}",
                        dir.display()
                    ),
                    hint: Some(
                        "check .flotilla/nats-ca.pem and .flotilla/nats-ca.key (remove both to \
                         make a new CA: every host then gets it on the next setup)"
                            .into(),
                    ),
                    code: FAILED,
                })
            })?;
            let ca = std::sync::Arc::new(ca);
            (Some(ca.cert_pem.clone()), control.as_ref().map(|_| ca))
        }
    };
    let mut hosts = picked_hosts(config, args);
    // NATS must be up wherever setup boots it, whatever the filters pick.
    if own_nats.is_none() {
        for (i, c) in controls.iter().enumerate() {
            if !hosts.contains(c) {
                hosts.insert(i.min(hosts.len()), c.clone());
            }
        }
    }
    let clustered = controls.len() > 1;
    hosts
        .into_iter()
        .map(|host| {
            let control_here = own_nats.is_none() && controls.contains(&host);
            let peers: Vec<String> = controls.iter().filter(|c| **c != host).cloned().collect();
            let settings = if clustered {
                NatsSettings::clustered(&host, &peers, users.to_vec())
            } else {
                NatsSettings::for_host(&host, users.to_vec())
            };
            Ok(HostSpec {
                proxy_run: crate::commands::proxy_fleet::proxy_run(config, &host)?,
                nats: control_here.then(|| NatsSpec {
                    image: nats_image.clone(),
                    config: plan::nats_config(&settings),
                    route_ca: tls
                        .as_ref()
                        .filter(|_| clustered)
                        .map(|ca| ca.cert_pem.clone()),
                    tls: tls.as_ref().map(|ca| flotilla_setup::NatsTls {
                        ca: ca.clone(),
                        names: flotilla_setup::NatsTls::names_of(&host),
                    }),
                }),
                scheduler: control_here.then(|| scheduler.clone()).flatten().map(|s| {
                    SchedulerSpec {
                        peers: peers.clone(),
                        ..s
                    }
                }),
                executor_conf: plan::executor_conf(
                    &host,
                    &nats_url,
                    scheduler_key,
                    nats_ca.is_some(),
                ) + &plan::executor_telemetry_conf(
                    config
                        .flotilla
                        .executor
                        .as_ref()
                        .and_then(|e| e.metrics_port),
                    config.flotilla.otel.as_ref().map(|o| o.endpoint.as_str()),
                ),
                nats_ca: nats_ca.clone(),
                image: image.to_owned(),
                host,
            })
        })
        .collect()
}

/// The CA of the user's own NATS (`x-flotilla.nats.ca`, relative to the project), which
/// every executor is given to pin; `None` when the config names none.
fn own_nats_ca(p: &Project) -> anyhow::Result<Option<String>> {
    let Some(path) = p.config.flotilla.nats.as_ref().and_then(|n| n.ca.as_ref()) else {
        return Ok(None);
    };
    let path = p.root.join(path);
    let pem = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::Error::new(e).context(UserError {
            message: format!("cannot read x-flotilla.nats.ca {}", path.display()),
            hint: Some("point x-flotilla.nats.ca at the PEM file of your NATS's CA".into()),
            code: crate::exit::USAGE,
        })
    })?;
    Ok(Some(pem))
}

/// The hosts `-h`/`-r`/`-p` pick, in the config's order.
pub fn picked_hosts(config: &Config, args: &FleetArgs) -> Vec<String> {
    let picked = |patterns: &[String], name: &str| {
        patterns.is_empty() || patterns.iter().any(|p| matches(p, name))
    };
    let mut out: Vec<String> = Vec::new();
    for role in config
        .servers
        .iter()
        .filter(|r| picked(&args.roles, &r.name))
    {
        for host in role.hosts.iter().filter(|h| picked(&args.hosts, h)) {
            if !out.contains(host) {
                out.push(host.clone());
            }
        }
    }
    if args.primary {
        let primary = config
            .servers
            .iter()
            .find(|r| r.name == config.primary_role)
            .and_then(|r| r.hosts.first());
        out.retain(|h| Some(h) == primary);
    }
    out
}

fn print_enrolment(json: bool, quiet: bool, host: &str, outcome: &crate::enrol::Outcome) {
    let enrolled = matches!(outcome, crate::enrol::Outcome::Enrolled { .. });
    if json {
        let line = serde_json::json!({"host": host, "enrolled": enrolled});
        let _ = crate::commands::write_stdout(&format!("{line}\n"));
    } else if !quiet {
        match outcome {
            crate::enrol::Outcome::Enrolled { signing_key } => {
                eprintln!("{host}: enrolled (signing key {signing_key})")
            }
            crate::enrol::Outcome::Unchanged => eprintln!("{host}: already enrolled"),
        }
    }
}

pub fn print_progress(json: bool, quiet: bool, p: &Progress) {
    if json {
        let line = match p {
            Progress::Planned { host, steps } => {
                serde_json::json!({"host": host, "planned": steps})
            }
            Progress::StepDone { host, step } => serde_json::json!({"host": host, "done": step}),
            Progress::Done { host, changed } => {
                serde_json::json!({"host": host, "finished": true, "changed": changed})
            }
        };
        // A closed pipe only ends the progress output; the work goes on and is reported.
        let _ = crate::commands::write_stdout(&format!("{line}\n"));
        return;
    }
    if quiet {
        return;
    }
    match p {
        Progress::Planned { host, steps } if steps.is_empty() => {
            eprintln!("{host}: current, nothing to do")
        }
        Progress::Planned { host, steps } => eprintln!("{host}: {} step(s) to run", steps.len()),
        Progress::StepDone { host, step } => eprintln!("{host}: {step}: done"),
        Progress::Done { host, changed } => {
            eprintln!(
                "{host}: ready{}",
                if *changed { "" } else { " (unchanged)" }
            )
        }
    }
}
