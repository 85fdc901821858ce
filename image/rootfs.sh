#!/usr/bin/env bash
# Builds (or finds in the cache) the base root filesystem of confab's images: Debian bookworm
# arm64 from image/packages.txt, with an initramfs that can mount the erofs root slots. Only
# packages and the initramfs live here; everything confab-specific (units, overlay, binary) is
# added per image by scripts/build-image.sh, so changing those never rebuilds this.
#
#   image/rootfs.sh [--print-key]      prints the path of the cached tarball on its last line
#
# Cache: $CONFAB_CACHE_DIR (default /var/cache/confab)/rootfs/<key>.tar, key = SHA-256 of this
# script and the package list. Building takes 3-5 minutes on 2 cores (qemu-user runs the arm64
# maintainer scripts).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CONFAB_CACHE_DIR:-/var/cache/confab}/rootfs"
suite=bookworm
mirror="${CONFAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

key=$(cat "$here/rootfs.sh" "$here/packages.txt" | sha256sum | cut -c1-16)
out="$cache/bookworm-arm64-$key.tar"
if [ "${1:-}" = "--print-key" ]; then echo "$key"; exit 0; fi
if [ -s "$out" ]; then
    echo "rootfs: cached $out"
    echo "$out"
    exit 0
fi

# arm64 maintainer scripts run through qemu-user: binfmt_misc must be mounted and registered.
if ! arch-test arm64 >/dev/null 2>&1; then
    [ -e /proc/sys/fs/binfmt_misc/status ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 || true
    arch-test arm64 >/dev/null || { echo "rootfs: cannot run arm64 binaries (qemu-user-static + binfmt_misc)" >&2; exit 1; }
fi

packages=$(grep -v '^\s*#' "$here/packages.txt" | xargs | tr ' ' ',')
mkdir -p "$cache"
tmp="$cache/partial.tar"
rm -f "$tmp"
start=$(date +%s)
echo "rootfs: building Debian $suite arm64 ($(tr ',' '\n' <<<"$packages" | wc -l) packages) -> $out"

# Modules the initramfs must carry to find and mount a root slot: virtio (QEMU), NVMe/SATA/USB
# (UEFI servers), the Pi's SD/eMMC and USB boot, and the erofs root filesystem itself.
initramfs_modules="virtio_pci virtio_blk virtio_scsi sd_mod nvme ahci xhci_pci usb_storage uas \
sdhci_iproc mmc_block pcie_brcmstb erofs"

# Not needed on a headless appliance (about half the kernel modules); Broadcom Wi-Fi and the
# simple/vc4 display drivers (console on HDMI) stay.
# dpkg matches the paths packages ship, which are /lib/modules/... even on merged /usr.
excludes=(
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/gpu/*'
    --dpkgopt='path-include=/lib/modules/*/kernel/drivers/gpu/drm/drm*.ko'
    --dpkgopt='path-include=/lib/modules/*/kernel/drivers/gpu/drm/display/*'
    --dpkgopt='path-include=/lib/modules/*/kernel/drivers/gpu/drm/tiny/*'
    --dpkgopt='path-include=/lib/modules/*/kernel/drivers/gpu/drm/vc4/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/media/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/sound/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/infiniband/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/iio/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/staging/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/bluetooth/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/net/bluetooth/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/isdn/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/atm/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/can/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/net/can/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/nfc/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/net/nfc/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/firewire/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/target/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/thunderbolt/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/mtd/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/wan/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/ieee802154/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/net/ieee802154/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/arcnet/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/fddi/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/hamradio/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/net/ax25/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/net/netrom/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/net/rose/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/btrfs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/xfs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/ocfs2/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/gfs2/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/nfs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/nfsd/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/ceph/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/smb/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/cifs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/jfs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/reiserfs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/nilfs2/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/f2fs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/ubifs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/dlm/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/orangefs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/coda/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/afs/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/fs/9p/*'
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/wireless/*'
    --dpkgopt='path-include=/lib/modules/*/kernel/drivers/net/wireless/broadcom/*'
)

mmdebstrap --arch=arm64 --variant=essential --mode=root --format=tar \
    --components=main,non-free-firmware \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="$packages" \
    "${excludes[@]}" \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"' \
    --essential-hook="printf 'MODULES=list\nCOMPRESS=zstd\n' > \"\$1/etc/initramfs-tools/conf.d/confab.conf\"" \
    --essential-hook="printf '%s\n' $initramfs_modules > \"\$1/usr/share/initramfs-tools/modules.d/confab\"" \
    --customize-hook='rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id" && touch "$1/etc/machine-id"' \
    --customize-hook='ls "$1"/boot/vmlinuz-* "$1"/boot/initrd.img-* >/dev/null' \
    "$suite" "$tmp" "$mirror"

mv "$tmp" "$out"
# Keep only this key's tarball: older ones are never used again.
find "$cache" -maxdepth 1 -name 'bookworm-arm64-*.tar' ! -name "$(basename "$out")" -delete
echo "rootfs: built in $(( $(date +%s) - start )) s, $(du -m "$out" | cut -f1) MB"
echo "$out"
