#!/usr/bin/env bash
# Benchmark: the executor's idle footprint and its per-step overhead over the raw Docker call.
#
# Usage: scripts/bench/executor.sh [IDLE_SECONDS]   (default 30)
# Brings up a one-host local fleet (needs root and what scripts/test installs), pushes the test
# app, then:
#   1. runs `flotilla executor run` (release build) against the host's engine and the fleet's
#      NATS, lets it settle, and reports its resident memory and CPU use while idle;
#   2. runs the step_overhead bench (release) against the same engine.
# Every process it starts is stopped by pid on exit; the fleet is taken down.
set -euo pipefail

IDLE=${1:-30}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

cargo build --release -q -p flotilla
cargo build -q -p flotilla-e2e --bin flotilla-fleet
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
FLOTILLA=$TARGET_DIR/release/flotilla
FLEET=$TARGET_DIR/debug/flotilla-fleet

WORK=$(mktemp -d)
EXEC_PID=
cleanup() {
  if [[ -n $EXEC_PID ]]; then kill "$EXEC_PID" 2>/dev/null || true; wait "$EXEC_PID" 2>/dev/null || true; fi
  "$FLEET" down exec-bench >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$FLEET" up 1 --name exec-bench >/dev/null
eval "$("$FLEET" env exec-bench)"
"$FLEET" push-app exec-bench v1 >/dev/null
IMAGE=$FLEET_REGISTRY/testapp:v1
SOCK=$FLEET_DIR/h1/docker.sock
KEY=$(cargo bench -q -p flotilla-executor --bench step_overhead -- keygen 2>/dev/null | tail -1)

NO_COLOR=1 "$FLOTILLA" executor run --host-id bench --nats "$FLEET_NATS_URL" --scheduler-key "$KEY" \
  --state-dir "$WORK/state" --docker-socket "$SOCK" --proxy-socket "$WORK/none.sock" \
  --config "$WORK/none.conf" >"$WORK/executor.log" 2>&1 &
EXEC_PID=$!
for _ in $(seq 1 100); do grep -q "waiting for jobs" "$WORK/executor.log" && break; sleep 0.1; done
grep -q "waiting for jobs" "$WORK/executor.log" || { cat "$WORK/executor.log" >&2; echo "bench: executor did not start" >&2; exit 1; }
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$EXEC_PID/stat"; }
T0=$(ticks)
sleep "$IDLE"
T1=$(ticks)
RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$EXEC_PID/status")
HZ=$(getconf CLK_TCK)
echo "executor idle: RSS ${RSS} kB; CPU $(( T1 - T0 )) ticks in ${IDLE}s = $(python3 -c "print(f'{($T1-$T0)/$HZ/$IDLE*100:.2f}')")% of one core (heartbeat every 5s)"

FLOTILLA_BENCH_DOCKER=$SOCK FLOTILLA_BENCH_IMAGE=$IMAGE cargo bench -q -p flotilla-executor --bench step_overhead
