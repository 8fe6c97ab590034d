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
ensure_tools "wrk h2load" wrk nghttp2-client
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

HP=$(port); HP2=$(port)
{ haproxy_head http; cat <<CFG; } > "$TMP/haproxy.cfg"
  option http-keep-alive
frontend f
  bind 127.0.0.1:$HP
  bind 127.0.0.1:$HP2 proto h2
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
  # Independent clients: wrk (HTTP/1.1 keep-alive) and h2load (h2c, prior knowledge).
  wrk_rps() { wrk -t2 -c50 -d"${SECS}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/{print $2}'; }
  # CPU seconds (user + system) a process tree has used so far.
  cpu_s() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/"$p"/stat))); done; echo "$t / $(getconf CLK_TCK)" | bc -l; }
  # Requests per second and per CPU-second of the proxy, with wrk.
  wrk_eff() {
    local port=$1; shift
    local c0 c1 r
    c0=$(cpu_s "$@"); r=$(wrk_rps "$port"); c1=$(cpu_s "$@")
    python3 -c "print(f'{$r:.0f} {$r*$SECS/max($c1-$c0,1e-9):.0f}')"
  }
  h2_rps() { h2load -c10 -m10 -D "$SECS" "http://127.0.0.1:$1/" 2>/dev/null | awk '/^finished in/{print $4}'; }
  echo "== wrk -t2 -c50: requests per second, requests per CPU-second of the proxy"
  NGX=$(pgrep -f "nginx: worker" | tr '\n' ' ')
  read -r WV EV <<< "$(wrk_eff "$VP" "$VPID")"
  read -r WH EH <<< "$(wrk_eff "$HP" "$HPID")"
  read -r WN EN <<< "$(wrk_eff "$NP" $NGX)"
  echo "vane $WV ($EV/cpu-s)  haproxy $WH ($EH/cpu-s)  nginx $WN ($EN/cpu-s)"
  python3 -c "print(f'ratios: vane/haproxy {$WV/$WH:.2f} (per cpu {$EV/$EH:.2f})  vane/nginx {$WV/$WN:.2f} (per cpu {$EV/$EN:.2f})')"
  # nginx is left out: its plaintext HTTP/2 (nginx-light 1.22) answers h2load at a fixed
  # 2500 requests/s here, which says nothing about proxying.
  echo "== h2load -c10 -m10 (h2c prior knowledge), requests per second"
  HV=$(h2_rps "$VP"); HH=$(h2_rps "$HP2")
  echo "vane $HV  haproxy $HH"
  python3 -c "print(f'ratios: vane/haproxy {$HV/$HH:.2f}')"
  echo "date: $(date -u +%FT%TZ)"
} | tee "$OUT/l7-$(date -u +%Y%m%dT%H%M%SZ).txt"
