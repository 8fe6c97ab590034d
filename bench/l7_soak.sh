#!/usr/bin/env bash
# Memory over a long run. Each proxy in turn (vane, HAProxy with 2 threads, nginx with 1
# worker) carries MINUTES of mixed traffic to an nginx upstream while its RSS is sampled every
# 5 s. The mix runs at once:
#   - HTTP/1.1 keep-alive, every request with a path, query and Host never seen before
#     (wrk with bench/soak_unique.lua);
#   - a new connection per request (wrk, `Connection: close`);
#   - h2c, prior knowledge (h2load; not nginx, whose plaintext HTTP/2 is not a proxy's);
#   - a new TLS connection per request (wrk, full handshakes and resumed ones);
#   - 1 MiB responses (wrk).
# Per proxy: RSS at start, after the first minute, at the end, the peak, the slope over the
# second half (MB per hour, least squares), the requests served, and RSS 30 s after the load
# stops. A gateway runs for months: what counts is that the slope is flat and that memory
# goes back down once the load is gone.
#
#   bench/l7_soak.sh             # MINUTES=3
#   VANE_BIN=path/to/vane MINUTES=10 bench/l7_soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-3}
source bench/lib.sh
ensure_tools "haproxy nginx" haproxy nginx-light
ensure_tools "wrk h2load" wrk nghttp2-client
VANE=$(vane_binary)

UP=$(port); NP=$(port); NT=$(port)
bench_pair
start_upstream "$UP"
{ nginx_head 4096; nginx_proxy soak "listen 127.0.0.1:$NP; listen 127.0.0.1:$NT ssl;"; } > "$TMP/nginx.conf"
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 & NGPID=$!; PIDS+=("$NGPID")

VP=$(port); VT=$(port)
vane_http_proxy_config "$VP" "$UP"
vane_tls_port "$VT" "$TMP/bench.key" "$TMP/bench.crt"
start_vane

HP=$(port); HP2=$(port); HT=$(port)
haproxy_proxy_config "$HP" "$HP2" "$HT" "$UP"
start_haproxy
for p in "$UP" "$NP" "$NT" "$VP" "$VT" "$HP" "$HP2" "$HT"; do wait_port "$p"; done
for p in "$VT" "$HT" "$NT"; do serves_cert "$p" "$TMP/bench.crt"; done
NGX=$(pgrep -P "$NGPID" | tr '\n' ' ')

# One proxy's run: $1 name, $2 plain port, $3 h2c port (empty: none), $4 TLS port, rest pids.
soak() {
  local name=$1 plain=$2 h2=$3 tls=$4; shift 4
  local secs=$((MINUTES * 60)) samples=$TMP/rss.$name load=()
  : > "$samples"
  echo "0 $(rss_kb "$@")" >> "$samples"
  wrk -t1 -c20 -d"${secs}s" -s bench/soak_unique.lua "http://127.0.0.1:$plain/" > "$TMP/$name.ka" & load+=("$!")
  wrk -t1 -c10 -d"${secs}s" -H "Connection: close" "http://127.0.0.1:$plain/" > "$TMP/$name.close" & load+=("$!")
  wrk -t1 -c5 -d"${secs}s" -H "Connection: close" "https://127.0.0.1:$tls/" > "$TMP/$name.tls" & load+=("$!")
  wrk -t1 -c2 -d"${secs}s" "http://127.0.0.1:$plain/big" > "$TMP/$name.big" & load+=("$!")
  if [ -n "$h2" ]; then
    h2load -c10 -m10 -D "$secs" "http://127.0.0.1:$h2/" > "$TMP/$name.h2" 2>&1 & load+=("$!")
  fi
  local t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$secs" ]; do
    sleep 5
    echo "$((SECONDS - t0)) $(rss_kb "$@")" >> "$samples"
  done
  wait "${load[@]}" || true
  sleep 30
  local after
  after=$(rss_kb "$@")
  local served=0 n
  for f in "$TMP/$name".{ka,close,tls,big}; do
    n=$(awk '/requests in/ {print $1}' "$f"); served=$((served + ${n:-0}))
  done
  if [ -n "$h2" ]; then
    n=$(awk '/^requests:/ {print $8}' "$TMP/$name.h2"); served=$((served + ${n:-0}))
  fi
  python3 - "$samples" "$name" "$served" "$after" <<'PY'
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1])]
name, served, after = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) / 1024
mb = lambda kb: kb / 1024
start = mb(rows[0][1])
minute = mb(min(rows, key=lambda r: abs(r[0] - 60))[1])
end, peak = mb(rows[-1][1]), mb(max(r[1] for r in rows))
half = [r for r in rows if r[0] >= rows[-1][0] / 2]
n = len(half)
mt = sum(r[0] for r in half) / n
mr = sum(mb(r[1]) for r in half) / n
var = sum((r[0] - mt) ** 2 for r in half) or 1
slope = sum((r[0] - mt) * (mb(r[1]) - mr) for r in half) / var * 3600
print(f"{name:8s} start {start:6.1f} MB  1 min {minute:6.1f}  end {end:6.1f}  peak {peak:6.1f}"
      f"  second half {slope:+7.1f} MB/h  30 s idle {after:6.1f}  requests {served}")
PY
}

{
  echo "== RSS over $MINUTES minutes of mixed traffic per proxy (MB)"
  soak vane "$VP" "$VP" "$VT" "$VPID"
  soak haproxy "$HP" "$HP2" "$HT" "$HPID"
  # shellcheck disable=SC2086
  soak nginx "$NP" "" "$NT" "$NGPID" $NGX
  echo "date: $(date -u +%FT%TZ)"
} | tee "$OUT/l7-soak-$(date -u +%Y%m%dT%H%M%SZ).txt"
