use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "KAMAL_DESTINATION" => Some("staging".into()),
        "HOST" => Some("10.0.0.9".into()),
        "EMPTY" => Some("  ".into()),
        _ => None,
    }
}

fn ok(src: &str) -> String {
    match render(src, &env) {
        Ok((s, _)) => s,
        Err(e) => panic!("{src:?} failed: {e:?}"),
    }
}

fn err(src: &str) -> ErbError {
    match render(src, &env) {
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
    assert_eq!(e.pos, Pos { line: 2, column: 8 });
    assert_eq!(
        e.message,
        "ENV.fetch(\"MISSING\"): environment variable MISSING is not set"
    );
}

/// Ruby the subset does not know is named, with its position, instead of being dropped.
#[test]
fn unsupported_constructs_are_located_errors() {
    let e = err("x: 1\ny: <%= ENV[\"HOST\"].upcase %>\n");
    assert_eq!(
        (e.pos, e.message.as_str()),
        (
            Pos {
                line: 2,
                column: 20
            },
            "unsupported ERB: method call `.upcase`"
        )
    );
    let e = err("<% [1,2].each do |x| %>");
    assert_eq!(e.message, "unsupported ERB: code `[1,2].each do |x|`");
    let e = err("<%= File.read(\"x\") %>");
    assert_eq!(
        (e.pos, e.message.as_str()),
        (Pos { line: 1, column: 5 }, "unsupported ERB: `File`")
    );
    let e = err("<%= \"#{1}\" %>");
    assert_eq!(e.message, "unsupported ERB: string interpolation `#{...}`");
    assert_eq!(
        err("<% if true %>x").message,
        "ERB `if` is never closed with `<% end %>`"
    );
    assert_eq!(
        err("x <% end %>").message,
        "ERB `end` without a matching `if`"
    );
    assert_eq!(
        err("a <%= 1").message,
        "unterminated ERB tag: expected `%>`"
    );
}

/// Positions in rendered output map back to the template line the user wrote.
#[test]
fn source_map_points_into_the_template() {
    let src = "<% if true -%>\nservice: a\n<% end -%>\nimage: <%= ENV[\"HOST\"] %>\nbad: [\n";
    let (out, map) = render(src, &env).expect("renders");
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
