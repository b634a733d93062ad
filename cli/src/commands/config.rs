//! `flotilla config`: load, validate and print the resolved configuration, secrets redacted.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use flotilla_deploy::config::{self, Config, ConfigErrors, LoadOptions};

use crate::exit::{USAGE, UserError};

/// Kamal's config-selecting flags, shared by every command that loads the config.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Base config file, relative to the current directory
    #[arg(short = 'c', long = "config-file", default_value = "config/deploy.yml")]
    pub config_file: PathBuf,
    /// Destination: also load config/deploy.DEST.yml and .kamal/secrets.DEST
    #[arg(short = 'd', long, env = "KAMAL_DESTINATION")]
    pub destination: Option<String>,
}

impl ConfigArgs {
    /// Load and validate the config from the current directory, printing Kamal 1 warnings.
    /// Configuration errors become a [`UserError`] with exit code 64 and every located message.
    pub fn load(&self) -> anyhow::Result<Config> {
        let root = std::env::current_dir().context("cannot read the current directory")?;
        let opts = LoadOptions {
            config_file: self.config_file.clone(),
            destination: self.destination.clone().filter(|d| !d.is_empty()),
            ..LoadOptions::new(root)
        };
        let config = config::load(&opts).map_err(config_error)?;
        for w in &config.warnings {
            eprintln!("flotilla: warning: {w}");
        }
        Ok(config)
    }
}

/// `flotilla NAME ARGS...` where NAME is not one of Flotilla's commands but an alias of the
/// config (found with the `-c`/`-d` among ARGS, as Kamal finds it): the alias's words, then
/// ARGS. Anything else, or a config that does not load, leaves the arguments as they are for
/// clap to parse (and report).
pub fn expand_alias(args: Vec<OsString>, is_command: impl Fn(&str) -> bool) -> Vec<OsString> {
    let Some(name) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    if name.starts_with('-') || is_command(name) {
        return args;
    }
    let rest: Vec<String> = args
        .iter()
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Ok(root) = std::env::current_dir() else {
        return args;
    };
    let (config_file, destination) = config_flags(&rest);
    let opts = LoadOptions {
        config_file,
        destination: destination
            .or_else(|| std::env::var("KAMAL_DESTINATION").ok())
            .filter(|d| !d.is_empty()),
        ..LoadOptions::new(root)
    };
    let Ok(config) = config::load(&opts) else {
        return args;
    };
    // An alias may name another alias, as Kamal re-dispatches; a cycle is stopped.
    let mut words = rest;
    let mut name = name.to_string();
    let mut expanded = false;
    for _ in 0..=config.aliases.len() {
        match config::aliases::expand(&config.aliases, &name, &words) {
            Some(Ok(w)) => words = w,
            Some(Err(message)) => fail(&message),
            None => break,
        }
        expanded = true;
        match words.split_first() {
            Some((first, rest)) if !is_command(first) && config.aliases.contains_key(first) => {
                name = first.clone();
                words = rest.to_vec();
            }
            _ => {
                return std::iter::once(args[0].clone())
                    .chain(words.into_iter().map(OsString::from))
                    .collect();
            }
        }
    }
    if expanded {
        fail(&format!(
            "alias {name}: aliases expand into each other without end"
        ));
    }
    args
}

fn fail(message: &str) -> ! {
    eprintln!("flotilla: error: {message}");
    std::process::exit(USAGE)
}

/// `-c FILE` / `--config-file[=]FILE` and `-d DEST` / `--destination[=]DEST` among `args`.
fn config_flags(args: &[String]) -> (PathBuf, Option<String>) {
    let mut file = PathBuf::from("config/deploy.yml");
    let mut dest = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, value) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let is_file = matches!(flag, "-c" | "--config-file");
        let is_dest = matches!(flag, "-d" | "--destination");
        if !is_file && !is_dest {
            continue;
        }
        let Some(v) = value.or_else(|| it.next().cloned()) else {
            break;
        };
        if is_file {
            file = PathBuf::from(v);
        } else {
            dest = Some(v);
        }
    }
    (file, dest)
}

fn config_error(e: ConfigErrors) -> anyhow::Error {
    UserError {
        message: e.to_string(),
        hint: Some("fix the lines above, then check again with `flotilla config`".into()),
        code: USAGE,
    }
    .into()
}

/// Print the resolved config (destination merged, defaults applied, secrets redacted)
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flotilla config\n  flotilla config -d staging --json\n  flotilla config -c ops/deploy.yml"
)]
pub struct ConfigCmd {
    #[command(flatten)]
    pub args: ConfigArgs,
    /// Print JSON instead of YAML
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: &ConfigCmd) -> anyhow::Result<()> {
    let config = cmd.args.load()?;
    let text = if cmd.json {
        config::output::to_json(&config)? + "\n"
    } else {
        config::output::to_yaml(&config)?
    };
    crate::commands::write_stdout(&text)
}
