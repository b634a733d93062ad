//! `flotilla secrets print|extract`, as Kamal's.

use clap::{Args, Subcommand};
use flotilla_deploy::config::secrets;

use super::config::ConfigArgs;
use crate::exit::{USAGE, UserError};

/// Show and extract secrets
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flotilla secrets print\n  flotilla secrets print -d staging\n  flotilla secrets extract DB_PASSWORD \"$(bw-fetch ...)\""
)]
pub struct SecretsCmd {
    #[command(subcommand)]
    pub action: SecretsAction,
}

#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Print the resolved secrets as KEY=VALUE lines, in clear (as Kamal does)
    Print {
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Print the value of NAME from a JSON object of secrets (keys may be prefixed `path/NAME`)
    Extract {
        /// The secret's name
        name: String,
        /// A JSON object of names to values, as secret adapters print it
        json: String,
        /// Print without a trailing newline
        #[arg(long)]
        inline: bool,
    },
}

pub fn run(cmd: &SecretsCmd) -> anyhow::Result<()> {
    match &cmd.action {
        SecretsAction::Print { args } => {
            let config = args.load()?;
            let mut out = String::new();
            for (k, v) in config.secrets.iter() {
                out.push_str(&format!("{k}={}\n", v.expose()));
            }
            super::write_stdout(&out)
        }
        SecretsAction::Extract { name, json, inline } => {
            let value = secrets::extract(name, json).map_err(|e| UserError {
                message: e.to_string(),
                hint: Some(
                    "pass the JSON a secrets adapter printed, and a name it contains".into(),
                ),
                code: USAGE,
            })?;
            super::write_stdout(&if *inline { value } else { value + "\n" })
        }
    }
}
