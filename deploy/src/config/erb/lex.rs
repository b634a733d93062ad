//! Tokens of the Ruby inside ERB tags: identifiers, constants, strings (with the code of each
//! `#{...}`), backticks, integers, `%w[...]`, punctuation; and the split of a tag's tokens into
//! statements.

use super::ErbError;
use crate::config::diag::Pos;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Const(String),
    /// A string literal: text, and for double quotes the code of each `#{...}`.
    Str {
        raw: Vec<RawPart>,
    },
    Backtick(Vec<RawPart>),
    Int(i64),
    Words(Vec<String>),
    Punct(&'static str),
    Newline,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RawPart {
    Text(String),
    Code(String, Pos),
}

#[derive(Clone, Debug)]
pub struct Lexed {
    pub tok: Tok,
    pub pos: Pos,
}

fn unsupported(pos: Pos, msg: impl std::fmt::Display) -> ErbError {
    ErbError::unsupported(pos, format!("unsupported ERB: {msg}"))
}

pub fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) | Tok::Const(s) => format!("`{s}`"),
        Tok::Str { .. } => "a string".to_string(),
        Tok::Backtick(_) => "a backtick command".to_string(),
        Tok::Int(i) => format!("number {i}"),
        Tok::Words(_) => "`%w[...]`".to_string(),
        Tok::Punct(p) => format!("`{p}`"),
        Tok::Newline => "end of line".to_string(),
    }
}

/// Lex the code of one tag; `start` is where the code begins in the source file.
pub fn lex(code: &str, start: Pos) -> Result<Vec<Lexed>, ErbError> {
    const PUNCT: [&str; 28] = [
        "::", "==", "!=", "&&", "&.", "&", "||", "<=", ">=", "!", "(", ")", "[", "]", ".", ",",
        "{", "}", "?", ":", "+", "-", "*", "/", "|", "=", ";", "<",
    ];
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut line, mut col) = (start.line, start.column);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, column: col };
        let begin = i;
        if c == '\n' {
            out.push(Lexed {
                tok: Tok::Newline,
                pos,
            });
            line += 1;
            col = 1;
            i += 1;
            continue;
        }
        if c == '#' {
            // A Ruby comment runs to the end of the line.
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            // `nil?`, `strip!`: a method name may end in `?` or `!` (but `!=` is an operator).
            // A ternary after a variable needs a space before its `?`, as Ruby reads it.
            if i < chars.len()
                && !c.is_ascii_uppercase()
                && (chars[i] == '?' || chars[i] == '!' && chars.get(i + 1) != Some(&'='))
            {
                i += 1;
            }
            let word: String = chars[begin..i].iter().collect();
            let tok = if c.is_ascii_uppercase() {
                Tok::Const(word)
            } else {
                Tok::Ident(word)
            };
            out.push(Lexed { tok, pos });
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                i += 1;
            }
            let text: String = chars[begin..i].iter().filter(|c| **c != '_').collect();
            let n = text
                .parse()
                .map_err(|_| unsupported(pos, format_args!("number {text} is out of range")))?;
            out.push(Lexed {
                tok: Tok::Int(n),
                pos,
            });
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            let raw = string_body(&chars, &mut i, c, pos, &mut line, &mut col)?;
            let tok = if c == '`' {
                Tok::Backtick(raw)
            } else {
                Tok::Str { raw }
            };
            out.push(Lexed { tok, pos });
            // string_body advanced line/col itself.
            continue;
        } else if c == '%' && matches!(chars.get(i + 1), Some('w' | 'W')) {
            let Some(close) = chars.get(i + 2).and_then(|o| match o {
                '[' => Some(']'),
                '(' => Some(')'),
                '{' => Some('}'),
                '<' => Some('>'),
                _ => None,
            }) else {
                return Err(unsupported(pos, "`%w` needs brackets"));
            };
            i += 3;
            let from = i;
            while i < chars.len() && chars[i] != close {
                i += 1;
            }
            if i >= chars.len() {
                return Err(ErbError::new(pos, "unterminated `%w[...]` in ERB"));
            }
            let words: String = chars[from..i].iter().collect();
            i += 1;
            out.push(Lexed {
                tok: Tok::Words(words.split_whitespace().map(str::to_string).collect()),
                pos,
            });
        } else if let Some(p) = PUNCT.iter().find(|p| code_at(&chars, i, p)) {
            i += p.len();
            out.push(Lexed {
                tok: Tok::Punct(p),
                pos,
            });
        } else {
            return Err(unsupported(pos, format_args!("character {c:?}")));
        }
        col += u32::try_from(i - begin).unwrap_or(u32::MAX);
    }
    Ok(out)
}

/// The body of a quoted string after its opening quote; `i` ends after the closing quote.
fn string_body(
    chars: &[char],
    i: &mut usize,
    quote: char,
    pos: Pos,
    line: &mut u32,
    col: &mut u32,
) -> Result<Vec<RawPart>, ErbError> {
    let interp = quote != '\'';
    let mut parts = Vec::new();
    let mut s = String::new();
    *col += 1;
    loop {
        let Some(&d) = chars.get(*i) else {
            return Err(ErbError::new(pos, "unterminated string literal in ERB"));
        };
        *i += 1;
        *col += 1;
        if d == '\n' {
            *line += 1;
            *col = 1;
        }
        if d == quote {
            break;
        }
        if d == '\\' {
            let e = chars.get(*i).copied().unwrap_or('\\');
            *i += 1;
            *col += 1;
            match (interp, e) {
                (true, 'n') => s.push('\n'),
                (true, 't') => s.push('\t'),
                (true, 'e') => s.push('\u{1b}'),
                (true, e) => s.push(e),
                (false, e) if e == quote || e == '\\' => s.push(e),
                (false, e) => {
                    s.push('\\');
                    s.push(e);
                }
            }
        } else if interp && d == '#' && chars.get(*i) == Some(&'{') {
            *i += 1;
            *col += 1;
            let code_pos = Pos {
                line: *line,
                column: *col,
            };
            let from = *i;
            let mut depth = 1;
            while let Some(&e) = chars.get(*i) {
                match e {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                *i += 1;
                *col += 1;
            }
            if depth != 0 {
                return Err(ErbError::new(pos, "unterminated `#{` in an ERB string"));
            }
            let code: String = chars[from..*i].iter().collect();
            *i += 1;
            *col += 1;
            if !s.is_empty() {
                parts.push(RawPart::Text(std::mem::take(&mut s)));
            }
            parts.push(RawPart::Code(code, code_pos));
        } else {
            s.push(d);
        }
    }
    if !s.is_empty() || parts.is_empty() {
        parts.push(RawPart::Text(s));
    }
    Ok(parts)
}

fn code_at(chars: &[char], i: usize, p: &str) -> bool {
    p.chars()
        .enumerate()
        .all(|(k, pc)| chars.get(i + k) == Some(&pc))
}

/// Split a tag's tokens into statements at `;` and at line ends that end a statement.
pub fn statements(toks: Vec<Lexed>) -> Vec<Vec<Lexed>> {
    let mut out = Vec::new();
    let mut cur: Vec<Lexed> = Vec::new();
    let mut depth = 0i32;
    for t in toks {
        match &t.tok {
            Tok::Punct("(" | "[" | "{") => depth += 1,
            Tok::Punct(")" | "]" | "}") => depth -= 1,
            _ => {}
        }
        let ends = match &t.tok {
            Tok::Punct(";") => true,
            // A newline inside brackets, or after an operator, continues the statement.
            Tok::Newline => {
                depth <= 0
                    && !matches!(
                        cur.last().map(|l| &l.tok),
                        Some(Tok::Punct(
                            "." | ","
                                | "||"
                                | "&&"
                                | "+"
                                | "-"
                                | "*"
                                | "/"
                                | "="
                                | "=="
                                | "!="
                                | "?"
                                | ":"
                                | "("
                        ))
                    )
            }
            _ => false,
        };
        if ends {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if t.tok != Tok::Newline {
            cur.push(t);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
