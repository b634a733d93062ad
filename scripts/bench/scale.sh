#!/usr/bin/env bash
# Benchmark: a real rollout over N simulated hosts (issue 7, "Scale, measured").
#
# Usage: scripts/bench/scale.sh [HOSTS [RUNS]]     e.g. scripts/bench/scale.sh 10,100,1000 3
# For each N: a real `nats-server -js` on loopback (temp store, random port), a real sled event
# log in a temp dir, N executors running the real NATS loop in one process against the
# simulated runtime (zero-latency steps), and one deploy per run through `Engine::run` with
# `boot.limit: 100`. Prints total time, heartbeat wait, rollout time, wall and scheduler CPU
# per host, log appends and events/s (medians of RUNS rollouts; per-run lines on stderr).
# Needs Debian's `nats-server`. Builds in release mode (the bench profile).
set -euo pipefail

HOSTS=${1:-10,100,1000}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

if ! command -v nats-server >/dev/null; then
  echo "scale.sh: nats-server not found: install the Debian package nats-server (apt-get install nats-server)" >&2
  exit 2
fi

FLOTILLA_BENCH_HOSTS=$HOSTS FLOTILLA_BENCH_RUNS=$RUNS \
  cargo bench -q -p flotilla-e2e --bench scale
