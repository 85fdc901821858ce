#!/usr/bin/env bash
# Builds a confab appliance image and its update bundle from Debian packages, without mounting
# anything (no loop devices): erofs root slots, ext4 data partition, FAT boot partitions made with
# mtools, a GPT written with sfdisk.
#
#   scripts/build-image.sh --board generic-efi-arm64|rpi --version V --binary PATH --out DIR
#                          --pubkey release.pub [--key release.key] [--overlay DIR]...
#                          [--extra-deb FILE]... [--slot-only] [--no-xz]
#
#   --binary    the static aarch64 confab (scripts/build-static.sh aarch64)
#   --pubkey    the minisign public key devices trust for updates (/usr/lib/confab/keys/release.pub)
#   --key       its secret key: signs the disk image (.minisig) and the update bundle (update/);
#               without it no bundle is made
#   --overlay   extra files copied over the root filesystem last (repeatable)
#   --extra-deb an arm64 .deb not in Debian to add (e.g. Tailscale's); unpacked, its units enabled
#   --slot-only only the root slot and the update bundle, no disk image
#   --no-xz     leave the disk image uncompressed (for booting it in QEMU straight away)
#
# Outputs in DIR: confab-V-BOARD.img.xz (+ .sha256, .minisig), update/ (manifest.json,
# manifest.json.minisig, root.img and the boot files), and for rpi an Imager os_list entry
# (confab-V-rpi.os_list.json). The base rootfs comes from image/rootfs.sh (cached).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "build-image: $*" >&2; exit 1; }
phase() { printf 'build-image: [%4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }
start=$(date +%s)

board="" version="" binary="" out="" key="" pubkey="" slot_only=0 xz=1 overlays=() debs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --board) board="$2"; shift 2 ;;
        --version) version="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --key) key="$2"; shift 2 ;;
        --pubkey) pubkey="$2"; shift 2 ;;
        --overlay) overlays+=("$2"); shift 2 ;;
        --extra-deb) debs+=("$2"); shift 2 ;;
        --slot-only) slot_only=1; shift ;;
        --no-xz) xz=0; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[ -n "$board" ] && [ -n "$version" ] && [ -n "$binary" ] && [ -n "$out" ] && [ -n "$pubkey" ] ||
    die "--board, --version, --binary, --pubkey and --out are required (see --help)"
case "$board" in generic-efi-arm64|rpi) ;; *) die "unknown board '$board' (generic-efi-arm64 or rpi)" ;; esac
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$ ]] || die "--version '$version' is not semver"
[ -f "$binary" ] || die "no binary at $binary (build it with scripts/build-static.sh aarch64)"
file -b "$binary" | grep -q 'ARM aarch64.*statically linked' ||
    die "$binary is not a static aarch64 executable: $(file -b "$binary")"
[ -f "$pubkey" ] || die "no public key at $pubkey"
[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap --mode=root, file ownership in the images)"

# Host tools, from Debian packages, installed when missing.
need=()
for pair in "mmdebstrap mmdebstrap" "arch-test arch-test" "qemu-aarch64-static qemu-user-static" \
    "update-binfmts binfmt-support" "mkfs.erofs erofs-utils" "mkfs.vfat dosfstools" \
    "mcopy mtools" "sfdisk fdisk" "mkfs.ext4 e2fsprogs" "xz xz-utils" "minisign minisign" \
    "systemd-sysusers systemd" "file file"; do
    command -v "${pair%% *}" >/dev/null || need+=("${pair#* }")
done
if [ ${#need[@]} -gt 0 ]; then
    phase "apt packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export MTOOLS_SKIP_CHECK=1

rootfs_tar=$("$repo/image/rootfs.sh" | tail -n1)
phase "base rootfs $rootfs_tar"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/confab-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage="$work/rootfs"
mkdir -p "$stage"
tar -xf "$rootfs_tar" -C "$stage" --numeric-owner
phase "extracted rootfs"

# --- confab into the root filesystem -----------------------------------------------------------
install -m 0755 "$binary" "$stage/usr/bin/confab"
cp -a "$repo/rootfs-overlay/." "$stage/"
install -m 0644 -t "$stage/usr/lib/systemd/system" "$repo"/systemd/*.service
install -D -m 0644 "$pubkey" "$stage/usr/lib/confab/keys/release.pub"
install -d "$stage/usr/share/doc/confab"
install -m 0644 -t "$stage/usr/share/doc/confab" "$repo/README.md" "$repo"/docs/*.md

case "$board" in
    generic-efi-arm64) bootloader=systemd-boot ;;
    rpi) bootloader=rpi-tryboot ;;
esac
cat > "$stage/usr/lib/confab/confab.toml" <<EOF
# Defaults of the confab appliance image ($board). The device's own settings go in
# /etc/confab/confab.toml (on the data partition); see /usr/share/doc/confab/configuration.md.
state_dir = "/var/lib/confab"

[http]
https_port = 443
http_port = 80

[update]
board = "$board"
bootloader = "$bootloader"
EOF

# Which partitions are mounted where: the data partition on every board, the ESP (generic) or
# the Pi's FAT partitions.
{
    cat <<'EOF'
# confab appliance: / is the read-only erofs slot, /var a tmpfs (systemd.volatile=state).
PARTLABEL=data        /data            ext4  defaults,noatime,x-systemd.growfs          0 2
/data/confab          /var/lib/confab  none  bind,x-systemd.requires-mounts-for=/data   0 0
/data/tailscale       /var/lib/tailscale none bind,nofail,x-systemd.requires-mounts-for=/data 0 0
tmpfs                 /tmp             tmpfs mode=1777,nosuid,nodev,size=25%           0 0
EOF
    case "$board" in
        generic-efi-arm64)
            echo "PARTLABEL=esp         /efi             vfat  umask=0077,noatime,flush              0 2" ;;
        rpi)
            echo "PARTLABEL=autoboot    /boot/firmware   vfat  umask=0077,noatime,flush              0 2"
            echo "PARTLABEL=boot-a      /boot/slot-a     vfat  umask=0077,noatime,flush,nofail       0 2"
            echo "PARTLABEL=boot-b      /boot/slot-b     vfat  umask=0077,noatime,flush,nofail       0 2" ;;
    esac
} > "$stage/etc/fstab"
mkdir -p "$stage/efi" "$stage/data" "$stage/var/lib/tailscale" "$stage/boot/firmware" "$stage/boot/slot-a" "$stage/boot/slot-b"

echo confab > "$stage/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$stage/etc/hosts"
ln -sfn /run/systemd/resolve/stub-resolv.conf "$stage/etc/resolv.conf"
# The device's settings live on the data partition.
rm -rf "$stage/etc/confab"
ln -sfn /data/etc/confab "$stage/etc/confab"
sed -i '/^IMAGE_ID=/d; /^IMAGE_VERSION=/d' "$stage/usr/lib/os-release"
printf 'IMAGE_ID=confab-%s\nIMAGE_VERSION=%s\n' "$board" "$version" >> "$stage/usr/lib/os-release"

# Users from sysusers.d, made now: /etc is read-only on the device.
systemd-sysusers --root="$stage" >/dev/null
confab_uid=$(awk -F: '$1 == "confab" {print $3}' "$stage/etc/passwd")
confab_gid=$(awk -F: '$1 == "confab" {print $4}' "$stage/etc/passwd")
[ -n "$confab_uid" ] || die "sysusers did not create the confab user"
# No password anywhere: every account is locked. /etc/shadow is rebuilt in /run at each boot by
# confab-setup.service, which adds a root password only if the owner supplied its hash.
mv "$stage/etc/shadow" "$stage/usr/lib/confab/shadow"
chmod 0600 "$stage/usr/lib/confab/shadow"
ln -sfn /run/confab-setup/shadow "$stage/etc/shadow"
rm -f "$stage/etc/shadow-" "$stage/etc/passwd-" "$stage/etc/group-" "$stage/etc/gshadow-"

systemctl --root="$stage" enable confab.service confab-update.service confab-health.service \
    confab-setup.service confab-banner.service confab-tailscale.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service >/dev/null 2>&1
# wpa_supplicant runs per interface (wpa_supplicant@wlan0, started by a udev rule), not globally.
systemctl --root="$stage" disable wpa_supplicant.service >/dev/null 2>&1 || true
# Extra packages (not from Debian, so not in the cached rootfs): unpacked without maintainer
# scripts; the systemd units they ship are enabled as their [Install] sections say.
for deb in "${debs[@]}"; do
    [ "$(dpkg-deb -f "$deb" Architecture)" = arm64 ] || die "$deb is not an arm64 package"
    dpkg-deb -x "$deb" "$stage"
    units=$(dpkg-deb -c "$deb" | awk '{print $NF}' | grep -E '^\./(usr/)?lib/systemd/system/[^/]+\.service$' | xargs -r -n1 basename)
    [ -z "$units" ] || systemctl --root="$stage" enable $units >/dev/null 2>&1
    phase "added $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)${units:+ (enabled: $(echo $units))}"
done
for o in "${overlays[@]}"; do
    cp -a "$o/." "$stage/"
done
phase "confab installed (uid $confab_uid)"

# --- root slot ----------------------------------------------------------------------------------
kernel=$(ls "$stage"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$stage"/boot/initrd.img-* | sort -V | tail -n1)
boot="$work/boot"
mkdir -p "$boot"
if gzip -t "$kernel" 2>/dev/null; then gunzip -c "$kernel" > "$boot/linux"; else cp "$kernel" "$boot/linux"; fi
cp "$initrd" "$boot/initrd"
# Kernel, initrd, device trees and Pi firmware go to the boot partitions, not into the slot.
mkfs.erofs -zlz4hc,12 -T0 --exclude-regex='^boot/.+' --exclude-regex='^usr/lib/raspi-firmware/.+' \
    --exclude-regex='^usr/lib/linux-image-[^/]+/.+' "$work/root.img" "$stage" >/dev/null
slot_bytes=$((1024 * 1024 * 1024))
root_bytes=$(stat -c %s "$work/root.img")
[ "$root_bytes" -le "$slot_bytes" ] || die "root slot image is $root_bytes bytes, more than the 1 GiB slot"
phase "root slot: $((root_bytes / 1024 / 1024)) MiB erofs"

cmdline_for() { # slot letter
    local console
    case "$board" in
        generic-efi-arm64) console="console=tty1 console=ttyAMA0,115200" ;;
        rpi) console="console=tty1 console=ttyS1,115200" ;;
    esac
    echo "root=PARTLABEL=root-$1 rootfstype=erofs ro rootwait systemd.volatile=state $console panic=10"
}
# The boot files a release carries: kernel + initrd on UEFI (the ESP's slot-<x>/); on the Pi the
# whole slot boot partition (firmware, device trees, config.txt, cmdline.txt naming root-@SLOT@).
case "$board" in
    generic-efi-arm64) boot_files=("$boot/linux" "$boot/initrd") ;;
    rpi)
        . "$repo/image/rpi.sh"
        rpi_boot_files   # sets boot_files=(...) from $stage into $boot/rpi
        ;;
esac
if [ -n "$key" ]; then
    rm -rf "$out/update"
    bundle_args=()
    for f in "${boot_files[@]}"; do bundle_args+=(--boot-file "$f"); done
    "$repo/scripts/sign-release.sh" --key "$key" --board "$board" --version "$version" \
        --image "$work/root.img" "${bundle_args[@]}" --out "$out/update" >/dev/null
    echo "$version" > "$out/version"
    phase "update bundle: $out/update"
fi
[ "$slot_only" -eq 1 ] && { phase "done (slot only)"; exit 0; }

# --- data partition: seeded with the directories the mounts and services expect ----------------
seed="$work/data"
install -d -m 0755 "$seed/etc" "$seed/etc/confab"
install -d -m 0700 "$seed/etc/secret"
install -d -m 0750 -o "$confab_uid" -g "$confab_gid" "$seed/confab"
install -d -m 0700 "$seed/tailscale"
data_mib=256
mkfs.ext4 -q -L data -d "$seed" "$work/data.img" "${data_mib}M"

# --- boot partitions ----------------------------------------------------------------------------
example="$work/confab.toml.example"
cp "$repo/image/confab.toml.example" "$example"

fat() { # image size-MiB label
    rm -f "$1"
    mkfs.vfat -F 32 -n "$3" -C "$1" $(( $2 * 1024 )) >/dev/null
}
parts=()
case "$board" in
    generic-efi-arm64)
        esp="$work/esp.img"
        fat "$esp" 256 ESP
        mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/slot-a ::/slot-b
        mcopy -i "$esp" "$stage/usr/lib/systemd/boot/efi/systemd-bootaa64.efi" ::/EFI/BOOT/BOOTAA64.EFI
        printf 'timeout 0\neditor no\n' > "$work/loader.conf"
        mcopy -i "$esp" "$work/loader.conf" ::/loader/loader.conf
        cat > "$work/entry.conf" <<EOF
title confab $version (slot a)
version $version
sort-key confab
linux /slot-a/linux
initrd /slot-a/initrd
options $(cmdline_for a)
architecture aa64
EOF
        mcopy -i "$esp" "$work/entry.conf" ::/loader/entries/confab-a.conf
        mcopy -i "$esp" "$boot/linux" "$boot/initrd" ::/slot-a/
        mcopy -i "$esp" "$example" ::/confab.toml.example
        parts=("esp $esp C12A7328-F81F-11D2-BA4B-00A0C93EC93B 256"
               "root-a $work/root.img B921B045-1DF0-41C3-AF44-4C6F280D3FAE 1024"
               "root-b - B921B045-1DF0-41C3-AF44-4C6F280D3FAE 1024"
               "data $work/data.img 0FC63DAF-8483-4772-8E79-3D69D8477DE4 $data_mib")
        ;;
    rpi)
        rpi_boot_partitions   # sets parts=(...)
        ;;
esac

# --- disk: GPT with the partitions at 1 MiB alignment ------------------------------------------
disk="$out/confab-$version-$board.img"
total=2 # MiB: the GPT at the start and its backup at the end
for p in "${parts[@]}"; do set -- $p; total=$((total + $4)); done
rm -f "$disk" "$disk.xz"
truncate -s "${total}M" "$disk"
{
    echo "label: gpt"
    for p in "${parts[@]}"; do set -- $p; echo "size=${4}MiB, type=$3, name=$1"; done
} | sfdisk --quiet "$disk"
i=0
for p in "${parts[@]}"; do
    set -- $p
    i=$((i + 1))
    [ "$2" = "-" ] && continue
    offset=$(sfdisk --dump "$disk" | grep -E '^[^:]+ : start=' | sed -n "${i}p" | sed -E 's/.*start= *([0-9]+).*/\1/')
    [ -n "$offset" ] || die "partition $i ($1) not found in the new partition table"
    dd if="$2" of="$disk" bs=4M oflag=seek_bytes seek=$((offset * 512)) conv=notrunc,sparse status=none
done
phase "disk image: $(du -m --apparent-size "$disk" | cut -f1) MiB ($(du -m "$disk" | cut -f1) MiB allocated)"

result="$disk"
if [ "$board" = rpi ]; then # the Imager entry also names the uncompressed image
    extract_size=$(stat -c %s "$disk")
    extract_sha256=$(sha256sum "$disk" | cut -d' ' -f1)
fi
if [ "$xz" -eq 1 ]; then
    xz -T0 -6 -f "$disk"
    result="$disk.xz"
    phase "compressed: $(du -m "$result" | cut -f1) MiB"
fi
# Hash each file once: an uncompressed Pi image's hash is the one just taken.
if [ "$result" = "$disk" ] && [ "$board" = rpi ]; then
    sha256=$extract_sha256
else
    sha256=$(sha256sum "$result" | cut -d' ' -f1)
fi
echo "$sha256  $(basename "$result")" > "$result.sha256"
if [ -n "$key" ]; then
    minisign -S -s "$key" -m "$result" -x "$result.minisig" \
        -t "confab $version $board image" >/dev/null </dev/null
fi
if [ "$board" = rpi ]; then rpi_os_list "$result" "$extract_size" "$extract_sha256" "$sha256"; fi
phase "done: $result"
