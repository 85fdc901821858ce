#!/usr/bin/env bash
# Makes a signed confab release directory: manifest.json (version, board, minimum version, notes
# URL, size + SHA-256 of every file), manifest.json.minisig (minisign, prehashed, trusted comment
# "version:V board:B"), and the files beside them. Publish the directory as it is.
#
#   scripts/sign-release.sh --key KEY --board BOARD --version V [--min-version V] [--notes-url URL]
#                           --image root.img [--boot-file linux --boot-file initrd] --out DIR
#   scripts/sign-release.sh --generate-key DIR     # passwordless key pair for development/CI
#
# A password-protected key asks for its password on the terminal (minisign's own prompt).
set -euo pipefail

die() { echo "sign-release: $*" >&2; exit 1; }

ensure_minisign() {
  command -v minisign >/dev/null && return
  echo "sign-release: installing minisign (Debian package)" >&2
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends minisign >/dev/null
  command -v minisign >/dev/null || die "minisign is not installed and could not be installed"
}

key="" board="" version="" min_version="" notes_url="" image="" out="" boot_files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --generate-key)
      [ $# -ge 2 ] || die "--generate-key needs a directory"
      ensure_minisign
      mkdir -p "$2"
      rm -f "$2/confab.pub" "$2/confab.key"
      minisign -G -W -p "$2/confab.pub" -s "$2/confab.key" >/dev/null
      echo "sign-release: development key pair in $2 (confab.pub, confab.key; no password)"
      exit 0 ;;
    --key) key="$2"; shift 2 ;;
    --board) board="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --min-version) min_version="$2"; shift 2 ;;
    --notes-url) notes_url="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;;
    --boot-file) boot_files+=("$2"); shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$key" ] && [ -n "$board" ] && [ -n "$version" ] && [ -n "$image" ] && [ -n "$out" ] \
  || die "--key, --board, --version, --image and --out are required (see --help)"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] || die "version $version is not semver"
[ -z "$min_version" ] || [[ "$min_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "min version $min_version is not semver"
[[ "$board" =~ ^[A-Za-z0-9._-]+$ ]] || die "board $board: letters, digits, '.', '-', '_' only"
[ -f "$key" ] || die "key $key not found"
ensure_minisign

mkdir -p "$out"
artifact() {  # file -> JSON object, after copying it into $out
  local src="$1" name size sum
  [ -f "$src" ] || die "$src not found"
  name=$(basename "$src")
  [ "$(realpath "$src")" = "$(realpath -m "$out/$name")" ] || cp -f "$src" "$out/$name"
  size=$(stat -c %s "$out/$name")
  sum=$(sha256sum "$out/$name" | cut -d' ' -f1)
  printf '{"file": "%s", "size": %s, "sha256": "%s"}' "$name" "$size" "$sum"
}

{
  printf '{\n  "format": 1,\n  "version": "%s",\n  "compatible": "%s",\n' "$version" "$board"
  [ -z "$min_version" ] || printf '  "min_version": "%s",\n' "$min_version"
  [ -z "$notes_url" ] || printf '  "notes_url": "%s",\n' "$notes_url"
  printf '  "image": %s,\n  "boot_files": [' "$(artifact "$image")"
  sep=""
  for f in "${boot_files[@]}"; do printf '%s\n    %s' "$sep" "$(artifact "$f")"; sep=","; done
  printf '\n  ]\n}\n'
} > "$out/manifest.json"

rm -f "$out/manifest.json.minisig"
minisign -S -s "$key" -m "$out/manifest.json" -x "$out/manifest.json.minisig" \
  -t "version:$version board:$board" >/dev/null
echo "sign-release: $out: confab $version for $board ($(stat -c %s "$out/$(basename "$image")") byte image, ${#boot_files[@]} boot file(s)), signed"
