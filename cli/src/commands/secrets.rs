//! `flotilla secrets fetch|extract|print`, as Kamal's.

use clap::{Args, Subcommand};
use flotilla_deploy::config::{secrets, vault};

use super::config::ConfigArgs;
use crate::exit::{USAGE, UserError};

/// Fetch, show and extract secrets
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flotilla secrets fetch -a 1password --account acme --from Vault/Item DB_PASSWORD\n  flotilla secrets print\n  flotilla secrets print -d staging\n  flotilla secrets extract DB_PASSWORD \"$(bw-fetch ...)\""
)]
pub struct SecretsCmd {
    #[command(subcommand)]
    pub action: SecretsAction,
}

#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Fetch secrets from a vault with its CLI, printing them as a JSON object (Kamal's adapters:
    /// 1password, bitwarden, bitwarden-sm, aws_secrets_manager, gcp, lastpass, doppler, enpass,
    /// passbolt)
    Fetch {
        /// Which vault adapter to use
        #[arg(short = 'a', long)]
        adapter: String,
        /// The account identifier or username
        #[arg(long)]
        account: Option<String>,
        /// A vault or folder to fetch the secrets from
        #[arg(long)]
        from: Option<String>,
        /// Print shell-escaped, without a trailing newline (as in a secrets file's `$(...)`)
        #[arg(long)]
        inline: bool,
        /// The secrets to fetch
        secrets: Vec<String>,
    },
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
        SecretsAction::Fetch {
            adapter,
            account,
            from,
            inline,
            secrets,
        } => {
            let req = vault::SecretsCommand::Fetch(vault::FetchRequest {
                adapter: adapter.clone(),
                account: account.clone(),
                from: from.clone(),
                secrets: secrets.clone(),
                inline: *inline,
            });
            let vars: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let cwd = std::env::current_dir()?;
            let out = vault::run(
                &req,
                vault::Env {
                    vars: &vars,
                    cwd: &cwd,
                },
            )
            .map_err(|e| UserError {
                message: e.to_string(),
                hint: Some("check the adapter's CLI is installed and logged in".into()),
                code: USAGE,
            })?;
            super::write_stdout(&if *inline { out } else { out + "\n" })
        }
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
