//! The loading pipeline: ERB, YAML, destination merge, secrets, decode and validate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::decode::{self, Cx};
use super::diag::{ConfigErrors, Diagnostic, Pos};
use super::types::Config;
use super::yaml::{self, Kind, Node};
use super::{erb, secrets};

/// What to load and the environment to load it in.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The project directory: relative paths (config file, secrets, `$(cmd)`'s working
    /// directory) resolve against it, as Kamal resolves them against the current directory.
    pub root: PathBuf,
    /// The base config file, relative to `root` (Kamal's `-c`; default `config/deploy.yml`).
    pub config_file: PathBuf,
    /// Kamal's `-d`: also loads `deploy.DEST.yml` and `secrets.DEST`.
    pub destination: Option<String>,
    /// The environment ERB's `ENV` and the secrets files' `$VAR` and `$(cmd)` see. Passed in,
    /// not read here, so loading is reproducible and tests need not touch the process env.
    pub env: BTreeMap<String, String>,
}

impl LoadOptions {
    /// Defaults for a project at `root`, with the current process environment.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LoadOptions {
            root: root.into(),
            config_file: PathBuf::from("config/deploy.yml"),
            destination: None,
            env: std::env::vars().collect(),
        }
    }

    /// The destination's file beside the base one: `config/deploy.yml` -> `config/deploy.DEST.yml`.
    pub fn destination_file(&self) -> Option<PathBuf> {
        let dest = self.destination.as_deref()?;
        let stem = self.config_file.file_stem()?.to_string_lossy();
        let ext = self
            .config_file
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        Some(
            self.config_file
                .with_file_name(format!("{stem}.{dest}{ext}")),
        )
    }
}

/// Load, merge, resolve and validate a Kamal configuration.
///
/// Every problem found is returned, each with file, line, column and key path.
pub fn load(opts: &LoadOptions) -> Result<Config, ConfigErrors> {
    let mut env = opts.env.clone();
    if let Some(d) = &opts.destination {
        env.insert("KAMAL_DESTINATION".into(), d.clone());
    }
    let mut errors = Vec::new();
    let mut erb_warnings = Vec::new();
    // One environment through both files and the secrets, as in Kamal's one process: a
    // `Dotenv.load` in the base file is seen by the destination file and by `.kamal/secrets`.
    let base = read_file(
        &opts.root,
        &opts.config_file,
        &mut env,
        &mut errors,
        &mut erb_warnings,
    );
    let over = opts
        .destination_file()
        .and_then(|f| read_file(&opts.root, &f, &mut env, &mut errors, &mut erb_warnings));
    if !errors.is_empty() {
        return Err(ConfigErrors {
            diagnostics: errors,
        });
    }
    let Some(mut tree) = base else {
        return Err(ConfigErrors {
            diagnostics: errors,
        });
    };
    if let Some(over) = over {
        tree = yaml::deep_merge(tree, over);
    }
    if matches!(tree.kind, Kind::Null) {
        let msg = "the file is empty: a config needs at least `service`, `image` and `servers`";
        return Err(ConfigErrors::one(Diagnostic::new(
            &tree.file,
            Pos::START,
            "",
            msg,
        )));
    }
    if !matches!(tree.kind, Kind::Map(_)) {
        let d = Diagnostic::new(
            &tree.file,
            tree.pos,
            "",
            format!("should be a map of settings, found {}", tree.kind_name()),
        );
        return Err(ConfigErrors::one(d));
    }

    let secrets_path =
        root_string(&tree, "secrets_path").unwrap_or_else(|| ".kamal/secrets".into());
    let mut cx = Cx {
        kamal1: decode::detect_kamal1(&tree).map(|(path, _)| path),
        ..Cx::default()
    };
    let kamal2_files = secrets::secret_files(&secrets_path, opts.destination.as_deref());
    // A Kamal 1 project keeps its secrets in `.env` and the environment; once it has
    // `.kamal/secrets` files it reads them as Kamal 2 does.
    let kamal1_secrets =
        cx.kamal1.is_some() && !kamal2_files.iter().any(|f| opts.root.join(f).exists());
    let loaded = if kamal1_secrets {
        secrets::load_kamal1(&opts.root, opts.destination.as_deref(), &env)
    } else {
        secrets::load(&opts.root, &secrets_path, opts.destination.as_deref(), &env)
    };
    let secrets = match loaded {
        Ok(s) => s,
        Err(diags) => {
            for d in diags {
                cx.diags.push(d);
            }
            secrets::Secrets::failed(kamal2_files)
        }
    };
    if kamal1_secrets
        && let Some(marker) = &cx.kamal1
        && let Some(at) = secrets.found.first().cloned()
    {
        cx.warnings.push(Diagnostic::new(
            &at,
            Pos::default(),
            "",
            format!(
                "Kamal 1 configuration (`{marker}`): secrets are read from .env{} and the environment as Kamal 1 does; the Kamal 2 form is `{secrets_path}` (e.g. `DB_PASSWORD=$DB_PASSWORD`)",
                opts.destination
                    .as_deref()
                    .map(|d| format!(", .env.{d}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let config = decode::decode(&mut cx, &tree, opts.destination.as_deref(), secrets);
    let mut warnings = std::mem::take(&mut cx.warnings);
    warnings.extend(erb_warnings);
    warnings.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
    let mut config = cx.diags.into_result(config)?.ok_or_else(|| {
        ConfigErrors::one(Diagnostic::new(
            &opts.config_file,
            Pos::START,
            "",
            "configuration could not be read",
        ))
    })?;
    config.warnings = warnings;
    Ok(config)
}

/// Read, render and parse one file; problems go to `errors`.
fn read_file(
    root: &Path,
    file: &Path,
    env: &mut BTreeMap<String, String>,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Node> {
    let text = match std::fs::read_to_string(root.join(file)) {
        Ok(t) => t,
        Err(e) => {
            errors.push(Diagnostic::new(
                file,
                Pos::default(),
                "",
                format!("cannot read config file: {e}"),
            ));
            return None;
        }
    };
    let mut host = erb::Host { env, root };
    let rendered = match erb::render_file(&text, &mut host) {
        Ok(r) => r,
        Err(errs) => {
            errors.extend(
                errs.into_iter()
                    .map(|e| Diagnostic::new(file, e.pos, "", e.message)),
            );
            return None;
        }
    };
    for e in rendered.skipped_in_comments {
        let msg = format!(
            "ERB in a YAML comment was not evaluated ({}); it cannot change the config, but \
             Kamal evaluates it: with `ruby` on the PATH Flotilla does too",
            e.message
        );
        warnings.push(Diagnostic::new(file, e.pos, "", msg));
    }
    let file: Arc<Path> = Arc::from(file);
    match yaml::parse(&rendered.text, &file, &rendered.map) {
        Ok(n) => Some(n),
        Err(d) => {
            errors.push(d);
            None
        }
    }
}

fn root_string(tree: &Node, key: &str) -> Option<String> {
    let Kind::Map(entries) = &tree.kind else {
        return None;
    };
    entries
        .iter()
        .rev()
        .find(|(k, _)| k.key() == key)
        .and_then(|(_, v)| match &v.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => None,
        })
}

/// One config file as ERB rendered it on the operator's machine: what the scheduler service
/// decodes, so `ENV`, `$(cmd)` and Ruby are evaluated where the operator's tools are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenderedFile {
    /// Relative to the project directory, for error messages.
    pub path: PathBuf,
    pub text: String,
}

/// The base config file and the destination's, ERB rendered, in merge order (Kamal's one
/// environment through both, as [`load`] does).
pub fn render(opts: &LoadOptions) -> Result<Vec<RenderedFile>, ConfigErrors> {
    let mut env = opts.env.clone();
    if let Some(d) = &opts.destination {
        env.insert("KAMAL_DESTINATION".into(), d.clone());
    }
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let files = std::iter::once(opts.config_file.clone()).chain(opts.destination_file());
    for file in files {
        let text = match std::fs::read_to_string(opts.root.join(&file)) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("cannot read config file: {e}");
                errors.push(Diagnostic::new(&file, Pos::default(), "", msg));
                continue;
            }
        };
        let mut host = erb::Host {
            env: &mut env,
            root: &opts.root,
        };
        match erb::render_file(&text, &mut host) {
            Ok(r) => out.push(RenderedFile {
                path: file,
                text: r.text,
            }),
            Err(errs) => errors.extend(
                errs.into_iter()
                    .map(|e| Diagnostic::new(&file, e.pos, "", e.message)),
            ),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors {
            diagnostics: errors,
        })
    }
}

/// The config from files [`render`]ed elsewhere and the secrets resolved there: how the
/// scheduler service gets the config a CLI loaded, without the project directory.
pub fn load_rendered(
    files: &[RenderedFile],
    destination: Option<&str>,
    secrets: secrets::Secrets,
) -> Result<Config, ConfigErrors> {
    let mut tree: Option<Node> = None;
    for f in files {
        let file: Arc<Path> = Arc::from(f.path.as_path());
        let node =
            yaml::parse(&f.text, &file, &erb::SourceMap::default()).map_err(ConfigErrors::one)?;
        tree = Some(match tree {
            None => node,
            Some(base) => yaml::deep_merge(base, node),
        });
    }
    let first = files
        .first()
        .map(|f| f.path.clone())
        .unwrap_or_else(|| PathBuf::from("config/deploy.yml"));
    let Some(tree) = tree.filter(|t| matches!(t.kind, Kind::Map(_))) else {
        let msg = "should be a map of settings";
        return Err(ConfigErrors::one(Diagnostic::new(
            &first,
            Pos::START,
            "",
            msg,
        )));
    };
    let mut cx = Cx {
        kamal1: decode::detect_kamal1(&tree).map(|(path, _)| path),
        ..Cx::default()
    };
    let config = decode::decode(&mut cx, &tree, destination, secrets);
    let warnings = std::mem::take(&mut cx.warnings);
    let mut config = cx.diags.into_result(config)?.ok_or_else(|| {
        ConfigErrors::one(Diagnostic::new(
            &first,
            Pos::START,
            "",
            "configuration could not be read",
        ))
    })?;
    config.warnings = warnings;
    Ok(config)
}
