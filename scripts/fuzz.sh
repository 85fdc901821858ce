#!/usr/bin/env bash
# Coverage-guided fuzzing of confab's parsers with libFuzzer (issue 24 §2), on stable Rust: the
# targets in fuzz/ link libfuzzer-sys (libFuzzer built from its bundled sources by the C++
# compiler) and are instrumented with rustc's stable SanitizerCoverage flags — what cargo-fuzz
# does, without needing a nightly toolchain for its sanitizer options.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default 30 s each, every target
#
# Each target's corpus lives in $CONFAB_FUZZ_DIR/corpus/<target> (default
# /var/cache/confab/fuzz, else ~/.cache/confab/fuzz), started from the target's seeds (inputs
# of the shape real clients send) and kept between runs. A crash (panic, abort, timeout, out of
# memory) leaves its input in $CONFAB_FUZZ_DIR/artifacts/<target>/ and fails the run (that
# input is replayed at the start of the next run: still crashing fails it, fixed moves it to
# artifacts/<target>/fixed/ and into the corpus); replay
# it with `<binary> <file>`. Prints one line per target: executions, corpus size, crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
seconds="${1:-30}"
shift || true
all=(signal token join_request twirp manifest config rtp record turn)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if [ -z "${CONFAB_FUZZ_DIR:-}" ]; then
  if mkdir -p /var/cache/confab/fuzz 2>/dev/null && [ -w /var/cache/confab/fuzz ]; then
    CONFAB_FUZZ_DIR=/var/cache/confab/fuzz
  else
    CONFAB_FUZZ_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/confab/fuzz"
  fi
fi
host=$(rustc -vV | awk '/^host:/ {print $2}')
target_dir="${CONFAB_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}-fuzz}"
# --target keeps the instrumentation off build scripts and proc macros (host artifacts).
echo "fuzz: building ${targets[*]} (instrumented release build; the first one takes minutes)"
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares" \
  CARGO_TARGET_DIR="$target_dir" \
  cargo build --manifest-path fuzz/Cargo.toml --locked --release --target "$host" \
  $(printf -- '--bin %s ' "${targets[@]}") --quiet

failed=0
for t in "${targets[@]}"; do
  bin="$target_dir/$host/release/$t"
  corpus="$CONFAB_FUZZ_DIR/corpus/$t"
  artifacts="$CONFAB_FUZZ_DIR/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  log="$CONFAB_FUZZ_DIR/$t.log"
  # Inputs that crashed an earlier run: replayed first. One that no longer crashes (its bug was
  # fixed) moves to fixed/ and becomes part of the corpus; one that still crashes fails this run.
  for old in "$artifacts"/*; do
    [ -f "$old" ] || continue
    if "$bin" -timeout=10 -rss_limit_mb=2048 "$old" >/dev/null 2>&1; then
      mkdir -p "$artifacts/fixed"
      cp "$old" "$corpus/"
      mv "$old" "$artifacts/fixed/"
      echo "fuzz: $t: $(basename "$old") from an earlier run no longer crashes (kept in $artifacts/fixed)"
    fi
  done
  # The seeds (written by the target's init), then the run.
  CONFAB_FUZZ_SEEDS="$corpus" "$bin" -runs=0 "$corpus" >/dev/null 2>&1 || true
  set +e
  "$bin" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log")
  crashes=$(find "$artifacts" -maxdepth 1 -type f | wc -l)
  size=$(find "$corpus" -type f | wc -l)
  echo "fuzz: $t: ${execs:-0} executions in ${seconds} s, corpus $size, crashes $crashes (exit $rc)"
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -n 10 >&2 || true
    echo "fuzz: $t failed; inputs in $artifacts, log $log" >&2
  fi
done
exit "$failed"
