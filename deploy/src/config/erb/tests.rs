use std::collections::BTreeMap;
use std::path::Path;

use super::*;

fn base_env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("KAMAL_DESTINATION".into(), "staging".into()),
        ("HOST".into(), "10.0.0.9".into()),
        ("EMPTY".into(), "  ".into()),
        ("HOSTS".into(), "10.0.0.1, 10.0.0.2".into()),
        ("WORKERS".into(), "3".into()),
        ("PATH".into(), "/usr/bin:/bin".into()),
    ])
}

fn render_in(src: &str, root: &Path) -> Result<(String, SourceMap), Vec<ErbError>> {
    let mut env = base_env();
    let mut host = Host {
        env: &mut env,
        root,
    };
    render(src, &mut host)
}

fn ok(src: &str) -> String {
    match render_in(src, Path::new("/")) {
        Ok((s, _)) => s,
        Err(e) => panic!("{src:?} failed: {e:?}"),
    }
}

fn err(src: &str) -> ErbError {
    match render_in(src, Path::new("/")) {
        Ok((s, _)) => panic!("{src:?} rendered {s:?}"),
        Err(mut e) => e.remove(0),
    }
}

/// `<%= %>` prints ENV lookups, fetch defaults and literals the way Ruby's `to_s` does.
#[test]
fn outputs_expressions() {
    assert_eq!(ok("host: <%= ENV[\"HOST\"] %>\n"), "host: 10.0.0.9\n");
    assert_eq!(ok("a: <%= ENV['NOPE'] %>."), "a: .");
    assert_eq!(ok("<%= ENV.fetch(\"NOPE\", \"d\") %>"), "d");
    assert_eq!(ok("<%= ENV.fetch('HOST') %>"), "10.0.0.9");
    assert_eq!(ok("<%= 42 %> <%= true %> <%= nil %>|"), "42 true |");
    assert_eq!(
        ok("<%= ENV[\"NOPE\"].nil? %> <%= ENV[\"EMPTY\"].present? %>"),
        "true false"
    );
    assert_eq!(ok("<%= ENV[\"NOPE\"] || \"fallback\" %>"), "fallback");
    assert_eq!(
        ok("<%= !(ENV[\"HOST\"] == \"x\") && ENV[\"HOST\"] != \"y\" %>"),
        "true"
    );
}

/// if / elsif / else / end choose the right branch, and `-%>` / `<%-` trim as in trim mode `-`.
#[test]
fn conditionals_and_trim() {
    let src = "<% if ENV[\"KAMAL_DESTINATION\"] == \"prod\" -%>\nservice: a\n<% elsif ENV[\"KAMAL_DESTINATION\"] == \"staging\" -%>\nservice: b\n<% else -%>\nservice: c\n<% end -%>\nimage: x\n";
    assert_eq!(ok(src), "service: b\nimage: x\n");
    assert_eq!(
        ok("a:\n  <%- if true -%>\n  b: 1\n  <%- end -%>\n"),
        "a:\n  b: 1\n"
    );
    assert_eq!(ok("<% if false %>x<% else %>y<% end %>\n"), "y\n");
    assert_eq!(
        ok(
            "a:\n  <%- if true -%>\n  <%- if true -%>\n  b: 1\n  <%- end -%>\n  <%- end -%>\nc: 2\n"
        ),
        "a:\n  b: 1\nc: 2\n"
    );
    assert_eq!(
        ok("x: <%- if true %>1<% end %>\n"),
        "x: 1\n",
        "`<%-` mid-line keeps the text before it"
    );
    assert_eq!(ok("<%# a comment %>z <%% literal"), "z <% literal");
}

/// `ENV.fetch` of an unset variable is an error at the fetch, not an empty string.
#[test]
fn fetch_without_default_errors() {
    let e = err("a: 1\nb: <%= ENV.fetch(\"MISSING\") %>\n");
    assert_eq!(
        e.pos,
        Pos {
            line: 2,
            column: 12
        }
    );
    assert_eq!(
        e.message,
        "ENV.fetch(\"MISSING\"): environment variable MISSING is not set"
    );
}

/// Ruby the subset does not know is named, with its position, instead of being dropped.
#[test]
fn unsupported_constructs_are_located_errors() {
    let e = err("x: 1\ny: <%= ENV[\"HOST\"].frobnicate %>\n");
    assert_eq!(
        (e.pos, e.message.as_str(), e.unsupported),
        (
            Pos {
                line: 2,
                column: 20
            },
            "unsupported ERB: method call `.frobnicate` on a String",
            true
        )
    );
    let e = err("<% [1,2].each_slice(2) do |x| %><% end %>");
    assert!(e.message.contains("a `do` block other than"), "{e:?}");
    let e = err("<%= Rails.env %>");
    assert_eq!(
        (e.pos, e.message.as_str()),
        (
            Pos { line: 1, column: 5 },
            "unsupported ERB: constant `Rails`"
        )
    );
    assert_eq!(
        err("<% if true %>x").message,
        "ERB `if` is never closed with `<% end %>`"
    );
    assert_eq!(
        err("x <% end %>").message,
        "ERB `end` without a matching `if` or `do`"
    );
    assert_eq!(
        err("a <%= 1").message,
        "unterminated ERB tag: expected `%>`"
    );
    assert_eq!(
        err("<%= `true` %>\n<%= `x %>").message,
        "unterminated string literal in ERB"
    );
}

/// The Ruby real configs use renders as Ruby renders it: ternary, `ENV.fetch` with a block,
/// `to_i`, `strip`, `split(...).each do`, interpolation, `%w[]`, assignments, arithmetic.
#[test]
fn ruby_real_configs_use() {
    assert_eq!(ok("<%= ENV[\"HOST\"] == \"x\" ? \"a\" : \"b\" %>"), "b");
    assert_eq!(ok("<%= ENV[\"NOPE\"].nil? ? 1 : 2 %>"), "1");
    assert_eq!(ok("<%= ENV.fetch(\"NOPE\") { \"dflt\" } %>"), "dflt");
    assert_eq!(ok("<%= ENV.fetch(\"NOPE\") { |k| k + \"!\" } %>"), "NOPE!");
    assert_eq!(ok("<%= ENV.fetch(\"WORKERS\", 1).to_i * 2 %>"), "6");
    assert_eq!(ok("<%= ENV[\"EMPTY\"].strip.empty? %>"), "true");
    assert_eq!(
        ok("<%= \"v#{ENV[\"WORKERS\"].to_i + 1}-#{'x'}\" %>"),
        "v4-x"
    );
    assert_eq!(ok("<%= 'no #{interp}' %>"), "no #{interp}");
    let src =
        "hosts:\n<% ENV[\"HOSTS\"].split(\",\").each do |h| -%>\n  - <%= h.strip %>\n<% end -%>\n";
    assert_eq!(ok(src), "hosts:\n  - 10.0.0.1\n  - 10.0.0.2\n");
    let src = "<% %w[a b].each_with_index do |r, i| %><%= r %><%= i %>,<% end %>";
    assert_eq!(ok(src), "a0,b1,");
    assert_eq!(ok("<% n = 2; m = n * 3 %><%= m %>"), "6");
    assert_eq!(ok("<% unless ENV[\"NOPE\"] %>u<% end %>"), "u");
    assert_eq!(ok("<%= [1, 2].map { |x| x * 10 }.join(\",\") %>"), "10,20");
    assert_eq!(ok("<%= `printf 'abc\\n'`.strip %>|"), "abc|");
    assert_eq!(ok("<%= ENV[\"HOST\"].present? && \"y\" %>"), "y");
}

/// `Dotenv.load` puts a `.env` file's variables in `ENV` without replacing set ones, and
/// `File.read` reads relative to the project directory, as Kamal run there would.
#[test]
fn dotenv_load_and_file_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env.test"), "HOST=ignored\nNEW=fresh\n").unwrap();
    std::fs::write(dir.path().join(".ruby-version"), "3.3.5\n").unwrap();
    let src = "<% require \"dotenv\"; Dotenv.load(\".env.test\", \".env.missing\") %>\
<%= ENV[\"NEW\"] %> <%= ENV[\"HOST\"] %> <%= File.read('.ruby-version').strip %>";
    let (out, _) = render_in(src, dir.path()).unwrap();
    assert_eq!(out, "fresh 10.0.0.9 3.3.5");
    let e = render_in("a: <%= File.read('.nope') %>", dir.path()).unwrap_err();
    assert!(!e[0].unsupported);
    assert!(e[0].message.starts_with("File.read(\".nope\"): "), "{e:?}");
}

/// An unsupported tag whose output lands in a YAML comment cannot change the config: the
/// subset renders the rest and reports the tag apart, so the caller can warn.
#[test]
fn unsupported_tag_in_yaml_comment_is_set_aside() {
    let mut env = base_env();
    let mut host = Host {
        env: &mut env,
        root: Path::new("/"),
    };
    let src = "a: 1\n#   RUBY_VERSION: <%= \"#{RUBY_ENGINE}-#{RUBY_ENGINE_VERSION}\" %>\nb: 2 # <%= RUBY_VERSION %>\n";
    let r = render_subset(src, &mut host).unwrap();
    assert_eq!(r.text, "a: 1\n#   RUBY_VERSION: \nb: 2 # \n");
    assert_eq!(r.skipped_in_comments.len(), 2);
    assert_eq!(
        r.skipped_in_comments[0].pos,
        Pos {
            line: 2,
            column: 26
        }
    );
    // Outside a comment (here inside a quoted `#`), the same tag is an error.
    assert!(render_subset("a: \"# <%= RUBY_VERSION %>\"\n", &mut host).is_err());
}

/// Positions in rendered output map back to the template line the user wrote.
#[test]
fn source_map_points_into_the_template() {
    let src = "<% if true -%>\nservice: a\n<% end -%>\nimage: <%= ENV[\"HOST\"] %>\nbad: [\n";
    let (out, map) = render_in(src, Path::new("/")).expect("renders");
    assert_eq!(out, "service: a\nimage: 10.0.0.9\nbad: [\n");
    assert_eq!(
        map.map(Pos { line: 1, column: 1 }),
        Pos { line: 2, column: 1 }
    );
    assert_eq!(
        map.map(Pos { line: 3, column: 6 }),
        Pos { line: 5, column: 6 }
    );
    assert_eq!(
        map.map(Pos { line: 2, column: 9 }),
        Pos {
            line: 4,
            column: 11
        }
    );
}

/// The built-in evaluator renders what Ruby's ERB renders (trim mode `-`), on a corpus of the
/// forms Kamal configs use: Ruby is the oracle. This test needs `ruby` on the PATH.
#[test]
fn subset_agrees_with_ruby() {
    let corpus = [
        "a: <%= ENV[\"HOST\"] %>\nb: <%= ENV['NOPE'] %>|\n",
        "<%= ENV.fetch(\"NOPE\", \"d\") %> <%= ENV.fetch(\"NOPE\") { |k| k.downcase } %>",
        "<%= ENV[\"HOST\"] == \"x\" ? \"a\" : \"b\" %> <%= ENV[\"NOPE\"].nil? ? 1 : 2 %>",
        "<%= ENV.fetch(\"WORKERS\", 1).to_i * 2 + 1 %> <%= \"12abc\".to_i %> <%= \" 7\".to_i %>",
        "<%= \"  x \\n\".strip %>|<%= \"y\\n\".chomp %>|<%= \"a,b,,c,,\".split(\",\").join(\"/\") %>",
        "<%= \" a  b \".split.join(\"-\") %>|<%= [1, 2].map { |x| x * 10 }.join(\",\") %>",
        "hosts:\n<% ENV[\"HOSTS\"].split(\",\").each do |h| -%>\n  - <%= h.strip %>\n<% end -%>\nx: 1\n",
        "<% %w[a b].each_with_index do |r, i| %><%= r %><%= i %>,<% end %>\n",
        "<% n = 2; m = n * 3 %><%= m %> <% 3.times do |i| %><%= i %><% end %>",
        "<% if ENV[\"KAMAL_DESTINATION\"] == \"prod\" -%>\np: 1\n<% elsif ENV[\"KAMAL_DESTINATION\"] == \"staging\" -%>\ns: 1\n<% else -%>\no: 1\n<% end -%>\n",
        "a:\n  <%- if true -%>\n  b: 1\n  <%- end -%>\nc: <%= \"v#{ENV[\"WORKERS\"].to_i + 1}-#{'x'}\" %>\n",
        "<% unless ENV[\"NOPE\"] %>u<% end %> <%= !ENV[\"NOPE\"] && \"y\" %> <%= ENV[\"NOPE\"] || \"f\" %>",
        "<%= `printf 'abc\\n'`.strip %>|<%# comment %>|<%% literal %>\n",
        "<%= [1, nil, 2].compact.size %> <%= \"abc\".include?(\"b\") %> <%= \"abc\".start_with?(\"a\") %>",
        "x: <%= 10 / 3 %> <%= -7 / 2 %> <%= 2 <= 3 %>\n",
        "<%= ENV.key?(\"HOST\") %> <%= ENV[\"HOST\"].upcase %> <%= [\"a\", \"b\"].last %>",
        "hosts: <%= ENV[\"HOSTS\"].split(\",\").map(&:strip) %>\n<%= ENV[\"NOPE\"]&.strip %>|<%= ENV[\"HOST\"]&.strip %>",
        "j: <%= ENV[\"HOSTS\"].split(\", \").to_json %> <%= \"a\\\"b\".to_json %> <%= nil.to_json %>\n",
    ];
    let path = BTreeMap::from([(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    )]);
    let Some(ruby) = ruby::find(&path) else {
        panic!("this test compares with Ruby's ERB: install ruby (Debian package `ruby`)");
    };
    let dir = tempfile::tempdir().unwrap();
    for src in corpus {
        let ours = render_in(src, dir.path())
            .unwrap_or_else(|e| panic!("{src:?}: {e:?}"))
            .0;
        let mut env = base_env();
        let mut host = Host {
            env: &mut env,
            root: dir.path(),
        };
        let theirs = ruby::render(&ruby, src, &mut host)
            .unwrap_or_else(|e| panic!("ruby {src:?}: {e:?}"))
            .text;
        assert_eq!(ours, theirs, "{src:?}");
    }
}
