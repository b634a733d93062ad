//! Where the image is built from. As Kamal does, a project in a git repository without
//! `builder.context` is built from a clean clone of the repository at `HEAD`
//! (`$TMPDIR/kamal-clones/SERVICE-PWDSHA/REPO/SUBDIR`, Kamal's own path, so the two tools share
//! it): uncommitted changes are not shipped, and the user is told which were left out. A
//! clone that cannot be reset, or is dirty or on another revision afterwards, is deleted and
//! made again.

use anyhow::{Context, bail};
use flotilla_deploy::Config;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The directory to build in: `root` itself, or the prepared clone.
pub fn build_directory(config: &Config, root: &Path) -> anyhow::Result<PathBuf> {
    if config.builder.context.is_some() || !git(root, &["rev-parse"]).is_ok_and(|o| o.ok) {
        return Ok(root.to_path_buf());
    }
    // git reports the top level with symlinks resolved.
    let root = &root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let top = PathBuf::from(git_text(root, &["rev-parse", "--show-toplevel"])?);
    let revision = git_text(root, &["rev-parse", "HEAD"])?;
    let uncommitted = git_text(root, &["status", "--porcelain"])?;
    if !uncommitted.is_empty() {
        eprintln!(
            "flotilla: building from a local git clone, so ignoring these uncommitted changes:\n {uncommitted}"
        );
    }
    let pwd = root.display().to_string();
    let pwd_sha = hex::encode(Sha256::digest(pwd.as_bytes()));
    let clone_dir = std::env::temp_dir().join("kamal-clones").join(format!(
        "{}-{}",
        config.service,
        &pwd_sha[..13]
    ));
    let repo = clone_dir.join(top.file_name().unwrap_or(top.as_os_str()));
    let relative = root.strip_prefix(&top).unwrap_or(Path::new(""));
    let build_dir = repo.join(relative);

    let prepared = if repo.exists() {
        reset(&repo, &top, &revision).and_then(|()| validate(&repo, &revision))
    } else {
        clone(&clone_dir, &top).and_then(|()| validate(&repo, &revision))
    };
    if let Err(e) = prepared {
        eprintln!("flotilla: preparing the clone failed ({e:#}), deleting and retrying");
        std::fs::remove_dir_all(&clone_dir)
            .with_context(|| format!("removing {}", clone_dir.display()))?;
        clone(&clone_dir, &top)?;
        validate(&repo, &revision)?;
    }
    if !build_dir.is_dir() {
        // The project lives in an untracked or ignored directory of the repository: the clean
        // clone has nothing there to build (Kamal fails here with a missing directory).
        return Err(crate::exit::UserError {
            message: format!(
                "{} is not in the git repository's HEAD ({}), so its clean clone has nothing to build",
                relative.display(),
                top.display()
            ),
            hint: Some(
                "commit the project, or set `builder: {context: .}` to build from this directory as it is"
                    .into(),
            ),
            code: crate::exit::USAGE,
        }
        .into());
    }
    Ok(build_dir)
}

fn clone(clone_dir: &Path, top: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(clone_dir)
        .with_context(|| format!("creating {}", clone_dir.display()))?;
    let top = top.display().to_string();
    run(clone_dir, &["clone", &top, "--recurse-submodules"])
}

fn reset(repo: &Path, top: &Path, revision: &str) -> anyhow::Result<()> {
    let top = top.display().to_string();
    run(repo, &["remote", "set-url", "origin", &top])?;
    run(repo, &["fetch", "origin"])?;
    run(repo, &["reset", "--hard", revision])?;
    run(repo, &["clean", "-fdx"])?;
    run(repo, &["submodule", "update", "--init"])?;
    run(repo, &["gc", "--auto", "--quiet"])
}

fn validate(repo: &Path, revision: &str) -> anyhow::Result<()> {
    let status = git_text(repo, &["status", "--porcelain"])?;
    if !status.is_empty() {
        bail!("clone in {} is dirty: {status}", repo.display());
    }
    let head = git_text(repo, &["rev-parse", "HEAD"])?;
    if head != revision {
        bail!(
            "clone in {} is on {head}, expected {revision}",
            repo.display()
        );
    }
    Ok(())
}

struct GitOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<GitOutput> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running git")?;
    Ok(GitOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

fn git_text(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = git(dir, args)?;
    if !out.ok {
        bail!("git {} failed: {}", args.join(" "), out.stderr);
    }
    Ok(out.stdout)
}

fn run(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    git_text(dir, args).map(|_| ())
}
