#!/usr/bin/env bash
# TLS passthrough benchmark: new-connection rate (full handshakes) and single-stream download
# throughput to an nginx TLS upstream, directly, through vane (L4 upgrade to `tls`, resolver
# routing by `tls.sni`) and through HAProxy (`mode tcp` routing by `req.ssl_sni`), in one run.
#
#   bench/tls.sh            # SECS=5 SIZE_MB=2048
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
SIZE_MB=${SIZE_MB:-2048}
source bench/lib.sh
ensure_tools "haproxy nginx curl" haproxy nginx-light curl
VANE=$(vane_binary)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1
mkdir -p "$TMP/www"; echo ok > "$TMP/www/small"; truncate -s "${SIZE_MB}M" "$TMP/www/big"

UP=$(port)
cat > "$TMP/nginx.conf" <<CFG
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  server {
    listen 127.0.0.1:$UP ssl;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    ssl_session_cache off;
    ssl_session_tickets off;
    root $TMP/www;
  }
}
CFG
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 & PIDS+=("$!")

VP=$(port)
mkdir -p "$TMP/vane/listener/[$VP]" "$TMP/vane/resolver"
printf 'connection:\n  internal.transport.upgrade:\n    input: { protocol: tls }\n' > "$TMP/vane/listener/[$VP]/tcp.yaml"
printf 'connection:\n  internal.common.match:\n    input: { left: "{{tls.sni}}", right: bench.test }\n    output:\n      "true": { internal.transport.proxy: { input: { target.ip: 127.0.0.1, target.port: %s } } }\n      "false": { internal.transport.abort: {} }\n' "$UP" > "$TMP/vane/resolver/tls.yaml"
start_vane

HP=$(port)
{ haproxy_head tcp; cat <<CFG; } > "$TMP/haproxy.cfg"
frontend f
  bind 127.0.0.1:$HP
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend b if { req.ssl_sni -i bench.test }
backend b
  server s1 127.0.0.1:$UP
CFG
start_haproxy
wait_port "$UP"; wait_port "$VP"; wait_port "$HP"

cargo build --release -q --example tls_load
LOAD="$CARGO_TARGET_DIR/release/examples/tls_load"
rate() {  # full TLS handshakes (with SNI) + one small request per second through port $1
  "$LOAD" "127.0.0.1:$1" bench.test "$SECS" "${CLIENTS:-16}"
}
speed() {  # MB/s of one download through port $1
  (curl -sk --resolve "bench.test:$1:127.0.0.1" "https://bench.test:$1/big" -o /dev/null -w '%{speed_download}' || true) |
    awk '{printf "%.0f", $1/1048576}'
}
echo "== new TLS connections per second (examples/tls_load, ${SECS}s, ${CLIENTS:-16} clients)"
RD=$(rate "$UP"); echo "direct  $RD"
RV=$(rate "$VP"); echo "vane    $RV"
RH=$(rate "$HP"); echo "haproxy $RH"
echo "== single-stream download (${SIZE_MB} MiB), MiB/s"
TD=$(speed "$UP"); echo "direct  $TD"
TV=$(speed "$VP"); echo "vane    $TV"
TH=$(speed "$HP"); echo "haproxy $TH"
python3 - "$RD" "$RV" "$RH" "$TD" "$TV" "$TH" <<'PY'
import sys
rd, rv, rh, td, tv, th = map(float, sys.argv[1:])
print(f"ratios: rate vane/haproxy {rv/rh:.2f} (vane/direct {rv/rd:.2f}, haproxy/direct {rh/rd:.2f}); "
      f"throughput vane/haproxy {tv/th:.2f} (vane/direct {tv/td:.2f}, haproxy/direct {th/td:.2f})")
PY
{
  echo "date: $(date -u +%FT%TZ)"
  echo "tls_conn_per_sec direct=$RD vane=$RV haproxy=$RH"
  echo "tls_mib_per_sec direct=$TD vane=$TV haproxy=$TH"
} > "$OUT/tls-$(date -u +%Y%m%dT%H%M%SZ).txt"
