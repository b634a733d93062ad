//! Fixture tests of configuration loading: one directory per case under `tests/fixtures/`,
//! named for what it holds. Valid cases assert the typed config a planner would read; error
//! cases compare every diagnostic with `expected.txt` (set `UPDATE_EXPECT=1` to rewrite them,
//! then review the diff).
#![allow(clippy::unwrap_used)]

mod destinations;
mod dotenv;
mod erb;
mod errors;
mod kamal1;
mod kamal_rules;
mod no_panic;
mod sections;
mod seed;
mod vault;

use std::collections::BTreeMap;
use std::path::PathBuf;

use flotilla_deploy::config::{Config, LoadOptions, load};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Options for a fixture with a fixed environment: the fixture's `bin/` first on PATH (for
/// stand-ins like `op`), the system PATH after it, and nothing else from the test process.
pub fn opts(name: &str, destination: Option<&str>, extra_env: &[(&str, &str)]) -> LoadOptions {
    let dir = fixture(name);
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = BTreeMap::from([("PATH".to_string(), path)]);
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    LoadOptions {
        destination: destination.map(str::to_string),
        env,
        ..LoadOptions::new(dir)
    }
}

pub fn load_ok(name: &str, destination: Option<&str>, extra_env: &[(&str, &str)]) -> Config {
    match load(&opts(name, destination, extra_env)) {
        Ok(c) => c,
        Err(e) => panic!("fixture {name} should load:\n{e}"),
    }
}

pub fn load_err(name: &str, destination: Option<&str>, extra_env: &[(&str, &str)]) -> Vec<String> {
    match load(&opts(name, destination, extra_env)) {
        Ok(c) => panic!("fixture {name} should fail, loaded {c:#?}"),
        Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

pub fn warnings(c: &Config) -> Vec<String> {
    c.warnings.iter().map(ToString::to_string).collect()
}
