//! The Ruby expressions Kamal configs use inside ERB tags, and nothing more.
//!
//! Supported: `ENV["X"]`, `ENV.fetch("X")`, `ENV.fetch("X", default)`, string and integer
//! literals, `true`, `false`, `nil`, `==`, `!=`, `&&`, `||`, `!`, parentheses, `.nil?`,
//! `.present?`, `.blank?` and `.to_s`. Anything else is an error naming the construct, so a
//! config never renders differently from Kamal without the user knowing.

use super::ErbError;
use crate::config::diag::Pos;

/// A Ruby value, as far as this subset needs one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
}

impl Value {
    /// Ruby truthiness: only `nil` and `false` are false.
    pub fn truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// Ruby's `to_s`, which is what `<%= %>` prints.
    pub fn to_text(&self) -> String {
        match self {
            Value::Nil => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Str(s) => s.clone(),
        }
    }

    fn blank(&self) -> bool {
        match self {
            Value::Nil | Value::Bool(false) => true,
            Value::Str(s) => s.trim().is_empty(),
            _ => false,
        }
    }
}

/// A parsed expression; each node keeps the position of the construct for error messages.
#[derive(Clone, Debug)]
pub enum Expr {
    Lit(Value),
    EnvIndex(Box<Expr>),
    EnvFetch(Box<Expr>, Option<Box<Expr>>, Pos),
    Not(Box<Expr>),
    Eq(Box<Expr>, Box<Expr>, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Method(Box<Expr>, Method),
}

#[derive(Clone, Copy, Debug)]
pub enum Method {
    Nil,
    Present,
    Blank,
    ToS,
}

/// Evaluate `expr`, looking variables up with `env`.
pub fn eval(expr: &Expr, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, ErbError> {
    Ok(match expr {
        Expr::Lit(v) => v.clone(),
        Expr::EnvIndex(name) => {
            let name = eval(name, env)?.to_text();
            env(&name).map_or(Value::Nil, Value::Str)
        }
        Expr::EnvFetch(name, default, pos) => {
            let name = eval(name, env)?.to_text();
            match (env(&name), default) {
                (Some(v), _) => Value::Str(v),
                (None, Some(d)) => eval(d, env)?,
                (None, None) => {
                    return Err(ErbError::new(
                        *pos,
                        format!("ENV.fetch(\"{name}\"): environment variable {name} is not set"),
                    ));
                }
            }
        }
        Expr::Not(e) => Value::Bool(!eval(e, env)?.truthy()),
        Expr::Eq(a, b, equal) => Value::Bool((eval(a, env)? == eval(b, env)?) == *equal),
        Expr::And(a, b) => {
            let a = eval(a, env)?;
            if a.truthy() { eval(b, env)? } else { a }
        }
        Expr::Or(a, b) => {
            let a = eval(a, env)?;
            if a.truthy() { a } else { eval(b, env)? }
        }
        Expr::Method(e, m) => {
            let v = eval(e, env)?;
            match m {
                Method::Nil => Value::Bool(v == Value::Nil),
                Method::Present => Value::Bool(!v.blank()),
                Method::Blank => Value::Bool(v.blank()),
                Method::ToS => Value::Str(v.to_text()),
            }
        }
    })
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Punct(&'static str),
}

struct Lexed {
    tok: Tok,
    pos: Pos,
}

/// Parse the code of one tag; `start` is where the code begins in the source file.
pub fn parse(code: &str, start: Pos) -> Result<Expr, ErbError> {
    let toks = lex(code, start)?;
    let mut p = Parser {
        toks,
        i: 0,
        end: start,
    };
    let e = p.or()?;
    if let Some(t) = p.toks.get(p.i) {
        return Err(ErbError::new(
            t.pos,
            format!("unsupported ERB: unexpected {}", describe(&t.tok)),
        ));
    }
    Ok(e)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Int(i) => format!("number {i}"),
        Tok::Punct(p) => format!("`{p}`"),
    }
}

fn lex(code: &str, start: Pos) -> Result<Vec<Lexed>, ErbError> {
    const PUNCT: [&str; 13] = [
        "==", "!=", "&&", "||", "!", "(", ")", "[", "]", ".", ",", "{", "}",
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
            line += 1;
            col = 1;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if i < chars.len() && chars[i] == '?' {
                i += 1;
            }
            out.push(Lexed {
                tok: Tok::Ident(chars[begin..i].iter().collect()),
                pos,
            });
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                i += 1;
            }
            let text: String = chars[begin..i].iter().filter(|c| **c != '_').collect();
            let n = text.parse().map_err(|_| {
                ErbError::new(
                    pos,
                    format!("unsupported ERB: number {text} is out of range"),
                )
            })?;
            out.push(Lexed {
                tok: Tok::Int(n),
                pos,
            });
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(ErbError::new(pos, "unterminated string literal in ERB"));
                };
                i += 1;
                if d == c {
                    break;
                }
                if d == '\\' {
                    let e = chars.get(i).copied().unwrap_or('\\');
                    i += 1;
                    match (c, e) {
                        ('"', 'n') => s.push('\n'),
                        ('"', 't') => s.push('\t'),
                        ('\'', e) if e != '\'' && e != '\\' => {
                            s.push('\\');
                            s.push(e);
                        }
                        (_, e) => s.push(e),
                    }
                } else if c == '"' && d == '#' && chars.get(i) == Some(&'{') {
                    return Err(ErbError::new(
                        pos,
                        "unsupported ERB: string interpolation `#{...}`",
                    ));
                } else {
                    s.push(d);
                }
            }
            out.push(Lexed {
                tok: Tok::Str(s),
                pos,
            });
        } else if let Some(p) = PUNCT.iter().find(|p| code_at(&chars, i, p)) {
            i += p.len();
            out.push(Lexed {
                tok: Tok::Punct(p),
                pos,
            });
        } else {
            return Err(ErbError::new(
                pos,
                format!("unsupported ERB: character `{c}`"),
            ));
        }
        // Columns count characters; no token spans a newline.
        col += u32::try_from(i - begin).unwrap_or(u32::MAX);
    }
    Ok(out)
}

fn code_at(chars: &[char], i: usize, p: &str) -> bool {
    p.chars()
        .enumerate()
        .all(|(k, pc)| chars.get(i + k) == Some(&pc))
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

    fn pos(&self) -> Pos {
        self.toks.get(self.i).map_or(self.end, |t| t.pos)
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
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
        Err(ErbError::new(
            self.pos(),
            format!("unsupported ERB: expected `{p}`, found {found}"),
        ))
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
        let e = self.unary()?;
        for (op, equal) in [("==", true), ("!=", false)] {
            if self.eat(op) {
                return Ok(Expr::Eq(Box::new(e), Box::new(self.unary()?), equal));
            }
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ErbError> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ErbError> {
        let mut e = self.primary()?;
        while self.eat(".") {
            let pos = self.pos();
            let method = match self.peek() {
                Some(Tok::Ident(m)) => m.clone(),
                _ => {
                    return Err(ErbError::new(
                        pos,
                        "unsupported ERB: expected a method name after `.`",
                    ));
                }
            };
            let m = match method.as_str() {
                "nil?" => Method::Nil,
                "present?" => Method::Present,
                "blank?" => Method::Blank,
                "to_s" => Method::ToS,
                other => {
                    return Err(ErbError::new(
                        pos,
                        format!("unsupported ERB: method call `.{other}`"),
                    ));
                }
            };
            self.i += 1;
            e = Expr::Method(Box::new(e), m);
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, ErbError> {
        let pos = self.pos();
        let Some(tok) = self.peek().cloned() else {
            return Err(ErbError::new(
                pos,
                "unsupported ERB: expected an expression, found end of tag",
            ));
        };
        self.i += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s))),
            Tok::Int(n) => Ok(Expr::Lit(Value::Int(n))),
            Tok::Punct("(") => {
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(id) => match id.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "nil" => Ok(Expr::Lit(Value::Nil)),
                "ENV" => self.env(pos),
                other => Err(ErbError::new(pos, format!("unsupported ERB: `{other}`"))),
            },
            other => Err(ErbError::new(
                pos,
                format!("unsupported ERB: unexpected {}", describe(&other)),
            )),
        }
    }

    /// After `ENV`: `["X"]` or `.fetch("X"[, default])`.
    fn env(&mut self, pos: Pos) -> Result<Expr, ErbError> {
        if self.eat("[") {
            let name = self.or()?;
            self.expect("]")?;
            return Ok(Expr::EnvIndex(Box::new(name)));
        }
        self.expect(".")?;
        let mpos = self.pos();
        match self.peek() {
            Some(Tok::Ident(m)) if m == "fetch" => self.i += 1,
            Some(Tok::Ident(m)) => {
                return Err(ErbError::new(
                    mpos,
                    format!("unsupported ERB: method call `ENV.{m}`"),
                ));
            }
            _ => {
                return Err(ErbError::new(
                    mpos,
                    "unsupported ERB: expected `fetch` after `ENV.`",
                ));
            }
        }
        self.expect("(")?;
        let name = self.or()?;
        let default = if self.eat(",") {
            Some(Box::new(self.or()?))
        } else {
            None
        };
        self.expect(")")?;
        if self.peek() == Some(&Tok::Punct("{")) {
            return Err(ErbError::new(
                self.pos(),
                "unsupported ERB: block `{ ... }` after ENV.fetch",
            ));
        }
        Ok(Expr::EnvFetch(Box::new(name), default, pos))
    }
}
