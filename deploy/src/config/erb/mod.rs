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
mod lex;
mod ruby;
mod template;

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
    let pieces = template::parse(src)?;
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

#[cfg(test)]
mod tests;
