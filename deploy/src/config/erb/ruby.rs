//! Ruby's own ERB for templates beyond the built-in subset: every Rails project has `ruby`, and
//! then the rendered file is exactly what Kamal renders.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ErbError, Host, Rendered, SourceMap};
use crate::config::diag::Pos;

/// Appended to an unsupported-construct error when Ruby is not there to take over.
pub const NEEDS_RUBY: &str = " (beyond Flotilla's built-in ERB: with `ruby` on the PATH, \
Flotilla renders this file with Ruby's ERB as Kamal does)";

/// Names the Ruby to render with; set empty, ERB beyond the built-in subset is an error.
pub const RUBY_VAR: &str = "FLOTILLA_RUBY";

/// What Ruby runs: the few things Kamal provides to its config's ERB, then the template from
/// stdin with trim mode `-`, as Kamal 2 renders it. `json` is loaded, as in Kamal; `dotenv` and
/// ActiveSupport's `present?`/`blank?` are stood in for when their gems are absent, since Kamal
/// always has them loaded.
const PRELUDE: &str = r#"
require "erb"
require "json"
begin
  require "active_support"
  require "active_support/core_ext/object/blank"
rescue LoadError
  class Object
    def blank?; respond_to?(:empty?) ? !!empty? : !self; end
    def present?; !blank?; end
    def presence; self if present?; end
  end
  class String
    def blank?; strip.empty?; end
  end
end
begin
  require "dotenv"
rescue LoadError
  # Kamal always has the dotenv gem; without it, the two calls configs make, for plain
  # KEY=VALUE files (quotes stripped, $VAR expanded, no $(command)).
  module Dotenv
    def self.parse_file(file)
      return {} unless File.exist?(file)
      File.read(file).each_line.with_object({}) do |line, h|
        next unless line =~ /\A\s*(?:export\s+)?([\w.]+)\s*=\s*(.*?)\s*\z/
        key, value = $1, $2
        if value =~ /\A'(.*)'\z/ then value = $1
        else
          value = value.sub(/\A"(.*)"\z/, '\\1').sub(/\s+#.*\z/, "")
          value = value.gsub(/\$\{?(\w+)\}?/) { h[$1] || ENV[$1] || "" }
        end
        h[key] = value
      end
    end
    def self.load(*files)
      (files.empty? ? [".env"] : files).each { |f| parse_file(f).each { |k, v| ENV[k] ||= v } }
    end
    def self.overload(*files)
      (files.empty? ? [".env"] : files).each { |f| parse_file(f).each { |k, v| ENV[k] = v } }
    end
  end
  $LOADED_FEATURES << "dotenv.rb"
end
module Kamal
  module Utils
    def self.docker_arch
      arch = `docker info --format '{{.Architecture}}'`.strip
      if arch.include?("aarch64") then "arm64" elsif arch.include?("x86_64") then "amd64" else arch end
    end
  end
end
$stdout.write ERB.new($stdin.read, trim_mode: "-").result(binding)
"#;

/// The Ruby to use: `FLOTILLA_RUBY` if set (empty: never use Ruby), else `ruby` on the PATH.
pub fn find(env: &std::collections::BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some(r) = env.get(RUBY_VAR) {
        return (!r.is_empty()).then(|| PathBuf::from(r));
    }
    let path = env.get("PATH")?;
    std::env::split_paths(path)
        .map(|d| d.join("ruby"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Render `src` with Ruby's ERB in the project directory and the template's environment.
pub fn render(ruby: &Path, src: &str, host: &mut Host<'_>) -> Result<Rendered, ErbError> {
    let whole_file = Pos { line: 0, column: 0 };
    let mut child = Command::new(ruby)
        .arg("-e")
        .arg(PRELUDE)
        .current_dir(host.root)
        .env_clear()
        .envs(host.env.iter())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            ErbError::new(
                whole_file,
                format!("cannot run {} for ERB: {e}", ruby.display()),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A template that exits before reading all of stdin gives a broken pipe; its own error
        // (on stderr) is the one worth reporting, so the write error is not.
        let _ = stdin.write_all(src.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| {
        ErbError::new(
            whole_file,
            format!("cannot run {} for ERB: {e}", ruby.display()),
        )
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(located(&stderr));
    }
    Ok(Rendered {
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
        map: SourceMap::default(),
        via_ruby: true,
        skipped_in_comments: Vec::new(),
    })
}

/// Ruby's error, located at the template line its backtrace names (`(erb):LINE:`).
fn located(stderr: &str) -> ErbError {
    let first = stderr.lines().next().unwrap_or("ruby failed").trim();
    let line = stderr.find("(erb):").and_then(|i| {
        let digits: String = stderr[i + 6..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u32>().ok()
    });
    // `(erb):3:in '<main>': message` or `(erb):4: message` -> `message`
    let msg = match first.strip_prefix("(erb):") {
        Some(rest) => {
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
            match rest.strip_prefix("in ").and_then(|r| r.split_once(": ")) {
                Some((_, m)) => m.to_string(),
                None => rest.to_string(),
            }
        }
        None => first.to_string(),
    };
    ErbError::new(
        Pos {
            line: line.unwrap_or(0),
            column: u32::from(line.is_some()),
        },
        format!("Ruby's ERB: {msg}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ruby's error for a template points at the template line it names.
    #[test]
    fn ruby_errors_are_located() {
        let e = located("(erb):4: syntax error, unexpected end-of-input (SyntaxError)\n");
        assert_eq!(e.pos, Pos { line: 4, column: 1 });
        assert_eq!(
            e.message,
            "Ruby's ERB: syntax error, unexpected end-of-input (SyntaxError)"
        );
        let e = located(
            "(erb):3:in '<main>': undefined local variable or method 'x' for main (NameError)\n\tfrom -e:1",
        );
        assert_eq!(e.pos, Pos { line: 3, column: 1 });
        assert_eq!(
            e.message,
            "Ruby's ERB: undefined local variable or method 'x' for main (NameError)"
        );
    }
}
