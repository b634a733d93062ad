//! Bad input gets an error, never a panic: arbitrary text through ERB, YAML, decoding and the
//! dotenv parser.

use std::collections::BTreeMap;

use flotilla_deploy::config::{LoadOptions, dotenv, erb, load};
use proptest::prelude::*;

/// Fragments users write, so random combinations reach deep into each parser.
fn fragments() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "service: a\n",
        "image: b\n",
        "servers:\n",
        "  - 10.0.0.1\n",
        "  web:\n",
        "    hosts: [",
        "]\n",
        "proxy:\n  ssl: ",
        "true\n",
        "boot:\n  limit: ",
        "\"25%\"\n",
        "999999999999999999999h\n",
        "<% if ENV[\"A\"] == \"b\" %>",
        "<% else %>",
        "<% end -%>\n",
        "<%= ENV.fetch(\"X\", 1) %>",
        "<%= ENV.fetch(\"X\") { |k| k } ? 1 : \"#{2}\" %>",
        "<% [1].each do |x| %>",
        "<% x = %w[a b]; y = x.map { |v| v.strip } %>",
        ".to_i * ",
        "<%- ",
        " -%>",
        "<%# c %>",
        "<%%",
        "%>",
        "env:\n  secret:\n    - A:B\n",
        "x-flotilla:\n  rollout:\n    canary: ",
        "-1\n",
        "&a ",
        "*a\n",
        "<<: *a\n",
        "{",
        "}",
        "'",
        "\"",
        "\\",
        "\t",
        "é",
        "\n",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// ERB rendering of arbitrary text returns output or errors.
    #[test]
    fn erb_never_panics(src in "\\PC{0,200}", frag in fragments()) {
        // A scratch directory and no PATH: nothing a random backtick could name runs anywhere
        // that matters.
        let dir = tempfile::tempdir().unwrap();
        let mut env = BTreeMap::from([("A".to_string(), "v".to_string())]);
        let mut host = erb::Host { env: &mut env, root: dir.path() };
        let _ = erb::render(&src, &mut host);
        let _ = erb::render(&frag, &mut host);
    }

    /// Loading arbitrary config text returns a config or located diagnostics.
    #[test]
    fn load_never_panics(text in fragments()) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(dir.path().join("config/deploy.yml"), &text).unwrap();
        let opts = LoadOptions { env: BTreeMap::new(), ..LoadOptions::new(dir.path()) };
        if let Err(e) = load(&opts) {
            prop_assert!(!e.diagnostics.is_empty());
        }
    }

    /// The dotenv parser returns entries or located errors for any text without commands.
    #[test]
    fn dotenv_never_panics(text in "[A-Za-z_=#'\" $\\\\{}\\n.:-]{0,120}") {
        let env = BTreeMap::new();
        let mut known = BTreeMap::new();
        let ctx = dotenv::Context { env: &env, cwd: std::path::Path::new(".") };
        let _ = dotenv::parse(&text, &mut known, ctx);
    }
}
