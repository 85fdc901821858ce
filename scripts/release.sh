#!/usr/bin/env bash
# Builds every artifact of a confab release into one directory, the same way locally and in the
# release workflow (.github/workflows/release.yml). See docs/releasing.md.
#
#   scripts/release.sh --key release.key --pubkey release.pub [--out DIR]   # a real release
#   scripts/release.sh --dry-run [--fast] [--out DIR]                       # rehearsal
#
# Version: `version` in Cargo.toml. A real release must run on a commit tagged v<version> with a
# clean work tree; the dry run builds whatever is checked out and signs with a throwaway key made
# on the spot (nothing is uploaded either way: the workflow publishes the directory).
#
# Artifacts in DIR (default dist/release/<version>):
#   confab-V-linux-aarch64, confab-V-linux-x86_64    static binaries (web app embedded)
#   confab-V-web.tar.gz                              the web app (web/dist)
#   confab-V-BOARD.img.xz (+ .minisig)               appliance images (scripts/build-image.sh)
#   confab-V-BOARD-update.tar                        signed update bundle (manifest.json, .minisig,
#                                                    root slot, boot files), also unpacked in
#                                                    update/BOARD/ for publishing at update.url
#   confab-V-rpi.os_list.json                        Raspberry Pi Imager entry
#   CHANGELOG.md                                     commits since the previous v* tag
#   SHA256SUMS, SHA256SUMS.minisig                   checksums of all of the above, signed
#   confab-release.pub                               the public key that verifies them
# and dist/container/ staged for the container image (scripts/build-container.sh), which is built
# and size-checked here when podman, buildah or docker works (scripts/build-container.sh --engine).
#
# --fast skips the board images and the x86_64 binary (CI runs it on every push so the pipeline
# cannot rot; with the aarch64 build of scripts/test.sh already cached it takes seconds).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "release: ERROR: $*" >&2; exit 1; }
start=$(date +%s)
phase() { printf 'release: [%4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

dry_run=0 fast=0 key="" pubkey="" out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1; shift ;;
        --fast) fast=1; shift ;;
        --key) key="$2"; shift 2 ;;
        --pubkey) pubkey="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
if ((fast && !dry_run)); then die "--fast is only for --dry-run (a release has every artifact)"; fi

cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] ||
    die "version '$version' in Cargo.toml is not semver"
out="${out:-dist/release/$version}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# The directory is emptied below: only when it is empty or holds an earlier run's artifacts.
if [ -n "$(ls -A "$out")" ] && [ ! -f "$out/CHANGELOG.md" ]; then
    die "$out is not empty and holds no earlier release; give an empty or new --out directory"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/confab-release.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- what we release, and with which key ---------------------------------------------------------
have_git=0
git rev-parse --git-dir >/dev/null 2>&1 && have_git=1
# `git status` may rewrite .git/index, which build.rs watches (for the -dirty mark): every status
# here is --no-optional-locks, or the next cargo build would re-link confab (minutes with fat LTO).
ensure_minisign() {
    command -v minisign >/dev/null && return
    local sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends minisign >/dev/null
    command -v minisign >/dev/null || die "minisign is not installed and could not be installed"
}
ensure_minisign
if ((dry_run)); then
    mode="dry run"
    ((fast)) && mode="dry run, fast"
    "$repo/scripts/sign-release.sh" --generate-key "$work/key" >/dev/null
    key="$work/key/confab.key" pubkey="$work/key/confab.pub"
else
    mode="release"
    [ -n "$key" ] && [ -n "$pubkey" ] || die "a release needs --key and --pubkey (or use --dry-run)"
    [ -f "$key" ] || die "secret key $key not found"
    [ -f "$pubkey" ] || die "public key $pubkey not found"
    ((have_git)) || die "a release is built from a git checkout (the changelog and tag come from it)"
    git tag --points-at HEAD | grep -qx "v$version" ||
        die "HEAD is not tagged v$version (Cargo.toml says $version): tag the release commit first"
    [ -z "$(git --no-optional-locks status --porcelain --untracked-files=no)" ] ||
        die "the work tree has uncommitted changes; a release is built from the tagged commit only"
    # Reproducible stamps: the build date is the commit's date, not the clock's.
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
    export SOURCE_DATE_EPOCH
fi
# Fail on a key/public key mismatch now, not after an hour of building.
echo "confab $version key check" > "$work/probe"
minisign -S -s "$key" -m "$work/probe" -x "$work/probe.minisig" -t "probe" >/dev/null </dev/null ||
    die "cannot sign with $key (a password-protected key needs a terminal; see docs/releasing.md)"
minisign -V -q -p "$pubkey" -m "$work/probe" -x "$work/probe.minisig" >/dev/null ||
    die "$pubkey does not verify signatures made with $key"
phase "confab $version ($mode) into $out"
# Artifacts of an earlier run in the same directory must not be mixed into this one.
find "$out" -mindepth 1 -delete

# --- web app and binaries --------------------------------------------------------------------------
"$repo/scripts/build-web.sh"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@${SOURCE_DATE_EPOCH:-0}" \
    -C web -czf "$out/confab-$version-web.tar.gz" dist
phase "web app: confab-$version-web.tar.gz"

arches=(aarch64)
((fast)) || arches+=(x86_64)
declare -A binary=()
for arch in "${arches[@]}"; do
    log="$work/build-$arch.log"
    "$repo/scripts/build-static.sh" "$arch" >"$log" 2>&1 || { tail -n 40 "$log" >&2; die "static $arch build failed (log above)"; }
    built=$(tail -n 1 "$log")
    binary[$arch]="$out/confab-$version-linux-$arch"
    cp "$built" "${binary[$arch]}"
    phase "binary: confab-$version-linux-$arch ($(grep -o 'size: .*' "$log"))"
done

# --- container image (context staged; built where an engine exists) ------------------------------
container_args=(--version "$version")
[ -n "${binary[aarch64]:-}" ] && container_args+=(--arm64 "${binary[aarch64]}")
[ -n "${binary[x86_64]:-}" ] && container_args+=(--amd64 "${binary[x86_64]}")
engine="$("$repo/scripts/build-container.sh" --engine)"
if [ -n "$engine" ]; then
    tags=$("$repo/scripts/build-container.sh" "${container_args[@]}" | tail -n 1)
    phase "container image(s): $tags"
    # The image of this machine's architecture also runs, with docker-compose.yml's settings.
    case "$(uname -m)" in x86_64) host_tag="confab:$version-amd64" ;; aarch64) host_tag="confab:$version-arm64" ;; *) host_tag="" ;; esac
    if [[ -n "$host_tag" && " $tags " == *" $host_tag "* ]] && [ "$engine" = podman ]; then
        "$repo/scripts/check-container.sh" "$host_tag" >"$work/check-container.log" 2>&1 || {
            grep -v 'level=error' "$work/check-container.log" >&2
            die "the $host_tag container does not run as docker-compose.yml runs it"
        }
        phase "container $host_tag: runs read-only, healthy, clean stop"
    fi
else
    "$repo/scripts/build-container.sh" "${container_args[@]}" --stage-only >/dev/null
    phase "container context staged in dist/container (no working podman/buildah/docker here to build it)"
fi

# --- board images and signed update bundles ------------------------------------------------------
boards=(generic-efi-arm64 rpi)
if ((fast)); then
    phase "board images: skipped (--fast)"
elif [ ! -x "$repo/scripts/build-image.sh" ]; then
    die "scripts/build-image.sh is missing: a release has board images"
else
    for board in "${boards[@]}"; do
        dir="$work/image-$board"
        log="$work/image-$board.log"
        "$repo/scripts/build-image.sh" --board "$board" --version "$version" \
            --binary "${binary[aarch64]}" --pubkey "$pubkey" --key "$key" --out "$dir" >"$log" 2>&1 ||
            { tail -n 40 "$log" >&2; die "image for $board failed (log above)"; }
        [ -f "$dir/update/manifest.json.minisig" ] || die "build-image.sh made no signed update bundle for $board"
        img="$dir/confab-$version-$board.img.xz"
        [ -f "$img" ] || die "build-image.sh did not write $(basename "$img")"
        cp "$img" "$img.minisig" "$out/"
        [ -f "$dir/confab-$version-$board.os_list.json" ] && cp "$dir/confab-$version-$board.os_list.json" "$out/"
        mkdir -p "$out/update"
        cp -r "$dir/update" "$out/update/$board"
        tar --sort=name --owner=0 --group=0 --numeric-owner -C "$dir/update" \
            -cf "$out/confab-$version-$board-update.tar" .
        phase "image: $(basename "$img") ($(du -m "$img" | cut -f1) MiB), update bundle for $board"
    done
fi

# --- changelog -------------------------------------------------------------------------------------
{
    echo "# confab $version"
    echo
    if ((have_git)); then
        prev=$(git describe --tags --abbrev=0 --match 'v*' --exclude "v$version" HEAD 2>/dev/null || true)
        if [ -n "$prev" ]; then
            echo "Changes since $prev:"
            range="$prev..HEAD"
        else
            echo "Changes (first release, every commit):"
            range="HEAD"
        fi
        echo
        git log --no-merges --format='- %s (%h)' "$range"
        commit=$(git rev-parse --short=9 HEAD)
        echo
        echo "Built from commit $commit$( [ -n "$(git --no-optional-locks status --porcelain --untracked-files=no)" ] && echo " with uncommitted changes (dry run)")."
    else
        echo "(built outside a git checkout: no commit history)"
    fi
} > "$out/CHANGELOG.md"
phase "changelog: $(grep -c '^- ' "$out/CHANGELOG.md" || true) commit(s)${prev:+ since $prev}"

# --- checksums, signature, self-check --------------------------------------------------------------
cp "$pubkey" "$out/confab-release.pub"
(
    cd "$out"
    find . -type f ! -name SHA256SUMS ! -name SHA256SUMS.minisig ! -path './update/*' -printf '%P\n' |
        LC_ALL=C sort | xargs -r sha256sum > SHA256SUMS
)
minisign -S -s "$key" -m "$out/SHA256SUMS" -x "$out/SHA256SUMS.minisig" \
    -t "confab $version SHA256SUMS" >/dev/null </dev/null
(cd "$out" && sha256sum --quiet -c SHA256SUMS) || die "SHA256SUMS does not match the files"
minisign -V -q -p "$out/confab-release.pub" -m "$out/SHA256SUMS" >/dev/null ||
    die "SHA256SUMS.minisig does not verify"
for manifest in "$out"/update/*/manifest.json; do
    [ -e "$manifest" ] || continue
    minisign -V -q -p "$out/confab-release.pub" -m "$manifest" >/dev/null ||
        die "$manifest: signature does not verify"
done
for arch in "${arches[@]}"; do
    file -b "${binary[$arch]}" | grep -q 'statically linked\|static-pie linked' ||
        die "confab-$version-linux-$arch is not static"
done

phase "done ($mode): $(wc -l < "$out/SHA256SUMS") artifacts, signed$( ((dry_run)) && echo " with a throwaway key")"
(cd "$out" && sed 's/^[0-9a-f]*  /  /' SHA256SUMS | while read -r f; do
    printf '  %-44s %10s bytes\n' "$f" "$(stat -c %s "$f")"
done)
echo "$out"
