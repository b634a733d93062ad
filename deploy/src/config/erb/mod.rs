//! ERB as Kamal renders `config/deploy*.yml`: Ruby's ERB with trim mode `-`, over the whole
//! file (tags inside YAML comments run too, as they do in Kamal).
//!
//! The built-in evaluator covers the Ruby that Kamal configs use (see `expr.rs`): tags
//! `<%= expr %>`, `<% code %>` (statements, `if`/`unless`/`elsif`/`else`/`end`, `each do |x|`
//! blocks, assignments, `require`, `Dotenv.load`), `<%# comment %>`, `<%%` for a literal
//! `<%`, `<%-` to strip the indentation before a tag and `-%>` to swallow the newline after it.
//! A template beyond the subset goes to Ruby's own ERB when `ruby` is on the PATH (`ruby.rs`),
//! so the result is exactly Kamal's; without Ruby it is a located error that says so. Rendering
//! also returns a [`SourceMap`] so that YAML errors in the rendered text point at the line and
//! column of the template the user wrote.

mod eval;
mod expr;
mod ruby;

pub use eval::{Host, Value};

use std::collections::HashMap;

use crate::config::diag::Pos;

/// An ERB problem at a position in the template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErbError {
    pub pos: Pos,
    pub message: String,
    /// The template is beyond the built-in subset (Ruby's ERB may still render it), as opposed
    /// to an error Ruby would raise too (an unset `ENV.fetch`, a missing file).
    pub unsupported: bool,
}

impl ErbError {
    fn new(pos: Pos, message: impl Into<String>) -> Self {
        ErbError {
            pos,
            message: message.into(),
            unsupported: false,
        }
    }

    fn unsupported(pos: Pos, message: impl Into<String>) -> Self {
        ErbError {
            pos,
            message: message.into(),
            unsupported: true,
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
    Output(Result<expr::Expr, ErbError>, Pos),
    Stmt(expr::Expr),
    If(Vec<(expr::Expr, Vec<Piece>)>, Vec<Piece>),
    /// `<% recv.each do |params| %> body <% end %>` (also `each_with_index`, `times`).
    Each {
        recv: expr::Expr,
        method: String,
        params: Vec<String>,
        body: Vec<Piece>,
        pos: Pos,
    },
}

/// What rendering gave, and how.
#[derive(Debug)]
pub struct Rendered {
    pub text: String,
    pub map: SourceMap,
    /// Ruby's ERB rendered the file because the built-in subset could not.
    pub via_ruby: bool,
    /// Tags inside YAML comments the subset could not evaluate and Ruby was not there to: their
    /// output is a comment, so the config is the same, but Kamal would have evaluated them.
    pub skipped_in_comments: Vec<ErbError>,
}

/// Render `src` with the built-in subset only. All errors are returned, not only the first.
pub fn render(src: &str, host: &mut Host<'_>) -> Result<(String, SourceMap), Vec<ErbError>> {
    let r = render_subset(src, host)?;
    match r.skipped_in_comments.into_iter().next() {
        Some(e) => Err(vec![e]),
        None => Ok((r.text, r.map)),
    }
}

/// Render `src` as Kamal would: the built-in subset, or Ruby's ERB for what is beyond it.
pub fn render_file(src: &str, host: &mut Host<'_>) -> Result<Rendered, Vec<ErbError>> {
    let env_before = host.env.clone();
    let subset = render_subset(src, host);
    let beyond = match &subset {
        Ok(r) => !r.skipped_in_comments.is_empty(),
        Err(errs) => errs.iter().any(|e| e.unsupported),
    };
    if !beyond {
        return subset;
    }
    if let Some(ruby) = ruby::find(host.env) {
        // Ruby starts from the environment the template started from, as Kamal's process does.
        *host.env = env_before;
        return ruby::render(&ruby, src, host).map_err(|e| vec![e]);
    }
    match subset {
        Ok(r) => Ok(r),
        Err(errs) => Err(errs
            .into_iter()
            .map(|mut e| {
                if e.unsupported {
                    e.message.push_str(ruby::NEEDS_RUBY);
                }
                e
            })
            .collect()),
    }
}

fn render_subset(src: &str, host: &mut Host<'_>) -> Result<Rendered, Vec<ErbError>> {
    if !src.contains("<%") {
        return Ok(Rendered {
            text: src.to_string(),
            map: SourceMap::default(),
            via_ruby: false,
            skipped_in_comments: Vec::new(),
        });
    }
    let pieces = parse(src)?;
    let mut out = Out {
        text: String::with_capacity(src.len()),
        at: Pos::START,
        map: SourceMap::default(),
        skipped: Vec::new(),
    };
    let mut errors = Vec::new();
    let mut interp = eval::Interp {
        host,
        vars: HashMap::new(),
    };
    emit(&pieces, &mut interp, &mut out, &mut errors);
    if errors.is_empty() {
        Ok(Rendered {
            text: out.text,
            map: out.map,
            via_ruby: false,
            skipped_in_comments: out.skipped,
        })
    } else {
        Err(errors)
    }
}

struct Out {
    text: String,
    at: Pos,
    map: SourceMap,
    skipped: Vec<ErbError>,
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
        self.at = advance(self.at, s);
        self.text.push_str(s);
    }

    /// Whether what is output now lands in a YAML comment: a `#` at the start of the current
    /// line or after a blank, outside quotes.
    fn in_yaml_comment(&self) -> bool {
        let line = self.text.rsplit('\n').next().unwrap_or_default();
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for c in line.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c == '#' && (prev == ' ' || prev == '\t') => return true,
                None => {}
            }
            prev = c;
        }
        false
    }
}

fn emit(
    pieces: &[Piece],
    interp: &mut eval::Interp<'_, '_>,
    out: &mut Out,
    errors: &mut Vec<ErbError>,
) {
    for p in pieces {
        match p {
            Piece::Text(t, pos) => out.push(t, *pos, true),
            Piece::Output(e, pos) => {
                let v = match e {
                    Ok(e) => interp.eval(e),
                    Err(err) => Err(err.clone()),
                };
                match v {
                    Ok(v) => out.push(&v.to_text(), *pos, false),
                    Err(err) if err.unsupported && out.in_yaml_comment() => out.skipped.push(err),
                    Err(err) => errors.push(err),
                }
            }
            Piece::Stmt(e) => {
                if let Err(err) = interp.eval(e) {
                    errors.push(err);
                }
            }
            Piece::If(branches, otherwise) => {
                let mut taken = None;
                for (cond, body) in branches {
                    match interp.eval(cond) {
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
                emit(taken.unwrap_or(otherwise), interp, out, errors);
            }
            Piece::Each {
                recv,
                method,
                params,
                body,
                pos,
            } => {
                let items = match interp.eval(recv) {
                    Ok(v) => v,
                    Err(err) => {
                        errors.push(err);
                        continue;
                    }
                };
                let rows: Vec<Vec<Value>> = match (method.as_str(), items) {
                    ("each" | "map", Value::Array(a)) => a.into_iter().map(|v| vec![v]).collect(),
                    ("each_with_index", Value::Array(a)) => a
                        .into_iter()
                        .zip(0i64..)
                        .map(|(v, i)| vec![v, Value::Int(i)])
                        .collect(),
                    ("times", Value::Int(n)) => {
                        (0..n.max(0)).map(|i| vec![Value::Int(i)]).collect()
                    }
                    (m, v) => {
                        errors.push(ErbError::unsupported(
                            *pos,
                            format!("unsupported ERB: `{m} do` on {v:?}"),
                        ));
                        continue;
                    }
                };
                let saved: Vec<(String, Option<Value>)> = params
                    .iter()
                    .map(|p| (p.clone(), interp.vars.get(p).cloned()))
                    .collect();
                for row in rows {
                    for (p, v) in params
                        .iter()
                        .zip(row.into_iter().chain(std::iter::repeat(Value::Nil)))
                    {
                        interp.vars.insert(p.clone(), v);
                    }
                    emit(body, interp, out, errors);
                }
                for (p, v) in saved {
                    match v {
                        Some(v) => interp.vars.insert(p, v),
                        None => interp.vars.remove(&p),
                    };
                }
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

/// An open block while parsing: an `if`/`unless` with its finished branches, the current
/// condition and body, the else body; or a `do` block.
struct Frame {
    kind: FrameKind,
    branches: Vec<(expr::Expr, Vec<Piece>)>,
    cond: Option<expr::Expr>,
    body: Vec<Piece>,
    in_else: bool,
    opened: Pos,
}

enum FrameKind {
    If,
    /// A Ruby block the subset does not run (`case`, `while`, `begin`): already reported, kept
    /// only so its `when`/`else`/`end` do not also read as strays.
    Opaque,
    Do {
        recv: expr::Expr,
        method: String,
        params: Vec<String>,
    },
}

impl Frame {
    fn new(kind: FrameKind, cond: Option<expr::Expr>, opened: Pos) -> Self {
        Frame {
            kind,
            branches: Vec::new(),
            cond,
            body: Vec::new(),
            in_else: false,
            opened,
        }
    }
}

fn parse(src: &str) -> Result<Vec<Piece>, Vec<ErbError>> {
    let toks = tokenize(src).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut root: Vec<Piece> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    for tok in toks {
        match tok {
            Tok::Text(t, pos) => push(&mut stack, &mut root, Piece::Text(t, pos)),
            Tok::Output(code, pos) => {
                let e = expr::parse_code(&code, pos);
                push(&mut stack, &mut root, Piece::Output(e, pos));
            }
            Tok::Code(code, pos) => {
                let end = advance(pos, &code);
                let toks = match expr::lex(&code, pos) {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                for stmt in expr::statements(toks) {
                    statement(stmt, end, &mut stack, &mut root, &mut errors);
                }
            }
        }
    }
    for f in &stack {
        let what = match f.kind {
            FrameKind::If => "`if`",
            FrameKind::Opaque => "block",
            FrameKind::Do { .. } => "`do` block",
        };
        errors.push(ErbError::new(
            f.opened,
            format!("ERB {what} is never closed with `<% end %>`"),
        ));
    }
    if errors.is_empty() {
        Ok(root)
    } else {
        Err(errors)
    }
}

/// One statement of a `<% %>` tag: a control word, the head of a `do` block, or an expression.
fn statement(
    mut stmt: Vec<expr::Lexed>,
    end: Pos,
    stack: &mut Vec<Frame>,
    root: &mut Vec<Piece>,
    errors: &mut Vec<ErbError>,
) {
    let Some(first) = stmt.first() else { return };
    let pos = first.pos;
    let word = match &first.tok {
        expr::Tok::Ident(w) => w.clone(),
        _ => String::new(),
    };
    let parse_rest = |rest: Vec<expr::Lexed>, errors: &mut Vec<ErbError>| {
        // `if x then`: Ruby allows a `then` after the condition.
        let mut rest = rest;
        if matches!(rest.last().map(|t| &t.tok), Some(expr::Tok::Ident(w)) if w == "then") {
            rest.pop();
        }
        match expr::parse(rest, end) {
            Ok(e) => e,
            Err(err) => {
                errors.push(err);
                expr::Expr::Lit(Value::Nil)
            }
        }
    };
    match word.as_str() {
        "if" | "unless" => {
            let cond = parse_rest(stmt.split_off(1), errors);
            let cond = if word == "unless" {
                expr::Expr::Not(Box::new(cond))
            } else {
                cond
            };
            stack.push(Frame::new(FrameKind::If, Some(cond), pos));
        }
        "case" | "while" | "until" | "begin" | "for" => {
            errors.push(ErbError::unsupported(
                pos,
                format!("unsupported ERB: `{word}`"),
            ));
            stack.push(Frame::new(FrameKind::Opaque, None, pos));
        }
        "when" | "rescue" | "ensure" | "elsif" | "else" | "end"
            if matches!(stack.last().map(|f| &f.kind), Some(FrameKind::Opaque)) =>
        {
            if word == "end" {
                stack.pop();
            }
        }
        "elsif" | "else" | "end" => {
            let Some(frame) = stack.last_mut() else {
                errors.push(ErbError::new(
                    pos,
                    format!("ERB `{word}` without a matching `if` or `do`"),
                ));
                return;
            };
            if word != "end" && (frame.in_else || matches!(frame.kind, FrameKind::Do { .. })) {
                let after = if frame.in_else {
                    "`else`"
                } else {
                    "a `do` block"
                };
                errors.push(ErbError::new(pos, format!("ERB `{word}` after {after}")));
                return;
            }
            if let Some(c) = frame.cond.take() {
                frame.branches.push((c, std::mem::take(&mut frame.body)));
            }
            match word.as_str() {
                "elsif" => frame.cond = Some(parse_rest(stmt.split_off(1), errors)),
                "else" => frame.in_else = true,
                _ => {
                    let Some(f) = stack.pop() else { return };
                    let piece = match f.kind {
                        FrameKind::If | FrameKind::Opaque => Piece::If(f.branches, f.body),
                        FrameKind::Do {
                            recv,
                            method,
                            params,
                        } => Piece::Each {
                            recv,
                            method,
                            params,
                            body: f.body,
                            pos: f.opened,
                        },
                    };
                    push(stack, root, piece);
                }
            }
        }
        _ => {
            if let Some((head, params)) = split_do(&mut stmt) {
                let e = parse_rest(head, errors);
                let frame = match e {
                    expr::Expr::Call(c)
                        if c.recv.is_some()
                            && c.args.is_empty()
                            && matches!(
                                c.name.as_str(),
                                "each" | "each_with_index" | "times" | "map"
                            ) =>
                    {
                        let c = *c;
                        FrameKind::Do {
                            recv: c.recv.unwrap_or(expr::Expr::Lit(Value::Nil)),
                            method: c.name,
                            params,
                        }
                    }
                    _ => {
                        errors.push(ErbError::unsupported(
                            pos,
                            "unsupported ERB: a `do` block other than `.each`, `.each_with_index` or `.times`",
                        ));
                        FrameKind::Opaque
                    }
                };
                stack.push(Frame::new(frame, None, pos));
                return;
            }
            let e = parse_rest(stmt, errors);
            push(stack, root, Piece::Stmt(e));
        }
    }
}

/// If `stmt` ends with `do` or `do |a, b|`, remove that and return the block's parameters.
fn split_do(stmt: &mut Vec<expr::Lexed>) -> Option<(Vec<expr::Lexed>, Vec<String>)> {
    let do_at = stmt
        .iter()
        .rposition(|t| matches!(&t.tok, expr::Tok::Ident(w) if w == "do"))?;
    let tail = &stmt[do_at + 1..];
    let mut params = Vec::new();
    if !tail.is_empty() {
        let (Some(expr::Tok::Punct("|")), Some(expr::Tok::Punct("|"))) =
            (tail.first().map(|t| &t.tok), tail.last().map(|t| &t.tok))
        else {
            return None;
        };
        for t in &tail[1..tail.len() - 1] {
            match &t.tok {
                expr::Tok::Ident(p) => params.push(p.clone()),
                expr::Tok::Punct(",") => {}
                _ => return None,
            }
        }
    }
    let head = stmt.drain(..do_at).collect();
    Some((head, params))
}

fn push(stack: &mut [Frame], root: &mut Vec<Piece>, piece: Piece) {
    match stack.last_mut() {
        Some(f) => f.body.push(piece),
        None => root.push(piece),
    }
}

#[cfg(test)]
mod tests;
