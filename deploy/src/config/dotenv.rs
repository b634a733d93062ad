//! The dotenv dialect of `.kamal/secrets*` files, as Ruby's dotenv (which Kamal uses) reads it.
//!
//! `# comments`, optional `export`, unquoted values (trimmed, ` #` starts a comment),
//! single-quoted values (literal), double-quoted values (escapes `\n \r \t \" \\ \$`, may span
//! lines), `$VAR` / `${VAR}` from keys defined earlier or the process environment (unset is
//! empty), and `$(command)` run through `sh -c` with nested parentheses. dotenvy cannot run
//! commands, hence this small parser.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use super::vault;

/// One `KEY=VALUE` definition, with the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: u32,
}

/// A problem in a dotenv file, at a 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DotenvError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// What expansion may look at: the process environment and the directory commands run in.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
}

/// Parse `text`. `known` holds keys defined before this file (earlier files) and receives this
/// file's keys as they are defined, so later lines can refer to earlier ones.
pub fn parse(
    text: &str,
    known: &mut BTreeMap<String, String>,
    ctx: Context<'_>,
) -> Result<Vec<Entry>, Vec<DotenvError>> {
    let mut p = Cursor {
        chars: text.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
    };
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    while !p.done() {
        p.skip_blank();
        if p.done() {
            break;
        }
        if p.peek() == Some('\n') || p.peek() == Some('#') {
            p.skip_line();
            continue;
        }
        let line = p.line;
        match entry(&mut p, known, ctx) {
            Ok((key, value)) => {
                known.insert(key.clone(), value.clone());
                entries.push(Entry { key, value, line });
            }
            Err(e) => {
                errors.push(e);
                if p.line == line {
                    p.skip_line();
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

struct Cursor {
    chars: Vec<char>,
    i: usize,
    line: u32,
    col: u32,
}

impl Cursor {
    fn done(&self) -> bool {
        self.i >= self.chars.len()
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }
    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
    }
    fn skip_line(&mut self) {
        while let Some(c) = self.bump() {
            if c == '\n' {
                break;
            }
        }
    }
    fn err(&self, message: impl Into<String>) -> DotenvError {
        DotenvError {
            line: self.line,
            column: self.col,
            message: message.into(),
        }
    }
}

fn is_key_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn entry(
    p: &mut Cursor,
    known: &BTreeMap<String, String>,
    ctx: Context<'_>,
) -> Result<(String, String), DotenvError> {
    let mut key = read_key(p);
    if key == "export" && matches!(p.peek(), Some(' ' | '\t')) {
        p.skip_blank();
        key = read_key(p);
    }
    if key.is_empty() {
        return Err(p.err("expected `KEY=VALUE`"));
    }
    p.skip_blank();
    if p.peek() != Some('=') {
        return Err(p.err(format!("expected `=` after `{key}`")));
    }
    p.bump();
    p.skip_blank();
    let value = match p.peek() {
        Some('\'') => {
            let start = p.err("");
            p.bump();
            let mut v = String::new();
            loop {
                match p.bump() {
                    Some('\'') => break,
                    Some(c) => v.push(c),
                    None => {
                        return Err(DotenvError {
                            message: "unterminated single-quoted value".into(),
                            ..start
                        });
                    }
                }
            }
            v
        }
        Some('"') => {
            let start = p.err("");
            p.bump();
            let mut raw = String::new();
            loop {
                match p.bump() {
                    Some('"') => break,
                    Some('\\') => {
                        let Some(e) = p.bump() else { continue };
                        match e {
                            'n' => raw.push('\n'),
                            'r' => raw.push('\r'),
                            't' => raw.push('\t'),
                            // Kept escaped so expansion leaves it alone, then unescaped there.
                            '$' => raw.push_str("\\$"),
                            other => raw.push(other),
                        }
                    }
                    Some(c) => raw.push(c),
                    None => {
                        return Err(DotenvError {
                            message: "unterminated double-quoted value".into(),
                            ..start
                        });
                    }
                }
            }
            expand(&raw, known, ctx).map_err(|m| DotenvError {
                message: format!("{key}: {m}"),
                ..start
            })?
        }
        _ => {
            let start = p.err("");
            let mut raw = String::new();
            let mut depth = 0usize;
            while let Some(c) = p.peek() {
                if c == '\n' || (c == '#' && depth == 0 && raw.ends_with([' ', '\t'])) {
                    break;
                }
                // A `$(...)` command may contain ` #` and spans to its closing parenthesis.
                if c == '(' && (raw.ends_with('$') || depth > 0) {
                    depth += 1;
                } else if c == ')' && depth > 0 {
                    depth -= 1;
                }
                raw.push(c);
                p.bump();
            }
            expand(raw.trim(), known, ctx).map_err(|m| DotenvError {
                message: format!("{key}: {m}"),
                ..start
            })?
        }
    };
    // Anything after a closing quote must be a comment.
    p.skip_blank();
    match p.peek() {
        None | Some('\n') | Some('#') => p.skip_line(),
        Some(_) => return Err(p.err(format!("unexpected text after the value of `{key}`"))),
    }
    Ok((key, value))
}

fn read_key(p: &mut Cursor) -> String {
    let mut key = String::new();
    if p.peek().is_some_and(is_key_start) {
        while let Some(c) = p.peek().filter(|c| is_key_char(*c)) {
            key.push(c);
            p.bump();
        }
    }
    key
}

/// Expand as dotenv 3.2 with Kamal's command substitution does: first every variable over the
/// whole value (inside `$(...)` too), then each `$(command)`; `\$` keeps a dollar literal.
fn expand(raw: &str, known: &BTreeMap<String, String>, ctx: Context<'_>) -> Result<String, String> {
    if !raw.contains('$') {
        return Ok(raw.to_string());
    }
    let raw = variables(raw, known, ctx);
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            // An escaped `\$(...)` is left as written, without its backslash.
            out.push('$');
            i += 2;
        } else if c == '$' && chars.get(i + 1) == Some(&'(') {
            let end =
                matching_paren(&chars, i + 1).ok_or("unterminated `$(` command substitution")?;
            let cmd: String = chars[i + 2..end].iter().collect();
            out.push_str(&run(&cmd, ctx)?);
            i = end + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

/// dotenv's variable substitution: `$` (not before `(`), an optional `{`, a name of letters,
/// digits and `_`, an optional `}`. A name is looked up in the keys defined so far, then the
/// environment, else empty; so `$2y$05$...` loses its `$2y` and `$05` as with Kamal, and
/// `${U:-d}` is `$U` followed by `:-d}` (dotenv has no defaults). `\$X` stays `\$X` here
/// for [`expand`] to unescape; a `$` with no name stays.
fn variables(raw: &str, known: &BTreeMap<String, String>, ctx: Context<'_>) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push_str("\\$");
            i += 2;
            continue;
        }
        if c != '$' || chars.get(i + 1) == Some(&'(') {
            out.push(c);
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if chars.get(j) == Some(&'{') {
            j += 1;
        }
        let name_start = j;
        while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        let name: String = chars[name_start..j].iter().collect();
        if chars.get(j) == Some(&'}') {
            j += 1;
        }
        if name.is_empty() {
            out.extend(&chars[i..j]);
        } else {
            let v = known.get(&name).or_else(|| ctx.env.get(&name));
            out.push_str(v.map_or("", String::as_str));
        }
        i = j;
    }
    out
}

/// The index of the `)` closing the `(` at `open`, skipping quoted text and nested pairs.
fn matching_paren(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut i = open;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// Run `cmd` through the shell as `$(...)` would: stdout, trailing newlines removed. A
/// `kamal secrets ...` command is answered natively, inline, as Kamal answers it.
fn run(cmd: &str, ctx: Context<'_>) -> Result<String, String> {
    if let Some(words) = vault::kamal_secrets_words(cmd) {
        let mut parsed = vault::parse(&words).map_err(|e| format!("`{cmd}`: {e}"))?;
        match &mut parsed {
            vault::SecretsCommand::Fetch(r) => r.inline = true,
            vault::SecretsCommand::Extract { inline, .. } => *inline = true,
        }
        let env = vault::Env {
            vars: ctx.env,
            cwd: ctx.cwd,
        };
        return vault::run(&parsed, env).map_err(|e| format!("`{}`: {e}", first_words(cmd)));
    }
    let output = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(ctx.cwd)
        .env_clear()
        .envs(ctx.env)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run its `$(...)` through sh: {e}"))?;
    if !output.status.success() {
        // Neither the command line nor its output: either may hold a token (`$(curl -H
        // "Authorization: ...")`, a vault's answer). The user reruns it to see why.
        let status = output
            .status
            .code()
            .map_or("a signal".to_string(), |c| format!("exit status {c}"));
        return Err(format!(
            "its `$(...)` command failed with {status} (run that command yourself to see why)"
        ));
    }
    let mut s = String::from_utf8_lossy(&output.stdout).into_owned();
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    Ok(s)
}

/// A command without its long arguments (the JSON of an `extract`), for error messages.
fn first_words(cmd: &str) -> String {
    let words: Vec<&str> = cmd.split_whitespace().take(4).collect();
    words.join(" ")
}
