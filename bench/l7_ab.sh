#!/usr/bin/env bash
# Two or more vane binaries compared under the same keep-alive load, alternating, so the
# machine's drift (20 % between bench/l7.sh runs here) falls on all of them alike: requests per
# second, p99 and CPU time of the proxy per request, per round.
#
#   bench/l7_ab.sh OLD_BINARY NEW_BINARY [...]     # ROUNDS=4 SECS=5
#   CLOSE=1 bench/l7_ab.sh ...                      # a new connection per request
#   H2C=1 bench/l7_ab.sh ...                        # h2c (prior knowledge), h2load -c10 -m10
#   BIG=1 bench/l7_ab.sh ...                        # 1 MiB responses, wrk -t2 -c10 (MB/s)
#
# A "binary" may be a script that sets the environment and execs vane (e.g. HTTP2_SERVER=hyper):
# exec keeps the process, so its CPU time is still the one counted. `haproxy:N` is HAProxy with
# N threads on the same upstream (`http-reuse always`), for a mark measured in the same rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -ge 2 ] || { echo "usage: $0 BINARY BINARY [...]" >&2; exit 2; }
source bench/lib.sh
ensure_tools "nginx wrk" nginx-light wrk
ensure_tools h2load nghttp2-client
UP=$(port)
start_upstream "$UP"
PORTS=() VPIDS=() NAMES=()
for bin in "$@"; do
  P=$(port)
  case "$bin" in
    haproxy:*)
      ensure_tools haproxy haproxy
      HAPROXY_THREADS=${bin#haproxy:} haproxy_http_config "$P" "$([ "${H2C:-0}" = 1 ] && echo proto h2)" \
        > "$TMP/haproxy-$P.cfg"
      haproxy -db -f "$TMP/haproxy-$P.cfg" > "$TMP/haproxy-$P.log" 2>&1 &
      ;;
    *)
      vane_http_proxy_config "$P" "$UP"
      mv "$TMP/vane" "$TMP/vane-$P"
      env LISTEN_ADDR=127.0.0.1 METRICS_ADDR=off LOG_LEVEL=warn ACCESS_LOG=off MAX_CONNECTIONS_PER_IP=100000 \
        "$bin" run --config "$TMP/vane-$P" > "$TMP/vane-$P.log" 2>&1 &
      ;;
  esac
  VPIDS+=("$!"); PIDS+=("$!"); PORTS+=("$P"); NAMES+=("$bin")
done
wait_port "$UP"
for p in "${PORTS[@]}"; do wait_port "$p"; done
# CPU ticks (user + system) of every thread of a process.
ticks() { local s=0 t; for t in /proc/"$1"/task/*; do s=$((s + $(awk '{print $14 + $15}' "$t/stat"))); done; echo "$s"; }
HZ=$(getconf CLK_TCK)
CLOSE=${CLOSE:-0}
HEADER=()
if [ "$CLOSE" = 1 ]; then HEADER=(-H "Connection: close"); fi
CONNS=50 TARGET=/
if [ "${BIG:-0}" = 1 ]; then CONNS=10 TARGET=/big; fi
if [ "${H2C:-0}" = 1 ]; then
  echo "== h2c, h2load -c10 -m10 -D${SECS:-5} per binary, alternating"
else
  echo "== HTTP/1.1 $TARGET (close=$CLOSE), wrk -t2 -c$CONNS -d${SECS:-5}s per binary, alternating"
fi
for r in $(seq 1 "${ROUNDS:-4}"); do
  for i in "${!PORTS[@]}"; do
    c0=$(ticks "${VPIDS[$i]}")
    if [ "${H2C:-0}" = 1 ]; then
      out=$(h2load -c10 -m10 -D"${SECS:-5}" "http://127.0.0.1:${PORTS[$i]}/")
      c1=$(ticks "${VPIDS[$i]}")
      req=$(echo "$out" | awk '/^requests:/{print $8}')
      rps=$(echo "$out" | awk '/finished in/{print $4}')
      p99=-
    else
      out=$(wrk -t2 -c"$CONNS" -d"${SECS:-5}"s --latency "${HEADER[@]}" "http://127.0.0.1:${PORTS[$i]}$TARGET")
      c1=$(ticks "${VPIDS[$i]}")
      req=$(echo "$out" | awk '/requests in/{print $1}')
      rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
      p99=$(echo "$out" | awk '$1=="99%"{print $2}')
      if [ "${BIG:-0}" = 1 ]; then p99="$p99 $(echo "$out" | awk '/Transfer\/sec/{print $2}')/s"; fi
    fi
    python3 -c "print(f'round $r  rps {float($rps):9,.0f}  p99 $p99  cpu {($c1-$c0)*1e6/$HZ/$req:6.2f} us/req  ${NAMES[$i]}')"
  done
done
echo "date: $(date -u +%FT%TZ)"
