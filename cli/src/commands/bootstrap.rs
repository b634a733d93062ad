//! `flotilla server bootstrap`: every host made ready over SSH (Docker, Flotilla's
//! directories, the agent image, NATS on the control host, the proxy and executor
//! containers), then each executor's identity read back for enrolment. The steps are planned
//! by `flotilla_setup`; this file chooses the hosts, renders progress and reports.

use crate::exit::{FAILED, UserError};
use crate::session::{FleetArgs, Session, control_host, scheduler_key};
use clap::Args;
use flotilla_deploy::Config;
use flotilla_deploy::plan::matches;
use flotilla_setup::plan::{self, HostSpec, NatsSettings, NatsSpec};
use flotilla_setup::{AgentImage, Bootstrapped, Progress};
use flotilla_ssh::Pool;

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
    let s = Session::open(&args.fleet)?;
    bootstrap_fleet(&s).await.map(|_| ())
}

/// Bootstraps the hosts the session's filters pick (plus the control host when setup boots
/// NATS), printing progress; fails naming every host that failed.
pub async fn bootstrap_fleet(s: &Session) -> anyhow::Result<Vec<Bootstrapped>> {
    let image = agent_image()?;
    let key = scheduler_key(&s.root)?.public_key_base64();
    let specs = host_specs(s, &image.tag, &key, &nats_users(s)?)?;
    let pool = crate::commands::fanout::pool(&s.config);
    let json = s.args.json;
    let quiet = s.args.quiet;
    let report = move |p: Progress| print_progress(json, quiet, &p);
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
    // Enrolment over the same pooled connections: the identity each executor wrote, with
    // the host key of the connection it was read over. Changed keys are refused here;
    // `flotilla server enroll HOST --replace` accepts them.
    let mut enrolled_now = false;
    let hosts: Vec<String> = done.iter().map(|b| b.host.clone()).collect();
    for (host, result) in crate::enrol::enroll_hosts(&pool, &s.log, &s.actor, &hosts, false).await {
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
    // executor, retrying, gets in.
    if enrolled_now {
        failed.extend(admit_enrolled(s, &pool, &image, &key, &report).await?);
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

/// Rewrites the users of the NATS setup booted (if it booted one) from the enrolments in the
/// log, and has NATS reread them; returns the hosts where that failed.
pub async fn admit_enrolled(
    s: &Session,
    pool: &Pool,
    image: &AgentImage,
    scheduler_key: &str,
    report: &(dyn Fn(Progress) + Sync),
) -> anyhow::Result<Vec<String>> {
    let users = nats_users(s)?;
    let control: Vec<HostSpec> = host_specs(s, &image.tag, scheduler_key, &users)?
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
fn nats_users(s: &Session) -> anyhow::Result<Vec<plan::User>> {
    use flotilla_protocol::access;
    let operator = crate::session::operator_nkey(&s.root)?;
    let mut users = vec![plan::User {
        nkey: operator.public_key(),
        permissions: access::operator_permissions(),
    }];
    let enrolled = flotilla_events::Enrolled::from_log(&s.log)
        .map_err(|e| anyhow::Error::new(e).context("read the enrolled hosts from the event log"))?;
    users.extend(enrolled.hosts().map(|(host, e)| plan::User {
        nkey: e.keys.nats_key.clone(),
        permissions: access::host_permissions(host),
    }));
    Ok(users)
}

/// What each host should run: the agents everywhere; NATS on the control host when no
/// `x-flotilla.nats.url` names a NATS of the user's own, admitting `users` only, speaking
/// TLS with a certificate from the project's CA (made once in `.flotilla/`). Every host gets
/// the CA its executor pins: that one, or the user's `x-flotilla.nats.ca`.
pub fn host_specs(
    s: &Session,
    image: &str,
    scheduler_key: &str,
    users: &[plan::User],
) -> anyhow::Result<Vec<HostSpec>> {
    let (config, args) = (&s.config, &s.args);
    let own_nats = config.flotilla.nats.as_ref().and_then(|n| n.url.clone());
    let control = control_host(config);
    let nats_url = match (&own_nats, &control) {
        (Some(url), _) => url.clone(),
        (None, Some(c)) => format!("nats://{c}:{}", plan::NATS_PORT),
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
        (Some(_), _) => (own_nats_ca(s)?, None),
        (None, control) => {
            let dir = s.root.join(".flotilla");
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
            let tls = control.as_deref().map(|c| flotilla_setup::NatsTls {
                ca: ca.clone(),
                names: flotilla_setup::NatsTls::names_of(c),
            });
            (Some(ca.cert_pem.clone()), tls)
        }
    };
    let mut hosts = picked_hosts(config, args);
    // NATS must be up wherever setup boots it, whatever the filters pick.
    if let (None, Some(c)) = (&own_nats, &control)
        && !hosts.contains(c)
    {
        hosts.insert(0, c.clone());
    }
    hosts
        .into_iter()
        .map(|host| {
            Ok(HostSpec {
                proxy_run: crate::commands::proxy_fleet::proxy_run(config, &host)?,
                nats: (own_nats.is_none() && control.as_deref() == Some(host.as_str())).then(
                    || NatsSpec {
                        image: nats_image.clone(),
                        config: plan::nats_config(&NatsSettings::for_host(&host, users.to_vec())),
                        tls: tls.clone(),
                    },
                ),
                executor_conf: plan::executor_conf(
                    &host,
                    &nats_url,
                    scheduler_key,
                    nats_ca.is_some(),
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
fn own_nats_ca(s: &Session) -> anyhow::Result<Option<String>> {
    let Some(path) = s.config.flotilla.nats.as_ref().and_then(|n| n.ca.as_ref()) else {
        return Ok(None);
    };
    let path = s.root.join(path);
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
