//! `options:` of roles and accessories: the `docker run` flags Kamal passes through. Checked
//! here, at load time, so a bad value is a located config error and never a failure halfway
//! through a deploy; options Flotilla does not apply yet are located warnings, never dropped
//! in silence.

/// The options the executor applies to containers today.
pub const APPLIED: &[&str] = &["memory", "add-host"];
/// What the executor applies to accessories besides [`APPLIED`] (Kamal passes each as
/// `docker run --KEY VALUE`; the executor sets the same through the Docker API).
pub const APPLIED_TO_ACCESSORIES: &[&str] =
    &["shm-size", "restart", "network", "cpus", "user", "hostname"];

/// Docker's restart policies (`--restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    No,
    Always,
    UnlessStopped,
    /// `on-failure[:N]`: restarted after a non-zero exit, at most N times when given.
    OnFailure(Option<u32>),
}

/// `no`, `always`, `unless-stopped`, `on-failure[:N]`, as `docker run --restart` reads them.
pub fn parse_restart(s: &str) -> Option<Restart> {
    match s.trim() {
        "no" => Some(Restart::No),
        "always" => Some(Restart::Always),
        "unless-stopped" => Some(Restart::UnlessStopped),
        "on-failure" => Some(Restart::OnFailure(None)),
        other => {
            let n = other.strip_prefix("on-failure:")?.parse::<u32>().ok()?;
            Some(Restart::OnFailure(Some(n)))
        }
    }
}

/// `--cpus` (`1.5`) as Docker's `NanoCpus`; `None` for anything but a positive number.
pub fn parse_cpus(s: &str) -> Option<i64> {
    let cpus = s
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|c| *c > 0.0 && c.is_finite())?;
    let nano = (cpus * 1e9).round();
    (nano >= 1.0 && nano < i64::MAX as f64).then_some(nano as i64)
}

/// Options whose value is a size (`512m`, `2g`, `1024k`, `100`).
const SIZES: &[&str] = &["memory", "memory-reservation", "memory-swap", "shm-size"];

/// `512m`, `2g`, `1024k`, `100` (bytes) as Docker reads `--memory` and `--shm-size`.
pub fn parse_size(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last()? {
        'b' => (&s[..s.len() - 1], 1),
        'k' => (&s[..s.len() - 1], 1 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    num.parse::<i64>().ok()?.checked_mul(mult)
}

/// What is wrong with `value` for option `name`, if anything.
pub fn check(name: &str, value: &str) -> Option<String> {
    if SIZES.contains(&name) && parse_size(value).is_none() {
        return Some(format!("should be a size like 512m or 2g, found {value:?}"));
    }
    if name == "add-host"
        && value
            .split_once(':')
            .is_none_or(|(h, ip)| h.is_empty() || ip.is_empty())
    {
        return Some(format!("should be HOST:IP, found {value:?}"));
    }
    if name == "cpus" && parse_cpus(value).is_none() {
        return Some(format!(
            "should be a number of CPUs like 1.5, found {value:?}"
        ));
    }
    if name == "restart" && parse_restart(value).is_none() {
        return Some(format!(
            "should be no, always, unless-stopped or on-failure[:N], found {value:?}"
        ));
    }
    // Docker refuses an empty name at `docker run`; say so at load time instead.
    if matches!(name, "network" | "user")
        && (value.is_empty() || value.contains(char::is_whitespace))
    {
        return Some(format!("should be a name without spaces, found {value:?}"));
    }
    let hostname_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if name == "hostname"
        && (value.is_empty() || value.len() > 253 || !value.chars().all(hostname_char))
    {
        return Some(format!(
            "should be a host name (letters, digits, '-' and '.'), found {value:?}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes read as Docker reads them; bad values say what is expected.
    #[test]
    fn sizes_and_checks() {
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
        assert!(check("memory", "lots").is_some_and(|e| e.contains("512m")));
        assert!(check("shm-size", "256m").is_none());
        assert!(check("add-host", "db:10.0.0.9").is_none());
        assert!(check("add-host", "db").is_some());
        assert!(check("cpus", "0").is_some());
        assert!(check("cpus", "1.5").is_none());
        assert_eq!(parse_cpus("1.5"), Some(1_500_000_000));
        assert_eq!(parse_restart("always"), Some(Restart::Always));
        assert_eq!(
            parse_restart("on-failure:3"),
            Some(Restart::OnFailure(Some(3)))
        );
        assert!(check("restart", "sometimes").is_some_and(|e| e.contains("unless-stopped")));
        assert!(check("restart", "on-failure:x").is_some());
        assert!(check("network", "my net").is_some());
        assert!(check("hostname", "db_1").is_some());
        assert!(check("hostname", "db-1.internal").is_none());
        assert!(check("user", "999:999").is_none());
    }
}
