#!/usr/bin/env bash
# Where a proxied keep-alive request's CPU goes on this machine: CPU time per request of the
# client (wrk -t2 -c50), the proxy and the upstream nginx, with vane, HAProxy and nginx as the
# proxy (one thread or worker each; THREADS=2 for two) and with no proxy, in alternated
# rounds; medians at the end.
#
# When client, proxy and upstream share the cores (2 vCPUs here), requests/s follow the sum
# of the three, not the proxy's share alone. The table says how far a proxy's own CPU can move
# the sum, and how much of it is the kernel's: the proxy's system time is the four system
# calls of a proxied request (a receive and a send on each side) and the TCP work under them.
#
#   bench/l7_budget.sh            # ROUNDS=5 SECS=5 THREADS=1
#   VANE_BIN=/path/to/vane bench/l7_budget.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensure_tools "nginx wrk" nginx-light wrk
ensure_tools haproxy haproxy
VANE=$(vane_binary)
THREADS=${THREADS:-1}
UP=$(port)
start_upstream "$UP"
UPPID=${PIDS[-1]}

VP=$(port)
vane_http_proxy_config "$VP" "$UP"
start_vane DATA_PLANE_THREADS="$THREADS"
HP=$(port)
HAPROXY_THREADS=$THREADS haproxy_http_config "$HP" > "$TMP/haproxy.cfg"
start_haproxy
NP=$(port)
bench_pair
{ NGINX_NAME=px NGINX_WORKERS=$THREADS nginx_head 4096; nginx_proxy bench "listen 127.0.0.1:$NP;"; } > "$TMP/nginx.conf"
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 &
NGPID=$!; PIDS+=("$NGPID")
for p in "$UP" "$VP" "$HP" "$NP"; do wait_port "$p"; done
sleep 0.5
# nginx's work is done in its workers, not the master.
workers() { pgrep -P "$1" | tr '\n' ' '; }
UPW=$(workers "$UPPID")
NGW=$(workers "$NGPID")

# Nanoseconds every thread of the processes named has run (schedstat: exact, not ticks).
ran_ns() {
  local s=0 p t
  for p in "$@"; do
    for t in /proc/"$p"/task/*/schedstat; do s=$((s + $(awk '{print $1}' "$t"))); done
  done
  echo "$s"
}
# User and system clock ticks of the processes named.
ticks() { local u=0 k=0 p; for p in "$@"; do read -r a b < <(awk '{print $14, $15}' /proc/"$p"/stat); u=$((u + a)); k=$((k + b)); done; echo "$u $k"; }
HZ=$(getconf CLK_TCK)
SECS=${SECS:-5}
RESULTS="$OUT/l7-budget-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "== CPU per keep-alive request, wrk -t2 -c50 -d${SECS}s, $THREADS thread(s) per proxy, ${ROUNDS:-5} alternated rounds"
  echo "== columns: requests/s, then microseconds of CPU per request: client, proxy (its system part), upstream, sum"
} | tee "$RESULTS"
for r in $(seq 1 "${ROUNDS:-5}"); do
  for who in ${WHOS:-direct vane haproxy nginx}; do
    case $who in
      direct) pt=$UP procs="" ;;
      vane) pt=$VP procs=$VPID ;;
      haproxy) pt=$HP procs=$HPID ;;
      nginx) pt=$NP procs=$NGW ;;
    esac
    # shellcheck disable=SC2086
    p0=$(ran_ns $procs); u0=$(ran_ns $UPW); read -r pu0 pk0 < <(ticks $procs)
    out=$(/usr/bin/time -f "CLIENT %U %S" wrk -t2 -c50 -d"${SECS}s" "http://127.0.0.1:$pt/" 2>&1)
    # shellcheck disable=SC2086
    p1=$(ran_ns $procs); u1=$(ran_ns $UPW); read -r pu1 pk1 < <(ticks $procs)
    n=$(echo "$out" | awk '/requests in/{print $1}')
    read -r cu cs < <(echo "$out" | awk '/^CLIENT/{print $2, $3}')
    python3 - "$who" "$n" "$SECS" "$cu" "$cs" "$p0" "$p1" "$u0" "$u1" "$pu0" "$pk0" "$pu1" "$pk1" "$HZ" <<'PY' | tee -a "$RESULTS"
import sys
who, n, secs, cu, cs, p0, p1, u0, u1, pu0, pk0, pu1, pk1, hz = sys.argv[1:]
n = int(n)
us = lambda ns: ns / 1e3 / n
client = (float(cu) + float(cs)) * 1e6 / n
proxy = us(int(p1) - int(p0))
ticks = int(pu1) - int(pu0) + int(pk1) - int(pk0)
system = proxy * (int(pk1) - int(pk0)) / ticks if ticks else 0.0
upstream = us(int(u1) - int(u0))
print(f"{who:8} {n / float(secs):9.0f} req/s  client {client:5.2f}  proxy {proxy:5.2f} ({system:5.2f})"
      f"  upstream {upstream:5.2f}  sum {client + proxy + upstream:5.2f}")
PY
  done
done
python3 - "$RESULTS" <<'PY' | tee -a "$RESULTS"
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+)\s+(\d+) req/s\s+client\s+([\d.]+)\s+proxy\s+([\d.]+)\s+\(\s*([\d.]+)\)\s+upstream\s+([\d.]+)\s+sum\s+([\d.]+)", line)
    if m:
        rows.setdefault(m.group(1), []).append([float(x) for x in m.groups()[1:]])
print("== medians")
print("| proxy | requests/s | client | proxy | of it system | upstream | sum |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for who, rs in rows.items():
    med = [statistics.median(c) for c in zip(*rs)]
    print(f"| {who} | {med[0]:,.0f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} | {med[4]:.2f} | {med[5]:.2f} |")
PY
echo "results: $RESULTS"
