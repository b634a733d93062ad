//! Hooks run like Kamal's: with `KAMAL_*` variables, skipped when absent, stopping on failure.
#![allow(clippy::unwrap_used)]

use flotilla_scheduler::hooks::{self, HookContext, HookError};
use std::os::unix::fs::PermissionsExt;

fn write_hook(dir: &std::path::Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn ctx() -> HookContext {
    HookContext {
        service: "myapp".into(),
        version: "abc123".into(),
        destination: Some("staging".into()),
        hosts: vec!["10.0.0.1".into(), "10.0.0.2".into()],
        roles: vec!["web".into()],
        command: "deploy".into(),
        performer: "alice".into(),
        recorded_at: "2026-11-26T08:00:00Z".into(),
        ..HookContext::default()
    }
}

/// A hook sees Kamal's variables and runs from the project directory.
#[tokio::test]
async fn hook_gets_kamal_variables() {
    let dir = tempfile::tempdir().unwrap();
    write_hook(
        dir.path(),
        "pre-deploy",
        "echo \"$KAMAL_SERVICE_VERSION|$KAMAL_HOSTS|$KAMAL_DESTINATION|$KAMAL_PERFORMER|$KAMAL_COMMAND|$(pwd)\"",
    );
    let run = hooks::run(dir.path(), dir.path(), "pre-deploy", &ctx())
        .await
        .unwrap()
        .expect("the hook exists");
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        run.output.trim(),
        format!(
            "myapp@abc123-staging|10.0.0.1,10.0.0.2|staging|alice|deploy|{}",
            cwd.display()
        )
    );
}

/// A missing hook is skipped, as in Kamal.
#[tokio::test]
async fn missing_hook_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        hooks::run(dir.path(), dir.path(), "post-deploy", &ctx())
            .await
            .unwrap()
            .is_none()
    );
}

/// A failing hook is an error carrying its exit code and output, to show the user.
#[tokio::test]
async fn failing_hook_stops_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    write_hook(
        dir.path(),
        "pre-build",
        "echo 'uncommitted changes' >&2; exit 3",
    );
    let err = hooks::run(dir.path(), dir.path(), "pre-build", &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), Some(3));
    match err {
        HookError::Failed { name, output, .. } => {
            assert_eq!(name, "pre-build");
            assert!(output.contains("uncommitted changes"));
        }
        other => panic!("{other}"),
    }
}
