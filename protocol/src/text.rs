//! Error text that travels in events and reports, rendered one way on both sides.

/// Error text in events is cut to this many characters: Docker errors can carry whole build
/// logs, and an event lives forever.
pub const MAX_ERROR_CHARS: usize = 2000;

/// An error and its causes on one line: `error: cause: cause`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Cuts long error text to [`MAX_ERROR_CHARS`], saying so.
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX_ERROR_CHARS).collect();
    format!("{head}... (cut)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    /// Causes are kept, in order, on one line; long text is cut and says so.
    #[test]
    fn chain_and_cut() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
        let long = "x".repeat(MAX_ERROR_CHARS + 5);
        assert!(shorten(&long).ends_with("... (cut)"));
        assert_eq!(shorten("short"), "short");
    }
}
