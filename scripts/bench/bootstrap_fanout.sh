#!/usr/bin/env bash
# Benchmark: `flotilla server bootstrap` fanned out to N sshd-only hosts with a stand-in
# `docker` (issue 11, item 8, the 100-host part), beside the OpenSSH floor and Kamal 1.9.3.
# bootstrap.sh measures real fleet hosts (each with its own dockerd); 100 dockerds do not fit
# on a 2-core machine, so here only Docker's own work is stood in.
#
# Usage: scripts/bench/bootstrap_fanout.sh [HOSTS [FLOTILLA]]   e.g. ... 100 target/.../flotilla
#   HOSTS     sshd-only hosts to make (default 100, at most 250)
#   FLOTILLA  the CLI to measure (default: the debug static build, which this builds)
#   KAMAL_DIR (env) a Kamal 1.9.3 source tree; its run is skipped without it (see bootstrap.sh).
#   KEEP_WORK (env) set: keep the work directory (hosts' files, sshd logs, each tool's output).
#
# A host is one OpenSSH sshd (its own host key, default sshd settings otherwise) on its own
# loopback address 127.211.0.I port 22, in its own mount and UTS namespace: its own empty
# /etc/flotilla, /var/lib/flotilla and /root, its own hostname, and a stand-in over
# /usr/bin/docker (`docker_standin` below) keeping that host's images and containers as
# files. So the SSH fan-out (one connection and sshd per host), every command round trip,
# the files bootstrap writes and the image streaming (the real agent archive, read to its
# end by the stand-in's `docker load`) are real; Docker's own work (unpacking layers,
# starting containers, NATS, the agents themselves) is not done.
#
# In order, each timed with /usr/bin/time (wall, CPU of the tool and its children, peak RSS):
#   1. `flotilla server bootstrap` from bare (dirs, image streamed, NATS/proxy/executor runs,
#      enrolment);
#   2. the same again, nothing to do;
#   3. floor of 1: OpenSSH streams the same archive into the stand-in's `docker load` on all
#      hosts at once (xargs -P HOSTS);
#   4. floor of 2: one OpenSSH command round trip (`docker -v`) on all hosts at once;
#   5. `kamal server bootstrap` (1.9.3): with Docker present, `docker -v` and `mkdir -p .kamal`
#      per host under its lock (compare with 2 and 4).
# Prints one line per measurement, the load average before and after, and the SSH failures
# or resets each tool's output and the sshd logs show. Every sshd is stopped (by pid) at exit.
source "$(dirname "$0")/../lib.sh"
require_root
cd "$ROOT"

HOSTS=${1:-100}
FLOTILLA=${2:-}
TARGET=x86_64-unknown-linux-gnu
[ "$HOSTS" -ge 1 ] && [ "$HOSTS" -le 250 ] || die "HOSTS must be 1-250"

if [ -z "$FLOTILLA" ]; then
  require_cargo
  RUSTFLAGS='-C target-feature=+crt-static' cargo build -q -p flotilla --target "$TARGET"
  FLOTILLA="${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/debug/flotilla"
fi
FLOTILLA=$(readlink -f "$FLOTILLA")
[ -x "$FLOTILLA" ] || die "$FLOTILLA: not an executable"
# The stand-in is bound over every `docker` on sshd's PATH.
DOCKERS=$(for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  [ -f "$d/docker" ] && echo "$(readlink -f "$d/docker")"; done | sort -u | tr "\n" " ")
[ -n "$DOCKERS" ] || die "no docker on PATH to stand in for"
for d in /etc/flotilla /var/lib/flotilla; do mkdir -p "$d"; done

# Not under /tmp: sshd refuses an authorized_keys file below a world-writable directory.
WORK=$(mktemp -d /run/bootfan.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

addr() { echo "127.211.0.$1"; }

# The stand-in `docker` of one host; @STATE@ is that host's directory of images and
# containers, @ARCHIVE@ where host 1 keeps a copy of the archive it loaded (for the floor).
cat > "$WORK/docker_standin" <<'EOF'
#!/bin/bash
S=@STATE@
case "$1" in
  -v|--version) echo "Docker version 27.5.1, build standin"; exit 0 ;;
  version) echo "27.5.1"; exit 0 ;;
  load)
    # Read the whole archive, as dockerd would; host 1 keeps it for the floor.
    if [ -n "@ARCHIVE@" ] && [ ! -e "@ARCHIVE@" ]; then cat > "@ARCHIVE@"; else cat > /dev/null; fi
    touch "$S/image"; echo "Loaded image: flotilla:standin"; exit 0 ;;
  image)
    [ "$2" = inspect ] && [ -f "$S/image" ] && { echo '[{}]'; exit 0; }
    [ "$2" = inspect ] && { echo "Error: No such image" >&2; exit 1; }
    exit 0 ;;
  inspect)
    shift; fmt=""
    while [ $# -gt 1 ]; do case "$1" in -f|--format) fmt=$2; shift 2 ;; *) shift ;; esac; done
    c="$S/c.$1"
    [ -f "$c" ] || { echo "Error: No such object: $1" >&2; exit 1; }
    image=$(sed -n 1p "$c"); running=$(sed -n 2p "$c")
    out=${fmt//'{{.Config.Image}}'/$image}
    out=${out//'{{.State.Running}}'/$running}
    while [[ $out =~ \{\{index\ .Config.Labels\ \"([^\"]*)\"\}\} ]]; do
      key=${BASH_REMATCH[1]}
      val=$(grep -m1 "^label $key=" "$c" | cut -d= -f2-)
      out=${out//"${BASH_REMATCH[0]}"/$val}
    done
    echo "$out"; exit 0 ;;
  run)
    shift; name=""; image=""; labels=()
    while [ $# -gt 0 ] && [ -z "$image" ]; do
      case "$1" in
        -d|--detach|--rm|--init|-i|-t|--privileged) shift ;;
        --name) name=$2; shift 2 ;;
        --label|-l) labels+=("$2"); shift 2 ;;
        --*=*) shift ;;
        -*) shift 2 ;;
        *) image=$1; shift ;;
      esac
    done
    [ -n "$name" ] || name=standin$RANDOM
    [ -f "$S/c.$name" ] && { echo "Conflict: $name in use" >&2; exit 125; }
    { echo "$image"; echo true; for l in "${labels[@]}"; do echo "label $l"; done; } > "$S/c.$name"
    # The executor makes its keys when it starts: the host's pre-made ones land where it
    # writes them.
    if [ "$name" = flotilla-executor ]; then
      cp "$S/identity.pub" /var/lib/flotilla/executor/identity.pub
    fi
    echo "0123456789ab$RANDOM"; exit 0 ;;
  rm)
    shift; for a in "$@"; do case "$a" in -*) ;; *) rm -f "$S/c.$a" ;; esac; done; exit 0 ;;
  stop|kill)
    shift; for a in "$@"; do [ -f "$S/c.$a" ] && sed -i 2s/.*/false/ "$S/c.$a"; done; exit 0 ;;
  start)
    shift; for a in "$@"; do [ -f "$S/c.$a" ] || exit 1; sed -i 2s/.*/true/ "$S/c.$a"; done; exit 0 ;;
  rename) mv "$S/c.$2" "$S/c.$3"; exit 0 ;;
  ps|network|volume|logs) exit 0 ;;
  *) exit 0 ;;
esac
EOF

ssh-keygen -q -t ed25519 -N "" -C bootfan -f "$WORK/id_ed25519"
cp "$WORK/id_ed25519.pub" "$WORK/authorized_keys"
: > "$WORK/known_hosts"
: > "$WORK/ssh_config"
say "$HOSTS sshd-only hosts on 127.211.0.1-$HOSTS"
for i in $(seq 1 "$HOSTS"); do
  h="$WORK/h$i"; a=$(addr "$i")
  mkdir -p "$h/etc-flotilla" "$h/var-lib-flotilla" "$h/root" "$h/state" "$h/ident"
  ssh-keygen -q -t ed25519 -N "" -C "h$i" -f "$h/host_key"
  echo "$a $(cut -d' ' -f1-2 "$h/host_key.pub")" >> "$WORK/known_hosts"
  "$FLOTILLA" executor key --state-dir "$h/ident" >/dev/null
  cp "$h/ident/identity.pub" "$h/state/identity.pub"
  archive=""; [ "$i" = 1 ] && archive="$WORK/agent.tar"
  sed -e "s|@STATE@|$h/state|g" -e "s|@ARCHIVE@|$archive|g" "$WORK/docker_standin" > "$h/docker"
  chmod 755 "$h/docker"
  cat > "$h/sshd_config" <<EOF
ListenAddress $a:22
HostKey $h/host_key
AuthorizedKeysFile $WORK/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
EOF
  printf 'Host %s\n  HostName %s\n  User root\n  IdentityFile %s\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  BatchMode yes\n' \
    "$a" "$a" "$WORK/id_ed25519" "$WORK/known_hosts" >> "$WORK/ssh_config"
  unshare --mount --uts --propagation private sh -c "hostname h$i && \
    mount --bind $h/etc-flotilla /etc/flotilla && mount --bind $h/var-lib-flotilla /var/lib/flotilla && \
    mount --bind $h/root /root && for d in $DOCKERS; do mount --bind $h/docker \$d || exit 1; done && \
    exec /usr/sbin/sshd -D -e -f $h/sshd_config" 2> "$h/sshd.log" &
  PIDS+=($!)
done
for i in $(seq 1 "$HOSTS"); do
  for _ in $(seq 1 50); do
    ssh -F "$WORK/ssh_config" "$(addr "$i")" true 2>/dev/null && break
    sleep 0.2
  done || true
  ssh -F "$WORK/ssh_config" "$(addr "$i")" true || die "host $i ($(addr "$i")) did not answer"
done

mkdir -p "$WORK/p/config" "$WORK/p/.kamal"
hosts_yaml=$(for i in $(seq 1 "$HOSTS"); do echo "    - $(addr "$i")"; done)
cat > "$WORK/p/config/deploy.yml" <<EOF
service: bench
image: bench
servers:
  web:
$hosts_yaml
registry:
  server: registry.invalid
  username: bench
  password:
    - KAMAL_REGISTRY_PASSWORD
builder:
  arch: amd64
ssh:
  config:
    - $WORK/ssh_config
EOF
echo "KAMAL_REGISTRY_PASSWORD=unused" > "$WORK/p/.kamal/secrets"

# measure LABEL DIR CMD...: one line with wall, CPU and peak RSS of CMD (run in DIR); its
# output is kept in $WORK/LABEL's first word.log for the failure count.
measure() {
  local label=$1 dir=$2; shift 2
  local out="$WORK/time.out" log="$WORK/${label%%.*}.log"
  (cd "$dir" && /usr/bin/time -f '%e %U %S %M' -o "$out" "$@" >"$log" 2>&1) \
    || { tail -20 "$log" >&2; die "$label failed (output above)"; }
  read -r wall user sys rss < "$out"
  printf '%-66s wall %6.2f s  cpu %6.2f s  peak rss %4d MB  ssh errors %d\n' "$label" "$wall" \
    "$(echo "$user + $sys" | bc)" $((rss / 1024)) \
    "$(grep -ciE 'reset|refused|closed|broken pipe|timed out|kex_exchange' "$log")"
}

say "load before: $(cut -d' ' -f1-3 /proc/loadavg); CLI $(du -h "$FLOTILLA" | cut -f1) ($FLOTILLA)"
measure "1. flotilla server bootstrap, $HOSTS bare sshd-only hosts" "$WORK/p" \
  "$FLOTILLA" server bootstrap -q
measure "2. flotilla server bootstrap again (nothing to do)" "$WORK/p" \
  "$FLOTILLA" server bootstrap -q
loaded=$(ls "$WORK"/h*/state/image 2>/dev/null | wc -l)
[ "$loaded" = "$HOSTS" ] || die "only $loaded of $HOSTS hosts loaded the image"
[ -s "$WORK/agent.tar" ] || die "host 1 kept no archive"

# OpenSSH with the key exchange russh gets (its default sntrup761 costs 7x the client CPU:
# BENCHMARKS.md, ssh/), one process per host, all at once.
SSH="ssh -F $WORK/ssh_config -oKexAlgorithms=curve25519-sha256"
export SSH WORK
seq 1 "$HOSTS" | sed 's/^/127.211.0./' > "$WORK/hosts"
measure "3. floor of 1: OpenSSH streams $(du -h "$WORK/agent.tar" | cut -f1) into docker load x $HOSTS" "$WORK" \
  xargs -P "$HOSTS" -I{} sh -c '$SSH {} "docker load >/dev/null" < "$WORK/agent.tar"' < "$WORK/hosts"
measure "4. floor of 2: OpenSSH runs docker -v x $HOSTS" "$WORK" \
  xargs -P "$HOSTS" -I{} sh -c '$SSH {} "docker -v >/dev/null"' < "$WORK/hosts"

if [ -n "${KAMAL_DIR:-}" ]; then
  # As in bootstrap.sh: Kamal reads no ssh_config, so its key goes in `ssh.keys` and the
  # known hosts in a HOME of its own; Debian's concurrent-ruby gets Semaphore#acquire's block.
  mkdir -p "$WORK/kamal/config" "$WORK/kamal/home/.ssh"
  cp "$WORK/known_hosts" "$WORK/kamal/home/.ssh/known_hosts"
  cat > "$WORK/kamal/config/deploy.yml" <<EOF
service: bench
image: bench
servers:
  web:
$hosts_yaml
registry:
  server: registry.invalid
  username: bench
  password:
    - KAMAL_REGISTRY_PASSWORD
ssh:
  keys_only: true
  keys: [ "$WORK/id_ed25519" ]
EOF
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
  measure "5. kamal server bootstrap (1.9.3), $HOSTS hosts, Docker present" "$WORK/kamal" \
    env HOME="$WORK/kamal/home" KAMAL_REGISTRY_PASSWORD=unused \
    ruby -r./semaphore_block.rb -I"$KAMAL_DIR/lib" "$KAMAL_DIR/bin/kamal" server bootstrap --version bench
  made=$(ls -d "$WORK"/h*/root/.kamal 2>/dev/null | wc -l)
  say "kamal made .kamal on $made of $HOSTS hosts"
fi
say "sshd log lines with errors or resets: $(cat "$WORK"/h*/sshd.log | grep -ciE 'error|reset|refused|drop|penalty')"
say "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
