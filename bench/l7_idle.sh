#!/usr/bin/env bash
# RSS per idle keep-alive client connection of a reverse proxy: IDLE clients each make one
# request through the proxy (to an nginx upstream answering a small body), read the whole
# answer and stay connected; the proxy's RSS growth divided by the count. HTTP/1.1: vane
# (resolver `http` -> application with `internal.driver.upstream`), HAProxy (`mode http`,
# 2 threads) and nginx (`proxy_pass`, 1 worker); h2c (prior knowledge) and TLS-terminated
# HTTP/1.1 (ECDSA P-256): vane and HAProxy. One run.
#
#   bench/l7_idle.sh            # IDLE=4000 (a proxied connection costs 2 descriptors at most; HAProxy maxconn 9000)
#   VANE_BIN=path/to/vane bench/l7_idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-4000}
source bench/lib.sh
ensure_tools "haproxy nginx" haproxy nginx-light
VANE=$(vane_binary)

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

VP=$(port); VT=$(port)
vane_http_proxy_config "$VP" "$UP"
# TLS terminated on VT (the default certificate vane makes at start: ECDSA P-256).
vane_tls_port "$VT"
ecdsa_pair "$TMP/ha.key" "$TMP/ha.crt"
cat "$TMP/ha.crt" "$TMP/ha.key" > "$TMP/ha.pem"
start_vane HTTP_IDLE_TIMEOUT_SECS=600 MAX_CONNECTIONS=100000 ${VANE_ENV:-}

HP=$(port); HP2=$(port); HT=$(port)
{ haproxy_head http 10m 9000; cat <<CFG; } > "$TMP/haproxy.cfg"
  option http-keep-alive
  timeout http-keep-alive 10m
frontend f
  bind 127.0.0.1:$HP
  bind 127.0.0.1:$HP2 proto h2
  bind 127.0.0.1:$HT ssl crt $TMP/ha.pem alpn http/1.1
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$UP
CFG
start_haproxy
wait_port "$UP"; wait_port "$NP"; wait_port "$VP"; wait_port "$HP"; wait_port "$VT"; wait_port "$HT"
sleep 0.5
NGX_PIDS=$(pgrep -P "$NPID" | tr '\n' ' ')

idle_rss() {  # $1 = http|https|h2c, $2 = listen port of the proxy, rest = pids
  local mode=$1 lport=$2; shift 2
  local before after held
  # One request first, so the proxy's upstream pool and lazily made state exist before.
  python3 bench/idle_conns.py "$mode" "$lport" 1 > "$TMP/warm.log" 2>&1 & local wpid=$!
  for _ in $(seq 1 100); do grep -q ready "$TMP/warm.log" && break; sleep 0.1; done
  kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null || true
  sleep 1
  before=$(rss_kb "$@")
  python3 bench/idle_conns.py "$mode" "$lport" "$IDLE" > "$TMP/client.log" 2>&1 &
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
VK=$(idle_rss http "$VP" "$VPID");           echo "vane    ${VK} KiB/conn"
HK=$(idle_rss http "$HP" "$HPID");            echo "haproxy ${HK} KiB/conn"
NK=$(idle_rss http "$NP" "$NPID" $NGX_PIDS);  echo "nginx   ${NK} KiB/conn"
echo "== the same for h2c (prior knowledge, one stream each)"
V2=$(idle_rss h2c "$VP" "$VPID");            echo "vane    ${V2} KiB/conn"
H2=$(idle_rss h2c "$HP2" "$HPID");           echo "haproxy ${H2} KiB/conn"
echo "== the same for TLS-terminated HTTP/1.1"
VS=$(idle_rss https "$VT" "$VPID");          echo "vane    ${VS} KiB/conn"
HS=$(idle_rss https "$HT" "$HPID");          echo "haproxy ${HS} KiB/conn"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "idle_http_kib_per_conn vane=$VK haproxy=$HK nginx=$NK (n=$IDLE)"
  echo "idle_h2c_kib_per_conn vane=$V2 haproxy=$H2 (n=$IDLE)"
  echo "idle_tls_kib_per_conn vane=$VS haproxy=$HS (n=$IDLE)"
} | tee "$OUT/l7-idle-$(date -u +%Y%m%dT%H%M%SZ).txt"
