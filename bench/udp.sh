#!/usr/bin/env bash
# UDP benchmark: memory per live UDP session, new sessions per second and datagrams per second,
# through vane (an L4 UDP flow with internal.transport.proxy) and through nginx (`stream`, UDP),
# to the same echo upstream with the same session timeout, in one run. The load client paces
# itself (examples/udp_load.rs): a burst of new sockets measures the kernel's buffers, not the
# proxy.
#
#   bench/udp.sh                         # HOLD="5000 10000" RATE=2000 SECS=5
#   HOLD="5000 10000 18000" bench/udp.sh # needs an open-files limit above 2x the largest
set -euo pipefail
cd "$(dirname "$0")/.."
HOLD=${HOLD:-"5000 10000"}
RATE=${RATE:-2000}
# The new-session test keeps every client socket open (no port reused): NEW_RATE * NEW_SECS
# must stay under the open-files limit.
NEW_RATE=${NEW_RATE:-8000}
NEW_SECS=${NEW_SECS:-2}
# Forwarded QUIC connections held (each its own socket), opened at QUIC_RATE per second.
QUIC_HOLD=${QUIC_HOLD:-"2000 5000"}
QUIC_RATE=${QUIC_RATE:-500}
SECS=${SECS:-5}
TIMEOUT=${TIMEOUT:-30}
source bench/lib.sh
ensure_tools "nginx" nginx-light libnginx-mod-stream
ensure_packages libnginx-mod-stream
cargo build --release -q --example udp_load --example quic_hold
VANE=$(vane_binary)
LOAD="$CARGO_TARGET_DIR/release/examples/udp_load"
QUIC="$CARGO_TARGET_DIR/release/examples/quic_hold"
ulimit -n "$(ulimit -Hn)" || true

UP=$(port)
"$LOAD" echo "$UP" & PIDS+=("$!")

NP=$(port)
MOD=$(ls /usr/lib/nginx/modules/ngx_stream_module.so 2>/dev/null || true)
cat > "$TMP/nginx.conf" <<CFG
${MOD:+load_module $MOD;}
worker_processes 1;
worker_rlimit_nofile 65535;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 60000; }
stream {
  server {
    listen 127.0.0.1:$NP udp;
    proxy_pass 127.0.0.1:$UP;
    proxy_timeout ${TIMEOUT}s;
  }
}
CFG
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 &
NPID=$!; PIDS+=("$NPID")

VP=$(port)
mkdir -p "$TMP/vane/listener/[$VP]"
vane_relay_flow "$UP" > "$TMP/vane/listener/[$VP]/udp.yaml"
# Forwarded QUIC: UDP port QP routes `q.test` by the SNI of its Initial packets to a QUIC echo
# server; RSS with N live connections (each its own UDP socket) against vane's RSS before.
QS=$(port); QP=$(port)
"$QUIC" server "$QS" "$TMP/q.der" & PIDS+=("$!")
mkdir -p "$TMP/vane/listener/[$QP]" "$TMP/vane/resolver"
printf 'connection:\n  internal.transport.upgrade:\n    input: { protocol: quic }\n' > "$TMP/vane/listener/[$QP]/udp.yaml"
vane_relay_flow "$QS" > "$TMP/vane/resolver/quic.yaml"
# Session limits as high as nginx's worker_connections above: the bench measures speed, not caps.
start_vane UDP_SESSION_TIMEOUT_SECS="$TIMEOUT" UDP_SESSION_BUFFER=100000000 MAX_CONNECTIONS=60000
sleep 1
# nginx runs its work in a worker process: measure that one.
NWORKER=$(pgrep -P "$NPID" | head -1)

# RSS with N live sessions against the proxy's RSS before its first session (later rounds
# reuse what earlier ones freed), and RSS once they expired (TIMEOUT + 10 s after the last
# client left, or GONE_AFTER seconds).
declare -A START
measure() { # label pid n command... (the command prints the answered count, then `holding`)
  local label=$1 pid=$2 n=$3 before after gone lp
  shift 3
  before=${START[$label]:=$(rss_kb "$pid")}
  "$@" > "$TMP/hold.out" &
  lp=$!
  for _ in $(seq 1 1200); do grep -q holding "$TMP/hold.out" 2>/dev/null && break; sleep 0.2; done
  sleep 2
  after=$(rss_kb "$pid")
  wait "$lp" || true
  sleep "${GONE_AFTER:-$((TIMEOUT + 10))}"
  gone=$(rss_kb "$pid")
  local answered; answered=$(head -1 "$TMP/hold.out")
  python3 -c "print(f'$label n=$n answered=$answered: {($after-$before)/max($answered,1):.2f} KiB per live session (RSS {$before} -> {$after} KiB, {$gone} KiB after expiry)')"
}
hold() { # name pid port n
  measure "$1" "$2" "$4" "$LOAD" hold "127.0.0.1:$3" "$4" "$RATE" 10
}
quic_hold() { # n
  measure "vane-quic" "$VPID" "$1" "$QUIC" hold "127.0.0.1:$QP" "$TMP/q.der" "$1" "$QUIC_RATE" 10
}

{
  echo "== memory per live UDP session (paced at ${RATE}/s, session timeout ${TIMEOUT}s)"
  for n in $HOLD; do
    hold vane "$VPID" "$VP" "$n"
    hold nginx "$NWORKER" "$NP" "$n"
  done
  echo "== new sessions per second (paced at ${NEW_RATE}/s for ${NEW_SECS}s, a new client port each)"
  V=$("$LOAD" rate "127.0.0.1:$VP" "$NEW_SECS" "$NEW_RATE"); echo "vane  $V"
  sleep $((TIMEOUT + 2))
  N=$("$LOAD" rate "127.0.0.1:$NP" "$NEW_SECS" "$NEW_RATE"); echo "nginx $N"
  sleep $((TIMEOUT + 2))
  echo "== datagrams per second (32 clients ping-pong, ${SECS}s)"
  VD=$("$LOAD" pps "127.0.0.1:$VP" "$SECS" 32); echo "vane  $VD"
  ND=$("$LOAD" pps "127.0.0.1:$NP" "$SECS" 32); echo "nginx $ND"
  python3 -c "print(f'ratios: sessions/s vane/nginx {$V/max($N,1):.2f}  datagrams/s vane/nginx {$VD/max($ND,1):.2f}')"
  # Last: the QUIC echo server keeps pinging a connection whose client left until its own idle
  # timeout (30 s), and every ping keeps vane's session alive, so these sessions end later
  # and would share the machine with the rate tests above.
  echo "== memory per live forwarded QUIC session (vane only: nginx cannot route QUIC by SNI)"
  for n in $QUIC_HOLD; do
    GONE_AFTER=$((TIMEOUT + 45)) quic_hold "$n"
  done
  echo "date: $(date -u +%FT%TZ)"
} | tee "$OUT/udp-$(date -u +%Y%m%dT%H%M%SZ).txt"
