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

/// `text` safe to print on a terminal: control characters (escape sequences that could move
/// the cursor, rewrite the screen or the window title, a bell) become `\u{FFFD}`. Event text
/// carries what apps, registries and Docker said; it is shown, never obeyed.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| if is_unsafe(c) { '\u{FFFD}' } else { c })
            .collect(),
    )
}

/// Control characters other than tab and newline (C0, DEL, C1, which includes the 8-bit CSI).
fn is_unsafe(c: char) -> bool {
    c.is_control() && c != '\t' && c != '\n'
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

    /// Escape sequences and other control characters are neutralised; ordinary text,
    /// tabs, newlines and non-ASCII letters are kept as they are.
    #[test]
    fn printable_neutralises_control_characters() {
        assert_eq!(printable("ok\tgrün\n"), "ok\tgrün\n");
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            printable("\u{1b}]0;pwned\u{7}\u{1b}[2Jx\u{9b}1m\r"),
            "\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2Jx\u{FFFD}1m\u{FFFD}"
        );
    }
}
