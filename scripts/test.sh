#!/usr/bin/env bash
# Every check the project holds itself to: formatting, lints, docs, the whole test suite
# (unit, integration over loopback sockets, against a real etcd server, macro compile-fail
# cases, doc examples) and the example programs. CI runs exactly this, and it is the only
# place where anything is installed: what it needs, it installs and then checks by running.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# The script builds everything once: incremental state would only cost time and disk.
export CARGO_INCREMENTAL=0

# What the tests need beyond the Rust toolchain: only etcd's server (the etcd registry is
# tested against a real one), from Debian's `etcd-server` if it is missing. Each tool is
# checked by running it, not by looking for a file.
step "tools (the Rust toolchain; etcd, installed if missing)"
for tool in "cargo --version" "rustc --version" "cargo fmt --version" "cargo clippy --version" "python3 --version"; do
    $tool >/dev/null 2>&1 || { echo "cannot run '$tool': the tests need a Rust toolchain with rustfmt and clippy (rustup) and python3" >&2; exit 1; }
done
etcd_bin="${ETCD_BIN:-etcd}"
if ! "$etcd_bin" --version >/dev/null 2>&1; then
    if [ -n "${ETCD_BIN:-}" ]; then
        echo "ETCD_BIN=$ETCD_BIN does not run" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "etcd is missing and there is no apt-get to install it: install etcd (v3.4 or later), or set ETCD_BIN" >&2
        exit 1
    fi
    as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo)
    echo "installing etcd-server"
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
    "$etcd_bin" --version >/dev/null 2>&1 || { echo "etcd-server was installed but '$etcd_bin --version' fails" >&2; exit 1; }
fi
echo "$(cargo --version); $(rustc --version); etcd $("$etcd_bin" --version | head -1)"

# Nothing in the build may need protoc (every .proto is parsed by protox, in Rust). Prove it:
# from here on, `protoc` on PATH is a stand-in that fails loudly, and PROTOC points nowhere, so
# a dependency that reaches for protoc fails this script on any machine, with or without one.
no_protoc="$(mktemp -d)"
trap 'rm -rf "$no_protoc"' EXIT
cat >"$no_protoc/protoc" <<'STANDIN'
#!/bin/sh
echo "protoc was called ($*), but the build must not need it: parse .proto files with protox" >&2
exit 1
STANDIN
chmod +x "$no_protoc/protoc"
export PATH="$no_protoc:$PATH"
export PROTOC="$no_protoc/missing/protoc"
if protoc --version >/dev/null 2>&1; then
    echo "the protoc stand-in did not take effect" >&2
    exit 1
fi
echo "protoc shadowed by a failing stand-in"

# A free loopback port: one nothing answers on.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

# The discovery example against a real etcd, started here on free ports and stopped after.
run_discovery_on_etcd() {
    local data client peer pid ready=""
    data="$(mktemp -d)"
    client="$(free_port)"
    peer="$(free_port)"
    "$etcd_bin" --name=example --data-dir="$data/data" \
        --listen-client-urls="http://127.0.0.1:$client" --advertise-client-urls="http://127.0.0.1:$client" \
        --listen-peer-urls="http://127.0.0.1:$peer" --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
        --initial-cluster="example=http://127.0.0.1:$peer" >"$data/etcd.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        # etcd's /health says true once it has a leader and serves requests.
        if { exec 3<>"/dev/tcp/127.0.0.1/$client"; } 2>/dev/null; then
            printf 'GET /health HTTP/1.0\r\n\r\n' >&3
            if grep -q '"health":"true"' <&3; then ready=1; fi
            exec 3<&-
            [ -n "$ready" ] && break
        fi
        sleep 0.1
    done
    if [ -z "$ready" ]; then
        kill "$pid" 2>/dev/null || true
        echo "etcd did not become healthy; its log:" >&2
        cat "$data/etcd.log" >&2
        exit 1
    fi
    local status=0
    cargo run --locked --quiet --example discovery --features etcd -- --etcd "http://127.0.0.1:$client" || status=$?
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    return "$status"
}

# The fuzz targets of rpc-core/fuzz, each for FUZZ_SECONDS (default 15), from a seed corpus
# made of PROTOCOL.md's golden vectors. They need the nightly toolchain and cargo-fuzz; the
# latter is installed here if missing. A crash fails the script and leaves its input in
# rpc-core/fuzz/artifacts.
run_fuzz_targets() {
    cargo +nightly --version >/dev/null 2>&1 || {
        echo "the fuzz targets need Rust's nightly toolchain: rustup toolchain install nightly" >&2
        exit 1
    }
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "installing cargo-fuzz"
        cargo install cargo-fuzz --version 0.13.2 --locked --quiet
        cargo fuzz --version >/dev/null 2>&1 || { echo "cargo-fuzz was installed but does not run" >&2; exit 1; }
    fi
    local corpus
    corpus="$(mktemp -d)"
    python3 rpc-core/fuzz/seeds.py "$corpus"
    local target
    for target in frame_decoder header server_connection; do
        if ! (cd rpc-core && cargo +nightly fuzz run --sanitizer none --debug-assertions "$target" "$corpus/$target" -- \
            -max_total_time="${FUZZ_SECONDS:-15}" -rss_limit_mb=2048 -print_final_stats=1) >"$corpus/$target.log" 2>&1; then
            tail -n 40 "$corpus/$target.log" >&2
            echo "fuzz target $target failed: its input is in rpc-core/fuzz/artifacts/$target" >&2
            exit 1
        fi
        echo "  $target: $(grep -m1 -o 'number_of_executed_units: [0-9]*' "$corpus/$target.log" | cut -d' ' -f2) inputs, no failure"
    done
    rm -rf "$corpus"
}

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "layers (rpc-core's modules import only downwards: scripts/check_layers.py)"
python3 scripts/check_layers.py

step "lints (cargo clippy -D warnings, all features)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "documentation (cargo doc, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked --quiet

step "tests (cargo test --workspace --all-features)"
cargo test --workspace --all-features --locked

step "fuzzing (each target for a short run from the golden vectors: cargo fuzz, on nightly)"
run_fuzz_targets

step "examples"
cargo run --locked --quiet --example quickstart
cargo run --locked --quiet --example route_guide
cargo run --locked --quiet --example proto_greeter
cargo run --locked --quiet --example interceptors
cargo run --locked --quiet --example discovery
cargo run --locked --quiet --example tls
cargo run --locked --quiet --example gateway
run_discovery_on_etcd

step "benchmark harnesses (--quick runs: the comparison with tonic, tarpc and raw TCP; the gateway's added latency)"
cargo run --locked --quiet -p benches --bin compare -- --quick >/dev/null
cargo run --locked --quiet -p benches --bin gateway -- --quick >/dev/null
step "stress benchmark (a --quick run: slow, silent and hostile peers against a server, a canary client beside them)"
cargo run --locked --quiet -p benches --bin stress -- --quick | tail -n 14
echo "ok"
