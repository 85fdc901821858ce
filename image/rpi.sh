# Raspberry Pi 4 parts of scripts/build-image.sh (sourced; uses its variables and functions).
#
# Layout (GPT; the Pi 4 EEPROM bootloader reads GPT):
#   p1 autoboot  FAT32  64 MiB   autoboot.txt (tryboot A/B), confab-slots.json, confab.toml(.example)
#   p2 boot-a    FAT32 256 MiB   slot A: firmware, device trees, kernel, initrd, config.txt, cmdline.txt
#   p3 boot-b    FAT32 256 MiB   slot B: the same, written by updates
#   p4 root-a    erofs   1 GiB
#   p5 root-b    erofs   1 GiB
#   p6 data      ext4  256 MiB   grown to fill the card on first boot
# The firmware boots p2 by default and p3 once after `reboot "0 tryboot"` (see
# src/update/bootloader/rpi_tryboot.rs, and docs/self-hosting.md for the kernel caveat).

# Gathers a slot boot partition's files into $boot/rpi; sets boot_files=(...) for the bundle.
rpi_boot_files() {
    local dir="$boot/rpi" fw="$stage/usr/lib/raspi-firmware" dtbs
    mkdir -p "$dir"
    for f in start4.elf fixup4.dat; do
        [ -f "$fw/$f" ] || die "raspi-firmware lacks $f"
        cp "$fw/$f" "$dir/"
    done
    dtbs=$(ls -d "$stage"/usr/lib/linux-image-*/broadcom | sort -V | tail -n1)
    for f in bcm2711-rpi-4-b.dtb bcm2711-rpi-400.dtb bcm2711-rpi-cm4-io.dtb; do
        [ -f "$dtbs/$f" ] || die "the kernel package lacks $f"
        cp "$dtbs/$f" "$dir/"
    done
    cp "$boot/linux" "$dir/vmlinuz"
    cp "$boot/initrd" "$dir/initrd.img"
    cat > "$dir/config.txt" <<CFG
# confab $version: Raspberry Pi 4 boot configuration of this slot (rewritten by updates).
arm_64bit=1
upstream_kernel=1
kernel=vmlinuz
initramfs initrd.img followkernel
enable_uart=1
disable_overscan=1
CFG
    # A release does not know which slot it lands in: the updater replaces @SLOT@.
    cmdline_for @SLOT@ > "$dir/cmdline.txt"
    boot_files=()
    for f in "$dir"/*; do boot_files+=("$f"); done
}

# Makes the three FAT partitions; sets parts=(...) for the GPT.
rpi_boot_partitions() {
    local auto="$work/autoboot.img" a="$work/boot-a.img" b="$work/boot-b.img" f
    fat "$auto" 64 AUTOBOOT
    printf '[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n' > "$work/autoboot.txt"
    printf '{"a":{"state":"good","version":"%s"},"b":{"state":"bad","version":null}}\n' "$version" \
        > "$work/confab-slots.json"
    mcopy -i "$auto" "$work/autoboot.txt" "$work/confab-slots.json" "$example" ::/
    fat "$a" 256 BOOT-A
    for f in "$boot"/rpi/*; do
        [ "$(basename "$f")" = cmdline.txt ] && continue
        mcopy -i "$a" "$f" ::/
    done
    cmdline_for a > "$work/cmdline-a.txt"
    mcopy -i "$a" "$work/cmdline-a.txt" ::/cmdline.txt
    fat "$b" 256 BOOT-B
    parts=("autoboot $auto EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 64"
           "boot-a $a EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 256"
           "boot-b $b EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 256"
           "root-a $work/root.img B921B045-1DF0-41C3-AF44-4C6F280D3FAE 1024"
           "root-b - B921B045-1DF0-41C3-AF44-4C6F280D3FAE 1024"
           "data $work/data.img 0FC63DAF-8483-4772-8E79-3D69D8477DE4 $data_mib")
}

# Writes the Raspberry Pi Imager os_list entry for the image:
#   rpi_os_list IMAGE EXTRACT_SIZE EXTRACT_SHA256 IMAGE_SHA256
rpi_os_list() {
    local image="$1" url="${CONFAB_RELEASE_URL:-https://github.com/confab-project/confab/releases/download/v$version}"
    cat > "$out/confab-$version-rpi.os_list.json" <<JSON
{
  "os_list": [
    {
      "name": "confab $version",
      "description": "Self-hosted video conferencing: boot it, open https://confab.local, hold a meeting.",
      "url": "$url/$(basename "$image")",
      "release_date": "$(date -u +%Y-%m-%d)",
      "extract_size": $2,
      "extract_sha256": "$3",
      "image_download_size": $(stat -c %s "$image"),
      "image_download_sha256": "$4",
      "devices": ["pi4-64bit"],
      "init_format": "none"
    }
  ]
}
JSON
}
