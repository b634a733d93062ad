#!/usr/bin/env bash
# Benchmark: a real 3-host `flotilla deploy` against its physical floor (issue 7, item 6).
#
# Usage: scripts/bench/scale_floor.sh [ROUNDS]      (default 3; needs root, like scripts/demo)
# Brings up a local 3-host fleet (own name, removed on exit), sets its bare hosts up with
# `flotilla server bootstrap` (the agents as containers, NATS on the first host), deploys v1 to
# warm up, then per round, interleaved:
#   deploy: wall time of `flotilla deploy -P --version vN` (image already in the registry);
#   floor:  on all 3 hosts at once, with plain docker, the next unseen version: `docker pull`,
#           `docker run -d --network kamal`, then GET /up from the host's network namespace
#           every 10 ms until 200; the floor is the slowest host's time.
# Prints each round and the medians, and the ratio deploy / floor.
source "$(dirname "$0")/../lib.sh"
require_root
cd "$ROOT"
ROUNDS=${1:-3}
NAME=floor

# Static: the agents' image is built from flotilla's own binary.
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -q -p flotilla --target x86_64-unknown-linux-gnu
cargo build -q -p flotilla-e2e --bin flotilla-fleet
ensure_nats_server_bin
fleet="$(cargo_bin flotilla-fleet)"
flotilla="${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/release/flotilla"
project=$(mktemp -d)
cleanup() { "$fleet" down "$NAME" >/dev/null 2>&1 || true; rm -rf "$project"; }
trap cleanup EXIT

"$fleet" up 3 --name "$NAME" >/dev/null
eval "$("$fleet" env "$NAME")"
nats_image="$("$fleet" push-nats "$NAME")"
last=$((2 * ROUNDS + 1))
for v in $(seq 1 "$last"); do "$fleet" push-app "$NAME" "v$v" >/dev/null; done

mkdir -p "$project/config" "$project/.kamal"
{
  echo "service: testapp"
  echo "image: testapp"
  echo "servers:"
  echo "  web:"
  for h in $FLEET_HOSTS; do echo "    - $h"; done
  cat <<YAML
proxy:
  app_port: 80
  healthcheck:
    path: /up
    interval: 1
registry:
  server: $FLEET_REGISTRY
  username: bench
  password:
    - KAMAL_REGISTRY_PASSWORD
deploy_timeout: 20
drain_timeout: 5
readiness_delay: 0
ssh:
  config:
    - $FLEET_SSH_CONFIG
x-flotilla:
  nats:
    image: $nats_image
YAML
} > "$project/config/deploy.yml"
echo "KAMAL_REGISTRY_PASSWORD=unused" > "$project/.kamal/secrets"
cd "$project"
git init -q . # the project is a git repository, as Kamal's are
NO_COLOR=1 "$flotilla" server bootstrap -q >/dev/null
NO_COLOR=1 "$flotilla" deploy -P --version v1 -q >/dev/null

now_ms() { date +%s%3N; }

# floor_host INDEX ADDR VERSION: pull + run + first healthy response on one host, in ms. The
# container joins the `kamal` network like the deploy's, and /up is asked from inside the
# host's network namespace, as the host's proxy asks it (no published port).
floor_host() {
  local sock="$FLEET_DIR/h$1/docker.sock" ns t0 t1 t2 t3 t4 ip
  ns="flt$(echo "$2" | cut -d. -f3)h$1"
  t0=$(now_ms)
  DOCKER_HOST="unix://$sock" docker pull -q "$FLEET_REGISTRY/testapp:$3" >/dev/null
  t1=$(now_ms)
  DOCKER_HOST="unix://$sock" docker run -d --name "floor-$3" --network kamal "$FLEET_REGISTRY/testapp:$3" >/dev/null
  t2=$(now_ms)
  ip=$(DOCKER_HOST="unix://$sock" docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "floor-$3")
  t3=$(now_ms)
  until ip netns exec "$ns" curl -fsS -o /dev/null --max-time 1 "http://$ip/up" 2>/dev/null; do sleep 0.01; done
  t4=$(now_ms)
  DOCKER_HOST="unix://$sock" docker rm -f "floor-$3" >/dev/null
  echo "$((t4 - t0)) $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) $((t4 - t3))"
}

deploys=()
floors=()
v=2
for r in $(seq 1 "$ROUNDS"); do
  t0=$(now_ms)
  NO_COLOR=1 "$flotilla" deploy -P --version "v$v" -q >/dev/null 2>"$project/deploy.err"
  deploy=$(( $(now_ms) - t0 ))
  cat "$project/deploy.err" >&2
  v=$((v + 1))
  i=0
  pids=()
  for h in $FLEET_HOSTS; do
    i=$((i + 1))
    floor_host "$i" "$h" "v$v" > "$project/floor-$i" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  floor=$(cut -d' ' -f1 "$project"/floor-* | sort -n | tail -1)
  v=$((v + 1))
  echo "round $r: deploy ${deploy} ms, floor ${floor} ms (per host total/pull/run/inspect/health: $(sed 's| |/|g' "$project"/floor-* | tr '\n' ' '))"
  deploys+=("$deploy")
  floors+=("$floor")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
md=$(median "${deploys[@]}")
mf=$(median "${floors[@]}")
echo "median: deploy ${md} ms, floor ${mf} ms, ratio $(awk -v d="$md" -v f="$mf" 'BEGIN {printf "%.2f", d / f}')x (goal < 1.3x)"
# Where the last deploy's time went, per host and step, from the event log.
id=$(grep -o 'deploy [0-9A-Z]\{26\}' "$project/deploy.err" | tail -1 | cut -d' ' -f2)
[ -n "$id" ] && NO_COLOR=1 "$flotilla" replay "$id"
