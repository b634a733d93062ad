//! `flotilla events`: print the event log (`--json` for JSON lines), import
//! JSON lines into an empty log, and salvage a damaged one.
//!
//! JSON lines are the portable form of the history: sled's on-disk format is
//! not promised stable, so moving or migrating a log is export then import.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use flotilla_events::jsonl::{self, JsonlError};
use flotilla_events::{DeployId, Envelope, EventLog, LogError, SledLog};

use crate::exit::{FAILED, USAGE, UserError};

/// Print the event log, or import one
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
        flotilla events\n  \
        flotilla events --deploy 01JD3ZK9W6T8Q2M4N5P7R8S9TA\n  \
        flotilla events --json > history.jsonl\n  \
        flotilla events import history.jsonl --log /srv/app/.flotilla/events\n  \
        flotilla events --salvage --json > rescued.jsonl"
)]
pub struct EventsCmd {
    #[command(subcommand)]
    pub action: Option<EventsAction>,
    /// Only the events of this deploy
    #[arg(long, value_name = "ID")]
    pub deploy: Option<String>,
    /// One JSON object per line (the format `events import` reads)
    #[arg(long)]
    pub json: bool,
    /// Read a damaged log: print every readable event, list the rest on stderr
    #[arg(long)]
    pub salvage: bool,
    /// Event log directory
    #[arg(
        long,
        value_name = "PATH",
        env = "FLOTILLA_EVENT_LOG",
        default_value = ".flotilla/events",
        global = true
    )]
    pub log: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// Load a JSON-lines export (`flotilla events --json`) into an empty log
    #[command(after_help = "Examples:\n  \
        flotilla events import history.jsonl\n  \
        flotilla events --json --log old/events | flotilla events import - --log new/events")]
    Import {
        /// The file to read, `-` for standard input
        file: PathBuf,
    },
}

pub fn run(cmd: &EventsCmd) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match &cmd.action {
        Some(EventsAction::Import { file }) => import(&cmd.log, file, &mut out),
        None => show(cmd, &mut out),
    }
}

fn show(cmd: &EventsCmd, out: &mut impl Write) -> anyhow::Result<()> {
    require_log(&cmd.log)?;
    let wanted = cmd.deploy.as_deref().map(DeployId::from);
    let keep = |e: &Envelope| wanted.as_ref().is_none_or(|id| &e.deploy_id == id);
    if cmd.salvage {
        let salvage = SledLog::salvage_dir(&cmd.log).map_err(|e| log_error(&cmd.log, e))?;
        for event in salvage.events.iter().filter(|e| keep(e)) {
            print_event(event, cmd.json, out)?;
        }
        out.flush().context("write events")?;
        for problem in &salvage.problems {
            eprintln!("flotilla: warning: {problem}");
        }
        eprintln!(
            "flotilla: salvaged {} events, {} lost, {} problems",
            salvage.events.len(),
            salvage.lost(),
            salvage.problems.len()
        );
        return Ok(());
    }
    let log = SledLog::open(&cmd.log).map_err(|e| log_error(&cmd.log, e))?;
    let events = log.read_all().map_err(|e| log_error(&cmd.log, e))?;
    for event in events {
        let event = event.map_err(|e| log_error(&cmd.log, e))?;
        if keep(&event) {
            print_event(&event, cmd.json, out)?;
        }
    }
    out.flush().context("write events")?;
    Ok(())
}

fn print_event(event: &Envelope, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json {
        return jsonl::write_line(event, out).map_err(|e| match e {
            JsonlError::Write(io) => anyhow::Error::new(io).context("write events"),
            other => other.into(),
        });
    }
    // The payload without its type wrapper: `{"ImagePulled":{...}}` -> `{...}`.
    let payload = match serde_json::to_value(&event.event) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().next().map(|(_, v)| v),
        _ => None,
    };
    let payload = payload.map(|v| v.to_string()).unwrap_or_default();
    writeln!(
        out,
        "{:>6}  {}  {}  {:<12}  {:<19}  {}",
        event.seq,
        event.at,
        event.deploy_id,
        event.host.as_deref().unwrap_or("-"),
        event.type_name(),
        payload
    )
    .context("write events")
}

fn import(log_dir: &Path, file: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(file).map_err(|e| UserError {
            message: format!("cannot read {}: {e}", file.display()),
            hint: Some("pass a file written by `flotilla events --json`".into()),
            code: USAGE,
        })?;
        Box::new(BufReader::new(f))
    };
    let log = SledLog::open(log_dir).map_err(|e| log_error(log_dir, e))?;
    let imported = jsonl::import(input, &log).map_err(|e| match e {
        JsonlError::Log(LogError::NotEmpty { events }) => UserError {
            message: format!(
                "event log {} already holds {events} events",
                log_dir.display()
            ),
            hint: Some("import into a new, empty directory: --log NEW_PATH".into()),
            code: USAGE,
        }
        .into(),
        JsonlError::Parse { .. } | JsonlError::Read { .. } => UserError {
            message: format!("{}: {e}", file.display()),
            hint: Some("nothing was imported; fix or cut that line and run again".into()),
            code: USAGE,
        }
        .into(),
        JsonlError::Log(e) => log_error(log_dir, e),
        other => anyhow::Error::new(other),
    })?;
    writeln!(
        out,
        "imported {} events into {}{}",
        imported.stored,
        log_dir.display(),
        match imported.duplicates {
            0 => String::new(),
            n => format!(" ({n} repeated lines skipped)"),
        }
    )
    .context("write summary")?;
    out.flush().context("write summary")
}

/// Refuse to read a log that does not exist, rather than creating an empty one.
fn require_log(dir: &Path) -> anyhow::Result<()> {
    if dir.join("sled").exists() {
        return Ok(());
    }
    Err(UserError {
        message: format!("no event log at {}", dir.display()),
        hint: Some(
            "run it in the project directory, or point --log (or FLOTILLA_EVENT_LOG) at the log"
                .into(),
        ),
        code: USAGE,
    }
    .into())
}

/// Turn a log error into one that says what to do next.
fn log_error(dir: &Path, e: LogError) -> anyhow::Error {
    let hint = e.next_step(dir).map(|s| s.to_string());
    UserError {
        message: e.to_string(),
        hint,
        code: FAILED,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_events::sample::Story;

    fn cmd(log: &Path) -> EventsCmd {
        EventsCmd {
            action: None,
            deploy: None,
            json: true,
            salvage: false,
            log: log.to_path_buf(),
        }
    }

    fn read_all(dir: &Path) -> Vec<Envelope> {
        let log = SledLog::open(dir).expect("open");
        log.read_all()
            .expect("read")
            .collect::<Result<_, _>>()
            .expect("readable")
    }

    /// `flotilla events --json` then `flotilla events import` into an empty
    /// log gives back the same history: same events, ids, times, positions.
    #[test]
    fn export_import_round_trip() {
        let old = tempfile::tempdir().expect("temp dir");
        let new = tempfile::tempdir().expect("temp dir");
        {
            let log = SledLog::open(old.path()).expect("open");
            log.append_batch(flotilla_events::sample::every_event_type())
                .expect("append");
        }
        let mut exported = Vec::new();
        show(&cmd(old.path()), &mut exported).expect("export");
        let file = new.path().join("history.jsonl");
        std::fs::write(&file, &exported).expect("write export");

        let target = new.path().join("log");
        let mut summary = Vec::new();
        import(&target, &file, &mut summary).expect("import");
        let before = read_all(old.path());
        assert_eq!(
            String::from_utf8_lossy(&summary),
            format!(
                "imported {} events into {}\n",
                before.len(),
                target.display()
            )
        );
        assert_eq!(read_all(&target), before);

        // A second import into the now non-empty log is refused, not merged.
        let err = import(&target, &file, &mut Vec::new()).expect_err("not empty");
        assert!(err.to_string().contains("already holds"), "{err}");
    }

    /// `--deploy` shows only that deploy's events; the text form has one line
    /// per event with its position, type and host.
    #[test]
    fn filter_by_deploy_and_text_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let log = SledLog::open(dir.path()).expect("open");
            log.append_batch(Story::new("01D0000000000000000000000A", "v1", 2).events())
                .expect("append");
            let mut other = Story::new("01D0000000000000000000000B", "v2", 1);
            other.first_id = 100;
            log.append_batch(other.events()).expect("append");
        }
        let mut show_cmd = cmd(dir.path());
        show_cmd.json = false;
        show_cmd.deploy = Some("01D0000000000000000000000B".into());
        let mut out = Vec::new();
        show(&show_cmd, &mut out).expect("show");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines.is_empty());
        assert!(
            lines
                .iter()
                .all(|l| l.contains("01D0000000000000000000000B"))
        );
        assert!(lines[0].contains("DeployRequested"), "{}", lines[0]);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("web-1") && l.contains("ImagePulled")),
            "{text}"
        );
    }

    /// Reading a directory with no log is a usage error naming the path,
    /// and creates nothing.
    #[test]
    fn missing_log_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nothing-here");
        let err = show(&cmd(&missing), &mut Vec::new()).expect_err("no log");
        assert!(err.to_string().starts_with("no event log at "), "{err}");
        assert!(!missing.exists());
    }
}
