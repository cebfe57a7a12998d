#!/usr/bin/env bash
# The test command: from a fresh machine (root, Debian bookworm) to a full test run.
# Installs what is missing, then: fmt check, the import-cycle check on the engine's
# modules, clippy -D warnings (host crates, and the eBPF crate for bpfel), build, the C
# ABI's examples through CMake and pkg-config and its cross builds (Windows .dll, macOS
# check), the fuzz seed replays, the ring logic under miri, the Debian package (built,
# linted, installed and purged; its unit verified, scored and its system-call filter
# checked against a traced engine: scripts/package.sh, scripts/unit-syscalls.sh), the
# benchmark peers' loopback
# smoke check (tools/peers), then the unit, simulation and privileged integration tests in
# one serial run (the privileged ones create namespaces and attach XDP; the C and C#
# clients and the C ABI's header check are among them), and short fuzz runs when the fuzz
# targets exist. The privileged `tests` crate is not a default member (a plain `cargo test`
# must pass for a contributor without root), so every step names it (or `--workspace`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints the seconds since the run began, so the log shows where CI time goes
# (the suite must stay well inside CI's budget as it grows).
t0=$(date +%s)
step() { printf '\n==> [%4d s] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }

step "setup (idempotent)"
bash scripts/setup.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the integration tests need root (namespaces, XDP, AF_XDP)" >&2
  exit 1
fi

# Leftovers from an interrupted earlier run must not collide with this one. Only
# topologies whose owner has exited go: a suite running beside this one keeps its own.
bash scripts/netns.sh down --all

step "format"
cargo fmt --all -- --check

step "import cycles among the engine's and the load generator's modules (tools/import-cycles)"
cargo fmt --manifest-path tools/import-cycles/Cargo.toml -- --check
cargo test --locked --manifest-path tools/import-cycles/Cargo.toml
cargo run --locked --quiet --manifest-path tools/import-cycles/Cargo.toml -- userspace/engine/src
cargo run --locked --quiet --manifest-path tools/import-cycles/Cargo.toml -- userspace/bench/src

step "clippy (host crates, the privileged tests crate, the import-cycle checker)"
cargo clippy --all-targets --locked --workspace --exclude xrudp-ebpf -- -D warnings
cargo clippy --all-targets --locked --manifest-path tools/import-cycles/Cargo.toml -- -D warnings

step "clippy (eBPF crate, bpfel-unknown-none)"
rustup run nightly cargo clippy --locked --manifest-path ebpf/Cargo.toml \
  --target bpfel-unknown-none -Z build-std=core --release -- -D warnings

step "build"
cargo build --all-targets --locked --workspace --exclude xrudp-ebpf
t_build=$(date +%s)

step "C ABI: the C examples through the CMake package config and pkg-config"
capi_tmp=$(mktemp -d)
trap 'rm -rf "$capi_tmp"' EXIT
capi_lib="$(realpath "${CARGO_TARGET_DIR:-target}")/debug"
cmake -S userspace/capi/examples/c -B "$capi_tmp/cmake" -DCMAKE_C_FLAGS=-Werror \
  -Dxrudp_DIR="$PWD/userspace/capi/cmake" -DXRUDP_LIB_DIR="$capi_lib" >/dev/null
cmake --build "$capi_tmp/cmake" >/dev/null
sed -e "s|@INCLUDEDIR@|$PWD/userspace/capi/include|" -e "s|@LIBDIR@|$capi_lib|" \
  userspace/capi/xrudp.pc.in >"$capi_tmp/xrudp.pc"
# shellcheck disable=SC2046 # pkg-config prints several flags
cc -std=c11 -Wall -Wextra -Werror userspace/capi/examples/c/echo_client.c \
  $(PKG_CONFIG_PATH="$capi_tmp" pkg-config --cflags --libs xrudp) -o "$capi_tmp/echo_client"

# The C ABI's header check (userspace/capi/tests/header.rs: cbindgen regenerates
# include/xrudp.h and a stale committed copy fails) runs with the tests below.

# Unoptimised and without debug info: this build proves the .dll compiles and links; with
# the workspace's opt-level 2 for dependencies a cold build took 207 s instead of 43 s.
step "C ABI: Windows .dll (x86_64-pc-windows-gnu, mingw-w64; unoptimised)"
cargo build --locked -p xrudp-capi --target x86_64-pc-windows-gnu \
  --config 'profile.dev.package."*".opt-level=0' --config profile.dev.opt-level=0 \
  --config profile.dev.debug=0
test -s "${CARGO_TARGET_DIR:-target}/x86_64-pc-windows-gnu/debug/xrudp_c.dll"

step "C ABI and client: macOS (cargo check, aarch64 and x86_64)"
cargo check --locked -p xrudp-capi -p xrudp-client --target aarch64-apple-darwin
cargo check --locked -p xrudp-capi -p xrudp-client --target x86_64-apple-darwin


step "fuzz seed replays (tests/fuzz, its own workspace and Cargo.lock, stable)"
cargo test --locked --manifest-path tests/fuzz/Cargo.toml

step "AF_XDP ring and frame-pool logic under miri"
cargo +nightly miri setup >/dev/null
cargo +nightly miri test --locked -p xrudp-xdp --lib ring

# The package of the binary the build step made (--profile dev): a release build with fat
# LTO would add minutes for the same packaging logic; scripts/package.sh alone makes the
# release package.
step "Debian package: build, lintian, dpkg -i, the unit's verify and security score, purge"
bash scripts/package.sh --profile dev --install-test

step "the unit's system-call filter against a traced engine (scripts/unit-syscalls.sh)"
bash scripts/unit-syscalls.sh

step "benchmark peers (tools/peers: ENet and kernel UDP echo, built and checked on loopback)"
bash tools/peers/smoke.sh

# One invocation over exactly the build step's package set: cargo unifies features over
# the packages it is given, so `-p xrudp-tests` or `--exclude xrudp-tests` would each build
# a second copy of half the dependency tree and the engine's eBPF object (10 minutes of CI
# measured on 994738a). Serial, because the privileged tests create namespaces and attach
# XDP; the unprivileged tests take seconds either way.
step "unit, simulation and privileged integration tests (one serial run over the build's package set)"
cargo test --locked --workspace --exclude xrudp-ebpf -- --test-threads=1

if [ -x scripts/fuzz.sh ]; then
  step "fuzz targets (short runs)"
  bash scripts/fuzz.sh --seconds "${XRUDP_FUZZ_SECONDS:-10}"
fi

t1=$(date +%s)
step "done"
echo "scripts/test.sh: all green in $((t1 - t0)) s (setup+build $((t_build - t0)) s, tests $((t1 - t_build)) s)" >&2
