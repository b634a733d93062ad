//! Turning the located YAML tree into typed config, collecting every problem on the way.
//!
//! Each section has a small function taking the section's node and its key path. The helpers
//! here check types and known keys (against [`schema`](super::schema)) and record a located
//! diagnostic instead of stopping, so one run reports everything that is wrong.

mod accessories;
mod env;
mod kamal1;
mod proxy;
mod root;
mod sections;
mod validate;

pub(crate) use kamal1::detect as detect_kamal1;
pub(crate) use root::decode;

use std::collections::BTreeMap;

use super::diag::{Diagnostic, Diags, did_you_mean};
use super::schema::Section;
use super::types::{HostCount, OptionValue};
use super::yaml::{Kind, Node, scalar_text};

/// The decoding context: diagnostics and Kamal 1 warnings found so far.
#[derive(Default)]
pub(crate) struct Cx {
    pub diags: Diags,
    pub warnings: Vec<Diagnostic>,
    /// The Kamal 1 key that marks this config as Kamal 1 (see [`kamal1::detect`]), whose
    /// defaults then apply.
    pub kamal1: Option<String>,
}

/// A map node whose keys have been checked against a section.
pub(crate) struct Map<'a> {
    pub node: &'a Node,
    pub path: String,
    entries: &'a [(Node, Node)],
}

impl<'a> Map<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k.key() == key)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v.kind, Kind::Null))
    }

    /// The path of a child key, e.g. `servers/web` + `hosts`.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Entries as (key node, value node), in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&'a Node, &'a Node)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The key node of `key`, to point warnings about a key at the key itself.
    pub fn key_node(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k.key() == key)
            .map(|(k, _)| k)
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}/{key}")
    }
}

impl Cx {
    /// The proxy settings a role starts from: Kamal 1 reaches the app on port 3000.
    pub fn base_proxy(&self) -> super::types::Proxy {
        let mut p = super::types::Proxy::default();
        if self.kamal1.is_some() {
            p.app_port = kamal1::KAMAL1_APP_PORT;
        }
        p
    }

    pub fn error(&mut self, n: &Node, path: &str, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::new(&n.file, n.pos, path, message));
    }

    pub fn warn(&mut self, n: &Node, path: &str, message: impl Into<String>) {
        self.warnings
            .push(Diagnostic::new(&n.file, n.pos, path, message));
    }

    fn expected(&mut self, n: &Node, path: &str, what: &str) {
        self.error(
            n,
            path,
            format!("should be {what}, found {}", n.kind_name()),
        );
    }

    /// `n` as a map whose keys `section` knows; unknown keys are reported with a suggestion.
    /// Keys starting with `x-` are ignored, as Kamal does.
    pub fn map<'a>(&mut self, n: &'a Node, path: &str, section: &Section) -> Option<Map<'a>> {
        let entries = self.raw_map(n, path)?;
        for (k, _) in entries {
            let key = k.key();
            if key.starts_with("x-") && !(path.is_empty() && key == "x-flotilla")
                || section.knows(key)
            {
                continue;
            }
            let msg = match did_you_mean(key, section.key_names()) {
                Some(s) => format!("unknown key, did you mean `{s}`?"),
                None => format!(
                    "unknown key (known keys: {})",
                    section.key_names().collect::<Vec<_>>().join(", ")
                ),
            };
            self.error(k, &join(path, key), msg);
        }
        Some(Map {
            node: n,
            path: path.to_string(),
            entries,
        })
    }

    /// `n` as a map with any keys (labels, options, aliases).
    pub fn raw_map<'a>(&mut self, n: &'a Node, path: &str) -> Option<&'a [(Node, Node)]> {
        match &n.kind {
            Kind::Map(e) => {
                for (i, (k, _)) in e.iter().enumerate() {
                    if e[..i].iter().any(|(earlier, _)| earlier.key() == k.key()) {
                        self.warn(
                            k,
                            &join(path, k.key()),
                            "duplicate key: the last one is used, as Kamal does",
                        );
                    }
                }
                Some(e)
            }
            Kind::Null => Some(&[]),
            _ => {
                self.expected(n, path, "a map");
                None
            }
        }
    }

    pub fn string(&mut self, n: &Node, path: &str) -> Option<String> {
        match &n.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.expected(n, path, "a string");
                None
            }
        }
    }

    /// A scalar taken as text (`port: 5432` and `port: "5432"` alike).
    pub fn text(&mut self, n: &Node, path: &str) -> Option<String> {
        match (&n.kind, scalar_text(n)) {
            (Kind::Null, _) | (_, None) => {
                self.expected(n, path, "a string");
                None
            }
            (_, Some(s)) => Some(s),
        }
    }

    pub fn bool(&mut self, n: &Node, path: &str) -> Option<bool> {
        match n.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.expected(n, path, "true or false");
                None
            }
        }
    }

    pub fn uint(&mut self, n: &Node, path: &str) -> Option<u64> {
        match n.kind {
            Kind::Int(i) if i >= 0 => Some(i as u64),
            Kind::Int(_) => {
                self.error(
                    n,
                    path,
                    "should be a positive integer, found a negative one",
                );
                None
            }
            _ => {
                self.expected(n, path, "an integer");
                None
            }
        }
    }

    pub fn u32(&mut self, n: &Node, path: &str) -> Option<u32> {
        let v = self.uint(n, path)?;
        u32::try_from(v).ok().or_else(|| {
            self.error(n, path, "is too large");
            None
        })
    }

    pub fn port(&mut self, n: &Node, path: &str) -> Option<u16> {
        let v = self.uint(n, path)?;
        u16::try_from(v).ok().filter(|p| *p > 0).or_else(|| {
            self.error(n, path, "should be a port between 1 and 65535");
            None
        })
    }

    /// Seconds, as an integer or Kamal 1's `10s` / `1m` strings.
    pub fn seconds(&mut self, n: &Node, path: &str) -> Option<u64> {
        if let Kind::Str(s) = &n.kind {
            let s = s.trim();
            let (num, mult) = match s.char_indices().last() {
                Some((i, 's')) => (&s[..i], 1),
                Some((i, 'm')) => (&s[..i], 60),
                Some((i, 'h')) => (&s[..i], 3600),
                _ => (s, 1),
            };
            if let Some(v) = num
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|v| v.checked_mul(mult))
            {
                return Some(v);
            }
            self.expected(n, path, "a number of seconds");
            return None;
        }
        self.uint(n, path)
    }

    /// A count or a percentage like `"25%"`.
    pub fn host_count(&mut self, n: &Node, path: &str) -> Option<HostCount> {
        if let Kind::Str(s) = &n.kind
            && let Some(p) = s
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u32>().ok())
            && (1..=100).contains(&p)
        {
            return Some(HostCount::Percent(p));
        }
        if let Kind::Int(i) = n.kind
            && i > 0
        {
            return u32::try_from(i).ok().map(HostCount::Count);
        }
        let found = match &n.kind {
            Kind::Int(_) | Kind::Str(_) => format!("`{}`", scalar_text(n).unwrap_or_default()),
            _ => n.kind_name().to_string(),
        };
        self.error(
            n,
            path,
            format!("should be a positive count or a percentage up to \"100%\", found {found}"),
        );
        None
    }

    /// A list of strings; a single string is accepted as a one-item list.
    pub fn strings(&mut self, n: &Node, path: &str) -> Vec<String> {
        match &n.kind {
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, it)| self.text(it, &join(path, &i.to_string())))
                .collect(),
            Kind::Str(s) => vec![s.clone()],
            Kind::Null => Vec::new(),
            _ => {
                self.expected(n, path, "a list of strings");
                Vec::new()
            }
        }
    }

    /// A map of strings to scalar values taken as text.
    pub fn string_map(&mut self, n: &Node, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in self.raw_map(n, path).unwrap_or_default() {
            let p = join(path, k.key());
            if let Some(t) = self.text(v, &p) {
                out.insert(k.key().to_string(), t);
            }
        }
        out
    }

    /// `docker run` options: scalars, lists of scalars, or `true` for a bare flag.
    pub fn options(&mut self, n: &Node, path: &str) -> BTreeMap<String, OptionValue> {
        let mut out = BTreeMap::new();
        for (k, v) in self.raw_map(n, path).unwrap_or_default() {
            let p = join(path, k.key());
            let value = match &v.kind {
                // Docker's `--restart` takes a policy; Kamal refuses a boolean here.
                Kind::Bool(_) if k.key() == "restart" => {
                    self.error(
                        v,
                        &p,
                        "should be a restart policy (`no`, `always`, `unless-stopped` or \
                         `on-failure[:N]`), found a boolean",
                    );
                    None
                }
                Kind::Bool(b) => Some(OptionValue::Flag(*b)),
                Kind::Seq(_) => Some(OptionValue::Many(self.strings(v, &p))),
                _ => self.text(v, &p).map(OptionValue::One),
            };
            if let Some(value) = value {
                self.check_option(k.key(), &value, v, &p);
                out.insert(k.key().to_string(), value);
            }
        }
        out
    }

    /// A bad value is a located error; an option Flotilla does not apply yet, a located warning.
    fn check_option(&mut self, name: &str, value: &OptionValue, n: &Node, path: &str) {
        use crate::config::docker_options::{APPLIED, APPLIED_TO_ACCESSORIES, check};
        let values: &[String] = match value {
            OptionValue::One(v) => std::slice::from_ref(v),
            OptionValue::Many(vs) => vs,
            OptionValue::Flag(_) => &[],
        };
        for v in values {
            if let Some(problem) = check(name, v) {
                self.error(n, path, problem);
            }
        }
        let accessory = path.starts_with("accessories/");
        let applied =
            APPLIED.contains(&name) || (accessory && APPLIED_TO_ACCESSORIES.contains(&name));
        if !applied {
            let mut listed = APPLIED.to_vec();
            if accessory {
                listed.extend_from_slice(APPLIED_TO_ACCESSORIES);
            }
            self.warn(
                n,
                path,
                format!(
                    "`docker run --{name}` is not applied by flotilla yet: containers start \
                     without it (applied: {})",
                    listed.join(", ")
                ),
            );
        }
    }

    pub fn opt_string(&mut self, m: &Map<'_>, key: &str) -> Option<String> {
        m.get(key).and_then(|n| self.text(n, &m.at(key)))
    }
}
