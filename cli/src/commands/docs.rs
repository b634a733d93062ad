//! `flotilla docs [SECTION]`: the documentation of deploy.yml, from the validator's own table.

use clap::Args;
use flotilla_deploy::config::{diag::did_you_mean, schema};

use crate::exit::{USAGE, UserError};

/// Show the documentation of config/deploy.yml's sections
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flotilla docs\n  flotilla docs proxy\n  flotilla docs x-flotilla/rollout"
)]
pub struct DocsCmd {
    /// A section (root, servers, env, proxy, ...); all sections when omitted
    pub section: Option<String>,
}

pub fn run(cmd: &DocsCmd) -> anyhow::Result<()> {
    let text = match &cmd.section {
        None => schema::SECTIONS
            .iter()
            .map(|s| schema::render(s))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(name) => {
            let Some(section) = schema::section(name) else {
                let names = schema::SECTIONS.iter().map(|s| s.name);
                let hint = match did_you_mean(name, names) {
                    Some(s) => format!("did you mean `flotilla docs {s}`?"),
                    None => "run `flotilla docs` to see every section".into(),
                };
                return Err(UserError {
                    message: format!("no documentation section `{name}`"),
                    hint: Some(hint),
                    code: USAGE,
                }
                .into());
            };
            schema::render(section)
        }
    };
    super::write_stdout(&text)
}
