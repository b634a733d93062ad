//! The Ruby that Kamal configs write inside ERB tags: the parser of a small subset (its tokens
//! come from `lex.rs`).
//!
//! Expressions: string literals with `#{...}` interpolation, backticks, integers, `true`,
//! `false`, `nil`, arrays and `%w[...]`, local variables, `ENV`, `File`, `Dotenv`,
//! `Kamal::Utils`, method calls (also `&.`) with arguments, `{ |x| ... }` blocks and `&:name`,
//! indexing, the ternary, `||`, `&&`, `!`, `==`, `!=`, comparisons, `+ - * /` and assignment.
//! What is outside the subset is an error marked `unsupported`, so the caller can hand the
//! template to Ruby's own ERB instead of rendering it differently from Kamal.

pub use super::lex::{Lexed, Tok, describe, lex, statements};

use super::ErbError;
use super::lex::RawPart;
use crate::config::diag::Pos;

/// A parsed expression; nodes that can fail keep their position for error messages.
#[derive(Clone, Debug)]
pub enum Expr {
    Lit(super::Value),
    /// A double-quoted string: literal parts and interpolated expressions, concatenated.
    Str(Vec<Part>),
    /// `` `cmd` ``: the command's standard output, as Ruby's backticks give it.
    Backtick(Vec<Part>, Pos),
    Array(Vec<Expr>),
    Var(String, Pos),
    /// A constant such as `ENV`, `File` or `Kamal::Utils`.
    Const(String, Pos),
    Index(Box<Expr>, Box<Expr>, Pos),
    Call(Box<Call>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>, Pos),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    Assign(String, Box<Expr>),
}

#[derive(Clone, Debug)]
pub enum Part {
    Text(String),
    Code(Expr),
}

/// `recv.name(args) { |params| body }`; `recv` is `None` for a call on `self` (`require`).
#[derive(Clone, Debug)]
pub struct Call {
    pub recv: Option<Expr>,
    pub name: String,
    pub args: Vec<Expr>,
    pub block: Option<Block>,
    pub pos: Pos,
    /// `recv&.name`: nil when `recv` is nil.
    pub safe: bool,
}

#[derive(Clone, Debug)]
pub struct Block {
    pub params: Vec<String>,
    pub body: Vec<Expr>,
}

fn unsupported(pos: Pos, msg: impl std::fmt::Display) -> ErbError {
    ErbError::unsupported(pos, format!("unsupported ERB: {msg}"))
}

/// Parse a whole token slice as one expression; `end` is the position after the tag's code.
pub fn parse(toks: Vec<Lexed>, end: Pos) -> Result<Expr, ErbError> {
    let mut p = Parser { toks, i: 0, end };
    let e = p.statement()?;
    if let Some(t) = p.toks.get(p.i) {
        return Err(unsupported(
            t.pos,
            format_args!("unexpected {}", describe(&t.tok)),
        ));
    }
    Ok(e)
}

/// Lex and parse the code of one `<%= %>` tag or one interpolation.
pub fn parse_code(code: &str, start: Pos) -> Result<Expr, ErbError> {
    let toks = lex(code, start)?;
    let end = super::advance(start, code);
    let mut stmts = statements(toks);
    match stmts.len() {
        0 => Ok(Expr::Lit(super::Value::Nil)),
        1 => parse(stmts.remove(0), end),
        _ => {
            let pos = stmts[1].first().map_or(start, |t| t.pos);
            Err(unsupported(pos, "more than one statement in an output tag"))
        }
    }
}

struct Parser {
    toks: Vec<Lexed>,
    i: usize,
    end: Pos,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.i + k).map(|t| &t.tok)
    }

    fn pos(&self) -> Pos {
        self.toks.get(self.i).map_or(self.end, |t| t.pos)
    }

    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn eat(&mut self, p: &str) -> bool {
        if self.is(p) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), ErbError> {
        if self.eat(p) {
            return Ok(());
        }
        let found = self.peek().map_or("end of tag".to_string(), describe);
        Err(unsupported(
            self.pos(),
            format_args!("expected `{p}`, found {found}"),
        ))
    }

    /// `name = expr`, or an expression.
    fn statement(&mut self) -> Result<Expr, ErbError> {
        if let (Some(Tok::Ident(name)), Some(Tok::Punct("="))) = (self.peek(), self.peek_at(1)) {
            let name = name.clone();
            self.i += 2;
            return Ok(Expr::Assign(name, Box::new(self.statement()?)));
        }
        self.ternary()
    }

    fn ternary(&mut self) -> Result<Expr, ErbError> {
        let cond = self.or()?;
        if !self.eat("?") {
            return Ok(cond);
        }
        let a = self.ternary()?;
        self.expect(":")?;
        let b = self.ternary()?;
        Ok(Expr::Ternary(Box::new(cond), Box::new(a), Box::new(b)))
    }

    fn or(&mut self) -> Result<Expr, ErbError> {
        let mut e = self.and()?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ErbError> {
        let mut e = self.eq()?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.eq()?));
        }
        Ok(e)
    }

    fn eq(&mut self) -> Result<Expr, ErbError> {
        let e = self.cmp()?;
        for (op, equal) in [("==", true), ("!=", false)] {
            let pos = self.pos();
            if self.eat(op) {
                let b = self.cmp()?;
                let eq = Expr::Bin("==", Box::new(e), Box::new(b), pos);
                return Ok(if equal { eq } else { Expr::Not(Box::new(eq)) });
            }
        }
        Ok(e)
    }

    fn cmp(&mut self) -> Result<Expr, ErbError> {
        let e = self.sum()?;
        for op in ["<=", ">=", "<", ">"] {
            let pos = self.pos();
            if self.eat(op) {
                let op: &'static str = match op {
                    "<=" => "<=",
                    ">=" => ">=",
                    "<" => "<",
                    _ => ">",
                };
                return Ok(Expr::Bin(op, Box::new(e), Box::new(self.sum()?), pos));
            }
        }
        Ok(e)
    }

    fn sum(&mut self) -> Result<Expr, ErbError> {
        let mut e = self.product()?;
        loop {
            let pos = self.pos();
            let op = if self.eat("+") {
                "+"
            } else if self.eat("-") {
                "-"
            } else {
                return Ok(e);
            };
            e = Expr::Bin(op, Box::new(e), Box::new(self.product()?), pos);
        }
    }

    fn product(&mut self) -> Result<Expr, ErbError> {
        let mut e = self.unary()?;
        loop {
            let pos = self.pos();
            let op = if self.eat("*") {
                "*"
            } else if self.eat("/") {
                "/"
            } else {
                return Ok(e);
            };
            e = Expr::Bin(op, Box::new(e), Box::new(self.unary()?), pos);
        }
    }

    fn unary(&mut self) -> Result<Expr, ErbError> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if matches!(self.peek(), Some(Tok::Ident(w)) if w == "not") {
            self.i += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.is("-") && matches!(self.peek_at(1), Some(Tok::Int(_))) {
            self.i += 1;
            if let Some(Tok::Int(n)) = self.peek().cloned() {
                self.i += 1;
                return self.postfix(Expr::Lit(super::Value::Int(-n)));
            }
        }
        let e = self.primary()?;
        self.postfix(e)
    }

    fn postfix(&mut self, mut e: Expr) -> Result<Expr, ErbError> {
        loop {
            let pos = self.pos();
            let safe = self.is("&.");
            if self.eat(".") || self.eat("&.") {
                let name = match self.peek() {
                    Some(Tok::Ident(m) | Tok::Const(m)) => m.clone(),
                    _ => return Err(unsupported(pos, "expected a method name after `.`")),
                };
                let mpos = self.pos();
                self.i += 1;
                let (args, block_pass) = self.args()?;
                let block = match block_pass {
                    Some(b) => Some(b),
                    None => self.brace_block()?,
                };
                e = Expr::Call(Box::new(Call {
                    recv: Some(e),
                    name,
                    args,
                    block,
                    pos: mpos,
                    safe,
                }));
            } else if self.eat("::") {
                let name = match (&e, self.peek()) {
                    (Expr::Const(base, _), Some(Tok::Const(c))) => format!("{base}::{c}"),
                    _ => return Err(unsupported(pos, "`::` outside a constant path")),
                };
                self.i += 1;
                let cpos = match &e {
                    Expr::Const(_, p) => *p,
                    _ => pos,
                };
                e = Expr::Const(name, cpos);
            } else if self.is("[") {
                self.i += 1;
                let idx = self.ternary()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx), pos);
            } else {
                return Ok(e);
            }
        }
    }

    /// `(a, b)`, or a command call's bare arguments (`Dotenv.load ".env"`), or none; a last
    /// `&:name` argument is a block calling `name` on each item.
    fn args(&mut self) -> Result<(Vec<Expr>, Option<Block>), ErbError> {
        let mut args = Vec::new();
        if self.eat("(") {
            if self.eat(")") {
                return Ok((args, None));
            }
            loop {
                if self.is("&") {
                    let block = self.block_pass()?;
                    self.expect(")")?;
                    return Ok((args, Some(block)));
                }
                args.push(self.ternary()?);
                if self.eat(")") {
                    return Ok((args, None));
                }
                self.expect(",")?;
            }
        }
        if matches!(self.peek(), Some(Tok::Str { .. })) {
            loop {
                args.push(self.ternary()?);
                if !self.eat(",") {
                    return Ok((args, None));
                }
            }
        }
        Ok((args, None))
    }

    /// `&:name` as the block `{ |it| it.name }`.
    fn block_pass(&mut self) -> Result<Block, ErbError> {
        self.expect("&")?;
        self.expect(":")?;
        let pos = self.pos();
        let Some(Tok::Ident(name)) = self.peek().cloned() else {
            return Err(unsupported(pos, "expected a method name after `&:`"));
        };
        self.i += 1;
        const IT: &str = "__block_item";
        Ok(Block {
            params: vec![IT.to_string()],
            body: vec![Expr::Call(Box::new(Call {
                recv: Some(Expr::Var(IT.to_string(), pos)),
                name,
                args: Vec::new(),
                block: None,
                pos,
                safe: false,
            }))],
        })
    }

    /// `{ |a, b| expr; expr }` after a call.
    fn brace_block(&mut self) -> Result<Option<Block>, ErbError> {
        if !self.eat("{") {
            return Ok(None);
        }
        let mut params = Vec::new();
        if self.eat("|") {
            loop {
                match self.peek() {
                    Some(Tok::Ident(p)) => {
                        params.push(p.clone());
                        self.i += 1;
                    }
                    _ => return Err(unsupported(self.pos(), "expected a block parameter")),
                }
                if self.eat("|") {
                    break;
                }
                self.expect(",")?;
            }
        }
        let mut body = Vec::new();
        while !self.eat("}") {
            if self.peek().is_none() {
                return Err(unsupported(self.pos(), "block without its closing `}`"));
            }
            if self.eat(";") {
                continue;
            }
            body.push(self.statement()?);
        }
        Ok(Some(Block { params, body }))
    }

    fn primary(&mut self) -> Result<Expr, ErbError> {
        let pos = self.pos();
        let Some(tok) = self.peek().cloned() else {
            return Err(unsupported(pos, "expected an expression, found end of tag"));
        };
        self.i += 1;
        match tok {
            Tok::Str { raw } => Ok(Expr::Str(parts(raw)?)),
            Tok::Backtick(raw) => Ok(Expr::Backtick(parts(raw)?, pos)),
            Tok::Int(n) => Ok(Expr::Lit(super::Value::Int(n))),
            Tok::Words(w) => Ok(Expr::Lit(super::Value::Array(
                w.into_iter().map(super::Value::Str).collect(),
            ))),
            Tok::Punct("(") => {
                let e = self.statement()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Punct("[") => {
                let mut items = Vec::new();
                if self.eat("]") {
                    return Ok(Expr::Array(items));
                }
                loop {
                    items.push(self.ternary()?);
                    if self.eat("]") {
                        return Ok(Expr::Array(items));
                    }
                    self.expect(",")?;
                }
            }
            Tok::Const(c) => Ok(Expr::Const(c, pos)),
            Tok::Ident(id) => match id.as_str() {
                "true" => Ok(Expr::Lit(super::Value::Bool(true))),
                "false" => Ok(Expr::Lit(super::Value::Bool(false))),
                "nil" => Ok(Expr::Lit(super::Value::Nil)),
                "if" | "unless" | "case" | "while" | "def" | "class" | "begin" | "do" | "end"
                | "then" | "when" | "else" | "elsif" => Err(unsupported(
                    pos,
                    format_args!("`{id}` inside an expression"),
                )),
                _ => {
                    // A call on self with arguments (`require "dotenv"`), else a local variable.
                    if self.is("(") || matches!(self.peek(), Some(Tok::Str { .. })) {
                        let (args, block_pass) = self.args()?;
                        let block = match block_pass {
                            Some(b) => Some(b),
                            None => self.brace_block()?,
                        };
                        Ok(Expr::Call(Box::new(Call {
                            recv: None,
                            name: id,
                            args,
                            block,
                            pos,
                            safe: false,
                        })))
                    } else {
                        Ok(Expr::Var(id, pos))
                    }
                }
            },
            other => Err(unsupported(
                pos,
                format_args!("unexpected {}", describe(&other)),
            )),
        }
    }
}

fn parts(raw: Vec<RawPart>) -> Result<Vec<Part>, ErbError> {
    raw.into_iter()
        .map(|p| match p {
            RawPart::Text(t) => Ok(Part::Text(t)),
            RawPart::Code(code, pos) => parse_code(&code, pos).map(Part::Code),
        })
        .collect()
}
