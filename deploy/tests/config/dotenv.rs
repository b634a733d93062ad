//! Every dotenv rule of the secrets files, read as Kamal's dotenv reads them.

use super::load_ok;

/// One secrets file exercising each rule, after a `secrets-common` it overrides.
#[test]
fn dotenv_every_rule() {
    let c = load_ok(
        "dotenv_every_rule",
        None,
        &[("FROM_PROCESS", "proc"), ("HOME", "/home/x")],
    );
    let s = |n: &str| {
        c.secrets
            .get(n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .expose()
            .to_string()
    };
    assert_eq!(
        s("UNQUOTED"),
        "plain value",
        "unquoted values are trimmed and ` #` starts a comment"
    );
    assert_eq!(s("EXPORTED"), "yes", "`export` is optional");
    assert_eq!(
        s("SINGLE"),
        "literal $HOME \\n #not-a-comment",
        "single quotes are literal"
    );
    assert_eq!(
        s("DOUBLE"),
        "line1\nline2 \"quoted\" $HOME tab:\t.",
        "double quotes unescape, `\\$` stays"
    );
    assert_eq!(s("MULTI"), "first\nsecond", "quoted values may span lines");
    assert_eq!(s("FROM_ENV"), "proc", "$VAR reads the process environment");
    assert_eq!(s("BRACED"), "proc-suffix", "${{VAR}} too");
    assert_eq!(
        s("FROM_EARLIER"),
        "plain value/common",
        "keys defined earlier, also in earlier files"
    );
    assert_eq!(s("UNSET"), "[]", "an unset variable expands to nothing");
    assert_eq!(s("COMMAND"), "hello", "$(cmd) runs through the shell");
    assert_eq!(s("NESTED"), "inner (paren)", "nested parentheses");
    assert_eq!(
        s("IN_DOUBLE"),
        "cmd:ok var:yes",
        "expansion inside double quotes"
    );
    assert_eq!(s("OVERRIDDEN"), "from-secrets", "later files win");
    assert_eq!(s("COMMON_ONLY"), "common");
    assert_eq!(s("EMPTY"), "");
}

/// On the rules both implement (no `$(cmd)`, no process environment), our parser reads every
/// line of this corpus exactly as dotenvy does: dotenvy is the oracle. (dotenvy is stricter in
/// one place: it rejects unquoted values with inner spaces, which Ruby's dotenv, and so Kamal,
/// accepts; `dotenv_every_rule` covers that case.)
#[test]
fn agrees_with_dotenvy_oracle() {
    use std::collections::BTreeMap;

    use flotilla_deploy::config::dotenv::{Context, parse};

    let corpus = [
        "A=plain",
        "A=  padded  ",
        "export A=exported",
        "A=value # comment",
        "A=value#not-a-comment",
        "# only a comment\nA=1\n\nB=2",
        "A='single $B \\n'",
        "A=\"double\\nline\"",
        "A=\"quote \\\" inside\"",
        "A=\"multi\nline\"",
        "B=base\nA=$B-x",
        "B=base\nA=${B}x",
        "B=base\nA=\"in ${B} quotes\"",
        "A=\"\\$NOT_EXPANDED\"",
        "A=",
        "A=\"\"",
        "A=''",
        "A=x\nA=y",
        "A.B_C=dotted",
    ];
    let env = BTreeMap::new();
    for text in corpus {
        let mut known = BTreeMap::new();
        let ours: Vec<(String, String)> = parse(
            text,
            &mut known,
            Context {
                env: &env,
                cwd: std::path::Path::new("."),
            },
        )
        .unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
        let theirs: Vec<(String, String)> = dotenvy::from_read_iter(text.as_bytes())
            .map(|r| r.unwrap_or_else(|e| panic!("dotenvy {text:?}: {e}")))
            .collect();
        assert_eq!(ours, theirs, "{text:?}");
    }
}

/// One directory per dotenv rule under `fixtures/dotenv/`: `secrets` parses to `expected.json`
/// (with `FROM_PROCESS=proc` in the environment). Every failing rule is listed, not only the first.
#[test]
fn dotenv_rule_fixtures() {
    use std::collections::BTreeMap;

    use flotilla_deploy::config::dotenv::{Context, parse};

    let root = super::fixture("dotenv");
    let env = BTreeMap::from([
        ("FROM_PROCESS".to_string(), "proc".to_string()),
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        ),
    ]);
    let mut failures = Vec::new();
    let mut count = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(dir.join("secrets")).unwrap();
        let expected: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let mut known = BTreeMap::new();
        match parse(
            &text,
            &mut known,
            Context {
                env: &env,
                cwd: &dir,
            },
        ) {
            Ok(_) if known == expected => {}
            Ok(_) => failures.push(format!("{name}: got {known:?}, want {expected:?}")),
            Err(e) => failures.push(format!("{name}: {e:?}")),
        }
        count += 1;
    }
    assert!(
        count >= 20,
        "expected the dotenv rule fixtures, found {count}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
