#!/usr/bin/env bash
# Benchmark: Flotilla's proxy vs nginx as a plain reverse proxy, side by side in one run,
# both in front of the same upstream, measured with wrk. Also reports the proxy's resident
# memory at idle (after start and one deploy, and after the load).
#
# Usage: [UPSTREAM=static|testapp] [EXTRA=0|1] [PINGORA=1|0] [ONLY="SCENARIO..."]
#        scripts/bench/proxy.sh [ROUNDS] [DURATION] [CONNECTIONS]
#   defaults: static upstream, 3 rounds, 15s per run, 64 connections; wrk uses 2 threads.
#   PINGORA=1 (default) adds a third contender: the same routing on Cloudflare's pingora-proxy
#   (bench/pingora-proto, built here as its own Cargo project with its own target dir, never a
#   workspace member); plain HTTP only, so it is left out of the TLS and HTTP/2 scenarios. If
#   it does not build, the build's error is printed and the run goes on without it.
#   PROFILE=DIR records each contender's samples during each extra scenario with
#   `perf record` (nginx's workers included) into DIR/SCENARIO-WHO.data (read with `perf report -i`).
#   ONLY limits the extra scenarios to those named (idle body-1MB clients-1000 clients-10000
#   https tls-new http2-tls), for development. Every figure printed comes with the load
#   average (`uptime`) it was taken at: on a shared machine only a quiet run decides.
#   EXTRA=1 (default) then measures, once per proxy and alternating, in the same run: a 1 MB
#   response body, 1,000 and 10,000 concurrent keep-alive clients, HTTPS with keep-alive,
#   new TLS handshakes (Connection: close), HTTP/2 over TLS (h2load), and the memory held by
#   1,000 and 10,000 idle keep-alive connections.
#   static:  a separate nginx worker answering `return 200` (fast, so the proxies are measured);
#   testapp: the test app (release build), whose small unbuffered writes without TCP_NODELAY
#            make it the bottleneck (delayed-ACK stalls), so both proxies measure the same.
# Needs: nginx and wrk (Debian packages `nginx`, `wrk`), python3, cargo; for EXTRA, openssl
# and h2load (`nghttp2-client`) and an open-file limit of 20,000; for PINGORA, cmake (zlib-ng).
# Traffic stays on 127.0.0.1. Every process it starts is stopped by pid on exit.
set -euo pipefail

ROUNDS=${1:-3}
DURATION=${2:-15s}
CONNS=${3:-64}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

EXTRA=${EXTRA:-1}
# Each proxy holds a descriptor per client and per upstream connection; where the hard limit
# cannot be raised (containers), 20,000 is the most the 10,000-client run gets.
[[ $EXTRA == 1 ]] && { ulimit -n 65536 2>/dev/null || ulimit -n 20000; }
for bin in nginx wrk python3 $([[ $EXTRA == 1 ]] && echo openssl h2load); do
  command -v "$bin" >/dev/null || { echo "bench: $bin missing (apt-get install -y ${bin/python3/python3})" >&2; exit 1; }
done

cargo build --release -q -p flotilla-proxy
PINGORA_BIN=
if [[ ${PINGORA:-1} == 1 ]]; then
  if (cd "$ROOT/bench/pingora-proto" && CARGO_TARGET_DIR="$ROOT/bench/pingora-proto/target" \
    cargo build --release -q) >"$ROOT/bench/pingora-proto/build.log" 2>&1; then
    PINGORA_BIN=$ROOT/bench/pingora-proto/target/release/pingora-proto
  else
    echo "bench: the pingora prototype did not build; going on without it:" >&2
    tail -20 "$ROOT/bench/pingora-proto/build.log" >&2
  fi
fi
load() { awk '{print "load " $1 " " $2 " " $3}' /proc/loadavg; }
echo "start: $(date -u +%FT%TZ), $(load), $(nproc) cores"
[[ ${UPSTREAM:-static} == testapp ]] && cargo build --release -q -p flotilla-testapp
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PROXY_BIN=$TARGET_DIR/release/flotilla-proxy
APP_BIN=$TARGET_DIR/release/flotilla-testapp

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listening on port $1" >&2; exit 1
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU time (clock ticks, "user system") of a process and its direct children (nginx's workers).
cpu_ticks() {
  local user=0 sys=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    user=$(( user + $(awk '{print $14}' "/proc/$pid/stat") ))
    sys=$(( sys + $(awk '{print $15}' "/proc/$pid/stat") ))
  done
  echo "$user $sys"
}
TICK_HZ=$(getconf CLK_TCK)

# The upstream.
APP_PORT=$(free_port)
if [[ ${UPSTREAM:-static} == testapp ]]; then
  PORT=$APP_PORT APP_VERSION=bench "$APP_BIN" >/dev/null &
  PIDS+=($!)
else
  mkdir -p "$WORK/upstream/tmp"
  head -c 1048576 /dev/zero >"$WORK/big.bin"
  cat >"$WORK/upstream/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon off;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $WORK/upstream/tmp/body;
  proxy_temp_path $WORK/upstream/tmp/proxy;
  fastcgi_temp_path $WORK/upstream/tmp/fastcgi;
  uwsgi_temp_path $WORK/upstream/tmp/uwsgi;
  scgi_temp_path $WORK/upstream/tmp/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$APP_PORT;
    location /up { return 200 "up\n"; }
    location = /big { alias $WORK/big.bin; default_type application/octet-stream; }
    location / { default_type text/plain; return 200 "bench\n"; }
  }
}
CONF
  nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" &
  PIDS+=($!)
fi
wait_port "$APP_PORT"

# One self-signed certificate for both proxies' HTTPS (clients connect to "localhost").
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,DNS:bench.test" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# Flotilla's proxy, with one service deployed through its admin socket.
FLOTILLA_PORT=$(free_port)
FLOTILLA_TLS_PORT=$(free_port)
RUST_LOG=warn "$PROXY_BIN" --http-port "127.0.0.1:$FLOTILLA_PORT" --https-port "127.0.0.1:$FLOTILLA_TLS_PORT" \
  --workers "${FLOTILLA_WORKERS:-0}" --max-connections 20000 --acme-directory off \
  --state-file "$WORK/state.json" --admin-socket "$WORK/admin.sock" 2>"$WORK/proxy.log" &
PROXY_PID=$!
PIDS+=($PROXY_PID)
wait_port "$FLOTILLA_PORT"
python3 - "$WORK/admin.sock" "$APP_PORT" "$WORK" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
tls = {"kind": "static", "cert_path": f"{sys.argv[3]}/cert.pem", "key_path": f"{sys.argv[3]}/key.pem"}
req = {"op": "deploy", "service": {"name": "bench", "target": f"127.0.0.1:{sys.argv[2]}", "hosts": ["bench.test", "localhost"], "tls": tls}}
s.sendall((json.dumps(req) + "\n").encode())
reply = s.makefile().readline()
assert '"deployed"' in reply, reply
PY

# nginx as a plain reverse proxy with upstream keep-alive, the usual production setup.
NGINX_PORT=$(free_port)
NGINX_TLS_PORT=$(free_port)
mkdir -p "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<CONF
user root;
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  upstream app { server 127.0.0.1:$APP_PORT; keepalive 256; keepalive_requests 1000000; }
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    # TLS 1.3 as Flotilla's proxy speaks it (nginx enables it by default only from 1.23.4; this
    # machine's 1.22 would otherwise resume wrk's sessions over TLS 1.2, without any key exchange).
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
CONF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_port "$NGINX_PORT"

# pingora-proxy with the same route (hosts bench.test and localhost to the upstream).
CONTENDERS=(flotilla nginx)
if [[ -n $PINGORA_BIN ]]; then
  PINGORA_PORT=$(free_port)
  RUST_LOG=error "$PINGORA_BIN" "127.0.0.1:$PINGORA_PORT" "127.0.0.1:$APP_PORT" "$(nproc)" bench.test localhost \
    >"$WORK/pingora.log" 2>&1 &
  PINGORA_PID=$!
  PIDS+=($PINGORA_PID)
  wait_port "$PINGORA_PORT"
  CONTENDERS+=(pingora)
fi
port_of() { case $1 in flotilla) echo "$FLOTILLA_PORT" ;; nginx) echo "$NGINX_PORT" ;; pingora) echo "$PINGORA_PORT" ;; esac; }
tls_port_of() { case $1 in flotilla) echo "$FLOTILLA_TLS_PORT" ;; nginx) echo "$NGINX_TLS_PORT" ;; esac; }
pid_of() { case $1 in flotilla) echo "$PROXY_PID" ;; nginx) echo "$NGINX_PID" ;; pingora) echo "$PINGORA_PID" ;; esac; }

curl_check() { python3 - "$1" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("GET", "/version", headers={"Host": "bench.test"})
r = c.getresponse(); body = r.read().decode().strip()
assert r.status == 200 and body == "bench", (r.status, body)
PY
}
for who in "${CONTENDERS[@]}"; do curl_check "$(port_of "$who")"; done

IDLE_RSS=$(rss_kb "$PROXY_PID")
echo "flotilla proxy RSS at idle after start and one deploy: ${IDLE_RSS} kB"

run_wrk() { # name port pid round
  local before after
  before=$(cpu_ticks "$3")
  wrk -t2 -c"$CONNS" -d"$DURATION" --latency -H 'Host: bench.test' "http://127.0.0.1:$2/version" >"$WORK/wrk-$1-$4.txt"
  after=$(cpu_ticks "$3")
  local rps p99 errors requests cpu_ms_per_k user_share
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk-$1-$4.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk-$1-$4.txt")
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk-$1-$4.txt")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/wrk-$1-$4.txt" | tr '\n' ' ')
  # The proxy's own CPU per 1000 requests: unlike req/s, not skewed by other load on the machine.
  read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
  cpu_ms_per_k=$(python3 -c "print(f'{(($u1 - $u0) + ($s1 - $s0)) * 1000 / $TICK_HZ / $requests * 1000:.1f}')")
  user_share=$(python3 -c "t = ($u1 - $u0) + ($s1 - $s0); print(f'{100 * ($u1 - $u0) / max(t, 1):.0f}%')")
  echo "$1 round $4: ${rps} req/s, p99 ${p99}, ${cpu_ms_per_k} CPU-ms per 1000 requests (${user_share} user) ${errors} [$(load)]"
  echo "$1 $4 $rps $p99 $cpu_ms_per_k" >>"$WORK/results.txt"
}

echo "warm-up (5s each, not counted)"
for who in "${CONTENDERS[@]}"; do
  wrk -t2 -c"$CONNS" -d5s -H 'Host: bench.test' "http://127.0.0.1:$(port_of "$who")/version" >/dev/null
done

# The contenders in turn, each round starting one further along (a rotation), so none always
# runs on a warmer or cooler machine.
touch "$WORK/results.txt"
for round in $(seq 1 "$ROUNDS"); do
  n=${#CONTENDERS[@]}
  for i in $(seq 0 $(( n - 1 ))); do
    who=${CONTENDERS[$(( (i + round - 1) % n ))]}
    run_wrk "$who" "$(port_of "$who")" "$(pid_of "$who")" "$round"
  done
done

AFTER_RSS=$(rss_kb "$PROXY_PID")
echo "flotilla proxy RSS at idle after the load: ${AFTER_RSS} kB"

[[ -s $WORK/results.txt ]] && python3 - "$WORK/results.txt" "$IDLE_RSS" "$AFTER_RSS" <<'PY'
import statistics, sys
def ms(v):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    raise ValueError(v)
rows = [l.split() for l in open(sys.argv[1])]
med = {}
names = [n for n in ("flotilla", "nginx", "pingora") if any(r[0] == n for r in rows)]
print("medians of the rounds, spread (min-max) in brackets:")
for name in names:
    rps = [float(r[2]) for r in rows if r[0] == name]
    p99 = [ms(r[3]) for r in rows if r[0] == name]
    cpu = [float(r[4]) for r in rows if r[0] == name]
    med[name] = (statistics.median(rps), statistics.median(p99), statistics.median(cpu))
    print(f"{name:9} {med[name][0]:8.0f} req/s ({min(rps):.0f}-{max(rps):.0f})   "
          f"p99 {med[name][1]:6.2f} ms ({min(p99):.2f}-{max(p99):.2f})   "
          f"{med[name][2]:5.1f} CPU-ms/1k req ({min(cpu):.1f}-{max(cpu):.1f})")
for name in names:
    if name == "nginx":
        continue
    print(f"{name}/nginx: requests/s {med[name][0] / med['nginx'][0]:.2f}x (goal >= 1.00x), "
          f"p99 {med[name][1] / med['nginx'][1]:.2f}x (goal <= 1.00x), "
          f"CPU per request {med[name][2] / med['nginx'][2]:.2f}x (goal <= 1.00x)")
print(f"idle RSS: {int(sys.argv[2]) / 1024:.1f} MiB after start+deploy, {int(sys.argv[3]) / 1024:.1f} MiB after load (goal < 20 MB)")
PY

[[ $EXTRA == 1 ]] || exit 0

# The other shapes of traffic, once per proxy in alternating order.
extra_run() { # scenario who pid command...
  local scenario=$1 who=$2 pid=$3 before after out
  shift 3
  out="$WORK/extra-$scenario-$who.txt"
  local perf_pid=
  if [[ -n ${PROFILE:-} ]]; then
    mkdir -p "$PROFILE"
    perf record -q -F 999 -p "$(pgrep -P "$pid" | tr '\n' , )$pid" -o "$PROFILE/$scenario-$who.data" -- sleep "${DURATION%s}" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  before=$(cpu_ticks "$pid")
  "$@" >"$out" 2>&1 || true
  after=$(cpu_ticks "$pid")
  [[ -z $perf_pid ]] || wait "$perf_pid" || true
  read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
  python3 - "$out" "$scenario" "$who" "$(( (u1 - u0) + (s1 - s0) ))" "$TICK_HZ" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
scenario, who, ticks, hz = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
m = re.search(r"Requests/sec:\s+([\d.]+)", text)
if m:  # wrk
    rps = float(m.group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    tail = f"p99 {p99.group(1) if p99 else '?'}"
    rate = re.search(r"Transfer/sec:\s+(\S+)", text)
    tail += f", {rate.group(1)}/s" if scenario == "body-1MB" and rate else ""
    errors = " ".join(l.strip() for l in text.splitlines() if "errors" in l or "Non-2xx" in l)
else:  # h2load
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", text)
    if not (m and done):
        print(f"{scenario:12} {who:9} failed: {text.strip()[-300:]}")
        sys.exit(0)
    rps, requests = float(m.group(1)), int(done.group(1))
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", text)
    tail = f"mean {mean.group(1) if mean else '?'}"
    errors = "" if done.group(1) == done.group(2) else f"{int(done.group(1)) - int(done.group(2))} failed"
cpu = ticks * 1000 / hz / max(requests, 1) * 1000
print(f"{scenario:12} {who:9} {rps:10.0f} req/s  {tail:24} {cpu:6.1f} CPU-ms/1k req {errors}")
PY
}
wanted() { [[ -z ${ONLY:-} || " $ONLY " == *" $1 "* ]]; }
# scenario NAME tls|plain COMMAND...: COMMAND once per contender, in turn, with {PORT}
# replaced by its plain or TLS port (contenders without TLS sit out TLS scenarios).
scenario() {
  local name=$1 kind=$2 who port arg
  shift 2
  wanted "$name" || return 0
  for who in "${CONTENDERS[@]}"; do
    if [[ $kind == tls ]]; then port=$(tls_port_of "$who"); else port=$(port_of "$who"); fi
    [[ -n $port ]] || continue
    local -a cmd=()
    for arg in "$@"; do cmd+=("${arg//\{PORT\}/$port}"); done
    extra_run "$name" "$who" "$(pid_of "$who")" "${cmd[@]}"
  done
  echo "             [$(load)]"
}
# Memory held by idle keep-alive connections (before the many-client runs grow the heaps):
# each client makes one request, then waits. nginx preallocates its connection structures
# (worker_connections), so only its per-connection buffers can show here.
cat >"$WORK/hold.py" <<'PY'
import os, socket, sys, time
port, count, release = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(b"GET /version HTTP/1.1\r\nHost: bench.test\r\n\r\n")
    got = b""
    while not got.endswith(b"bench\n"):
        got += s.recv(4096)
    held.append(s)
print("ready", flush=True)
while not os.path.exists(release):
    time.sleep(0.05)
PY
rss_all() { local total=0 pid; for pid in "$1" $(pgrep -P "$1" || true); do total=$(( total + $(rss_kb "$pid") )); done; echo "$total"; }
wanted idle && for c in 1000 10000; do
  for who in "${CONTENDERS[@]}"; do
    pid=$(pid_of "$who") port=$(port_of "$who")
    rm -f "$WORK/release"
    before=$(rss_all "$pid")
    python3 "$WORK/hold.py" "$port" "$c" "$WORK/release" >"$WORK/hold.out" 2>&1 &
    holder=$!
    for _ in $(seq 1 600); do grep -q ready "$WORK/hold.out" && break; sleep 0.1; done
    during=$(rss_all "$pid")
    touch "$WORK/release"; wait "$holder" || true
    echo "idle-$c      $who: RSS $(( before / 1024 )) MiB -> $(( during / 1024 )) MiB with $c idle keep-alive connections: $(( (during - before) * 1024 / c )) bytes each"
  done
done

H=(-H 'Host: bench.test')
echo "other traffic (one run each, $DURATION):"
scenario body-1MB plain wrk -t2 -c8 -d"$DURATION" --latency "${H[@]}" "http://127.0.0.1:{PORT}/big"
for c in 1000 10000; do
  scenario "clients-$c" plain wrk -t2 -c"$c" -d"$DURATION" --timeout 10s --latency "${H[@]}" "http://127.0.0.1:{PORT}/version"
done
scenario https tls wrk -t2 -c"$CONNS" -d"$DURATION" --latency "${H[@]}" "https://localhost:{PORT}/version"
scenario tls-new tls wrk -t2 -c"$CONNS" -d"$DURATION" --latency "${H[@]}" -H 'Connection: close' "https://localhost:{PORT}/version"
scenario http2-tls tls h2load -t2 -c"$CONNS" -m10 -D "${DURATION%s}" "https://localhost:{PORT}/version"
echo "end: $(date -u +%FT%TZ), $(load)"
