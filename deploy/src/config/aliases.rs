//! Kamal's `aliases:`: `kamal ALIAS ARGS...` runs the alias's command (split like a shell) with
//! ARGS appended. The CLI asks here how an alias expands; nothing here runs anything.

use std::collections::BTreeMap;

use crate::plan::split_command;

/// Kamal's own commands, which an alias may not be named after (Kamal refuses the config).
pub const KAMAL_COMMANDS: &[&str] = &[
    "accessory",
    "app",
    "audit",
    "build",
    "config",
    "deploy",
    "details",
    "docs",
    "help",
    "init",
    "lock",
    "proxy",
    "prune",
    "redeploy",
    "registry",
    "remove",
    "rollback",
    "secrets",
    "server",
    "setup",
    "upgrade",
    "version",
];

/// Why an alias name is refused, as Kamal's validator words it; `None` when it is fine.
pub fn invalid_name(name: &str) -> Option<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Some(format!(
            "Invalid alias name: '{name}'. Must only contain lowercase letters, alphanumeric, hyphens and underscores."
        ));
    }
    if KAMAL_COMMANDS.contains(&name) {
        return Some(format!("Alias '{name}' conflicts with a built-in command."));
    }
    None
}

/// The command line `name rest...` stands for, when `name` is an alias: the alias's words,
/// then `rest`. `Err` when the alias's command has an unclosed quote.
pub fn expand(
    aliases: &BTreeMap<String, String>,
    name: &str,
    rest: &[String],
) -> Option<Result<Vec<String>, String>> {
    let command = aliases.get(name)?;
    Some(match split_command(command) {
        Some(mut words) => {
            words.extend(rest.iter().cloned());
            Ok(words)
        }
        None => Err(format!("alias {name}: unclosed quote in `{command}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alias expands to its words (quotes respected) followed by the arguments given.
    #[test]
    fn expands_like_kamal() {
        let aliases = BTreeMap::from([(
            "console".to_string(),
            "app exec --interactive --reuse \"bin/rails console\"".to_string(),
        )]);
        let got = expand(&aliases, "console", &["-d".into(), "staging".into()]);
        assert_eq!(
            got,
            Some(Ok(vec![
                "app".into(),
                "exec".into(),
                "--interactive".into(),
                "--reuse".into(),
                "bin/rails console".into(),
                "-d".into(),
                "staging".into()
            ]))
        );
        assert_eq!(expand(&aliases, "shell", &[]), None);
        assert!(invalid_name("Console").is_some());
        assert_eq!(
            invalid_name("deploy").as_deref(),
            Some("Alias 'deploy' conflicts with a built-in command.")
        );
        assert_eq!(invalid_name("db-console_2"), None);
    }
}
