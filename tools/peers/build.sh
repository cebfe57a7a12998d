#!/usr/bin/env bash
# Builds the comparison peers (see tools/peers/README.md): enet_echo, udp_echo and
# tick_load, into OUTDIR (default target/peers, relative to the repository root).
#
#   bash tools/peers/build.sh [OUTDIR]
#
# Needs gcc and, for the ENet programs, ENet's headers and library
# (Debian/Ubuntu: apt-get install libenet-dev).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/peers}"

if [ "$#" -gt 1 ]; then
    echo "usage: bash tools/peers/build.sh [OUTDIR]" >&2
    exit 2
fi

cc="${CC:-gcc}"
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "build.sh: $cc not found (apt-get install gcc)" >&2
    exit 1
fi

cflags=(-O2 -g -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE)

# ENet flags: pkg-config when it knows libenet, else the plain -lenet.
enet_cflags=()
enet_libs=(-lenet)
if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libenet 2>/dev/null; then
    read -r -a enet_cflags <<<"$(pkg-config --cflags libenet)"
    read -r -a enet_libs <<<"$(pkg-config --libs libenet)"
fi

# Is enet.h there? Compile a one-line probe rather than guess at include paths.
if ! printf '#include <enet/enet.h>\nint main(void){return 0;}\n' |
    "$cc" "${enet_cflags[@]}" -x c -fsyntax-only - 2>/dev/null; then
    echo "build.sh: <enet/enet.h> not found: install ENet's headers (apt-get install -y libenet-dev)" >&2
    exit 1
fi

mkdir -p "$out"

build() {
    local name="$1"
    shift
    echo "build.sh: $out/$name"
    "$cc" "${cflags[@]}" "$@" -o "$out/$name" "$here/$name.c" ${extra_libs[@]+"${extra_libs[@]}"}
}

extra_libs=()
build udp_echo
extra_libs=("${enet_libs[@]}")
build enet_echo ${enet_cflags[@]+"${enet_cflags[@]}"}
build tick_load ${enet_cflags[@]+"${enet_cflags[@]}"}
