#!/usr/bin/env bash
# Benchmark: `flotilla server bootstrap` on N bare fleet hosts (issue 11, item 8), beside the
# physical floor of its heaviest part and beside Kamal 1.9.3's `kamal server bootstrap`.
#
# Usage: scripts/bench/bootstrap.sh [HOSTS [FLOTILLA]]     e.g. scripts/bench/bootstrap.sh 20
#   HOSTS     fleet hosts to make (each a network namespace with its own dockerd and sshd)
#   FLOTILLA  the CLI to measure (default: the release static build, which this builds)
#   KAMAL_DIR (env) a Kamal 1.9.3 source tree (`git archive v1.9.3`); its run is skipped
#             without it. It runs on Debian's ruby with Debian's gems (ruby-sshkit,
#             ruby-net-ssh, ruby-thor, ruby-dotenv, ruby-zeitwerk, ruby-activesupport,
#             ruby-concurrent, ruby-ed25519, ruby-bcrypt-pbkdf).
#
# In order, each timed with /usr/bin/time (wall, user+system CPU of the CLI and its children,
# peak RSS):
#   1. `flotilla server bootstrap` from bare hosts: dirs, the agent image streamed over SSH into
#      `docker load` on every host, NATS on the control host, proxy and executor everywhere,
#      enrolment;
#   2. the same again, every host current (probe only: nothing to do);
#   3. the floor of step 1's heaviest part: the same image archive streamed by OpenSSH into
#      `docker load` on every host at once (after `flotilla remove -y`);
#   4. `kamal server bootstrap` (1.9.3) on the same hosts, which have Docker: `docker -v` and
#      `mkdir -p .kamal` per host under Kamal's deploy lock.
# The fleet is removed at the end. Prints one line per measurement and the load average.
# For 100 hosts (100 dockerds do not fit here): bootstrap_fanout.sh, sshd-only hosts with a
# stand-in `docker`.
source "$(dirname "$0")/../lib.sh"
require_root
require_cargo
cd "$ROOT"

HOSTS=${1:-20}
FLOTILLA=${2:-}
NAME=bootbench
TARGET=x86_64-unknown-linux-gnu

if [ -z "$FLOTILLA" ]; then
  RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release -p flotilla --target "$TARGET"
  FLOTILLA="${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/release/flotilla"
fi
FLOTILLA=$(readlink -f "$FLOTILLA")
[ -x "$FLOTILLA" ] || die "$FLOTILLA: not an executable"
cargo build -q -p flotilla-e2e --bin flotilla-fleet
FLEET=$(cargo_bin flotilla-fleet)
ensure_nats_server_bin

say "fleet of $HOSTS bare hosts"
"$FLEET" up "$HOSTS" --name "$NAME" >/dev/null
trap '"$FLEET" down "$NAME" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
eval "$("$FLEET" env "$NAME")"
NATS_IMAGE=$("$FLEET" push-nats "$NAME")
WORK=$(mktemp -d)
mkdir -p "$WORK/config" "$WORK/.kamal"
hosts_yaml=$(for h in $FLEET_HOSTS; do echo "    - $h"; done)
cat > "$WORK/config/deploy.yml" <<EOF
service: bench
image: bench
servers:
  web:
$hosts_yaml
registry:
  server: $FLEET_REGISTRY
  username: bench
  password:
    - KAMAL_REGISTRY_PASSWORD
builder:
  arch: amd64
ssh:
  config:
    - $FLEET_SSH_CONFIG
x-flotilla:
  nats:
    image: $NATS_IMAGE
EOF
echo "KAMAL_REGISTRY_PASSWORD=unused" > "$WORK/.kamal/secrets"

# measure LABEL CMD...: one line with wall, CPU and peak RSS of CMD (run in $WORK).
measure() {
  local label=$1; shift
  local out="$WORK/time.out"
  (cd "$WORK" && /usr/bin/time -f '%e %U %S %M' -o "$out" "$@" >"$WORK/last.log" 2>&1) \
    || { cat "$WORK/last.log" >&2; die "$label failed (output above)"; }
  read -r wall user sys rss < "$out"
  printf '%-58s wall %6.2f s  cpu %6.2f s  peak rss %4d MB\n' "$label" "$wall" \
    "$(echo "$user + $sys" | bc)" $((rss / 1024))
}

say "load before: $(cut -d' ' -f1-3 /proc/loadavg); CLI $(du -h "$FLOTILLA" | cut -f1) ($FLOTILLA)"
measure "1. flotilla server bootstrap, $HOSTS bare hosts" "$FLOTILLA" server bootstrap -q
measure "2. flotilla server bootstrap again (all current)" "$FLOTILLA" server bootstrap -q

# The image archive the hosts loaded, as Docker saves it, for the floor.
first=$(echo "$FLEET_HOSTS" | cut -d' ' -f1)
image=$(ssh -F "$FLEET_SSH_CONFIG" "$first" "docker inspect -f '{{.Config.Image}}' flotilla-executor")
ssh -F "$FLEET_SSH_CONFIG" "$first" "docker save $image" > "$WORK/agent.tar"
(cd "$WORK" && "$FLOTILLA" remove -y -q >/dev/null 2>&1) || die "flotilla remove -y failed"
floor() {
  local pids=() h
  for h in $FLEET_HOSTS; do
    ssh -F "$FLEET_SSH_CONFIG" "$h" "docker load -q >/dev/null" < "$WORK/agent.tar" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}
export -f floor; export WORK FLEET_HOSTS FLEET_SSH_CONFIG
measure "3. floor: OpenSSH streams $(du -h "$WORK/agent.tar" | cut -f1) into docker load x $HOSTS" \
  bash -c floor

if [ -n "${KAMAL_DIR:-}" ]; then
  # Kamal 1.9.3 reads no ssh_config file: the fleet's key and known hosts are given to net-ssh
  # through `ssh.keys` and a HOME of its own (so nothing lands in this machine's ~/.ssh).
  mkdir -p "$WORK/kamal/config" "$WORK/kamal/home/.ssh"
  cp "$FLEET_DIR/known_hosts" "$WORK/kamal/home/.ssh/known_hosts"
  cat > "$WORK/kamal/config/deploy.yml" <<EOF
service: bench
image: bench
servers:
  web:
$hosts_yaml
registry:
  server: $FLEET_REGISTRY
  username: bench
  password:
    - KAMAL_REGISTRY_PASSWORD
ssh:
  keys_only: true
  keys: [ "$FLEET_SSH_KEY" ]
EOF
  # Debian ships concurrent-ruby 1.1.6, whose Semaphore#acquire takes no block (1.2's does,
  # and Kamal 1.9 uses it): the same few lines as 1.2, loaded first.
  cat > "$WORK/kamal/semaphore_block.rb" <<'EOF'
require "concurrent"
class Concurrent::Semaphore
  alias_method :acquire_without_block, :acquire
  def acquire(permits = 1)
    acquire_without_block(permits)
    return unless block_given?
    begin
      yield
    ensure
      release(permits)
    end
  end
end
EOF
  # `--version`: the project is no git checkout, and Kamal takes the version (for its lock
  # message) from git's HEAD otherwise, failing after the hosts' part is done.
  measure "4. kamal server bootstrap (1.9.3), $HOSTS hosts with Docker" \
    env HOME="$WORK/kamal/home" KAMAL_REGISTRY_PASSWORD=unused \
    bash -c "cd '$WORK/kamal' && ruby -r./semaphore_block.rb -I'$KAMAL_DIR/lib' '$KAMAL_DIR/bin/kamal' server bootstrap --version bench"
fi
say "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
