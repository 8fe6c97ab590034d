#!/usr/bin/env bash
# RSS per idle keep-alive HTTP/1.1 client connection of a reverse proxy: IDLE clients each make
# one request through the proxy (to an nginx upstream answering a small body), read the whole
# answer and stay connected; the proxy's RSS growth divided by the count. vane (resolver
# `http` -> application with `internal.driver.upstream`), HAProxy (`mode http`, 2 threads)
# and nginx (`proxy_pass`, 1 worker), in one run.
#
#   bench/l7_idle.sh            # IDLE=4000 (a proxied connection costs 2 descriptors at most; HAProxy maxconn 9000)
#   VANE_BIN=path/to/vane bench/l7_idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-4000}
OUT=bench/results
mkdir -p "$OUT"
source bench/lib.sh
ensure_tools "haproxy nginx" haproxy nginx-light
VANE=$(vane_binary)
rss_kb() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/"$p"/status))); done; echo "$t"; }

UP=$(port); NP=$(port)
cat > "$TMP/nginx.conf" <<CFG
worker_processes 1;
worker_rlimit_nofile 20000;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_timeout 600s;
  keepalive_requests 100000;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$UP; location / { return 200 "hello from the upstream\n"; } }
  server {
    listen 127.0.0.1:$NP backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CFG
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 & NPID=$!; PIDS+=("$NPID")

VP=$(port)
vane_http_proxy_config "$VP" "$UP"
start_vane HTTP_IDLE_TIMEOUT_SECS=600 MAX_CONNECTIONS=100000 ${VANE_ENV:-}

HP=$(port)
{ haproxy_head http 10m 9000; cat <<CFG; } > "$TMP/haproxy.cfg"
  option http-keep-alive
  timeout http-keep-alive 10m
frontend f
  bind 127.0.0.1:$HP
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$UP
CFG
start_haproxy
wait_port "$UP"; wait_port "$NP"; wait_port "$VP"; wait_port "$HP"
sleep 0.5
NGX_PIDS=$(pgrep -P "$NPID" | tr '\n' ' ')

idle_rss() {  # $1 = listen port of the proxy, rest = pids
  local lport=$1; shift
  local before after held
  # One request first, so the proxy's upstream pool and lazily made state exist before.
  python3 bench/idle_conns.py http "$lport" 1 > "$TMP/warm.log" 2>&1 & local wpid=$!
  for _ in $(seq 1 100); do grep -q ready "$TMP/warm.log" && break; sleep 0.1; done
  kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null || true
  sleep 1
  before=$(rss_kb "$@")
  python3 bench/idle_conns.py http "$lport" "$IDLE" > "$TMP/client.log" 2>&1 &
  local cpid=$!
  for _ in $(seq 1 1200); do grep -q ready "$TMP/client.log" && break; sleep 0.1; done
  held=$(awk '/ready/{print $2}' "$TMP/client.log")
  sleep 3
  after=$(rss_kb "$@")
  kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true
  sleep 2
  [ "${held:-0}" = "$IDLE" ] || echo "only ${held:-0} of $IDLE connections answered" >&2
  python3 -c "print('%.2f' % ((($after) - ($before)) / $IDLE))"
}
echo "== RSS per idle keep-alive HTTP/1.1 client connection ($IDLE connections, one request each)"
VK=$(idle_rss "$VP" "$VPID");           echo "vane    ${VK} KiB/conn"
HK=$(idle_rss "$HP" "$HPID");            echo "haproxy ${HK} KiB/conn"
NK=$(idle_rss "$NP" "$NPID" $NGX_PIDS);  echo "nginx   ${NK} KiB/conn"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "idle_http_kib_per_conn vane=$VK haproxy=$HK nginx=$NK (n=$IDLE)"
} | tee "$OUT/l7-idle-$(date -u +%Y%m%dT%H%M%SZ).txt"
