#!/usr/bin/env bash
# L7 benchmark: keep-alive HTTP/1.1 requests per second through a reverse proxy to an nginx
# upstream (a process of its own) answering a small body, directly, through vane (resolver
# `http` -> application with `internal.driver.upstream`), through HAProxy (`mode http`, 2
# threads) and through nginx (`proxy_pass` with upstream keep-alive, 1 worker), in one run.
# Then, with wrk (requests/s, per CPU-second of the proxy and the 99th percentile latency,
# against HAProxy with 2 threads and 1, nginx with 1 worker and 2, and the best; vane also with
# DATA_PLANE_PIN=true) and h2load: a new
# connection per request (against the same four and the best), 1 MiB responses, TLS-terminated HTTP/1.1 (keep-alive and a new
# handshake per request) and HTTP/2 over TLS, all three proxies with one ECDSA P-256
# certificate, all on TLS 1.3; then TLS handshakes one at a time with openssl s_time, full
# (-new) and resumed (-reuse), on TLS 1.3 and again on TLS 1.2 (-tls1_2), whose resumption
# skips the key exchange. HAProxy and nginx resume from their session caches, vane from its
# tickets. wrk
# offers each connection's session again on the next one, so its new-handshake row is
# resumed handshakes (h2load does not resume).
# Every row is measured in REPS interleaved rounds (each round another proxy goes first), and
# the report gives each proxy's median with the rounds' values beside it
# (bench/l7_summary.py).
#
#   bench/l7.sh             # SECS=5 CLIENTS=32 REPS=3
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-32}
source bench/lib.sh
ensure_tools "haproxy nginx" haproxy nginx-light
ensure_tools "wrk h2load" wrk nghttp2-client
cargo build --release -q --example http_load
VANE=$(vane_binary)
LOAD="$CARGO_TARGET_DIR/release/examples/http_load"

UP=$(port); NP=$(port); NT=$(port); NP2=$(port)
bench_pair
start_upstream "$UP"
# nginx as the proxy: one worker (every row), and two (the keep-alive and new-connection rows).
{ nginx_head 4096; nginx_proxy bench "listen 127.0.0.1:$NP; listen 127.0.0.1:$NT ssl;"; } > "$TMP/nginx.conf"
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 & NGPID=$!; PIDS+=("$NGPID")
{ NGINX_NAME=nginx2 NGINX_WORKERS=2 nginx_head 4096; nginx_proxy bench2 "listen 127.0.0.1:$NP2;"; } > "$TMP/nginx2.conf"
nginx -c "$TMP/nginx2.conf" -g 'daemon off;' > "$TMP/nginx2.log" 2>&1 & NG2PID=$!; PIDS+=("$NG2PID")

VP=$(port); VT=$(port)
vane_http_proxy_config "$VP" "$UP"
# The same plain listener in a second vane with its data-plane threads bound to a CPU each
# (DATA_PLANE_PIN=true, for a machine that serves the gateway alone): the keep-alive row.
VPP=$(port)
cp -r "$TMP/vane" "$TMP/vane-pin"
mv "$TMP/vane-pin/listener/[$VP]" "$TMP/vane-pin/listener/[$VPP]"
vane_tls_port "$VT" "$TMP/bench.key" "$TMP/bench.crt"
VANE_DIR=vane-pin start_vane DATA_PLANE_PIN=true
VPPID=$VPID
start_vane

HP=$(port); HP2=$(port); HT=$(port)
haproxy_proxy_config "$HP" "$HP2" "$HT" "$UP"
start_haproxy
HAPID2=$HPID
# HAProxy with one thread (the keep-alive and new-connection rows): the best of one and two
# threads is the mark.
HP1=$(port)
HAPROXY_THREADS=1 haproxy_http_config "$HP1" > "$TMP/haproxy1.cfg"
start_haproxy haproxy1
HAPID1=$HPID; HPID=$HAPID2
wait_port "$UP"; wait_port "$NP"; wait_port "$VP"; wait_port "$HP"
wait_port "$NT"; wait_port "$VT"; wait_port "$HT"; wait_port "$NP2"; wait_port "$HP1"; wait_port "$VPP"
for p in "$VT" "$HT" "$NT"; do serves_cert "$p" "$TMP/bench.crt"; done

NGX=$(pgrep -P "$NGPID" | tr '\n' ' '); NGX2=$(pgrep -P "$NG2PID" | tr '\n' ' ')
declare -A PORT=([direct]=$UP [vane]=$VP [vane-pin]=$VPP [haproxy]=$HP [haproxy-1t]=$HP1 [nginx]=$NP [nginx-2w]=$NP2)
declare -A TLS_PORT=([vane]=$VT [haproxy]=$HT [nginx]=$NT)
declare -A H2C_PORT=([vane]=$VP [haproxy]=$HP2)
declare -A PROCS=([vane]=$VPID [vane-pin]=$VPPID [haproxy]=$HPID [haproxy-1t]=$HAPID1 [nginx]="$NGX" [nginx-2w]="$NGX2")

# wrk -t2 -c50 keep-alive: requests per second and the 99th percentile latency in ms.
wrk_rps() {
  wrk -t2 -c50 -d"${SECS}s" --latency "http://127.0.0.1:$1/" | python3 -c '
import re, sys
text = sys.stdin.read()
rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
print(rps, float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit])'
}
# Clock ticks of user and of system time a set of processes has used so far.
cpu_ticks() { local u=0 s=0 a b; for p in "$@"; do read -r a b < <(awk '{print $14, $15}' /proc/"$p"/stat); u=$((u + a)); s=$((s + b)); done; echo "$u $s"; }
# Clock ticks every CPU of the machine has been busy so far (all processes and the kernel;
# not the time the hypervisor took).
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# Requests per second, per CPU-second of the proxy, p99, then per request: the proxy's user
# and system CPU and the whole machine's (client, upstream, proxy, kernel) in µs. The machine
# is saturated, so its CPU per request sets the rate; the proxy's user time is the part of it
# that code of the proxy's own runs.
wrk_eff() {
  local port=$1; shift
  local u0 s0 u1 s1 m0 m1 r p99
  read -r u0 s0 <<< "$(cpu_ticks "$@")"; m0=$(busy_ticks)
  read -r r p99 <<< "$(wrk_rps "$port")"
  read -r u1 s1 <<< "$(cpu_ticks "$@")"; m1=$(busy_ticks)
  python3 -c "
hz, n = $(getconf CLK_TCK), max($r * $SECS, 1)
us = lambda t: t / hz / n * 1e6
print(f'{$r:.0f} {n / max(($u1 + $s1 - $u0 - $s0) / hz, 1e-9):.0f} {$p99:.2f} '
      f'{us($u1 - $u0):.2f} {us($s1 - $s0):.2f} {us($m1 - $m0):.2f}')"
}
h2_rps() { h2load -c10 -m10 -D "$SECS" "$1" 2>/dev/null | awk '/^finished in/{printf "%.0f\n", $4}'; }
# wrk's requests/s and transfer MB/s for some arguments.
wrk_run() {
  wrk "$@" -d"${SECS}s" | python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", t).group(1))
m = re.search(r"Transfer/sec:\s*([\d.]+)(\w+)", t)
scale = {"B": 1e-6, "KB": 1e-3, "MB": 1, "GB": 1e3}.get(m.group(2), 1) if m else 0
print(f"{rps:.0f} {float(m.group(1)) * scale if m else 0:.1f}")'
}
# Connections per second of wall clock (s_time reports whole seconds only).
stime() {
  local t0 t1 n
  t0=$(date +%s.%N)
  n=$(openssl s_time -connect "127.0.0.1:$1" -www / $2 -time "$SECS" 2>/dev/null \
    | awk '/connections in .* real seconds/ {print $1}')
  t1=$(date +%s.%N)
  python3 -c "print(f'{${n:-0} / ($t1 - $t0):.0f}')"
}
# The names rotated by $1: each round another proxy goes first, so none always meets the
# machine fresh.
rotate() { local k=$1; shift; local a=("$@") i; for i in "${!a[@]}"; do echo "${a[$(((i + k) % $#))]}"; done; }

# Every measure, one line each: round, row, proxy, values.
RES="$TMP/results"; : > "$RES"
rec() { echo "$*" | tee -a "$RES" >&2; }
for round in $(seq 1 "$REPS"); do
  k=$((round - 1))
  for w in $(rotate $k direct vane haproxy nginx); do
    rec "$round own $w $("$LOAD" "127.0.0.1:${PORT[$w]}" "$SECS" "$CLIENTS" /)"
  done
  for w in $(rotate $k vane vane-pin haproxy haproxy-1t nginx nginx-2w); do
    # shellcheck disable=SC2086
    rec "$round ka $w $(wrk_eff "${PORT[$w]}" ${PROCS[$w]})"
  done
  for w in $(rotate $k vane haproxy); do
    rec "$round h2c $w $(h2_rps "http://127.0.0.1:${H2C_PORT[$w]}/")"
  done
  # The issue's mark for new connections is the best of the four, as for keep-alive.
  for w in $(rotate $k vane haproxy haproxy-1t nginx nginx-2w); do
    rec "$round close $w $(wrk_run -t2 -c50 -H "Connection: close" "http://127.0.0.1:${PORT[$w]}/" | cut -d' ' -f1)"
  done
  for w in $(rotate $k vane haproxy nginx); do
    p=${PORT[$w]} t=${TLS_PORT[$w]}
    rec "$round big $w $(wrk_run -t2 -c10 "http://127.0.0.1:$p/big" | cut -d' ' -f2)"
    rec "$round tls_ka $w $(wrk_run -t2 -c50 "https://127.0.0.1:$t/" | cut -d' ' -f1)"
    rec "$round tls_new $w $(wrk_run -t2 -c50 -H "Connection: close" "https://127.0.0.1:$t/" | cut -d' ' -f1)"
  done
  for w in $(rotate $k vane haproxy); do
    rec "$round h2_tls $w $(h2_rps "https://127.0.0.1:${TLS_PORT[$w]}/")"
  done
  for w in $(rotate $k vane haproxy nginx); do
    t=${TLS_PORT[$w]}
    rec "$round s13_new $w $(stime "$t" -new)"
    rec "$round s13_reuse $w $(stime "$t" -reuse)"
    rec "$round s12_new $w $(stime "$t" "-new -tls1_2")"
    rec "$round s12_reuse $w $(stime "$t" "-reuse -tls1_2")"
  done
done
{
  python3 bench/l7_summary.py "$RES" "$SECS" "$CLIENTS"
  echo "date: $(date -u +%FT%TZ)"
} | tee "$OUT/l7-$(date -u +%Y%m%dT%H%M%SZ).txt"
