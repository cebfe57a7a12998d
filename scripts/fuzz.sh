#!/usr/bin/env bash
# Short libFuzzer runs of every fuzz target in tests/fuzz (cargo-fuzz, nightly toolchain).
#
#   scripts/fuzz.sh                      # every target, 10 s each
#   scripts/fuzz.sh --seconds 120        # longer runs
#   scripts/fuzz.sh --target steer       # one target
#
# Each target starts from a copy of its committed seeds (tests/fuzz/seeds/<target>) in a
# temporary directory, so nothing is written into the repository; a crashing input is
# copied to tests/fuzz/artifacts/<target>/ (git-ignored) and the script fails. Prints the
# runs, coverage (cov) and features (ft) libFuzzer reached per target.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_DIR=tests/fuzz
seconds=10
only=""

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }
log() { printf '[fuzz] %s\n' "$*" >&2; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --target) only=${2:?--target needs a name}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) log "unknown argument: $1 (try --help)"; exit 2 ;;
  esac
done
case "$seconds" in
  '' | *[!0-9]*) log "--seconds takes a whole number, not '$seconds'"; exit 2 ;;
esac

install_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
  fi
}

install_cargo_fuzz
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "the nightly toolchain is missing; libFuzzer's sanitizer flags need it (rustup toolchain install nightly)"
  exit 1
fi

mapfile -t all_targets < <(rustup run nightly cargo fuzz list --fuzz-dir "$FUZZ_DIR")
if [ -n "$only" ]; then
  if ! printf '%s\n' "${all_targets[@]}" | grep -qx -- "$only"; then
    log "no fuzz target '$only'; the targets are: ${all_targets[*]}"
    exit 2
  fi
  targets=("$only")
else
  targets=("${all_targets[@]}")
fi

# The fuzz crate's own target dir (git-ignored), whatever CARGO_TARGET_DIR says, so the
# binaries are where this script runs them from.
target_dir="$FUZZ_DIR/target"
host=$(rustup run nightly rustc -vV | sed -n 's/^host: //p')
log "building ${#targets[@]} target(s) (release, debug assertions, AddressSanitizer)"
t0=$(date +%s)
build=(rustup run nightly cargo fuzz build --fuzz-dir "$FUZZ_DIR" --target-dir "$target_dir")
if [ -n "$only" ]; then
  "${build[@]}" "$only"
else
  "${build[@]}"
fi
log "built in $(($(date +%s) - t0)) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/xrudp-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
summary=()
for t in "${targets[@]}"; do
  seeds="$FUZZ_DIR/seeds/$t"
  if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
    log "$t: no seeds in $seeds (every target needs committed seeds)"
    failed+=("$t")
    continue
  fi
  corpus="$work/$t/corpus"
  artifacts="$work/$t/artifacts/"
  mkdir -p "$corpus" "$artifacts"
  cp "$seeds"/* "$corpus"/
  log "$t: ${seconds} s from $(ls "$seeds" | wc -l) seeds"
  rc=0
  # The built binary itself (what `cargo fuzz run` would exec, without its rebuild check).
  "$target_dir/$host/release/$t" "$corpus" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts" -print_final_stats=1 >"$work/$t.log" 2>&1 || rc=$?
  last=$(grep -E '^#[0-9]+' "$work/$t.log" | tail -1 || true)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  line=$(printf '%-18s runs %-10s cov %-6s ft %-7s corpus %s' "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")
  if [ "$rc" -ne 0 ]; then
    keep="$FUZZ_DIR/artifacts/$t"
    mkdir -p "$keep"
    cp "$artifacts"* "$keep"/ 2>/dev/null || true
    log "$t: FAILED (exit $rc); last lines of its log:"
    tail -40 "$work/$t.log" >&2
    log "$t: crashing input(s) kept in $keep/; replay with:"
    log "  rustup run nightly cargo fuzz run --fuzz-dir $FUZZ_DIR $t $keep/<file>"
    failed+=("$t")
    line="$line  CRASH"
  fi
  summary+=("$line")
done

printf '\n%s\n' "fuzz summary (${seconds} s per target):" >&2
printf '  %s\n' "${summary[@]}" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  log "failed: ${failed[*]}"
  exit 1
fi
log "all ${#targets[@]} target(s) ran clean in $(($(date +%s) - t0)) s"
