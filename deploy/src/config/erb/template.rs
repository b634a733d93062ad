//! The template side of ERB: text and tags (with trim mode `-`) into nested pieces, `if`/
//! `unless`/`elsif`/`else`, `each do` blocks and statements, every problem located.

use super::{ErbError, Piece, Value, advance, expr};
use crate::config::diag::Pos;

/// One tag or text run, before `if` blocks are nested.
enum Tok {
    Text(String, Pos),
    Output(String, Pos),
    Code(String, Pos),
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

pub(super) fn parse(src: &str) -> Result<Vec<Piece>, Vec<ErbError>> {
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
