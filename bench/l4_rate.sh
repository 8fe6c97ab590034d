#!/usr/bin/env bash
# Short TCP connections per second (connect, one line, reply, close) to an nginx `stream`
# upstream that answers and closes: directly, through vane (an L4 flow with
# `internal.transport.proxy`) and through HAProxy (`mode tcp`), in one run.
#
#   bench/l4_rate.sh          # SECS=5 CLIENTS=32
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
CLIENTS=${CLIENTS:-32}
source bench/lib.sh
ensure_tools "haproxy nginx" haproxy nginx-light libnginx-mod-stream
ensure_packages libnginx-mod-stream
cargo build --release -q --example tcp_rate
VANE=$(vane_binary)
LOAD="$CARGO_TARGET_DIR/release/examples/tcp_rate"

UP=$(port)
MOD=$(ls /usr/lib/nginx/modules/ngx_stream_module.so 2>/dev/null || true)
cat > "$TMP/nginx.conf" <<CFG
${MOD:+load_module $MOD;}
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 8192; }
stream { server { listen 127.0.0.1:$UP; return "ok\n"; } }
CFG
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 & PIDS+=("$!")

VP=$(port)
mkdir -p "$TMP/vane/listener/[$VP]"
vane_relay_flow "$UP" > "$TMP/vane/listener/[$VP]/tcp.yaml"
start_vane

HP=$(port)
{ haproxy_head tcp; cat <<CFG; } > "$TMP/haproxy.cfg"
frontend f
  bind 127.0.0.1:$HP
  default_backend b
backend b
  server s1 127.0.0.1:$UP
CFG
start_haproxy
wait_port "$UP"; wait_port "$VP"; wait_port "$HP"

echo "== short TCP connections per second (${SECS}s, ${CLIENTS} clients)"
D=$("$LOAD" "127.0.0.1:$UP" "$SECS" "$CLIENTS"); echo "direct  $D"
V=$("$LOAD" "127.0.0.1:$VP" "$SECS" "$CLIENTS"); echo "vane    $V"
H=$("$LOAD" "127.0.0.1:$HP" "$SECS" "$CLIENTS"); echo "haproxy $H"
python3 -c "print(f'ratios: vane/haproxy {$V/$H:.2f}  vane/direct {$V/$D:.2f}  haproxy/direct {$H/$D:.2f}')"
