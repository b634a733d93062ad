//! `flotilla config`: load, validate and print the resolved configuration, secrets redacted.

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
