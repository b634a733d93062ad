//! Evaluation of the Ruby subset: values, methods, and the few effects Kamal configs rely on
//! (`ENV`, `File.read`, backticks, `Dotenv.load`, `Kamal::Utils.docker_arch`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};

use super::ErbError;
use super::expr::{Block, Call, Expr, Part};
use crate::config::diag::Pos;
use crate::config::dotenv;

/// A Ruby value, as far as this subset needs one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
    Array(Vec<Value>),
    /// A module or constant object the subset knows: `ENV`, `File`, `Dotenv`, `Kamal::Utils`.
    Module(&'static str),
}

impl Value {
    /// Ruby truthiness: only `nil` and `false` are false.
    pub fn truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// Ruby's `to_s`, which is what `<%= %>` and `#{}` print.
    pub fn to_text(&self) -> String {
        match self {
            Value::Nil => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Str(s) => s.clone(),
            Value::Array(items) => {
                let inner: Vec<String> = items.iter().map(Value::inspect).collect();
                format!("[{}]", inner.join(", "))
            }
            Value::Module(m) => (*m).to_string(),
        }
    }

    fn inspect(&self) -> String {
        match self {
            Value::Nil => "nil".into(),
            Value::Str(s) => format!("{s:?}"),
            other => other.to_text(),
        }
    }

    /// ActiveSupport's `blank?`: nil, false, whitespace-only strings and empty arrays.
    fn blank(&self) -> bool {
        match self {
            Value::Nil | Value::Bool(false) => true,
            Value::Str(s) => s.trim().is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an Integer",
            Value::Str(_) => "a String",
            Value::Array(_) => "an Array",
            Value::Module(_) => "a module",
        }
    }
}

/// The world a template may look at: `ENV` (which `Dotenv.load` changes, as in Kamal's
/// process) and the project directory, where Kamal runs and relative paths resolve.
pub struct Host<'a> {
    pub env: &'a mut BTreeMap<String, String>,
    pub root: &'a Path,
}

/// An evaluator: the host plus the template's local variables.
pub struct Interp<'h, 'a> {
    pub host: &'h mut Host<'a>,
    pub vars: HashMap<String, Value>,
}

type R = Result<Value, ErbError>;

fn unsupported(pos: Pos, msg: impl std::fmt::Display) -> ErbError {
    ErbError::unsupported(pos, format!("unsupported ERB: {msg}"))
}

impl Interp<'_, '_> {
    pub fn eval(&mut self, e: &Expr) -> R {
        Ok(match e {
            Expr::Lit(v) => v.clone(),
            Expr::Str(parts) => Value::Str(self.interpolate(parts)?),
            Expr::Backtick(parts, pos) => {
                let cmd = self.interpolate(parts)?;
                Value::Str(self.run(&cmd, *pos)?)
            }
            Expr::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.eval(i))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Var(name, pos) => match self.vars.get(name) {
                Some(v) => v.clone(),
                None => {
                    return Err(unsupported(
                        *pos,
                        format_args!("`{name}` (not a variable assigned earlier)"),
                    ));
                }
            },
            Expr::Const(name, pos) => match name.as_str() {
                "ENV" => Value::Module("ENV"),
                "File" => Value::Module("File"),
                "Dotenv" => Value::Module("Dotenv"),
                "Kamal::Utils" => Value::Module("Kamal::Utils"),
                "Kamal" => Value::Module("Kamal"),
                other => return Err(unsupported(*pos, format_args!("constant `{other}`"))),
            },
            Expr::Index(recv, idx, pos) => {
                let r = self.eval(recv)?;
                let i = self.eval(idx)?;
                self.index(&r, &i, *pos)?
            }
            Expr::Call(call) => self.call(call)?,
            Expr::Not(e) => Value::Bool(!self.eval(e)?.truthy()),
            Expr::And(a, b) => {
                let a = self.eval(a)?;
                if a.truthy() { self.eval(b)? } else { a }
            }
            Expr::Or(a, b) => {
                let a = self.eval(a)?;
                if a.truthy() { a } else { self.eval(b)? }
            }
            Expr::Ternary(c, a, b) => {
                if self.eval(c)?.truthy() {
                    self.eval(a)?
                } else {
                    self.eval(b)?
                }
            }
            Expr::Assign(name, e) => {
                let v = self.eval(e)?;
                self.vars.insert(name.clone(), v.clone());
                v
            }
            Expr::Bin(op, a, b, pos) => {
                let a = self.eval(a)?;
                let b = self.eval(b)?;
                binary(op, a, b, *pos)?
            }
        })
    }

    fn interpolate(&mut self, parts: &[Part]) -> Result<String, ErbError> {
        let mut s = String::new();
        for p in parts {
            match p {
                Part::Text(t) => s.push_str(t),
                Part::Code(e) => s.push_str(&self.eval(e)?.to_text()),
            }
        }
        Ok(s)
    }

    fn index(&mut self, recv: &Value, idx: &Value, pos: Pos) -> R {
        Ok(match (recv, idx) {
            (Value::Module("ENV"), name) => self.env_get(&name.to_text()),
            (Value::Array(items), Value::Int(i)) => {
                let n = i64::try_from(items.len()).unwrap_or(i64::MAX);
                let at = if *i < 0 { n + i } else { *i };
                usize::try_from(at)
                    .ok()
                    .and_then(|k| items.get(k))
                    .cloned()
                    .unwrap_or(Value::Nil)
            }
            (r, _) => {
                return Err(unsupported(
                    pos,
                    format_args!("indexing {} with `[]`", r.type_name()),
                ));
            }
        })
    }

    fn env_get(&self, name: &str) -> Value {
        self.host
            .env
            .get(name)
            .map_or(Value::Nil, |v| Value::Str(v.clone()))
    }

    /// Run a block with its parameters bound, restoring any variables they shadowed.
    fn yield_block(&mut self, block: &Block, args: Vec<Value>) -> R {
        let saved: Vec<(String, Option<Value>)> = block
            .params
            .iter()
            .map(|p| (p.clone(), self.vars.get(p).cloned()))
            .collect();
        for (p, a) in block
            .params
            .iter()
            .zip(args.into_iter().chain(std::iter::repeat(Value::Nil)))
        {
            self.vars.insert(p.clone(), a);
        }
        let mut last = Ok(Value::Nil);
        for e in &block.body {
            last = self.eval(e);
            if last.is_err() {
                break;
            }
        }
        for (p, v) in saved {
            match v {
                Some(v) => self.vars.insert(p, v),
                None => self.vars.remove(&p),
            };
        }
        last
    }

    fn call(&mut self, c: &Call) -> R {
        let Some(recv) = &c.recv else {
            return self.call_self(c);
        };
        let recv = self.eval(recv)?;
        if c.safe && recv == Value::Nil {
            return Ok(Value::Nil);
        }
        let mut args = Vec::with_capacity(c.args.len());
        for a in &c.args {
            args.push(self.eval(a)?);
        }
        let pos = c.pos;
        let name = c.name.as_str();
        let arg = |k: usize| args.get(k).cloned().unwrap_or(Value::Nil);
        let wrong = || {
            unsupported(
                pos,
                format_args!("method call `.{name}` on {}", recv.type_name()),
            )
        };
        Ok(match (&recv, name) {
            (Value::Module("ENV"), "fetch") => {
                let key = arg(0).to_text();
                match (self.host.env.get(&key), args.get(1), &c.block) {
                    (Some(v), _, _) => Value::Str(v.clone()),
                    (None, _, Some(b)) => self.yield_block(b, vec![Value::Str(key)])?,
                    (None, Some(d), None) => d.clone(),
                    (None, None, None) => {
                        return Err(ErbError::new(
                            pos,
                            format!("ENV.fetch(\"{key}\"): environment variable {key} is not set"),
                        ));
                    }
                }
            }
            (Value::Module("ENV"), "key?" | "has_key?" | "include?") => {
                Value::Bool(self.host.env.contains_key(&arg(0).to_text()))
            }
            (Value::Module("ENV"), "[]") => self.env_get(&arg(0).to_text()),
            (Value::Module("File"), "read") => {
                let path = arg(0).to_text();
                match std::fs::read_to_string(self.host.root.join(&path)) {
                    Ok(s) => Value::Str(s),
                    Err(e) => {
                        return Err(ErbError::new(pos, format!("File.read(\"{path}\"): {e}")));
                    }
                }
            }
            (Value::Module("File"), "exist?" | "file?") => {
                Value::Bool(self.host.root.join(arg(0).to_text()).exists())
            }
            (Value::Module("Dotenv"), "load" | "overload") => {
                self.dotenv(&args, name == "overload", pos)?
            }
            (Value::Module("Kamal::Utils"), "docker_arch") => {
                let arch = self.run("docker info --format '{{.Architecture}}'", pos)?;
                let arch = arch.trim();
                Value::Str(if arch.contains("aarch64") {
                    "arm64".into()
                } else if arch.contains("x86_64") {
                    "amd64".into()
                } else {
                    arch.to_string()
                })
            }
            (_, "nil?") => Value::Bool(recv == Value::Nil),
            (_, "present?") => Value::Bool(!recv.blank()),
            (_, "blank?") => Value::Bool(recv.blank()),
            (_, "presence") => {
                if recv.blank() {
                    Value::Nil
                } else {
                    recv.clone()
                }
            }
            (_, "to_s") => Value::Str(recv.to_text()),
            (_, "to_json") => Value::Str(to_json(&recv).to_string()),
            (Value::Nil, "to_i") => Value::Int(0),
            (Value::Nil, "to_a") => Value::Array(Vec::new()),
            (Value::Int(i), "to_i") => Value::Int(*i),
            (Value::Str(s), "to_i") => Value::Int(ruby_to_i(s)),
            (Value::Str(s), "strip") => Value::Str(s.trim_matches(ruby_space).to_string()),
            (Value::Str(s), "lstrip") => Value::Str(s.trim_start_matches(ruby_space).to_string()),
            (Value::Str(s), "rstrip") => Value::Str(s.trim_end_matches(ruby_space).to_string()),
            (Value::Str(s), "chomp") => Value::Str(chomp(s).to_string()),
            (Value::Str(s), "upcase") => Value::Str(s.to_uppercase()),
            (Value::Str(s), "downcase") => Value::Str(s.to_lowercase()),
            (Value::Str(s), "split") => {
                Value::Array(split(s, args.first()).map_err(|m| unsupported(pos, m))?)
            }
            (Value::Str(s), "lines") => Value::Array(
                s.split_inclusive('\n')
                    .map(|l| Value::Str(l.to_string()))
                    .collect(),
            ),
            (Value::Str(s), "start_with?") => Value::Bool(s.starts_with(&arg(0).to_text())),
            (Value::Str(s), "end_with?") => Value::Bool(s.ends_with(&arg(0).to_text())),
            (Value::Str(s), "include?") => Value::Bool(s.contains(&arg(0).to_text())),
            (Value::Str(s), "empty?") => Value::Bool(s.is_empty()),
            (Value::Str(s), "length" | "size") => {
                Value::Int(i64::try_from(s.chars().count()).unwrap_or(i64::MAX))
            }
            (Value::Array(a), "join") => {
                let sep = args.first().map(Value::to_text).unwrap_or_default();
                Value::Str(a.iter().map(Value::to_text).collect::<Vec<_>>().join(&sep))
            }
            (Value::Array(a), "first") => a.first().cloned().unwrap_or(Value::Nil),
            (Value::Array(a), "last") => a.last().cloned().unwrap_or(Value::Nil),
            (Value::Array(a), "empty?") => Value::Bool(a.is_empty()),
            (Value::Array(a), "include?") => Value::Bool(a.contains(&arg(0))),
            (Value::Array(a), "length" | "size" | "count") if c.block.is_none() => {
                Value::Int(i64::try_from(a.len()).unwrap_or(i64::MAX))
            }
            (Value::Array(a), "compact") => {
                Value::Array(a.iter().filter(|v| **v != Value::Nil).cloned().collect())
            }
            (Value::Array(a), "map" | "collect") => {
                let Some(b) = &c.block else {
                    return Err(wrong());
                };
                let mut out = Vec::with_capacity(a.len());
                for v in a.clone() {
                    out.push(self.yield_block(b, vec![v])?);
                }
                Value::Array(out)
            }
            (Value::Array(a), "select" | "filter" | "reject") => {
                let Some(b) = &c.block else {
                    return Err(wrong());
                };
                let keep = name != "reject";
                let mut out = Vec::new();
                for v in a.clone() {
                    if self.yield_block(b, vec![v.clone()])?.truthy() == keep {
                        out.push(v);
                    }
                }
                Value::Array(out)
            }
            (Value::Int(i), "zero?") => Value::Bool(*i == 0),
            _ => return Err(wrong()),
        })
    }

    /// Calls on `self`: `require` of a library the subset stands in for.
    fn call_self(&mut self, c: &Call) -> R {
        match c.name.as_str() {
            "require" => {
                let lib = match c.args.first() {
                    Some(a) => self.eval(a)?.to_text(),
                    None => String::new(),
                };
                match lib.as_str() {
                    // Kamal itself loads these; the subset implements what configs call of them.
                    "dotenv" | "dotenv/load" | "erb" | "yaml" | "json" => {
                        if lib == "dotenv/load" {
                            self.dotenv(&[], false, c.pos)?;
                        }
                        Ok(Value::Bool(true))
                    }
                    other => Err(unsupported(c.pos, format_args!("`require \"{other}\"`"))),
                }
            }
            other => Err(unsupported(c.pos, format_args!("call of `{other}`"))),
        }
    }

    /// `Dotenv.load(files...)`: each existing file's variables into `ENV`; `load` keeps what is
    /// already set, `overload` replaces it. Missing files are skipped, as dotenv does.
    fn dotenv(&mut self, files: &[Value], overload: bool, pos: Pos) -> R {
        let files: Vec<String> = if files.is_empty() {
            vec![".env".into()]
        } else {
            files.iter().map(Value::to_text).collect()
        };
        let mut loaded = Vec::new();
        for f in files {
            let path = self.host.root.join(&f);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mut known = BTreeMap::new();
            let ctx = dotenv::Context {
                env: self.host.env,
                cwd: self.host.root,
            };
            let entries = dotenv::parse(&text, &mut known, ctx).map_err(|errs| {
                let first = errs.first().map_or(String::new(), |e| {
                    format!(": line {}: {}", e.line, e.message)
                });
                ErbError::new(pos, format!("Dotenv.load(\"{f}\"){first}"))
            })?;
            for e in entries {
                if overload || !self.host.env.contains_key(&e.key) {
                    self.host.env.insert(e.key, e.value);
                }
            }
            loaded.push(Value::Str(f));
        }
        Ok(Value::Array(loaded))
    }

    /// Ruby's backticks: the command's standard output, whatever its exit status.
    fn run(&mut self, cmd: &str, pos: Pos) -> Result<String, ErbError> {
        let output = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(self.host.root)
            .env_clear()
            .envs(self.host.env.iter())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| ErbError::new(pos, format!("cannot run `{cmd}` through sh: {e}")))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Str(s) => serde_json::Value::String(s.clone()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Module(m) => serde_json::Value::String((*m).to_string()),
    }
}

fn binary(op: &str, a: Value, b: Value, pos: Pos) -> R {
    Ok(match (op, a, b) {
        ("==", a, b) => Value::Bool(a == b),
        ("+", Value::Int(a), Value::Int(b)) => Value::Int(a.saturating_add(b)),
        ("-", Value::Int(a), Value::Int(b)) => Value::Int(a.saturating_sub(b)),
        ("*", Value::Int(a), Value::Int(b)) => Value::Int(a.saturating_mul(b)),
        ("/", Value::Int(a), Value::Int(b)) if b != 0 => Value::Int(a.div_euclid(b)),
        ("+", Value::Str(a), Value::Str(b)) => Value::Str(a + &b),
        ("+", Value::Array(mut a), Value::Array(b)) => {
            a.extend(b);
            Value::Array(a)
        }
        ("<", Value::Int(a), Value::Int(b)) => Value::Bool(a < b),
        (">", Value::Int(a), Value::Int(b)) => Value::Bool(a > b),
        ("<=", Value::Int(a), Value::Int(b)) => Value::Bool(a <= b),
        (">=", Value::Int(a), Value::Int(b)) => Value::Bool(a >= b),
        (op, a, b) => {
            return Err(ErbError::new(
                pos,
                format!(
                    "ERB: `{op}` cannot combine {} and {}",
                    a.type_name(),
                    b.type_name()
                ),
            ));
        }
    })
}

/// Ruby's whitespace for `strip`: space, `\t\n\v\f\r` and NUL.
fn ruby_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | '\0')
}

fn chomp(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .or_else(|| s.strip_suffix('\r'))
        .unwrap_or(s)
}

/// Ruby's `String#to_i`: leading blanks, an optional sign, digits (underscores between them);
/// anything else ends the number, and no digits give 0.
fn ruby_to_i(s: &str) -> i64 {
    let t = s.trim_start_matches(ruby_space);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    let mut prev_digit = false;
    for c in t.chars() {
        if let Some(d) = c.to_digit(10) {
            n = n.saturating_mul(10).saturating_add(i64::from(d));
            prev_digit = true;
        } else if c == '_' && prev_digit {
            prev_digit = false;
        } else {
            break;
        }
    }
    if neg { -n } else { n }
}

/// Ruby's `String#split`: with no separator (or `" "`) on runs of whitespace, leading blanks
/// ignored; with a string separator on each occurrence. Trailing empty fields are dropped.
fn split(s: &str, sep: Option<&Value>) -> Result<Vec<Value>, String> {
    let mut fields: Vec<String> = match sep {
        None | Some(Value::Nil) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Str(sep)) if sep == " " => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Str(sep)) if sep.is_empty() => s.chars().map(String::from).collect(),
        Some(Value::Str(sep)) => s.split(sep.as_str()).map(str::to_string).collect(),
        Some(other) => return Err(format!("`split` by {}", other.type_name())),
    };
    while fields.last().is_some_and(String::is_empty) {
        fields.pop();
    }
    Ok(fields.into_iter().map(Value::Str).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `to_i` and `split` follow Ruby's rules on the inputs configs give them.
    #[test]
    fn ruby_string_conversions() {
        assert_eq!(ruby_to_i(" 42abc"), 42);
        assert_eq!(ruby_to_i("-3"), -3);
        assert_eq!(ruby_to_i("1_000"), 1000);
        assert_eq!(ruby_to_i("x1"), 0);
        let s = |v: &[&str]| {
            v.iter()
                .map(|s| Value::Str(s.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(split(" a  b ", None).unwrap(), s(&["a", "b"]));
        assert_eq!(
            split("a,,b,,", Some(&Value::Str(",".into()))).unwrap(),
            s(&["a", "", "b"])
        );
    }
}
