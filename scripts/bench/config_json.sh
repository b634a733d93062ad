#!/usr/bin/env bash
# End-to-end time of `flotilla config --json` (process start to exit) on a project with
# 3 roles, 50 hosts and 3 accessories, secrets without command substitution.
# Usage: scripts/bench/config_json.sh [PATH_TO_FLOTILLA] [RUNS]
# Default binary: target/debug/flotilla (built if missing). Prints the median and p90 in ms,
# and the same for `flotilla version` (process start alone) measured interleaved.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/debug/flotilla}"
runs="${2:-200}"
if [[ ! -x "$bin" ]]; then cargo build -p flotilla; fi
bin="$(realpath "$bin")"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/config" "$dir/.kamal"
{
  printf 'service: shop\nimage: acme/shop\nregistry:\n  username: acme\n  password:\n    - KAMAL_REGISTRY_PASSWORD\n'
  printf 'env:\n  clear:\n    RAILS_ENV: production\n  secret:\n    - RAILS_MASTER_KEY\nproxy:\n  host: shop.example.com\nservers:\n'
  n=0
  for role in web:30 jobs:15 cron:5; do
    printf '  %s:\n    hosts:\n' "${role%%:*}"
    for _ in $(seq "${role##*:}"); do n=$((n + 1)); printf '      - 10.0.%d.%d\n' $((n / 200)) $((n % 200 + 1)); done
  done
  printf 'accessories:\n'
  for a in db cache search; do printf '  %s:\n    image: %s:1\n    host: 10.0.9.1\n' "$a" "$a"; done
} > "$dir/config/deploy.yml"
printf 'KAMAL_REGISTRY_PASSWORD=$REGISTRY_TOKEN\nRAILS_MASTER_KEY=abc\n' > "$dir/.kamal/secrets"
REGISTRY_TOKEN=tok python3 - "$bin" "$dir" "$runs" <<'PY'
import statistics, subprocess, sys, time
bin, cwd, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
subprocess.run([bin, "config", "--json"], cwd=cwd, check=True, capture_output=True)
# Interleaved with `flotilla version` (same binary, no config work), so machine load hits both.
times, base = [], []
for _ in range(runs):
    for args, out in ((["config", "--json"], times), (["version"], base)):
        t = time.perf_counter()
        subprocess.run([bin, *args], cwd=cwd, check=True, capture_output=True)
        out.append((time.perf_counter() - t) * 1000)
for name, xs in (("flotilla config --json", times), ("flotilla version (baseline)", base)):
    xs.sort()
    print(f"{name}: runs={runs} median={statistics.median(xs):.2f} ms p90={xs[int(runs * 0.9)]:.2f} ms min={xs[0]:.2f} ms")
PY
