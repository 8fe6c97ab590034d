#!/usr/bin/env bash
# The build to deploy: vane optimised with a profile of its own hot paths (profile-guided
# optimisation). LLVM then lays out and inlines the code by what a proxy under load runs, not
# by guesses: a proxied keep-alive request took 10 % less CPU here than the plain release
# build's (bench/history-2026-12-05b.md, "HTTP, twenty-first stop").
#
#   dist/pgo-build.sh        # prints the binary's path: $CARGO_TARGET_DIR/pgo/vane
#
# Three steps, about 15 minutes on 2 cores:
# 1. an instrumented release build (its own target dir, so the plain build stays as it is);
# 2. that build runs a training load on loopback: HTTP/1.1 keep-alive and a new connection per
#    request, h2c, TLS (HTTP/1.1 and HTTP/2, new and kept connections), 1 MiB responses and an
#    L4 relay, each through the flows bench/ uses, against a local nginx, with wrk and h2load;
# 3. the release build again, with the merged profile.
# Installs what it needs when missing: rustup's llvm-tools (llvm-profdata), and nginx, wrk
# and h2load from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ensure_tools "nginx wrk" nginx-light wrk
ensure_tools h2load nghttp2-client
rustup component add llvm-tools >/dev/null 2>&1 || true
HOST=$(rustc -vV | awk '/^host:/{print $2}')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
[ -x "$PROFDATA" ] || { echo "llvm-profdata not found at $PROFDATA (rustup component add llvm-tools)" >&2; exit 1; }
PGO="$CARGO_TARGET_DIR/pgo"
mkdir -p "$PGO"
rm -rf "$PGO/raw"

echo "== 1/3 instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$PGO/raw" cargo build --release -q --bin vane --target-dir "$PGO/generate"
VANE="$PGO/generate/release/vane"

echo "== 2/3 training load" >&2
UP=$(port) VP=$(port) VT=$(port) VR=$(port)
bench_pair
start_upstream "$UP"
vane_http_proxy_config "$VP" "$UP"
vane_tls_port "$VT" "$TMP/bench.key" "$TMP/bench.crt"
# An L4 relay to the upstream.
mkdir -p "$TMP/vane/listener/[$VR]"
vane_relay_flow "$UP" > "$TMP/vane/listener/[$VR]/tcp.yaml"
start_vane
for p in "$UP" "$VP" "$VT" "$VR"; do wait_port "$p"; done
serves_cert "$VT" "$TMP/bench.crt"
SECS=${TRAIN_SECS:-4}
load() { "$@" > /dev/null 2>&1 || { echo "training load failed: $*" >&2; exit 1; }; }
load wrk -t2 -c50 -d"${SECS}s" "http://127.0.0.1:$VP/"
load wrk -t2 -c50 -d"${SECS}s" -H "Connection: close" "http://127.0.0.1:$VP/"
load h2load -c10 -m10 -D"$SECS" "http://127.0.0.1:$VP/"
load wrk -t2 -c10 -d"${SECS}s" "http://127.0.0.1:$VP/big"
load wrk -t2 -c50 -d"${SECS}s" "https://127.0.0.1:$VT/"
load wrk -t2 -c50 -d"${SECS}s" -H "Connection: close" "https://127.0.0.1:$VT/"
load h2load -c10 -m10 -D"$SECS" "https://127.0.0.1:$VT/"
load wrk -t2 -c50 -d"${SECS}s" "http://127.0.0.1:$VR/"
# A graceful stop: the profile is written when the process exits.
kill -TERM "$VPID"
wait "$VPID" || true
ls "$PGO"/raw/*.profraw > /dev/null 2>&1 || { echo "the instrumented build wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o "$PGO/vane.profdata" "$PGO/raw"

echo "== 3/3 optimised build" >&2
RUSTFLAGS="-Cprofile-use=$PGO/vane.profdata" cargo build --release -q --bin vane --target-dir "$PGO/use"
cp "$PGO/use/release/vane" "$PGO/vane"
echo "$PGO/vane"
