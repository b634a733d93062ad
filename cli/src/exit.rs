//! Exit codes and the one place errors are printed.

/// Everything went as asked.
pub const OK: i32 = 0;
/// A deploy (or another operation on the fleet) failed.
pub const FAILED: i32 = 1;
/// Bad usage or a configuration error: fix the input and run again.
pub const USAGE: i32 = 64;

/// An error that knows which exit code it deserves and what the user should do next.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
    pub code: i32,
}

/// Print `flotilla: error: ...` with the cause chain and exit with the right code.
pub fn finish(result: anyhow::Result<()>) -> ! {
    let Err(err) = result else {
        std::process::exit(OK)
    };
    // A closed pipe (`flotilla history | head`) is not an error worth reporting.
    if err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        std::process::exit(OK)
    }
    eprintln!("flotilla: error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    let (code, hint) = match err.downcast_ref::<UserError>() {
        Some(u) => (u.code, u.hint.clone()),
        None => (FAILED, None),
    };
    if let Some(hint) = hint {
        eprintln!("  next: {hint}");
    }
    std::process::exit(code)
}

/// One line for an error that is one of several (a host among many): the message, its causes
/// and what to do next.
pub fn render(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        line.push_str(": ");
        line.push_str(&cause.to_string());
    }
    if let Some(hint) = err
        .downcast_ref::<UserError>()
        .and_then(|u| u.hint.as_ref())
    {
        line.push_str(" (next: ");
        line.push_str(hint);
        line.push(')');
    }
    line
}
