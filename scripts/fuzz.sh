#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the gateway's inbound frame guard and request
# parser, FUZZ_SECS seconds per target (default 300). Seeds are in fuzz/seeds/<target> (committed);
# what the fuzzer learns is kept in $CARGO_TARGET_DIR/fuzz-corpus/<target>. A crash leaves its input
# in fuzz/artifacts/<target>/ and fails the run: add it to a regression test.
#   scripts/fuzz.sh [target...]
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECS:-300}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_guard client_message)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Nightly with AddressSanitizer where it is installed; otherwise the pinned stable toolchain with
# RUSTC_BOOTSTRAP (no sanitizer: a panic is still a crash, coverage guidance is the same).
# (FUZZ_STABLE=1 forces the latter.)
if [ -z "${FUZZ_STABLE:-}" ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly) sanitizer=address
else
  toolchain=() sanitizer=none
  export RUSTC_BOOTSTRAP=1
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz-$sanitizer"
for t in "${targets[@]}"; do
  corpus="${CARGO_TARGET_DIR:-$PWD/target}/fuzz-corpus/$t"
  mkdir -p "$corpus"
  echo "== fuzz $t for ${secs}s"
  # -rss_limit_mb bounds memory; -max_len covers a frame header plus a few frames.
  set +e
  cargo "${toolchain[@]}" fuzz run --sanitizer "$sanitizer" --fuzz-dir fuzz --target-dir "$target_dir" "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=1024 -max_len=4096 -print_final_stats=1 2>&1 | \
    grep -E "(INITED|DONE|^Done|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==|SUMMARY|panicked|Test unit written|^error)"
  status="${PIPESTATUS[0]}"
  set -e
  [ "$status" -eq 0 ] || { echo "fuzz $t: failure (exit $status), input in fuzz/artifacts/$t/"; exit 1; }
done
echo "fuzz: ${#targets[@]} passed, 0 failed"
