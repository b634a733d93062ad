//! `env`: flat, or `{clear, secret, tags}`, with secret aliasing `NAME:SECRET`.

use super::{Cx, join};
use crate::config::schema;
use crate::config::secrets::Secrets;
use crate::config::types::{Env, SecretRef};
use crate::config::yaml::{Kind, Node};

pub(crate) fn decode(cx: &mut Cx, n: &Node, path: &str, secrets: &Secrets) -> Env {
    let structured = match &n.kind {
        Kind::Map(e) => e
            .iter()
            .any(|(k, _)| matches!(k.key(), "clear" | "secret" | "tags")),
        _ => false,
    };
    if !structured {
        return Env {
            clear: cx.string_map(n, path),
            ..Env::default()
        };
    }
    let Some(m) = cx.map(n, path, &schema::ENV) else {
        return Env::default();
    };
    let mut env = Env {
        clear: m
            .get("clear")
            .map(|c| cx.string_map(c, &m.at("clear")))
            .unwrap_or_default(),
        ..Env::default()
    };
    if let Some(s) = m.get("secret") {
        env.secret = secret_refs(cx, s, &m.at("secret"), secrets);
    }
    if let Some(t) = m.get("tags") {
        let tp = m.at("tags");
        for (k, v) in cx.raw_map(t, &tp).unwrap_or_default() {
            env.tags.insert(
                k.key().to_string(),
                decode(cx, v, &join(&tp, k.key()), secrets),
            );
        }
    }
    env
}

/// `secret:` items, `NAME` or `NAME:SECRET`, each of which must be defined by a secrets file.
pub(crate) fn secret_refs(cx: &mut Cx, n: &Node, path: &str, secrets: &Secrets) -> Vec<SecretRef> {
    let Kind::Seq(items) = &n.kind else {
        cx.error(
            n,
            path,
            format!("should be a list of secret names, found {}", n.kind_name()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = join(path, &i.to_string());
        let Some(text) = cx.string(item, &p) else {
            continue;
        };
        let (var, secret) = text.split_once(':').unwrap_or((&text, &text));
        if secrets.missing(secret) {
            cx.error(item, &p, secrets.not_defined(secret));
        }
        out.push(SecretRef {
            var: var.to_string(),
            secret: secret.to_string(),
        });
    }
    out
}
