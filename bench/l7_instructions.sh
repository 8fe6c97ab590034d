#!/usr/bin/env bash
# Instructions per proxied keep-alive HTTP/1.1 request, counted by callgrind: deterministic, so
# two builds can be compared on a shared machine where wall-clock ratios move by 20 % between
# runs. Same setup as bench/l7.sh (nginx upstream, resolver `http` -> application with
# `internal.driver.upstream`), one data-plane thread. Counters are zeroed after a warm-up and
# dumped after N requests on one connection; the top functions are printed.
#
#   bench/l7_instructions.sh               # N=2000
#   VANE_BIN=/path/to/other/vane bench/l7_instructions.sh
#   H2C=1 bench/l7_instructions.sh         # h2c (prior knowledge) with h2load, 10 streams
#   CLOSE=1 bench/l7_instructions.sh       # a new connection per request (Connection: close)
#   PROXY=haproxy bench/l7_instructions.sh # HAProxy (1 thread) counted the same way, for reference
#   TLS=resumed bench/l7_instructions.sh   # a new TLS 1.3 connection per request, the session
#   TLS=full bench/l7_instructions.sh      #   resumed (or not); ECDSA P-256, X25519
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
source bench/lib.sh
ensure_tools "nginx valgrind" nginx-light valgrind
H2C=${H2C:-0}
TLS=${TLS:-}
if [ "$H2C" = 1 ]; then ensure_tools h2load nghttp2-client; fi
VANE=$(vane_binary)

UP=$(port)
start_upstream "$UP"

VP=$(port)
if [ -n "$TLS" ]; then bench_pair; fi
if [ "${PROXY:-vane}" = haproxy ]; then
  # The reference: HAProxy (one thread, upstream connections reused) under the same count.
  ensure_tools haproxy haproxy
  VANE=haproxy
  { haproxy_head http | sed 's/nbthread 2/nbthread 1/'; cat <<CFG; } > "$TMP/haproxy.cfg"
  option http-keep-alive
frontend f
  bind 127.0.0.1:$VP${TLS:+ ssl crt $TMP/bench.pem alpn http/1.1 no-tls-tickets}
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$UP
CFG
  valgrind --tool=callgrind ${CALLGRIND_OPTS:-} --compress-strings=no --callgrind-out-file="$TMP/cg.out" haproxy -f "$TMP/haproxy.cfg" -db \
    > "$TMP/vane.log" 2>&1 &
else
  if [ -n "$TLS" ]; then
    vane_http_proxy_config "$(port)" "$UP"
    vane_tls_port "$VP" "$TMP/bench.key" "$TMP/bench.crt"
  else
    vane_http_proxy_config "$VP" "$UP"
  fi
  env LISTEN_ADDR=127.0.0.1 METRICS_ADDR=off LOG_LEVEL=warn ACCESS_LOG=off DATA_PLANE_THREADS=1 \
    valgrind --tool=callgrind ${CALLGRIND_OPTS:-} --compress-strings=no --callgrind-out-file="$TMP/cg.out" "$VANE" run --config "$TMP/vane" \
    > "$TMP/vane.log" 2>&1 &
fi
VPID=$!; PIDS+=("$VPID")
wait_port "$UP"
for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$VP") 2>/dev/null && break; sleep 0.2; done

# One keep-alive connection: WARM requests, a pause for the zeroing, then N counted ones.
cat > "$TMP/client.py" <<'PY'
import socket, ssl, sys, time
port, n, ready, go, close, tls = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1", sys.argv[6]
session = None
def connect():
    s = socket.create_connection(("127.0.0.1", port))
    if not tls:
        return s
    ctx = connect.ctx
    s = ctx.wrap_socket(s, server_hostname="localhost", session=session if tls == "resumed" else None)
    return s
if tls:
    connect.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    connect.ctx.check_hostname = False
    connect.ctx.verify_mode = ssl.CERT_NONE
    connect.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    connect.ctx.set_alpn_protocols(["http/1.1"])
s = connect()
req = b"GET / HTTP/1.1\r\nHost: bench\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
buf = b""
def one():
    global buf, s, session
    if close:
        if tls and s.session is not None:
            session = s.session
        s.close()
        s = connect()
        buf = b""
    s.sendall(req)
    while True:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            if len(rest) >= length:
                assert head.startswith(b"HTTP/1.1 200"), head
                buf = rest[length:]
                return
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("closed")
        buf += chunk
for _ in range(200):
    one()
open(ready, "w").close()
import os
while not os.path.exists(go):
    time.sleep(0.05)
reused = 0
for _ in range(n):
    one()
    reused += bool(tls and s.session_reused)
if tls:
    print(f"{reused} of {n} handshakes resumed", file=sys.stderr)
PY
if [ "$H2C" = 1 ]; then
  # h2c prior knowledge, one connection, 10 concurrent streams (as bench/l7.sh's h2load).
  h2load -n 200 -c1 -m10 "http://127.0.0.1:$VP/" > /dev/null
  sleep 1
  callgrind_control -z "$VPID" > /dev/null
  h2load -n "$N" -c1 -m10 "http://127.0.0.1:$VP/" | grep -E '^requests:' >&2
else
  if [ -n "$TLS" ]; then CLOSE=1; fi
  python3 "$TMP/client.py" "$VP" "$N" "$TMP/ready" "$TMP/go" "${CLOSE:-0}" "$TLS" & CP=$!
  for _ in $(seq 1 600); do [ -f "$TMP/ready" ] && break; sleep 0.1; done
  sleep 1
  callgrind_control -z "$VPID" > /dev/null
  touch "$TMP/go"
  wait "$CP"
fi
callgrind_control -d "$VPID" > /dev/null
sleep 1
DUMP="$OUT/l7-callgrind-$(date -u +%Y%m%dT%H%M%SZ).out"
cp "$(ls -t "$TMP"/cg.out* | head -1)" "$DUMP"
TOTAL=$(grep -m1 '^summary:' "$DUMP" | awk '{print $2}')
{
  echo "== instructions per proxied request (callgrind, $N requests, 1 data-plane thread, h2c=$H2C, close=${CLOSE:-0}, tls=${TLS:-none})"
  python3 -c "print(f'${PROXY:-vane} {$TOTAL/$N:,.0f} instructions/request ($VANE)')"
  # With CALLGRIND_OPTS="--cache-sim=yes --branch-sim=yes": simulated cache misses and
  # mispredicted branches per request (this VM exposes no hardware counters).
  python3 - "$DUMP" "$N" <<'PY'
import sys
ev = sm = None
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("events:"):
        ev = line.split()[1:]
    elif line.startswith("summary:"):
        sm = [int(x) for x in line.split()[1:]]
        break
if ev and sm and len(ev) > 1:
    print("  ".join(f"{e} {v / int(sys.argv[2]):,.1f}" for e, v in zip(ev, sm)))
PY
  echo "== top functions by own instructions (the dump is $DUMP)"
  # Own cost per function, summed from the dump's cost lines (callgrind_annotate attributes
  # a dump taken after `zero` to the thread's entry point).
  python3 - "$DUMP" "$N" <<'PY'
import collections, sys
own, fn, call = collections.Counter(), None, False
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("fn="):
        fn = line[3:].strip()
    elif line.startswith("calls="):
        call = True
    elif line[:1].isdigit() or line[:1] in "+-*":
        if not call and fn:
            own[fn] += int(line.split()[1])
        call = False
for f, v in own.most_common(40):
    print(f"{v / int(sys.argv[2]):>9,.0f} per request  {f[:140]}")
PY
  echo "date: $(date -u +%FT%TZ)"
} | tee "$OUT/l7-instructions-$(date -u +%Y%m%dT%H%M%SZ).txt"
