//! `flotilla app exec`: a command in the app's image (a new `--rm` container, or the running
//! one with `--reuse`) on every picked host, or interactively with a terminal on one host; and
//! the streaming of a command's output over an SSH PTY that `exec -i` and `logs -f` share.
//!
//! The role's secret env reaches a new container through an env file uploaded with mode 0600
//! and removed when the command ends, never on a command line.

use crate::commands::app::{ExecParts, new_container};
use crate::commands::fanout::{self, HostRun};
use crate::exit::{FAILED, UserError};
use flotilla_deploy::Config;
use flotilla_deploy::commands::{App, secret_env_file};
use flotilla_deploy::config::types::Role;
use flotilla_ssh::{Event, Exit, Pool, Pty};
use std::io::{IsTerminal, Write};

/// Where env files for one-off containers go, relative to the SSH user's home.
const ENV_DIR: &str = ".flotilla/exec";
/// The terminal size when the local one cannot be read (not a terminal): the VT100's.
const DEFAULT_COLS: u32 = 80;
const DEFAULT_ROWS: u32 = 24;
/// Bytes read from the local terminal at a time for an interactive command.
const STDIN_CHUNK: usize = 4096;

/// What a new container needs from the host: the version and image running there.
struct Running {
    version: String,
    image: String,
}

/// The version and image of the role's current container on each `(host, role)`; with
/// `--version`, that version of the repository without asking.
async fn running(
    pool: &Pool,
    config: &Config,
    pairs: &[(String, &Role)],
    version: Option<&str>,
) -> anyhow::Result<Vec<Running>> {
    if let Some(v) = version {
        return Ok(pairs
            .iter()
            .map(|_| Running {
                version: v.to_owned(),
                image: format!("{}:{v}", config.repository()),
            })
            .collect());
    }
    let jobs = pairs
        .iter()
        .map(|(host, role)| {
            let app = App::new(config, Some(role));
            (
                host.clone(),
                format!(
                    "{}; {}",
                    app.current_running_version(),
                    app.current_running_image()
                ),
            )
        })
        .collect();
    let runs = fanout::run_all(pool, jobs).await;
    fanout::check_runs("finding the running version", &runs)?;
    let mut out = Vec::new();
    for (run, (host, role)) in runs.iter().zip(pairs) {
        let text = run.stdout();
        let mut lines = text.lines().map(str::trim);
        match (lines.next(), lines.next()) {
            (Some(v), Some(i)) if !v.is_empty() && !i.is_empty() => out.push(Running {
                version: v.to_owned(),
                image: i.to_owned(),
            }),
            _ => {
                return Err(UserError {
                    message: format!("no running app container of role {} on {host}", role.name),
                    hint: Some(
                        "deploy first (`flotilla deploy`), or name the image with --version".into(),
                    ),
                    code: FAILED,
                }
                .into());
            }
        }
    }
    Ok(out)
}

/// A name for one-off containers and their env files: unique enough per invocation
/// (Kamal uses 3 random bytes; the clock and pid serve here without a random source).
fn suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{:06x}",
        (nanos ^ std::process::id().rotate_left(12)) & 0x00ff_ffff
    )
}

/// The command line for `(host, role)`, with its env file uploaded first when the role has
/// secret env; the env file is removed when the command ends, keeping its exit status.
async fn command_for(
    pool: &Pool,
    parts: &ExecParts<'_>,
    host: &str,
    role: &Role,
    running: &Running,
    suffix: &str,
) -> anyhow::Result<String> {
    let app = App::new(parts.config, Some(role));
    if parts.reuse {
        return Ok(app.exec_existing(
            &running.version,
            &parts.command,
            parts.interactive,
            &parts.env,
        ));
    }
    let env = app.env(host);
    let secret = secret_env_file(&env, &parts.config.secrets).map_err(|e| UserError {
        message: e.to_string(),
        hint: Some("define it in .kamal/secrets (see `flotilla secrets print`)".into()),
        code: crate::exit::USAGE,
    })?;
    let Some(secret) = secret else {
        return Ok(app.exec_new(&new_container(
            host,
            &running.version,
            &running.image,
            suffix,
            parts,
            None,
        )));
    };
    let file = format!("{ENV_DIR}/{}-{suffix}.env", role.name);
    let session = pool.session(host).await?;
    let made = session.exec(&format!("mkdir -p {ENV_DIR}")).await?;
    if !made.success() {
        return Err(UserError {
            message: format!("cannot make {ENV_DIR} on {host}"),
            hint: Some(format!(
                "check the SSH user's home on {host}: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            )),
            code: FAILED,
        }
        .into());
    }
    session
        .upload(secret.expose().as_bytes(), &file, 0o600)
        .await?;
    let run = app.exec_new(&new_container(
        host,
        &running.version,
        &running.image,
        suffix,
        parts,
        Some(&file),
    ));
    Ok(format!("{run}; status=$?; rm -f {file}; exit $status"))
}

/// Runs the exec: interactive on one host, else on every picked host and role.
pub(crate) async fn exec(parts: ExecParts<'_>) -> anyhow::Result<()> {
    let config = parts.config;
    let pairs = if parts.interactive {
        vec![parts.targets.single_host(config)?]
    } else {
        parts.targets.host_roles(config)
    };
    if pairs.is_empty() {
        return Err(fanout::no_hosts().into());
    }
    let pool = fanout::pool(config);
    let result = exec_on(&pool, &parts, &pairs).await;
    pool.close().await;
    result
}

async fn exec_on(
    pool: &Pool,
    parts: &ExecParts<'_>,
    pairs: &[(String, &Role)],
) -> anyhow::Result<()> {
    let running = running(pool, parts.config, pairs, parts.version).await?;
    let suffix = suffix();
    let mut jobs = Vec::new();
    for ((host, role), r) in pairs.iter().zip(&running) {
        jobs.push((
            host.clone(),
            command_for(pool, parts, host, role, r, &suffix).await?,
        ));
    }
    let how = if parts.reuse {
        "from the running container"
    } else {
        "from a new container"
    };
    if parts.interactive {
        let (host, command) = &jobs[0];
        eprintln!(
            "Launching interactive command with version {} via SSH {how} on {host}...",
            running[0].version
        );
        let exit = stream(pool, host, command, true).await?;
        return exit_with(host, exit);
    }
    if let Some(r) = running.first() {
        eprintln!("Launching command with version {} {how}...", r.version);
    }
    let runs: Vec<HostRun> = fanout::run_all(pool, jobs).await;
    fanout::print_runs("App", &runs, parts.json)?;
    fanout::check_runs("the command", &runs)
}

/// Restores the local terminal's mode when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Puts the local terminal in raw mode (keys go to the remote side as typed, Ctrl-C too);
    /// `None` when stdin is not a terminal.
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// The local terminal's size (`stty size` reads it without unsafe ioctls), else the default.
fn terminal_size() -> (u32, u32) {
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(std::process::Stdio::inherit())
        .output();
    if let Ok(o) = out {
        let text = String::from_utf8_lossy(&o.stdout);
        let mut it = text.split_whitespace().map(|w| w.parse::<u32>());
        if let (Some(Ok(rows)), Some(Ok(cols))) = (it.next(), it.next())
            && rows > 0
            && cols > 0
        {
            return (cols, rows);
        }
    }
    (DEFAULT_COLS, DEFAULT_ROWS)
}

/// Runs `command` on `host` with a PTY (as Kamal's `ssh -t`), its output written to stdout
/// as it arrives; `interactive` also sends the local stdin. Returns the remote exit.
pub(crate) async fn stream(
    pool: &Pool,
    host: &str,
    command: &str,
    interactive: bool,
) -> anyhow::Result<Exit> {
    let (cols, rows) = if interactive {
        terminal_size()
    } else {
        (DEFAULT_COLS, DEFAULT_ROWS)
    };
    let pty = Pty {
        term: std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        cols,
        rows,
    };
    let session = pool.session(host).await.map_err(|e| UserError {
        message: format!("cannot reach {host} over SSH: {e}"),
        hint: Some(format!(
            "check that `ssh {host}` works with the config's ssh: settings"
        )),
        code: FAILED,
    })?;
    let mut remote = session.exec_pty(command, &pty).await?;
    let raw = if interactive { RawMode::enter() } else { None };
    let (keys_tx, mut keys_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    // A plain thread, not tokio's stdin: tokio reads stdin on a blocking-pool thread that the
    // runtime waits for at shutdown, so a read no key will ever finish would hang the exit.
    if interactive {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; STDIN_CHUNK];
            while let Ok(n) = std::io::Read::read(&mut stdin, &mut buf) {
                if n == 0 || keys_tx.blocking_send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    } else {
        drop(keys_tx);
    }
    let mut stdin_open = interactive;
    let mut crlf = CrLf::default();
    let exit = loop {
        tokio::select! {
            keys = keys_rx.recv(), if stdin_open => match keys {
                Some(k) => remote.send(&k).await?,
                // End of local input: end-of-transmission, as a terminal's Ctrl-D.
                None => {
                    stdin_open = false;
                    remote.send(&[4]).await?;
                }
            },
            event = remote.next() => match event {
                Some(Event::Output(bytes)) => {
                    let bytes = if raw.is_some() { bytes } else { crlf.convert(&bytes) };
                    let mut out = std::io::stdout().lock();
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
                Some(Event::Exit(exit)) => break exit,
                None => break Exit::Signal("HUP".into()),
            },
        }
    };
    drop(raw);
    Ok(exit)
}

/// A PTY ends lines with CR LF; without a local terminal in raw mode, plain LF is what a
/// pipe or a file wants. A CR at the end of one chunk waits for the next, which may begin
/// with its LF.
#[derive(Default)]
struct CrLf {
    pending_cr: bool,
}

impl CrLf {
    fn convert(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + 1);
        if std::mem::take(&mut self.pending_cr) && bytes.first() != Some(&b'\n') {
            out.push(b'\r');
        }
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\r' {
                match bytes.get(i + 1) {
                    Some(b'\n') => continue,
                    None => {
                        self.pending_cr = true;
                        continue;
                    }
                    Some(_) => {}
                }
            }
            out.push(*b);
        }
        out
    }
}

/// The remote exit as ours: 0 is success, a status is passed on, a signal is a failure.
pub(crate) fn exit_with(host: &str, exit: Exit) -> anyhow::Result<()> {
    match exit {
        Exit::Status(0) => Ok(()),
        Exit::Status(n) => Err(UserError {
            message: format!("the command exited with status {n} on {host}"),
            hint: None,
            code: i32::try_from(n).unwrap_or(FAILED),
        }
        .into()),
        Exit::Signal(s) => Err(UserError {
            message: format!("the command was ended by signal {s} on {host}"),
            hint: None,
            code: FAILED,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::CrLf;

    /// Lines from a PTY reach a pipe with LF endings, even when CR and LF arrive apart; a
    /// lone CR (a progress bar) is kept.
    #[test]
    fn pty_line_endings_become_lf() {
        let mut c = CrLf::default();
        assert_eq!(c.convert(b"a\r\nb\r"), b"a\nb");
        assert_eq!(c.convert(b"\nc\rd\r"), b"\nc\rd");
        assert_eq!(c.convert(b"e"), b"\re");
    }
}
