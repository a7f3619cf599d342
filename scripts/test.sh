#!/usr/bin/env bash
# Every check the project holds itself to: formatting, lints, docs, the whole test suite
# (unit, integration over loopback sockets, macro compile-fail cases, doc examples) and the
# example programs. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "documentation (cargo doc, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "tests (cargo test --workspace)"
cargo test --workspace --locked

step "examples"
cargo run --locked --quiet --example quickstart
cargo run --locked --quiet --example route_guide
cargo run --locked --quiet --example proto_greeter
cargo run --locked --quiet --example interceptors
