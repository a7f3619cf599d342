#!/usr/bin/env bash
# Every check the project holds itself to: formatting, lints, docs, the whole test suite
# (unit, integration over loopback sockets, against a real etcd server, macro compile-fail
# cases, doc examples) and the example programs. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# The etcd registry's tests run against a real etcd server (each test starts its own, on free
# loopback ports), and etcd's client crate needs protoc to build: both from Debian's packages.
step "test dependencies (etcd-server, protobuf-compiler)"
missing=()
command -v "${ETCD_BIN:-etcd}" >/dev/null 2>&1 || missing+=(etcd-server)
command -v "${PROTOC:-protoc}" >/dev/null 2>&1 || missing+=(protobuf-compiler)
if ((${#missing[@]})); then
    as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo)
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing ${missing[*]} and no apt-get to install them: install etcd and protoc" >&2
        exit 1
    fi
    echo "installing ${missing[*]}"
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "etcd: $("${ETCD_BIN:-etcd}" --version | head -1); protoc: $("${PROTOC:-protoc}" --version)"

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings, all features)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "documentation (cargo doc, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked --quiet

step "tests (cargo test --workspace --all-features)"
cargo test --workspace --all-features --locked

step "examples"
cargo run --locked --quiet --example quickstart
cargo run --locked --quiet --example route_guide
cargo run --locked --quiet --example proto_greeter
cargo run --locked --quiet --example interceptors
cargo run --locked --quiet --example discovery

step "benchmark harness (a --quick run of the comparison with tonic, tarpc and raw TCP)"
cargo run --locked --quiet -p benches --bin compare -- --quick >/dev/null
echo "ok"
