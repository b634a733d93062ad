//! A located YAML tree: every value and key knows its file, line and column.
//!
//! serde-saphyr parses (including `<<: *anchor` merge keys); its `Spanned` wrapper gives each node
//! a position, which is mapped back through the ERB [`SourceMap`] to the template the user wrote.
//! Decoding into typed config happens on this tree, so every problem can be reported, not only
//! the first one serde would stop at.

use std::path::Path;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::diag::{Diagnostic, Pos};
use super::erb::SourceMap;

/// A YAML value with where it came from.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub file: Arc<Path>,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; keys are always strings (scalar keys are converted to their text).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What a user would call this kind of value, for "should be a ..." messages.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }

    /// The key name of a map-key node.
    pub fn key(&self) -> &str {
        match &self.kind {
            Kind::Str(s) => s,
            _ => "",
        }
    }
}

/// Parse rendered YAML text. An empty document is an empty map.
pub fn parse(text: &str, file: &Arc<Path>, map: &SourceMap) -> Result<Node, Diagnostic> {
    // Psych (Kamal) lets a repeated key win silently; pass repeats through so decoding can
    // take the last one and warn about it.
    let options = serde_saphyr::options! { duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::PassThrough };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => Ok(convert(raw, file, map)),
        Err(e) => {
            let pos = e
                .location()
                .map(|l| {
                    map.map(Pos {
                        line: l.line() as u32,
                        column: l.column() as u32,
                    })
                })
                .unwrap_or(Pos::START);
            Err(Diagnostic::new(
                file,
                pos,
                "",
                format!("invalid YAML: {}", yaml_message(&e)),
            ))
        }
    }
}

/// serde-saphyr's message without its snippet and its own "line N column M" prefix.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let s = e.without_snippet().to_string();
    let s = s.lines().next().unwrap_or_default();
    let s = s.strip_prefix("error: ").unwrap_or(s);
    let s = match s.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((loc, rest)) if loc.contains("column") => rest,
        _ => s,
    };
    // Its own positions refer to the rendered text; ours (mapped through ERB) are the ones to show.
    let s = match s.rfind(" at line ") {
        Some(i) if s[i..].contains("column") => &s[..i],
        _ => s,
    };
    s.to_string()
}

fn convert(raw: Spanned<Raw>, file: &Arc<Path>, map: &SourceMap) -> Node {
    let l = raw.referenced;
    let pos = map.map(Pos {
        line: l.line() as u32,
        column: l.column() as u32,
    });
    let kind = match raw.value {
        Raw::Null => Kind::Null,
        Raw::Bool(b) => Kind::Bool(b),
        Raw::Int(i) => Kind::Int(i),
        Raw::Float(f) => Kind::Float(f),
        Raw::Str(s) => Kind::Str(s),
        Raw::Seq(items) => Kind::Seq(items.into_iter().map(|n| convert(n, file, map)).collect()),
        Raw::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let mut k = convert(k, file, map);
                    k.kind = Kind::Str(scalar_text(&k).unwrap_or_default());
                    (k, convert(v, file, map))
                })
                .collect(),
        ),
    };
    Node {
        kind,
        file: file.clone(),
        pos,
    }
}

/// The text of a scalar, as YAML would print it; `None` for lists and maps.
pub fn scalar_text(n: &Node) -> Option<String> {
    Some(match &n.kind {
        Kind::Null => String::new(),
        Kind::Bool(b) => b.to_string(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::Str(s) => s.clone(),
        Kind::Seq(_) | Kind::Map(_) => return None,
    })
}

/// Kamal's destination merge: maps merge key by key, anything else is replaced by `over`.
pub fn deep_merge(base: Node, over: Node) -> Node {
    match (base.kind, over.kind) {
        (Kind::Map(mut entries), Kind::Map(over_entries)) => {
            for (k, v) in over_entries {
                match entries.iter().rposition(|(bk, _)| bk.key() == k.key()) {
                    Some(i) => {
                        let (_, old) = entries.remove(i);
                        entries.insert(i, (k, deep_merge(old, v)));
                    }
                    None => entries.push((k, v)),
                }
            }
            Node {
                kind: Kind::Map(entries),
                file: base.file,
                pos: base.pos,
            }
        }
        (_, kind) => Node {
            kind,
            file: over.file,
            pos: over.pos,
        },
    }
}

/// The untyped shape serde-saphyr hands us, each child wrapped in its span.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(i64::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut out = Vec::new();
        while let Some(x) = a.next_element::<Spanned<Raw>>()? {
            out.push(x);
        }
        Ok(Raw::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = a.next_key::<Spanned<Raw>>()? {
            let v = a.next_value::<Spanned<Raw>>()?;
            out.push((k, v));
        }
        Ok(Raw::Map(out))
    }
}
