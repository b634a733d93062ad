//! `flotilla build push|pull|details|create|remove`: Kamal's build commands. `push` builds and
//! pushes the image as `flotilla deploy` does; `pull` pulls it on every host over SSH;
//! `details`, `create` and `remove` show or run the buildx builder commands that
//! `deploy::plan::build_plan` plans (a deploy builds with that builder when the buildx plugin
//! is there, else on the engine: `crate::build`). Without buildx, `details` shows the engine's
//! commands instead and `create`/`remove` have nothing to do.

use crate::commands::config::ConfigArgs;
use crate::commands::fanout::{self, Targets};
use crate::exit::{FAILED, UserError};
use clap::{Args, Subcommand};
use flotilla_deploy::Config;
use flotilla_deploy::commands::App;
use flotilla_deploy::plan::{BuildInputs, BuildPlan, build_plan, engine_build};

const EXAMPLES: &str = "Examples:
  flotilla build push --version v42
  flotilla build pull --version v42
  flotilla build details
  flotilla build create";

/// Build the app image and manage the builder (Kamal's `kamal build`)
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct BuildCmd {
    #[command(subcommand)]
    action: BuildAction,
}

#[derive(Debug, Subcommand)]
enum BuildAction {
    /// Build the image and push it to the registry
    #[command(after_help = "Examples:\n  flotilla build push\n  flotilla build push --version v42")]
    Push(VersionArgs),
    /// Pull the image of the version on every host
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla build pull --version v42\n  flotilla build pull -r web --version v42"
    )]
    Pull(PullArgs),
    /// Build and push the image, then pull it on every host (Kamal's `build deliver`)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  flotilla build deliver --version v42"
    )]
    Deliver(PullArgs),
    /// Show the builder Kamal's settings describe and its commands
    #[command(after_help = "Examples:\n  flotilla build details")]
    Details(VersionArgs),
    /// Create the buildx builder (and remote context) the settings describe
    #[command(after_help = "Examples:\n  flotilla build create")]
    Create(VersionArgs),
    /// Remove that builder
    #[command(after_help = "Examples:\n  flotilla build remove")]
    Remove(VersionArgs),
}

#[derive(Debug, Args)]
struct VersionArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The version to build or pull (default: the git commit)
    #[arg(long)]
    version: Option<String>,
}

#[derive(Debug, Args)]
struct PullArgs {
    #[command(flatten)]
    version: VersionArgs,
    #[command(flatten)]
    targets: Targets,
    /// One JSON object per host on stdout: host, exit, stdout, stderr
    #[arg(long)]
    json: bool,
}

/// Pulls the version's image on every picked host.
async fn pull(config: &flotilla_deploy::Config, version: &str, a: &PullArgs) -> anyhow::Result<()> {
    let hosts = a.targets.hosts(config);
    if hosts.is_empty() {
        return Err(fanout::no_hosts().into());
    }
    let command = App::new(config, None).pull_image(version);
    let pool = fanout::pool(config);
    let jobs = hosts.iter().map(|h| (h.clone(), command.clone())).collect();
    let runs = fanout::run_all(&pool, jobs).await;
    pool.close().await;
    fanout::print_runs("App", &runs, a.json)?;
    fanout::check_runs("the pull", &runs)
}

pub async fn run(cmd: &BuildCmd) -> anyhow::Result<()> {
    crate::lifecycle::init_tracing("warn");
    match &cmd.action {
        BuildAction::Push(a) => {
            let (config, version) = load(a)?;
            let root = std::env::current_dir()?;
            let pushed = crate::build::build_and_push(&config, &root, &version, false)?;
            println!("pushed {}@{}", pushed.image, pushed.digest);
            Ok(())
        }
        BuildAction::Deliver(a) => {
            let (config, version) = load(&a.version)?;
            let root = std::env::current_dir()?;
            let pushed = crate::build::build_and_push(&config, &root, &version, false)?;
            println!("pushed {}@{}", pushed.image, pushed.digest);
            pull(&config, &version, a).await
        }
        BuildAction::Pull(a) => {
            let (config, version) = load(&a.version)?;
            pull(&config, &version, a).await
        }
        BuildAction::Details(a) => {
            let (config, version) = load(a)?;
            let plan = plan(&config, &version);
            let mut text = format!(
                "Builder: {:?}{}\nArchitectures: local {}, remote {}\nTags: {}\n",
                plan.kind,
                plan.builder
                    .as_ref()
                    .map(|b| format!(" ({b})"))
                    .unwrap_or_default(),
                list(&plan.local_arches),
                list(&plan.remote_arches),
                plan.tags.join(", ")
            );
            if crate::build::has_buildx() {
                for c in &plan.create {
                    text.push_str(&format!("create: {}\n", c.join(" ")));
                }
                text.push_str(&format!("build: {}\n", plan.build.join(" ")));
            } else {
                text.push_str(&engine_details(&config, &version));
            }
            crate::commands::write_stdout(&text)
        }
        BuildAction::Create(a) | BuildAction::Remove(a) => {
            let (config, version) = load(a)?;
            if !crate::build::has_buildx() {
                println!(
                    "nothing to do: without the docker buildx plugin images are built on the \
                     Docker engine (see `flotilla build details`)"
                );
                return Ok(());
            }
            let plan = plan(&config, &version);
            match &cmd.action {
                BuildAction::Create(_) => run_local(&plan.create),
                _ => run_local(&plan.remove),
            }
        }
    }
}

fn load(a: &VersionArgs) -> anyhow::Result<(Config, String)> {
    let config = a.config.load()?;
    let version = match &a.version {
        Some(v) => v.clone(),
        None => crate::commands::deploy::git_version(&std::env::current_dir()?)?,
    };
    Ok((config, version))
}

fn list(arches: &[String]) -> String {
    if arches.is_empty() {
        "none".into()
    } else {
        arches.join(", ")
    }
}

/// What `build push` runs when the docker CLI has no buildx plugin, or why it cannot.
fn engine_details(config: &Config, version: &str) -> String {
    let inputs = BuildInputs {
        version: version.to_owned(),
        local_arch: crate::build::local_arch(),
        no_cache: false,
    };
    let caps = crate::build::engine_caps(config);
    match engine_build(config, &inputs, &caps, "SECRETS_DIR") {
        Ok(b) => {
            let env: Vec<String> = b.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut text = format!(
                "Runner: the Docker engine (no buildx plugin), with {}\n",
                env.join(" ")
            );
            for step in &b.steps {
                text.push_str(&format!("run: {}\n", step.argv.join(" ")));
            }
            for note in &b.notes {
                text.push_str(&format!("note: {note}\n"));
            }
            text
        }
        Err(e) => format!("Runner: none here: {e}\n"),
    }
}

fn plan(config: &Config, version: &str) -> BuildPlan {
    build_plan(
        config,
        &BuildInputs {
            version: version.to_owned(),
            local_arch: crate::build::local_arch(),
            no_cache: false,
        },
    )
}

/// Runs each argv here, stopping at the first failure.
fn run_local(commands: &[Vec<String>]) -> anyhow::Result<()> {
    if commands.is_empty() {
        println!("nothing to do: this builder needs no setup");
        return Ok(());
    }
    for argv in commands {
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        println!("{}", argv.join(" "));
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .map_err(|e| UserError {
                message: format!("cannot run {program}: {e}"),
                hint: Some("install Docker with the buildx plugin".into()),
                code: FAILED,
            })?;
        if !status.success() {
            return Err(UserError {
                message: format!("`{}` failed ({status})", argv.join(" ")),
                hint: Some("see its output above".into()),
                code: FAILED,
            }
            .into());
        }
    }
    Ok(())
}
