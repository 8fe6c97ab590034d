#!/usr/bin/env bash
# L7 benchmark: keep-alive HTTP/1.1 requests per second through a reverse proxy to an nginx
# upstream (a process of its own) answering a small body, directly, through vane (resolver
# `http` -> application with `internal.driver.upstream`), through HAProxy (`mode http`, 2
# threads) and through nginx (`proxy_pass` with upstream keep-alive, 1 worker), in one run.
# Then, with wrk (requests/s, per CPU-second of the proxy and the 99th percentile latency,
# against HAProxy with 2 threads and 1, nginx with 1 worker and 2, and the best; vane also with
# DATA_PLANE_PIN=true) and h2load: a new
# connection per request, 1 MiB responses, TLS-terminated HTTP/1.1 (keep-alive and a new
# handshake per request) and HTTP/2 over TLS, all three proxies with one ECDSA P-256
# certificate, all on TLS 1.3; then TLS handshakes one at a time with openssl s_time, full
# (-new) and resumed (-reuse), on TLS 1.3 and again on TLS 1.2 (-tls1_2), whose resumption
# skips the key exchange. HAProxy and nginx resume from their session caches, vane from its
# tickets. wrk
# offers each connection's session again on the next one, so its new-handshake row is
# resumed handshakes (h2load does not resume).
#
#   bench/l7.sh             # SECS=5 CLIENTS=32
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
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
# nginx as the proxy: one worker (every row), and two (the keep-alive row).
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
# HAProxy with one thread (the keep-alive row): the best of one and two threads is the mark.
HP1=$(port)
{ HAPROXY_THREADS=1 haproxy_head http; cat <<CFG; } > "$TMP/haproxy1.cfg"
  option http-keep-alive
frontend f
  bind 127.0.0.1:$HP1
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$UP
CFG
start_haproxy haproxy1
HAPID1=$HPID; HPID=$HAPID2
wait_port "$UP"; wait_port "$NP"; wait_port "$VP"; wait_port "$HP"
wait_port "$NT"; wait_port "$VT"; wait_port "$HT"; wait_port "$NP2"; wait_port "$HP1"; wait_port "$VPP"
for p in "$VT" "$HT" "$NT"; do serves_cert "$p" "$TMP/bench.crt"; done

{
  echo "== keep-alive HTTP/1.1 requests per second (${SECS}s, ${CLIENTS} connections)"
  D=$("$LOAD" "127.0.0.1:$UP" "$SECS" "$CLIENTS" /); echo "direct  $D"
  V=$("$LOAD" "127.0.0.1:$VP" "$SECS" "$CLIENTS" /); echo "vane    $V"
  H=$("$LOAD" "127.0.0.1:$HP" "$SECS" "$CLIENTS" /); echo "haproxy $H"
  N=$("$LOAD" "127.0.0.1:$NP" "$SECS" "$CLIENTS" /); echo "nginx   $N"
  python3 -c "print(f'ratios: vane/haproxy {$V/$H:.2f}  vane/nginx {$V/$N:.2f}  vane/direct {$V/$D:.2f}')"
  # Independent clients: wrk (HTTP/1.1 keep-alive) and h2load (h2c, prior knowledge).
  # Requests per second and the 99th percentile latency in milliseconds.
  wrk_rps() {
    wrk -t2 -c50 -d"${SECS}s" --latency "http://127.0.0.1:$1/" | python3 -c '
import re, sys
text = sys.stdin.read()
rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
print(rps, float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit])'
  }
  # CPU seconds (user + system) a process tree has used so far.
  cpu_s() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/"$p"/stat))); done; echo "$t / $(getconf CLK_TCK)" | bc -l; }
  # Requests per second and per CPU-second of the proxy, with wrk.
  wrk_eff() {
    local port=$1; shift
    local c0 c1 r p99
    c0=$(cpu_s "$@"); read -r r p99 <<< "$(wrk_rps "$port")"; c1=$(cpu_s "$@")
    python3 -c "print(f'{$r:.0f} {$r*$SECS/max($c1-$c0,1e-9):.0f} {$p99:.2f}')"
  }
  h2_rps() { h2load -c10 -m10 -D "$SECS" "http://127.0.0.1:$1/" 2>/dev/null | awk '/^finished in/{print $4}'; }
  h2_rps_tls() { h2load -c10 -m10 -D "$SECS" "https://127.0.0.1:$1/" 2>/dev/null | awk '/^finished in/{print $4}'; }
  echo "== wrk -t2 -c50: requests per second, requests per CPU-second of the proxy, p99 latency"
  # Against each of HAProxy (2 threads, 1 thread) and nginx (1 worker, 2 workers), and the
  # best of the four in each column (most requests, most per CPU-second, lowest p99).
  NGX=$(pgrep -P "$NGPID" | tr '\n' ' '); NGX2=$(pgrep -P "$NG2PID" | tr '\n' ' ')
  {
    echo "vane $(wrk_eff "$VP" "$VPID")"
    echo "vane-pin $(wrk_eff "$VPP" "$VPPID")"
    echo "haproxy $(wrk_eff "$HP" "$HPID")"
    echo "haproxy-1t $(wrk_eff "$HP1" "$HAPID1")"
    echo "nginx $(wrk_eff "$NP" $NGX)"
    echo "nginx-2w $(wrk_eff "$NP2" $NGX2)"
  } > "$TMP/ka"
  python3 - "$TMP/ka" <<'PY'
import sys
rows = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in open(sys.argv[1])}
for k, (r, e, l) in rows.items():
    print(f"{k} {r:.0f} ({e:.0f}/cpu-s, p99 {l:.2f} ms)")
ours = {k: rows.pop(k) for k in ("vane", "vane-pin")}
best = lambda i, f: f(rows.items(), key=lambda kv: kv[1][i])
(rn, r), (en, e), (ln, l) = best(0, max), best(1, max), best(2, min)
for name, v in ours.items():
    for k in ("haproxy", "nginx"):
        o = rows[k]
        print(f"ratios: {name}/{k} {v[0]/o[0]:.2f} (per cpu {v[1]/o[1]:.2f}, p99 {v[2]/o[2]:.2f})")
    print(f"ratios: {name}/best {v[0]/r[0]:.2f} ({rn}), per cpu {v[1]/e[1]:.2f} ({en}), p99 {v[2]/l[2]:.2f} ({ln})")
PY
  # nginx is left out: its plaintext HTTP/2 (nginx-light 1.22) answers h2load at a fixed
  # 2500 requests/s here, which says nothing about proxying.
  echo "== h2load -c10 -m10 (h2c prior knowledge), requests per second"
  HV=$(h2_rps "$VP"); HH=$(h2_rps "$HP2")
  echo "vane $HV  haproxy $HH"
  python3 -c "print(f'ratios: vane/haproxy {$HV/$HH:.2f}')"
  # wrk's figures for one URL and extra arguments: requests/s and transfer MB/s.
  wrk_run() {
    wrk "$@" -d"${SECS}s" | python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", t).group(1))
m = re.search(r"Transfer/sec:\s*([\d.]+)(\w+)", t)
scale = {"B": 1e-6, "KB": 1e-3, "MB": 1, "GB": 1e3}.get(m.group(2), 1) if m else 0
print(f"{rps:.0f} {float(m.group(1)) * scale if m else 0:.1f}")'
  }
  row() {  # title, column (1 = req/s, 2 = MB/s), then wrk arguments with PORT and SCHEME
    local title=$1 col=$2; shift 2
    local v h n args
    echo "== $title"
    for who in vane haproxy nginx; do
      case $who in
        vane) p=$VP; tp=$VT ;; haproxy) p=$HP; tp=$HT ;; nginx) p=$NP; tp=$NT ;;
      esac
      args=("${@//TPORT/$tp}"); args=("${args[@]//PORT/$p}")
      read -r r m <<< "$(wrk_run "${args[@]}")"
      [ "$col" = 1 ] && echo "$who $r" || echo "$who $m"
    done | tee "$TMP/row"
    python3 - "$TMP/row" <<'PY'
import sys
v = dict(l.split() for l in open(sys.argv[1]))
v = {k: float(x) for k, x in v.items()}
print(f"ratios: vane/haproxy {v['vane']/v['haproxy']:.2f}  vane/nginx {v['vane']/v['nginx']:.2f}")
PY
  }
  row "new connection per request (wrk -t2 -c50, Connection: close), requests per second" 1 \
    -t2 -c50 -H "Connection: close" "http://127.0.0.1:PORT/"
  row "1 MiB responses (wrk -t2 -c10), MB/s" 2 -t2 -c10 "http://127.0.0.1:PORT/big"
  row "TLS-terminated HTTP/1.1 keep-alive (wrk -t2 -c50), requests per second" 1 \
    -t2 -c50 "https://127.0.0.1:TPORT/"
  row "TLS: a new connection per request, the session resumed (wrk -t2 -c50, Connection: close), handshakes per second" 1 \
    -t2 -c50 -H "Connection: close" "https://127.0.0.1:TPORT/"
  echo "== HTTP/2 over TLS (h2load -c10 -m10), requests per second"
  HV=$(h2_rps_tls "$VT"); HH=$(h2_rps_tls "$HT")
  echo "vane $HV  haproxy $HH"
  python3 -c "print(f'ratios: vane/haproxy {$HV/$HH:.2f}')"
  # Connections per second of wall clock: s_time reports whole seconds only.
  stime() {
    local t0 t1 n
    t0=$(date +%s.%N)
    n=$(openssl s_time -connect "127.0.0.1:$1" -www / $2 -time "$SECS" 2>/dev/null \
      | awk '/connections in .* real seconds/ {print $1}')
    t1=$(date +%s.%N)
    python3 -c "print(f'{${n:-0} / ($t1 - $t0):.0f}')"
  }
  for mode in -new -reuse "-new -tls1_2" "-reuse -tls1_2"; do
    echo "== TLS handshakes one at a time (openssl s_time $mode, GET / on each), connections per second"
    SV=$(stime "$VT" "$mode"); SH=$(stime "$HT" "$mode"); SN=$(stime "$NT" "$mode")
    echo "vane $SV  haproxy $SH  nginx $SN"
    python3 -c "r = lambda a, b: f'{a / b:.2f}' if b else 'n/a'; print(f'ratios: vane/haproxy {r($SV, $SH)}  vane/nginx {r($SV, $SN)}')"
  done
  echo "date: $(date -u +%FT%TZ)"
} | tee "$OUT/l7-$(date -u +%Y%m%dT%H%M%SZ).txt"
