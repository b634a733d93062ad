//! Kamal's `-h/--hosts` and `-r/--roles` filters (comma lists, `*` wildcards), applied to a
//! plan: hosts outside the filter are dropped, and so are the steps of roles outside it.

use super::{Plan, Step};

/// Whether `name` matches a Kamal filter pattern, where `*` matches any run of characters.
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n
                .split_first()
                .is_some_and(|(d, nr)| c == d && go(rest, nr)),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn any_match(patterns: &[String], name: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches(p, name))
}

fn step_role(step: &Step) -> Option<&str> {
    match step {
        Step::StartContainer(s) => Some(&s.role),
        Step::SwitchProxy(s) => Some(&s.role),
        Step::AwaitHealthy { role, .. }
        | Step::StopOldContainers { role, .. }
        | Step::StopRole { role, .. }
        | Step::StartExisting { role, .. }
        | Step::Maintenance { role, .. }
        | Step::Live { role, .. } => Some(role),
        Step::PullImage { .. }
        | Step::Prune { .. }
        | Step::PruneImages { .. }
        | Step::BootAccessory(_)
        | Step::StartAccessory { .. }
        | Step::StopAccessory { .. }
        | Step::RemoveAccessory { .. }
        | Step::RemoveContainer { .. }
        | Step::RemoveImage { .. }
        | Step::StartProxy { .. }
        | Step::StopProxy { .. }
        | Step::ReplaceProxy { .. } => None,
    }
}

impl Plan {
    /// Keeps only hosts matching `hosts` that run a role matching `roles` (empty lists match
    /// everything), and only those roles' steps.
    pub fn filtered(mut self, hosts: &[String], roles: &[String]) -> Plan {
        self.hosts.retain(|h| any_match(hosts, &h.host));
        for h in &mut self.hosts {
            h.roles.retain(|r| any_match(roles, r));
            h.steps
                .retain(|s| step_role(s).is_none_or(|r| any_match(roles, r)));
        }
        self.hosts.retain(|h| !h.roles.is_empty());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    /// Kamal's wildcards: `*` anywhere, exact otherwise.
    #[test]
    fn wildcards() {
        assert!(matches("10.0.0.*", "10.0.0.12"));
        assert!(matches("*", "anything"));
        assert!(matches("web*", "web"));
        assert!(!matches("web", "web2"));
        assert!(matches("*-eu-*", "db-eu-1"));
    }
}
