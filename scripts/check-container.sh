#!/usr/bin/env bash
# Runs a built confab image the way docker-compose.yml does — host network, read-only root, tmpfs
# /tmp, no-new-privileges, every capability dropped but NET_BIND_SERVICE, a memory limit, a fresh
# named volume on /data, only CONFAB_* settings in the environment — and checks that it becomes
# healthy through the image's own HEALTHCHECK, generated its key and CA in the volume (owned by
# the image's user), answers `confab token` and `confab status` via exec, wrote nothing outside
# the volume (`diff` of the container is the same before and after it ran), and exits 0 on stop.
#
#   scripts/check-container.sh IMAGE [--engine podman|docker]
#
# Uses free ports in 27880-27899 so it does not collide with a confab on the default ports.
set -euo pipefail

die() { echo "check-container: ERROR: $*" >&2; cleanup; exit 1; }
log() { echo "check-container: $*"; }

image="${1:-}"
[ -n "$image" ] || { echo "usage: $0 IMAGE [--engine podman|docker]" >&2; exit 2; }
shift
engine=""
if [ "${1:-}" = "--engine" ]; then engine="$2"; fi
if [ -z "$engine" ]; then
    for candidate in podman docker; do
        command -v "$candidate" >/dev/null && { engine="$candidate"; break; }
    done
fi
[ -n "$engine" ] || { echo "check-container: neither podman nor docker is installed" >&2; exit 1; }

name="confab-check-$$"
volume="confab-check-data-$$"
err=$(mktemp)
cleanup() {
    "$engine" rm -f "$name" >/dev/null 2>&1 || true
    "$engine" volume rm -f "$volume" >/dev/null 2>&1 || true
    rm -f "$err"
}
trap cleanup EXIT

run_args=()
if [ "$engine" = podman ] && [ ! -e /sys/fs/cgroup/cgroup.controllers ] && command -v runc >/dev/null; then
    # crun refuses cgroup v1 "hybrid" hosts (such as the CI machines); runc handles them.
    run_args+=(--runtime runc)
fi
# Explicit limits: the engine's defaults (nofile 1048576) can exceed what a VM's hard limit allows.
limits=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

# Free ports: the container shares the host's network.
base=27880
for p in $(seq 27880 4 27896); do
    if ! (ss -Hltun 2>/dev/null | awk '{print $5}' | grep -qE ":($p|$((p+1))|$((p+2))|$((p+3)))\$"); then
        base=$p; break
    fi
done
https=$base http=$((base + 1)) tcp=$((base + 2)) udp=$((base + 3))

# The settings docker-compose.yml applies (the env file holds only what .env.example sets).
"$engine" "${run_args[@]}" create --name "$name" --network host --read-only \
    --tmpfs /tmp:size=16m,mode=1777 --security-opt no-new-privileges --cap-drop ALL \
    --cap-add NET_BIND_SERVICE --memory 1g "${limits[@]}" -v "$volume:/data" \
    -e "CONFAB_HTTPS_PORT=$https" -e "CONFAB_HTTP_PORT=$http" -e "CONFAB_TCP_PORT=$tcp" \
    -e "CONFAB_UDP_PORT=$udp" -e "CONFAB_PUBLIC_URL=wss://meet.example.org:$https" \
    "$image" >/dev/null 2>"$err" || die "cannot create a container from $image: $(cat "$err")"
"$engine" start "$name" >/dev/null 2>&1 || die "cannot start: $("$engine" logs "$name" 2>&1 | tail -n 20)"

# Healthy, by the image's HEALTHCHECK command (run on demand: no systemd timers needed).
healthy=0
for _ in $(seq 1 60); do
    if [ "$engine" = podman ]; then
        podman healthcheck run "$name" >/dev/null 2>&1 && { healthy=1; break; }
    else
        [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] && { healthy=1; break; }
    fi
    [ "$("$engine" inspect -f '{{.State.Running}}' "$name")" = true ] ||
        die "the container exited: $("$engine" logs "$name" 2>&1 | tail -n 20)"
    sleep 0.5
done
((healthy)) || die "not healthy within 30 s: $("$engine" exec "$name" /usr/bin/confab health 2>&1)"
log "healthy (HEALTHCHECK: confab health) on port $https"

user=$("$engine" inspect -f '{{.Config.User}}' "$image")
[ "$user" = "65532:65532" ] || die "the image runs as '$user', expected 65532:65532"
out=$("$engine" exec "$name" /usr/bin/confab token --identity check --room check) ||
    die "confab token failed in the container: $out"
[[ "$out" == eyJ* ]] || die "confab token printed '$out'"
"$engine" exec "$name" /usr/bin/confab status >/dev/null || die "confab status failed in the container"

# The container's own layer may hold only what the engine makes at start: mount points and, for a
# UID without a passwd entry, /etc/passwd and /etc/group (podman). The root is mounted read-only,
# so confab itself cannot add anything; this proves it.
engine_made='^[ACD] /(etc|etc/(passwd|group|hosts|hostname|resolv\.conf)|tmp|var|var/tmp|run|run/.*|dev|dev/.*|proc|sys|data)$'
changed=$("$engine" diff "$name" 2>/dev/null | grep -Ev "$engine_made" || true)
[ -z "$changed" ] || die "the container wrote outside /data: $changed"
log "nothing written outside the volume"

"$engine" stop -t 20 "$name" >/dev/null 2>&1
code=$("$engine" inspect -f '{{.State.ExitCode}}' "$name")
logs=$("$engine" logs "$name" 2>&1)
[ "$code" = 0 ] || die "exit code $code after stop: $(echo "$logs" | tail -n 10)"
grep -q "state flushed" <<<"$logs" || die "no clean shutdown in the log: $(echo "$logs" | tail -n 10)"
# The volume: key (0600) and CA, owned by the image's user — read with the image itself.
listing=$("$engine" "${run_args[@]}" run --rm "${limits[@]}" -v "$volume:/data" --entrypoint /usr/bin/confab \
    "$image" token --identity again --room check 2>&1) || die "the volume's key is not usable after a restart: $listing"
if [ "$engine" = podman ]; then
    dir=$(podman volume inspect -f '{{.Mountpoint}}' "$volume")
    keys=$(stat -c '%u:%g %a' "$dir/keys.toml") || die "no keys.toml in the volume"
    [ "$keys" = "65532:65532 600" ] || die "keys.toml is $keys, expected 65532:65532 600"
    [ -s "$dir/tls/ca.crt" ] || die "no local CA in the volume"
fi
log "OK: $image ($engine): healthy, key and CA in the volume, read-only root untouched, clean stop"
