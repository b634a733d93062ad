//! `options:` of roles and accessories: the `docker run` flags Kamal passes through. Checked
//! here, at load time, so a bad value is a located config error and never a failure halfway
//! through a deploy; options Flotilla does not apply yet are located warnings, never dropped
//! in silence.

/// The options the executor applies to containers today.
pub const APPLIED: &[&str] = &["memory", "add-host"];
/// What the executor applies to accessories besides [`APPLIED`].
pub const APPLIED_TO_ACCESSORIES: &[&str] = &["shm-size"];

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
    if name == "cpus" && value.parse::<f64>().ok().is_none_or(|c| c <= 0.0) {
        return Some(format!(
            "should be a number of CPUs like 1.5, found {value:?}"
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
    }
}
