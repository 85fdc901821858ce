#!/usr/bin/env bash
# Checks the systemd units in systemd/: `systemd-analyze verify` finds no problem (other than the
# binaries not being installed on this machine), and confab.service's sandbox exposure, as
# `systemd-analyze security` scores it, is at most 2.0. Prints every unit's exposure.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { echo "check-units: systemd-analyze missing (package systemd)" >&2; exit 1; }

problems=$(systemd-analyze verify --man=no systemd/*.service 2>&1 | grep -Ev 'Command /usr/bin/(confab|tailscale) is not executable' || true)
if [ -n "$problems" ]; then
  echo "check-units: systemd-analyze verify found problems:" >&2
  echo "$problems" >&2
  exit 1
fi

for unit in systemd/*.service; do
  line=$(systemd-analyze security --offline=true "$unit" 2>/dev/null | tail -n 1)
  echo "check-units: ${line#→ }"
done
score=$(systemd-analyze security --offline=true systemd/confab.service 2>/dev/null | tail -n 1 | grep -o '[0-9]\+\.[0-9]')
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || { echo "check-units: confab.service exposure $score is above 2.0" >&2; exit 1; }
