#!/usr/bin/env bash
# The kill -9 campaign, big (issue 24 §4): tests/crash.rs with many rounds on a release build.
# Each round starts confab on the same state directory, writes through the admin API (room
# passcodes, invite links and revocations, guest access, API key rotation) and kills it with
# SIGKILL at a random moment; the next round checks that every acknowledged write is there.
#
#   scripts/crash-campaign.sh [ROUNDS]      # default 1000; CONFAB_CRASH_SEED=N replays a run
#
# The last line is `crash: N rounds …, W acknowledged writes (…), 0 lost`; a loss fails with the
# round, the seed and what differs. Record the figures in docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
rounds="${1:-1000}"
CONFAB_CRASH_ROUNDS="$rounds" cargo test --release --locked --test crash -- --nocapture 2>&1 |
  grep -E '^crash:|panicked|lost|round [0-9]+' || { echo "crash-campaign: FAILED" >&2; exit 1; }
