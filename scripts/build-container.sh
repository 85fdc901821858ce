#!/usr/bin/env bash
# Packages prebuilt static confab binaries into the container image (Dockerfile, target "prebuilt"):
# stages dist/container/ in the repository (the build context), then builds one image per
# architecture with podman, buildah or docker — the first that is installed and answers `info`
# (a docker CLI without a reachable daemon does not count) — checks each is below the size limit
# and that its HEALTHCHECK survived, and tags it NAME:VERSION-ARCH.
#
#   scripts/build-container.sh --version V [--name NAME] [--amd64 PATH] [--arm64 PATH]
#                              [--stage-only] [--max-mb 30]
#   scripts/build-container.sh --engine    # prints the engine it would use, or nothing
#
# --stage-only stops after staging (the release workflow then runs `docker buildx build
# --platform linux/amd64,linux/arm64 --target prebuilt --push .` on the staged
# context). Nothing is pulled: the image is FROM scratch. The last line printed lists the tags.
set -euo pipefail

die() { echo "build-container: ERROR: $*" >&2; exit 1; }
log() { echo "build-container: $*"; }

# The first container engine that is installed and works: `docker` may be only a client whose
# daemon is not running (or not reachable by this user), which fails only at `docker build`.
usable_engine() {
    local candidate
    for candidate in podman buildah docker; do
        if command -v "$candidate" >/dev/null && timeout 30 "$candidate" info >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
    done
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="" name="confab" stage_only=0 max_mb=30
declare -A binaries=()
while [ $# -gt 0 ]; do
    case "$1" in
        --version) version="$2"; shift 2 ;;
        --name) name="$2"; shift 2 ;;
        --amd64|--arm64) binaries[${1#--}]="$(realpath "$2")"; shift 2 ;;
        --stage-only) stage_only=1; shift ;;
        --max-mb) max_mb="$2"; shift 2 ;;
        --engine) usable_engine; exit 0 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[ -n "$version" ] || die "--version is required"
((${#binaries[@]})) || die "give at least one of --amd64 PATH, --arm64 PATH"

declare -A file_arch=([amd64]="x86-64" [arm64]="ARM aarch64")
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || die "$ca_bundle is missing (Debian package ca-certificates)"

# --- stage the build context -----------------------------------------------------------------
stage="$repo/dist/container"
rm -rf "$stage"
mkdir -p "$stage/empty"
cp "$ca_bundle" "$stage/ca-certificates.crt"
for arch in "${!binaries[@]}"; do
    bin="${binaries[$arch]}"
    [ -x "$bin" ] || die "$arch binary $bin does not exist or is not executable"
    info="$(file -b "$bin")"
    [[ "$info" == *"${file_arch[$arch]}"* ]] || die "$bin is not a ${file_arch[$arch]} binary: $info"
    [[ "$info" == *"statically linked"* || "$info" == *"static-pie linked"* ]] ||
        die "$bin is not statically linked (the image has no libc): $info"
    mkdir -p "$stage/$arch"
    cp "$bin" "$stage/$arch/confab"
done
log "staged $(ls "$stage" | tr '\n' ' ')in $stage"
if ((stage_only)); then
    echo "$stage"
    exit 0
fi

# --- build -----------------------------------------------------------------------------------
engine="$(usable_engine)"
[ -n "$engine" ] || die "no working podman, buildah or docker here (installed, and its \`info\` answers; Debian: apt-get install podman)"

tags=()
for arch in "${!binaries[@]}"; do
    tag="$name:$version-$arch"
    args=(--platform "linux/$arch" --target prebuilt --build-arg "VERSION=$version"
          -t "$tag" -f "$repo/Dockerfile" "$repo")
    case "$engine" in
        # OCI image configs have no HEALTHCHECK; the docker format keeps it.
        podman) podman build -q --format docker "${args[@]}" >/dev/null ;;
        buildah) buildah bud -q --format docker "${args[@]}" >/dev/null ;;
        docker) docker build -q "${args[@]}" >/dev/null ;;
    esac || die "$engine build for $arch failed"
    inspect=(podman image inspect)
    [ "$engine" = docker ] && inspect=(docker image inspect)
    [ "$engine" = buildah ] && inspect=(buildah inspect --type image)
    size=$("${inspect[@]}" --format '{{.Size}}' "$tag" 2>/dev/null || true)
    if [ -z "$size" ] || [ "$engine" = buildah ]; then
        size=$(stat -c %s "$stage/$arch/confab")   # the binary is nearly all of it
    fi
    health=$("${inspect[@]}" --format '{{json .Config.Healthcheck}}' "$tag" 2>/dev/null || true)
    [[ "$health" == *"health"* ]] || die "$tag has no HEALTHCHECK (got: ${health:-nothing})"
    mb=$(awk -v b="$size" 'BEGIN { printf "%.2f", b / 1000000 }')
    log "$tag: $mb MB ($engine)"
    ((size <= max_mb * 1000 * 1000)) || die "$tag is $mb MB, above the $max_mb MB limit"
    tags+=("$tag")
done
echo "${tags[*]}"
