//! A small ERB renderer for the subset Kamal configs use, with trim mode `-`.
//!
//! Tags: `<%= expr %>`, `<% if expr %>` / `<% elsif expr %>` / `<% else %>` / `<% end %>`,
//! `<%# comment %>`, `<%%` for a literal `<%`, `<%-` to strip the indentation before a tag and
//! `-%>` to swallow the newline after it. Rendering also returns a [`SourceMap`] so that YAML
//! errors in the rendered text point at the line and column of the template the user wrote.

mod expr;

pub use expr::Value;

use crate::config::diag::Pos;

/// An ERB problem at a position in the template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErbError {
    pub pos: Pos,
    pub message: String,
}

impl ErbError {
    fn new(pos: Pos, message: impl Into<String>) -> Self {
        ErbError {
            pos,
            message: message.into(),
        }
    }
}

/// Maps positions in rendered text back to the template.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    /// Where each run of output begins, in output order. Empty means "identity".
    segs: Vec<Seg>,
}

#[derive(Clone, Copy, Debug)]
struct Seg {
    out: Pos,
    src: Pos,
    /// Literal template text maps character for character; an expression's output maps to its tag.
    literal: bool,
}

impl SourceMap {
    /// The template position that produced output position `p`.
    pub fn map(&self, p: Pos) -> Pos {
        let idx = self.segs.partition_point(|s| s.out <= p);
        let Some(seg) = idx.checked_sub(1).and_then(|i| self.segs.get(i)) else {
            return p;
        };
        if !seg.literal {
            return seg.src;
        }
        if seg.out.line == p.line {
            Pos {
                line: seg.src.line,
                column: seg.src.column + (p.column - seg.out.column),
            }
        } else {
            Pos {
                line: seg.src.line + (p.line - seg.out.line),
                column: p.column,
            }
        }
    }
}

enum Piece {
    Text(String, Pos),
    Output(expr::Expr, Pos),
    If(Vec<(expr::Expr, Vec<Piece>)>, Vec<Piece>),
}

/// Render `src`, looking `ENV` up with `env`. All errors are returned, not only the first.
pub fn render(
    src: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, SourceMap), Vec<ErbError>> {
    if !src.contains("<%") {
        return Ok((src.to_string(), SourceMap::default()));
    }
    let pieces = parse(src)?;
    let mut out = Out {
        text: String::with_capacity(src.len()),
        at: Pos::START,
        map: SourceMap::default(),
    };
    let mut errors = Vec::new();
    emit(&pieces, env, &mut out, &mut errors);
    if errors.is_empty() {
        Ok((out.text, out.map))
    } else {
        Err(errors)
    }
}

struct Out {
    text: String,
    at: Pos,
    map: SourceMap,
}

impl Out {
    fn push(&mut self, s: &str, src: Pos, literal: bool) {
        if s.is_empty() {
            return;
        }
        self.map.segs.push(Seg {
            out: self.at,
            src,
            literal,
        });
        for c in s.chars() {
            if c == '\n' {
                self.at = Pos {
                    line: self.at.line + 1,
                    column: 1,
                };
            } else {
                self.at.column += 1;
            }
        }
        self.text.push_str(s);
    }
}

fn emit(
    pieces: &[Piece],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Out,
    errors: &mut Vec<ErbError>,
) {
    for p in pieces {
        match p {
            Piece::Text(t, pos) => out.push(t, *pos, true),
            Piece::Output(e, pos) => match expr::eval(e, env) {
                Ok(v) => out.push(&v.to_text(), *pos, false),
                Err(err) => errors.push(err),
            },
            Piece::If(branches, otherwise) => {
                let mut taken = None;
                for (cond, body) in branches {
                    match expr::eval(cond, env) {
                        Ok(v) if v.truthy() => {
                            taken = Some(body);
                            break;
                        }
                        Ok(_) => {}
                        Err(err) => {
                            errors.push(err);
                            taken = Some(otherwise);
                            break;
                        }
                    }
                }
                emit(taken.unwrap_or(otherwise), env, out, errors);
            }
        }
    }
}

/// One tag or text run, before `if` blocks are nested.
enum Tok {
    Text(String, Pos),
    Output(String, Pos),
    Code(String, Pos),
}

fn advance(mut p: Pos, s: &str) -> Pos {
    for c in s.chars() {
        if c == '\n' {
            p = Pos {
                line: p.line + 1,
                column: 1,
            };
        } else {
            p.column += 1;
        }
    }
    p
}

fn tokenize(src: &str) -> Result<Vec<Tok>, ErbError> {
    let mut toks = Vec::new();
    let mut rest = src;
    let mut pos = Pos::START;
    let mut text = String::new();
    let mut text_pos = pos;
    let mut swallow_newline = false;
    while !rest.is_empty() {
        if swallow_newline {
            swallow_newline = false;
            if let Some(r) = rest
                .strip_prefix('\n')
                .or_else(|| rest.strip_prefix("\r\n"))
            {
                pos = advance(pos, &rest[..rest.len() - r.len()]);
                rest = r;
                text_pos = pos;
                continue;
            }
        }
        let Some(open) = rest.find("<%") else {
            text.push_str(rest);
            break;
        };
        text.push_str(&rest[..open]);
        let tag_pos = advance(pos, &rest[..open]);
        let after = &rest[open + 2..];
        if let Some(r) = after.strip_prefix('%') {
            text.push_str("<%");
            pos = advance(tag_pos, "<%%");
            rest = r;
            continue;
        }
        let (kind, body) = match after.chars().next() {
            Some(c @ ('=' | '#' | '-')) => (c, &after[1..]),
            _ => (' ', after),
        };
        if kind == '-' {
            // `<%-` removes the indentation before the tag when the tag starts its line: the
            // text run is only blanks and began a line, or its blanks follow a newline.
            let trimmed = text.trim_end_matches([' ', '\t']);
            if trimmed.is_empty() && text_pos.column == 1 || trimmed.ends_with('\n') {
                text.truncate(trimmed.len());
            }
        }
        let Some(close) = body.find("%>") else {
            return Err(ErbError::new(
                tag_pos,
                "unterminated ERB tag: expected `%>`",
            ));
        };
        let (code, trim) = match body[..close].strip_suffix('-') {
            Some(c) => (c, true),
            None => (&body[..close], false),
        };
        if !text.is_empty() {
            toks.push(Tok::Text(std::mem::take(&mut text), text_pos));
        }
        let code_pos = advance(tag_pos, &rest[open..open + 2 + (after.len() - body.len())]);
        match kind {
            '=' => toks.push(Tok::Output(code.to_string(), code_pos)),
            '#' => {}
            _ => toks.push(Tok::Code(code.to_string(), code_pos)),
        }
        let consumed = open + 2 + (after.len() - body.len()) + close + 2;
        pos = advance(pos, &rest[..consumed]);
        rest = &rest[consumed..];
        text_pos = pos;
        swallow_newline = trim;
    }
    if !text.is_empty() {
        toks.push(Tok::Text(text, text_pos));
    }
    Ok(toks)
}

/// An open `if` while parsing: finished branches, the current condition and body, the else body.
struct Frame {
    branches: Vec<(expr::Expr, Vec<Piece>)>,
    cond: Option<expr::Expr>,
    body: Vec<Piece>,
    in_else: bool,
    opened: Pos,
}

fn parse(src: &str) -> Result<Vec<Piece>, Vec<ErbError>> {
    let toks = tokenize(src).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut root: Vec<Piece> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let parse_expr = |code: &str, pos: Pos, errors: &mut Vec<ErbError>| match expr::parse(code, pos)
    {
        Ok(e) => e,
        Err(err) => {
            errors.push(err);
            expr::Expr::Lit(Value::Nil)
        }
    };
    for tok in toks {
        let piece = match tok {
            Tok::Text(t, pos) => Piece::Text(t, pos),
            Tok::Output(code, pos) => Piece::Output(parse_expr(&code, pos, &mut errors), pos),
            Tok::Code(code, pos) => {
                let lead = code.len() - code.trim_start().len();
                let pos = advance(pos, &code[..lead]);
                let code = code.trim();
                let (word, rest) = code.split_once(char::is_whitespace).unwrap_or((code, ""));
                let rest_pos = advance(pos, &code[..code.len() - rest.len()]);
                match word {
                    "if" => {
                        let cond = parse_expr(rest, rest_pos, &mut errors);
                        stack.push(Frame {
                            branches: Vec::new(),
                            cond: Some(cond),
                            body: Vec::new(),
                            in_else: false,
                            opened: pos,
                        });
                    }
                    "elsif" | "else" | "end" => {
                        let Some(frame) = stack.last_mut() else {
                            errors.push(ErbError::new(
                                pos,
                                format!("ERB `{word}` without a matching `if`"),
                            ));
                            continue;
                        };
                        if frame.in_else && word != "end" {
                            errors.push(ErbError::new(pos, format!("ERB `{word}` after `else`")));
                            continue;
                        }
                        if let Some(c) = frame.cond.take() {
                            frame.branches.push((c, std::mem::take(&mut frame.body)));
                        }
                        match word {
                            "elsif" => frame.cond = Some(parse_expr(rest, rest_pos, &mut errors)),
                            "else" => frame.in_else = true,
                            _ => {
                                let Some(f) = stack.pop() else { continue };
                                let piece = Piece::If(f.branches, f.body);
                                push(&mut stack, &mut root, piece);
                            }
                        }
                    }
                    "" => {}
                    other => {
                        errors.push(ErbError::new(
                            pos,
                            format!("unsupported ERB: code `{}`", first_words(other, rest)),
                        ));
                        // A block (`each do |x|`) has its own `end`: open a frame so it does not
                        // also count as an `end` without an `if`.
                        if code.ends_with("do")
                            || code.contains(" do |")
                            || word == "unless"
                            || word == "case"
                        {
                            stack.push(Frame {
                                branches: Vec::new(),
                                cond: None,
                                body: Vec::new(),
                                in_else: false,
                                opened: pos,
                            });
                        }
                    }
                }
                continue;
            }
        };
        push(&mut stack, &mut root, piece);
    }
    for f in &stack {
        errors.push(ErbError::new(
            f.opened,
            "ERB `if` is never closed with `<% end %>`",
        ));
    }
    if errors.is_empty() {
        Ok(root)
    } else {
        Err(errors)
    }
}

fn push(stack: &mut [Frame], root: &mut Vec<Piece>, piece: Piece) {
    match stack.last_mut() {
        Some(f) => f.body.push(piece),
        None => root.push(piece),
    }
}

fn first_words(word: &str, rest: &str) -> String {
    let s = format!("{word} {rest}");
    let s = s.trim();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests;
