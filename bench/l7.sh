#!/usr/bin/env bash
# L7 benchmark: keep-alive HTTP/1.1 requests per second through a reverse proxy to an nginx
# upstream answering a small body, directly, through vane (resolver `http` -> application
# with `internal.driver.upstream`), through HAProxy (`mode http`) and through nginx
# (`proxy_pass` with upstream keep-alive), in one run.
#
#   bench/l7.sh             # SECS=5 CLIENTS=32
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
CLIENTS=${CLIENTS:-32}
OUT=bench/results
mkdir -p "$OUT"
source bench/lib.sh
ensure_tools "haproxy nginx" haproxy nginx-light
cargo build --release -q --example http_load
VANE=$(vane_binary)
LOAD="$CARGO_TARGET_DIR/release/examples/http_load"

UP=$(port); NP=$(port)
cat > "$TMP/nginx.conf" <<CFG
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$UP; location / { return 200 "hello from the upstream\n"; } }
  server {
    listen 127.0.0.1:$NP;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CFG
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 & PIDS+=("$!")

VP=$(port)
vane_http_proxy_config "$VP" "$UP"
start_vane

HP=$(port)
{ haproxy_head http; cat <<CFG; } > "$TMP/haproxy.cfg"
  option http-keep-alive
frontend f
  bind 127.0.0.1:$HP
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$UP
CFG
start_haproxy
wait_port "$UP"; wait_port "$NP"; wait_port "$VP"; wait_port "$HP"

{
  echo "== keep-alive HTTP/1.1 requests per second (${SECS}s, ${CLIENTS} connections)"
  D=$("$LOAD" "127.0.0.1:$UP" "$SECS" "$CLIENTS" /); echo "direct  $D"
  V=$("$LOAD" "127.0.0.1:$VP" "$SECS" "$CLIENTS" /); echo "vane    $V"
  H=$("$LOAD" "127.0.0.1:$HP" "$SECS" "$CLIENTS" /); echo "haproxy $H"
  N=$("$LOAD" "127.0.0.1:$NP" "$SECS" "$CLIENTS" /); echo "nginx   $N"
  python3 -c "print(f'ratios: vane/haproxy {$V/$H:.2f}  vane/nginx {$V/$N:.2f}  vane/direct {$V/$D:.2f}')"
  echo "date: $(date -u +%FT%TZ)"
} | tee "$OUT/l7-$(date -u +%Y%m%dT%H%M%SZ).txt"
