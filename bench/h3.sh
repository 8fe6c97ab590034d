#!/usr/bin/env bash
# HTTP/3 against vane's own HTTP/2 over TLS (no HTTP/3 proxy is packaged here to compare
# with): the same application (`internal.driver.upstream` to an nginx upstream) behind a QUIC
# port and a TLS port of one vane, one ECDSA P-256 certificate, driven by one client for both
# (examples/h3_load.rs: quinn + h3, hyper + tokio-rustls). Small responses (4 connections x
# 10 streams) and a 100 MiB download on one stream, REPS interleaved repetitions, medians;
# h2load gives an independent HTTP/2 figure.
#
#   bench/h3.sh            # SECS=5 REPS=3
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
REPS=${REPS:-3}
source bench/lib.sh
ensure_tools "nginx h2load" nginx-light nghttp2-client
cargo build --release -q --example h3_load
VANE=$(vane_binary)
LOAD="$CARGO_TARGET_DIR/release/examples/h3_load"

UP=$(port)
head -c $((100 * 1048576)) /dev/zero > "$TMP/huge.bin"
{ nginx_head; cat <<CFG; } > "$TMP/nginx.conf"
http {
  access_log off;
  server {
    listen 127.0.0.1:$UP;
    location / { return 200 "hello from the upstream\n"; }
    location = /huge { alias $TMP/huge.bin; }
  }
}
CFG
nginx -c "$TMP/nginx.conf" -g 'daemon off;' > "$TMP/nginx.log" 2>&1 & PIDS+=("$!")

VP=$(port); VT=$(port); VQ=$(port)
vane_http_proxy_config "$VP" "$UP"
bench_pair
vane_tls_port "$VT" "$TMP/bench.key" "$TMP/bench.crt"
mkdir -p "$TMP/vane/listener/[$VQ]"
cat > "$TMP/vane/listener/[$VQ]/udp.yaml" <<'CFG'
connection:
  internal.protocol.detect:
    input: { method: quic, payload: "{{req.peek_buffer_hex}}" }
    output:
      "true": { internal.transport.upgrade: { input: { protocol: quic } } }
      "false": { internal.transport.abort: {} }
CFG
printf 'connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n' > "$TMP/vane/resolver/quic.yaml"
start_vane
wait_port "$UP"; wait_port "$VT"; sleep 1
serves_cert "$VT" "$TMP/bench.crt"

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
declare -a H3R H2R H3D H2D H2L
for _ in $(seq 1 "$REPS"); do
  read -r r _ <<< "$("$LOAD" h3 "127.0.0.1:$VQ" "$SECS" 4 10 /)"; H3R+=("$r")
  read -r r _ <<< "$("$LOAD" h2 "127.0.0.1:$VT" "$SECS" 4 10 /)"; H2R+=("$r")
  read -r _ m <<< "$("$LOAD" h3 "127.0.0.1:$VQ" 0 1 1 /huge)"; H3D+=("$m")
  read -r _ m <<< "$("$LOAD" h2 "127.0.0.1:$VT" 0 1 1 /huge)"; H2D+=("$m")
  H2L+=("$(h2load -c4 -m10 -D "$SECS" "https://127.0.0.1:$VT/" 2>/dev/null | awk '/^finished in/{print $4}')")
done
{
  echo "== HTTP/3 vs HTTP/2 over TLS through vane (medians of $REPS; runs in brackets)"
  echo "small responses, 4 connections x 10 streams, requests/s: h3 $(median "${H3R[@]}") [${H3R[*]}]  h2 $(median "${H2R[@]}") [${H2R[*]}]"
  echo "100 MiB download, one stream, MB/s: h3 $(median "${H3D[@]}") [${H3D[*]}]  h2 $(median "${H2D[@]}") [${H2D[*]}]"
  echo "h2load -c4 -m10 (HTTP/2 over TLS), requests/s: $(median "${H2L[@]}") [${H2L[*]}]"
  python3 -c "print(f'ratios: h3/h2 requests {$(median "${H3R[@]}")/$(median "${H2R[@]}"):.2f}  download {$(median "${H3D[@]}")/$(median "${H2D[@]}"):.2f}')"
  echo "date: $(date -u +%FT%TZ)"
} | tee "$OUT/h3-$(date -u +%Y%m%dT%H%M%SZ).txt"
