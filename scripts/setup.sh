#!/usr/bin/env bash
# Take a fresh Debian bookworm machine (root) to one that can build and test xrudp.
# Idempotent: every step checks first and does nothing when already done.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (apt-get, network namespaces and XDP all need it); try: sudo $0"
    exit 1
  fi
}

# libenet-dev: the ENet peer in tools/peers (benchmarked beside xrudp, built and smoke-tested
# by the test command).
# gcc, mono-mcs, mono-runtime, valgrind: the C ABI's examples (userspace/capi), built and
# run against the engine by tests/tests/c_clients.rs, the misuse program under valgrind.
# gcc-mingw-w64-x86-64: the Windows .dll of the C ABI (x86_64-pc-windows-gnu). cmake:
# the C examples built through the C ABI's CMake package config.
# lintian, man-db, systemd, strace: the Debian package's checks (scripts/package.sh:
# lintian, the unit's `systemd-analyze verify`, which also checks its man pages exist) and
# the unit's system-call filter against a traced engine (scripts/unit-syscalls.sh).
# protobuf-compiler, libprotobuf-dev: protoc and the protobuf well-known types
# (google/protobuf/*.proto), which the `agones` crate's build script (the Agones SDK behind
# `xrudp attach --agones`) and the tests' stand-in Agones sidecar compile the SDK's proto with.
APT_PKGS=(clang llvm-22-dev m4 libelf-dev zlib1g-dev make pkg-config iproute2 ethtool iputils-ping procps libenet-dev
  gcc mono-mcs mono-runtime valgrind gcc-mingw-w64-x86-64 cmake lintian man-db systemd strace protobuf-compiler libprotobuf-dev)

# The game-client targets the C ABI is built (Windows) or checked (macOS) for.
RUST_TARGETS=(x86_64-pc-windows-gnu aarch64-apple-darwin x86_64-apple-darwin)

install_apt() {
  local missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing apt packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_rust_src() {
  if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    log "adding rust-src to the nightly toolchain (needed for -Z build-std=core)"
    rustup component add rust-src --toolchain nightly
  fi
  if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^miri'; then
    log "adding miri to the nightly toolchain (runs the AF_XDP ring logic under the interpreter)"
    rustup component add miri --toolchain nightly
  fi
}

install_rust_targets() {
  local installed
  installed=$(rustup target list --installed)
  for t in "${RUST_TARGETS[@]}"; do
    if ! grep -qx "$t" <<<"$installed"; then
      log "adding the Rust target $t (the C ABI's cross builds in scripts/test.sh)"
      rustup target add "$t"
    fi
  done
}

llvm_major_of_nightly() {
  rustup run nightly rustc --version --verbose | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p'
}

# bpf-linker does not print its LLVM version; read the libLLVM it is linked against.
bpf_linker_llvm_major() {
  ldd "$(command -v bpf-linker)" 2>/dev/null | sed -n 's/.*libLLVM[.-]\{0,1\}\(so\.\)\{0,1\}\([0-9][0-9]*\).*/\2/p' | head -1
}

install_bpf_linker() {
  local want
  want=$(llvm_major_of_nightly)
  if [ -z "$want" ]; then
    log "cannot read the LLVM version of the nightly toolchain (rustup run nightly rustc -vV)"
    exit 1
  fi
  if command -v bpf-linker >/dev/null 2>&1; then
    local have
    have=$(bpf_linker_llvm_major)
    if [ "$have" = "$want" ]; then
      return 0
    fi
    log "bpf-linker links LLVM $have but nightly rustc uses LLVM $want: reinstalling"
  fi
  if [ ! -x "/usr/lib/llvm-$want/bin/llvm-config" ]; then
    log "nightly rustc uses LLVM $want but /usr/lib/llvm-$want is missing; install llvm-$want-dev"
    exit 1
  fi
  log "building bpf-linker against LLVM $want (about 1.5 minutes)"
  LLVM_PREFIX="/usr/lib/llvm-$want" cargo install bpf-linker --locked --force \
    --no-default-features --features "llvm-$want"
}

install_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (runs the fuzz targets in tests/fuzz: scripts/fuzz.sh)"
    cargo install cargo-fuzz --locked
  fi
}

# Pinned: the version whose behaviour scripts/package.sh was written against.
CARGO_DEB_VERSION=3.8.0
install_cargo_deb() {
  if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
    log "installing cargo-deb $CARGO_DEB_VERSION (builds the Debian package: scripts/package.sh)"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --force
  fi
}

need_root
install_apt
install_rust_src
install_rust_targets
install_bpf_linker
install_cargo_fuzz
install_cargo_deb
log "toolchain ready: $(rustup run nightly rustc --version), bpf-linker $(bpf-linker --version 2>/dev/null | head -1)"
