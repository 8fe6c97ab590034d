# Shared by the bench scripts: tools, free ports, a scratch dir whose processes are stopped on
# exit, and waiting for a port. Source it from a script that has `set -euo pipefail`.
# The workspace's target/ (scripts run from the repository root) unless CARGO_TARGET_DIR is set.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Where each script writes its results file.
OUT=bench/results
mkdir -p "$OUT"

# Installs the Debian packages named when any of the commands named is missing.
# Usage: ensure_tools "cmd1 cmd2" pkg1 pkg2 ...
ensure_tools() {
  local cmds=$1; shift
  for c in $cmds; do
    if ! command -v "$c" >/dev/null 2>&1; then
      apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
      return
    fi
  done
}

# The vane binary under test: $VANE_BIN when set (to compare two builds in one sitting, e.g.
# before and after a change), else a fresh release build of this checkout: the plain one, or
# with VANE_BUILD=pgo the one dist/pgo-build.sh makes to deploy.
vane_binary() {
  if [ -n "${VANE_BIN:-}" ]; then echo "$VANE_BIN"; return; fi
  if [ "${VANE_BUILD:-}" = pgo ]; then dist/pgo-build.sh | tail -1; return; fi
  cargo build --release -q >&2
  echo "$CARGO_TARGET_DIR/release/vane"
}

# Installs the Debian packages named that are not installed yet (a module such as
# libnginx-mod-stream has no command of its own for ensure_tools to look for).
ensure_packages() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

TMP=$(mktemp -d)
chmod 755 "$TMP"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

# Resident memory of processes $@ together, in KiB.
rss_kb() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/"$p"/status))); done; echo "$t"; }

wait_port() {
  for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "port $1 never opened" >&2
  tail -n 5 "$TMP"/*.log "$TMP"/*.err >&2 2>/dev/null
  return 1
}

# A vane flow that relays every connection (or UDP session) to 127.0.0.1:$1
# (`internal.transport.proxy`): the L4 listener and resolver flows the benches write.
vane_relay_flow() {
  printf 'connection:\n  internal.transport.proxy:\n    input: { target.ip: 127.0.0.1, target.port: %s }\n' "$1"
}

# A vane config dir in $TMP/vane: plaintext HTTP on port $1 (resolver `http` -> application
# `httpx`) forwarding every request with `internal.driver.upstream` to 127.0.0.1:$2.
vane_http_proxy_config() {
  local vp=$1 up=$2
  mkdir -p "$TMP/vane/listener/[$vp]" "$TMP/vane/resolver" "$TMP/vane/application"
  printf 'connection:\n  internal.transport.upgrade:\n    input: { protocol: http }\n' > "$TMP/vane/listener/[$vp]/tcp.yaml"
  printf 'connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n' > "$TMP/vane/resolver/http.yaml"
  cat > "$TMP/vane/application/httpx.yaml" <<CFG
pipeline:
  internal.driver.upstream:
    input: { url_prefix: "http://127.0.0.1:$up" }
    output:
      success: { internal.terminator.response: {} }
      failure: { internal.terminator.response: { input: { status: 502 } } }
CFG
}

# A self-signed ECDSA P-256 pair for localhost (as vane makes its default one): $1 key, $2 cert.
# Valid for 30 days: vane replaces a default certificate that expires within 7 (as 0.9.2
# does), and until 2026-12-05 this pair, made for 2 days, was replaced so: vane's TLS rows
# then served a certificate of its own, not the one HAProxy and nginx served.
ecdsa_pair() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout "$1" -out "$2" 2> /dev/null
}

# The upstream the L7 benches proxy to: an nginx of its own on port $1 (so no proxy's CPU
# figure includes the upstream's work), answering a small body on every path and 1 MiB of
# random bytes on /big.
start_upstream() {
  head -c 1048576 /dev/urandom > "$TMP/big.bin"
  { NGINX_NAME=up nginx_head 4096; cat <<CFG; } > "$TMP/up.conf"
http {
  access_log off;
  server {
    listen 127.0.0.1:$1;
    location / { return 200 "hello from the upstream\n"; }
    location = /big { alias $TMP/big.bin; }
  }
}
CFG
  nginx -c "$TMP/up.conf" -g 'daemon off;' > "$TMP/up.log" 2>&1 &
  PIDS+=("$!")
}

# One certificate for every proxy: ECDSA P-256, as vane makes its default one
# ($TMP/bench.key, .crt, and .pem with both for HAProxy).
bench_pair() {
  ecdsa_pair "$TMP/bench.key" "$TMP/bench.crt"
  cat "$TMP/bench.crt" "$TMP/bench.key" > "$TMP/bench.pem"
}

# Fails unless the TLS server on port $1 serves the certificate $2: a proxy that fell back
# to another one would be measured with another certificate.
serves_cert() {
  local got want
  got=$(openssl s_client -connect "127.0.0.1:$1" < /dev/null 2> /dev/null | openssl x509 -noout -fingerprint -sha256 2> /dev/null || true)
  want=$(openssl x509 -in "$2" -noout -fingerprint -sha256)
  [ "$got" = "$want" ] || { echo "port $1 does not serve $2 (${got:-no certificate})" >&2; return 1; }
}

# TLS terminated by vane on port $1 (resolver `tls` -> application `httpx`), with the pair
# $2 (key) and $3 (cert) as its default certificate when given.
vane_tls_port() {
  mkdir -p "$TMP/vane/listener/[$1]" "$TMP/vane/resolver" "$TMP/vane/certs"
  printf 'connection:\n  internal.transport.upgrade:\n    input: { protocol: tls }\n' > "$TMP/vane/listener/[$1]/tcp.yaml"
  printf 'connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n' > "$TMP/vane/resolver/tls.yaml"
  if [ -n "${2:-}" ]; then cp "$2" "$TMP/vane/certs/default.key"; cp "$3" "$TMP/vane/certs/default.crt"; fi
}

# Starts vane on $TMP/vane ($TMP/$VANE_DIR when set, for a second vane; its log beside it):
# loopback, no metrics endpoint, quiet, no access log; extra VAR=value arguments go into its
# environment. Sets VPID.
start_vane() {
  local dir=$TMP/${VANE_DIR:-vane}
  env LISTEN_ADDR=127.0.0.1 METRICS_ADDR=off LOG_LEVEL=warn ACCESS_LOG=off MAX_CONNECTIONS_PER_IP=100000 "$@" \
    "$VANE" run --config "$dir" > "$dir.log" 2>&1 &
  VPID=$!; PIDS+=("$VPID")
}

# The global and defaults sections of a HAProxy config, 2 threads like the other proxies
# (HAPROXY_THREADS=1 for one).
# Usage: haproxy_head MODE [CLIENT_SERVER_TIMEOUT] [MAXCONN]
haproxy_head() {
  cat <<CFG
global
  maxconn ${3:-9000}
  nbthread ${HAPROXY_THREADS:-2}
defaults
  mode $1
  timeout connect 5s
  timeout client ${2:-1m}
  timeout server ${2:-1m}
CFG
}

# HAProxy as a plain HTTP proxy with one frontend on port $1 (more bind options in $2, e.g.
# `proto h2`) to the upstream on $UP, its connections reused; HAPROXY_THREADS threads. Prints
# the config.
haproxy_http_config() {
  haproxy_head http
  cat <<CFG
  option http-keep-alive
frontend f
  bind 127.0.0.1:$1${2:+ $2}
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$UP
CFG
}

# HAProxy as the L7 proxy in $TMP/haproxy.cfg: HTTP/1.1 on port $1, h2c on $2 and TLS on $3
# (the bench certificate, ALPN h2 and http/1.1, sessions resumed from its cache as nginx's
# are: no tickets), all to the upstream on $4 with its connections reused.
haproxy_proxy_config() {
  { haproxy_head http; cat <<CFG; } > "$TMP/haproxy.cfg"
  option http-keep-alive
frontend f
  bind 127.0.0.1:$1
  bind 127.0.0.1:$2 proto h2
  bind 127.0.0.1:$3 ssl crt $TMP/bench.pem alpn h2,http/1.1 no-tls-tickets
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$4
CFG
}

# The head of an nginx config in $TMP: one worker (NGINX_WORKERS=2 for two), pid and error log
# in $TMP (NGINX_NAME names them, for a second instance).
# Usage: nginx_head [WORKER_CONNECTIONS]
nginx_head() {
  cat <<CFG
worker_processes ${NGINX_WORKERS:-1};
pid $TMP/${NGINX_NAME:-nginx}.pid;
error_log $TMP/${NGINX_NAME:-nginx}.err warn;
events { worker_connections ${1:-1024}; }
CFG
}

# The http block of nginx as the L7 proxy to the upstream on $UP: $1 names its TLS session
# cache, $2 are its listen lines (the bench certificate on those with `ssl`).
nginx_proxy() {
  cat <<CFG
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server {
    $2
    ssl_certificate $TMP/bench.crt;
    ssl_certificate_key $TMP/bench.key;
    ssl_session_tickets off;
    ssl_session_cache shared:$1:1m;
    # nginx 1.22 (Debian 12) still offers TLS 1.0-1.2 only by default; 1.23.4 added 1.3.
    # Without this it answered every TLS row with TLS 1.2, whose resumption skips the key
    # exchange that TLS 1.3's does (see the TLS 1.2 rows at the end).
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CFG
}

# Runs HAProxy on $TMP/haproxy.cfg ($TMP/$1.cfg when given). Sets HPID.
start_haproxy() {
  haproxy -f "$TMP/${1:-haproxy}.cfg" -db > "$TMP/${1:-haproxy}.log" 2>&1 &
  HPID=$!; PIDS+=("$HPID")
}
