#!/usr/bin/env bash
# L4 benchmark: TCP throughput through vane vs direct loopback vs HAProxy (mode tcp) vs nginx
# (stream), and RSS per idle relayed connection, all in one run on this machine.
#
#   bench/l4.sh                 # defaults: 10 s iperf3 runs, 9000 idle connections
#   SECS=20 IDLE=5000 bench/l4.sh
#
# Idle connections: each relayed connection costs the proxy two descriptors; the default
# count stays under a 20000 open-files hard limit. Raise IDLE where the limit allows.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
IDLE=${IDLE:-9000}
STREAMS=${STREAMS:-1}

source bench/lib.sh
ensure_tools "iperf3 haproxy nginx" iperf3 haproxy nginx-light libnginx-mod-stream
ensure_packages libnginx-mod-stream
VANE=$(vane_binary)
ulimit -n "$(ulimit -Hn)" || true

IPERF=$(port)
iperf3 -s -p "$IPERF" -D --logfile "$TMP/iperf.log"
sleep 0.3
PIDS+=("$(pgrep -f "iperf3 -s -p $IPERF" | head -1)")

# --- vane
VP=$(port)
mkdir -p "$TMP/vane/listener/[$VP]"
vane_relay_flow "$IPERF" > "$TMP/vane/listener/[$VP]/tcp.yaml"
# shellcheck disable=SC2086 # VANE_ENV holds several VAR=value words
start_vane STREAM_IDLE_TIMEOUT_SECS=600 MAX_CONNECTIONS=100000 ${VANE_ENV:-}

# --- haproxy
HP=$(port)
{ haproxy_head tcp 10m 9900; cat <<CFG; } > "$TMP/haproxy.cfg"
frontend f
  bind 127.0.0.1:$HP
  default_backend b
backend b
  server s1 127.0.0.1:$IPERF
CFG
start_haproxy

# --- nginx stream
NP=$(port)
MOD=$(ls /usr/lib/nginx/modules/ngx_stream_module.so 2>/dev/null || true)
cat > "$TMP/nginx.conf" <<CFG
${MOD:+load_module $MOD;}
worker_processes 2;
worker_rlimit_nofile 20000;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 19900; }
stream {
  server { listen 127.0.0.1:$NP; proxy_pass 127.0.0.1:$IPERF; proxy_timeout 10m; }
}
CFG
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 &
NPID=$!; PIDS+=("$NPID")

wait_port "$VP"; wait_port "$HP"; wait_port "$NP"

gbps() { iperf3 -c 127.0.0.1 -p "$1" -t "$SECS" -P "$STREAMS" -J 2>/dev/null | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'; }
echo "== throughput (iperf3, ${SECS}s, ${STREAMS} stream(s)), Gbit/s"
D=$(gbps "$IPERF"); echo "direct  $D"
V=$(gbps "$VP");    echo "vane    $V"
H=$(gbps "$HP");    echo "haproxy $H"
N=$(gbps "$NP");    echo "nginx   $N"
python3 - "$D" "$V" "$H" "$N" <<'PY'
import sys
d, v, h, n = map(float, sys.argv[1:])
best = max(h, n)
print(f"ratios: vane/direct {v/d:.2f}  haproxy/direct {h/d:.2f}  nginx/direct {n/d:.2f}  vane/best-of(haproxy,nginx) {v/best:.2f}")
PY

echo "== RSS per idle relayed connection ($IDLE connections)"
UP=$(port)
python3 bench/idle_conns.py server "$UP" > "$TMP/up.log" 2>&1 &
PIDS+=("$!")
wait_port "$UP"
idle_rss() {  # $1 = listen port of the proxy already pointing at $UP, rest = pids
  local lport=$1; shift
  local before after
  before=$(rss_kb "$@")
  python3 bench/idle_conns.py client "$lport" "$IDLE" > "$TMP/client.log" 2>&1 &
  local cpid=$!
  for _ in $(seq 1 600); do grep -q ready "$TMP/client.log" && break; sleep 0.1; done
  sleep 3
  after=$(rss_kb "$@")
  kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true
  sleep 2
  python3 -c "print('%.2f' % ((($after) - ($before)) * 1024 / 1024 / $IDLE))"
}
# Re-point the three proxies at the idle server.
VP2=$(port); mkdir -p "$TMP/vane/listener/[$VP2]"
vane_relay_flow "$UP" > "$TMP/vane/listener/[$VP2]/tcp.yaml"
wait_port "$VP2"
sed -i "s/server s1 127.0.0.1:$IPERF/server s1 127.0.0.1:$UP/" "$TMP/haproxy.cfg"
kill "$HPID"; wait "$HPID" 2>/dev/null || true
start_haproxy
sed -i "s/proxy_pass 127.0.0.1:$IPERF/proxy_pass 127.0.0.1:$UP/" "$TMP/nginx.conf"
kill "$NPID"; wait "$NPID" 2>/dev/null || true
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 & NPID=$!; PIDS+=("$NPID")
wait_port "$HP"; wait_port "$NP"; sleep 0.5
NGX_PIDS=$(pgrep -P "$NPID" | tr '\n' ' ')
VK=$(idle_rss "$VP2" "$VPID");           echo "vane    ${VK} KiB/conn"
HK=$(idle_rss "$HP" "$HPID");            echo "haproxy ${HK} KiB/conn"
NK=$(idle_rss "$NP" "$NPID" $NGX_PIDS);  echo "nginx   ${NK} KiB/conn"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "throughput_gbps direct=$D vane=$V haproxy=$H nginx=$N"
  echo "idle_kib_per_conn vane=$VK haproxy=$HK nginx=$NK (n=$IDLE)"
} | tee "$OUT/l4-$(date -u +%Y%m%dT%H%M%SZ).txt"
