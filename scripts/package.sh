#!/usr/bin/env bash
# The Debian package: build it, lint it, and prove that it installs and goes away.
#
#   package.sh [--profile release|dev] [--install-test]
#
# Generates the man pages and shell completions from the clap definitions
# (userspace/engine/examples/gen-docs.rs) into build/package-docs, then builds
# target/package/xrudp_<version>_<arch>.deb with cargo-deb ([package.metadata.deb] in
# userspace/engine/Cargo.toml): /usr/bin/xrudp, the hardened xrudp@.service, /etc/xrudp
# with an example settings file, man pages, bash/zsh/fish completions, the docs.
# `lintian` must report no errors.
#
# --profile: release (the default) is what ships; the test command passes dev to
# package the binary its build step already made, instead of a second, fat-LTO build.
# --install-test (root): `dpkg -i` the package; check the binary runs, the example
# settings pass `--check`, the man pages and completions are where the shells look, and
# the installed unit passes `systemd-analyze verify` and scores "OK" or better
# (exposure ≤ 4.9) in `systemd-analyze security --offline=true`; then `dpkg --purge` it
# and check that /etc, /usr, /lib and dpkg's database hold exactly what they held
# before. Refuses to run if an xrudp package is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "package.sh: $*" >&2; exit 1; }
log() { echo "package.sh: $*" >&2; }

profile=release
install_test=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --install-test) install_test=1; shift ;;
    *) die "unknown argument $1 (usage: package.sh [--profile release|dev] [--install-test])" ;;
  esac
done
command -v cargo-deb >/dev/null || die "cargo-deb is missing: run scripts/setup.sh"
command -v lintian >/dev/null || die "lintian is missing: run scripts/setup.sh"

out=target/package
rm -rf "$out" build/package-docs
mkdir -p "$out"

build=()
if [ "$profile" = dev ]; then
  # The binaries the test command's build step made (`cargo build --all-targets
  # --workspace`): building `-p xrudp` alone would unify features differently and
  # rebuild half the dependency tree. cargo-deb maps the manifest's target/release/
  # asset to the profile's directory.
  bin_dir="${CARGO_TARGET_DIR:-target}/debug"
  for f in "$bin_dir/xrudp" "$bin_dir/examples/gen-docs"; do
    [ -x "$f" ] || die "$f is missing: build first (cargo build --all-targets --workspace --exclude xrudp-ebpf)"
  done
  "$bin_dir/examples/gen-docs" build/package-docs >/dev/null
  build=(--no-build)
else
  cargo run --locked --quiet --profile "$profile" -p xrudp --example gen-docs -- build/package-docs >/dev/null
fi
cargo deb --locked -p xrudp --profile "$profile" "${build[@]}" --no-separate-debug-symbols -o "$out/" >/dev/null
deb=$(ls "$out"/xrudp_*.deb)
log "built $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --contents "$deb" >"$out/contents"

# lintian: errors fail; everything else is printed for the reader.
lintian --fail-on error --tag-display-limit 0 "$deb" >"$out/lintian" 2>&1 || {
  cat "$out/lintian" >&2
  die "lintian reports errors"
}
log "lintian: $(grep -c '^E:' "$out/lintian" || true) errors, $(grep -c '^W:' "$out/lintian" || true) warnings"
grep '^[WI]:' "$out/lintian" >&2 || true

[ "$install_test" -eq 1 ] || exit 0
[ "$(id -u)" -eq 0 ] || die "--install-test must run as root (dpkg -i)"
if dpkg-query -W -f='${Status}' xrudp 2>/dev/null | grep -q 'installed'; then
  die "an xrudp package is already installed; remove it first (dpkg --purge xrudp)"
fi

# What the package may touch, listed before it is installed and after it is purged.
snapshot() {
  find /etc /usr /lib /var/lib/dpkg/info -xdev \( -type f -o -type l -o -type d \) 2>/dev/null |
    grep -v -e '^/usr/lib/python3' -e '/__pycache__' | sort
}
snapshot >"$out/before"
installed=0
trap '[ "$installed" -eq 1 ] && dpkg --purge xrudp >/dev/null 2>&1 || true' EXIT

dpkg -i "$deb" >/dev/null
installed=1
/usr/bin/xrudp --version >/dev/null
/usr/bin/xrudp attach --iface lo --config /etc/xrudp/example.toml --check >/dev/null 2>&1 ||
  die "the shipped /etc/xrudp/example.toml does not pass --check"
for f in /usr/share/man/man1/xrudp.1.gz /usr/share/man/man1/xrudp-attach.1.gz \
  /usr/share/bash-completion/completions/xrudp /usr/share/zsh/vendor-completions/_xrudp \
  /usr/share/fish/vendor_completions.d/xrudp.fish /lib/systemd/system/xrudp@.service; do
  [ -s "$f" ] || die "$f is not installed"
done
# The completions are what bash runs: it must define the function the script names.
bash -c 'source /usr/share/bash-completion/completions/xrudp && complete -p xrudp' >/dev/null ||
  die "the bash completions do not load"

# systemd-analyze verify: the template through one instance, as systemctl would load it.
verify=$(systemd-analyze verify /lib/systemd/system/xrudp@.service 2>&1 | grep -v -e '^$' || true)
if [ -n "$verify" ]; then
  echo "$verify" >&2
  die "systemd-analyze verify complains about the unit"
fi
score_line=$(systemd-analyze security --offline=true /lib/systemd/system/xrudp@.service 2>&1 | grep 'Overall exposure level' || true)
[ -n "$score_line" ] || die "systemd-analyze security printed no exposure level"
score=$(sed -E 's/.*: ([0-9.]+) .*/\1/' <<<"$score_line")
log "systemd-analyze security --offline=true: $score_line"
awk -v s="$score" 'BEGIN { exit !(s <= 4.9) }' || die "the unit's exposure $score is worse than OK (4.9)"

dpkg --purge xrudp >/dev/null
installed=0
snapshot >"$out/after"
if ! diff -u "$out/before" "$out/after" >"$out/leftovers"; then
  cat "$out/leftovers" >&2
  die "installing and purging the package changed the file system (above)"
fi
log "dpkg -i and dpkg --purge: nothing left behind"
