//! Who may do what on NATS, as plain data: the permissions a host's executor gets with its
//! own credentials (its nkey, enrolled), and the operators' (the scheduler and the CLI).
//! Setup renders them into the NATS server's configuration; nothing here connects.
//!
//! A host may only fetch and acknowledge its own jobs (through the durable consumer the
//! scheduler made for it), publish its own events and heartbeats, and receive replies on its
//! own inbox prefix. It may not create, change or delete streams, consumers or key-value
//! entries, read another host's jobs, or listen to anything else: the allow lists below are
//! everything it has.

use crate::subjects::{self, EVENT_PREFIX, HEARTBEAT_PREFIX, JOBS_STREAM, token};

/// Publish and subscribe allow lists (NATS subjects, wildcards allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The inbox prefix a host's executor uses for replies (JetStream acks, pulled jobs): its own,
/// so no host can read another's replies.
pub fn host_inbox_prefix(host: &str) -> String {
    format!("_INBOX_{}", token(host))
}

/// What a host's executor may do.
pub fn host_permissions(host: &str) -> Permissions {
    let t = token(host);
    let consumer = subjects::job_consumer(host);
    Permissions {
        publish: vec![
            // Its own reports (JetStream publishes; acks come back on its inbox).
            format!("{EVENT_PREFIX}.*.{t}"),
            format!("{HEARTBEAT_PREFIX}.{t}"),
            // Its own consumer: look it up (to check its filter), pull, acknowledge.
            format!("$JS.API.CONSUMER.INFO.{JOBS_STREAM}.{consumer}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.{consumer}"),
            format!("$JS.ACK.{JOBS_STREAM}.{consumer}.>"),
        ],
        subscribe: vec![format!("{}.>", host_inbox_prefix(host))],
    }
}

/// What an operator (the scheduler, the CLI) may do: everything.
pub fn operator_permissions() -> Permissions {
    Permissions {
        publish: vec![">".to_owned()],
        subscribe: vec![">".to_owned()],
    }
}

/// A NATS user: its public nkey (`U...`) and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub nkey: String,
    pub permissions: Permissions,
}

/// The `authorization` block of a NATS server configuration admitting exactly `users`: no
/// connection without one of their keys gets in.
pub fn authorization_conf(users: &[User]) -> String {
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = String::from("authorization {\n  users = [\n");
    for u in users {
        out.push_str(&format!(
            "    {{ nkey: {}, permissions: {{ publish: {{ allow: {} }}, subscribe: {{ allow: {} }} }} }}\n",
            quote(&u.nkey),
            list(&u.permissions.publish),
            list(&u.permissions.subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// A double-quoted NATS configuration string (JSON string rules, which NATS accepts).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host's lists name only its own subjects and consumer, never a wildcard over hosts,
    /// streams, consumers or key-value entries.
    #[test]
    fn a_host_reaches_only_its_own_subjects() {
        let p = host_permissions("10.0.0.5");
        for s in p.publish.iter().chain(&p.subscribe) {
            assert!(s.contains("10-0-0-5"), "{s} is not scoped to the host");
            assert!(!s.starts_with("$KV"), "{s}");
            assert!(
                !s.contains("STREAM.CREATE") && !s.contains("CONSUMER.CREATE"),
                "{s}"
            );
            assert!(!s.contains("DELETE") && !s.contains("UPDATE"), "{s}");
        }
        assert!(
            p.subscribe
                .iter()
                .all(|s| s.starts_with("_INBOX_10-0-0-5."))
        );
        assert!(!p.publish.iter().any(|s| s.starts_with("flotilla.job")));
    }

    /// The block lists every user with its key and both allow lists, quoted.
    #[test]
    fn authorization_block_lists_each_user() {
        let conf = authorization_conf(&[
            User {
                nkey: "UOPERATOR".into(),
                permissions: operator_permissions(),
            },
            User {
                nkey: "UHOST".into(),
                permissions: host_permissions("h1"),
            },
        ]);
        assert!(conf.starts_with("authorization {\n  users = [\n"), "{conf}");
        assert!(conf.contains(r#"{ nkey: "UOPERATOR", permissions: { publish: { allow: [">"] }, subscribe: { allow: [">"] } } }"#), "{conf}");
        assert!(
            conf.contains(r#"subscribe: { allow: ["_INBOX_h1.>"] }"#),
            "{conf}"
        );
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c""#);
    }
}
