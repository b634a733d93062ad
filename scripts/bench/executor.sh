#!/usr/bin/env bash
# Benchmark: the executor's idle footprint and its per-step overhead over the raw Docker call.
#
# Usage: scripts/bench/executor.sh [IDLE_SECONDS]   (default 30)
# Brings up a one-host local fleet (needs root and what scripts/test installs), pushes the test
# app, then:
#   1. sets the host up with `flotilla server bootstrap` (static release build: the executor
#      and proxy as containers, NATS beside them), lets the executor settle, and reports its
#      resident memory and CPU use while idle (its container's process, by pid);
#   2. runs the step_overhead bench (release) against the same engine.
# The fleet is taken down on exit, with everything bootstrap started.
set -euo pipefail

IDLE=${1:-30}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

# Static: the agents' image is built from flotilla's own binary.
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -q -p flotilla --target x86_64-unknown-linux-gnu
cargo build -q -p flotilla-e2e --bin flotilla-fleet
bash -c 'source scripts/lib.sh; ensure_nats_server_bin'
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
FLOTILLA=$TARGET_DIR/x86_64-unknown-linux-gnu/release/flotilla
FLEET=$TARGET_DIR/debug/flotilla-fleet

WORK=$(mktemp -d)
cleanup() {
  "$FLEET" down exec-bench >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$FLEET" up 1 --name exec-bench >/dev/null
eval "$("$FLEET" env exec-bench)"
"$FLEET" push-app exec-bench v1 >/dev/null
IMAGE=$FLEET_REGISTRY/testapp:v1
SOCK=$FLEET_DIR/h1/docker.sock
NATS_IMAGE=$("$FLEET" push-nats exec-bench)
mkdir -p "$WORK/config" "$WORK/.kamal"
cat > "$WORK/config/deploy.yml" <<YAML
service: bench
image: bench
servers:
  web:
    - $FLEET_HOSTS
registry:
  server: $FLEET_REGISTRY
  username: bench
  password:
    - KAMAL_REGISTRY_PASSWORD
ssh:
  config:
    - $FLEET_SSH_CONFIG
x-flotilla:
  nats:
    image: $NATS_IMAGE
YAML
echo "KAMAL_REGISTRY_PASSWORD=unused" > "$WORK/.kamal/secrets"
(cd "$WORK" && NO_COLOR=1 "$FLOTILLA" server bootstrap -q >/dev/null)
executor_log() { DOCKER_HOST="unix://$SOCK" docker logs flotilla-executor 2>&1; }
for _ in $(seq 1 100); do executor_log | grep -q "waiting for jobs" && break; sleep 0.1; done
executor_log | grep -q "waiting for jobs" || { executor_log >&2; echo "bench: executor did not start" >&2; exit 1; }
EXEC_PID=$(DOCKER_HOST="unix://$SOCK" docker inspect -f '{{.State.Pid}}' flotilla-executor)
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$EXEC_PID/stat"; }
T0=$(ticks)
sleep "$IDLE"
T1=$(ticks)
RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$EXEC_PID/status")
HZ=$(getconf CLK_TCK)
echo "executor idle: RSS ${RSS} kB; CPU $(( T1 - T0 )) ticks in ${IDLE}s = $(python3 -c "print(f'{($T1-$T0)/$HZ/$IDLE*100:.2f}')")% of one core (heartbeat every 5s)"

FLOTILLA_BENCH_DOCKER=$SOCK FLOTILLA_BENCH_IMAGE=$IMAGE cargo bench -q -p flotilla-executor --bench step_overhead
